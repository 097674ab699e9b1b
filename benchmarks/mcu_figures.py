"""Runtime-free C (--emit c-standalone) on microcontrollers: flash, RAM and instruction
counts of the digits CNN (float32, int8) and the corpus MobileNetV3-small on Cortex-M3 and
Cortex-M4F, built with arm-none-eabi-gcc -Os and run under QEMU (mps2-an385/an386).

    .venv/bin/python benchmarks/mcu_figures.py [--samples 10] [--out build/mcu_figures]

Flash and RAM come from the linker map (every input section attributed to the model's
kernels, weights, glue, the library routines it pulls in, or the example program); the
stack from a painted stack after the runs; instructions per inference from QEMU's -icount
(QEMU does not model cycles: on these in-order cores cycles are roughly instructions plus
memory and branch stalls). Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "embed_c" / "mcu"))

import mcu  # the example's build-and-run helper

import hwcompile

CORES = ("cortex-m3", "cortex-m4f")


def artifacts(out: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """name -> (artifact, samples): compiled once, reused by later runs."""
    from hwcompile.models.digits import ensure_digits_model, load_split

    digits = ensure_digits_model(ROOT / "examples" / "digits" / "digits_cnn.onnx")
    x_train = load_split()[0]
    shape = {"input": (1, 1, 8, 8)}
    specs = {
        "digits float32": {"model": digits, "input_shapes": shape, "name": "digits"},
        "digits int8": {"model": digits, "input_shapes": shape, "name": "digits_int8",
                        "passes": "fold-constants,fold-batchnorm,quantize",
                        "calibration": {"input": x_train[:512].reshape(512, 1, 1, 8, 8)}},
        "MobileNetV3-small 64x64 float32": {
            "model": ROOT / "tests" / "corpus" / "models" / "mobilenetv3_small.onnx",
            "input_shapes": {"image": (1, 3, 64, 64)}, "name": "mobilenet"},
    }
    result = {}
    for label, spec in specs.items():
        art = out / spec["name"]
        if not (art / "metadata.json").is_file():
            started = time.perf_counter()
            hwcompile.compile(spec["model"], "cpu", art, input_shapes=spec["input_shapes"],
                              passes=spec.get("passes"), calibration=spec.get("calibration"),
                              emit=["c-standalone"], emit_options={"name": spec["name"]})
            print(f"compiled {label} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        result[label] = art
    return result


def samples_for(model: mcu.Model, count: int) -> np.ndarray:
    shape = [int(d) for d in model.macros[f"{model.name.upper()}_INPUT0_SHAPE"]
             .strip("{}").split(",")]
    if shape == [1, 1, 8, 8]:
        return mcu.digits_images(count)
    return np.random.default_rng(0).uniform(-1, 1, (count, *shape)).astype(np.float32)


def table(rows: list[dict]) -> str:
    lines = [("| model | core | kernels | weights | glue | library | flash total | overhead "
              "| arena | stack (header est.) | RAM total | instructions / inference |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        f, ram = r["flash"], r["ram"]
        lines.append(
            f"| {r['label']} | {r['core']} | {f['kernels']:,} | {f['weights']:,} | "
            f"{f['glue']:,} | {f['library']:,} | {f['total']:,} | {f['overhead']:,} | "
            f"{ram['arena']:,} | {ram['stack']:,} ({r['header']['stack_estimate']:,}) | "
            f"{ram['arena'] + ram['other'] + ram['stack']:,} | "
            f"{r['instructions_per_run']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--out", default="build/mcu_figures")
    args = parser.parse_args(argv)
    reason = mcu.missing_tools()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    out = Path(args.out)
    rows = []
    for label, art in artifacts(out).items():
        model = mcu.Model.from_artifact(art)
        samples = samples_for(model, args.samples)
        for core in CORES:
            fig = mcu.figures(model, samples, out / "build" / f"{model.name}-{core}", core)
            fig.pop("outputs")
            assert fig["ram"]["arena"] == fig["header"]["arena"]
            assert fig["flash"]["weights"] == fig["header"]["weights"]
            rows.append({"label": label, **fig})
    (out / "figures.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
