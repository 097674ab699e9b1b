"""The regular (groups=1) int8 conv kernels of corpus CNNs: hwcompile vs onnxruntime, per shape.

    .venv/bin/python benchmarks/int8_conv_kernels.py [--models yolov8_tiny,nudenet_320n]
        [--top 6] [--threads 1] [--calls 15] [--shape 64x32x32] [--output int8|float]

The int8 sibling of ``conv_kernels.py``: every distinct conv of the models (with its bias and
SiLU epilogue when the model has one) becomes a one-conv ONNX model (random weights),
quantized by each side on the same 8 calibration samples: hwcompile's
``fold-constants,quantize`` and onnxruntime's ``quantize_static`` (QDQ, per-channel int8
weights, uint8 activations, as ``real_models.py``). With ``--output int8`` (the default) a
small 1×1 conv to 8 channels reads the conv's output, so that output stays int8 codes as
inside a network (conv, requantization to int8, the SiLU table; an op only float code reads
stays float, so the model's own output could not show that epilogue); both sides' figures
include that probe conv (1/9–1/12 of the multiply-adds of a 3×3 conv with 64–96 outputs).
With ``--output float`` the conv's output is the model's: the kernel dequantizes it (and the
SiLU is float). hwcompile's figure is the sum of its conv kernels (``kernel_times``), onnxruntime's the
sum of its profiled nodes less the input's QuantizeLinear, the output's DequantizeLinear and
layout reorders. Best of ``--calls`` calls, both in one process. Prints per shape and thread count GOP/s of each, hw/ort time,
and each side's SQNR against the float model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "tests", Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _timing import geomean, kernel_times, ort_session
from conv_kernels import ConvShape, largest_shapes, one_conv_model, ort_node_seconds
from real_models import ort_quantize

DEFAULT_MODELS = "yolov8_tiny,nudenet_320n,ddddocr_det,ppocr_mobile_v2_cls,mobilenetv3_small"
# onnxruntime nodes outside the conv's work: layout changes and the model's own edges.
EDGE_OPS = ("ReorderInput", "ReorderOutput", "Transpose", "QuantizeLinear", "DequantizeLinear")
PROBE_CHANNELS = 8
CALIBRATION = 8


def sqnr_db(got: np.ndarray, want: np.ndarray) -> float:
    noise = float(np.sum((got.astype(np.float64) - want) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(want.astype(np.float64) ** 2)) / noise)


def int8_output_model(conv: ConvShape) -> onnx.ModelProto:
    """``one_conv_model`` followed by a 1×1 conv to ``PROBE_CHANNELS`` channels, which reads
    its output as int8 codes."""
    model = one_conv_model(conv)
    graph = model.graph
    graph.node[-1].output[0] = "conv_out"
    probe = np.random.default_rng(7).standard_normal((PROBE_CHANNELS, conv.cout, 1, 1))
    graph.initializer.append(numpy_helper.from_array(
        (probe / np.sqrt(conv.cout)).astype(np.float32), "probe"))
    graph.node.append(helper.make_node("Conv", ["conv_out", "probe"], ["y"]))
    graph.output[0].type.tensor_type.shape.dim[1].dim_value = PROBE_CHANNELS
    return model


def measure(conv: ConvShape, threads: list[int], calls: int, workdir: Path,
            output: str = "int8") -> dict:
    import hwcompile
    from hwcompile.bench import set_threads

    stem = conv.label().replace(" ", "_").replace("→", "-")
    path = workdir / f"{stem}.onnx"
    model = int8_output_model(conv) if output == "int8" else one_conv_model(conv)
    path.write_bytes(model.SerializeToString())
    rng = np.random.default_rng(1)
    shape = (1, conv.cin, conv.height, conv.width)
    calibration = {"x": rng.uniform(-1, 1, (CALIBRATION, *shape)).astype(np.float32)}
    art = hwcompile.compile(str(path), "cpu", workdir / f"{stem}_int8",
                            passes="fold-constants,quantize", calibration=calibration)
    qdir = workdir / f"{stem}_ort"
    qdir.mkdir()
    qdq, _ = ort_quantize(path, qdir, calibration)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    want = ort_session(str(path), 1).run(None, {"x": x})[0]
    compiled = hwcompile.load(art)
    row = {"shape": conv.label(), "macs": conv.macs,
           "hw_sqnr_db": sqnr_db(compiled(x), want),
           "ort_sqnr_db": sqnr_db(ort_session(str(qdq), 1).run(None, {"x": x})[0], want)}
    for t in threads:
        set_threads(t)
        times = kernel_times(hwcompile.load(art), compiled.to_device({"x": x}), calls=calls)
        hw = sum(s for name, s in times["kernels"].items() if "conv2d" in name)
        ort = ort_node_seconds(str(qdq), {"x": x}, t, calls, skip=EDGE_OPS)
        row[t] = {"hw_gops": 2 * conv.macs / hw / 1e9, "ort_gops": 2 * conv.macs / ort / 1e9,
                  "hw_ms": hw * 1e3, "ort_ms": ort * 1e3, "ratio": hw / ort}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--top", type=int, default=6, help="shapes per model, by multiply-adds")
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--calls", type=int, default=15, help="calls timed (best kept)")
    parser.add_argument("--shape", default="", help="only shapes whose label contains this")
    parser.add_argument("--output", choices=("int8", "float"), default="int8",
                        help="the conv's output: int8 codes (as inside a network) or float")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    shapes = largest_shapes(args.models.split(","), args.top, args.shape)
    rows = []
    header = " | ".join(f"hw GOP/s {t}t | ort GOP/s {t}t | hw/ort {t}t" for t in threads)
    print(f"| shape | in models | SQNR dB hw / ort | {header} |")
    print("|---|---|---:|" + "---:|" * (3 * len(threads)))
    with tempfile.TemporaryDirectory() as tmp:
        for conv, where in shapes.items():
            row = measure(conv, threads, args.calls, Path(tmp), args.output)
            row["models"] = where
            rows.append(row)
            cells = " | ".join(f"{row[t]['hw_gops']:.0f} | {row[t]['ort_gops']:.0f} | "
                               f"{row[t]['ratio']:.2f}×" for t in threads)
            print(f"| {conv.label()} | {', '.join(where)} | {row['hw_sqnr_db']:.1f} / "
                  f"{row['ort_sqnr_db']:.1f} | {cells} |", flush=True)
    for t in threads:
        print(f"geomean hw/ort at {t} thread(s): {geomean([r[t]['ratio'] for r in rows]):.2f}×")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
