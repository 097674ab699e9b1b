"""CPU-only Relax rewrites of the quantized (integer) graph, run around ConvertLayout.

The quantize pass's Relax form (which the VTA partitioner matches) is left as it is; these
rewrites are exact and only change how the CPU computes it:

- ``conv2d(pad(x, zp), W)`` → ``conv2d(x, W, padding) + C``: the padding happens inside
  the conv kernel, not in a kernel and a tensor of its own per int8 conv;
- the conv's int8 activations become the operand type of the CPU's dot product: uint8
  for VNNI (``x + 128``; ``C`` absorbs the ``-128·ΣW`` that costs), int16 for vpmaddwd
  (then one broadcast loads an input-channel pair); input channels that fill no whole
  product (a stem's 3) get zero weights and a zero channel up to the next one, so the
  stem runs on the instruction too (it was plain int8 loops); ``C`` is one constant per
  channel where the conv has no border (a 1×1 conv), not an int32 image read per output;
  where the zero point's operand code is not 0 (an int8 zero point other than −128: a
  model's input, a residual sum), the operand is padded with that code inside the conv's
  kernel (``fused_zero_point_pads``), so ``C`` is again one constant per channel;
- ``R.clip`` → ``minimum(maximum(...))`` and pads moved through transposes: clip and pad
  have no layout inference in TVM, so ConvertLayout would otherwise transpose every int8
  conv's output back to NCHW and forth again (twice the kernels of the float model).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx, topi
from tvm.ir import IRModule

from hwcompile.rewrite import call_name, dense_nchw_conv, mutate_functions

from .int8_dot import DotProduct, fits_conv


def integer_graph_passes(dot: DotProduct | None) -> list[tvm.transform.Pass]:
    """The rewrites before ConvertLayout (``dot``: the target's int8 dot product);
    ``pad_through_permute`` comes after it."""
    return [fold_zero_point_pad(dot), integer_clip_to_min_max]


def _to_operand(x: relax.Expr, dtype: str) -> relax.Expr:
    """int8 x as the dot product's activation operand: uint8 x + 128 (the same bits with
    the sign bit flipped) or int16 x."""
    wide = relax.op.astype(x, "int16")
    if dtype == "int16":
        return wide
    return relax.op.astype(relax.op.add(wide, relax.const(128, "int16")), "uint8")


def _constant_image_conv(w: np.ndarray, shape: tuple[int, int, int], width: list[int],
                         border: int, interior: int, strides: list[int],
                         dilation: list[int]) -> np.ndarray:
    """conv(image, w) (no bias; int64, shape (O, out_h, out_w)) of the padded image whose
    border ring holds ``border`` and whose inside holds ``interior``. Every channel of that
    image is the same plane, so the kernel is summed over its input channels first: one
    2-D correlation per output channel (C times less work than the full conv)."""
    _channels, height, width_ = shape
    plane = np.full((height + width[4] + width[5], width_ + width[6] + width[7]), border, np.int64)
    plane[width[4]:width[4] + height, width[6]:width[6] + width_] = interior
    kernel = w.sum(axis=1)  # (O, kh, kw)
    (sy, sx), (dy, dx) = strides, dilation
    kh, kw = kernel.shape[1:]
    out_h = (plane.shape[0] - dy * (kh - 1) - 1) // sy + 1
    out_w = (plane.shape[1] - dx * (kw - 1) - 1) // sx + 1
    out = np.zeros((w.shape[0], out_h, out_w), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = plane[ky * dy:ky * dy + sy * (out_h - 1) + 1:sy,
                          kx * dx:kx * dx + sx * (out_w - 1) + 1:sx]
            out += kernel[:, ky, kx, None, None] * patch
    return out


@relax.expr_functor.mutator
class _ConvInputMutator(relax.PyExprMutator):
    def __init__(self, mod: IRModule, dot: DotProduct | None):
        super().__init__(mod)
        self.dot = dot

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not dense_nchw_conv(call) or str(call.attrs.out_dtype) != "int32":
            return call
        a, weight = call.attrs, call.args[1]
        w = weight.value.numpy().astype(np.int64)
        data = self.lookup_binding(call.args[0]) if isinstance(call.args[0], relax.Var) else None
        own = [int(p) for p in a.padding]  # top, left, bottom, right: the input's zero point is 0
        explicit = (isinstance(data, relax.Call) and isinstance(data.op, tvm.ir.Op)
                    and data.op.name == "relax.nn.pad" and data.attrs.pad_mode == "constant")
        if explicit and any(own):
            return call
        if explicit:
            x, width, value = data.args[0], [int(v) for v in data.attrs.pad_width], float(data.attrs.pad_value)
        else:
            x, width, value = call.args[0], [0, 0, 0, 0, own[0], own[2], own[1], own[3]], 0.0
        ty = x.ty if isinstance(x.ty, relax.TensorType) else None
        # input channels added (zero weights) to fill whole dot products: a stem's 3 → 4
        spare = -w.shape[1] % self.dot.depth if self.dot is not None else 0
        convert = (self.dot is not None and ty is not None and str(ty.dtype) == "int8"
                   and fits_conv(self.dot, (w.shape[0], w.shape[1] + spare)))
        unsigned = convert and self.dot.data_dtype == "uint8"
        if (ty is None or len(width) != 8 or any(width[:4]) or value != int(value)
                or not all(isinstance(d, tirx.IntImm) for d in list(ty.shape)[1:])
                or (not convert and not any(width))):
            return call
        # pad(x, v) = zero-padded x + an image of v on the border (0 inside); with uint8
        # operands x = (x + 128) − 128 inside as well: the conv of that constant image is
        # a constant added to the conv of the zero-padded (unsigned) input. When the
        # operand's own code for v is not 0, the operand is padded with that code instead
        # (a pad ``fused_zero_point_pads`` moves into the conv kernel): the constant is
        # then one per channel, not an int32 image read per output.
        shape = tuple(int(d) for d in list(ty.shape)[1:])
        code = int(value) + 128 if unsigned else int(value)
        coded_pad = convert and any(width) and code != 0
        border = (-128 if unsigned else 0) if coded_pad else int(value)
        offset = _constant_image_conv(w, shape, width, border, -128 if unsigned else 0,
                                      [int(v) for v in a.strides], [int(v) for v in a.dilation])
        if np.abs(offset).max(initial=0) >= 2**31:
            return call
        if (offset == offset[:, :1, :1]).all():  # no border: one constant per channel
            offset = offset[:, :1, :1]
        if convert and spare:
            x = relax.op.nn.pad(self.builder_.normalize(_to_operand(x, self.dot.data_dtype)),
                                [0, 0, 0, spare, 0, 0, 0, 0])
            w = weight.value.numpy()
            weight = relax.const(np.concatenate(
                [w, np.zeros((w.shape[0], spare, *w.shape[2:]), w.dtype)], axis=1))
        elif convert:
            x = _to_operand(x, self.dot.data_dtype)
        padding = [width[4], width[6], width[5], width[7]]
        if coded_pad:
            x = relax.op.nn.pad(self.builder_.normalize(x), width, pad_value=float(code))
            padding = [0, 0, 0, 0]
        conv = relax.op.nn.conv2d(x, weight,
                                  strides=a.strides,
                                  padding=padding,
                                  dilation=a.dilation, groups=1, data_layout="NCHW",
                                  kernel_layout="OIHW", out_layout="NCHW", out_dtype="int32")
        if not offset.any():
            return conv
        return relax.op.add(self.builder_.normalize(conv),
                            relax.const(offset[None].astype(np.int32), "int32"))


def fold_zero_point_pad(dot: DotProduct | None) -> tvm.transform.Pass:
    """``conv2d(pad(x, zp), W)`` → ``conv2d(x', W, padding) + C`` with ``x' = x`` (or its
    uint8 form, when ``dot`` takes uint8) and ``C`` the conv of a constant image: the same
    int32 sums."""

    @tvm.transform.module_pass(opt_level=0, name="FoldZeroPointPad")
    def _fold(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        return relax.transform.DeadCodeElimination()(mutate_functions(_ConvInputMutator(mod, dot), mod))

    return _fold


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
def integer_clip_to_min_max(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """Integer ``clip(x, lo, hi)`` → ``minimum(maximum(x, lo), hi)``: the same values (it is
    what clip legalizes to), but binary elementwise ops follow the NHWC layout."""
    return mutate_functions(_ClipMutator(mod), mod)


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
def pad_through_permute(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """Pad in the layout the data is already in instead of transposing around the pad
    (ConvertLayout's NHWC→NCHW, pad, NCHW→NHWC before each int8 conv); then drop the
    transposes left unused."""
    return relax.transform.DeadCodeElimination()(mutate_functions(_PadMutator(mod), mod))




def _conv_with_coded_pad(width: list[int], code: int, strides, dilation):
    def compute(x: te.Tensor, w: te.Tensor) -> te.Tensor:
        padded = topi.nn.pad(x, width[0::2], width[1::2], pad_value=code, name="pad_temp")
        return topi.nn.conv(padded, w, strides, 0, dilation, 1, "NHWC", "HWIO", out_dtype="int32")

    return compute


@relax.expr_functor.mutator
class _CodedPadMutator(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call_name(call) != "relax.nn.conv2d":
            return call
        a = call.attrs
        data = self._bound(call.args[0])
        permute = data if call_name(data) == "relax.permute_dims" else None
        pad = self._bound(permute.args[0]) if permute is not None else data
        if (call_name(pad) != "relax.nn.pad" or pad.attrs.pad_mode != "constant"
                or str(a.out_dtype) != "int32" or int(a.groups) != 1 or any(int(p) for p in a.padding)
                or (a.data_layout, a.kernel_layout, a.out_layout) != ("NHWC", "HWIO", "NHWC")
                or str(pad.args[0].ty.dtype) not in ("uint8", "int16")):
            return call
        x, width = pad.args[0], [int(v) for v in pad.attrs.pad_width]
        if permute is not None:  # a model's NCHW input: transposed, then padded in NHWC
            if permute.attrs.axes is None:
                return call
            axes = [int(v) for v in permute.attrs.axes]
            x = self.builder_.normalize(relax.op.permute_dims(x, axes))
            width = [w for axis in axes for w in width[2 * axis:2 * axis + 2]]
        compute = _conv_with_coded_pad(width, int(float(pad.attrs.pad_value)),
                                       [int(v) for v in a.strides], [int(v) for v in a.dilation])
        return self.builder_.call_te(compute, x, call.args[1], primfunc_name_hint="conv2d")

    def _bound(self, expr: relax.Expr) -> relax.Expr | None:
        return self.lookup_binding(expr) if isinstance(expr, relax.Var) else None


@tvm.transform.module_pass(opt_level=0, name="FusedZeroPointPads")
def fused_zero_point_pads(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """An NHWC int8 conv reading a pad by the zero point's code (``fold_zero_point_pad``)
    becomes one kernel that pads as TOPI's convs do, with that code instead of 0: no pad
    kernel and padded tensor of its own. After ConvertLayout (a kernel has no layout rules)."""
    return relax.transform.DeadCodeElimination()(mutate_functions(_CodedPadMutator(mod), mod))
