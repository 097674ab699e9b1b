"""Tune a model's kernels with MetaSchedule into a database (see README.md)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tvm
from tvm.s_tir import Schedule
from tvm.s_tir.analysis import estimate_tir_flops

from hwcompile.errors import TuningError
from hwcompile.model import Model
from hwcompile.target import Target

from .budget import Budget, ProgressAndDeadline, TuneReport
from .builder import WarmBuilder
from .database import open_database
from .intrinsics import register_for
from .kernels import reduction_blocks
from .rpc import RpcDevice, check_tracker
from .runner import make_runner
from .seed import seed_default_schedules


def _task_logger(db_dir: str | Path, index: int, task: Any) -> logging.Logger:
    """A per-task log file in DB/logs. MetaSchedule's own logger setup prints every trial
    to stdout and breaks on a second tuning run in one process under pytest."""
    logger = logging.getLogger(f"hwcompile.tune.task{index}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    log_dir = Path(db_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / f"task_{index:02d}_{task.task_name[:100]}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    return logger


def _is_tunable(task: Any, target: Target) -> bool:
    """Kernels with a reduction (conv, matmul, pooling) that the target does not keep on its
    default schedule; elementwise ones keep the defaults."""
    kernel = task.dispatched[0]
    return bool(reduction_blocks(Schedule(kernel))) and not target.keeps_default(kernel)


def tune_model(model: Model, target: Target, db_dir: str | Path, budget: Budget,
               rpc: RpcDevice | None = None, build_timeout_s: float = 60.0,
               progress: Callable[[str], None] | None = None, seed: int = 0,
               seed_defaults: bool = True) -> TuneReport:
    """Tune ``model``'s kernels for ``target`` (a tunable Target, see hwcompile/target.py)
    and add the records to the database in ``db_dir``. ``seed_defaults`` measures and
    records the target's default schedules first, so the database never picks a slower
    kernel."""
    from tvm.s_tir import meta_schedule as ms

    say = progress or (lambda message: None)
    budget.check()
    if target.tvm_target is None:
        raise TuningError(f"target '{target.name}' has no tunable kernels")
    if rpc is not None:
        check_tracker(rpc)
    elif not tvm.device(target.device, 0).exist:
        raise TuningError(f"tuning for {target.name} measures candidates on a {target.device} "
                          "device and this machine has none; tune where one is, or reach one "
                          "with --rpc-tracker/--rpc-key")
    start = time.monotonic()
    tvm_target = target.tvm_target
    database = open_database(db_dir, tvm_target, create=True)
    mod = target.tunable_module(model.bound_module())
    extracted = [t for t in ms.relax_integration.extract_tasks(mod, tvm_target)
                 if _is_tunable(t, target)]
    if not extracted:
        raise TuningError("the model has no kernel to tune: none with a reduction (conv, matmul, "
                          "pooling) that the target does not keep on its default schedule")
    # Biggest kernels first: when the time budget runs out, they matter most.
    extracted.sort(key=lambda t: -estimate_tir_flops(t.dispatched[0]) * t.weight)
    names = [t.task_name for t in extracted]
    say(f"{len(extracted)} tasks to tune: {', '.join(names)}")
    cores = int(tvm_target.attrs.get("num-cores", 1)) if tvm_target.kind.name == "llvm" else 1
    intrinsics = target.tensor_intrinsics
    if intrinsics:
        register_for(intrinsics)  # before TuneContext, whose own import would load them all
    # A smaller population than MetaSchedule's default (512 × 4 generations): on two cores
    # the search itself would otherwise take longer than measuring.
    strategy = ms.search_strategy.EvolutionarySearch(population_size=256, genetic_num_iters=2)
    contexts = [ms.TuneContext(mod=task.dispatched[0], target=task.target,
                               space_generator="post-order-apply", search_strategy=strategy,
                               task_name=task.task_name, logger=_task_logger(db_dir, i, task),
                               rand_state=seed + i, num_threads=max(1, cores)).clone()
                for i, task in enumerate(extracted)]
    weights = [float(task.weight) for task in extracted]
    # Without a per-task budget every task gets its share, so none is starved.
    per_task = budget.trials_per_task or max(1, -(-budget.trials // len(extracted)))
    callback = ProgressAndDeadline(names, start + budget.seconds if budget.seconds else None, say)
    builder = WarmBuilder(workers=max(1, cores), timeout_s=build_timeout_s, intrinsics=intrinsics)
    runner = make_runner(rpc)
    try:
        if seed_defaults:  # the target's default schedules as measured baseline records
            defaults = seed_default_schedules(extracted, database, builder, runner, target, say)
            for name, seconds in defaults.items():
                say(f"default schedule of {name}: {seconds * 1e3:.4f} ms")
                callback.stats[names.index(name)].default_s = seconds
        ms.tune_tasks(
            tasks=contexts, task_weights=weights, work_dir=str(db_dir),
            max_trials_global=budget.trials, max_trials_per_task=per_task,
            num_trials_per_iter=min(16, per_task, budget.trials),
            builder=builder, runner=runner, database=database, cost_model="xgb",
            measure_callbacks=[*ms.MeasureCallback.create("default"), callback],
            task_scheduler="round-robin")
    finally:
        builder.shutdown()
    report = TuneReport(str(db_dir), callback.stats, time.monotonic() - start,
                        callback.stopped_for_time)
    if report.valid == 0:
        reason = next((t.first_error for t in report.tasks if t.first_error), "no trial ran")
        raise TuningError(f"tuning produced no valid measurement in {report.trials} trials "
                          f"(first error: {reason}); the database has nothing to apply")
    return report
