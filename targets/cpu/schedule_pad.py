"""Reductions whose SIMD axis fills no whole vector: padded up to whole vectors first.

The register tile of ``defaults.py`` vectorizes the innermost spatial axis (a matmul's
columns, a conv's output channels). When no vector width divides it (an OCR head's 18385,
8210 or 6625 classes; attention scores over 199 frames) the tile fell back to one or two
lanes: PP-OCRv5's 40×120×18385 classifier ran 10× slower than onnxruntime. ``pad_einsum``
widens the block's iteration space to whole vectors instead: operands indexed by that
axis get zero-padded copies (a constant weight's copy is marked as a layout-rewrite
preprocessing block, so the pipeline folds it at compile time, laid out in the order the
tile reads it) and a trimming block writes the real columns back, which becomes the
tile's write-back.
"""

from __future__ import annotations

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


def pad_simd_axis(sch: Schedule, block, lanes: int):
    """Pad ``block``'s innermost spatial axis to whole vectors (see module docstring).
    Returns (trimming block, padded weight copies) or None when nothing was padded; the
    copies are (block, axis of the padded dimension) for ``pack_padded_weights``."""
    loops = sch.get_loops(block)
    kinds = iter_kinds(sch, block)
    extents = [sch.get(loop).extent for loop in loops]
    if not all(isinstance(e, tirx.IntImm) for e in extents):
        return None
    axis = max(i for i, k in enumerate(kinds) if k == "S")
    target = padded_extent(int(extents[axis]), lanes)
    if target is None:
        return None
    factors = [1] * len(loops)
    factors[axis] = target
    producers_before = {sch.get(b).name_hint for b in sch.get_producers(block)}
    try:
        sch.pad_einsum(block, factors)
    except ScheduleError:  # indices that are not plain loop variables (a strided conv1d)
        return None
    copies = [b for b in sch.get_producers(block)
              if sch.get(b).name_hint not in producers_before]
    consumers = sch.get_consumers(block)
    if len(consumers) != 1:
        return None
    func = sch.mod["main"]
    free = [func.params[int(i)] for i in func.attrs.get("layout_free_buffers", [])]
    weights = []
    for copy in copies:
        source = sch.get(copy).reads[0].source
        if any(source.same_as(p) for p in free):
            weights.append(copy)
    return consumers[0], weights


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
