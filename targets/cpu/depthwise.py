"""Depthwise convolutions in NHWC: one output channel per input channel (times a multiplier).

TVM legalizes a grouped NHWC conv with TOPI's generic grouped conv, whose input channel is
``group · (C / groups) + r`` over a reduction axis ``r`` of extent 1: that index arithmetic
defeated the register tile of ``defaults.py``, so depthwise convs had stayed NCHW, each one
between two layout transposes (and the elementwise ops around them NCHW too). Here:

- ``legalize_depthwise`` (before LegalizeOps) makes each depthwise NHWC/HWOI conv the plain
  compute ``out[n, h, w, c] = Σ_{kh, kw} pad(x)[n, h·s + kh·d, w·s + kw·d, c / m] ·
  W[kh, kw, c, 0]``: channels are the contiguous axis of input, weight and output. An
  explicit constant pad before it (the quantized graph's zero-point pad) becomes its own
  padding, so it costs no kernel and no padded copy. Bias and activations fuse after it.
- ``ScheduleDepthwise`` (before the default heuristics, which then skip these kernels)
  schedules them: output rows in parallel; per row, tiles of ``columns × channel vector``
  accumulated in registers over the unrolled kernel window (a large window's columns a
  loop: every unrolled read is a branch to lower and compile); the pad a bounds check on the
  read; the epilogue (bias, hard-swish, requantization) applied at the tile's write-back.
  On PP-LCNet's depthwise kernels: ~6× faster than ``defaults.py``'s schedule, which left
  hard-swish as five passes over memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import tvm
from tvm import relax, te, tirx, topi
from tvm.ir import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError

from hwcompile.rewrite import mutate_functions

from .conv_transpose import legalize_patch_transpose
from .depthwise_int8 import takes_unsigned_operand, unsigned_code, unsigned_offset
from .int8_epilogue import constant_value

_BLOCK = "depthwise_conv2d_nhwc"  # the compute's block, which the schedule looks for
WEIGHT_LAYOUT = "HWOI"  # (kh, kw, C·m, 1): output channels contiguous, like HWIO for dense convs


def _dim(ty: relax.Type, layout: str, axis: str) -> int | None:
    """The static extent of ``axis`` (a letter of ``layout``) of a 4-D tensor type."""
    if not isinstance(ty, relax.TensorType) or ty.ndim != 4 or ty.shape is None:
        return None
    extent = list(ty.shape.values)[str(layout).index(axis)]
    return int(extent) if isinstance(extent, tvm.tirx.IntImm) else None


def is_depthwise(call: relax.Call) -> bool:
    """A 2-D conv with one input channel per group (groups = input channels > 1), in any
    layout: output channel ``c`` reads input channel ``c / (out_channels / groups)``."""
    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d"):
        return False
    a, groups = call.attrs, int(call.attrs.groups)
    return (groups > 1 and _dim(call.args[0].ty, a.data_layout, "C") == groups
            and _dim(call.args[1].ty, a.kernel_layout, "I") == 1)


def depthwise_nhwc(data: te.Tensor, weight: te.Tensor, strides, padding, dilation,
                   out_dtype: str, pad_value: float = 0.0,
                   operand: Callable[[tirx.PrimExpr], tirx.PrimExpr] | None = None) -> te.Tensor:
    """The NHWC depthwise conv of ``data`` with HWOI ``weight``; ``padding`` is
    (top, left, bottom, right), filled with ``pad_value``; ``operand`` maps a read of
    ``data`` to the multiplied value (default: cast to ``out_dtype``)."""
    _, height, width, channels = data.shape
    kh, kw, out_channels, _ = weight.shape
    (sy, sx), (dy, dx) = strides, dilation
    top, left, bottom, right = padding
    if any(padding):
        data = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, 0],
                           pad_value=pad_value, name="pad_temp")
    out_h = (height + top + bottom - dy * (kh - 1) - 1) // sy + 1
    out_w = (width + left + right - dx * (kw - 1) - 1) // sx + 1
    multiplier = out_channels // channels
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def channel(c):  # its input channel: c itself without a multiplier
        return c if int(multiplier) == 1 else c // multiplier

    read = operand or (lambda value: value.astype(out_dtype))
    return te.compute(
        (data.shape[0], out_h, out_w, out_channels),
        lambda n, y, x, c: te.sum(
            read(data[n, y * sy + ry * dy, x * sx + rx * dx, channel(c)])
            * weight[ry, rx, c, 0].astype(out_dtype), axis=[ry, rx]),
        name=_BLOCK)


def _nhwc_depthwise(call: relax.Call) -> bool:
    a = call.attrs
    return (is_depthwise(call) and a.data_layout == "NHWC" and a.out_layout == "NHWC"
            and a.kernel_layout == WEIGHT_LAYOUT)


@relax.expr_functor.mutator
class _Legalize(relax.PyExprMutator):
    def _spatial_pad(self, data: relax.Expr) -> tuple[relax.Expr, list[int], float] | None:
        """(x, (top, left, bottom, right), value) when ``data`` is a constant pad of x's
        height and width only (the quantized graph's zero-point pad)."""
        pad = self.lookup_binding(data) if isinstance(data, relax.Var) else None
        if not (isinstance(pad, relax.Call) and isinstance(pad.op, tvm.ir.Op)
                and pad.op.name == "relax.nn.pad" and pad.attrs.pad_mode == "constant"):
            return None
        n0, n1, top, bottom, left, right, c0, c1 = [int(v) for v in pad.attrs.pad_width]
        if n0 or n1 or c0 or c1 or min(top, bottom, left, right) < 0:
            return None
        return pad.args[0], [top, left, bottom, right], float(pad.attrs.pad_value)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not _nhwc_depthwise(call):
            return call
        a = call.attrs
        data, padding, value = call.args[0], [int(p) for p in a.padding], 0.0
        explicit = self._spatial_pad(data)
        if explicit is not None and not any(padding):  # the pad read inside the kernel
            data, padding, value = explicit
        weight = constant_value(call.args[1], self) if takes_unsigned_operand(call) else None
        compute = depthwise_nhwc if weight is None else partial(depthwise_nhwc, operand=unsigned_code)
        conv = self.builder_.call_te(
            compute, data, call.args[1], [int(s) for s in a.strides], padding,
            [int(d) for d in a.dilation], str(call.ty.dtype), value,
            primfunc_name_hint="depthwise_conv2d")
        if weight is None:
            return conv
        # int8: the sums over unsigned codes (depthwise_int8.py), less their constant excess
        return relax.op.add(self.builder_.emit(conv), relax.const(unsigned_offset(weight)))


@tvm.transform.module_pass(opt_level=0, name="LegalizeDepthwise")
def legalize_depthwise(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """Depthwise NHWC/HWOI convs as kernels of ``depthwise_nhwc``, an explicit constant pad
    before one (the quantized graph pads with the input's zero point) read inside it; the
    pads no longer used dropped."""
    return relax.transform.DeadCodeElimination()(mutate_functions(_Legalize(mod), mod))


def legalize_ops() -> tvm.transform.Pass:
    """TVM's LegalizeOps, depthwise NHWC convs legalized first by ``legalize_depthwise`` and
    NHWC transposed convs whose kernel is their stride by ``legalize_patch_transpose``."""
    return tvm.transform.Sequential([legalize_depthwise, legalize_patch_transpose,
                                     relax.transform.LegalizeOps()], name="LegalizeOps")


# ---------------------------------------------------------------------------- schedule

_SCHEDULED = "tirx.is_scheduled"  # what HeuristicCpuSchedule and the database skip
# Below this many multiply-adds a kernel runs on one thread: waking the pool costs ~10 µs.
_PARALLEL_MIN_WORK = 1 << 17
_SYMBOLIC_BATCH_GUESS = 8  # what a symbolic batch counts as in that decision
_ACCUMULATOR_REGISTERS = 12  # of AVX2's 16 (AVX-512: 32); the rest hold weights and inputs
# Most multiply-adds of a register tile's window unrolled whole (3×3 windows, up to 22
# columns). Every one carries a bounds check for the padding, a branch for TVM's lowering
# and LLVM: layout_cdla's 5×5 windows over 19 columns (475) took 0.6–1.1 s each to compile;
# above this, the window's columns stay a loop (rows × columns unrolled: 95).
_UNROLLED_WINDOW_MAX = 200


def _extent(sch: Schedule, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tvm.tirx.IntImm) else None


def _conv_block(sch: Schedule):
    blocks = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
              if sch.get(b).name_hint.startswith(_BLOCK)]
    return blocks[0] if len(blocks) == 1 else None


def _tile(channels: int, width: int, lanes: int) -> tuple[int, int]:
    """(channel vector, output columns) of the register tile: the most accumulators the
    register file holds (each input is read once per tap whatever the tile; a weight vector
    is loaded once per tap for all the tile's columns), whole vectors of channels (one or
    two registers wide), columns dividing the output width (7 and 14 are common)."""
    budget = _ACCUMULATOR_REGISTERS if lanes < 16 else 26
    vectors = [v for v in (2 * lanes, lanes) if channels % v == 0] or [
        next((v for v in (lanes // 2, 4, 2) if channels % v == 0), 1)]
    best = (0, 0, 1)
    for vec in vectors:
        registers = max(1, vec // lanes)
        rows = max(d for d in range(1, width + 1) if width % d == 0 and d * registers <= budget)
        best = max(best, (rows * registers, vec, rows))
    return best[1], best[2]


def _inline_elementwise(sch: Schedule, keep) -> None:
    """Every spatial block but ``keep``'s and the function's last inlined into its
    consumers: the pad becomes a bounds check on the conv's read, the epilogue one
    expression (hard-swish reads the bias add twice, so it is no chain for
    reverse_compute_inline alone)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    for block in blocks[:-1]:
        if sch.get(block).same_as(sch.get(keep)):
            continue
        try:
            sch.compute_inline(block)
        except ScheduleError:
            pass  # left as a block of its own: correct, one more pass over memory


def holds_depthwise(kernel: IRModule) -> bool:
    """Whether ``kernel["main"]`` is a depthwise kernel of ``depthwise_nhwc`` (scheduled here)."""
    return _conv_block(Schedule(kernel)) is not None


def schedule_depthwise(func: tvm.tirx.PrimFunc, lanes: int) -> tvm.tirx.PrimFunc | None:
    """The depthwise kernel scheduled: rows of the output in parallel, each row in tiles of
    ``columns × channel vector`` accumulated in registers over the kernel window (unrolled;
    a large window's columns a loop),
    the epilogue applied at the tile's write-back. None when ``func`` holds no depthwise
    conv of ``depthwise_nhwc`` or its shape is not static."""
    sch = Schedule(IRModule({"main": func}))
    block = _conv_block(sch)
    if block is None:
        return None
    n, y, x, c, ry, rx = sch.get_loops(block)
    extents = [_extent(sch, loop) for loop in (y, x, c, ry, rx)]
    if None in extents:
        return None  # only the batch may be symbolic
    _inline_elementwise(sch, block)
    vec, rows = _tile(extents[2], extents[1], lanes)
    x_out, x_in = sch.split(x, [None, rows])
    c_out, c_in = sch.split(c, [None, vec])
    sch.reorder(n, y, x_out, c_out, ry, rx, x_in, c_in)
    acc = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(acc, c_out)
    try:
        sch.reverse_compute_inline(sch.get_consumers(acc)[0])
    except (ScheduleError, IndexError):
        pass  # no epilogue, or one that stays a block
    if math.prod(extents) * (_extent(sch, n) or _SYMBOLIC_BATCH_GUESS) >= _PARALLEL_MIN_WORK:
        sch.parallel(sch.fuse(n, y, x_out))  # row tiles: work for both cores on 2-3 rows
    window = extents[3] * extents[4] * rows * max(1, vec // lanes)
    for loop in (ry, rx, x_in) if window <= _UNROLLED_WINDOW_MAX else (ry, x_in):
        sch.unroll(loop)
    sch.vectorize(c_in)
    sch.vectorize(sch.get_loops(acc)[-1])
    sch.decompose_reduction(block, ry)
    return sch.mod["main"].with_attr(_SCHEDULED, True)


@tvm.transform.module_pass(opt_level=0, name="ScheduleDepthwise")
class ScheduleDepthwise:
    """``schedule_depthwise`` on every depthwise kernel not scheduled yet (a tuning
    database's records win); HeuristicCpuSchedule, after it, skips them."""

    def __init__(self, lanes: int):
        self.lanes = lanes

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, tvm.tirx.PrimFunc) and func.attrs.get(_SCHEDULED) != 1:
                try:
                    scheduled = schedule_depthwise(func, self.lanes)
                except Exception:  # TVM's internal errors: the default heuristics take it
                    scheduled = None
                if scheduled is not None:
                    mod[gvar] = scheduled
        return mod
