"""Latency measurement of an artifact: warm-up, repeats, summary statistics."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def set_threads(threads: int | None) -> int:
    """Size TVM's worker pool (all cores when None); return the thread count in use.

    The pool can shrink and grow again up to TVM_NUM_THREADS (see threads.py), not beyond.
    """
    import tvm

    from .threads import physical_cores

    tvm.get_global_func("runtime.config_threadpool")(0, int(threads or physical_cores()))
    return tvm.get_global_func("runtime.NumThreads")()


def time_calls(fn: Callable[[], Any], repeat: int, warmup: int) -> np.ndarray:
    """Seconds per call of ``fn`` over ``repeat`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = np.empty(repeat)
    for i in range(repeat):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return times


def summarize(times: np.ndarray) -> dict[str, float]:
    ms = times * 1e3
    return {"mean_ms": float(ms.mean()), "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)), "min_ms": float(ms.min()),
            "std_ms": float(ms.std()), "repeat": len(ms)}


def bench_artifact(art_dir: str | Path, repeat: int = 50, warmup: int = 5,
                   threads: int | None = None, input_path: str | None = None) -> dict[str, Any]:
    from .errors import InputError
    from .inputs import load_inputs, random_inputs
    from .runtime import load

    if repeat < 1 or warmup < 0:
        raise InputError("--repeat must be ≥ 1 and --warmup ≥ 0")
    model = load(art_dir)
    used_threads = set_threads(threads)
    feeds = load_inputs(input_path, model.inputs) or random_inputs(model.inputs)
    device_inputs = model.to_device(feeds)
    times = time_calls(lambda: model.invoke(device_inputs), repeat, warmup)
    stats = {"artifact": str(art_dir), "threads": used_threads, "warmup": warmup,
             **summarize(times)}
    extra = model.metadata.get("target_extra", {})
    if extra.get("accelerator") == "vta":  # host time above is the simulator's
        batch = next(iter(device_inputs)).shape[0] if device_inputs else 1
        stats["vta"] = {"cycles": extra["cycles_per_sample"] * batch,
                        "latency_ms": extra["latency_ms_per_sample"] * batch,
                        "clock_mhz": extra["clock_mhz"], "bitstream": extra["bitstream"]}
    return stats


def format_stats(stats: dict[str, Any]) -> str:
    vta = stats.get("vta")
    accel = (f"\n  VTA {vta['bitstream']}: {vta['cycles']:,} simulated cycles (cycle model), "
             f"estimated {vta['latency_ms']:.3f} ms at {vta['clock_mhz']:g} MHz") if vta else ""
    return (f"{stats['artifact']}: {stats['repeat']} runs after {stats['warmup']} warm-up, "
            f"{stats['threads']} threads\n"
            f"  mean {stats['mean_ms']:.3f} ms  median {stats['median_ms']:.3f} ms  "
            f"p90 {stats['p90_ms']:.3f} ms  min {stats['min_ms']:.3f} ms  std {stats['std_ms']:.3f} ms"
            + accel)
