"""Attention's batch matmuls whose output rows fill no whole vector: a kernel written in TIR.

wav2vec2's attention scores ``Q·Kᵀ`` are ``4 × 199×16 · 16×199``, scaled by 0.25: two
activations (no constant weight), output rows of 199 frames. ``defaults.py`` pads those
rows to whole vectors (``schedule_pad.py``): a padded copy of ``Kᵀ`` at every call, a tile
over the padded columns and a write-back that trims them lane by lane; 2× onnxruntime's
time on one thread. Here, as for softmax (``schedule_softmax.py``), the kernel is written
directly: tiles of ``rows × 1–2 registers`` of outputs accumulated in registers (a stack
buffer) over the short reduction, each ``A`` element a broadcast operand of its row's
multiply-adds; a row's last columns are one more tile overlapping the previous one (it
recomputes and stores the same values: no padding, no mask); leftover rows one at a time.
A scale by a constant that FuseOps put after the matmul is applied at the write-back.
Other batch matmuls keep ``defaults.py``'s schedule (as fast where the rows are whole
vectors: wav2vec2's ``softmax · V``, 16 columns).
"""

from __future__ import annotations

import math

import tvm
from tvm import tirx
from tvm.ir import IRModule
from tvm.s_tir import Schedule
from tvm.script import tirx as T

from hwcompile.tune.kernels import iter_kinds

_SCHEDULED = "tirx.is_scheduled"  # what HeuristicCpuSchedule and the database skip
_PARALLEL_MIN_WORK = 1 << 17  # multiply-adds; as defaults.py: below, waking the pool costs more


