"""Reductions whose SIMD axis fills no whole vector: padded up to whole vectors first.

The register tile of ``defaults.py`` vectorizes the innermost spatial axis (a matmul's
columns, a conv's output channels). When no vector width divides it (an OCR head's 18385,
8210 or 6625 classes; attention scores over 199 frames) the tile fell back to one or two
lanes: PP-OCRv5's 40×120×18385 classifier ran 10× slower than onnxruntime. ``pad_einsum``
widens the block's iteration space to whole vectors instead: operands indexed by that
axis get zero-padded copies (a constant weight's copy is marked as a layout-rewrite
preprocessing block, so the pipeline folds it at compile time, laid out in the order the
tile reads it) and a trimming block writes the real columns back, which becomes the
tile's write-back. The tile's rows (a matmul's rows) get the same treatment when no row
count of 4–13 divides them (199 attention frames: a tile of one row did one multiply-add
per load; padded to 200, 25 rows: 3× faster).
"""

from __future__ import annotations

import math

from tvm import tirx
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError

from hwcompile.tune.kernels import iter_kinds

PREPROC = "meta_schedule.layout_rewrite_preproc"


def padded_extent(extent: int, lanes: int) -> int | None:
    """The whole-vector extent to pad ``extent`` to, or None to keep it: extents a half
    register already divides keep their partial-width tile; short ones (≤ one register)
    would mostly compute padding."""
    if extent <= lanes or extent % max(lanes // 2, 1) == 0:
        return None
    multiple = 2 * lanes if extent >= 16 * lanes else lanes  # long axes: 2-register tiles
    return -(-extent // multiple) * multiple


def padded_rows(extent: int) -> int | None:
    """The extent to pad the tile's row axis to (a matmul's rows: 199 attention frames),
    or None to keep it: rows whose divisors allow a tile of at least 4 keep them."""
    if extent < 16 or any(extent % d == 0 for d in range(4, 14)):
        return None
    return -(-extent // 8) * 8


def pad_simd_axis(sch: Schedule, block, lanes: int):
    """Pad ``block``'s innermost spatial axis to whole vectors, and the one before it (the
    tile's rows) to a multiple of 8 when no row count of 4–13 divides it (see module
    docstring). Returns (trimming block, padded constant-weight copies) or None when
    nothing was padded."""
    loops = sch.get_loops(block)
    kinds = iter_kinds(sch, block)
    extents = [sch.get(loop).extent for loop in loops]
    if not all(isinstance(e, tirx.IntImm) for e in extents):
        return None
    spatial = [i for i, k in enumerate(kinds) if k == "S"]
    wanted = {spatial[-1]: padded_extent(int(extents[spatial[-1]]), lanes)}
    depth = math.prod(int(e) for e, k in zip(extents, kinds) if k == "R")
    # Padded columns make the write-back scalar (a predicate on the vector lane); a short
    # reduction then spends as much there as in the tile, and more rows make it worse
    # (wav2vec2's 199×16×199 attention scores: 0.35 ms with both axes padded, 0.14 without
    # the rows; 64-deep: 0.33 against 0.79).
    if len(spatial) > 1 and not (wanted[spatial[-1]] and depth < 32):
        wanted[spatial[-2]] = padded_rows(int(extents[spatial[-2]]))
    wanted = {axis: size for axis, size in wanted.items() if size is not None}
    producers_before = {sch.get(b).name_hint for b in sch.get_producers(block)}
    # Both axes, else the vector axis alone: a conv's rows index its input as h·s + kh,
    # which pad_einsum cannot pad.
    for axes in ([*wanted], [spatial[-1]] if spatial[-1] in wanted else []):
        if not axes:
            return None
        try:
            sch.pad_einsum(block, [wanted[i] if i in axes else 1 for i in range(len(loops))])
            break
        except ScheduleError:  # indices that are not plain loop variables (a strided conv1d)
            continue
    else:
        return None
    copies = [b for b in sch.get_producers(block)
              if sch.get(b).name_hint not in producers_before]
    func = sch.mod["main"]
    free = [func.params[int(i)] for i in func.attrs.get("layout_free_buffers", [])]
    weights = [copy for copy in copies
               if any(sch.get(copy).reads[0].source.same_as(p) for p in free)]
    return sch.get_consumers(block)[0], weights


def pack_padded_weights(sch: Schedule, block, weights: list, vec: int) -> None:
    """Each padded constant weight laid out as the tile reads it — blocks of ``vec``
    columns outermost, the column within the block innermost — and marked for folding."""
    iter_var = sch.get(block).iter_vars[
        max(i for i, k in enumerate(iter_kinds(sch, block)) if k == "S")].var
    for copy in weights:
        padded = sch.get(copy).writes[0].source
        region = next(r for r in sch.get(block).reads if r.source.same_as(padded))
        dim = next(i for i, r in enumerate(region.region)
                   if isinstance(r.min, tirx.Var) and r.min.same_as(iter_var))
        sch.transform_layout(copy, ("write", 0), _tile_order(len(padded.shape), dim, vec))
        sch.annotate(copy, PREPROC, True)


def _tile_order(rank: int, dim: int, vec: int) -> tirx.IndexMap:
    """Axis ``dim`` split in blocks of ``vec``: the block index first, the rest in order,
    the position within the block last."""
    def layout(*idx):
        rest = [idx[i] for i in range(rank) if i != dim]
        return (idx[dim] // vec, *rest, idx[dim] % vec)

    return tirx.IndexMap.from_func(layout, ndim=rank)
