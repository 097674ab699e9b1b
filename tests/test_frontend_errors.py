"""Operators hwcompile cannot compile get one clear line naming the operator and the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from frontend_util import tensor, vinfo
from onnx import TensorProto, helper

from hwcompile import cli
from hwcompile.errors import UnsupportedOpError
from hwcompile.frontend import import_onnx


def _model(nodes, domains, inits=()):
    graph = helper.make_graph(nodes, "test", [vinfo("x", [2, 4])], [vinfo("y", [2, 4])],
                              list(inits))
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    proto = helper.make_model(graph, opset_imports=opsets)
    proto.ir_version = 8
    return proto


def _microsoft_model():
    return _model([helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft", name="gelu_7"),
                   helper.make_node("Relu", ["g"], ["y"])], ["com.microsoft"])


def _ml_model():
    node = helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", norm="L2",
                            name="norm_0")
    return _model([node], ["ai.onnx.ml"])


@pytest.mark.parametrize(("build", "fragment"), [
    (_microsoft_model, "com.microsoft.Gelu (nodes: gelu_7)"),
    (_ml_model, "ai.onnx.ml.Normalizer (nodes: norm_0)"),
])
def test_non_standard_domain_named(build, fragment):
    with pytest.raises(UnsupportedOpError) as info:
        import_onnx(build())
    message = str(info.value)
    assert "unsupported operators: " + fragment in message
    assert "\n" not in message


def test_unsupported_op_inside_a_runtime_branch_named():
    then = helper.make_graph([helper.make_node("Gelu", ["x"], ["t"], domain="com.microsoft",
                                               name="inner_gelu")], "t", [], [vinfo("t", None)])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "e", [], [vinfo("e", None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="gate")],
        "test", [vinfo("c", [], TensorProto.BOOL), vinfo("x", [2, 4])], [vinfo("y", [2, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    proto.ir_version = 8
    with pytest.raises(UnsupportedOpError, match=r"com\.microsoft\.Gelu \(nodes: inner_gelu\)"):
        import_onnx(proto)


def test_cli_prints_one_line(capfd, tmp_path):
    path = tmp_path / "ms.onnx"
    onnx.save(_microsoft_model(), path)
    code = cli.main(["compile", str(path), "--target", "cpu", "-o", str(tmp_path / "out")])
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code != 0 and len(errors) == 1, lines
    assert all(line.startswith("[hwcompile") for line in lines if line not in errors), lines
    assert "com.microsoft.Gelu (nodes: gelu_7)" in errors[0]
    assert not (tmp_path / "out").exists()


def test_constant_folding_does_not_touch_other_domains():
    """A com.microsoft node between constants is not evaluated (its semantics are not the
    reference evaluator's to know): the error still names it."""
    node = helper.make_node("Gelu", ["c"], ["g"], domain="com.microsoft", name="const_gelu")
    proto = _model([node, helper.make_node("Add", ["x", "g"], ["y"])], ["com.microsoft"],
                   [tensor("c", np.ones(4, np.float32))])
    with pytest.raises(UnsupportedOpError, match=r"com\.microsoft\.Gelu \(nodes: const_gelu\)"):
        import_onnx(proto)
