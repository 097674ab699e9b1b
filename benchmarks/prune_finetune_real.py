"""Iterative prune → fine-tune on a real corpus CNN: held-out accuracy, size and latency per
iteration.

    .venv/bin/python benchmarks/prune_finetune_real.py [--ratio 0.45] [--steps 3]
        [--finetune-steps 60] [--final-steps 60] [--batch 16] [--lr 0.001] [--distill]
        [--train 512] [--val 256] [--repeat 20] [--rounds 3] [--threads 2] [--json out.json]

Model: ``ppocr_mobile_v2_cls`` (PaddleOCR's text-direction classifier, paddle2onnx export,
MobileNetV3-small-style: depthwise convs, hard-swish, SE blocks), at batch 1 (1×3×48×192).
Data: text lines rendered by ``hwcompile.models.text_lines`` (labels: 0° / 180°), a
training set and a held-out set from different seeds.

Everything goes through the product path: one ``hwcompile.compile(path, "cpu", out,
passes="prune(ratio=R, steps=S, finetune_steps=K, measure=true, ...),finetune(steps=F,
...),fold-batchnorm,dce", calibration=...)``. The table's rows are the pass report: the
unpruned model, then each pruning step (held-out accuracy right after pruning and after the
fine-tuning that follows it; the last step's fine-tuning is the ``finetune`` pass), with
params, MACs, weight bytes and the batch-1 latency ``prune(measure=true)`` measured for
each step's model (hwcompile.bench medians, one after the other: noisy on a shared
machine). Then the checks that do not trust the report: onnxruntime's accuracy on the
unpruned ONNX model, the compiled pruned artifact's accuracy on the held-out set, and the
unpruned and pruned artifacts timed against onnxruntime with alternating blocks
(benchmarks/_timing.py), whose ratios are the latency figures to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "tests", Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np
from _timing import alternating_blocks, ort_session
from corpus.fetch import fetch
from corpus.manifest import BY_NAME

import hwcompile
from hwcompile.bench import set_threads
from hwcompile.models import text_lines

MODEL = "ppocr_mobile_v2_cls"
BASE = "fold-constants,fold-batchnorm,dce"


def pipeline(args: argparse.Namespace) -> str:
    tuning = f"lr={args.lr}, batch={args.batch}, distill={str(args.distill).lower()}"
    return (f"prune(ratio={args.ratio}, steps={args.steps}, finetune_steps={args.finetune_steps}, "
            f"{tuning}, measure=true, measure_repeat={args.repeat}),"
            f"finetune(steps={args.final_steps}, {tuning}),fold-batchnorm,dce")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def artifact_accuracy(art, x: np.ndarray, labels: np.ndarray) -> float:
    name = art.inputs[0].name
    predictions = [next(iter(art.run({name: sample}).values())).argmax() for sample in x]
    return float((np.array(predictions) == labels).mean())


def table(prune: dict, finetune: dict) -> str:
    lines = [("| step | ratio | held-out acc. pruned | held-out acc. fine-tuned | params | MACs | "
             "weight bytes | latency ms (bench median) |"), "|" + "---|" * 8]
    u = prune["unpruned"]
    lines.append(f"| unpruned | 0 | {u['val_accuracy']:.2%} | | {u['params']:,} | {u['macs']:,} | "
                 f"{u['weight_bytes']:,} | {u.get('latency_ms', 0):.3f} |")
    for s in prune["steps"]:
        tuned = finetune["val_accuracy"] if s is prune["steps"][-1] else s["val_accuracy"]
        lines.append(f"| {s['step']} | {s['ratio']:.3g} | {s['val_accuracy_pruned']:.2%} | "
                     f"{tuned:.2%} | {s['params']:,} | {s['macs']:,} | {s['weight_bytes']:,} | "
                     f"{s.get('latency_ms', 0):.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.45)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--final-steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--distill", action="store_true")
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--val", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    entry = BY_NAME[MODEL]
    path = fetch(entry)
    shapes = {i.name: i.shape for i in entry.inputs}
    data = text_lines.train_val(args.train, args.val)
    val_x, val_labels = data["val_x"], data["val_labels"]
    session = ort_session(str(path), threads)
    ort_accuracy = float((session.run(None, {"x": val_x[:, 0]})[0].argmax(1) == val_labels).mean())
    passes = pipeline(args)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="prune-finetune-") as tmp:
        pruned = hwcompile.load(hwcompile.compile(path, "cpu", Path(tmp) / "pruned", passes=passes,
                                                  calibration=data, input_shapes=shapes,
                                                  progress=progress))
        compile_s = time.perf_counter() - start
        unpruned = hwcompile.load(hwcompile.compile(path, "cpu", Path(tmp) / "unpruned",
                                                    passes=BASE, input_shapes=shapes))
        report = {p["pass"]: p for p in pruned.metadata["pipeline"]}
        prune, finetune = report["prune"]["details"], report["finetune"]["details"]
        accuracy = {"onnxruntime unpruned": ort_accuracy,
                    "artifact unpruned": artifact_accuracy(unpruned, val_x, val_labels),
                    "artifact pruned + fine-tuned": artifact_accuracy(pruned, val_x, val_labels)}
        sample = {"x": val_x[0]}
        times = alternating_blocks({"onnxruntime": lambda: session.run(None, sample),
                                    "unpruned": lambda: unpruned.run(sample),
                                    "pruned": lambda: pruned.run(sample)}, args.repeat, args.rounds)
    print(f"{MODEL}, {passes}")
    print(f"data: {args.train} training + {args.val} held-out text lines (hwcompile.models."
          f"text_lines); {threads} threads; compile with training {compile_s:.0f} s; "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    print()
    print(table(prune, finetune))
    print()
    for label, value in accuracy.items():
        print(f"held-out accuracy, {label}: {value:.2%}")
    ort_ms = times["onnxruntime"]["median_ms"]
    for label in ("unpruned", "pruned"):
        ms = times[label]["median_ms"]
        print(f"latency {label} artifact: {ms:.3f} ms, {ms / ort_ms:.2f}x onnxruntime "
              f"({ort_ms:.3f} ms); blocks {times[label]['block_medians_ms']}")
    print(f"pruned vs unpruned artifact: {times['unpruned']['median_ms'] / times['pruned']['median_ms']:.2f}x faster")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "passes": passes, "compile_s": compile_s, "prune": prune, "finetune": finetune,
            "accuracy": accuracy, "times": times, "threads": threads,
            "loadavg": os.getloadavg()}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
