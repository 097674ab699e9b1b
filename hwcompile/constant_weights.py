"""Constant operands made named, per-layer weights (before pruning and quantization).

Some exporters (paddle2onnx) store conv kernels and biases as Constant nodes, which stay
Relax constants inside the graph. The passes work on named weights: pruning's dependency
analysis (``passes/prune/groups.py``) slices only those, so such a conv would stay whole and
pin its neighbours' channels with it (every squeeze-excitation block of the PaddleOCR
models), and quantization finds layers by their weights, so it would leave the conv float.
Naming them makes them weights like any other.

Others deduplicate equal initializers: a transformer exported with zero biases has one
zero vector as the bias of every projection (bert_tiny). A weight shared by several layers
must be sliced the same way everywhere, which would tie all their channels together; an
elementwise operand (a bias, a scale) gets its own copy per use instead. Kernels stay shared:
tied conv/dense weights are a real coupling.
"""

from __future__ import annotations

import tvm
from tvm import relax

from hwcompile.model import Model
from hwcompile.rewrite import RebuildContext, call_name, dataflow_bindings, free_vars, rebuild

_KERNEL_OPS = ("relax.nn.conv2d", "relax.nn.conv2d_transpose", "relax.matmul")
_ELEMENTWISE = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide")


def _is_tensor_constant(expr: relax.Expr) -> bool:
    return isinstance(expr, tvm.ir.Constant) and isinstance(expr.ty, relax.TensorType) \
        and expr.ty.ndim >= 1 and any(int(d) > 1 for d in expr.ty.shape.values)


def constants_as_weights(model: Model) -> Model:
    """``model`` with every non-scalar constant operand of a call stored as a named weight
    (``<binding>.weight`` for a conv/dense kernel, ``<binding>.const<i>`` otherwise), and
    every weight that is an elementwise operand of several calls copied per call
    (``<weight>.<binding>``; module docstring)."""
    uses: dict[str, int] = {}
    for binding in dataflow_bindings(model.main):
        for var in free_vars(binding.value):
            if var.name in model.params:
                uses[var.name] = uses.get(var.name, 0) + 1

    def own_copy(rc: RebuildContext, value: relax.Call, index: int, arg) -> bool:
        name = rc.weight_name(arg)
        return name is not None and uses.get(name, 0) > 1 and call_name(value) in _ELEMENTWISE

    def rewrite(rc: RebuildContext, binding: relax.VarBinding):
        value = binding.value
        if not isinstance(value, relax.Call) or not any(
                _is_tensor_constant(a) or own_copy(rc, value, i, a) for i, a in enumerate(value.args)):
            return None
        args = []
        for index, arg in enumerate(value.args):
            if _is_tensor_constant(arg):
                role = "weight" if index == 1 and call_name(value) in _KERNEL_OPS else f"const{index}"
                arg = rc.param(rc.unique_name(f"{binding.var.name}.{role}"), rc.weight(arg))
            elif own_copy(rc, value, index, arg):
                arg = rc.param(rc.unique_name(f"{rc.weight_name(arg)}.{binding.var.name}"),
                               rc.weight(arg))
            else:
                arg = rc.arg(arg)
            args.append(arg)
        return relax.Call(value.op, args, value.attrs, value.ty_args)

    return rebuild(model, rewrite)
