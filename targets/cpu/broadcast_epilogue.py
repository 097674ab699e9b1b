"""A broadcast that expands a conv's result is a kernel of its own, not the conv's epilogue.

A squeeze-and-excitation block ends in ``x · s``: ``s`` (N, 1, 1, C) comes out of a 1×1
conv on the pooled features, ``x`` is the whole feature map. With the depthwise convs in
NHWC nothing separates the two any more, and FuseOps puts the multiply, a broadcast, in the
epilogue of the conv that computes ``s``. The default schedule writes each register tile of
a conv back with its epilogue inlined; a consumer larger than the conv's output cannot be
inlined there (TVM's reverse_compute_inline fails with an internal error), and the whole
kernel kept TVM's scalar loops. Marked injective after ``AnnotateTIROpPattern``, such a
broadcast stays out of the conv's group: a vectorized, parallel kernel of its own, the conv
keeping its bias and activation.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax

from hwcompile.rewrite import call_name, mutate_functions

_BROADCAST, _INJECTIVE, _OUT_ELEMWISE_FUSABLE = 1, 2, 4  # TVM's OpPatternKind values
_MAX_CHAIN = 32  # elementwise ops between the conv and the broadcast (hard-sigmoid: ~5)


def _pattern(mod: tvm.IRModule, call: relax.Call) -> int | None:
    if call_name(call) != "relax.call_tir":
        return None
    func = mod[call.args[0]]
    pattern = func.attrs.get("op_pattern") if func.attrs is not None else None
    return None if pattern is None else int(pattern)


def _elements(ty: relax.Type) -> int | None:
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    dims = list(ty.shape.values)
    if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return math.prod(int(d) for d in dims)


@relax.expr_functor.mutator
class _Separate(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod = mod
        self.injective: dict[tvm.ir.GlobalVar, tvm.ir.GlobalVar] = {}

    def _from_conv_epilogue(self, expr: relax.Expr, depth: int = 0) -> bool:
        """Whether ``expr`` is a conv/matmul (OutEWiseFusable) kernel's result, possibly
        through elementwise and broadcast kernels: what FuseOps would fuse it with."""
        bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else None
        pattern = _pattern(self.mod, bound) if bound is not None else None
        if pattern == _OUT_ELEMWISE_FUSABLE:
            return True
        if pattern is None or pattern > _BROADCAST or depth >= _MAX_CHAIN:
            return False
        return any(self._from_conv_epilogue(arg, depth + 1) for arg in bound.args[1].fields)

    def _expands_a_conv(self, call: relax.Call) -> bool:
        out, pattern = _elements(call.ty), _pattern(self.mod, call)
        if pattern is None or pattern > _BROADCAST or out is None:  # TVM calls some elementwise
            return False
        return any(isinstance(arg, relax.Var) and (_elements(arg.ty) or out) < out
                   and self._from_conv_epilogue(arg) for arg in call.args[1].fields)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not self._expands_a_conv(call):
            return call
        callee = call.args[0]
        if callee not in self.injective:
            func = self.mod[callee].with_attr("op_pattern", _INJECTIVE)
            self.injective[callee] = self.builder_.add_func(func, f"{callee.name_hint}_unfused")
        return relax.Call(call.op, [self.injective[callee], *call.args[1:]], call.attrs,
                          call.ty_args)


@tvm.transform.module_pass(opt_level=0, name="ExpandingBroadcastsApart")
def expanding_broadcasts_apart(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Between AnnotateTIROpPattern and FuseOps: see the module docstring."""
    separated = mutate_functions(_Separate(mod), mod)
    return relax.transform.DeadCodeElimination()(separated)  # the originals left uncalled
