"""Unknown dims as exporters write them (-1, 0, unnamed, empty name) are symbolic, and
``--input-shape`` fixes them (regression: paddle2onnx's -1 was taken as a fixed size)."""

from __future__ import annotations

import numpy as np
import pytest
from frontend_util import assert_like_ort, model, product_run, tensor, vinfo
from onnx import helper

from hwcompile.errors import InputError
from hwcompile.frontend import import_onnx


def _unknown_dims_model():
    """x: [-1, 3, <unnamed>, <empty name>] → Reshape(x, [Shape(x)[0], -1]) → Relu, the
    paddle2onnx pattern (unknown dims as -1, batch read back with Shape)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"]),
        helper.make_node("Concat", ["b1", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    proto = model(nodes, [vinfo("x", [-1, 3, None, None])], [vinfo("y", [-1, -1])],
                  [tensor("i0", np.int64(0)), tensor("ax0", np.array([0], np.int64)),
                   tensor("m1", np.array([-1], np.int64))])
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[2].Clear()  # no dim_value, no dim_param
    dims[3].Clear()
    dims[3].dim_param = ""
    return proto


def test_unknown_dims_become_distinct_symbols():
    imported = import_onnx(_unknown_dims_model())
    shape = imported.inputs[0].shape
    assert shape[1] == 3
    symbols = [d for i, d in enumerate(shape) if i != 1]
    assert all(isinstance(d, str) for d in symbols), shape
    assert len(set(symbols)) == 3, "unrelated unknown dims must not be equated"


def test_input_shape_fixes_minus_one_dims(tmp_path):
    proto = _unknown_dims_model()
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    shapes = {"x": (2, 3, 4, 5)}
    imported = import_onnx(proto, input_shapes=shapes)
    assert imported.inputs[0].shape == (2, 3, 4, 5)
    assert imported.outputs[0].shape == (2, 60)
    assert_like_ort(proto, {"x": x}, product_run(proto, {"x": x}, tmp_path / "a", shapes))


def test_fixed_dims_still_contradict():
    proto = _unknown_dims_model()
    with pytest.raises(InputError, match="contradicts the model's fixed shape"):
        import_onnx(proto, input_shapes={"x": (2, 4, 4, 5)})
