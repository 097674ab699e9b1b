"""Control flow the compiler resolves: ``If`` with a compile-time condition is replaced by
its branch, ``Loop``/``Scan`` with a static count are unrolled, anything else is refused
with one error naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from frontend_util import (
    assert_like_ort,
    model,
    product_run,
    run_artifact,
    tensor,
    tvm_build,
    tvm_run,
    vinfo,
)
from onnx import TensorProto, helper

from hwcompile.errors import UnsupportedOpError
from hwcompile.frontend import import_onnx
from hwcompile.onnx_rewrite import prepare

BOOL, INT64 = TensorProto.BOOL, TensorProto.INT64


def _graph(name, nodes, outputs, inputs=(), inits=()):
    return helper.make_graph(nodes, name, list(inputs), list(outputs), list(inits))


def _static_if_model():
    """Two Ifs on conditions derived from x's shape; both branches of both define a value
    ``u`` (clash once inlined), read outer values, hold an initializer, and one nests an If
    whose condition reads an outer value."""
    nested = helper.make_node(
        "If", ["small"], ["v"],
        then_branch=_graph("nt", [helper.make_node("Mul", ["u", "x"], ["v1"])], [vinfo("v1", None)]),
        else_branch=_graph("ne", [helper.make_node("Neg", ["u"], ["v2"])], [vinfo("v2", None)]))
    then1 = _graph("t1", [helper.make_node("Add", ["x", "k"], ["u"]),
                          helper.make_node("Less", ["c", "ten"], ["small"]), nested],
                   [vinfo("v", None)], inits=[tensor("k", np.float32(1.5))])
    else1 = _graph("e1", [helper.make_node("Sub", ["x", "x"], ["u"])], [vinfo("u", None)])
    then2 = _graph("t2", [helper.make_node("Relu", ["x"], ["u"])], [vinfo("u", None)])
    else2 = _graph("e2", [helper.make_node("Mul", ["x", "two"], ["u"])], [vinfo("u", None)])
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["c"], axis=0),
        helper.make_node("Equal", ["c", "three"], ["cond"]),
        helper.make_node("Not", ["cond"], ["not_cond"]),
        helper.make_node("If", ["cond"], ["a"], then_branch=then1, else_branch=else1, name="if1"),
        helper.make_node("If", ["not_cond"], ["b"], then_branch=then2, else_branch=else2,
                         name="if2"),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    inits = [tensor("one", np.int64(1)), tensor("three", np.int64(3)),
             tensor("ten", np.int64(10)), tensor("two", np.float32(2))]
    return model(nodes, [vinfo("x", ["N", "C"])], [vinfo("y", ["N", "C"])], inits)


def test_static_ifs_inlined(tmp_path):
    proto = _static_if_model()
    shapes = {"x": (2, 3)}
    prepared = onnx.ModelProto()
    prepared.CopyFrom(proto)
    for vi in prepared.graph.input:  # what --input-shape does
        for dim, size in zip(vi.type.tensor_type.shape.dim, shapes["x"]):
            dim.Clear()
            dim.dim_value = size
    ops = [n.op_type for n in prepare(prepared, "test").graph.node]
    assert "If" not in ops, ops
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    assert_like_ort(proto, {"x": x}, product_run(proto, {"x": x}, tmp_path / "a", shapes))


def _runtime_if_model(other_branch):
    branches = [_graph("t", [helper.make_node("Relu", ["x"], ["r"])], [vinfo("r", None)]),
                _graph("e", other_branch, [vinfo("n", None)])]
    return model([helper.make_node("If", ["c"], ["y"], then_branch=branches[0],
                                   else_branch=branches[1], name="gate")],
                 [vinfo("c", [], BOOL), vinfo("x", [2, 3])], [vinfo("y", ["a", 3])])


def test_runtime_if_becomes_where(tmp_path):
    """An If on a run-time flag whose branches agree on shapes: both branches + Where (TVM's
    importer also computes both, but a module with its If fails in the pass pipeline)."""
    proto = _runtime_if_model([helper.make_node("Neg", ["x"], ["n"])])
    ops = [n.op_type for n in prepare(onnx.load_from_string(proto.SerializeToString()),
                                      "test").graph.node]
    assert "If" not in ops and "Where" in ops, ops
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    art = tmp_path / "a"
    assert_like_ort(proto, {"c": np.array(True), "x": x},
                    product_run(proto, {"c": np.array(True), "x": x}, art))
    feeds = {"c": np.array(False), "x": x}
    assert_like_ort(proto, feeds, run_artifact(art, proto, feeds))


def test_runtime_if_with_branches_of_different_shapes_stays_an_if():
    proto = _runtime_if_model([helper.make_node("Concat", ["x", "x"], ["n"], axis=0)])
    ops = [n.op_type for n in prepare(onnx.load_from_string(proto.SerializeToString()),
                                      "test").graph.node]
    assert ops == ["If"], ops


def test_runtime_if_branches_read_outer_constants():
    """A branch's Pad reads its pads from the main graph (torch's dynamo exports do): shape
    inference must see that value for the branch shapes to be known and the If to become a
    Where."""
    then = _graph("t", [helper.make_node("Pad", ["x", "pads"], ["p"])], [vinfo("p", None)])
    other = _graph("e", [helper.make_node("Concat", ["x", "column"], ["q"], axis=1)],
                   [vinfo("q", None)])
    proto = model([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                  [vinfo("c", [], BOOL), vinfo("x", [2, 3])], [vinfo("y", [2, 4])],
                  [tensor("pads", np.array([0, 1, 0, 0], np.int64)),
                   tensor("column", np.ones((2, 1), np.float32))])
    ops = [n.op_type for n in prepare(onnx.load_from_string(proto.SerializeToString()),
                                      "test").graph.node]
    assert "If" not in ops, ops
    run = tvm_build(proto)
    x = np.random.default_rng(6).standard_normal((2, 3)).astype(np.float32)
    for c in (True, False):
        feeds = {"c": np.array(c), "x": x}
        assert_like_ort(proto, feeds, run(feeds))


def _loop_model(trip_count_node, cond_out_node=None, inits=()):
    """acc = x; for i < M: acc = acc + x * i; scan output acc * 2 (M from ``trip_count_node``)."""
    body_nodes = [
        helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "fi"], ["step"]),
        helper.make_node("Add", ["acc_in", "step"], ["acc_out"]),
        helper.make_node("Mul", ["acc_out", "two"], ["scan"]),
        cond_out_node or helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    body = _graph("body", body_nodes,
                  [vinfo("cond_out", [], BOOL), vinfo("acc_out", None), vinfo("scan", None)],
                  inputs=[vinfo("i", [], INT64), vinfo("cond_in", [], BOOL),
                          vinfo("acc_in", None)])
    nodes = [trip_count_node,
             helper.make_node("Loop", ["m", "", "x"], ["acc", "scans"], body=body, name="loop")]
    return model(nodes, [vinfo("x", [2, "N"]), vinfo("n", [], INT64)],
                 [vinfo("acc", [2, "N"]), vinfo("scans", ["M", 2, "N"])],
                 [tensor("two", np.float32(2)), *inits])


def test_static_loop_unrolled(tmp_path):
    """Trip count from x's shape (torch's for-loops over a dim), fixed by --input-shape."""
    proto = _loop_model(helper.make_node("Size", ["x"], ["m"]))
    shapes = {"x": (2, 2), "n": ()}
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 2)).astype(np.float32),
             "n": np.array(0, np.int64)}
    assert_like_ort(proto, feeds, product_run(proto, feeds, tmp_path / "a", shapes))


def test_loop_with_runtime_trip_count_refused():
    proto = _loop_model(helper.make_node("Identity", ["n"], ["m"]))
    with pytest.raises(UnsupportedOpError,
                       match=r"Loop node 'loop': its trip count is computed at run time"):
        import_onnx(proto, input_shapes={"x": (2, 2)})


def test_while_loop_refused():
    stop = helper.make_node("Less", ["i", "three"], ["cond_out"])
    proto = _loop_model(helper.make_node("Size", ["x"], ["m"]), cond_out_node=stop,
                        inits=[tensor("three", np.int64(3))])
    with pytest.raises(UnsupportedOpError, match=r"Loop node 'loop': its body computes the "
                                                 r"loop condition at run time"):
        import_onnx(proto, input_shapes={"x": (2, 2)})


def test_scan_unrolled():
    """Scan over xs (axis 0, forward) and ys (axis 1, reversed); the step outputs are
    stacked in reverse along axis 1; the final state is a second output."""
    body = _graph("body", [helper.make_node("Mul", ["xt", "yt"], ["p"]),
                           helper.make_node("Add", ["s_in", "p"], ["s_out"]),
                           helper.make_node("Mul", ["s_out", "xt"], ["out"])],
                  [vinfo("s_out", [3]), vinfo("out", [3])],
                  inputs=[vinfo("s_in", [3]), vinfo("xt", [3]), vinfo("yt", [3])])
    scan = helper.make_node("Scan", ["s0", "xs", "ys"], ["s", "outs"], body=body,
                            num_scan_inputs=2, scan_input_axes=[0, 1],
                            scan_input_directions=[0, 1], scan_output_axes=[1],
                            scan_output_directions=[1])
    proto = model([scan], [vinfo("s0", [3]), vinfo("xs", [4, 3]), vinfo("ys", [3, 4])],
                  [vinfo("s", [3]), vinfo("outs", [3, 4])])
    rng = np.random.default_rng(3)
    feeds = {"s0": rng.standard_normal(3).astype(np.float32),
             "xs": rng.standard_normal((4, 3)).astype(np.float32),
             "ys": rng.standard_normal((3, 4)).astype(np.float32)}
    assert_like_ort(proto, feeds, tvm_run(proto, feeds))


def test_scan_with_unfixed_length_refused():
    body = _graph("body", [helper.make_node("Add", ["s_in", "xt"], ["s_out"])],
                  [vinfo("s_out", [3])], inputs=[vinfo("s_in", [3]), vinfo("xt", [3])])
    scan = helper.make_node("Scan", ["s0", "xs"], ["s"], body=body, num_scan_inputs=1,
                            name="scan")
    proto = model([scan], [vinfo("s0", [3]), vinfo("xs", ["T", 3])], [vinfo("s", [3])])
    with pytest.raises(UnsupportedOpError, match=r"Scan node 'scan': the sequence length of "
                                                 r"its scan input 'xs' is not fixed"):
        import_onnx(proto)


def test_nested_loops_and_runtime_if_in_a_loop_body():
    """An outer Loop (2 iterations) whose body runs an inner Loop (3 iterations) and an If
    on a run-time flag: both loops unroll, and the If's two copies (distinct names inside)
    become two Wheres."""
    inner_body = _graph("inner", [helper.make_node("Add", ["v_in", "x"], ["v_out"]),
                                  helper.make_node("Identity", ["ci"], ["co"])],
                        [vinfo("co", [], BOOL), vinfo("v_out", None)],
                        inputs=[vinfo("j", [], INT64), vinfo("ci", [], BOOL), vinfo("v_in", None)])
    gate = helper.make_node(
        "If", ["flag"], ["g"],
        then_branch=_graph("t", [helper.make_node("Mul", ["v", "two"], ["twice"])],
                           [vinfo("twice", None)]),
        else_branch=_graph("e", [helper.make_node("Neg", ["v"], ["neg"])], [vinfo("neg", None)]))
    outer_body = _graph("outer", [
        helper.make_node("Loop", ["three", "", "acc_in"], ["v"], body=inner_body),
        gate,
        helper.make_node("Identity", ["c_in"], ["c_out"])],
        [vinfo("c_out", [], BOOL), vinfo("g", None)],
        inputs=[vinfo("i", [], INT64), vinfo("c_in", [], BOOL), vinfo("acc_in", None)])
    proto = model([helper.make_node("Loop", ["two_i", "", "x"], ["y"], body=outer_body)],
                  [vinfo("flag", [], BOOL), vinfo("x", [2, 3])], [vinfo("y", [2, 3])],
                  [tensor("two_i", np.int64(2)), tensor("three", np.int64(3)),
                   tensor("two", np.float32(2))])
    ops = [n.op_type for n in prepare(onnx.load_from_string(proto.SerializeToString()),
                                      "test").graph.node]
    assert "Loop" not in ops and "If" not in ops and ops.count("Where") == 2, ops
    x = np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32)
    run = tvm_build(proto)
    for flag in (True, False):
        feeds = {"flag": np.array(flag), "x": x}
        assert_like_ort(proto, feeds, run(feeds))
