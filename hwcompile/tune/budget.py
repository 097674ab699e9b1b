"""Tuning budgets (trials per model, per task, wall time) and the progress/deadline callback."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

from hwcompile.errors import TuningError

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"10m"``, ``"1.5h"``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise TuningError(f"--tune-time '{text}': expected a positive duration like 90s, 10m, 1h")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Budget:
    trials: int  # measured candidates for the whole model
    trials_per_task: int | None = None
    seconds: float | None = None  # wall time; tasks stop after the batch that crosses it

    def check(self) -> None:
        if self.trials < 1:
            raise TuningError(f"--trials {self.trials}: the trial budget must be at least 1")
        if self.trials_per_task is not None and self.trials_per_task < 1:
            raise TuningError(f"--trials-per-task {self.trials_per_task}: must be at least 1")


@dataclass
class TaskStats:
    name: str
    trials: int = 0
    valid: int = 0
    best_s: float | None = None
    default_s: float | None = None  # the heuristic default schedule, measured
    first_error: str | None = None


@derived_object
class ProgressAndDeadline(PyMeasureCallback):
    """After each measured batch: count valid trials, report per-task best latency, and
    stop every task once the wall-time budget is spent."""

    def __init__(self, names: list[str], deadline: float | None, say: Callable[[str], None]):
        super().__init__()
        self.stats = [TaskStats(name) for name in names]
        self.deadline = deadline
        self.say = say
        self.stopped_for_time = False

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        stats = self.stats[task_id]
        for built, ran in zip(builder_results, runner_results):
            stats.trials += 1
            error = built.error_msg or ran.error_msg
            if error:
                stats.first_error = stats.first_error or error.strip().splitlines()[-1][:300]
                continue
            stats.valid += 1
            seconds = sum(float(s) for s in ran.run_secs) / len(ran.run_secs)
            stats.best_s = seconds if stats.best_s is None else min(stats.best_s, seconds)
        best = f"{stats.best_s * 1e3:.3f} ms" if stats.best_s is not None else "none yet"
        self.say(f"task {task_id + 1}/{len(self.stats)} {stats.name}: {stats.valid}/{stats.trials} "
                 f"valid trials, best {best}")
        if self.deadline is not None and time.monotonic() > self.deadline and not self.stopped_for_time:
            self.stopped_for_time = True
            self.say("tuning time budget spent; stopping")
            for other in range(len(self.stats)):
                task_scheduler.terminate_task(other)


@dataclass
class TuneReport:
    db_dir: str
    tasks: list[TaskStats] = field(default_factory=list)
    seconds: float = 0.0
    stopped_for_time: bool = False

    @property
    def trials(self) -> int:
        return sum(t.trials for t in self.tasks)

    @property
    def valid(self) -> int:
        return sum(t.valid for t in self.tasks)
