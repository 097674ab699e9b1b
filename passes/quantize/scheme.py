"""Scheme math, numpy only: scales and zero points, fixed-point requantization.

x_q = clamp(round(x / scale + zero_point), q_min, q_max), scale = range / (q_max − q_min).
Weights are symmetric int8 in [−127, 127] (zero point 0) so that −w is representable;
activations are int8, affine (a zero point) or symmetric. Under power-of-two scales every
scale is 2^k, rounded up so that the calibrated range still fits, and requantization is a
pure shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwcompile.errors import PassError
from hwcompile.target import QuantScheme

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_QMAX = 127
MULTIPLIER_BITS = 30  # fixed-point multipliers are < 2**30: acc * m fits easily in int64


@dataclass(frozen=True)
class Scheme:
    """The arithmetic a quantized graph uses (resolved from the target and the options)."""

    per_channel: bool
    symmetric: bool  # activations: zero point 0
    power_of_two: bool

    def to_json(self) -> dict:
        granularity = "per-channel" if self.per_channel else "per-tensor"
        return {"weights": f"int8 symmetric {granularity}",
                "activations": "int8 " + ("symmetric" if self.symmetric else "affine"),
                "power_of_two_scales": self.power_of_two,
                "accumulator": "int32",
                "requantization": "shift" if self.power_of_two else "fixed-point multiply + shift"}


def resolve_scheme(target: QuantScheme | None, granularity: str | None,
                   symmetric: bool | None, power_of_two: bool | None) -> Scheme:
    """The target's scheme, with the options' overrides, or a PassError if the target's
    arithmetic cannot execute the requested one."""
    target = target or QuantScheme()
    want_pc = (granularity or target.weight_granularity) == "per-channel"
    if granularity not in (None, "per-channel", "per-tensor"):
        raise PassError(f"pass 'quantize' option 'granularity': '{granularity}' is not "
                        "per-channel or per-tensor")
    want_sym = target.activation_symmetric if symmetric is None else symmetric
    want_p2 = target.power_of_two_scales if power_of_two is None else power_of_two
    problems = []
    if want_pc and target.weight_granularity == "per-tensor":
        problems.append("per-channel weight scales (it executes per-tensor only)")
    if not want_sym and target.activation_symmetric:
        problems.append("affine activations with zero points (it executes symmetric only)")
    if not want_p2 and target.power_of_two_scales:
        problems.append("non-power-of-two scales (its requantization is shift-only)")
    if problems:
        raise PassError("pass 'quantize': the target cannot execute " + "; ".join(problems)
                        + "; drop the option to use the target's own scheme")
    return Scheme(per_channel=want_pc, symmetric=want_sym, power_of_two=want_p2)


@dataclass(frozen=True)
class QParams:
    """Quantization of one tensor: per-tensor (shape ()) or per-channel scales."""

    scale: np.ndarray  # float64
    zero_point: np.ndarray  # int64, same shape as scale
    qmin: int = INT8_MIN
    qmax: int = INT8_MAX
    axis: int | None = None  # channel axis of a per-channel weight

    def to_json(self) -> dict:
        def plain(a: np.ndarray):
            return a.item() if a.ndim == 0 else a.tolist()

        out = {"scale": plain(self.scale), "zero_point": plain(self.zero_point),
               "qmin": self.qmin, "qmax": self.qmax}
        if self.axis is not None:
            out["axis"] = self.axis
        return out

    def same_as(self, other: QParams) -> bool:
        return (self.scale.shape == other.scale.shape and np.array_equal(self.scale, other.scale)
                and np.array_equal(self.zero_point, other.zero_point))


def _pow2_up(scale: np.ndarray) -> np.ndarray:
    return np.exp2(np.ceil(np.log2(scale)))


def activation_qparams(lo: float, hi: float, scheme: Scheme) -> QParams:
    """Int8 parameters for a tensor calibrated to [lo, hi] (widened to contain 0, so that
    zero — padding, ReLU — is exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if scheme.symmetric:
        bound = max(-lo, hi, 1e-8)
        scale = np.float64(bound / INT8_MAX)
        if scheme.power_of_two:
            scale = _pow2_up(scale)
        return QParams(np.asarray(scale), np.asarray(0, np.int64))
    scale = np.float64(max(hi - lo, 1e-8) / (INT8_MAX - INT8_MIN))
    if scheme.power_of_two:
        scale = _pow2_up(scale)
    zero_point = np.clip(np.round(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX).astype(np.int64)
    return QParams(np.asarray(scale), np.asarray(zero_point))


def weight_qparams(weight: np.ndarray, axis: int, scheme: Scheme) -> QParams:
    """Symmetric int8 weight parameters, per output channel (``axis``) or per tensor."""
    w = np.abs(weight.astype(np.float64))
    if scheme.per_channel:
        bound = np.moveaxis(w, axis, 0).reshape(weight.shape[axis], -1).max(axis=1)
    else:
        bound = np.asarray(w.max())
    scale = np.maximum(bound, 1e-12) / WEIGHT_QMAX
    if scheme.power_of_two:
        scale = _pow2_up(scale)
    return QParams(scale, np.zeros(scale.shape, np.int64), -WEIGHT_QMAX, WEIGHT_QMAX,
                   axis if scheme.per_channel else None)


def _broadcast(qp: QParams, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    if qp.scale.ndim == 0 or qp.axis is None:
        return qp.scale, qp.zero_point
    shape = [1] * ndim
    shape[qp.axis] = -1
    return qp.scale.reshape(shape), qp.zero_point.reshape(shape)


def quantize(x: np.ndarray, qp: QParams) -> np.ndarray:
    """x_q = clamp(round(x / scale + zero_point), q_min, q_max) as int8."""
    scale, zp = _broadcast(qp, x.ndim)
    q = np.round(x.astype(np.float64) / scale) + zp
    return np.clip(q, qp.qmin, qp.qmax).astype(np.int8)


def dequantize(q: np.ndarray, qp: QParams) -> np.ndarray:
    scale, zp = _broadcast(qp, q.ndim)
    return ((q.astype(np.float64) - zp) * scale).astype(np.float32)


@dataclass(frozen=True)
class Requant:
    """Integer form of multiplying by real ``M`` (per channel or scalar):
    y = (x * multiplier + 2**(shift−1)) >> shift, with ``multiplier`` None under pure
    power-of-two shifts (then ``shift`` may differ per channel and be negative: a left shift).
    """

    multiplier: np.ndarray | None  # int64 values < 2**30, or None
    shift: np.ndarray  # int64

    def to_json(self) -> dict:
        def plain(a):
            return a.item() if a.ndim == 0 else a.tolist()

        if self.multiplier is None:
            return {"kind": "shift", "shift": plain(self.shift)}
        return {"kind": "multiply-shift", "multiplier": plain(self.multiplier),
                "shift": plain(self.shift)}


def requant_params(real: np.ndarray, power_of_two: bool) -> Requant:
    """Fixed-point form of the real multipliers ``real`` (one shift for all channels, so the
    graph needs only one per-channel int32 constant)."""
    real = np.asarray(real, np.float64)
    if power_of_two:
        exponent = np.log2(real)
        if np.all(exponent == np.round(exponent)):
            return Requant(None, (-np.round(exponent)).astype(np.int64))
    _, exponents = np.frexp(real)
    shift = int(np.clip(MULTIPLIER_BITS - exponents.max(), 0, 62))
    multiplier = np.round(np.ldexp(real, shift)).astype(np.int64)
    return Requant(multiplier, np.asarray(shift, np.int64))


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - approx.astype(np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-30) / noise)


def cosine(reference: np.ndarray, approx: np.ndarray) -> float:
    a, b = reference.astype(np.float64).ravel(), approx.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom else 1.0
