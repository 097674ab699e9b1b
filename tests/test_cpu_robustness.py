"""The CPU target never ends in an internal error on a valid model: one case per failure
class seen on real exports, each compiled through the product path (``hwcompile.compile``
with the CPU target's own pipeline) and compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import float_model, ort_run
from onnx import helper, numpy_helper

import hwcompile


def _compile_and_compare(tmp_path, model, feeds, rtol=1e-5, atol=1e-5, **options):
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), target="cpu", output=tmp_path / "art", **options)
    got = hwcompile.load(art).run(feeds)
    expected = ort_run(model, feeds)
    for (name, value), ref in zip(got.items(), expected):
        np.testing.assert_allclose(value, ref, rtol=rtol, atol=atol, err_msg=name)
    return art


def _rng_inputs(shapes):
    rng = np.random.default_rng(0)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_importer_primfuncs_survive_the_passes(tmp_path, mode):
    """Pad (and Clip, Tile ...) import as calls to PrimFuncs beside ``main``; the folding
    passes rebuild ``main`` and must keep them (was: no definition of GlobalVar "pad")."""
    pads = numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads")
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 3, 3, 3))
                                .astype(np.float32), "w")
    bounds = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
              (("lo", -0.5), ("hi", 0.5))]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode=mode),
             helper.make_node("Conv", ["p", "w"], ["c"]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    model = float_model("pad_conv", nodes, [pads, w, *bounds], {"x": [1, 3, 8, 8]},
                        {"y": [1, 4, 9, 9]}, opset=11)
    _compile_and_compare(tmp_path, model, _rng_inputs({"x": (1, 3, 8, 8)}))


def test_symbolic_shapes_from_a_shape_input(tmp_path):
    """Expand to a shape given at run time: the importer binds the output's dims with a
    match_cast, which the folding passes must re-emit as a cast (was: PrimExpr
    ``4 * x_0 * x_1 * x_2`` has not been computed)."""
    nodes = [helper.make_node("Expand", ["x", "shape"], ["y"])]
    model = float_model("expand", nodes, [], {"x": [1, 3, 1]}, {"y": [None, None, None]})
    model.graph.input.append(helper.make_tensor_value_info("shape", 7, [2]))
    x = _rng_inputs({"x": (1, 3, 1)})["x"]
    for shape in ([3, 1], [1, 4]):
        art = tmp_path / f"art{shape[1]}"
        path = tmp_path / "model.onnx"
        path.write_bytes(model.SerializeToString())
        hwcompile.compile(str(path), target="cpu", output=art)
        feeds = {"x": x, "shape": np.array(shape, np.int64)}
        got = hwcompile.load(art).run(feeds)["y"]
        np.testing.assert_array_equal(got, ort_run(model, feeds)[0])
