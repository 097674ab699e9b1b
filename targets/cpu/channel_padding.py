"""Convolutions whose output channels fill no whole vector register (after pruning with
``round_to=1``, say) computed with zero channels added, the extra outputs sliced away.

The default schedule vectorizes over output channels; with 45 of them it could only use
partial vectors or scalar code (measured 3× slower than the unpruned model it came from).
``conv2d(x, W)`` with ``O`` output channels becomes ``conv2d(x, pad(W, O'))[:, :O]`` with
``O'`` the next multiple of the vector width: the same values (the added filters are
zero and their outputs dropped), and the slice fuses into the conv's kernel.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule

from hwcompile.rewrite import dense_nchw_conv, mutate_functions


@relax.expr_functor.mutator
class _PadChannels(relax.PyExprMutator):
    def __init__(self, mod: IRModule, multiple: int, int8_multiple: int):
        super().__init__(mod)
        self.multiple = multiple
        self.int8_multiple = int8_multiple

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not dense_nchw_conv(call):
            return call
        a, w = call.attrs, call.args[1].value.numpy()
        channels = w.shape[0]
        multiple = self.int8_multiple if w.dtype == np.int8 else self.multiple
        padded = -(-channels // multiple) * multiple
        if padded == channels:
            return call
        w = np.concatenate([w, np.zeros((padded - channels, *w.shape[1:]), w.dtype)])
        conv = relax.op.nn.conv2d(call.args[0], relax.const(w, str(w.dtype)), strides=a.strides,
                                  padding=a.padding, dilation=a.dilation, groups=1,
                                  data_layout="NCHW", kernel_layout="OIHW", out_layout="NCHW",
                                  out_dtype=a.out_dtype)
        return relax.op.strided_slice(self.builder_.normalize(conv), axes=[1], begin=[0],
                                      end=[channels])


def pad_output_channels(multiple: int, int8_multiple: int | None = None) -> tvm.transform.Pass:
    """Pad dense convs' output channels to a multiple of ``multiple`` (see module docstring);
    int8 convs to ``int8_multiple`` (default ``multiple``): the lanes of the narrowest
    register the integer dot product runs on (8 int32 sums with VNNI on 256-bit registers,
    so 200 channels stay 200, where padding to 208 left a scalar write-back)."""

    @tvm.transform.module_pass(opt_level=0, name="PadOutputChannels")
    def _pad(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        return mutate_functions(_PadChannels(mod, multiple, int8_multiple or multiple), mod)

    return _pad
