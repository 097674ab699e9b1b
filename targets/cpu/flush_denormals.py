"""Weights too small for float32 arithmetic flushed to zero at compile time.

x86 cores run an FMA whose operand or result is subnormal through a microcode assist
(~100 cycles) unless the thread sets DAZ/FTZ, which TVM's thread pool does not. PaddleOCR's
exports keep filters that training shrank to nothing: 111 of the 384 output channels of one
ppocrv5_det 1×1 conv have no weight above 1e-35, so their products and sums are
subnormal; that conv took 26.5 ms in the model (0.6 GFLOP/s), 4.6 ms with only the
subnormal weights flushed, 0.26 ms with all these (ppocrv5_det: 36,599 such weights in 19
tensors, ppocrv4_rec 36,865). Flushed:

- in every float constant, subnormal entries (their sum with any normal term is that term);
- in conv and matmul weights, entries 2^100 (~1e30) times smaller than the tensor's largest:
  next to the products of its normal weights, theirs are 30 orders of magnitude below
  float32's resolution, yet with activations below ~1e-8 they turn subnormal.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule

from hwcompile.rewrite import call_name, mutate_functions

_FLOATS = ("float32", "float64")
_RELATIVE = 2.0 ** -100  # of the tensor's largest magnitude, for weights of a sum of products
_WEIGHTED = frozenset(f"relax.{name}" for name in (
    "nn.conv1d", "nn.conv2d", "nn.conv3d", "nn.conv1d_transpose", "nn.conv2d_transpose",
    "matmul"))


def flushed(value: np.ndarray, weight: bool) -> np.ndarray | None:
    """``value`` with its subnormal entries zero (``weight``: also those 2^100 times smaller
    than its largest), or None when there are none."""
    if str(value.dtype) not in _FLOATS or value.size == 0:
        return None
    magnitude = np.abs(value)
    floor = np.finfo(value.dtype).tiny
    if weight:
        floor = max(floor, float(magnitude.max()) * _RELATIVE)
    tiny = (magnitude != 0) & (magnitude < floor)
    return np.where(tiny, value.dtype.type(0), value) if tiny.any() else None


@relax.expr_functor.mutator
class _Flush(relax.PyExprMutator):
    def _flush(self, arg: relax.Expr, weight: bool) -> relax.Expr:
        if isinstance(arg, tvm.ir.Constant) and hasattr(arg.value, "numpy"):
            value = flushed(arg.value.numpy(), weight)
            return arg if value is None else relax.const(value)
        if isinstance(arg, relax.Tuple):
            fields = [self._flush(f, weight) for f in arg.fields]
            if not all(a.same_as(b) for a, b in zip(fields, arg.fields)):
                return relax.Tuple(fields)
        return arg

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        weighted = call_name(call) in _WEIGHTED
        args = [self._flush(a, weighted) for a in call.args]
        if all(a.same_as(b) for a, b in zip(args, call.args)):
            return call
        return relax.Call(call.op, args, call.attrs, call.ty_args)


@tvm.transform.module_pass(opt_level=0, name="FlushTinyConstants")
def flush_tiny_constants(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """Float constants with their subnormal entries zero, conv and matmul weights also
    those 2^100 times smaller than the weight's largest (see the module docstring)."""
    return mutate_functions(_Flush(mod), mod)
