"""Untuned default CPU schedules: one fast heuristic per kernel kind, no measurement.

TVM's legalized kernels are plain scalar loop nests (no threads, no SIMD), ~20× slower
than onnxruntime here. Convolutions are first switched to NHWC/HWIO (``layout.py``), so
every conv, dense and pooling kernel has its output channels innermost and contiguous.
Then, per PrimFunc:

- the main reduction block (conv, matmul, pooling) gets a register tile of
  ``rows × vector`` outputs (rows from the output width, and height when the width is
  short) accumulated in a small buffer LLVM keeps in registers, sized to the register
  file; the reduction loops outside that tile; output-channel blocks outermost and the
  outer loops in parallel (48 channels: 3 unrolled 16-lane registers); its elementwise
  epilogue (bias, ReLU, residual add, SiLU: a value read twice is first inlined into its
  other reader) inlined into the write-back, where ``sigmoid`` is inline arithmetic
  (``fast_sigmoid.py``), not an ``expf`` call per lane; constant weights re-laid out
  once, at compile time, so each channel block's weights are one contiguous stream
  (``_prepack_weights``); int8 convs
  tile for and tensorize with the CPU's integer dot product (``vpdpbusd``/``vpmaddwd``,
  ``int8_dot.py``); an innermost axis no vector width divides (an OCR head's 18385
  classes) is first padded to whole vectors (``schedule_pad.py``);
- every other block (padding, elementwise, layout changes) runs its outer loops in
  parallel and its innermost loop vectorized.

Softmax over the last axis is no schedule of TVM's loops but a row kernel written
directly (``schedule_softmax.py``). A function the heuristics cannot handle keeps TVM's
default loops (correct, just slow).
Functions already scheduled (from a tuning database) are left alone.
"""

from __future__ import annotations

import math

import tvm
from tvm import tirx
from tvm.ir import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.schedule import ScheduleError

from hwcompile.tune.kernels import iter_kinds, reduction_blocks

from . import fast_sigmoid  # noqa: F401  (registers the vectorizable sigmoid lowering)
from .int8_dot import DotProduct, block_dot, intrinsic, pack_weights
from .schedule_pad import PREPROC, pack_padded_weights, pad_simd_axis
from .schedule_softmax import softmax_kernel, softmax_shape

_SCHEDULED = "tirx.is_scheduled"


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


def _loop_extents(sch: Schedule, loops: list) -> list[int | None]:
    extents = []
    for loop in loops:
        ext = sch.get(loop).extent
        extents.append(int(ext) if isinstance(ext, tirx.IntImm) else None)
    return extents


def _touches_bool(sch: Schedule, block) -> bool:
    stmt = sch.get(block)
    return any(str(region.source.dtype) == "bool" for region in [*stmt.reads, *stmt.writes])


