"""The reference demo: train (once) the digits CNN, compile it for this CPU, run the held-out
images through the artifact, and compare with onnxruntime.

    make demo        # or: .venv/bin/python examples/digits/demo.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import hwcompile
from hwcompile.bench import set_threads, summarize, time_calls
from hwcompile.models.digits import ensure_digits_model, load_split
from hwcompile.verify import onnxruntime_outputs

HERE = Path(__file__).resolve().parent
MODEL = HERE / "digits_cnn.onnx"
ARTIFACT = HERE.parents[1] / "out" / "digits_cpu"


def main() -> int:
    def say(message: str) -> None:
        print(f"  {message}", flush=True)

    print(f"1. model: {MODEL.relative_to(HERE.parents[1])}"
          f"{'' if MODEL.exists() else ' (training it on scikit-learn digits)'}")
    ensure_digits_model(MODEL)
    print("2. compiling for the host CPU")
    hwcompile.compile(MODEL, target="cpu", output=ARTIFACT, progress=say)
    model = hwcompile.load(ARTIFACT)
    _, _, x_test, y_test = load_split()

    logits = model(x_test)
    reference = onnxruntime_outputs(MODEL, {"input": x_test})[0]
    accuracy = float(np.mean(logits.argmax(1) == y_test))
    agreement = float(np.mean(logits.argmax(1) == reference.argmax(1)))
    max_err = float(np.abs(logits - reference).max())
    print(f"3. held-out digits ({len(y_test)} images)")
    print(f"   accuracy: {accuracy:.2%}")
    print(f"   agreement with onnxruntime: {agreement:.2%} of top-1 labels, "
          f"max |logit difference| {max_err:.2e}")

    threads = set_threads(None)
    one = {"input": x_test[:1]}
    device_inputs = model.to_device(one)
    ours = summarize(time_calls(lambda: model.invoke(device_inputs), repeat=200, warmup=20))
    import onnxruntime as ort

    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    ref = summarize(time_calls(lambda: session.run(None, one), repeat=200, warmup=20))
    print(f"4. latency, batch 1, {threads} threads (median of 200): hwcompile "
          f"{ours['median_ms']:.3f} ms, onnxruntime {ref['median_ms']:.3f} ms")
    print(f"artifact: {ARTIFACT}")
    return 0 if accuracy >= 0.97 and agreement == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
