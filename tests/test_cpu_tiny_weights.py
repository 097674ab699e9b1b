"""Weights too small for float32 arithmetic (targets/cpu/flush_denormals.py): flushed to zero
at compile time, the output still onnxruntime's; other constants keep every normal value."""

from __future__ import annotations

import numpy as np
import tvm
from conftest import float_model, ort_run
from onnx import helper, numpy_helper

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.target import resolve_target
from hwcompile.targets.cpu.flush_denormals import flushed


def _dead_channel_model():
    """A 1×1 conv (bias, ReLU) whose first 8 of 16 filters decayed to ~1e-36 and 1e-40
    (subnormal), as in PaddleOCR's exports, then a scale by a constant holding 1e-8."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 32, 1, 1)).astype(np.float32)
    w[:4] *= np.float32(1e-36)
    w[4:8] *= np.float32(1e-40)
    scale = np.full((1, 16, 1, 1), 1e-8, np.float32)
    scale[0, 0] = -3e38  # a sentinel: a scale, not a weight, so 1e-8 beside it stays
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(
        rng.standard_normal(16).astype(np.float32), "b"), numpy_helper.from_array(scale, "s")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Mul", ["r", "s"], ["y"])]
    return float_model("dead_channels", nodes, inits, {"x": [1, 32, 8, 8]}, {"y": [1, 16, 8, 8]})


def _constants(mod: tvm.IRModule) -> list[np.ndarray]:
    found = []

    def visit(expr):
        if isinstance(expr, tvm.ir.Constant) and hasattr(expr.value, "numpy"):
            found.append(expr.value.numpy())

    tvm.relax.analysis.post_order_visit(mod["main"], visit)
    return found


def test_tiny_weights_are_zero_and_the_output_is_onnxruntimes(tmp_path):
    model = _dead_channel_model()
    mod = resolve_target("cpu").tunable_module(import_onnx(model).bound_module())
    constants = {c.shape: c for c in _constants(mod)}
    weight, scale = constants[(1, 1, 32, 16)], constants[(1, 1, 1, 16)]  # HWIO, NHWC
    assert (weight[..., :8] == 0).all() and (weight[..., 8:] != 0).all()
    assert (scale[..., 1:] == np.float32(1e-8)).all()  # a scale's normal values all stay
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    x = np.random.default_rng(1).uniform(-1, 1, (1, 32, 8, 8)).astype(np.float32)
    got = hwcompile.load(hwcompile.compile(str(path), "cpu", tmp_path / "art"))(x)
    want = ort_run(model, {"x": x})[0]
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


def test_flushed_values():
    value = np.array([1.0, -1e-31, 1e-29, 1e-40, 0.0], np.float32)
    assert flushed(value, weight=True).tolist() == [1.0, 0.0, np.float32(1e-29), 0.0, 0.0]
    assert flushed(value, weight=False).tolist() == [1.0, np.float32(-1e-31),
                                                     np.float32(1e-29), 0.0, 0.0]
    assert flushed(np.array([1.0, 1e-20], np.float32), weight=True) is None
    assert flushed(np.array([1, 2], np.int8), weight=True) is None
