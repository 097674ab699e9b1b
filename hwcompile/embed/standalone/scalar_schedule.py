"""A schedule for plain scalar C: fewer intermediates in RAM, accumulators in registers.

Legalized, fused kernels are unscheduled: every stage of a fused kernel (pad, the
reduction, each epilogue op) writes a whole intermediate buffer, and a reduction
accumulates through memory. On a microcontroller those intermediates are workspace in the
arena, and memory traffic is most of the time. Per kernel, with TVM's schedule primitives
(the arithmetic and its order are unchanged, so results are too):

- a reduction accumulates into a one-element local buffer (a register), initialized before
  its reduction loops and written back once per output element;
- elementwise consumers of that write-back (bias, requantization, activation) are folded
  into it, so the kernel writes its output directly;
- injective producers (pad, cast, quantize) with one consumer are inlined into it: padding
  becomes a bounds check on the read, as in hand-written MCU kernels.

A primitive that does not apply is skipped; the kernel stays correct either way.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError

_SCHEDULED = "hwcompile.scalar_scheduled"
_UNROLL = 9
# What a primitive that does not apply raises (ScheduleError is a RuntimeError; TVM's FFI
# raises ValueError/IndexError for blocks that no longer exist).
_FAILED = (ScheduleError, RuntimeError, IndexError, ValueError)


def _is_reduction(sch: Schedule, block) -> bool:
    return any(int(iv.iter_type) == 2 for iv in sch.get(block).iter_vars)  # CommReduce


def _with_register_accumulator(sch: Schedule, block) -> tuple[Schedule, str] | None:
    """A copy of ``sch`` where ``block`` (a reduction) accumulates in a register, written
    back once per output element; and the write-back block's name. None if that does not
    apply."""
    trial = sch.copy()
    try:
        spatial = sum(1 for iv in trial.get(block).iter_vars if int(iv.iter_type) == 0)
        loops = trial.get_loops(block)
        writeback = trial.cache_write(block, 0, "global")
        trial.reverse_compute_at(writeback, loops[spatial - 1])
        trial.decompose_reduction(block, loops[spatial])
        _unroll_window(trial, loops[spatial:])
    except _FAILED:
        return None
    return trial, trial.get(writeback).name_hint


def _with_epilogue_folded(sch: Schedule, writeback: str) -> Schedule:
    """Fold the write-back's elementwise consumers into it, as far as they chain."""
    while True:
        block = _find(sch, writeback)
        consumers = sch.get_consumers(block) if block is not None else []
        if len(consumers) != 1:
            return sch
        trial = sch.copy()
        try:
            trial.reverse_compute_inline(consumers[0])
        except _FAILED:
            return sch
        sch = trial


def _unroll_window(sch: Schedule, loops: list) -> None:
    """Unroll the innermost reduction loops while their trip counts multiply to at most
    _UNROLL (a 3x3 window: 9 multiply-adds per loop iteration instead of 3 loops)."""
    trips = 1
    for loop in reversed(loops):
        extent = sch.get(loop).extent
        if not isinstance(extent, tvm.tirx.IntImm) or trips * int(extent) > _UNROLL:
            return
        trips *= int(extent)
        sch.unroll(loop)


def _with_inlined(sch: Schedule, block) -> Schedule | None:
    trial = sch.copy()
    try:
        trial.compute_inline(block)
    except _FAILED:
        return None
    return trial


def _blocks(sch: Schedule) -> list[str]:
    return [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]


def schedule_kernel(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` scheduled for scalar C (see the module docstring)."""
    sch = Schedule(tvm.IRModule({"main": func}))
    if _find(sch, "root") is None:
        return func  # hand-written loops, no blocks: nothing to schedule
    writebacks = []
    for name in _blocks(sch):
        block = _find(sch, name)
        result = _with_register_accumulator(sch, block) if _is_reduction(sch, block) else None
        if result is not None:
            sch, writeback = result
            writebacks.append(writeback)
    # Inlining a producer can leave a write-back with one consumer (x * hardsigmoid(x)
    # reads x twice, through two blocks until they are one): repeat to a fixed point.
    while True:
        before = _blocks(sch)
        for writeback in writebacks:
            sch = _with_epilogue_folded(sch, writeback)
        for name in _blocks(sch):
            block = _find(sch, name)
            if block is not None and name not in writebacks and not _is_reduction(sch, block) \
                    and len(sch.get_consumers(block)) == 1:
                sch = _with_inlined(sch, block) or sch
        if _blocks(sch) == before:
            return sch.mod["main"].with_attr(_SCHEDULED, True)


def _find(sch: Schedule, name: str):
    try:
        return sch.get_sblock(name)
    except _FAILED:
        return None


@tvm.transform.module_pass(opt_level=0, name="ScalarSchedule")
def scalar_schedule(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Apply ``schedule_kernel`` to every PrimFunc of ``mod``."""
    updated = {gvar: schedule_kernel(func) for gvar, func in mod.functions_items()
               if isinstance(func, tirx.PrimFunc) and func.attrs.get(_SCHEDULED) != 1}
    for gvar, func in updated.items():
        mod[gvar] = func
    return mod
