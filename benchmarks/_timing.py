"""Timing helpers shared by the benchmark scripts.

- ``alternating_blocks``: several runners timed against each other in one process. Each
  runner is timed in its own block (warm-up, then ``repeat`` calls, hwcompile.bench's
  ``time_calls``); the blocks are alternated for ``rounds`` rounds (the order reversed every
  other round) and each runner keeps its best block median. Interleaving single calls lets
  onnxruntime's spinning worker threads steal the cores from the next runner
  (/work/shared/TVM_NOTES.md, "Timing against onnxruntime"); blocks do not.
- ``ort_session``: an onnxruntime CPU session sized to a thread count, with spinning off.
- ``kernel_times``: per-kernel time of a loaded artifact through the VM's instrument
  (TVM 0.27 has no per-op profiler), and ``top_kernels`` to rank them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from hwcompile.bench import summarize, time_calls


def alternating_blocks(runners: Mapping[str, Callable[[], Any]], repeat: int, rounds: int = 3,
                       warmup: int = 3) -> dict[str, dict[str, Any]]:
    """Best-block statistics per runner: ``median_ms`` is the lowest block median; the
    summary of that block and every block's median (``block_medians_ms``) come with it."""
    names = list(runners)
    best: dict[str, dict[str, Any]] = {}
    medians: dict[str, list[float]] = {name: [] for name in names}
    for r in range(max(1, rounds)):
        for name in (names if r % 2 == 0 else names[::-1]):
            stats = summarize(time_calls(runners[name], repeat, warmup))
            medians[name].append(stats["median_ms"])
            if name not in best or stats["median_ms"] < best[name]["median_ms"]:
                best[name] = stats
    return {name: {**best[name], "block_medians_ms": medians[name]} for name in names}


def ort_session(model: Any, threads: int, spinning: bool = False):
    """An onnxruntime CPU session with ``threads`` intra-op threads (a path or ModelProto).

    Spinning is off by default: its workers would otherwise keep the cores busy between
    calls and slow the runner timed next.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    source = model if isinstance(model, (str, bytes)) else (
        model.SerializeToString() if hasattr(model, "SerializeToString") else str(model))
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


# VM builtins without side effects beyond their result: re-run to time them like kernels.
PURE_BUILTINS = frozenset(f"vm.builtin.{name}" for name in (
    "alloc_storage", "alloc_tensor", "make_tuple", "null_value", "reshape", "tuple_getitem",
    "check_tensor_info", "check_shape_info", "check_tuple_info", "check_prim_value_info",
    "match_shape", "make_shape", "shape_of", "tensor_to_shape", "copy", "to_device"))


def kernel_times(model: Any, device_inputs: list[Any], calls: int = 5,
                 repeats: int = 5) -> dict[str, Any]:
    """Where one call of a loaded artifact spends its time, kernel by kernel.

    Installs an instrument on ``model._vm`` (a ``hwcompile.CompiledModel``); the VM calls it
    before and after every Call instruction. A window of ``time.perf_counter`` around a call
    also holds the instrument's own cost (tvm-ffi turns every argument into a Python object
    before the "after" callback runs: microseconds, more than many small kernels take), so
    compiled kernels and the side-effect-free VM builtins (allocation, tuples, shape checks)
    are re-run in place from the "after" callback, whose arguments are the call's own
    just-computed buffers, ``repeats`` times each: the fastest run less the same call of a
    no-op (``testing.nop``) is the call's time. Anything else (a VM function, a closure)
    is charged its window less the nested calls' and less the instrument's cost (the
    cheapest window seen). Every call site keeps its lowest figure over ``calls`` model
    calls (the garbage collector off meanwhile); a name's figure is the sum of its sites.

    Returns ``kernels`` and ``builtins`` (seconds per model call, by name; builtins are the
    ``vm.builtin.*`` calls), ``sites`` (VM calls per model call) and ``instrument_s``. The
    instrument stays installed: time the model first, or profile a freshly loaded one.
    """
    import gc

    import tvm
    import tvm_ffi

    nop = tvm.get_global_func("testing.nop")
    best: dict[tuple[str, int], float] = {}  # (name, n-th call of that name) -> seconds
    windows: dict[tuple[str, int], float] = {}  # exclusive windows of calls not re-run
    stack: list[list[float]] = []  # per open call: [start, wall time of nested calls]
    seen: dict[str, int] = defaultdict(int)
    cheapest = [float("inf")]

    def instrument(func, name, before_run, ret_value, *args):
        if before_run:
            stack.append([time.perf_counter(), 0.0])
            return 0  # VMInstrumentReturnKind.NO_OP
        window = time.perf_counter()
        start, nested = stack.pop()
        window -= start
        name = str(name)
        site = (name, seen[name])
        seen[name] += 1
        rerun = not nested and isinstance(func, tvm_ffi.Function) and (
            not name.startswith("vm.builtin.") or name in PURE_BUILTINS)
        if rerun:
            run = base = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                func(*args)
                run = min(run, time.perf_counter() - t0)
                t0 = time.perf_counter()
                nop(*args)
                base = min(base, time.perf_counter() - t0)
            best[site] = min(best.get(site, float("inf")), max(0.0, run - base))
        else:
            windows[site] = min(windows.get(site, float("inf")), window - nested)
        if not nested:
            cheapest[0] = min(cheapest[0], window)
        if stack:  # the parent's window holds all of this, re-runs included
            stack[-1][1] += time.perf_counter() - start
        return 0

    model._vm.set_instrument(tvm.runtime.convert(instrument))
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(1, calls)):
            seen.clear()
            model.invoke(device_inputs)
    finally:
        if enabled:
            gc.enable()
    cost = cheapest[0] if cheapest[0] != float("inf") else 0.0
    for site, seconds in windows.items():
        best[site] = max(0.0, seconds - cost)
    kernels: dict[str, float] = defaultdict(float)
    builtins: dict[str, float] = defaultdict(float)
    for (name, _), seconds in best.items():
        (builtins if name.startswith("vm.builtin.") else kernels)[name] += seconds
    return {"kernels": dict(kernels), "builtins": dict(builtins), "sites": len(best),
            "instrument_s": cost}


def top_kernels(times: Mapping[str, float], top: int = 5) -> list[dict[str, float | str]]:
    """The ``top`` entries of ``times`` (seconds by name): name, milliseconds and share of
    the sum of all entries."""
    whole = sum(times.values()) or 1.0
    ranked = sorted(times.items(), key=lambda kv: -kv[1])[:top]
    return [{"kernel": name, "ms": seconds * 1e3, "share": seconds / whole}
            for name, seconds in ranked]


def geomean(values: list[float]) -> float:
    values = [v for v in values if v and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")
