"""Untuned default CPU schedules: one fast heuristic per kernel kind, no measurement.

TVM's legalized kernels are plain scalar loop nests (no threads, no SIMD), ~20× slower
than onnxruntime here. Convolutions are first switched to NHWC/HWIO (``cpu_layout``), so
every conv, dense and pooling kernel has its output channels innermost and contiguous.
Then, per PrimFunc:

- the main reduction block (conv, matmul, pooling) gets a register tile of
  ``rows × vector`` outputs accumulated in a small buffer LLVM keeps in registers, the
  reduction loops outside that tile, the outer spatial loops in parallel, and its
  elementwise epilogue (bias, ReLU, residual add) inlined into the write-back;
- every other block (padding, elementwise, layout changes) runs its outer loops in
  parallel and its innermost loop vectorized.

A function the heuristics cannot handle keeps TVM's default loops (correct, just slow).
Functions already scheduled (from a tuning database) are left alone.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, tirx
from tvm.ir import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError

_SCHEDULED = "tirx.is_scheduled"


def cpu_layout() -> tvm.transform.Pass:
    """Convolutions in NHWC with HWIO weights: output channels become the SIMD axis.
    Grouped and depthwise convolutions stay NCHW: legalized in NHWC their channel index
    arithmetic defeats the tile (measured 2.5× slower here), in NCHW they vectorize on width."""

    def desired(call: relax.Call) -> dict[str, list[str]]:  # called for every op call
        if call.op.name != "relax.nn.conv2d":
            return {}
        dense = int(call.attrs.groups) == 1
        return {"relax.nn.conv2d": ["NHWC", "HWIO"] if dense else ["NCHW", "OIHW"]}

    return relax.transform.ConvertLayout({}, layout_cb=desired)


# Below this much work (multiply-adds, or elements for elementwise kernels) a kernel runs
# on one thread: waking the pool costs ~10 µs, more than such a kernel takes.
_PARALLEL_MIN_WORK = 1 << 17


def _divisor(extent: int, choices: tuple[int, ...]) -> int:
    """The first of ``choices`` that divides ``extent`` (1 if none does)."""
    return next((c for c in choices if extent % c == 0), 1)


def iter_kinds(sch: Schedule, block: tvm.s_tir.schedule.SBlockRV) -> list[str]:
    """Per block iterator: "S" spatial, "R" reduction, "O" anything else."""
    return ["S" if iv.iter_type == 0 else "R" if iv.iter_type == 2 else "O"
            for iv in sch.get(block).iter_vars]


def _loop_extents(sch: Schedule, loops: list) -> list[int | None]:
    extents = []
    for loop in loops:
        ext = sch.get(loop).extent
        extents.append(int(ext) if isinstance(ext, tirx.IntImm) else None)
    return extents


def _schedule_elementwise(sch: Schedule, block, lanes: int) -> None:
    """Outer loops parallel, innermost vectorized when it is a spatial, static loop."""
    loops = sch.get_loops(block)
    kinds = iter_kinds(sch, block)
    if not loops or "R" in kinds or "O" in kinds or len(kinds) != len(loops):
        return
    extents = _loop_extents(sch, loops)
    if extents[-1] is None:
        return  # a symbolic innermost loop (outer ones, like the batch, may be symbolic)
    inner = loops[-1]
    vec = _divisor(extents[-1], (lanes * 2, lanes, 4)) if extents[-1] >= 4 else 1
    if vec > 1:
        _, inner = sch.split(inner, [None, vec])
        sch.vectorize(inner)
    outer = sch.get_loops(block)[:-2 if vec > 1 else -1] if len(loops) > 1 else []
    if outer and (None in extents or math.prod(extents) >= _PARALLEL_MIN_WORK):
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


def _schedule_reduction(sch: Schedule, block, lanes: int) -> bool:
    """Register-tiled reduction (see module docstring); False if the block does not fit."""
    kinds = iter_kinds(sch, block)
    loops = sch.get_loops(block)
    if len(loops) != len(kinds) or "O" in kinds or "R" not in kinds:
        return False
    spatial = [lp for lp, k in zip(loops, kinds) if k == "S"]
    reduce = [lp for lp, k in zip(loops, kinds) if k == "R"]
    if not spatial or kinds[: len(spatial)] != ["S"] * len(spatial):
        return False  # legalization puts spatial loops first; anything else: leave it
    extents = _loop_extents(sch, spatial)
    if extents[-1] is None:
        return False  # the SIMD axis must be static; outer ones (the batch) may be symbolic
    # Innermost spatial axis (output channels in NHWC, columns of a matmul): SIMD lanes.
    vec = _divisor(extents[-1], (lanes * 2, lanes, 4))
    v_out, v_in = sch.split(spatial[-1], [None, vec])
    if len(spatial) > 1 and extents[-2] is not None:
        # The next axis (output width, matmul rows): independent accumulators, ≤ 12 registers.
        max_rows = max(1, 12 // max(1, vec // lanes))
        rows = _divisor(extents[-2], tuple(range(max_rows, 0, -1)))
        r_out, r_in = sch.split(spatial[-2], [None, rows])
        tile_outer = [*spatial[:-2], v_out, r_out]
    else:  # a single spatial axis, or symbolic rows (a dynamic batch of a matmul)
        r_in = None
        tile_outer = [*spatial[:-1], v_out]
    order = [*tile_outer, *reduce, *([r_in] if r_in is not None else []), v_in]
    sch.reorder(*order)
    # Accumulate the tile in a small buffer, write back (plus the epilogue) per tile.
    acc = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(acc, tile_outer[-1])
    _inline_epilogue(sch, acc)
    # Loop annotations before decompose_reduction: they need the intact reduction block,
    # and the init loops it creates copy them.
    parallel = tile_outer[:-1] if len(tile_outer) > 1 else tile_outer
    work = math.prod(e or 1 for e in extents) * math.prod(e or 1 for e in _loop_extents(sch, reduce))
    if None in extents or work >= _PARALLEL_MIN_WORK:  # a symbolic batch: assume it is big
        sch.parallel(sch.fuse(*parallel) if len(parallel) > 1 else parallel[0])
    if r_in is not None:
        sch.unroll(r_in)
    sch.vectorize(v_in)
    acc_loops = sch.get_loops(acc)[len(tile_outer):]
    if acc_loops:
        sch.vectorize(acc_loops[-1])
    sch.decompose_reduction(block, reduce[0])
    return True


def _inline_epilogue(sch: Schedule, writeback) -> None:
    """Fold elementwise consumers of the tile's write-back into it, as far as they chain."""
    while True:
        consumers = sch.get_consumers(writeback)
        if len(consumers) != 1:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except ScheduleError:
            return


