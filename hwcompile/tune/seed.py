"""Measure each task's default schedule (``Target.default_schedule``) and record it in the
tuning database.

The database's best record per kernel is then never slower than what an untuned compile
builds (so ``compile --db`` cannot lose to the defaults), and the evolutionary search
starts from a good candidate instead of random samples only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm.s_tir import meta_schedule as ms

from hwcompile.target import Target


def seed_default_schedules(tasks: list[Any], database: Any, builder: Any, runner: Any,
                           target: Target, say: Callable[[str], None]) -> dict[str, float]:
    """Seconds of the default schedule per task name (tasks it cannot schedule are left out)."""
    entries = []
    for task in tasks:
        sch = target.default_schedule(task.dispatched[0])
        if sch is not None:
            entries.append((task, sch))
    if not entries:
        return {}
    tvm_target = target.tvm_target
    built = builder.build([ms.builder.BuilderInput(sch.mod, tvm_target) for _, sch in entries])
    runs: list[Any] = []
    for (task, sch), result in zip(entries, built):
        if result.error_msg:
            runs.append(result.error_msg)
            continue
        args = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
        runs.append(runner.run([ms.runner.RunnerInput(result.artifact_path, target.device, args)])[0])
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
            sch.trace, workload, [float(s) for s in result.run_secs], tvm_target, args))
        latencies[task.task_name] = sum(float(s) for s in result.run_secs) / len(result.run_secs)
    return latencies

