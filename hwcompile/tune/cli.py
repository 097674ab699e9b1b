"""``hwcompile tune``: tune a model's kernels into a database that ``compile --db`` applies."""

from __future__ import annotations

import argparse

DEFAULT_TRIALS = 64


def add_rpc_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpc-tracker", metavar="HOST:PORT",
                        help="measure on a device registered at this TVM RPC tracker")
    parser.add_argument("--rpc-key", help="the device key registered at the tracker")


def rpc_device(args: argparse.Namespace):  # -> RpcDevice | None
    from .rpc import RpcDevice

    if args.rpc_tracker is None:
        if args.rpc_key:
            from hwcompile.errors import TuningError

            raise TuningError("--rpc-key needs --rpc-tracker HOST:PORT")
        return None
    return RpcDevice.parse(args.rpc_tracker, args.rpc_key)


def cmd_tune(args: argparse.Namespace) -> int:
    from hwcompile.driver import DEFAULT_PASSES
    from hwcompile.frontend import import_onnx, parse_input_shapes
    from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
    from hwcompile.progress import say
    from hwcompile.target import resolve_target

    from .budget import Budget, parse_duration
    from .tuner import tune_model

    budget = Budget(args.trials, args.trials_per_task,
                    parse_duration(args.tune_time) if args.tune_time else None)
    budget.check()  # before the (slow) import, so a bad budget fails at once
    rpc = rpc_device(args)
    target = resolve_target(args.target)
    model = import_onnx(args.model, input_shapes=parse_input_shapes(args.input_shape or []))
    # The same passes as `compile`, so the tuned kernels are the ones compile will build.
    model, _ = run_pipeline(model, parse_spec(DEFAULT_PASSES if args.passes is None else args.passes),
                            PassContext(constraints=target.constraints, progress=say))
    report = tune_model(model, target, args.db, budget, rpc=rpc, progress=say)
    print(f"tuned {len(report.tasks)} tasks: {report.valid}/{report.trials} valid trials in "
          f"{report.seconds:.0f} s{' (stopped by --tune-time)' if report.stopped_for_time else ''}; "
          f"database {args.db}")
    for task in report.tasks:
        best = f"{task.best_s * 1e3:.4f} ms" if task.best_s is not None else "no valid trial"
        default = f", default schedule {task.default_s * 1e3:.4f} ms" if task.default_s else ""
        print(f"  {task.name}: {task.valid}/{task.trials} valid, best {best}{default}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune a model's kernels (MetaSchedule) into a database")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--target", "-t", default="cpu", help="as for compile")
    p.add_argument("--db", required=True, metavar="DIR",
                   help="tuning database directory (created, or resumed if it exists)")
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                   help=f"measured candidates for the whole model (default {DEFAULT_TRIALS})")
    p.add_argument("--trials-per-task", type=int,
                   help="cap per kernel (default: the model's budget shared evenly)")
    p.add_argument("--tune-time", metavar="DURATION", help="wall-time budget, e.g. 90s, 10m, 1h")
    p.add_argument("--passes", help="pass spec; must match the one compile will use")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224")
    add_rpc_arguments(p)
    p.set_defaults(func=cmd_tune)
