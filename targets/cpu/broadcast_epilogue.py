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


def _dims(ty: relax.Type) -> list | None:
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    return list(ty.shape.values)


def _is_one(dim: tvm.tirx.PrimExpr) -> bool:
    return isinstance(dim, tvm.tirx.IntImm) and int(dim) == 1


def _expanded(operand: relax.Type, result: relax.Type) -> bool:
    """Whether broadcasting ``operand`` to ``result`` repeats it (a symbolic batch allowed)."""
    small, large = _dims(operand), _dims(result)
    if small is None or large is None:
        return False
    lead = len(large) - len(small)  # leading axes of extent 1 add rank, not repeats
    return any(not _is_one(d) for d in large[:lead]) or any(
        _is_one(s) and not _is_one(d) for s, d in zip(small, large[lead:]))


@relax.expr_functor.mutator
class _Separate(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod = mod
        self.injective: dict[tvm.ir.GlobalVar, tvm.ir.GlobalVar] = {}
        self.unfused: set[tvm.ir.GlobalVar] = set()

    def _from_conv_epilogue(self, expr: relax.Expr, depth: int = 0) -> bool:
        """Whether ``expr`` is a conv/matmul (OutEWiseFusable) kernel's result, possibly
        through elementwise and broadcast kernels: what FuseOps would fuse it with."""
        bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else None
        pattern = self._pattern(bound) if bound is not None else None
        if pattern == _OUT_ELEMWISE_FUSABLE:
            return True
        if pattern is None or pattern > _BROADCAST or depth >= _MAX_CHAIN:
            return False
        return any(self._from_conv_epilogue(arg, depth + 1) for arg in bound.args[1].fields)

    def _pattern(self, call: relax.Call) -> int | None:
        """``_pattern``, also of a call already moved to an ``_unfused`` copy (the bindings
        looked up are the rewritten ones; those copies are not in ``self.mod``)."""
        if call_name(call) == "relax.call_tir" and call.args[0] in self.unfused:
            return _INJECTIVE
        return _pattern(self.mod, call)

    def _expands_a_conv(self, call: relax.Call) -> bool:
        pattern = _pattern(self.mod, call)
        if pattern is None or pattern > _BROADCAST:  # TVM calls some broadcasts elementwise
            return False
        return any(isinstance(arg, relax.Var) and _expanded(arg.ty, call.ty)
                   and self._from_conv_epilogue(arg) for arg in call.args[1].fields)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not self._expands_a_conv(call):
            return call
        callee = call.args[0]
        if callee not in self.injective:
            func = self.mod[callee].with_attr("op_pattern", _INJECTIVE)
            self.injective[callee] = self.builder_.add_func(func, f"{callee.name_hint}_unfused")
            self.unfused.add(self.injective[callee])
        return relax.Call(call.op, [self.injective[callee], *call.args[1:]], call.attrs,
                          call.ty_args)


@tvm.transform.module_pass(opt_level=0, name="ExpandingBroadcastsApart")
def expanding_broadcasts_apart(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Between AnnotateTIROpPattern and FuseOps: see the module docstring."""
    separated = mutate_functions(_Separate(mod), mod)
    return relax.transform.DeadCodeElimination()(separated)  # the originals left uncalled
