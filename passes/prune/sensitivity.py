"""Sensitivity analysis: how each prunable group's accuracy (or output error) responds to
pruning it alone, ratio by ratio; the table and plot help pick per-layer ratios/ignores.

With labels the metric is top-1 accuracy; without, the relative L2 error of the outputs
against the unpruned model's. Every point is the model compiled and run (default schedules).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwcompile.errors import PassError
from hwcompile.model import Model
from hwcompile.pipeline import PassContext

from . import autodiff, importance
from .compensate import compensate_removed
from .groups import analyze
from .structured import apply, check_ratio


@dataclass
class Sensitivity:
    metric: str  # "accuracy" or "relative output error"
    baseline: float
    ratios: list[float]
    rows: dict[str, list[float]]  # group label -> metric per ratio

    def table(self) -> str:
        head = f"{'group (layers)':<48}" + "".join(f"{r:>9.2f}" for r in self.ratios)
        lines = [f"{self.metric}; unpruned: {self.baseline:.4f}", head, "-" * len(head)]
        for label, values in self.rows.items():
            lines.append(f"{label[:47]:<48}" + "".join(f"{v:>9.4f}" for v in values))
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, values in self.rows.items():
            ax.plot(self.ratios, values, marker="o", label=label[:40])
        ax.axhline(self.baseline, color="grey", linestyle="--", label="unpruned")
        ax.set_xlabel("fraction of the group's channels removed")
        ax.set_ylabel(self.metric)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


def _metric(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> float:
    if labels is not None:
        return float((outputs.argmax(axis=-1) == labels).mean())
    return float(np.linalg.norm(outputs - reference) / max(np.linalg.norm(reference), 1e-12))


def sensitivity(model: Model, x: np.ndarray, labels: np.ndarray | None,
                ratios: list[float], criterion: str = "l2", progress=lambda m: None) -> Sensitivity:
    """Prune each group alone at each ratio and measure (see module docstring)."""
    from hwcompile.passes.fold import fold_constants

    for r in ratios:
        check_ratio(r)
    importance.check_criterion(criterion)
    if criterion in importance.GRADIENT_CRITERIA + ("bn_scale",):
        raise PassError(f"sensitivity uses a weight criterion (magnitude, l1, l2), not {criterion}")
    model = fold_constants(model, PassContext())
    analysis, groups, _ = analyze(model)
    if not groups:
        raise PassError("prune-sensitivity: nothing prunable in this model")
    scores, _ = importance.unit_scores(model, analysis, groups, criterion, "mean", "mean")
    reference = autodiff.forward(model, x)
    rows: dict[str, list[float]] = {}
    for group, group_scores in zip(groups, scores):
        label = f"{', '.join(group.layers)} ({len(group.units)})"
        order = np.argsort(group_scores, kind="stable")
        rows[label] = []
        for r in ratios:
            n = min(round(r * len(group.units)), len(group.units) - 1)
            removed = {group.units[u].root for u in order[:n]}
            # as the prune pass does by default: removed channels' expected activations
            # are folded into their consumers (compensate.py)
            pruned = apply(model, analysis, removed, compensate_removed(model, analysis, removed)) \
                if removed else model
            rows[label].append(_metric(autodiff.forward(pruned, x), reference, labels))
            progress(f"{label}: ratio {r:.2f} -> {rows[label][-1]:.4f}")
    metric = "accuracy" if labels is not None else "relative output error"
    return Sensitivity(metric, _metric(reference, reference, labels), list(ratios), rows)
