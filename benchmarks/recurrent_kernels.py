"""Recurrent layers of the corpus' sequence models as one-node ONNX models, hwcompile vs
onnxruntime in the same process.

    .venv/bin/python benchmarks/recurrent_kernels.py [--threads 1] [--repeat 20]
        [--rounds 5] [--kernels lstm_ddddocr,...]

Same method as ``sequence_kernels.py`` (whose ``bench`` and table this uses): each layer compiled
through the product path, timed against onnxruntime in alternated blocks, best block
median; the output error is against onnxruntime. Shapes: ddddocr_rec's bidirectional
LSTM (20 steps, 512 → 512: 4 MB of recurrent weights per direction) and lstm_gru's layers
(8 steps, hidden 32: VM dispatch, not arithmetic).
"""

from __future__ import annotations

import sys

import numpy as np
import sequence_kernels
from onnx import helper, numpy_helper
from sequence_kernels import _model


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
    return sequence_kernels.main(argv, KERNELS, __doc__, repeat=20, rounds=5)


if __name__ == "__main__":
    sys.exit(main())