def _static(var) -> tuple[int, ...] | None:
    shape = var.ty.shape
    if not all(isinstance(d, tirx.IntImm) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _at(indices, names) -> bool:
    """Whether ``indices`` are exactly the variables ``names``, in order."""
    return len(indices) == len(names) and all(
        isinstance(i, tirx.Var) and i.same_as(v) for i, v in zip(indices, names))


def _scale(value, intermediate, names) -> float | None:
    """``c`` when ``value`` is ``intermediate[names] · c`` (either order) or
    ``intermediate[names] / c`` for a float constant ``c``, else None."""
    def load(e):
        return isinstance(e, tvm.ir.expr.TensorLoad) and e.source.same_as(intermediate) \
            and _at(e.indices, names)

    if isinstance(value, tirx.Mul):
        for x, c in ((value.a, value.b), (value.b, value.a)):
            if load(x) and isinstance(c, tirx.FloatImm):
                return float(c.value)
    if isinstance(value, tirx.Div) and load(value.a) and isinstance(value.b, tirx.FloatImm) \
            and float(value.b.value) != 0.0:
        return 1.0 / float(value.b.value)
    return None


def batch_matmul_shape(func: tirx.PrimFunc, lanes: int
                       ) -> tuple[tuple[int, ...], int, int, int, float | None] | None:
    """``(batch dims, M, K, N, scale)`` when ``func`` is TVM's float32 matmul of two
    operands ``(*batch, M, K) · (*batch, K, N)`` (static shapes, ``N`` no multiple of
    ``lanes`` but at least one vector), optionally followed by a scale by a constant, else
    None."""
    params = list(func.params)
    if len(params) != 3:
        return None
    sch = Schedule(IRModule({"main": func}))
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if not 1 <= len(blocks) <= 2:
        return None
    mm = sch.get(blocks[0])
    kinds = iter_kinds(sch, blocks[0])
    if mm.name_hint != "matmul" or len(kinds) < 3 or kinds != ["S"] * (len(kinds) - 1) + ["R"]:
        return None
    v = [iv.var for iv in mm.iter_vars]  # *batch, i, j, k
    if (len(mm.reads) != 2 or len(mm.writes) != 1
            or not mm.reads[0].source.same_as(params[0]) or not mm.reads[1].source.same_as(params[1])
            or not _at([r.min for r in mm.reads[0].region], [*v[:-3], v[-3], v[-1]])
            or not _at([r.min for r in mm.reads[1].region], [*v[:-3], v[-1], v[-2]])
            or not _at([r.min for r in mm.writes[0].region], v[:-1])):
        return None
    shapes = [_static(p) for p in params]
    if None in shapes or any(str(p.ty.dtype) != "float32" for p in params):
        return None
    (sa, sb, so) = shapes
    if sa[:-2] != sb[:-2] or so != (*sa[:-1], sb[-1]):
        return None  # a batch broadcast: not this kernel's
    scale = None
    if len(blocks) == 2:
        epi = sch.get(blocks[1])
        names = [iv.var for iv in epi.iter_vars]
        if (iter_kinds(sch, blocks[1]) != ["S"] * len(so) or len(epi.reads) != 1
                or not epi.writes[0].source.same_as(params[2])
                or not isinstance(epi.body, tirx.BufferStore)
                or not _at(epi.body.indices, names)):
            return None
        scale = _scale(epi.body.value, mm.writes[0].source, names)
        if scale is None:
            return None
    elif not mm.writes[0].source.same_as(params[2]):
        return None
    m, k, n = sa[-2], sa[-1], sb[-1]
    if n % lanes == 0 or n < lanes or math.prod(so) >= 2 ** 31:
        return None
    return sa[:-2], m, k, n, scale


def batch_matmul_kernel(batch_shape: tuple[int, ...], m: int, k: int, n: int,
                        scale: float | None, lanes: int) -> tirx.PrimFunc:
    """The kernel of the module docstring for ``(*batch, m, k) · (*batch, k, n)``."""
    batch = math.prod(batch_shape)
    width = 2 * lanes if n >= 2 * lanes else lanes
    rows = min(m, 6 if width > lanes else 8)  # 12 or 8 accumulator registers, operands left
    col_blocks = -(-n // width)
    last_col = n - width
    row_blocks, rest = divmod(m, rows)
    outer = T.parallel if batch * m * n * k >= _PARALLEL_MIN_WORK else T.serial
    factor = T.float32(1.0 if scale is None else scale)

    @T.prim_func(private=True, s_tir=True)
    def bmm(a_handle: T.handle, b_handle: T.handle, c_handle: T.handle):
        T.func_attr({"tirx.noalias": True})
        a_nd = T.match_buffer(a_handle, (*batch_shape, m, k), "float32")
        b_nd = T.match_buffer(b_handle, (*batch_shape, k, n), "float32")
        c_nd = T.match_buffer(c_handle, (*batch_shape, m, n), "float32")
        with T.sblock("root"):  # noqa: SIM117 (TVMScript: one block per with)
            # one opaque block under the root: the pipeline expects blocks at the top level
            with T.sblock("batch_matmul_tiles"):
                T.reads()  # opaque: its flat views are no regions of the outer scope
                T.writes()
                a = T.decl_buffer((batch * m * k,), "float32", data=a_nd.data)
                b = T.decl_buffer((batch * k * n,), "float32", data=b_nd.data)
                c = T.decl_buffer((batch * m * n,), "float32", data=c_nd.data)
                for task in outer(batch * row_blocks):
                    # a stack buffer ("global"): LLVM keeps it in registers
                    acc = T.alloc_buffer((rows * width,), "float32", scope="global")
                    for cb in range(col_blocks):
                        for r in T.unroll(rows):
                            for j in T.vectorized(width):
                                acc[r * width + j] = T.float32(0)
                        for kk in range(k):
                            for r in T.unroll(rows):
                                for j in T.vectorized(width):
                                    acc[r * width + j] = acc[r * width + j] + a[
                                        (task // row_blocks) * m * k
                                        + ((task % row_blocks) * rows + r) * k + kk] * b[
                                        (task // row_blocks) * k * n + kk * n
                                        + T.min(cb * width, last_col) + j]
                        for r in T.unroll(rows):
                            for j in T.vectorized(width):
                                c[(task // row_blocks) * m * n
                                  + ((task % row_blocks) * rows + r) * n
                                  + T.min(cb * width, last_col) + j] = acc[r * width + j] * factor
                if rest > 0:  # leftover rows (a Python-level if: no loop, no division by 0)
                    for task in outer(batch * rest):
                        acc = T.alloc_buffer((width,), "float32", scope="global")
                        for cb in range(col_blocks):
                            for j in T.vectorized(width):
                                acc[j] = T.float32(0)
                            for kk in range(k):
                                for j in T.vectorized(width):
                                    acc[j] = acc[j] + a[
                                        (task // rest) * m * k
                                        + (row_blocks * rows + task % rest) * k + kk] * b[
                                        (task // rest) * k * n + kk * n
                                        + T.min(cb * width, last_col) + j]
                            for j in T.vectorized(width):
                                c[(task // rest) * m * n + (row_blocks * rows + task % rest) * n
                                  + T.min(cb * width, last_col) + j] = acc[j] * factor

    return bmm


def schedule_batch_matmul(func: tirx.PrimFunc, lanes: int) -> tirx.PrimFunc | None:
    """The written kernel in place of ``func`` (its attributes kept), or None."""
    shape = batch_matmul_shape(func, lanes)
    if shape is None:
        return None
    kernel = batch_matmul_kernel(*shape, lanes)
    return kernel.with_attrs(func.attrs).with_attr(_SCHEDULED, True)


@tvm.transform.module_pass(opt_level=0, name="ScheduleBatchMatmul")
class ScheduleBatchMatmul:
    """``schedule_batch_matmul`` on every kernel not scheduled yet (a tuning database's
    records win); HeuristicCpuSchedule, after it, skips them."""

    def __init__(self, lanes: int):
        self.lanes = lanes

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, tirx.PrimFunc) and func.attrs.get(_SCHEDULED) != 1:
                scheduled = schedule_batch_matmul(func, self.lanes)
                if scheduled is not None:
                    mod[gvar] = scheduled
        return mod
