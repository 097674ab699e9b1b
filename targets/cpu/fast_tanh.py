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

from .fast_sigmoid import _const, exp_bindings, let_chain

_SMALL = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
          -3.33332819422e-1)  # Cephes tanhf: P(x²), highest degree first


def tanh_expr(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """The float32 ``tanh`` of ``x`` (scalar or vector) as arithmetic (module docstring)."""
    dtype = str(x.ty.dtype)
    c = lambda v: _const(v, dtype)
    bindings, e = exp_bindings(c(-2.0) * tirx.abs(x), "tanh")
    z = tirx.Var("tanh_z", dtype)
    large = (c(1.0) - e) / (c(1.0) + e)
    q = c(_SMALL[0])
    for coef in _SMALL[1:]:
        q = q * z + c(coef)
    small = q * z * x + x
    result = tirx.Select(tirx.abs(x) <= c(0.625), small,
                         tirx.Select(x >= c(0.0), large, -large))
    return let_chain(bindings + [(z, x * x)], result)


def _lower_tanh(call: tirx.PrimExpr) -> tirx.PrimExpr:
    x = call.args[0]
    dtype = tvm.DataType(str(x.ty.dtype))
    if dtype.type_code != tvm.DataTypeCode.FLOAT or dtype.bits != 32:
        return call  # other float types: TVM's own lowering
    return tanh_expr(x)


tirx.register_intrin_lowering("tirx.tanh", target="llvm", f=_lower_tanh, level=99)
