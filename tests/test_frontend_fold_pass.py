"""The Relax ``fold-constants`` pass leaves alone what it cannot fold (issue 12: a YOLOv8
export aborted the compile with "expression did not fold to a constant")."""

from __future__ import annotations

import numpy as np
from frontend_util import assert_like_ort, model, product_run, tensor, vinfo
from onnx import TensorProto, helper


def test_fold_constants_leaves_an_unfoldable_expression(tmp_path):
    """TVM's FoldConstant does not evaluate ``astype`` of a 0-d tensor, and ``fold-constants``
    aborted the compile on it with "expression did not fold to a constant". Here the Cast of
    a scalar zero point that MatMulInteger's converter emits; the pass must keep the
    expression and the compile must succeed."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("MatMulInteger", ["a", "b", "", "b_zp"], ["y"])]
    proto = model(nodes, [vinfo("a", [3, 8], TensorProto.UINT8)],
                  [vinfo("y", [3, 5], TensorProto.INT32)],
                  [tensor("b", rng.integers(-128, 128, (8, 5)).astype(np.int8)),
                   tensor("b_zp", np.int8(3))])
    a = rng.integers(0, 256, (3, 8)).astype(np.uint8)
    got = product_run(proto, {"a": a}, tmp_path / "a")
    assert_like_ort(proto, {"a": a}, got, exact=True)


def test_fold_constants_folds_what_it_can_next_to_it():
    """The same pass still folds a weight expression beside the unfoldable one."""
    import tvm
    from tvm import relax

    from hwcompile.model import Model, TensorSpec
    from hwcompile.pipeline import PassContext, get_pass

    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    w = relax.Var("w", relax.TensorType((3, 2), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, w]):
        with bb.dataflow():
            zp = bb.emit(relax.op.astype(relax.const(np.int8(3)), "float32"))  # not folded
            wt = bb.emit(relax.op.permute_dims(w))                              # folded
            y = bb.emit(relax.op.multiply(relax.op.matmul(x, relax.op.permute_dims(wt)), zp))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    weight = np.arange(6, dtype=np.float32).reshape(3, 2)
    source = Model(mod=bb.get(), params={"w": weight}, inputs=[TensorSpec("x", (2, 3), "float32")],
                   outputs=[TensorSpec("y", (2, 2), "float32")], name="m")
    folded = get_pass("fold-constants").fn(source, PassContext())
    assert list(folded.params) == ["w.permute_dims.permute_dims"]  # both transposes folded
    assert "R.astype" in folded.mod.script()                       # the cast kept
    xv = np.ones((2, 3), np.float32)
    vm = relax.VirtualMachine(tvm.compile(folded.bound_module(), "llvm"), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(xv)).numpy(), xv @ weight * 3)
