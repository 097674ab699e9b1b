"""Kernels of the sequence models on the CPU: GELU's erf as inline arithmetic
(targets/cpu/fast_erf.py), LSTM gate splits as slices fused into the cell kernels
(targets/cpu/split_slices.py), attention scores whose rows fill no whole vector
(targets/cpu/batch_matmul.py); against float64 or onnxruntime, through the product path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from conftest import float_model, ort_run
from onnx import helper, numpy_helper

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.target import resolve_target
from hwcompile.targets.cpu.batch_matmul import batch_matmul_shape


def _compile(tmp_path, model):
    """The artifact, built through the CPU target's own pipeline (a failure there would
    fall back to TVM's stock lowering, correct and slow, and hide the kernel under test)."""
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art")
    assert hwcompile.load(art).metadata["target_extra"]["lowering"]["pipeline"] == "hwcompile-cpu"
    return art


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


def _lstm_model(seq: int = 6, inputs: int = 5, hidden: int = 8):
    rng = np.random.default_rng(4)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name)
               for name, shape in (("W", (1, 4 * hidden, inputs)), ("R", (1, 4 * hidden, hidden)),
                                   ("B", (1, 8 * hidden)))]
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "h"], hidden_size=hidden)
    return float_model("lstm", [node], weights, {"x": [seq, 1, inputs]},
                       {"y": [seq, 1, 1, hidden], "h": [1, 1, hidden]})


def _kernel_names(model) -> list[str]:
    mod = resolve_target("cpu").tunable_module(import_onnx(model).bound_module())
    return [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


def test_lstm_gates_are_sliced_into_the_cell_kernels(tmp_path):
    """The gate split of every step is no kernel of its own: its pieces are read by the
    elementwise cell kernels (fewer VM calls and allocations per step); same outputs."""
    model = _lstm_model()
    names = _kernel_names(model)
    assert not [n for n in names if "split" in n]
    assert [n for n in names if "strided_slice" in n and "sigmoid" in n]
    x = np.random.default_rng(5).standard_normal((6, 1, 5)).astype(np.float32)
    art = _compile(tmp_path, model)
    got = hwcompile.load(art).run({"x": x})
    want = ort_run(model, {"x": x})
    for g, w in zip(got.values(), want, strict=True):
        assert np.abs(g - w).max() <= 1e-6 * max(np.abs(w).max(), 1.0)


def test_split_read_by_matmuls_stays_a_split():
    """Slices cannot fuse into a matmul's kernel: there each would be a kernel of its own."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2),
             helper.make_node("MatMul", ["a", "w"], ["ya"]),
             helper.make_node("MatMul", ["b", "w"], ["yb"])]
    model = float_model("split", nodes, [w], {"x": [3, 8]}, {"ya": [3, 4], "yb": [3, 4]},
                        opset=18)
    assert [n for n in _kernel_names(model) if "split" in n]


def _attention_scores_model(batch: int, m: int, k: int, n: int, scale: float | None):
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s" if scale else "y"])]
    inits = []
    if scale:
        inits = [numpy_helper.from_array(np.array(scale, np.float32), "scale")]
        nodes.append(helper.make_node("Mul", ["s", "scale"], ["y"]))
    return float_model("scores", nodes, inits, {"q": [1, batch, m, k], "kt": [1, batch, k, n]},
                       {"y": [1, batch, m, n]})


@pytest.mark.parametrize(("batch", "m", "k", "n", "scale"), [
    (4, 199, 16, 199, 0.25),  # wav2vec2's attention scores
    (2, 13, 8, 37, None),  # leftover rows, one whole and one overlapping column tile
    (1, 5, 3, 20, 0.5),  # fewer rows than a tile, one-register columns
    (2, 12, 8, 37, None),  # whole row tiles only, no leftover rows
])
def test_attention_scores_kernel_matches_numpy(tmp_path, batch, m, k, n, scale):
    """The written batch matmul (targets/cpu/batch_matmul.py), used where the output rows
    fill no whole vector, against float64 numpy."""
    model = _attention_scores_model(batch, m, k, n, scale)
    lanes = resolve_target("cpu").default_schedule_lanes
    mod = resolve_target("cpu").tunable_module(import_onnx(model).bound_module())
    [func] = [f for gv, f in mod.functions_items()
              if isinstance(f, tvm.tirx.PrimFunc) and "matmul" in gv.name_hint]
    used = n % lanes != 0 and n >= lanes
    assert (batch_matmul_shape(func, lanes) is not None) == used
    # tuning leaves the written kernel alone: no tuned record replaces it under --db
    assert resolve_target("cpu").keeps_default(tvm.IRModule({"main": func})) == used
    rng = np.random.default_rng(8)
    q = rng.standard_normal((1, batch, m, k)).astype(np.float32)
    kt = rng.standard_normal((1, batch, k, n)).astype(np.float32)
    got = hwcompile.load(_compile(tmp_path, model)).run({"q": q, "kt": kt})["y"]
    want = (q.astype(np.float64) @ kt.astype(np.float64)) * (scale or 1.0)
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


def test_tanh_is_accurate_over_its_whole_range(tmp_path):
    """Inline tanh (targets/cpu/fast_tanh.py): a few float32 ulp relative, near 0 as well
    (no cancellation), ±1 far out, no libm call."""
    x = np.concatenate([np.linspace(-12, 12, 4001), np.geomspace(1e-8, 1.0, 200),
                        [-1e4, 1e4, 0.0, -0.0, 0.625, -0.625, 0.62500006, 44.0, -90.0]]
                       ).astype(np.float32).reshape(1, -1)
    model = float_model("tanh", [helper.make_node("Tanh", ["x"], ["y"])], [],
                        {"x": list(x.shape)}, {"y": list(x.shape)})
    art = _compile(tmp_path, model)
    got = hwcompile.load(art)(x).astype(np.float64)
    want = np.tanh(x.astype(np.float64))
    assert np.abs(got - want).max() <= 2.5e-7
    nonzero = want != 0
    assert (np.abs(got - want)[nonzero] / np.abs(want[nonzero])).max() <= 1e-6
    assert b"expf" not in (art / "model.so").read_bytes()
