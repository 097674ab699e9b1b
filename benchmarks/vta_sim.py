"""Benchmark: ResNet-18 conv C2 (56x56, 64->64, 3x3, pad 1) on the VTA simulator.

Prints simulator wall time, MACs, the cycle model's cycles, GEMM utilization and the
estimated latency on the chosen board (pynq, 100 MHz, by default), and checks the result
bit-exact against a numpy convolution.

    python benchmarks/vta_sim.py [--config pynq] [--repeat 3] [--mode hardware]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hwcompile.targets.vta import layout, workloads
from hwcompile.targets.vta.config import load_config
from hwcompile.targets.vta.cycle_model import estimate


def reference(x, w, bias):
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    acc = np.zeros((1, 64, 56, 56), np.int64)
    for i in range(3):
        for j in range(3):
            acc += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 56, j:j + 56],
                             w[:, :, i, j].astype(np.int64))
    return np.clip((acc >> 8) + bias[None, :, None, None], 0, 127).astype(np.int8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pynq")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mode", default="hardware", choices=["hardware", "reference"])
    parser.add_argument("--vthreads", type=int, default=2)
    args = parser.parse_args()

    cfg = load_config(args.config)
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, 64, 56, 56), dtype=np.int8)
    w = rng.integers(-128, 128, (64, 64, 3, 3), dtype=np.int8)
    bias = rng.integers(-64, 64, 64).astype(np.int32)

    t0 = time.perf_counter()
    wl = workloads.conv2d(cfg, x, w, bias, vthreads=args.vthreads)
    build_s = time.perf_counter() - t0
    times, result = [], None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = wl.program.run(args.mode)
        times.append(time.perf_counter() - t0)
    got = layout.unpack_activations(result.read(wl.output), 1, 64)
    exact = bool(np.array_equal(got, reference(x, w, bias)))
    t0 = time.perf_counter()
    report = estimate(wl.program.instructions, cfg)
    model_s = time.perf_counter() - t0

    print(f"workload      ResNet-18 C2 conv 1x64x56x56 * 64x64x3x3, pad 1, stride 1, "
          f"{args.vthreads} virtual threads")
    print(f"config        {cfg.target} ({cfg.bitstream}, {cfg.clock_mhz:g} MHz, "
          f"{cfg.axi_width}-bit AXI)")
    print(f"program       {len(wl.program.instructions)} instructions, "
          f"{len(wl.program.uop_blob) // 4} uops, DRAM image {wl.program.dram.nbytes} B")
    print(f"MACs          {wl.macs:,}")
    print(f"build         {build_s:.3f} s")
    print(f"simulate      {min(times):.3f} s best of {args.repeat} "
          f"(all: {', '.join(f'{t:.3f}' for t in times)}) mode={args.mode}; "
          f"{wl.macs / min(times) / 1e9:.2f} GMAC/s simulated")
    print(f"bit-exact     {exact}")
    print(f"stats         {result.stats.as_dict()}")
    print(f"cycle model   {report.total_cycles:,} cycles ({model_s:.3f} s to compute)")
    print(f"busy cycles   {report.busy_cycles}")
    print(f"GEMM util.    {report.gemm_utilization:.1%}")
    print(f"est. latency  {report.latency_s * 1e3:.3f} ms at {cfg.clock_mhz:g} MHz "
          f"({wl.macs / report.latency_s / 1e9:.2f} GMAC/s of {cfg.peak_gmacs:.1f} peak)")
    if not exact:
        raise SystemExit("result differs from the numpy reference")


if __name__ == "__main__":
    main()
