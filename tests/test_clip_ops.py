"""Clip, HardSigmoid and HardSwish reach the compiler as Relax ``maximum``/``minimum``
(``hwcompile/clip_ops.py``): same numbers as onnxruntime through the product path, and the
CPU layout pass keeps an NHWC network in NHWC across them instead of transposing around
every activation."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import float_model, ort_run
from onnx import helper, numpy_helper
from tvm import relax

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.rewrite import call_name
from hwcompile.targets.cpu.layout import cpu_layout

SHAPE = [1, 4, 6, 6]


def _bounds(lo, hi):
    return [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", lo), ("hi", hi))]


CASES = {
    "clip_attrs_opset6": ([helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.75)], [], 6),
    "clip_min_only_opset6": ([helper.make_node("Clip", ["x"], ["y"], min=0.0)], [], 6),
    "clip_inputs_opset13": ([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
                            _bounds(-1.0, 0.25), 13),
    "clip_max_only_opset13": ([helper.make_node("Clip", ["x", "", "hi"], ["y"])],
                              _bounds(0.0, 0.5)[1:], 13),
    "hard_sigmoid": ([helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4)], [], 13),
    "hard_swish": ([helper.make_node("HardSwish", ["x"], ["y"])], [], 14),
}


def _x():
    x = np.random.default_rng(0).uniform(-8, 8, SHAPE).astype(np.float32)
    x.flat[:6] = [-0.5, 0.75, 0.0, 6.0, -3.0, 3.0]  # values on the bounds
    return x


def _relax_ops(model) -> list[str]:
    found: list[str] = []
    main = import_onnx(model).mod["main"]
    relax.analysis.post_order_visit(main, lambda e: found.append(call_name(e) or ""))
    return found


@pytest.mark.parametrize("case", sorted(CASES))
def test_clip_forms_match_onnxruntime(tmp_path, case):
    nodes, inits, opset = CASES[case]
    model = float_model(case, nodes, inits, {"x": SHAPE}, {"y": SHAPE}, opset)
    ops = _relax_ops(model)
    assert "relax.clip" not in ops and "relax.call_tir" not in ops, ops
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), target="cpu", output=tmp_path / "art")
    feeds = {"x": _x()}
    got = hwcompile.load(art).run(feeds)["y"]
    np.testing.assert_allclose(got, ort_run(model, feeds)[0], rtol=1e-6, atol=1e-7)


def _conv_block(activation: list) -> object:
    rng = np.random.default_rng(3)
    weights = [numpy_helper.from_array(rng.standard_normal((8, c, 3, 3)).astype(np.float32), n)
               for n, c in (("w1", 3), ("w2", 8))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), *activation,
             helper.make_node("Conv", ["a", "w2"], ["y"], pads=[1, 1, 1, 1])]
    inits = [*weights, *_bounds(0.0, 6.0)]
    return float_model("conv_block", nodes, inits, {"x": [1, 3, 8, 8]}, {"y": [1, 8, 8, 8]}, 14)


@pytest.mark.parametrize("activation", [
    [helper.make_node("HardSwish", ["c1"], ["a"])],
    [helper.make_node("Clip", ["c1", "lo", "hi"], ["a"])],  # ReLU6
])
def test_nhwc_layout_crosses_the_activation(activation):
    """Two NHWC convolutions around the activation: the transposes left are the network's
    input and output ones (were four: NCHW and back around the activation)."""
    model = _conv_block(activation)
    target = tvm.target.Target("llvm")
    mod = import_onnx(model).mod
    with target:
        laid_out = cpu_layout(target)(mod)
    found: list[relax.Call] = []
    relax.analysis.post_order_visit(
        laid_out["main"],
        lambda e: found.append(e) if call_name(e) == "relax.permute_dims" else None)
    on_activations = [c for c in found if c.args[0].ty.ndim == 4
                      and not _is_weight(c.args[0], laid_out["main"])]
    assert len(on_activations) == 2, [str(c) for c in on_activations]


def _is_weight(expr, main) -> bool:
    names = {p.name for p in main.params[1:]}
    return isinstance(expr, relax.Var) and expr.name in names
