"""The iterative mode's report (``prune(steps=N)``): per step the sizes, the held-out
accuracy after pruning and after fine-tuning, the batch-1 latency (``measure``), one
progress line each, and the unpruned model's figures to compare with. See README.md.
"""

from __future__ import annotations

import numpy as np

from hwcompile.model import Model
from hwcompile.pipeline import PassContext, model_figures

from . import autodiff, data

# what a step adds to its details (val_accuracy, of the last step, is also the pass's)
STEP_FIGURES = ("step", "ratio", "params", "macs", "weight_bytes", "val_accuracy_pruned",
                "finetune_loss", "latency_ms")
_STEP_KEYS = STEP_FIGURES[:5] + ("units_removed", "channels", "excluded", "val_accuracy_pruned",
                                 "val_accuracy", "finetune_loss", "latency_ms")


def step_summary(details: dict) -> dict:
    """One step of the iterative mode as the report lists it (without the per-layer
    ``removed`` positions and groups of that step, which refer to its own model)."""
    return {k: details[k] for k in _STEP_KEYS if k in details}


class StepTracker:
    """Per-step figures of the iterative mode: sizes, held-out accuracy (when the
    calibration data has ``val_`` data), batch-1 latency (``measure``), one progress line
    each; and the unpruned model's figures to compare with."""

    def __init__(self, ctx: PassContext, val: tuple[np.ndarray, np.ndarray] | None,
                 measure: bool, repeat: int):
        self.ctx, self.val, self.measure, self.repeat = ctx, val, measure, repeat
        self.unpruned: dict = {}
        self.timings: dict[str, dict | None] = {}  # "unpruned", "final": bench()
        self.unpruned_forward: autodiff.ForwardFunction | None = None  # logits, when built

    def accuracy(self, forward, model: Model) -> float:
        return data.accuracy(forward(self.val[0], model.params), self.val[1])

    def forward(self, model: Model) -> autodiff.ForwardFunction:
        return autodiff.forward_function(model, min(32, len(self.val[0])), logits=True,
                                         samples=len(self.val[0]))

    def record_unpruned(self, model: Model) -> None:
        self.unpruned = model_figures(model)
        if self.val is not None:
            self.unpruned_forward = self.forward(model)
            self.unpruned["val_accuracy"] = self.accuracy(self.unpruned_forward, model)
            self.unpruned["val_samples"] = len(self.val[1])
        if self.measure:
            self.unpruned["latency_ms"] = self._time("unpruned", model, "unpruned")
        self.ctx.progress(f"prune: unpruned: {_describe(self.unpruned)}")

    def record_step(self, details: dict, step: int, steps: int, ratio: float, pruned: Model,
                    tuned: Model | None, forward: autodiff.ForwardFunction | None) -> None:
        details.update(step=step, ratio=round(ratio, 4), **model_figures(pruned))
        if self.val is not None:
            forward = forward or self.forward(pruned)
            details["val_accuracy_pruned"] = self.accuracy(forward, pruned)
            details["val_accuracy"] = (self.accuracy(forward, tuned) if tuned is not None
                                       else details["val_accuracy_pruned"])
        if self.measure:
            details["latency_ms"] = self._time("final", pruned, f"step {step}")
        self.ctx.progress(f"prune: step {step}/{steps} (ratio {ratio:.3g}): {_describe(details)}")

    def summary(self) -> dict:
        return {"unpruned": self.unpruned} if self.unpruned else {}

    def _time(self, key: str, model: Model, label: str) -> float | None:
        self.timings[key] = bench(model, self.ctx, self.repeat, label)
        return self.timings[key]["ms"] if self.timings[key] else None

    def latency(self, before: Model, after: Model) -> dict:
        """``measure``'s before/after figures, reusing what the steps measured."""
        if "unpruned" not in self.timings:
            self._time("unpruned", before, "before pruning")
        if "final" not in self.timings:
            self._time("final", after, "after pruning")
        how = {"target": _target(self.ctx).name, "passes": MEASURE_PASSES, "batch": 1,
               "repeat": self.repeat, "statistic": "median"}
        before_t, after_t = self.timings["unpruned"], self.timings["final"]
        if before_t is None or after_t is None:
            return {"latency": {**how, "note": "the target builds a library this host cannot run"}}
        how["threads"] = after_t["threads"]
        return {"latency_ms_before": before_t["ms"], "latency_ms_after": after_t["ms"],
                "speedup": round(before_t["ms"] / after_t["ms"], 3), "latency": how}


def _describe(figures: dict) -> str:
    text = (f"{figures['params']:,} params, {figures['macs'] / 1e6:.2f} MMACs, "
            f"{figures['weight_bytes']:,} weight bytes")
    if "val_accuracy_pruned" in figures:
        text += f", held-out accuracy {figures['val_accuracy_pruned']:.2%} pruned"
        if figures["val_accuracy"] != figures["val_accuracy_pruned"] or "finetune_loss" in figures:
            text += f" -> {figures['val_accuracy']:.2%} fine-tuned"
    elif "val_accuracy" in figures:
        text += f", held-out accuracy {figures['val_accuracy']:.2%}"
    if figures.get("latency_ms") is not None:
        text += f", {figures['latency_ms']:.3f} ms"
    return text


MEASURE_PASSES = "fold-constants,fold-batchnorm,dce"


def _target(ctx: PassContext):
    from hwcompile.target import resolve_target

    return ctx.target if ctx.target is not None else resolve_target("cpu")


def bench(model: Model, ctx: PassContext, repeat: int, label: str) -> dict | None:
    """``model`` compiled for ``ctx.target`` (the CPU target when the pipeline runs outside
    ``compile``) with MEASURE_PASSES and timed at batch 1 by hwcompile.bench: its median
    ``ms`` and ``threads``; None when the target builds a library this host cannot run."""
    import tempfile
    from pathlib import Path

    import hwcompile
    from hwcompile.artifact import read_metadata
    from hwcompile.bench import bench_artifact

    target = _target(ctx)
    ctx.progress(f"prune: measuring latency ({label}) on {target.name}")
    with tempfile.TemporaryDirectory(prefix="hwcompile-prune-") as tmp:
        art = hwcompile.compile(model, target, Path(tmp) / "art", passes=MEASURE_PASSES)
        if not read_metadata(art).get("loadable", True):
            return None
        stats = bench_artifact(art, repeat=repeat, warmup=3)
        return {"ms": round(stats["median_ms"], 4), "threads": stats["threads"]}
