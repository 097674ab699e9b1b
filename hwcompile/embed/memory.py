"""Memory planned for one run, read from the Relax module after memory planning.

The target's Relax pipeline ends with StaticPlanBlockMemory and VM lowering, after which
every buffer the VM allocates per run is a ``relax.vm.alloc_storage`` with a constant
byte size. The storages are allocated together at function entry, so their sum is the peak.
The Relax VM reports the same sizes to an instrument at run time (tests compare the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
from tvm import relax

from hwcompile.errors import TargetError

_ALLOC_STORAGE = "relax.vm.alloc_storage"


@dataclass(frozen=True)
class MemoryPlan:
    storage_bytes: tuple[int, ...]  # one entry per planned storage, in program order

    @property
    def activation_bytes(self) -> int:
        return sum(self.storage_bytes)


def lower(mod: tvm.IRModule, target: Any, db: str | Path | None = None) -> tvm.IRModule:
    """The module after the Relax pipeline the CPU target builds with (same kernels, same
    tuning records), so the C library computes what the artifact's model.so computes.

    A ``system_lib_prefix`` is applied here, after the pipeline, not by the pipeline's
    AttachGlobalSymbol: TVM 0.27 renames kernels there with a TIR mutator that fails on
    any kernel holding a flat buffer view (its ``tirx.buffer_data`` call is no PrimExpr)."""
    pipeline = target.relax_pipeline(db)
    prefix = mod.get_attr("system_lib_prefix")
    with target.tvm_target:
        if prefix is None:
            return pipeline(mod)
        lowered = pipeline(mod.without_attr("system_lib_prefix"))
    return _prefix_kernels(lowered, str(prefix)).with_attr("system_lib_prefix", prefix)


def _prefix_kernels(mod: tvm.IRModule, prefix: str) -> tvm.IRModule:
    """Every kernel renamed (GlobalVar and symbol) to ``prefix + name``; the Relax
    functions' references follow. Kernels never call each other on the CPU target."""
    renamed = {gvar: tvm.ir.GlobalVar(prefix + gvar.name_hint)
               for gvar, func in mod.functions_items() if isinstance(func, tvm.tirx.PrimFunc)}
    for old, new in renamed.items():
        relax.expr._update_type(new, old.ty)  # what TVM's own rename does

    @relax.expr_functor.mutator
    class _Rename(relax.PyExprMutator):
        def visit_global_var_(self, op: relax.GlobalVar) -> relax.Expr:
            return renamed.get(op, op)

    out = tvm.IRModule(attrs=mod.attrs)
    for gvar, func in mod.functions_items():
        if gvar in renamed:
            out[renamed[gvar]] = func.with_attr("global_symbol", renamed[gvar].name_hint)
        else:
            out[gvar] = _Rename().visit_expr(func)
    return out


def plan(lowered: tvm.IRModule, function: str = "main") -> MemoryPlan:
    """Planned storages of ``function`` in a lowered module; a symbolic size is an error."""
    sizes: list[int] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) \
                and expr.op.name == _ALLOC_STORAGE:
            shape = expr.args[0]
            values = [v for v in shape.values] if isinstance(shape, relax.ShapeExpr) else []
            if len(values) != 1 or not isinstance(values[0], tvm.tirx.IntImm):
                raise TargetError(f"memory plan: storage of size {shape} is not static; "
                                  "fix every input shape with --input-shape")
            sizes.append(int(values[0]))

    relax.analysis.post_order_visit(lowered[function], visit)
    return MemoryPlan(tuple(sizes))
