"""Calibration: statistics of every float tensor on calibration data, range methods, cache.

Two runs over the data: the first collects min/max, mean/variance and per-channel (axis 1)
min/max/mean; the second a histogram over [−max|x|, max|x|], which the percentile, entropy
and MSE methods need. Statistics are keyed by tensor ("in:<input>" or "b<position>") and
cached in an ``.npz`` together with a hash of the model and the data, so a second compile
with the same model and data skips both runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from tvm import relax

from hwcompile.calibration_data import CalibrationSet
from hwcompile.errors import CalibrationError
from hwcompile.model import Model
from hwcompile.rewrite import dataflow_bindings

from .probe import Runner, exposed

BINS = 2048
METHODS = ("minmax", "maxabs", "meanstd", "percentile", "entropy", "mse")


@dataclass
class TensorStats:
    min: float
    max: float
    mean: float
    var: float
    channel_min: np.ndarray  # per index of axis 1 (empty for 0/1-D tensors)
    channel_max: np.ndarray
    channel_mean: np.ndarray
    hist: np.ndarray  # BINS counts over [-bound, bound]

    @property
    def bound(self) -> float:
        return max(abs(self.min), abs(self.max), 1e-12)


class _Accumulator:
    def __init__(self) -> None:
        self.lo, self.hi, self.total, self.total_sq, self.count = np.inf, -np.inf, 0.0, 0.0, 0
        self.ch_lo = self.ch_hi = self.ch_sum = None
        self.ch_count = 0
        self.hist = np.zeros(BINS, np.int64)

    def first(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        self.lo, self.hi = min(self.lo, x.min()), max(self.hi, x.max())
        self.total += x.sum()
        self.total_sq += np.square(x).sum()
        self.count += x.size
        if x.ndim >= 2:
            per = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
            lo, hi, total = per.min(1), per.max(1), per.sum(1)
            if self.ch_lo is None:
                self.ch_lo, self.ch_hi, self.ch_sum = lo, hi, total
            else:
                self.ch_lo, self.ch_hi = np.minimum(self.ch_lo, lo), np.maximum(self.ch_hi, hi)
                self.ch_sum = self.ch_sum + total
            self.ch_count += per.shape[1]

    def second(self, x: np.ndarray) -> None:
        bound = max(abs(self.lo), abs(self.hi), 1e-12)
        self.hist += np.histogram(x, bins=BINS, range=(-bound, bound))[0]

    def stats(self) -> TensorStats:
        mean = self.total / self.count
        empty = np.zeros(0)
        return TensorStats(float(self.lo), float(self.hi), float(mean),
                           float(max(self.total_sq / self.count - mean * mean, 0.0)),
                           empty if self.ch_lo is None else self.ch_lo,
                           empty if self.ch_hi is None else self.ch_hi,
                           empty if self.ch_sum is None else self.ch_sum / self.ch_count,
                           self.hist)


def float_positions(model: Model) -> list[int]:
    """Positions of the bindings of ``main`` that produce a float tensor."""
    return [i for i, b in enumerate(dataflow_bindings(model.main))
            if isinstance(b.var.ty, relax.TensorType) and "float" in str(b.var.ty.dtype)]


def _key(model: Model, data: CalibrationSet) -> str:
    h = hashlib.sha256(model.mod.script(show_meta=False).encode())
    for name in sorted(model.params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(model.params[name]).tobytes())
    h.update(data.digest().encode())
    h.update(str(BINS).encode())
    return h.hexdigest()


def _load_cache(path: Path, key: str) -> dict[str, TensorStats] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["__key__"]) != key:
                return None
            names = sorted({k.rsplit("|", 1)[0] for k in data.files if "|" in k})
            arrays = ("channel_min", "channel_max", "channel_mean", "hist")

            def value(name: str, f: str):
                stored = data[f"{name}|{f}"]
                return stored if f in arrays else float(stored)

            return {n: TensorStats(**{f.name: value(n, f.name) for f in fields(TensorStats)})
                    for n in names}
    except Exception:  # an unreadable or foreign cache is recomputed, not an error
        return None


def _save_cache(path: Path, key: str, stats: dict[str, TensorStats]) -> None:
    arrays: dict[str, Any] = {"__key__": np.asarray(key)}
    for name, st in stats.items():
        for f in fields(TensorStats):
            arrays[f"{name}|{f.name}"] = np.asarray(getattr(st, f.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:  # np.savez would append .npz to a differently named path
        np.savez(out, **arrays)


class FloatProbe:
    """The float model with every float binding exposed, compiled on first use."""

    def __init__(self, model: Model):
        self.model = model
        self.bindings = dataflow_bindings(model.main)
        self.positions = float_positions(model)
        self._runner: Runner | None = None

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._runner is None:
            self._runner = Runner(exposed(self.model, self.positions))
        return self._runner(feed)


def collect(probe: FloatProbe, data: CalibrationSet, cache: str | Path | None = None,
            progress=lambda message: None) -> tuple[dict[str, TensorStats], bool]:
    """Statistics of the model inputs and every float binding; (stats, loaded from cache)."""
    model, positions, runner = probe.model, probe.positions, probe
    key = _key(model, data)
    if cache is not None:
        cached = _load_cache(Path(cache), key)
        if cached is not None:
            progress(f"calibration statistics reused from {cache}")
            return cached, True
    names = [f"in:{s.name}" for s in model.inputs] + [f"b{p}" for p in positions]
    acc = {n: _Accumulator() for n in names}
    for sweep in ("first", "second"):
        for index, feed in enumerate(data):
            progress(f"calibration {sweep} pass: batch {index + 1}/{len(data.feeds)}")
            tensors = [feed[s.name] for s in model.inputs] + runner(feed)
            for name, tensor in zip(names, tensors):
                if not np.isfinite(tensor).all():
                    raise CalibrationError(f"calibration batch {index}: tensor {name} of the float "
                                           "model is not finite; check the calibration data range")
                getattr(acc[name], sweep)(tensor)
    stats = {n: a.stats() for n, a in acc.items() if a.count}
    if cache is not None:
        _save_cache(Path(cache), key, stats)
    return stats, False


# ---- range methods --------------------------------------------------------------------------

def _hist_centers(st: TensorStats) -> np.ndarray:
    edges = np.linspace(-st.bound, st.bound, BINS + 1)
    return (edges[:-1] + edges[1:]) / 2


def _percentile(st: TensorStats, pct: float) -> tuple[float, float]:
    cdf = np.cumsum(st.hist) / max(st.hist.sum(), 1)
    centers = _hist_centers(st)
    lo = centers[min(np.searchsorted(cdf, (100 - pct) / 100), BINS - 1)]
    hi = centers[min(np.searchsorted(cdf, pct / 100), BINS - 1)]
    return max(lo, st.min), min(hi, st.max)


def _entropy_threshold(st: TensorStats, levels: int = 128) -> float:
    """TensorRT-style KL calibration on the |x| histogram: the clip threshold whose
    ``levels``-bin quantized distribution loses the least information."""
    half = (st.hist[BINS // 2:] + st.hist[:BINS // 2][::-1]).astype(np.float64)  # |x| bins
    best, best_i = np.inf, half.size
    for i in range(levels, half.size + 1, 16):
        p = half[:i].copy()
        p[-1] += half[i:].sum()
        if p.sum() == 0:
            continue
        chunks = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        for chunk in chunks:
            nonzero = half[chunk] > 0
            if nonzero.any():
                q[chunk[nonzero]] = half[chunk].sum() / nonzero.sum()
        if q.sum() == 0:
            continue
        pn = p / p.sum()
        qn = q / q.sum() + 1e-4 * (q == 0)  # empty bins get a little mass: KL stays finite
        qn /= qn.sum()
        mask = pn > 0
        kl = float(np.sum(pn[mask] * np.log(pn[mask] / qn[mask])))
        if kl < best:
            best, best_i = kl, i
    return best_i / half.size * st.bound


def _mse_range(st: TensorStats, levels: int = 255) -> tuple[float, float]:
    """The range alpha·[min, max] minimizing the histogram's expected quantization error
    (clipping error outside, uniform rounding noise step²/12 inside)."""
    centers, counts = _hist_centers(st), st.hist.astype(np.float64)
    lo0, hi0 = min(st.min, 0.0), max(st.max, 0.0)
    best, best_range = np.inf, (lo0, hi0)
    for alpha in np.linspace(0.05, 1.0, 96):
        lo, hi = alpha * lo0, alpha * hi0
        step = max(hi - lo, 1e-12) / levels
        clipped = np.clip(centers, lo, hi)
        err = np.sum(counts * ((centers - clipped) ** 2 + step * step / 12))
        if err < best:
            best, best_range = err, (lo, hi)
    return best_range


def tensor_range(st: TensorStats, method: str, k: float = 3.0,
                 percentile: float = 99.99) -> tuple[float, float]:
    """The (lo, hi) a range method picks for a tensor."""
    if method == "minmax":
        return st.min, st.max
    if method == "maxabs":
        return -st.bound, st.bound
    if method == "meanstd":
        std = np.sqrt(st.var)
        return max(st.mean - k * std, st.min), min(st.mean + k * std, st.max)
    if method == "percentile":
        return _percentile(st, percentile)
    if method == "entropy":
        threshold = _entropy_threshold(st)
        return max(-threshold, st.min), min(threshold, st.max)
    if method == "mse":
        return _mse_range(st)
    raise ValueError(f"unknown range method '{method}'; use one of {', '.join(METHODS)}")
