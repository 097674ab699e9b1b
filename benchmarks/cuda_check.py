"""One-shot GPU check for a session with an NVIDIA GPU: numerics and latency of CUDA
artifacts vs onnxruntime (CPU), fp32 and mixed precision, optionally tuned.

    .venv/bin/python benchmarks/cuda_check.py [--models digits,resnet18_112] [--repeat 100]
        [--tune-trials 0] [--out benchmarks/RESULTS.md]

Exits non-zero if any fp32 output differs from onnxruntime by more than 1e-3 (relative to
the output's magnitude). Without a GPU it says so and exits 2.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_vs_onnxruntime import machine, models

import hwcompile
from hwcompile.inputs import random_inputs

MIXED = "fold-constants,fold-batchnorm,dce,mixed-precision"


def gpu_name() -> str:
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else "unknown GPU"


def gpu_median_ms(compiled, feeds, repeat: int) -> float:
    """Median per-call time with the device synchronized after every call."""
    dev = compiled.to_device(feeds)
    for _ in range(10):
        compiled.invoke(dev)
    compiled.device.sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        compiled.invoke(dev)
        compiled.device.sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def check(name, proto, args, workdir: Path) -> list[dict]:
    import onnxruntime as ort

    shapes = {i.name: tuple(d.dim_value or 1 for d in i.type.tensor_type.shape.dim)
              for i in proto.graph.input}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = []
    variants = [("fp32", None, None), ("mixed fp16", MIXED, None)]
    if args.tune_trials:
        from hwcompile.driver import DEFAULT_PASSES
        from hwcompile.frontend import import_onnx
        from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
        from hwcompile.target import resolve_target
        from hwcompile.tune.budget import Budget
        from hwcompile.tune.tuner import tune_model

        target = resolve_target("cuda")
        model, _ = run_pipeline(import_onnx(proto, input_shapes=shapes), parse_spec(DEFAULT_PASSES),
                                PassContext(constraints=target.constraints))
        db = workdir / f"{name}_db"
        tune_model(model, target, db, Budget(args.tune_trials), progress=print)
        variants.append((f"fp32 tuned ({args.tune_trials} trials)", None, db))
    for label, passes, db in variants:
        art = hwcompile.compile(proto, "cuda", workdir / f"{name}_{len(rows)}", passes=passes,
                                input_shapes=shapes, db=db)
        compiled = hwcompile.load(art)
        feeds = random_inputs(compiled.inputs, seed=0)
        want = session.run(None, feeds)[0]
        err = float(np.abs(compiled(**feeds) - want).max() / max(1.0, np.abs(want).max()))
        rows.append({"model": name, "variant": label, "err": err,
                     "ms": gpu_median_ms(compiled, feeds, args.repeat),
                     "ort_ms": float(np.median([_time(session, feeds) for _ in range(args.repeat)]))})
    return rows


def _time(session, feeds) -> float:
    start = time.perf_counter()
    session.run(None, feeds)
    return (time.perf_counter() - start) * 1e3


def main() -> int:
    import tvm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,resnet18_112")
    parser.add_argument("--resnet-image", type=int, default=112)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--tune-trials", type=int, default=0)
    parser.add_argument("--out", help="also append the table to this Markdown file")
    args = parser.parse_args()
    if not tvm.cuda(0).exist:
        print("no CUDA GPU on this machine: nothing to check (CUDA artifacts still compile; "
              "see tests/test_cuda.py)", file=sys.stderr)
        return 2
    chosen = {k: v for k, v in models(args.resnet_image).items() if k in args.models.split(",")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, proto in chosen.items():
            rows.extend(check(name, proto, args, Path(tmp)))
    arch = hwcompile.target.resolve_target("cuda").arch
    command = f".venv/bin/python benchmarks/cuda_check.py {' '.join(sys.argv[1:])}"
    lines = [f"GPU: {gpu_name()} (arch {arch}); host: {machine()}; batch 1; median of {args.repeat}",
             f"Date: {datetime.date.today()}; command: `{command}`", "",
             "| model | variant | GPU ms | onnxruntime CPU ms | max rel err vs onnxruntime |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['variant']} | {r['ms']:.3f} | {r['ort_ms']:.3f} | {r['err']:.1e} |"
              for r in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as out:
            out.write("\n" + text + "\n")
    bad = [r for r in rows if r["variant"].startswith("fp32") and r["err"] > 1e-3]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