def schedule_func(func: tirx.PrimFunc, lanes: int) -> tirx.PrimFunc | None:
    """The heuristically scheduled function, or None to keep the default loops."""
    sch = heuristic_schedule(IRModule({"main": func}), lanes)
    return None if sch is None else sch.mod["main"].with_attr(_SCHEDULED, True)


def heuristic_schedule(mod: IRModule, lanes: int) -> Schedule | None:
    """The traced heuristic schedule of ``mod["main"]`` (None: keep the default loops);
    its trace is what the tuner records as the baseline candidate."""
    sch = Schedule(mod)
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    reductions = [b for b in blocks if "R" in iter_kinds(sch, b)]
    if len(reductions) > 1:
        return None  # softmax-like chains: leave them to TVM's defaults
    if reductions and not _schedule_reduction(sch, reductions[0], lanes):
        return None
    for block in sch.get_child_blocks(root):
        if "R" not in iter_kinds(sch, block) and sch.get_loops(block):
            try:
                _schedule_elementwise(sch, block, lanes)
            except ScheduleError:
                pass  # a block left as is is still correct
    return sch


@tvm.transform.module_pass(opt_level=0, name="HeuristicCpuSchedule")
class HeuristicCpuSchedule:
    """Apply ``schedule_func`` to every PrimFunc not scheduled yet."""

    def __init__(self, lanes: int):
        self.lanes = lanes

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get(_SCHEDULED) == 1:
                continue
            try:
                scheduled = schedule_func(func, self.lanes)
            except Exception:
                scheduled = None  # heuristics failed: TVM's default loops stay
            if scheduled is not None:
                updated[gvar] = scheduled
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod
