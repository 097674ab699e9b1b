"""Find where a corpus model's outputs start to differ from onnxruntime's.

    .venv/bin/python tools/corpus/probe.py NAME [--points 40] [--start I] [--upto J]

Exposes intermediate tensors of the model as extra graph outputs (float tensors with a
shape that ONNX shape inference knows, at evenly spaced nodes from ``--start`` up to ``--upto``), compiles
that model with hwcompile (Python API, default passes, target cpu, the manifest's input
shapes), runs it and onnxruntime on the manifest's inputs, and prints each probed tensor's
relative error (the corpus measure) beside onnxruntime's own spread between its
optimization levels. The first row whose error jumps is where to look.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from corpus.fetch import fetch
from corpus.manifest import BY_NAME
from test_corpus import make_feeds, relative_error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(BY_NAME))
    parser.add_argument("--points", type=int, default=40)
    parser.add_argument("--start", type=int, default=0, help="first node index to probe")
    parser.add_argument("--upto", type=int, default=None, help="last node index to probe")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    from onnx import shape_inference

    import hwcompile

    entry = BY_NAME[args.name]
    model = onnx.load(str(fetch(entry)))
    for spec in entry.inputs:  # fix the input shapes so that inference knows every tensor
        for value in model.graph.input:
            if value.name == spec.name and spec.shape:
                dims = value.type.tensor_type.shape.dim
                for dim, size in zip(dims, spec.shape):
                    dim.Clear()
                    dim.dim_value = size
    model = shape_inference.infer_shapes(model)
    known = {v.name: v for v in model.graph.value_info
             if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
             and v.type.tensor_type.HasField("shape")
             and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}
    nodes = [(i, n) for i, n in enumerate(model.graph.node)
             if n.op_type != "Constant" and i >= args.start]
    if args.upto is not None:
        nodes = [(i, n) for i, n in nodes if i <= args.upto]
    candidates = [(i, n.op_type, n.name, o) for i, n in nodes for o in n.output if o in known]
    step = max(1, len(candidates) // args.points)
    picks = candidates[::step][: args.points]
    del model.graph.output[:]
    model.graph.output.extend(known[o] for *_, o in picks)

    feeds = make_feeds(entry)
    with tempfile.TemporaryDirectory(prefix="corpus-probe-") as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(model, str(path))
        shapes = {s.name: s.shape for s in entry.inputs if s.shape}
        art = hwcompile.compile(path, "cpu", Path(tmp) / "art", input_shapes=shapes)
        got = list(hwcompile.load(art).run(feeds).values())
        ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        plain = ort.InferenceSession(str(path), options,
                                     providers=["CPUExecutionProvider"]).run(None, feeds)
    print(f"{'node':>5}  {'op':18s} {'rel_err':>9}  {'ort spread':>10}  tensor (node name)")
    for (index, op, name, out), a, r, p in zip(picks, got, ref, plain):
        err, spread = relative_error(a, r), relative_error(np.asarray(p), r)
        print(f"{index:5d}  {op:18s} {err:9.2e}  {spread:10.2e}  {out} ({name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
