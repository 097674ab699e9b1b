"""Shape computations fold before the Relax import once the inputs are fixed, and folding
never changes results."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ort_run
from frontend_util import assert_like_ort, model, product_run, tensor, tvm_run, vinfo
from onnx import TensorProto, helper

from hwcompile.errors import UnsupportedOpError
from hwcompile.frontend import import_onnx
from hwcompile.onnx_rewrite import prepare

INT64 = TensorProto.INT64


def _torch_resize_model():
    """torch's interpolate export: sizes = Shape(x)[:2] ++ int(floor(Cast(Shape(x)[2:]) * 2))."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "two"], ["nc"]),
        helper.make_node("Slice", ["s", "two", "four"], ["hw"]),
        helper.make_node("Cast", ["hw"], ["hwf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["hwf", "scale"], ["hw2"]),
        helper.make_node("Floor", ["hw2"], ["hw3"]),
        helper.make_node("Cast", ["hw3"], ["hwi"], to=INT64),
        helper.make_node("Concat", ["nc", "hwi"], ["sizes"], axis=0),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest"),
    ]
    inits = [tensor("zero", np.array([0], np.int64)), tensor("two", np.array([2], np.int64)),
             tensor("four", np.array([4], np.int64)), tensor("scale", np.float32(2.0))]
    return model(nodes, [vinfo("x", ["N", 3, "H", "W"])], [vinfo("y", ["N", 3, "H2", "W2"])],
                 inits)


def test_computed_resize_sizes_fold(tmp_path):
    proto = _torch_resize_model()
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 5)).astype(np.float32)
    shapes = {"x": (1, 3, 4, 5)}
    assert_like_ort(proto, {"x": x}, product_run(proto, {"x": x}, tmp_path / "a", shapes))


def test_unfixed_shape_arithmetic_error_suggests_input_shape():
    with pytest.raises(UnsupportedOpError, match=r"symbolic dims: x=Nx3xHxW; .*--input-shape"):
        import_onnx(_torch_resize_model())


def _shape_arithmetic_model():
    """ConstantOfShape, Range, Expand, Tile, Where, Equal and Cast over Shape values, the
    constructs exporters build position ids, masks and broadcasts with, next to a weight
    (Transpose of an initializer) and a QDQ pair that folding must leave alone."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["n"], axis=0),         # 6
        helper.make_node("Range", ["zero_s", "n", "one"], ["pos"]),      # [0..6)
        helper.make_node("Cast", ["pos"], ["posf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("ConstantOfShape", ["n1"], ["ones"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Equal", ["pos", "two_s"], ["is2"]),
        helper.make_node("Where", ["is2", "ones", "posf"], ["mix"]),
        helper.make_node("Concat", ["two_1", "n1"], ["bshape"], axis=0),
        helper.make_node("Expand", ["mix", "bshape"], ["mix2"]),
        helper.make_node("Tile", ["mix2", "reps"], ["mix3"]),            # [2, 6]
        helper.make_node("Add", ["x", "mix3"], ["a"]),
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["a", "wt"], ["b"]),
        helper.make_node("DequantizeLinear", ["wq", "wq_scale"], ["wdq"]),
        helper.make_node("Add", ["b", "wdq"], ["y"]),
    ]
    inits = [tensor("one", np.int64(1)), tensor("zero_s", np.int64(0)),
             tensor("two_s", np.int64(2)), tensor("ax0", np.array([0], np.int64)),
             tensor("two_1", np.array([2], np.int64)), tensor("reps", np.array([1, 1], np.int64)),
             tensor("w", rng.standard_normal((4, 6)).astype(np.float32)),
             tensor("wq", rng.integers(-100, 100, (2, 4)).astype(np.int8)),
             tensor("wq_scale", np.float32(0.05))]
    return model(nodes, [vinfo("x", [2, 6])], [vinfo("y", [2, 4])], inits)


def test_folding_replaces_shape_arithmetic_and_keeps_results():
    proto = _shape_arithmetic_model()
    folded = prepare(_copy(proto), "test")
    ops = [n.op_type for n in folded.graph.node]
    assert not {"Shape", "Range", "ConstantOfShape", "Expand", "Tile", "Where"} & set(ops), ops
    # weights stay weights, quantized weights stay QDQ (later passes match on them)
    assert {"Transpose", "MatMul", "DequantizeLinear"} <= set(ops), ops
    assert "w" in {t.name for t in folded.graph.initializer}
    x = np.random.default_rng(3).standard_normal((2, 6)).astype(np.float32)
    # the folded model is still ONNX: onnxruntime must compute exactly the same
    np.testing.assert_array_equal(ort_run(folded, {"x": x})[0], ort_run(proto, {"x": x})[0])
    assert_like_ort(proto, {"x": x}, tvm_run(proto, {"x": x}))


def test_folding_leaves_what_the_evaluator_rejects():
    """A node the reference evaluator cannot run (onnx 1.23 has no GlobalLpPool) stays in
    the graph although its input is constant, while its neighbours still fold."""
    value = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    nodes = [
        helper.make_node("Constant", [], ["c"], value=tensor("c", value)),
        helper.make_node("GlobalLpPool", ["c"], ["p"]),
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["p", "sf"], ["ps"]),
        helper.make_node("Mul", ["x", "ps"], ["y"]),
    ]
    proto = model(nodes, [vinfo("x", [1, 1, 1, 4])], [vinfo("y", [1, 1, 1, 4])])
    folded = prepare(_copy(proto), "test")
    assert [n.op_type for n in folded.graph.node if n.op_type != "Constant"] == [
        "GlobalLpPool", "Add", "Mul"]
    x = np.float32([[[[1, 2, 3, 4]]]])
    np.testing.assert_array_equal(ort_run(folded, {"x": x})[0], ort_run(proto, {"x": x})[0])


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def test_model_local_functions_are_inlined():
    """torch's dynamo exporter writes model-local functions (custom domains); the importer
    knows none of them, so they are inlined first, and what they compute folds like the rest."""
    body = [helper.make_node("Shape", ["a"], ["s"]),
            helper.make_node("Reshape", ["a", "flat"], ["b"]),
            helper.make_node("Relu", ["b"], ["out"])]
    body.insert(1, helper.make_node("Constant", [], ["flat"],
                                    value=tensor("flat", np.array([-1], np.int64))))
    function = helper.make_function("pkg.local", "FlatRelu", ["a"], ["out"], body,
                                    [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("FlatRelu", ["x"], ["y"], domain="pkg.local")],
                              "test", [vinfo("x", [2, 3])], [vinfo("y", [6])])
    proto = helper.make_model(graph, functions=[function], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("pkg.local", 1)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    x = np.random.default_rng(5).standard_normal((2, 3)).astype(np.float32)
    assert_like_ort(proto, {"x": x}, tvm_run(proto, {"x": x}))
