"""int8 depthwise convolutions on unsigned operands, so that x86 multiplies with ``vpmaddwd``.

An int8 depthwise conv sums ``int32(x) · int32(w)`` per channel. LLVM multiplies such 32-bit
lanes with ``vpmulld`` (2 µops on port 0, 10 cycles' latency on Intel) unless it can use
``vpmaddwd`` (1 µop): it does when one operand's upper 17 bits are known to be zero, or when
a sign extension feeds that one multiply only. In the register tile of ``depthwise.py`` an
input vector feeds several taps (the columns of a tile overlap), so nearly every product
was a ``vpmulld``. Read as its unsigned code ``u = x + 128`` (the same bits with the sign bit
flipped, zero-extended), every product qualifies, and

    Σ u·w = Σ x·w + 128·Σ w,

so the conv adds the constant ``−128·Σ_{kh,kw} W[kh, kw, c]`` per channel (the weights are
constants) and computes the same int32 sums. A border pad reads the zero point's code, which
takes the same ``+ 128``, so the identity holds at the borders too.
"""

from __future__ import annotations

import numpy as np
from tvm import relax, tirx

_SIGN_BIT = 128


def unsigned_code(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """int32 ``value + 128`` of an int8 ``value``: its sign bit flipped, zero-extended."""
    flipped = tirx.bitwise_xor(tirx.reinterpret("uint8", value), tirx.const(_SIGN_BIT, "uint8"))
    return tirx.Cast("int32", flipped)


def takes_unsigned_operand(call: relax.Call) -> bool:
    """An int8 × int8 → int32 conv: its data can be read as unsigned codes."""
    data, weight = (arg.ty for arg in call.args[:2])
    return (isinstance(data, relax.TensorType) and isinstance(weight, relax.TensorType)
            and str(data.dtype) == "int8" and str(weight.dtype) == "int8"
            and str(call.ty.dtype) == "int32")


def unsigned_offset(weight: np.ndarray) -> np.ndarray:
    """``−128·Σ_{kh,kw} W`` of HWOI depthwise weights, shape (1, 1, 1, C·m): what turns the
    sums over unsigned codes back into the sums over int8 values."""
    total = weight.astype(np.int64).sum(axis=(0, 1, 3))
    return (-_SIGN_BIT * total).astype(np.int32).reshape(1, 1, 1, -1)
