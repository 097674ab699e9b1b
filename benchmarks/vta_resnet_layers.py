"""Benchmark: ResNet-18 conv layers C2–C11 compiled for VTA, default tiling vs tuned.

For each layer: the compiler path's program (int8 conv, >> 8, + bias, clip [0, 127]) under
the default tiling and under the tile tuner, scored by the cycle model (cycles, GEMM
utilization, latency at the board clock), each checked bit-exact against numpy in the
simulator. Tuning results go to a database file that later compiles reuse.

    python benchmarks/vta_resnet_layers.py [--config pynq] [--db out/vta_tuning.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hwcompile.targets.vta.config import load_config
from hwcompile.targets.vta.cycle_model import estimate
from hwcompile.targets.vta.lower import AluStep, LayerSpec, default_plan, lower
from hwcompile.targets.vta.qgraph import RESNET18_CONVS
from hwcompile.targets.vta.runtime import register, run_sample
from hwcompile.targets.vta.tune import TuningDatabase


def reference(x, w, bias, stride, pad):
    _, h, _ = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - k) // stride + 1
    acc = np.zeros((o, oh, oh))
    for i in range(k):
        for j in range(k):
            acc += np.einsum("chw,oc->ohw", xp[:, i:i + stride * oh:stride, j:j + stride * oh:stride],
                             w[:, :, i, j].astype(np.float64))
    return np.clip((acc.astype(np.int64) >> 8) + bias[:, None, None], 0, 127).astype(np.int8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pynq")
    parser.add_argument("--db", default="out/vta_tuning.json")
    parser.add_argument("--limit", type=int, default=None, help="candidates scored per layer")
    args = parser.parse_args()
    cfg = load_config(args.config)
    db = TuningDatabase(args.db)
    rng = np.random.default_rng(0)
    totals = {"default": 0, "tuned": 0}
    print(f"config {cfg.target} ({cfg.bitstream}, {cfg.clock_mhz:g} MHz)")
    print("layer  MMACs  default cycles  util  | tuned cycles  util  speedup  plan  tried  "
          "tune s  exact")
    for wl in RESNET18_CONVS:
        x = rng.integers(-128, 128, (wl.cin, wl.size, wl.size)).astype(np.int8)
        w = rng.integers(-128, 128, (wl.cout, wl.cin, wl.kernel, wl.kernel)).astype(np.int8)
        bias = rng.integers(-64, 64, wl.cout).astype(np.int32)
        spec = LayerSpec((wl.cin, wl.size, wl.size), w, (wl.stride,) * 2, (wl.pad,) * 4,
                         [AluStep("shr", imm=8), AluStep("add", vector=0),
                          AluStep("max", imm=0), AluStep("min", imm=127)], [bias], name=wl.name)
        base = estimate(lower(spec, default_plan(spec, cfg), cfg).program.instructions, cfg)
        t0 = time.perf_counter()
        result = db.best(spec, cfg, search=True, limit=args.limit)
        tune_s = time.perf_counter() - t0
        tuned_prog = lower(spec, result.plan, cfg)
        tuned = estimate(tuned_prog.program.instructions, cfg)
        got = run_sample(register(-1, tuned_prog), x, [])
        exact = bool(np.array_equal(got, reference(x, w, bias, wl.stride, wl.pad)))
        totals["default"] += base.total_cycles
        totals["tuned"] += tuned.total_cycles
        p = result.plan
        print(f"{wl.name:5s} {spec.macs / 1e6:6.1f}  {base.total_cycles:14,d}  "
              f"{base.gemm_utilization:5.1%} | {tuned.total_cycles:12,d}  "
              f"{tuned.gemm_utilization:5.1%}  {base.total_cycles / tuned.total_cycles:6.2f}x  "
              f"th{p.th} tw{p.tw} oc{p.toc} ic{p.tic} v{p.vthreads} {p.order}  "
              f"{result.tried:4d}{' (db)' if result.cached else ''}  {tune_s:6.1f}  {exact}")
    db.save()
    ms = {k: v / (cfg.clock_mhz * 1e3) for k, v in totals.items()}
    print(f"total  default {totals['default']:,d} cycles ({ms['default']:.2f} ms)  tuned "
          f"{totals['tuned']:,d} cycles ({ms['tuned']:.2f} ms)  "
          f"{totals['default'] / totals['tuned']:.2f}x; database {args.db}")


if __name__ == "__main__":
    main()
