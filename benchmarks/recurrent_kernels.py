"""Recurrent layers of the corpus' sequence models as one-node ONNX models, hwcompile vs
onnxruntime in the same process.

    .venv/bin/python benchmarks/recurrent_kernels.py [--threads 1] [--repeat 20]
        [--rounds 5] [--kernels lstm_ddddocr,...]

Same method as ``sequence_kernels.py`` (whose ``bench`` this uses): each layer compiled
through the product path, timed against onnxruntime in alternated blocks, best block
median; the output error is against onnxruntime. Shapes: ddddocr_rec's bidirectional
LSTM (20 steps, 512 → 512: 4 MB of recurrent weights per direction) and lstm_gru's layers
(8 steps, hidden 32: VM dispatch, not arithmetic).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

import numpy as np
from onnx import helper, numpy_helper
from sequence_kernels import _model, bench

from hwcompile.bench import set_threads


def recurrent(kind: str, steps: int, inputs: int, hidden: int, bidirectional: bool):
    """One LSTM/GRU node with uniform(±1/√hidden) weights, PyTorch's initialization."""
    gates, dirs = {"LSTM": 4, "GRU": 3}[kind], 2 if bidirectional else 1
    rng = np.random.default_rng(0)
    scale = 1 / np.sqrt(hidden)
    inits = [numpy_helper.from_array(rng.uniform(-scale, scale, shape).astype(np.float32), name)
             for name, shape in (("W", (dirs, gates * hidden, inputs)),
                                 ("R", (dirs, gates * hidden, hidden)),
                                 ("B", (dirs, 2 * gates * hidden)))]
    attrs = {"linear_before_reset": 1} if kind == "GRU" else {}
    node = helper.make_node(kind, ["x", "W", "R", "B"], ["y"], hidden_size=hidden,
                            direction="bidirectional" if bidirectional else "forward", **attrs)
    return _model([node], inits, {"x": [steps, 1, inputs]}, {"y": [steps, dirs, 1, hidden]})


KERNELS = {
    "lstm_ddddocr": lambda: recurrent("LSTM", 20, 512, 512, True),
    "lstm_gru_lstm": lambda: recurrent("LSTM", 8, 16, 32, True),
    "lstm_gru_gru": lambda: recurrent("GRU", 8, 64, 32, False),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kernels", default=",".join(KERNELS))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    print(f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"{args.threads} thread(s); command: `{' '.join([sys.argv[0], *(argv or sys.argv[1:])])}`")
    print("\n| layer | hwcompile ms | onnxruntime ms | hw / ort | max err / max | load |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.kernels.split(","):
            r = bench(name, KERNELS[name](), args, Path(tmp))
            print(f"| {name} | {r['hw_ms']:.4f} | {r['ort_ms']:.4f} | {r['ratio']:.2f}× | "
                  f"{r['max_err']:.1e} | {r['load']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
