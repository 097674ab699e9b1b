"""Measured CPU speed-up of 50% structured channel pruning (issue 3 acceptance).

Both models are compiled the same way (same passes apart from ``prune``, same target,
default schedules) and timed with hwcompile.bench in one run; the ratio is what counts.
The pruned model keeps channel counts at the target's channel multiple (round_to default).

    .venv/bin/python benchmarks/prune_cpu.py [--image 64] [--repeat 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import hwcompile
from hwcompile.bench import bench_artifact
from hwcompile.models import zoo
from hwcompile.models.digits import ensure_digits_model

ROOT = Path(__file__).resolve().parents[1]
BASE = "fold-constants,fold-batchnorm,dce"


def measure(name: str, model, work: Path, ratio: float, repeat: int) -> dict:
    row = {"model": name}
    for label, passes in (("unpruned", BASE), ("pruned", f"prune(ratio={ratio}),{BASE}")):
        art = hwcompile.compile(model, "cpu", work / f"{name}-{label}", passes=passes)
        stats = bench_artifact(art, repeat=repeat, warmup=3)
        meta = hwcompile.load(art).metadata
        row[label] = {"median_ms": stats["median_ms"], **meta["figures"]["compiled"]}
    row["speedup"] = row["unpruned"]["median_ms"] / row["pruned"]["median_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=int, default=64, help="ResNet-18 input size")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    digits = ensure_digits_model(ROOT / "examples" / "digits" / "digits_cnn.onnx")
    resnet = zoo.resnet18_shaped(batch=1, image=args.image, num_classes=1000)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure("digits_cnn (batch 1)", digits, Path(tmp), args.ratio, args.repeat),
                measure(f"resnet18_shaped (1x3x{args.image}x{args.image})", resnet, Path(tmp),
                        args.ratio, args.repeat)]
    print("| model | unpruned ms | pruned ms | speed-up | MACs unpruned -> pruned | params unpruned -> pruned |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        u, p = r["unpruned"], r["pruned"]
        print(f"| {r['model']} | {u['median_ms']:.3f} | {p['median_ms']:.3f} | {r['speedup']:.2f}x | "
              f"{u['macs']:,} -> {p['macs']:,} | {u['params']:,} -> {p['params']:,} |")


if __name__ == "__main__":
    main()