def _schedule_elementwise(sch: Schedule, block, lanes: int) -> None:
    """Outer loops parallel, innermost vectorized when it is a spatial, static loop."""
    loops = sch.get_loops(block)
    kinds = iter_kinds(sch, block)
    if not loops or "R" in kinds or "O" in kinds or len(kinds) != len(loops):
        return
    extents = _loop_extents(sch, loops)
    if extents[-1] is None:
        return  # a symbolic innermost loop (outer ones, like the batch, may be symbolic)
    if any(sch.get(loop).kind == tirx.ForKind.PARALLEL for loop in loops):
        return  # computed inside a parallel loop already (a conv's per-row padding)
    inner = loops[-1]
    vec = _divisor(extents[-1], (lanes * 2, lanes, lanes // 2, 4)) if extents[-1] >= 4 else 1
    if _touches_bool(sch, block):
        vec = 1  # TVM cannot vectorize stores to bool buffers (a dtype mismatch at codegen)
    if vec > 1:
        _, inner = sch.split(inner, [None, vec])
        sch.vectorize(inner)
    outer = sch.get_loops(block)[:-2 if vec > 1 else -1] if len(loops) > 1 else []
    if outer and _work(extents) >= _PARALLEL_MIN_WORK:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


def _schedule_reduction(sch: Schedule, block, lanes: int, dot: DotProduct | None = None
                        ) -> tuple[bool, tuple[object, str] | None]:
    """Register-tiled reduction (see module docstring). Returns (False, None) if the block
    does not fit; else (True, None), or (True, (loop, intrinsic)) when the loop is to be
    tensorized with the int8 dot product ``dot`` once the weights are packed."""
    kinds = iter_kinds(sch, block)
    loops = sch.get_loops(block)
    if len(loops) != len(kinds) or "O" in kinds or "R" not in kinds:
        return False, None
    spatial = [lp for lp, k in zip(loops, kinds) if k == "S"]
    reduce = [lp for lp, k in zip(loops, kinds) if k == "R"]
    if not spatial or kinds[: len(spatial)] != ["S"] * len(spatial):
        return False, None  # legalization puts spatial loops first; anything else: leave it
    extents = _loop_extents(sch, spatial)
    if extents[-1] is None:
        return False, None  # the SIMD axis must be static; outer ones (the batch) may be symbolic
    dot = block_dot(sch, block, dot)  # full or half-width registers, or None
    _read_copies_in_place(sch, block)
    padded = None if dot else pad_simd_axis(sch, block, lanes)
    if padded:
        loops = sch.get_loops(block)
        spatial = [lp for lp, k in zip(loops, kinds) if k == "S"]
        reduce = [lp for lp, k in zip(loops, kinds) if k == "R"]
        extents = _loop_extents(sch, spatial)
    # Innermost spatial axis (output channels in NHWC, columns of a matmul): SIMD lanes;
    # the next one or two (output width and height, matmul rows): independent rows.
    # int8 dot product: as fp32, up to 3 registers of int32 sums per row (24 channels: 3 ×
    # 8 lanes), ``depth`` input channels each; the register file is the target's either way.
    vec, rows = _register_tile(extents, dot.lanes if dot else lanes, (2, 1), _budget(lanes))
    v_out, v_in = sch.split(spatial[-1], [None, vec])
    row_in, row_out = [], []
    for axis, factor in zip((-2, -3), rows):
        outer, inner = sch.split(spatial[axis], [None, factor])
        row_out.insert(0, outer)
        row_in.insert(0, inner)
    depth, registers = [], []
    if dot:
        outer, inner = sch.split(reduce[-1], [None, dot.depth])
        reduce, depth = [*reduce[:-1], outer], [inner]
        if vec > dot.lanes:  # one instruction per register of the row
            register, v_in = sch.split(v_in, [None, dot.lanes])
            registers = [register]
    # Channel blocks outermost: each block's weights stay in cache across all positions.
    tile_outer = [v_out, *spatial[:len(spatial) - 1 - len(rows)], *row_out]
    sch.reorder(*tile_outer, *reduce, *row_in, *registers, v_in, *depth)
    # Accumulate the tile in a small buffer, write back (plus the epilogue) per tile; a
    # padded block already has its write-back: the block that trims the padding.
    acc = padded[0] if padded else sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(acc, tile_outer[-1])
    _inline_epilogue(sch, acc)
    # Loop annotations before decompose_reduction: they need the intact reduction block,
    # and the init loops it creates copy them.
    parallel = tile_outer[:-1] if len(tile_outer) > 1 else tile_outer
    band = parallel[-1]  # one output row (of one channel block) per iteration
    if _work(extents) * _work(_loop_extents(sch, reduce)) >= _PARALLEL_MIN_WORK:
        band = sch.fuse(*parallel) if len(parallel) > 1 else parallel[0]
        sch.parallel(band)
    for loop in row_in + registers:
        sch.unroll(loop)
    if not dot:
        _vectorize_registers(sch, v_in, vec, lanes)
    acc_loops = _loops_below(sch, acc, tile_outer[-1])
    if acc_loops:
        _vectorize_registers(sch, acc_loops[-1], vec, dot.lanes if dot else lanes)
    if not dot and not padded and len(spatial) == 4 and extents[-1] == vec:
        _pad_per_row(sch, block, band, extents[-3], lanes)
    init = sch.decompose_reduction(block, reduce[0])
    if dot:
        sch.vectorize(sch.get_loops(init)[-1])
        pack_weights(sch, block, dot)
    if padded:
        pack_padded_weights(sch, block, padded[1], vec)
    return True, (v_in, intrinsic(dot)) if dot else None


def _read_copies_in_place(sch: Schedule, block) -> None:
    """Producers of ``block`` that only copy, element for element (TOPI's ``pad_temp`` of an
    unpadded conv: every 1×1 conv), inlined: the conv reads their source. The copy was a
    pass over the whole input (48×104×104: a third of the 1×1 conv's time)."""
    for producer in sch.get_producers(block):
        body = sch.get(producer).body
        if (isinstance(body, tirx.BufferStore) and isinstance(body.value, tvm.ir.expr.TensorLoad)
                and len(body.indices) == len(body.value.indices)
                and all(a.same_as(b) for a, b in zip(body.indices, body.value.indices))):
            try:
                sch.compute_inline(producer)
            except ScheduleError:
                pass  # a copy of its own: correct, one more pass


def _loops_below(sch: Schedule, block, loop) -> list:
    """The loops of ``block`` nested inside ``loop`` (not counted by position: the outer
    loops may have been fused)."""
    loops = sch.get_loops(block)
    outer = sch.get(loop)
    return next((loops[i + 1:] for i, lp in enumerate(loops) if sch.get(lp).same_as(outer)), [])


def _pad_per_row(sch: Schedule, block, band, out_rows: int | None, lanes: int) -> None:
    """A strided NHWC conv with one channel block (the stems: 3 input channels, 8–48
    outputs) pads its input per output row, inside the row loop, instead of in a separate
    pass over the whole padded image: the padded rows are still in cache when the conv
    reads them, and the copy runs in parallel with it (one core: nudenet's stem 37 → 50
    GFLOP/s, yolov8_tiny's 8 → 16 channels stride 2 70 → 93). With stride 1 each input
    row would be padded ``kernel`` times: no gain measured there (up to 5% lost), so it
    keeps the separate pass."""
    for producer in sch.get_producers(block):
        rows = _loop_extents(sch, sch.get_loops(producer))
        if iter_kinds(sch, producer) != ["S"] * 4 or len(rows) != 4 or not out_rows \
                or rows[1] is None or rows[1] // out_rows < 2:
            continue
        sch.compute_at(producer, band)
        inner = sch.get_loops(producer)[-1]
        channels = _loop_extents(sch, [inner])[0]
        if channels and channels > lanes:
            _, inner = sch.split(inner, [None, _divisor(channels, (lanes, 8, 4))])
        sch.vectorize(inner)  # 3 channels too: one short vector, not three scalar copies


def _vectorize_registers(sch: Schedule, loop, extent: int, lanes: int) -> None:
    """Vectorize ``loop``; a width of whole registers that is no power of two (3 × 16
    lanes for 48 channels) as an unrolled loop over registers: LLVM turns one 48-lane
    vector into scalar shuffles (2 GFLOP/s instead of 70 on a 1×1 conv)."""
    if extent > lanes and extent % lanes == 0 and extent & (extent - 1):
        outer, loop = sch.split(loop, [None, lanes])
        sch.unroll(outer)
    sch.vectorize(loop)


def _budget(simd_floats: int) -> int:
    """Accumulator registers of a tile: 32 vector registers with AVX-512, else 16, a few
    kept for operands."""
    return 26 if simd_floats >= 16 else 12


def _register_tile(extents: list[int | None], lanes: int,
                   vector_registers: tuple[int, ...], budget: int) -> tuple[int, list[int]]:
    """SIMD width and row factors (for spatial axes -2, -3) of the register tile: the most
    multiply-adds per value loaded (vector·rows / (vectors + rows)) within ``budget``
    accumulator registers (``_budget``); 3 registers when 2 do not divide the channels but
    3 do (48 = 3 × 16). Channels that fill no whole register (after pruning, say) get a
    partial one: still one register per row."""
    widths = [(r * lanes, r) for r in vector_registers if extents[-1] % (r * lanes) == 0]
    if max(vector_registers) == 2 and extents[-1] % (2 * lanes) and extents[-1] % (3 * lanes) == 0:
        widths.insert(0, (3 * lanes, 3))  # 48 channels: 3 registers × 8 rows, not 1 × 26
    if not widths:
        widths = [(_divisor(extents[-1], tuple(sorted({lanes // 2, 4, 2}, reverse=True))), 1)]
    w = extents[-2] if len(extents) > 1 else None
    h = extents[-3] if len(extents) > 2 else None
    best = (0.0, widths[0][0], [])
    for vec, vregs in widths:
        for rw in ([d for d in range(1, w + 1) if w % d == 0] if w else [1]):
            for rh in ([d for d in range(1, h + 1) if h % d == 0] if h and rw == w else [1]):
                rows = rw * rh
                if vregs * rows > budget:
                    continue
                score = vregs * rows / (vregs + rows)
                if score > best[0] + 1e-9:
                    best = (score, vec, [rw] if w and rh == 1 else [rw, rh] if w else [])
    return best[1], best[2]


def _prepack_weights(sch: Schedule) -> None:
    """Constant weights (``layout_free_buffers``) re-laid out in the order the scheduled
    loops read them: one contiguous stream per channel block instead of ``vec`` values
    every ``channels`` elements. This is MetaSchedule's own RewriteLayout postprocessor, as
    a postprocessing step of the trace, so tuning replays it like its own candidates'. The
    copy is split into its own function and folded at compile time (see pipeline.py)."""
    func = sch.mod["main"]
    free = [func.params[int(i)] for i in func.attrs.get("layout_free_buffers", [])]
    if not free or not _read_in_plain_order(sch, free) or _has_preproc(sch):
        return
    sch.enter_postproc()
    if not ms.postproc.RewriteLayout().apply(sch):
        raise ScheduleError("RewriteLayout failed")


def _has_preproc(sch: Schedule) -> bool:
    """Whether a weight copy is already marked for folding (``schedule_pad``): RewriteLayout
    would read that weight through a copy of its own, which the pipeline cannot split out."""
    root = sch.get_sblock("root")
    return any(sch.get(b).annotations.get(PREPROC) for b in sch.get_child_blocks(root))


def _plain_index(index: tirx.PrimExpr) -> bool:
    """A loop variable, a constant, or sums and positive multiples of them."""
    if isinstance(index, (tirx.Var, tirx.IntImm)):
        return True
    if isinstance(index, tirx.Add):
        return _plain_index(index.a) and _plain_index(index.b)
    if isinstance(index, tirx.Mul):
        return (_plain_index(index.a) and isinstance(index.b, tirx.IntImm)
                and int(index.b) > 0)
    return False


def _read_in_plain_order(sch: Schedule, buffers: list) -> bool:
    """Whether every block reads ``buffers`` at plain indices. RewriteLayout re-lays out
    a weight read through a flipped index (``1 - kh``: a transposed conv's kernel) wrongly:
    it produced garbage on PaddleOCR's DBNet head."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        for region in sch.get(block).reads:
            if any(region.source.same_as(b) for b in buffers) and not all(
                    _plain_index(r.min) for r in region.region):
                return False
    return True


def _inline_epilogue(sch: Schedule, writeback) -> None:
    """Fold elementwise consumers of the tile's write-back into it, as far as they chain.
    A value read twice (SiLU: ``x · sigmoid(x)``) first has its inner consumer inlined
    into the outer one (``sigmoid`` into the product), leaving a single consumer."""
    while True:
        consumers = sch.get_consumers(writeback)
        if len(consumers) > 1:
            if not _inline_any(sch, consumers):
                return
            continue
        if not consumers:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except ScheduleError:
            return


def _inline_any(sch: Schedule, blocks: list) -> bool:
    """Inline the first of ``blocks`` that can be inlined into its own consumers."""
    for block in blocks:
        if not sch.get_consumers(block):
            continue  # writes a function output
        try:
            sch.compute_inline(block)
            return True
        except ScheduleError:
            continue
    return False


def schedule_func(func: tirx.PrimFunc, lanes: int,
                  dot: DotProduct | None = None) -> tirx.PrimFunc | None:
    """The heuristically scheduled function, or None to keep the default loops."""
    softmax = softmax_shape(func)
    if softmax is not None:  # written directly, not scheduled: see schedule_softmax.py
        kernel = softmax_kernel(softmax, lanes, math.prod(softmax) >= _PARALLEL_MIN_WORK)
        return kernel.with_attrs(func.attrs).with_attr(_SCHEDULED, True)
    sch = heuristic_schedule(IRModule({"main": func}), lanes, dot)
    return None if sch is None else sch.mod["main"].with_attr(_SCHEDULED, True)


# A reduction over at least this many elements is summed as ``lanes`` partial sums.
_LONG_REDUCTION = 1024


def _split_long_reductions(sch: Schedule, blocks: list, lanes: int) -> bool:
    """Each long reduction of a chain (LayerNorm-like; softmax has its own kernel) accumulated
    as ``lanes`` interleaved partial sums, added at the end (``rfactor``). A float32 sum
    over 18385 classes in one accumulator lost 5.7e-5 relative (onnxruntime, which sums in
    vector lanes: 4e-6); split, 3.7e-6. Returns whether any reduction was split."""
    split = False
    for block in blocks:
        loops, kinds = sch.get_loops(block), iter_kinds(sch, block)
        extent = _loop_extents(sch, loops[-1:])[0]
        if kinds[-1:] != ["R"] or kinds.count("R") != 1 or not extent \
                or extent < _LONG_REDUCTION:
            continue
        try:
            _, inner = sch.split(loops[-1], [None, lanes])
            sch.rfactor(inner, factor_axis=0)
            split = True
        except ScheduleError:
            continue
    return split


def _inline_into_outputs(sch: Schedule) -> None:
    """Every block of an elementwise/injective kernel that does not write an output inlined
    into its readers: one pass over memory, not one per fused op (an FPN's scale, add,
    resize and add: four passes over 80×80×96; YOLOX's focus: eight slices, a concat and a
    transpose, ten)."""
    for block in sch.get_child_blocks(sch.get_sblock("root"))[:-1]:
        try:
            sch.compute_inline(block)
        except ScheduleError:
            pass  # an output, or not inlinable: stays a pass of its own


def heuristic_schedule(mod: IRModule, lanes: int, dot: DotProduct | None = None) -> Schedule | None:
    """The traced heuristic schedule of ``mod["main"]`` (None: keep the default loops);
    its trace is what the tuner records as the baseline candidate."""
    if softmax_shape(mod["main"]) is not None:
        return None  # a hand-written kernel replaces it (schedule_func), no trace to record
    sch = Schedule(mod)
    root = sch.get_sblock("root")
    reductions = reduction_blocks(sch)
    if len(reductions) > 1:  # softmax/LayerNorm chains: TVM's loops, long sums split
        return sch if _split_long_reductions(sch, reductions, lanes) else None
    tensorize = None
    if reductions:
        fits, tensorize = _schedule_reduction(sch, reductions[0], lanes, dot)
        if not fits:
            return None
    if not reductions:
        _inline_into_outputs(sch)
    for block in sch.get_child_blocks(root):
        if "R" not in iter_kinds(sch, block) and sch.get_loops(block):
            try:
                _schedule_elementwise(sch, block, lanes)
            except ScheduleError:
                pass  # a block left as is is still correct
    if tensorize is not None:  # the weights already packed in the dot product's tiles
        sch.tensorize(*tensorize)
    elif reductions:  # conv/matmul/pooling weights only: RewriteLayout garbled the
        _prepack_weights(sch)  # constant indices of an elementwise gather_nd
    return sch


@tvm.transform.module_pass(opt_level=0, name="HeuristicCpuSchedule")
class HeuristicCpuSchedule:
    """Apply ``schedule_func`` to every PrimFunc not scheduled yet."""

    def __init__(self, lanes: int, dot: DotProduct | None = None, report: dict | None = None):
        self.lanes = lanes
        self.dot = dot
        self.report = report  # receives "default_schedule_failed": the kernels left as is

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get(_SCHEDULED) == 1:
                continue
            try:
                scheduled = schedule_func(func, self.lanes, self.dot)
            except Exception:  # heuristics failed: TVM's default loops stay (correct, slower)
                scheduled = None
                if self.report is not None:
                    self.report.setdefault("default_schedule_failed", []).append(gvar.name_hint)
            if scheduled is not None:
                updated[gvar] = scheduled
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod
