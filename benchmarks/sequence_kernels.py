"""Attention and recurrent kernels of the corpus' sequence models, one ONNX node (or a few)
each, hwcompile vs onnxruntime in the same process.

    .venv/bin/python benchmarks/sequence_kernels.py [--threads 1] [--repeat 200]
        [--rounds 3] [--kernels gelu,softmax,...]

Each kernel is compiled through the product path (``hwcompile.compile`` of the one-node
model) and timed against onnxruntime on the same model in alternated blocks
(``_timing.alternating_blocks``, best block median); the shapes are wav2vec2_tiny's and
bert_tiny's, ddddocr_rec's. Prints a Markdown table with the output error against float64 numpy (or
onnxruntime where numpy has no reference), the load average and the date.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from _timing import alternating_blocks, ort_session
from onnx import TensorProto, helper, numpy_helper

import hwcompile
from hwcompile.bench import set_threads


def _model(nodes, inits, inputs, outputs) -> onnx.ModelProto:
    def infos(shapes):
        return [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items()]

    graph = helper.make_graph(nodes, "kernel", infos(inputs), infos(outputs), inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _gelu(rows: int, cols: int):
    """GELU as the PyTorch exporter writes it: x · (erf(x / √2) + 1) · 0.5."""
    c = [numpy_helper.from_array(np.array(v, np.float32), n)
         for n, v in (("sqrt2", math.sqrt(2.0)), ("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    return _model(nodes, c, {"x": [rows, cols]}, {"y": [rows, cols]})


def _softmax(shape):
    return _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [], {"x": list(shape)},
                  {"y": list(shape)})


def _batch_matmul(batch: int, m: int, k: int, n: int):
    return _model([helper.make_node("MatMul", ["a", "b"], ["y"])], [],
                  {"a": [1, batch, m, k], "b": [1, batch, k, n]}, {"y": [1, batch, m, n]})


def _layer_norm(rows: int, cols: int):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(cols).astype(np.float32), "g"),
             numpy_helper.from_array(rng.standard_normal(cols).astype(np.float32), "b")]
    return _model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1,
                                    epsilon=1e-5)], inits, {"x": [1, rows, cols]},
                  {"y": [1, rows, cols]})


def _dense(rows: int, depth: int, cols: int):
    """A classifier head or an LSTM step's recurrent product: x · W + b, W constant."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((depth, cols)).astype(np.float32)
                                     * 0.05, "w"),
             numpy_helper.from_array(rng.standard_normal(cols).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    return _model(nodes, inits, {"x": [rows, depth]}, {"y": [rows, cols]})


KERNELS = {
    "gelu_199x256": lambda: _gelu(199, 256),
    "softmax_4x199x199": lambda: _softmax((1, 4, 199, 199)),
    "bmm_qk_4x199x16x199": lambda: _batch_matmul(4, 199, 16, 199),
    "bmm_av_4x199x199x16": lambda: _batch_matmul(4, 199, 199, 16),
    "layernorm_199x64": lambda: _layer_norm(199, 64),
    "dense_20x1024x8210": lambda: _dense(20, 1024, 8210),  # ddddocr_rec's classifier
    "dense_1x512x2048": lambda: _dense(1, 512, 2048),  # ddddocr_rec's LSTM step (h · Rᵀ)
}


def bench(name: str, model: onnx.ModelProto, args: argparse.Namespace, work: Path) -> dict:
    path = work / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), "cpu", work / name)
    hw = hwcompile.load(art)
    rng = np.random.default_rng(1)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]
                                         ).astype(np.float32) for i in model.graph.input}
    session = ort_session(str(path), args.threads)
    want = session.run(None, feeds)[0]
    got = next(iter(hw.run(feeds).values()))
    hw_inputs = hw.to_device(feeds)
    load = os.getloadavg()[0]
    stats = alternating_blocks({"hwcompile": lambda: hw.invoke(hw_inputs),
                                "onnxruntime": lambda: session.run(None, feeds)},
                               args.repeat, args.rounds)
    hw_ms, ort_ms = stats["hwcompile"]["median_ms"], stats["onnxruntime"]["median_ms"]
    return {"kernel": name, "hw_ms": hw_ms, "ort_ms": ort_ms, "ratio": hw_ms / ort_ms,
            "max_err": float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)),
            "load": load}


def main(argv: list[str] | None = None, kernels: dict | None = None, description: str = __doc__,
         repeat: int = 200, rounds: int = 3) -> int:
    """The table of ``kernels`` (name → model maker; default: this file's) against
    onnxruntime; ``recurrent_kernels.py`` runs its own table through it."""
    kernels = KERNELS if kernels is None else kernels
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--kernels", default=",".join(kernels))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    print(f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"{args.threads} thread(s); command: `{' '.join([sys.argv[0], *(argv or sys.argv[1:])])}`")
    print("\n| kernel | hwcompile ms | onnxruntime ms | hw / ort | max err / max | load |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.kernels.split(","):
            r = bench(name, kernels[name](), args, Path(tmp))
            print(f"| {name} | {r['hw_ms']:.4f} | {r['ort_ms']:.4f} | {r['ratio']:.2f}× | "
                  f"{r['max_err']:.1e} | {r['load']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
