"""Transposed convolutions whose kernel equals their stride (DBNet's 2×2/stride-2 upsampling), in NHWC.

TOPI lowers ``conv2d_transpose`` in NCHW only, as a conv over the input dilated with zeros:
for 2×2 stride 2, three of every four multiply-adds are with an inserted zero, and each such
conv sat between two layout transposes in the otherwise NHWC PaddleOCR detectors. When the
kernel equals the stride the input pixels' output patches do not overlap: output pixel
``(y, x)`` comes from input pixel ``((y + top) // s, (x + left) // s)`` through kernel tap
``((y + top) % s, (x + left) % s)`` alone, so

    out[n, y, x, o] = Σ_i in[n, (y + top) // s, (x + left) // s, i] · W[(y + top) % s, (x + left) % s, i, o]

— a matmul ``(H·W × C_in) · (C_in × s²·C_out)`` written straight into the upsampled image
(the depth-to-space is the index, not a pass). In NHWC/HWIO the output channels are the
contiguous SIMD axis, ``defaults.py`` register-tiles it like a conv (columns × channel
vectors, the reduction over input channels outside the tile) and inlines the bias and
activation into the tile's write-back. ``cpu_layout`` asks for NHWC/HWIO only for these;
other transposed convs (overlapping kernels, output padding, dilation, groups) keep TOPI's
NCHW lowering.
"""

from __future__ import annotations

import tvm
from tvm import relax, te
from tvm.ir import IRModule

from hwcompile.rewrite import mutate_functions

WEIGHT_LAYOUT = "HWIO"  # (s, s, C_in, C_out): output channels contiguous
_BLOCK = "conv2d_transpose_nhwc"


def _kernel_hw(call: relax.Call) -> tuple[int, int] | None:
    ty, layout = call.args[1].ty, str(call.attrs.kernel_layout)
    if not isinstance(ty, relax.TensorType) or ty.ndim != 4 or ty.shape is None:
        return None
    dims = list(ty.shape.values)
    hw = [dims[layout.index(axis)] for axis in "HW"]
    return tuple(int(d) for d in hw) if all(isinstance(d, tvm.tirx.IntImm) for d in hw) else None


def is_patch_transpose(call: relax.Call) -> bool:
    """A ``conv2d_transpose`` (any layout) whose kernel equals its stride, without groups,
    dilation or output padding: each input pixel makes its own output patch."""
    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d_transpose"):
        return False
    a = call.attrs
    return (int(a.groups) == 1 and all(int(d) == 1 for d in a.dilation)
            and not any(int(p) for p in a.output_padding)
            and _kernel_hw(call) == tuple(int(s) for s in a.strides))


def conv2d_transpose_nhwc(data: te.Tensor, weight: te.Tensor, padding, out_dtype: str
                          ) -> te.Tensor:
    """The NHWC transposed conv of ``data`` with HWIO ``weight`` whose kernel is its stride;
    ``padding`` (top, left, bottom, right) crops the output."""
    _, height, width, _ = data.shape
    sy, sx, in_channels, out_channels = weight.shape
    top, left, bottom, right = padding
    i = te.reduce_axis((0, in_channels), name="i")

    def tap(y, x, o):  # the kernel tap that makes output pixel (y, x)
        return weight[(y + top) % sy, (x + left) % sx, i, o].astype(out_dtype)

    return te.compute(
        (data.shape[0], height * sy - top - bottom, width * sx - left - right, out_channels),
        lambda n, y, x, o: te.sum(
            data[n, (y + top) // sy, (x + left) // sx, i].astype(out_dtype) * tap(y, x, o),
            axis=[i]),
        name=_BLOCK)


def _nhwc_patch_transpose(call: relax.Call) -> bool:
    a = call.attrs
    return (is_patch_transpose(call) and a.data_layout == "NHWC" and a.out_layout == "NHWC"
            and a.kernel_layout == WEIGHT_LAYOUT)


@relax.expr_functor.mutator
class _Legalize(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not _nhwc_patch_transpose(call):
            return call
        return self.builder_.call_te(
            conv2d_transpose_nhwc, call.args[0], call.args[1],
            [int(p) for p in call.attrs.padding], str(call.ty.dtype),
            primfunc_name_hint="conv2d_transpose_patches")


@tvm.transform.module_pass(opt_level=0, name="LegalizePatchTranspose")
def legalize_patch_transpose(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """NHWC/HWIO transposed convs whose kernel is their stride as kernels of
    ``conv2d_transpose_nhwc`` (TOPI has no NHWC transposed conv)."""
    return mutate_functions(_Legalize(mod), mod)
