"""Constant tensors inside the graph become named weights before pruning.

Some exporters (paddle2onnx) store conv kernels and biases as Constant nodes, which stay
Relax constants inside the graph. The dependency analysis (groups.py) slices only named
weights, so such a conv would stay whole and pin its neighbours' channels with it (every
squeeze-excitation block of the PaddleOCR models). Naming them lets them be sliced.
"""

from __future__ import annotations

import tvm
from tvm import relax

from hwcompile.model import Model
from hwcompile.rewrite import RebuildContext, call_name, rebuild

_KERNEL_OPS = ("relax.nn.conv2d", "relax.nn.conv2d_transpose", "relax.matmul")


def _is_tensor_constant(expr: relax.Expr) -> bool:
    return isinstance(expr, tvm.ir.Constant) and isinstance(expr.ty, relax.TensorType) \
        and expr.ty.ndim >= 1 and any(int(d) > 1 for d in expr.ty.shape.values)


def constants_as_weights(model: Model) -> Model:
    """``model`` with every non-scalar constant operand of a call stored as a named weight
    (``<binding>.weight`` for a conv/dense kernel, ``<binding>.const<i>`` otherwise)."""

    def rewrite(rc: RebuildContext, binding: relax.VarBinding):
        value = binding.value
        if not isinstance(value, relax.Call) or not any(map(_is_tensor_constant, value.args)):
            return None
        args = []
        for index, arg in enumerate(value.args):
            if _is_tensor_constant(arg):
                role = "weight" if index == 1 and call_name(value) in _KERNEL_OPS else f"const{index}"
                arg = rc.param(rc.unique_name(f"{binding.var.name}.{role}"), rc.weight(arg))
            else:
                arg = rc.arg(arg)
            args.append(arg)
        return relax.Call(value.op, args, value.attrs, value.ty_args)

    return rebuild(model, rewrite)
