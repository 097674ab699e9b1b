"""Untuned vs tuned CPU artifacts vs onnxruntime, same machine, same threads, one run.

    .venv/bin/python benchmarks/tune_cpu.py [--trials 64] [--tune-time 10m] [--threads 2]
        [--models digits,resnet18_112] [--resnet-image 112] [--repeat 50] [--db-root DIR]

For each model: compile without tuning (heuristic default schedules), tune into
DB_ROOT/<model> (resumed if it exists), compile with the database, then time all three and
onnxruntime back to back (median of --repeat calls, batch 1). Prints a Markdown table for
benchmarks/RESULTS.md with the machine, date, budget and command.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_vs_onnxruntime import machine, models

import hwcompile
from hwcompile.bench import set_threads, summarize, time_calls
from hwcompile.inputs import random_inputs
from hwcompile.tune.budget import Budget, parse_duration


def _median_ms(fn, repeat: int) -> float:
    return summarize(time_calls(fn, repeat, warmup=5))["median_ms"]


def bench(name: str, proto: onnx.ModelProto, args: argparse.Namespace, workdir: Path) -> dict:
    import onnxruntime as ort

    from hwcompile.driver import DEFAULT_PASSES
    from hwcompile.frontend import import_onnx
    from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
    from hwcompile.target import resolve_target
    from hwcompile.tune.tuner import tune_model

    shapes = {i.name: tuple(d.dim_value or 1 for d in i.type.tensor_type.shape.dim)
              for i in proto.graph.input}
    untuned = hwcompile.compile(proto, "cpu", workdir / f"{name}_untuned", input_shapes=shapes)
    target = resolve_target("cpu")
    model, _ = run_pipeline(import_onnx(proto, input_shapes=shapes), parse_spec(DEFAULT_PASSES),
                            PassContext(constraints=target.constraints))
    db = Path(args.db_root) / name
    start = time.monotonic()
    report = tune_model(model, target, db, Budget(args.trials, None,
                        parse_duration(args.tune_time) if args.tune_time else None),
                        progress=lambda m: print(f"  [{name}] {m}", file=sys.stderr, flush=True))
    tune_s = time.monotonic() - start
    tuned = hwcompile.compile(proto, "cpu", workdir / f"{name}_tuned", input_shapes=shapes, db=db)
    feeds = random_inputs(hwcompile.load(untuned).inputs, seed=0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)[0]
    row = {"model": name, "trials": report.trials, "valid": report.valid, "tune_s": tune_s}
    for label, art in (("untuned", untuned), ("tuned", tuned)):
        compiled = hwcompile.load(art)
        dev = compiled.to_device(feeds)
        row[f"{label}_ms"] = _median_ms(lambda c=compiled, d=dev: c.invoke(d), args.repeat)
        err = np.abs(compiled(**feeds) - want).max() / max(1.0, np.abs(want).max())
        row[f"{label}_err"] = float(err)
    row["ort_ms"] = _median_ms(lambda: session.run(None, feeds), args.repeat)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--tune-time", help="wall-time budget per model, e.g. 10m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--models", default="digits,resnet18_112")
    parser.add_argument("--resnet-image", type=int, default=112)
    parser.add_argument("--db-root", default="build/tune_db", help="databases, one per model")
    args = parser.parse_args()
    args.threads = set_threads(args.threads)
    chosen = {k: v for k, v in models(args.resnet_image).items() if k in args.models.split(",")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, proto in chosen.items():
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append(bench(name, proto, args, Path(tmp)))
    print(f"\nMachine: {machine()}; {args.threads} threads for all; batch 1; median of {args.repeat}")
    print(f"Date: {datetime.date.today()}; command: "
          f"`.venv/bin/python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`\n")
    print("| model | onnxruntime ms | untuned ms | untuned / ort | tuned ms | tuned / ort | "
          "trials (valid) | tuning s | max rel err untuned / tuned |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['ort_ms']:.3f} | {r['untuned_ms']:.3f} | "
              f"{r['untuned_ms'] / r['ort_ms']:.2f}× | {r['tuned_ms']:.3f} | "
              f"{r['tuned_ms'] / r['ort_ms']:.2f}× | {r['trials']} ({r['valid']}) | "
              f"{r['tune_s']:.0f} | {r['untuned_err']:.1e} / {r['tuned_err']:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
