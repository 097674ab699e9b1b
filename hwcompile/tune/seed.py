"""Measure each task's heuristic default schedule and record it in the tuning database.

The database's best record per kernel is then never slower than what an untuned compile
builds (so ``compile --db`` cannot lose to the defaults), and the evolutionary search
starts from a good candidate instead of random samples only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms

from .defaults import heuristic_schedule


def seed_default_schedules(tasks: list[Any], database: Any, builder: Any, runner: Any,
                           target: tvm.target.Target, lanes: int,
                           say: Callable[[str], None]) -> dict[str, float]:
    """Seconds of the default schedule per task name (tasks it cannot schedule are left out)."""
    entries = []
    for task in tasks:
        sch = heuristic_schedule(task.dispatched[0], lanes)
        if sch is not None:
            entries.append((task, sch))
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch in entries])
    runs: list[Any] = []
    for (task, sch), result in zip(entries, built):
        if result.error_msg:
            runs.append(result.error_msg)
            continue
        args = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
        runs.append(runner.run([ms.runner.RunnerInput(result.artifact_path, _device_type(target), args)])[0])
    latencies = {}
    for (task, sch), future in zip(entries, runs):
        result = future.result() if not isinstance(future, str) else None
        error = future if result is None else result.error_msg
        if error:
            say(f"default schedule of {task.task_name} failed ({error.strip().splitlines()[-1][:200]}); "
                "tuning starts without it")
            continue
        workload = database.commit_workload(task.dispatched[0])
        args = ms.arg_info.ArgInfo.from_entry_func(task.dispatched[0], remove_preproc=True)
        database.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, workload, [float(s) for s in result.run_secs], target, args))
        latencies[task.task_name] = sum(float(s) for s in result.run_secs) / len(result.run_secs)
    return latencies


def _device_type(target: tvm.target.Target) -> str:
    return "cpu" if target.kind.name == "llvm" else target.kind.name
