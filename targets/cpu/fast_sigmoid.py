"""``sigmoid`` for LLVM CPU targets as inline, vectorizable arithmetic instead of ``expf`` calls.

TVM lowers ``sigmoid(x)`` to ``1 / (1 + exp(-x))`` and LLVM turns a vector ``exp`` into one
``expf`` call per lane (no vector math library is linked). In the YOLO detectors every
conv ends in SiLU (``x · sigmoid(x)``): with the sigmoid's scalar calls the epilogue took
about a third of the conv kernel's time. As onnxruntime's MLAS (a rational approximation of
the logistic function), it is evaluated inline here:

    e = exp(-|x|)            (in (0, 1]: the argument is never positive, nothing overflows)
    sigmoid(x) = 1 / (1 + e)  for x ≥ 0,   e / (1 + e)  for x < 0

``exp`` is ``2^n · p(r)`` with Cephes' degree-6 polynomial, as in ``schedule_softmax.py``
(1–2 ulp), the argument clamped at -87.3 (``exp`` below float32's normal range: the sigmoid
is then 0 or 1 to float32 precision anyway). Registered as the LLVM lowering of
``tirx.sigmoid`` on import, for every float32 sigmoid, fused into a conv's write-back or not.
"""

from __future__ import annotations

import tvm
from tvm import tirx

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693359375  # ln 2 = _LN2_HI + _LN2_LO; _LN2_HI has few mantissa bits: n·_LN2_HI exact
_LN2_LO = -2.12194440e-4
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
             1.6666665459e-1, 5.0000001201e-1)
_EXP_MIN = -87.3


def _const(value: float, dtype: str) -> tirx.PrimExpr:
    scalar = tirx.const(value, "float32")
    lanes = tvm.DataType(dtype).lanes
    return scalar if lanes == 1 else tirx.Broadcast(scalar, lanes)


def _with_lanes(base: str, dtype: str) -> str:
    lanes = tvm.DataType(dtype).lanes
    return base if lanes == 1 else f"{base}x{lanes}"


def exp_bindings(argument: tirx.PrimExpr, prefix: str
                 ) -> tuple[list[tuple[tirx.Var, tirx.PrimExpr]], tirx.Var]:
    """``exp(argument)`` of a non-positive float32 ``argument`` (scalar or vector) as ``Let``
    bindings (module docstring): the bindings, in order, and the variable holding the
    result. Variables are named ``<prefix>_a``, ``_n``, ``_r``, ``_e``."""
    dtype = str(argument.ty.dtype)
    c = lambda v: _const(v, dtype)
    a, n, r, e = (tirx.Var(f"{prefix}_{name}", dtype) for name in "anre")
    p = c(_EXP_POLY[0])
    for coef in _EXP_POLY[1:]:
        p = p * r + c(coef)
    p = p * r * r + r + c(1.0)
    bits = tirx.Cast(_with_lanes("int32", dtype), n) + tirx.const(127, "int32")
    scale = tirx.reinterpret(dtype, tirx.shift_left(bits, tirx.const(23, "int32")))
    return [(a, tirx.max(argument, c(_EXP_MIN))),
            (n, tirx.floor(a * c(_LOG2E) + c(0.5))),
            (r, a - n * c(_LN2_HI) - n * c(_LN2_LO)),
            (e, p * scale)], e


def let_chain(bindings: list[tuple[tirx.Var, tirx.PrimExpr]], body: tirx.PrimExpr
              ) -> tirx.PrimExpr:
    """``body`` under ``Let`` bindings, the first outermost."""
    for var, value in reversed(bindings):
        body = tirx.Let(var, value, body)
    return body


def sigmoid_expr(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """The float32 sigmoid of ``x`` (scalar or vector) as arithmetic (module docstring)."""
    dtype = str(x.ty.dtype)
    c = lambda v: _const(v, dtype)
    bindings, e = exp_bindings(-tirx.abs(x), "sig")
    s = tirx.Var("sig_s", dtype)
    return let_chain(bindings + [(s, c(1.0) / (c(1.0) + e))],
                     tirx.Select(x >= c(0.0), s, e * s))


def _lower_sigmoid(call: tirx.PrimExpr) -> tirx.PrimExpr:
    x = call.args[0]
    dtype = tvm.DataType(str(x.ty.dtype))
    if dtype.type_code != tvm.DataTypeCode.FLOAT or dtype.bits != 32:
        return call  # other float types: TVM's own lowering
    return sigmoid_expr(x)


tirx.register_intrin_lowering("tirx.sigmoid", target="llvm", f=_lower_sigmoid, level=99)
