"""Importance criteria, per weight (unstructured) and per channel unit (structured).

Per weight: |w|, |∂L/∂w|, |w·∂L/∂w|. Per channel unit, over every coupled layer's slice
(conv/dense kernels on both sides; batch-norm γ for ``bn_scale``): mean |w| (``magnitude``),
‖w‖₁, ‖w‖₂, ‖∂L/∂w‖₁ / ‖∂L/∂w‖₂, first-order Taylor |Σ w·∂L/∂w|. Per-layer values are
aggregated (mean/sum/max) and then normalized within the group, so groups of different
sizes compete fairly in global pruning.

Gradients are the mean over calibration batches, computed through Relax autodiff; without
labels the targets are the model's own predictions (so ∂L/∂w measures how much a weight
matters to what the model currently outputs).
"""

from __future__ import annotations

import numpy as np

from hwcompile.errors import PassError
from hwcompile.model import Model

from . import autodiff
from .groups import Analysis, Group, WeightSlice

CRITERIA = ("magnitude", "l1", "l2", "grad_l1", "grad_l2", "taylor", "bn_scale")
GRADIENT_CRITERIA = ("grad_l1", "grad_l2", "taylor")
WEIGHT_CRITERIA = ("magnitude", "l1", "l2")
AGGREGATES = ("mean", "sum", "max")
NORMALIZATIONS = ("none", "mean", "max", "sum")


def check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise PassError(f"unknown criterion '{criterion}'; use one of {', '.join(CRITERIA)}")


def gradients(model: Model, x: np.ndarray, labels: np.ndarray | None,
              batch: int = 64, max_batches: int = 8) -> dict[str, np.ndarray]:
    """Mean ∂L/∂w of the cross-entropy loss over up to ``max_batches`` calibration batches."""
    batch = min(batch, len(x))
    if labels is None:
        labels = autodiff.forward(model, x).argmax(axis=-1)
    classes = int(model.outputs[0].shape[-1])
    count = max(1, min(max_batches, len(x) // batch))
    fn = autodiff.gradient_function(model, batch, samples=count * batch)
    total: dict[str, np.ndarray] = {}
    for index in autodiff.batches(len(x), batch, count):
        _, grads = fn(x[index], model.params, np.eye(classes, dtype=np.float32)[labels[index]])
        for name, g in grads.items():
            total[name] = total.get(name, 0) + g / count
    return total


def weight_scores(w: np.ndarray, g: np.ndarray | None, criterion: str) -> np.ndarray:
    """Per-weight importance: |w| (magnitude/l1/l2), |g| (grad_*), |w·g| (taylor)."""
    if criterion in ("grad_l1", "grad_l2"):
        return np.abs(g)
    if criterion == "taylor":
        return np.abs(w * g)
    return np.abs(w)


def _slice_score(w: np.ndarray, g: np.ndarray | None, criterion: str) -> float:
    if criterion == "magnitude":
        return float(np.abs(w).mean())
    if criterion in ("l1", "bn_scale"):
        return float(np.abs(w).sum())
    if criterion == "l2":
        return float(np.sqrt((w.astype(np.float64) ** 2).sum()))
    if criterion == "grad_l1":
        return float(np.abs(g).sum())
    if criterion == "grad_l2":
        return float(np.sqrt((g.astype(np.float64) ** 2).sum()))
    return float(abs((w.astype(np.float64) * g).sum()))  # taylor


def _bn_folded(w: np.ndarray, s: WeightSlice, analysis: Analysis) -> np.ndarray:
    """``w`` with the output channels of ``s`` scaled by the batch-norm that follows them.

    Only a layer's own output slice (its fresh channel ids) is scaled: a consumer's input
    slice already multiplies post-BN activations. Positions without a BN keep their weights.
    """
    if not any(analysis.source_layer[i] == s.weight and i in analysis.bn_scale for i in s.ids):
        return w
    factor = np.array([analysis.bn_scale.get(i, 1.0) if analysis.source_layer[i] == s.weight
                       else 1.0 for i in s.ids])
    shape = [1] * w.ndim
    shape[s.axis] = len(factor)
    return w.astype(np.float64) * factor.reshape(shape)


def unit_scores(model: Model, analysis: Analysis, groups: list[Group], criterion: str,
                aggregate: str, normalize: str, grads: dict[str, np.ndarray] | None = None,
                bn_fold: bool = True) -> tuple[list[np.ndarray], list[str]]:
    """One score array per group (a score per unit), and notes on fallbacks taken.

    With ``bn_fold`` the weight criteria (magnitude, l1, l2) score a conv/dense layer's
    output channels by the BN-folded effective kernel W·γ/√(var+ε) when a batch-norm
    follows: a BN makes the raw kernel's scale meaningless (the output is the same for any
    positive rescaling of W's rows), so raw-weight scores would rank channels arbitrarily.
    """
    role = "gamma" if criterion == "bn_scale" else "kernel"
    if criterion == "bn_scale" and not any(s.role == "gamma" for s in analysis.slices.values()):
        raise PassError("criterion bn_scale needs batch_norm layers; this model has none "
                        "(run prune before fold-batchnorm, or pick another criterion)")
    per_root: dict[int, list[float]] = {}
    fallback: dict[int, list[float]] = {}
    for s in analysis.slices.values():
        if s.role not in (role, "kernel"):
            continue
        roots = np.array([analysis.find(i) for i in s.ids])
        w = model.params[s.weight]
        if bn_fold and s.role == "kernel" and criterion in WEIGHT_CRITERIA:
            w = _bn_folded(w, s, analysis)
        g = grads.get(s.weight) if grads is not None else None
        target = per_root if s.role == role else fallback
        for root in np.unique(roots):
            where = np.nonzero(roots == root)[0]
            target.setdefault(int(root), []).append(_slice_score(
                np.take(w, where, axis=s.axis), None if g is None else np.take(g, where, axis=s.axis),
                criterion if s.role == role else "l2"))
    reduce = {"mean": np.mean, "sum": np.sum, "max": np.max}[aggregate]
    notes: list[str] = []
    result = []
    for group in groups:
        values = []
        for unit in group.units:
            found = per_root.get(unit.root) or fallback.get(unit.root) or [0.0]
            values.append(float(reduce(found)))
        if not all(u.root in per_root for u in group.units):
            notes.append(f"{', '.join(group.layers)}: no {role} slice, scored by l2 of kernels")
        scores = np.array(values)
        scale = {"none": 1.0, "mean": scores.mean(), "max": scores.max(), "sum": scores.sum()}[normalize]
        result.append(scores / scale if scale > 0 else scores)
    return result, notes
