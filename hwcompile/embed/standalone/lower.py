"""Relax → planned ``main`` + the C source of the kernels it calls (TVM's ``c`` target).

The graph is lowered with TVM's stock CPU passes (legalize, fuse), not the CPU target's
vector schedules: the kernels must be plain loops any C compiler builds, with no vector types
and no LLVM intrinsics. Lowering stops right after ``StaticPlanBlockMemory``, where ``main``
is a sequence of storage allocations, tensor views and direct kernel calls (see
schedule.py); the VM-specific passes after it are not run, since the glue replaces the VM.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from .scalar_schedule import scalar_schedule


def c_target() -> tvm.target.Target:
    return tvm.target.Target("c")


def lower(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` (weights bound) legalized, fused and memory planned for the C target."""
    target = c_target()
    passes = [*cpu_generic.legalize_passes(target), scalar_schedule,
              *cpu_generic.dataflow_lower_passes(target),
              relax.transform.StaticPlanBlockMemory(), relax.transform.AttachGlobalSymbol()]
    with target:
        return tvm.transform.Sequential(passes)(mod)


def kernel_source(lowered: tvm.IRModule, kernels: list[str], checks: bool) -> str:
    """C source of the named PrimFuncs (TVM's packed calling convention), argument checks
    compiled in only when ``checks``; kernels.py checks what they call."""
    funcs = {lowered.get_global_var(name): lowered[name] for name in kernels}
    config = {"tirx.disable_assert": not checks}
    with tvm.transform.PassContext(opt_level=3, config=config):
        built = tvm.tirx.build(tvm.IRModule(funcs), target=c_target())
    return built.inspect_source()
