"""Kernels of the sequence models on the CPU: GELU's erf as inline arithmetic
(targets/cpu/fast_erf.py), against float64 references, through the product path."""

from __future__ import annotations

import math

import numpy as np
from conftest import float_model, ort_run
from onnx import helper, numpy_helper

import hwcompile


def _compile(tmp_path, model):
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return hwcompile.compile(str(path), "cpu", tmp_path / "art")


def test_erf_is_accurate_over_its_whole_range(tmp_path):
    x = np.concatenate([np.linspace(-6, 6, 4001), [-1e4, 1e4, 0.0, -0.0, 1e-8, -3.9999, 4.0001]]
                       ).astype(np.float32).reshape(1, -1)
    model = float_model("erf", [helper.make_node("Erf", ["x"], ["y"])], [],
                        {"x": list(x.shape)}, {"y": list(x.shape)})
    art = _compile(tmp_path, model)
    got = hwcompile.load(art)(x).astype(np.float64)
    want = np.array([math.erf(float(v)) for v in x.ravel()]).reshape(x.shape)
    assert np.abs(got - want).max() <= 4.5e-7
    assert np.abs(got).max() <= 1.0
    assert b"erff" not in (art / "model.so").read_bytes()  # inline, not libm per lane


def test_gelu_after_a_matmul_matches_onnxruntime(tmp_path):
    """wav2vec2's feed-forward: matmul + bias + GELU (x · (erf(x / √2) + 1) · 0.5), fused."""
    rng = np.random.default_rng(3)
    consts = [numpy_helper.from_array(rng.standard_normal((64, 256)).astype(np.float32) * 0.3,
                                      "w"),
              numpy_helper.from_array(rng.standard_normal(256).astype(np.float32), "b"),
              *(numpy_helper.from_array(np.array(v, np.float32), n)
                for n, v in (("sqrt2", math.sqrt(2.0)), ("one", 1.0), ("half", 0.5)))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["h"]),
             helper.make_node("Div", ["h", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["h", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    model = float_model("gelu", nodes, consts, {"x": [1, 37, 64]}, {"y": [1, 37, 256]})
    x = rng.standard_normal((1, 37, 64)).astype(np.float32)
    art = _compile(tmp_path, model)
    got = hwcompile.load(art)(x)
    [want] = ort_run(model, {"x": x})
    assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()
    assert b"erff" not in (art / "model.so").read_bytes()
