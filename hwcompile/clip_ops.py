"""ONNX Clip, HardSigmoid and HardSwish as Relax ``maximum``/``minimum`` calls.

TVM 0.27's importer gives clipping to the rest of the compiler in two forms no pass can see
through: ``Clip`` becomes ``call_tir`` of TE ``maximum``/``minimum`` kernels, and
HardSigmoid/HardSwish become ``relax.clip``, which has no layout-inference rule. Both stop
ConvertLayout: an NHWC network pays a transpose to NCHW and back around every ReLU6 and
hard-swish (the top kernels of MobileNetV3-style models), and the quantizer sees an opaque
call. ``maximum(minimum(x, hi), lo)`` is what both forms compute (``topi.clip`` is defined
that way), so the rewrite changes no result.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, tirx
from tvm.ir.expr import TensorLoad
from tvm.s_tir.stmt import SBlock, SBlockRealize

from .rewrite import call_name, mutate_functions


def clip_as_min_max(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with clipping written as Relax ``maximum``/``minimum`` (module docstring);
    the TE kernels left without callers are dropped, nothing else is."""
    rewritten = mutate_functions(_ClipAsMinMax(mod), mod)
    called: set[str] = set()
    for _, func in rewritten.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, lambda e: called.add(e.name_hint) if
                                            isinstance(e, tvm.ir.GlobalVar) else None)
    for gvar, func in list(rewritten.functions_items()):
        if isinstance(func, tirx.PrimFunc) and gvar.name_hint not in called:
            del rewritten[gvar]
    return rewritten


@relax.expr_functor.mutator
class _ClipAsMinMax(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod = mod

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call_name(call) == "relax.clip":
            return _clip(call)
        if call_name(call) == "relax.call_tir":
            replacement = self._te_min_max(call)
            return call if replacement is None else replacement
        return call

    def _te_min_max(self, call: relax.Call) -> relax.Expr | None:
        callee, args = call.args[0], list(call.args[1].fields)
        func = self.mod[callee] if isinstance(callee, tvm.ir.GlobalVar) else None
        if not isinstance(func, tirx.PrimFunc) or len(call.args) > 2:
            return None
        matched = _scalar_min_max(func)
        if matched is None:
            return None
        op, bound = matched
        x = args[0]
        dtype = x.ty.dtype
        if bound is None:  # the bound is the call's 0-d second argument
            if len(args) != 2 or args[1].ty.ndim != 0 or args[1].ty.dtype != dtype:
                return None
            other = args[1]
        else:
            other = relax.const(bound, dtype)
        return op(x, other)


def _clip(call: relax.Call) -> relax.Expr:
    x, lo, hi = call.args
    dtype = x.ty.dtype
    result = x
    lo, hi = float(_number(lo)), float(_number(hi))
    if not math.isinf(hi):
        result = relax.op.minimum(result, relax.const(hi, dtype))
    if not math.isinf(lo):
        result = relax.op.maximum(result, relax.const(lo, dtype))
    return result


def _number(prim: relax.PrimValue):
    value = prim.value
    return value.value if hasattr(value, "value") else value


_TIR_TO_RELAX = {tirx.Max: relax.op.maximum, tirx.Min: relax.op.minimum}


def _scalar_min_max(func: tirx.PrimFunc):
    """``(relax op, bound)`` when ``func`` is ``out[i…] = max|min(x[i…], bound)`` over the
    whole output, with ``bound`` a number (returned) or a 0-d buffer (returned as None);
    else None. (In TVM 0.27 a buffer is the parameter variable itself, and a load names it
    as its ``source``.)"""
    params = list(func.params)
    stores = _stores(func.body)
    if len(params) not in (2, 3) or stores is None or len(stores) != 1:
        return None
    store, value = stores[0], stores[0].value
    out = store.buffer
    if not out.same_as(params[-1]) or type(value) not in _TIR_TO_RELAX:
        return None
    x, rhs = value.a, value.b
    if not (isinstance(x, TensorLoad) and x.source.same_as(params[0])
            and _same_static_shape(x.source, out) and len(x.indices) == len(store.indices)
            and all(a.same_as(b) for a, b in zip(x.indices, store.indices))):
        return None
    if len(params) == 3:
        if not (isinstance(rhs, TensorLoad) and rhs.source.same_as(params[1])
                and len(rhs.source.shape) == 0):
            return None
        return _TIR_TO_RELAX[type(value)], None
    if not isinstance(rhs, (tirx.FloatImm, tirx.IntImm)):
        return None
    return _TIR_TO_RELAX[type(value)], rhs.value


def _same_static_shape(a, b) -> bool:
    return len(a.shape) == len(b.shape) and all(
        isinstance(m, tirx.IntImm) and isinstance(n, tirx.IntImm) and int(m) == int(n)
        for m, n in zip(a.shape, b.shape))


def _stores(stmt) -> list | None:
    """The buffer stores of a loop nest of blocks; None if it holds anything else."""
    if isinstance(stmt, tirx.BufferStore):
        return [stmt]
    if isinstance(stmt, SBlockRealize):
        return _stores(stmt.block)
    if isinstance(stmt, SBlock):
        return None if stmt.init is not None else _stores(stmt.body)
    if isinstance(stmt, tirx.For):
        return _stores(stmt.body)
    if isinstance(stmt, tirx.SeqStmt):
        found = [_stores(s) for s in stmt.seq]
        return None if any(f is None for f in found) else [s for f in found for s in f]
    return None
