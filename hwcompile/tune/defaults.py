"""Untuned default CPU schedules: one fast heuristic per kernel kind, no measurement.

TVM's legalized kernels are plain scalar loop nests (no threads, no SIMD), ~20× slower
than onnxruntime here. Convolutions are first switched to NHWC/HWIO (``cpu_layout``), so
every conv, dense and pooling kernel has its output channels innermost and contiguous.
Then, per PrimFunc:

- the main reduction block (conv, matmul, pooling) gets a register tile of
  ``rows × vector`` outputs (rows from the output width, and height when the width is
  short) accumulated in a small buffer LLVM keeps in registers, sized to the register
  file; the reduction loops outside that tile; output-channel blocks outermost and the
  outer loops in parallel; its elementwise epilogue (bias, ReLU, residual add) inlined
  into the write-back; constant weights re-laid out once, at compile time, so each
  channel block's weights are one contiguous stream (``_prepack_weights``);
- every other block (padding, elementwise, layout changes) runs its outer loops in
  parallel and its innermost loop vectorized.

A function the heuristics cannot handle keeps TVM's default loops (correct, just slow).
Functions already scheduled (from a tuning database) are left alone.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.ir import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.schedule import ScheduleError

_SCHEDULED = "tirx.is_scheduled"


def cpu_layout() -> tvm.transform.Pass:
    """Convolutions in NHWC with HWIO weights: output channels become the SIMD axis.
    Grouped and depthwise convolutions stay NCHW: legalized in NHWC their channel index
    arithmetic defeats the tile (measured 2.5× slower here), in NCHW they vectorize on width.

    Around it, two CPU-only rewrites for the quantized graph (its Relax form, which the VTA
    partitioner matches, is untouched; both are exact): ``R.clip`` and ``R.nn.pad`` have no
    layout inference in TVM, so ConvertLayout would transpose every int8 conv's output back
    to NCHW before its clip and forth again after its zero-point pad. That cut the conv
    epilogue off its kernel (an int64 tensor written out, then transposed, clipped and cast
    in a second kernel) and added a pad+transpose kernel per conv: about twice the kernels
    and allocations of the float model, which made the int8 digits CNN ~4× slower."""

    def desired(call: relax.Call) -> dict[str, list[str]]:  # called for every op call
        if call.op.name != "relax.nn.conv2d":
            return {}
        dense = int(call.attrs.groups) == 1
        return {"relax.nn.conv2d": ["NHWC", "HWIO"] if dense else ["NCHW", "OIHW"]}

    return tvm.transform.Sequential([_FoldZeroPointPad, _IntegerClipToMinMax,
                                     relax.transform.ConvertLayout({}, layout_cb=desired),
                                     _PadThroughPermute], name="CpuLayout")


@relax.expr_functor.mutator
class _ZeroPointPadMutator(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
            return call
        a = call.attrs
        data = self.lookup_binding(call.args[0]) if isinstance(call.args[0], relax.Var) else None
        weight = call.args[1]
        if (not isinstance(data, relax.Call) or not isinstance(data.op, tvm.ir.Op)
                or data.op.name != "relax.nn.pad" or data.attrs.pad_mode != "constant"
                or not isinstance(weight, tvm.ir.expr.Constant) or int(a.groups) != 1
                or a.data_layout != "NCHW" or a.kernel_layout != "OIHW"
                or a.out_layout != "NCHW" or str(a.out_dtype) != "int32"
                or any(int(p) for p in a.padding)):
            return call
        width = [int(w) for w in data.attrs.pad_width]
        shape = data.args[0].ty.shape if isinstance(data.args[0].ty, relax.TensorType) else None
        if (len(width) != 8 or any(width[:4]) or shape is None
                or not all(isinstance(d, tirx.IntImm) for d in list(shape)[1:])):
            return call
        value = float(data.attrs.pad_value)
        if value != int(value):
            return call
        # The padded input is pad(x, v) = pad(x, 0) + v·border: its conv is the zero-padded
        # conv plus the (constant) conv of the border ring alone.
        w = weight.value.numpy().astype(np.int64)
        channels, height, width_ = (int(d) for d in list(shape)[1:])
        border = np.full((channels, height + width[4] + width[5], width_ + width[6] + width[7]),
                         int(value), np.int64)
        border[:, width[4]:width[4] + height, width[6]:width[6] + width_] = 0
        (sy, sx), (dy, dx) = ([int(v) for v in a.strides], [int(v) for v in a.dilation])
        kh, kw = w.shape[2:]
        out_h = (border.shape[1] - dy * (kh - 1) - 1) // sy + 1
        out_w = (border.shape[2] - dx * (kw - 1) - 1) // sx + 1
        ring = np.zeros((w.shape[0], out_h, out_w), np.int64)
        for ky in range(kh):
            for kx in range(kw):
                patch = border[:, ky * dy:ky * dy + sy * (out_h - 1) + 1:sy,
                               kx * dx:kx * dx + sx * (out_w - 1) + 1:sx]
                ring += np.einsum("oc,chw->ohw", w[:, :, ky, kx], patch)
        if np.abs(ring).max(initial=0) >= 2**31:
            return call
        conv = relax.op.nn.conv2d(data.args[0], weight, strides=a.strides,
                                  padding=[width[4], width[6], width[5], width[7]],
                                  dilation=a.dilation, groups=1, data_layout="NCHW",
                                  kernel_layout="OIHW", out_layout="NCHW", out_dtype="int32")
        return relax.op.add(self.builder_.normalize(conv),
                            relax.const(ring[None].astype(np.int32), "int32"))


@tvm.transform.module_pass(opt_level=0, name="FoldZeroPointPad")
def _FoldZeroPointPad(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """``conv2d(pad(x, zp), W)`` → ``conv2d(x, W, padding) + ring`` with ``ring`` the conv of
    the zero-point border alone (a constant): the same int32 sums, but the padding happens
    inside the conv kernel instead of in a kernel and a tensor of its own per int8 conv."""
    mutator = _ZeroPointPadMutator(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return relax.transform.DeadCodeElimination()(mutator.builder_.get())


def _int_value(expr: object) -> int | None:
    """The integer of a constant clip bound (IntImm, or a PrimValue holding one)."""
    while not isinstance(expr, tirx.IntImm):
        if not hasattr(expr, "value"):
            return None
        expr = expr.value
    return int(expr.value)


@relax.expr_functor.mutator
class _ClipMutator(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.clip":
            return call
        dtype = str(call.args[0].ty.dtype) if isinstance(call.args[0].ty, relax.TensorType) else ""
        low, high = _int_value(call.args[1]), _int_value(call.args[2])
        if not dtype.startswith(("int", "uint")) or low is None or high is None:
            return call  # float clips keep their NaN semantics
        x = relax.op.maximum(call.args[0], relax.const(low, dtype))
        return relax.op.minimum(self.builder_.normalize(x), relax.const(high, dtype))


@tvm.transform.module_pass(opt_level=0, name="IntegerClipToMinMax")
def _IntegerClipToMinMax(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """Integer ``clip(x, lo, hi)`` → ``minimum(maximum(x, lo), hi)``: the same values (it is
    what clip legalizes to), but binary elementwise ops follow the NHWC layout."""
    mutator = _ClipMutator(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.get()


@relax.expr_functor.mutator
class _PadMutator(relax.PyExprMutator):
    def _producer(self, expr: relax.Expr, op: str) -> relax.Call | None:
        bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else None
        ok = isinstance(bound, relax.Call) and isinstance(bound.op, tvm.ir.Op)
        return bound if ok and bound.op.name == op else None

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        # permute_dims(pad(permute_dims(y, p), pw), q) with q∘p = identity → pad(y, pw∘p⁻¹)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.permute_dims":
            return call
        pad = self._producer(call.args[0], "relax.nn.pad")
        inner = self._producer(pad.args[0], "relax.permute_dims") if pad is not None else None
        if inner is None or call.attrs.axes is None or inner.attrs.axes is None:
            return call
        p, q = [int(a) for a in inner.attrs.axes], [int(a) for a in call.attrs.axes]
        if len(p) != len(q) or any(p[q[j]] != j for j in range(len(q))):
            return call
        width = [int(w) for w in pad.attrs.pad_width]
        moved = [0] * len(width)
        for axis, src in enumerate(p):  # padded axis ``axis`` is axis ``src`` of y
            moved[2 * src:2 * src + 2] = width[2 * axis:2 * axis + 2]
        return relax.op.nn.pad(inner.args[0], moved, pad_mode=pad.attrs.pad_mode,
                               pad_value=pad.attrs.pad_value)


@tvm.transform.module_pass(opt_level=0, name="PadThroughPermute")
def _PadThroughPermute(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """Pad in the layout the data is already in instead of transposing around the pad
    (ConvertLayout's NHWC→NCHW, pad, NCHW→NHWC before each int8 conv); then drop the
    transposes left unused."""
    mutator = _PadMutator(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return relax.transform.DeadCodeElimination()(mutator.builder_.get())


# Below this much work (multiply-adds, or elements for elementwise kernels) a kernel runs
# on one thread: waking the pool costs ~10 µs, more than such a kernel takes.
_PARALLEL_MIN_WORK = 1 << 17
# A symbolic extent (a dynamic batch) counts as this much in that decision: small per-sample
# kernels then stay on one thread at batch 1, where waking the pool cost more than they do.
_SYMBOLIC_EXTENT_GUESS = 8


def _work(extents: list[int | None]) -> int:
    return math.prod(_SYMBOLIC_EXTENT_GUESS if e is None else e for e in extents)


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
    if outer and _work(extents) >= _PARALLEL_MIN_WORK:
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
    # Innermost spatial axis (output channels in NHWC, columns of a matmul): SIMD lanes;
    # the next one or two (output width and height, matmul rows): independent rows.
    vec, rows = _register_tile(extents, lanes)
    v_out, v_in = sch.split(spatial[-1], [None, vec])
    row_in, row_out = [], []
    for axis, factor in zip((-2, -3), rows):
        outer, inner = sch.split(spatial[axis], [None, factor])
        row_out.insert(0, outer)
        row_in.insert(0, inner)
    # Channel blocks outermost: each block's weights stay in cache across all positions.
    tile_outer = [v_out, *spatial[:len(spatial) - 1 - len(rows)], *row_out]
    sch.reorder(*tile_outer, *reduce, *row_in, v_in)
    # Accumulate the tile in a small buffer, write back (plus the epilogue) per tile.
    acc = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(acc, tile_outer[-1])
    _inline_epilogue(sch, acc)
    # Loop annotations before decompose_reduction: they need the intact reduction block,
    # and the init loops it creates copy them.
    parallel = tile_outer[:-1] if len(tile_outer) > 1 else tile_outer
    if _work(extents) * _work(_loop_extents(sch, reduce)) >= _PARALLEL_MIN_WORK:
        sch.parallel(sch.fuse(*parallel) if len(parallel) > 1 else parallel[0])
    for loop in row_in:
        sch.unroll(loop)
    sch.vectorize(v_in)
    acc_loops = sch.get_loops(acc)[len(tile_outer):]
    if acc_loops:
        sch.vectorize(acc_loops[-1])
    sch.decompose_reduction(block, reduce[0])
    return True


def _register_tile(extents: list[int | None], lanes: int) -> tuple[int, list[int]]:
    """SIMD width and row factors (for spatial axes -2, -3) of the register tile: the most
    multiply-adds per value loaded (vector·rows / (vectors + rows)) within the register
    file (32 vector registers with AVX-512, else 16), a few kept for operands."""
    budget = 26 if lanes >= 16 else 12
    best = (0.0, lanes, [])
    for vregs in (2, 1):
        vec = vregs * lanes
        if extents[-1] % vec:
            continue
        w = extents[-2] if len(extents) > 1 else None
        h = extents[-3] if len(extents) > 2 else None
        for rw in ([d for d in range(1, w + 1) if w % d == 0] if w else [1]):
            for rh in ([d for d in range(1, h + 1) if h % d == 0] if h and rw == w else [1]):
                rows = rw * rh
                if vregs * rows > budget:
                    continue
                score = vregs * rows / (vregs + rows)
                if score > best[0] + 1e-9:
                    best = (score, vec, [rw] if w and rh == 1 else [rw, rh] if w else [])
    if best[0] == 0.0:  # channels not a multiple of the lanes
        vec = _divisor(extents[-1], (lanes * 2, lanes, 4))
        return vec, []
    return best[1], best[2]


def _prepack_weights(sch: Schedule) -> None:
    """Constant weights (``layout_free_buffers``) re-laid out in the order the scheduled
    loops read them: one contiguous stream per channel block instead of ``vec`` values
    every ``channels`` elements. This is MetaSchedule's own RewriteLayout postprocessor, as
    a postprocessing step of the trace, so tuning replays it like its own candidates'. The
    copy is split into its own function and folded at compile time (see pipeline.py)."""
    if not sch.mod["main"].attrs.get("layout_free_buffers"):
        return
    sch.enter_postproc()
    if not ms.postproc.RewriteLayout().apply(sch):
        raise ScheduleError("RewriteLayout failed")


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
    _prepack_weights(sch)
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
