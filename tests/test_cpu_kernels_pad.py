"""Matmuls whose output columns fill no whole vector (an OCR head's 18385 classes, attention
over 199 frames): the default schedule pads them to whole vectors (targets/cpu/schedule_pad.py)
instead of falling back to one SIMD lane. Numerics against numpy in float64, through the
product path, at small shapes."""

from __future__ import annotations

import numpy as np
import tvm
from conftest import float_model
from onnx import helper, numpy_helper

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.target import resolve_target
from hwcompile.targets.cpu.defaults import schedule_func
from hwcompile.targets.cpu.schedule_pad import padded_extent, padded_rows

M, K, N = 5, 24, 37  # N: no half vector of 4, 8 or 16 lanes divides it


def _dense_model():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((K, N)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])]
    model = float_model("dense", nodes, [numpy_helper.from_array(w, "w"),
                                         numpy_helper.from_array(b, "b")],
                        {"x": [1, M, K]}, {"y": [1, M, N]})
    return model, w, b


def _compile(tmp_path, model):
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return hwcompile.load(hwcompile.compile(str(path), "cpu", tmp_path / "art"))


def test_padded_extent():
    assert padded_extent(18385, 16) == 18400
    assert padded_extent(37, 16) == 48
    assert padded_extent(37, 8) == 40
    assert padded_extent(24, 16) is None  # a half register divides it: kept
    assert padded_extent(12, 16) is None  # shorter than a register: kept


def test_dense_with_odd_columns_matches_numpy(tmp_path):
    model, w, b = _dense_model()
    x = np.random.default_rng(4).standard_normal((1, M, K)).astype(np.float32)
    got = _compile(tmp_path, model)(x)
    want = x.astype(np.float64) @ w + b
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_matmul_of_two_inputs_with_odd_columns_matches_numpy(tmp_path):
    """The second operand is no constant: its padded copy runs in the kernel."""
    model = float_model("bmm", [helper.make_node("MatMul", ["a", "c"], ["y"])], [],
                        {"a": [3, M, K], "c": [3, K, N]}, {"y": [3, M, N]})
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, M, K)).astype(np.float32)
    c = rng.standard_normal((3, K, N)).astype(np.float32)
    got = _compile(tmp_path, model)(a, c)
    want = a.astype(np.float64) @ c
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_prime_row_count_is_padded_for_the_register_tile(tmp_path):
    """37 rows (attention over a prime number of frames): padded to 40, tiled by 8 or 10."""
    model = float_model("bmm", [helper.make_node("MatMul", ["a", "c"], ["y"])], [],
                        {"a": [2, 37, 40], "c": [2, 40, 16]}, {"y": [2, 37, 16]})
    rng = np.random.default_rng(8)
    a = rng.standard_normal((2, 37, 40)).astype(np.float32)
    c = rng.standard_normal((2, 40, 16)).astype(np.float32)
    got = _compile(tmp_path, model)(a, c)
    want = a.astype(np.float64) @ c
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert padded_rows(37) == 40 and padded_rows(40) is None and padded_rows(7) is None
    target = resolve_target("cpu")
    mod = target.tunable_module(import_onnx(model).bound_module())
    [func] = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert "T.int64(40), T.int64(16)" in schedule_func(func, target.default_schedule_lanes).script()


def test_odd_columns_are_padded_vectorized_and_the_weight_copy_folded():
    target = resolve_target("cpu")
    lanes = target.default_schedule_lanes
    mod = target.tunable_module(import_onnx(_dense_model()[0]).bound_module())
    [func] = [f for gv, f in mod.functions_items()
              if isinstance(f, tvm.tirx.PrimFunc) and "matmul" in gv.name_hint]
    script = schedule_func(func, lanes).script()
    assert f"T.int64({padded_extent(N, lanes)})" in script  # the padded iteration space
    assert "T.vectorized" in script
    assert '"meta_schedule.layout_rewrite_preproc": True' in script  # folded at compile time


def test_a_strided_conv1d_with_odd_width_keeps_its_schedule(tmp_path):
    """wav2vec2's feature encoder: NCW conv1d, 399 and 199 outputs wide, stride 2. Its input
    index (2·w + k) is no plain loop variable, so it cannot be padded: it keeps the plain
    register tile (was: pad_einsum's error left the kernel unscheduled)."""
    import json

    rng = np.random.default_rng(6)
    w = numpy_helper.from_array(rng.standard_normal((8, 4, 3)).astype(np.float32), "w")
    model = float_model("conv1d", [helper.make_node("Conv", ["x", "w"], ["y"], strides=[2])],
                        [w], {"x": [1, 4, 79]}, {"y": [1, 8, 39]})
    x = rng.standard_normal((1, 4, 79)).astype(np.float32)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art")
    lowering = json.loads((art / "metadata.json").read_text())["target_extra"]["lowering"]
    assert "default_schedule_failed" not in lowering
    got = hwcompile.load(art)(x)
    want = np.stack([sum(x[0, :, k:k + 77:2].T.astype(np.float64) @ numpy_helper.to_array(w)[:, :, k].T
                         for k in range(3)).T])
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
