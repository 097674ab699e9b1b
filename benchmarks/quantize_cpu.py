"""int8 vs float latency of CPU artifacts (untuned default schedules), same run, same machine.

    .venv/bin/python benchmarks/quantize_cpu.py [--image 64] [--repeat 20] [--breakdown]
        [--mcpu haswell]

Models: the digits example CNN (batch 1 and 32) and the ResNet-18 topology at ``--image``
(batch 1). Each is compiled twice from the same ONNX: the default folding passes, and the
same plus ``quantize`` (calibration: 64 real digits / 16 random images). ``--mcpu`` compiles
both for another CPU model this host can run (``haswell``: AVX2 without VNNI, the int8 code
such a machine gets). ``--breakdown`` times every kernel of the int8 and float ResNet-18 (VirtualMachine instrument) to show where
the time goes. Prints a Markdown table; ratios compare figures measured in this run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import kernel_times, top_kernels

import hwcompile
from hwcompile.bench import set_threads, summarize, time_calls
from hwcompile.inputs import random_inputs
from hwcompile.models import zoo
from hwcompile.models.digits import ensure_digits_model, load_split

ROOT = Path(__file__).resolve().parents[1]
FLOAT = "fold-constants,fold-batchnorm,dce"


def measure(art: Path, feeds: dict, repeat: int) -> dict:
    model = hwcompile.load(art)
    inputs = model.to_device(feeds)
    return summarize(time_calls(lambda: model.invoke(inputs), repeat, warmup=3))


def kernel_breakdown(art: Path, feeds: dict, top: int = 8) -> list[tuple[str, float]]:
    """Milliseconds per kernel name in one call (_timing.kernel_times), largest first."""
    model = hwcompile.load(art)
    profile = kernel_times(model, model.to_device(feeds), calls=1)
    times = {**profile["kernels"], **profile["builtins"]}
    return [(k["kernel"], k["ms"]) for k in top_kernels(times, top)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--mcpu", help="LLVM CPU model to compile for (default: this host's)")
    args = parser.parse_args()
    target = "cpu" if not args.mcpu else (
        f'cpu:{{"kind": "llvm", "mcpu": "{args.mcpu}", "num-cores": {len(os.sched_getaffinity(0))}}}')
    threads = set_threads(None)
    x_train, _, _, _ = load_split()
    digits = ensure_digits_model(ROOT / "examples" / "digits" / "digits_cnn.onnx")
    resnet = zoo.resnet18_shaped(batch=1, image=args.image, num_classes=10)
    rng = np.random.default_rng(0)
    cases = [("digits CNN", digits, {"input": x_train[:64]}, (1, 32)),
             (f"ResNet-18 {args.image}x{args.image}", resnet,
              {"input": rng.standard_normal((16, 1, 3, args.image, args.image)).astype(np.float32)},
              (1,))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, proto, calib, batches in cases:
            arts = {}
            for kind, passes in (("float", FLOAT), ("int8", FLOAT + ",quantize")):
                start = time.perf_counter()
                arts[kind] = hwcompile.compile(proto, target, Path(tmp) / f"{name}-{kind}".replace(" ", "_"),
                                               passes=passes, calibration=calib)
                print(f"{name} {kind}: compiled in {time.perf_counter() - start:.1f} s", flush=True)
            spec = hwcompile.load(arts["float"]).inputs
            for batch in batches:
                feeds = random_inputs(spec, seed=1, batch=batch)
                f = measure(arts["float"], feeds, args.repeat)
                q = measure(arts["int8"], feeds, args.repeat)
                rows.append((name, batch, f["median_ms"], q["median_ms"]))
                print(rows[-1], flush=True)
            if args.breakdown and name.startswith("ResNet"):
                feeds = random_inputs(spec, seed=1)
                for kind in ("float", "int8"):
                    print(f"\n{name} {kind}: slowest kernels (ms, one call)")
                    for kernel, ms in kernel_breakdown(arts[kind], feeds):
                        print(f"  {ms:9.2f}  {kernel}")
    print(f"\n{threads} threads, untuned default schedules, median of {args.repeat} runs, "
          f"target {target}\n")
    print("| model | batch | float ms | int8 ms | int8 / float |")
    print("|---|---|---|---|---|")
    for name, batch, f_ms, q_ms in rows:
        print(f"| {name} | {batch} | {f_ms:.2f} | {q_ms:.2f} | {q_ms / f_ms:.2f} |")


if __name__ == "__main__":
    main()
