"""Calibration: statistics of the tensors the integer rewrite reads, range methods, cache.

Only the tensors a quantized op reads or writes are observed (``observed_keys``: inputs and
outputs of the plan's layers and integer ops). Their statistics are reduced inside one
compiled probe (``probe.ProbeModule``, kernels in ``kernels.py``), sample by sample, so no
tensor leaves the model: a first run over the data gives per-channel (axis 1) min, max, sum
and sum of squares; a second, only for the methods that need it (percentile, entropy, MSE),
a histogram over [−max|x|, max|x|]. Statistics are keyed by tensor ("in:<input>" or
"b<position>") and cached in an ``.npz`` together with a hash of the model and the data, so a
second compile with the same model and data skips both runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from tvm import relax

from hwcompile.calibration_data import CalibrationSet
from hwcompile.errors import CalibrationError
from hwcompile.model import Model
from hwcompile.rewrite import dataflow_bindings, free_vars

from .kernels import BINS
from .probe import ProbeModule, key_of
from .rewrite import Plan

METHODS = ("minmax", "maxabs", "meanstd", "percentile", "entropy", "mse")
HISTOGRAM_METHODS = ("percentile", "entropy", "mse")


@dataclass
class TensorStats:
    min: float
    max: float
    mean: float
    var: float
    channel_min: np.ndarray  # per index of axis 1 (empty for 0/1-D tensors)
    channel_max: np.ndarray
    channel_mean: np.ndarray
    hist: np.ndarray  # BINS counts over [-bound, bound] (empty: not collected)

    @property
    def bound(self) -> float:
        return max(abs(self.min), abs(self.max), 1e-12)


class _Accumulator:
    """One tensor's statistics, merged over batches. ``add_channel_stats`` and
    ``add_histogram`` take what the probe's kernels return; ``first``/``second`` compute
    the same from a numpy batch (the reference the kernels are tested against)."""

    def __init__(self) -> None:
        self.channels: np.ndarray | None = None  # (4, C): min, max, sum, sum of squares
        self.count = 0
        self.has_channels = False
        self.hist = np.zeros(BINS, np.int64)
        self.hist_seen = False

    def add_channel_stats(self, channels: np.ndarray, size: int, ndim: int) -> None:
        """Merge a (4, C) batch result of ``size`` elements of a rank-``ndim`` tensor."""
        if self.channels is None:
            self.channels = channels.astype(np.float64)
        else:
            merged = self.channels
            merged[0] = np.minimum(merged[0], channels[0])
            merged[1] = np.maximum(merged[1], channels[1])
            merged[2:] += channels[2:]
        self.count += size
        self.has_channels = ndim >= 2

    def add_histogram(self, counts: np.ndarray) -> None:
        self.hist += counts
        self.hist_seen = True

    def first(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        per = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1) if x.ndim >= 2 else x.reshape(1, -1)
        self.add_channel_stats(np.stack([per.min(1), per.max(1), per.sum(1),
                                         np.square(per).sum(1)]), x.size, x.ndim)

    def second(self, x: np.ndarray) -> None:
        self.add_histogram(np.histogram(x, bins=BINS, range=self.hist_range())[0])

    @property
    def lo(self) -> np.float64:
        return np.float64(self.channels[0].min())

    @property
    def hi(self) -> np.float64:
        return np.float64(self.channels[1].max())

    def finite(self) -> bool:
        """Whether every value seen was finite (a NaN or Inf makes the sums non-finite)."""
        return bool(np.isfinite(self.channels[2:]).all())

    def hist_range(self) -> tuple[np.float64, np.float64]:
        bound = max(abs(self.lo), abs(self.hi), np.float64(1e-12))
        return -bound, bound

    def edges(self) -> np.ndarray:
        """The bin edges ``np.histogram`` uses for ``hist_range``."""
        lo, hi = self.hist_range()
        return np.linspace(lo, hi, BINS + 1, endpoint=True, dtype=np.float64)

    def stats(self) -> TensorStats:
        ch = self.channels
        mean = ch[2].sum() / self.count
        empty = np.zeros(0)
        return TensorStats(float(self.lo), float(self.hi), float(mean),
                           float(max(ch[3].sum() / self.count - mean * mean, 0.0)),
                           ch[0] if self.has_channels else empty,
                           ch[1] if self.has_channels else empty,
                           ch[2] / (self.count // ch.shape[1]) if self.has_channels else empty,
                           self.hist if self.hist_seen else np.zeros(0, np.int64))


def float_positions(model: Model) -> list[int]:
    """Positions of the bindings of ``main`` that produce a float tensor."""
    return [i for i, b in enumerate(dataflow_bindings(model.main)) if _float_tensor(b.var)]


def _float_tensor(var: relax.Var) -> bool:
    ty = var.ty
    return isinstance(ty, relax.TensorType) and "float" in str(ty.dtype) and ty.ndim >= 0 \
        and ty.shape is not None


def observed_keys(model: Model, the_plan: Plan) -> list[str]:
    """The tensors the integer rewrite may read ranges of, under any set of layers kept
    float: the output of each planned layer and integer op, and the float tensors it reads
    (its inner bindings — a layer's bias add, a lookup chain's steps — excluded)."""
    bindings = dataflow_bindings(model.main)
    groups: dict[int, list[int]] = {p: [p] for p in [*the_plan.layers, *the_plan.int_ops]}
    for inner, owner in the_plan.owner.items():
        groups.setdefault(owner, [owner]).append(inner)
    found: set[relax.Var] = set()
    for owner, group in groups.items():
        inside = {bindings[p].var for p in group}
        for p in group:
            found.update(v for v in free_vars(bindings[p].value) if v not in inside)
        found.add(bindings[owner].var)
    keys = key_of(model)
    return sorted((keys[v] for v in found if v in keys and _float_tensor(v)), key=_key_order)


def _key_order(key: str) -> tuple[int, int]:
    return (0, 0) if key.startswith("in:") else (1, int(key[1:]))


def _key(model: Model, data: CalibrationSet, keys: list[str], histograms: bool) -> str:
    h = hashlib.sha256(model.mod.script(show_meta=False).encode())
    for name in sorted(model.params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(model.params[name]).tobytes())
    h.update(data.digest().encode())
    h.update(f"{BINS} {histograms} {' '.join(keys)}".encode())
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


class Steps:
    """Progress of a loop over samples: a line at most every ``every`` seconds, and the last."""

    def __init__(self, progress: Callable[[str], None], what: str, total: int,
                 every: float = 2.0):
        self.progress, self.what, self.total, self.every = progress, what, total, every
        self.start = self.last = time.perf_counter()

    def done(self, count: int) -> None:
        now = time.perf_counter()
        if count == self.total or now - self.last >= self.every:
            self.progress(f"{self.what}: {count}/{self.total} ({now - self.start:.1f} s)")
            self.last = now


def _probe(model: Model, keys: list[str], histograms: bool) -> ProbeModule:
    """One function (one compile): per observed tensor its (5, C) channel statistics, then,
    with ``histograms``, its (CHUNKS, BINS) partial counts over the given edges (one row of
    BINS + 1 edges per tensor; NaN edges count nothing)."""
    probe = ProbeModule(model)
    edges = [relax.Var("edges", relax.TensorType((len(keys), BINS + 1), "float64"))] \
        if histograms else []

    def outputs(kernels, tensors, extra):
        found = [kernels.channel_stats(tensors[n]) for n in keys]
        if histograms:
            found += [kernels.histogram(tensors[n], relax.op.take(
                extra[0], relax.const(i, "int64"), axis=0)) for i, n in enumerate(keys)]
        return found

    probe.add("statistics", outputs, edges)
    return probe


def collect(model: Model, keys: list[str], data: CalibrationSet, histograms: bool,
            cache: str | Path | None = None, progress: Callable[[str], None] = lambda m: None
            ) -> tuple[dict[str, TensorStats], bool]:
    """Statistics of the tensors ``keys`` over ``data`` (histograms only if asked);
    (stats, loaded from cache)."""
    key = _key(model, data, keys, histograms) if cache is not None else ""
    if cache is not None:
        cached = _load_cache(Path(cache), key)
        if cached is not None:
            progress(f"calibration statistics reused from {cache}")
            return cached, True
    progress(f"calibration: compiling a probe of {len(keys)} tensors")
    probe = _probe(model, keys, histograms)
    probe.compile(progress, "calibration probe")
    ranks = {k: v.ty.ndim for v, k in key_of(model).items() if k in set(keys)}
    acc = {n: _Accumulator() for n in keys}
    no_edges = [np.full((len(keys), BINS + 1), np.nan)] if histograms else []
    steps = Steps(progress, "calibration ranges", len(data.feeds))
    for index, feed in enumerate(data):
        for name, channels in zip(keys, probe("statistics", feed, *no_edges)):
            acc[name].add_channel_stats(channels[:4], int(channels[4].sum()), ranks[name])
            if not acc[name].finite():
                raise CalibrationError(f"calibration batch {index}: tensor {name} of the float "
                                       "model is not finite; check the calibration data range")
        steps.done(index + 1)
    if histograms:
        edges = np.stack([acc[n].edges() for n in keys])
        steps = Steps(progress, "calibration histograms", len(data.feeds))
        for index, feed in enumerate(data):
            counts = probe("statistics", feed, edges)[len(keys):]
            for name, partial in zip(keys, counts):
                acc[name].add_histogram(partial.sum(0))
            steps.done(index + 1)
    stats = {n: a.stats() for n, a in acc.items()}
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
