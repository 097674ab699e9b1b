"""``tanh`` for LLVM CPU targets as inline, vectorizable arithmetic instead of ``expf`` calls.

TVM lowers ``tanh`` through ``exp``, which LLVM turns into one ``expf`` call per element
(per vector lane once vectorized): every LSTM/GRU cell computes ``tanh`` of its gate and
its state, and lstm_gru's cell kernels spent most of their time in those calls. Here it is
Cephes' ``tanhf``, both branches computed and one selected (so it vectorizes):

    |x| ≤ 0.625:  x + x³·P(x²)              (degree-4 P: no cancellation near 0)
    |x| > 0.625:  sign(x) · (1 − e) / (1 + e),   e = exp(−2|x|) ∈ (0, 0.29)

``exp`` is ``fast_sigmoid.py``'s (Cephes' polynomial, ``2^n`` in the exponent bits, the
argument clamped at -87.3, where ``tanh`` is ±1 in float32 anyway). Registered as the LLVM
lowering of float32 ``tirx.tanh`` on import.
"""

from __future__ import annotations

import tvm
from tvm import tirx

from .fast_sigmoid import _EXP_MIN, _EXP_POLY, _LN2_HI, _LN2_LO, _LOG2E, _const, _with_lanes

_SMALL = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
          -3.33332819422e-1)  # Cephes tanhf: P(x²), highest degree first


def tanh_expr(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """The float32 ``tanh`` of ``x`` (scalar or vector) as arithmetic (module docstring)."""
    dtype = str(x.ty.dtype)
    c = lambda v: _const(v, dtype)
    a = tirx.Var("tanh_a", dtype)  # max(-2|x|, _EXP_MIN)
    n = tirx.Var("tanh_n", dtype)
    r = tirx.Var("tanh_r", dtype)
    e = tirx.Var("tanh_e", dtype)
    z = tirx.Var("tanh_z", dtype)
    p = c(_EXP_POLY[0])
    for coef in _EXP_POLY[1:]:
        p = p * r + c(coef)
    p = p * r * r + r + c(1.0)
    bits = tirx.Cast(_with_lanes("int32", dtype), n) + tirx.const(127, "int32")
    scale = tirx.reinterpret(dtype, tirx.shift_left(bits, tirx.const(23, "int32")))
    large = (c(1.0) - e) / (c(1.0) + e)
    q = c(_SMALL[0])
    for coef in _SMALL[1:]:
        q = q * z + c(coef)
    small = q * z * x + x
    result = tirx.Select(tirx.abs(x) <= c(0.625), small,
                         tirx.Select(x >= c(0.0), large, -large))
    return tirx.Let(a, tirx.max(c(-2.0) * tirx.abs(x), c(_EXP_MIN)),
           tirx.Let(n, tirx.floor(a * c(_LOG2E) + c(0.5)),
           tirx.Let(r, a - n * c(_LN2_HI) - n * c(_LN2_LO),
           tirx.Let(e, p * scale,
           tirx.Let(z, x * x, result)))))


def _lower_tanh(call: tirx.PrimExpr) -> tirx.PrimExpr:
    x = call.args[0]
    dtype = tvm.DataType(str(x.ty.dtype))
    if dtype.type_code != tvm.DataTypeCode.FLOAT or dtype.bits != 32:
        return call  # other float types: TVM's own lowering
    return tanh_expr(x)


tirx.register_intrin_lowering("tirx.tanh", target="llvm", f=_lower_tanh, level=99)
