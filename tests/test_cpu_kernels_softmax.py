"""The CPU softmax row kernel (targets/cpu/schedule_softmax.py): numerics against numpy in
float64 through the product path, for every row shape it distinguishes (shorter than a
vector, whole vectors, whole vectors plus an overlapping last one), and that the compile
used it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from conftest import float_model
from onnx import helper

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.target import resolve_target
from hwcompile.targets.cpu.defaults import heuristic_schedule, schedule_func
from hwcompile.targets.cpu.schedule_softmax import softmax_shape


def _softmax_model(shape, axis=-1):
    return float_model("softmax", [helper.make_node("Softmax", ["x"], ["y"], axis=axis)], [],
                       {"x": list(shape)}, {"y": list(shape)})


def _reference(x, axis=-1):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _compile(tmp_path, model):
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art")
    lowering = json.loads((art / "metadata.json").read_text())["target_extra"]["lowering"]
    return hwcompile.load(art), lowering


@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 3, 16), (2, 4, 37), (1, 4, 199, 199)])
def test_softmax_matches_numpy(tmp_path, shape):
    x = (np.random.default_rng(1).standard_normal(shape) * 4).astype(np.float32)
    model, lowering = _compile(tmp_path, _softmax_model(shape))
    got = model(x)
    assert lowering == {"pipeline": "hwcompile-cpu", "layout": "none"}  # no kernel left as is
    assert np.abs(got - _reference(x)).max() <= 1e-6 * np.abs(_reference(x)).max()


def test_exp_is_accurate_over_its_whole_range(tmp_path):
    """Each element against numpy: the inline exp is exact to a few float32 ulp from 1 down
    to float32's normal range (plus the rounding of ``x - max`` in float32, which float32
    softmax cannot avoid: 2^-24 relative of that difference); far below it the outputs are
    (about) zero, as they should."""
    row = np.concatenate([np.linspace(-86.0, 0.0, 61), [-1e4, -np.inf, -100.0]])
    x = np.stack([row, row[::-1] + 3.5]).astype(np.float32)[None]
    model, _ = _compile(tmp_path, _softmax_model(x.shape))
    got, want = model(x), _reference(x)
    normal = want > 1e-37
    rounding = 2.0 ** -23 * np.abs(x - x.max(-1, keepdims=True))[normal]
    assert np.all(np.abs(got - want)[normal] <= (1e-6 + rounding) * want[normal])
    assert np.all(got[~normal] < 1e-36)


def test_long_softmax_sums_in_vector_lanes(tmp_path):
    """PP-OCRv5's 18385 classes: within 4e-6 of float64 (onnxruntime: ~4e-6; one float32
    accumulator: 5.7e-5)."""
    x = (np.random.default_rng(6).standard_normal((1, 4, 18385)) * 4).astype(np.float32)
    model, _ = _compile(tmp_path, _softmax_model(x.shape))
    want = _reference(x)
    assert np.abs(model(x) - want).max() / np.abs(want).max() <= 4e-6


def test_softmax_over_an_inner_axis_keeps_the_general_path(tmp_path):
    x = np.random.default_rng(2).standard_normal((2, 5, 3)).astype(np.float32)
    model, _ = _compile(tmp_path, _softmax_model(x.shape, axis=1))
    assert np.abs(model(x) - _reference(x, 1)).max() <= 1e-6


def test_the_row_kernel_replaces_the_legalized_softmax():
    target = resolve_target("cpu")
    mod = target.tunable_module(import_onnx(_softmax_model((2, 4, 37))).bound_module())
    [func] = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert softmax_shape(func) == (2, 4, 37)
    script = schedule_func(func, target.default_schedule_lanes).script()
    assert "softmax_rows" in script and "T.vectorized" in script
    # the tuner gets no trace for it: the kernel is written, not scheduled
    assert heuristic_schedule(tvm.IRModule({"main": func}), target.default_schedule_lanes) is None
    # and tuning leaves it alone, so no tuned record replaces it under --db
    assert target.keeps_default(tvm.IRModule({"main": func}))
