"""The regular (groups=1) conv kernels of corpus detectors: hwcompile vs onnxruntime, per shape.

    .venv/bin/python benchmarks/conv_kernels.py [--models nudenet_320n,yolov8_tiny,ddddocr_det]
        [--top 8] [--threads 2,1] [--calls 20]

Every distinct conv of the models (input shape, weight shape, stride, padding), with its
bias and its SiLU epilogue (``Sigmoid`` + ``Mul``) when the model has one, becomes a one-conv
ONNX model (random weights); so does every transposed conv (``ConvTranspose``, with a bias:
the DBNet necks and heads of ppocrv4_det/ppocrv5_det), labelled ``T``. The ``--top`` shapes of each model by multiply-adds are
compiled through the product path (``hwcompile.compile(..., "cpu")``) and timed kernel by
kernel (``kernel_times``: the fused conv kernel alone, not the layout transposes around it);
onnxruntime's figure is the sum of its profiled nodes less its layout reorders and
transposes (its conv, with the activation fused or not). Both in one process, best of
``--calls`` calls. Prints, per shape and thread count, GFLOP/s of each and hw/ort time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "tests", Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _timing import geomean, kernel_times, ort_session
from corpus.fetch import fetch
from corpus.manifest import MODELS

DEFAULT_MODELS = "nudenet_320n,yolov8_tiny,ddddocr_det"
# onnxruntime nodes that only change layout (NCHWc reorders), not part of the conv's work.
LAYOUT_OPS = ("ReorderInput", "ReorderOutput", "Transpose")


@dataclass(frozen=True)
class ConvShape:
    cin: int
    height: int
    width: int
    cout: int
    kernel: int
    stride: int
    pad: int
    silu: bool
    transposed: bool = False

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.transposed:
            return ((self.height - 1) * self.stride + self.kernel - 2 * self.pad,
                    (self.width - 1) * self.stride + self.kernel - 2 * self.pad)
        return ((self.height + 2 * self.pad - self.kernel) // self.stride + 1,
                (self.width + 2 * self.pad - self.kernel) // self.stride + 1)

    @property
    def macs(self) -> int:
        if self.transposed:  # the useful ones: each input pixel times each kernel tap
            return self.height * self.width * self.cout * self.cin * self.kernel * self.kernel
        oh, ow = self.out_hw
        return oh * ow * self.cout * self.cin * self.kernel * self.kernel

    def label(self) -> str:
        return (f"{'T ' if self.transposed else ''}{self.cin}x{self.height}x{self.width}→"
                f"{self.cout} k{self.kernel}s{self.stride}" + (" silu" if self.silu else ""))


def model_convs(name: str) -> dict[ConvShape, int]:
    """The model's groups=1 square convs and transposed convs (shape → multiply-adds over
    all its instances)."""
    entry = next(m for m in MODELS if m.name == name)
    model = onnx.load(fetch(entry))
    for graph_input in model.graph.input:
        fixed = next((i.shape for i in entry.inputs if i.name == graph_input.name), None)
        for dim, value in zip(graph_input.type.tensor_type.shape.dim, fixed or ()):
            dim.ClearField("dim_param")
            dim.dim_value = value
    model = shape_inference.infer_shapes(model)
    infos = [*model.graph.value_info, *model.graph.input]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in infos}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    weights.update({n.output[0]: list(n.attribute[0].t.dims) for n in model.graph.node
                    if n.op_type == "Constant" and n.attribute[0].name == "value"})
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name_in in node.input:
            consumers.setdefault(name_in, []).append(node.op_type)
    found: dict[ConvShape, int] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        transposed = node.op_type == "ConvTranspose"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w, x = weights.get(node.input[1]), shapes.get(node.input[0])
        pads, strides = attrs.get("pads", [0] * 4), attrs.get("strides", [1, 1])
        if (attrs.get("group", 1) != 1 or not w or not x or 0 in x or len(set(pads)) != 1
                or len(set(strides)) != 1 or w[2] != w[3] or attrs.get("output_padding")):
            continue
        conv = ConvShape(x[1], x[2], x[3], w[1] if transposed else w[0], w[2], strides[0],
                         pads[0], sorted(consumers.get(node.output[0], [])) == ["Mul", "Sigmoid"],
                         transposed)
        found[conv] = found.get(conv, 0) + conv.macs
    return found


def one_conv_model(conv: ConvShape, seed: int = 0) -> onnx.ModelProto:
    """Conv (or ConvTranspose) + bias (+ SiLU) on random weights, NCHW like the exported
    models."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(conv.cin * conv.kernel * conv.kernel)
    io = (conv.cin, conv.cout) if conv.transposed else (conv.cout, conv.cin)
    w = rng.standard_normal((*io, conv.kernel, conv.kernel)) * scale
    b = rng.standard_normal(conv.cout) * 0.1
    op = "ConvTranspose" if conv.transposed else "Conv"
    nodes = [helper.make_node(op, ["x", "w", "b"], ["c" if conv.silu else "y"],
                              kernel_shape=[conv.kernel] * 2, strides=[conv.stride] * 2,
                              pads=[conv.pad] * 4)]
    if conv.silu:
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]),
                  helper.make_node("Mul", ["c", "s"], ["y"])]
    oh, ow = conv.out_hw
    graph = helper.make_graph(
        nodes, "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, conv.cin, conv.height, conv.width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, conv.cout, oh, ow])],
        [numpy_helper.from_array(w.astype(np.float32), "w"),
         numpy_helper.from_array(b.astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def conv_kernel_seconds(times: dict[str, float]) -> float:
    """The conv kernel's time among a one-conv model's kernels (transposes excluded)."""
    return sum(t for name, t in times.items() if "conv2d" in name)


def ort_node_seconds(path: str, feeds: dict, threads: int, calls: int,
                     skip: tuple[str, ...] = LAYOUT_OPS) -> float:
    """onnxruntime's conv time: per call, its profiled nodes less ``skip`` (layout changes);
    best call."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for _ in range(calls + 3):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    # The node events of each call lie within its model_run event.
    bounds = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                    if e.get("cat") == "Session" and e.get("name") == "model_run")
    totals = [0.0] * len(bounds)
    for event in events:
        if (event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time")
                or event.get("args", {}).get("op_name", "") in skip):
            continue
        for i, (start, end) in enumerate(bounds):
            if start <= event["ts"] <= end:
                totals[i] += event["dur"] * 1e-6
                break
    return min(totals[3:] or totals)


def measure(conv: ConvShape, threads: list[int], calls: int, workdir: Path) -> dict:
    import hwcompile
    from hwcompile.bench import set_threads

    model = one_conv_model(conv)
    path = workdir / f"{conv.label().replace(' ', '_').replace('→', '-')}.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), "cpu", workdir / (path.stem + "_art"))
    x = np.random.default_rng(1).uniform(-1, 1, (1, conv.cin, conv.height, conv.width)
                                         ).astype(np.float32)
    compiled = hwcompile.load(art)
    want = ort_session(str(path), 1).run(None, {"x": x})[0]
    got = compiled(x)
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6))
    row = {"shape": conv.label(), "macs": conv.macs, "rel_err": err}
    for t in threads:
        set_threads(t)
        hw = conv_kernel_seconds(kernel_times(hwcompile.load(art), compiled.to_device({"x": x}),
                                              calls=calls)["kernels"])
        ort = ort_node_seconds(str(path), {"x": x}, t, calls)
        row[t] = {"hw_gflops": 2 * conv.macs / hw / 1e9, "ort_gflops": 2 * conv.macs / ort / 1e9,
                  "hw_ms": hw * 1e3, "ort_ms": ort * 1e3, "ratio": hw / ort}
    return row


def largest_shapes(models: list[str], top: int, label_part: str = ""
                   ) -> dict[ConvShape, list[str]]:
    """The ``top`` conv shapes of each model by multiply-adds (labels containing
    ``label_part``), each with the models and shares of their MACs it stands for."""
    shapes: dict[ConvShape, list[str]] = {}
    for name in models:
        convs = model_convs(name)
        total = sum(convs.values())
        for conv, macs in sorted(convs.items(), key=lambda kv: -kv[1])[:top]:
            shapes.setdefault(conv, []).append(f"{name} {100 * macs / total:.0f}%")
    return {c: m for c, m in shapes.items() if label_part in c.label()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--top", type=int, default=8, help="shapes per model, by multiply-adds")
    parser.add_argument("--threads", default="2,1", help="comma-separated thread counts")
    parser.add_argument("--calls", type=int, default=20, help="calls timed (best kept)")
    parser.add_argument("--shape", default="", help="only shapes whose label contains this")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    shapes = largest_shapes(args.models.split(","), args.top, args.shape)
    rows = []
    header = " | ".join(f"hw GF/s {t}t | ort GF/s {t}t | hw/ort {t}t" for t in threads)
    print(f"| shape | in models | rel err | {header} |")
    print("|---|---|---:|" + "---:|" * (3 * len(threads)))
    with tempfile.TemporaryDirectory() as tmp:
        for conv, where in shapes.items():
            row = measure(conv, threads, args.calls, Path(tmp))
            row["models"] = where
            rows.append(row)
            cells = " | ".join(f"{row[t]['hw_gflops']:.0f} | {row[t]['ort_gflops']:.0f} | "
                               f"{row[t]['ratio']:.2f}×" for t in threads)
            print(f"| {conv.label()} | {', '.join(where)} | {row['rel_err']:.1e} | {cells} |",
                  flush=True)
    for t in threads:
        print(f"geomean hw/ort at {t} thread(s): {geomean([r[t]['ratio'] for r in rows]):.2f}×")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
