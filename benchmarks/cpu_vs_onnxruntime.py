"""CPU artifact latency vs onnxruntime, same machine, same thread count, one run.

    .venv/bin/python benchmarks/cpu_vs_onnxruntime.py [--threads 2] [--repeat 50]
        [--rounds 3] [--models digits,mlp,...] [--resnet-image 112] [--passes SPEC]

Prints a Markdown table (batch 1; each runner timed in its own block of --repeat calls after
warm-up, blocks alternated --rounds times, best block median: benchmarks/_timing.py) ready
for benchmarks/RESULTS.md, with the machine, date and command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from _timing import alternating_blocks, ort_session

import hwcompile
from hwcompile.bench import set_threads
from hwcompile.frontend import import_onnx
from hwcompile.graph import total_macs
from hwcompile.inputs import random_inputs
from hwcompile.models import zoo
from hwcompile.models.digits import ensure_digits_model

ROOT = Path(__file__).resolve().parents[1]


def models(resnet_image: int) -> dict[str, onnx.ModelProto]:
    digits = onnx.load(ensure_digits_model(ROOT / "examples" / "digits" / "digits_cnn.onnx"))
    return {
        "digits": digits,
        "mlp": zoo.mlp(),
        "depthwise_grouped_cnn": zoo.depthwise_grouped_cnn(),
        f"resnet18_{resnet_image}": zoo.resnet18_shaped(batch=1, image=resnet_image),
    }


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return f"{cpu}, {os.cpu_count()} cores"


def bench_model(name: str, proto: onnx.ModelProto, threads: int, repeat: int, passes: str | None,
                workdir: Path, rounds: int = 3) -> dict:
    shapes = {i.name: tuple(d.dim_value or 1 for d in i.type.tensor_type.shape.dim)
              for i in proto.graph.input}
    art = hwcompile.compile(proto, "cpu", workdir / name, passes=passes, input_shapes=shapes)
    compiled = hwcompile.load(art)
    feeds = random_inputs(compiled.inputs, seed=0)
    device_inputs = compiled.to_device(feeds)
    session = ort_session(proto, threads)
    stats = alternating_blocks({"ours": lambda: compiled.invoke(device_inputs),
                                "ort": lambda: session.run(None, feeds)}, repeat, rounds, warmup=5)
    ours, ref = stats["ours"], stats["ort"]
    want = session.run(None, feeds)[0]
    err = float(np.abs(compiled(**feeds) - want).max() / max(1.0, np.abs(want).max()))
    macs = total_macs(import_onnx(proto, input_shapes=shapes))
    return {"model": name, "macs": macs, "ours_ms": ours["median_ms"], "ort_ms": ref["median_ms"],
            "ratio": ours["median_ms"] / ref["median_ms"], "rel_err": err}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks per runner")
    parser.add_argument("--models", help="comma-separated subset")
    parser.add_argument("--resnet-image", type=int, default=112)
    parser.add_argument("--passes", default=None, help="pass spec (default pipeline if omitted)")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    chosen = models(args.resnet_image)
    if args.models:
        chosen = {k: v for k, v in chosen.items() if k in args.models.split(",")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, proto in chosen.items():
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            rows.append(bench_model(name, proto, threads, args.repeat, args.passes, Path(tmp),
                                    args.rounds))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT, check=False).stdout.strip()
    print(f"\nMachine: {machine()}; {threads} threads for both; batch 1; best median of "
          f"{args.rounds} alternating blocks of {args.repeat}")
    print(f"Date: {datetime.date.today()}; commit {commit}; command: "
          f"`.venv/bin/python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`\n")
    print("| model | MMACs | hwcompile ms | onnxruntime ms | hwcompile / ort | max rel err |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['macs'] / 1e6:.2f} | {r['ours_ms']:.3f} | {r['ort_ms']:.3f} | "
              f"{r['ratio']:.2f}× | {r['rel_err']:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
