"""A QDQ model from onnxruntime's quantize_static: imported as is (simulated quantization)
vs with ``lower-qdq`` (integer convs) vs onnxruntime on the same QDQ file, one run.

    .venv/bin/python benchmarks/qdq_cpu.py [--repeat 200]

The digits CNN is quantized by onnxruntime (per-channel int8 weights, int8 activations, QDQ
format, 256 training images for calibration). Prints latency at batch 1 (2 threads), the
largest logit difference to onnxruntime in output steps, and top-1 agreement on the 360
held-out images.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

import hwcompile
from hwcompile.bench import set_threads, summarize, time_calls
from hwcompile.models.digits import ensure_digits_model, load_split
from hwcompile.models.qdq import quantize_with_onnxruntime

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    threads = set_threads(None)
    x_train, _, x_test, y_test = load_split()
    source = ensure_digits_model(ROOT / "examples" / "digits" / "digits_cnn.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        qdq = quantize_with_onnxruntime(source, Path(tmp) / "qdq.onnx", x_train[:256])
        proto = onnx.load(qdq)
        step = next(float(numpy_helper.to_array(i)) for i in proto.graph.initializer
                    if i.name == "logits_scale")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(qdq), options, providers=["CPUExecutionProvider"])
        want = session.run(None, {"input": x_test})[0]
        one = x_test[:1]
        rows = [("onnxruntime (QDQ)", summarize(time_calls(lambda: session.run(None, {"input": one}),
                                                           args.repeat, warmup=20))["median_ms"], 0.0, 1.0,
                 float(np.mean(want.argmax(1) == y_test)))]
        for label, passes in (("hwcompile, imported as is", None), ("hwcompile, lower-qdq", "lower-qdq")):
            model = hwcompile.load(hwcompile.compile(qdq, "cpu", Path(tmp) / label.replace(" ", "_"),
                                                     passes=passes))
            got = model(x_test)
            call = model.invoke
            inputs = model.to_device({"input": one})
            ms = summarize(time_calls(lambda c=call, i=inputs: c(i), args.repeat, warmup=20))["median_ms"]
            rows.append((label, ms, float(np.abs(got - want).max() / step),
                         float(np.mean(got.argmax(1) == want.argmax(1))),
                         float(np.mean(got.argmax(1) == y_test))))
    print(f"\n{threads} threads, batch 1, median of {args.repeat}\n")
    print("| variant | ms | max logit diff to onnxruntime (steps) | top-1 agreement | accuracy |")
    print("|---|---:|---:|---:|---:|")
    for label, ms, steps, agree, accuracy in rows:
        print(f"| {label} | {ms:.3f} | {steps:.2f} | {agree:.2%} | {accuracy:.2%} |")


if __name__ == "__main__":
    main()
