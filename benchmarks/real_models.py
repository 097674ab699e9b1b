"""Real exported models (the issue-12 corpus): hwcompile vs onnxruntime and OpenVINO, fp32 and int8.

    .venv/bin/python benchmarks/real_models.py [--fast] [--models a,b] [--threads 2]
        [--repeat 20] [--rounds 3] [--no-int8] [--json out.json]

For every model of tests/corpus/manifest.py (fetched by tests/corpus/fetch.py, inputs made
by tests/test_corpus.py's generators at the manifest's fixed shapes):

- fp32: ``hwcompile.compile(path, target="cpu", input_shapes=...)`` (default passes),
  loaded with ``hwcompile.load``, timed against onnxruntime's CPU provider and OpenVINO's
  CPU plugin (both with the same thread count), in one process with alternating blocks
  (benchmarks/_timing.py: each runner warm-up + ``--repeat`` calls per block, ``--rounds``
  rounds, best block median);
- int8: hwcompile's ``fold-constants,fold-batchnorm,quantize`` calibrated on 16 generated
  samples vs onnxruntime's ``quantize_static`` (QDQ, per-channel, the same 16 samples; the
  model upgraded to opset 13 first when older), both timed the same way; the error of each
  against onnxruntime's fp32 outputs (max abs, SQNR in dB over all float outputs) on 8
  held-out samples (one sample's SQNR moved by several dB from sample to sample);
- each compile runs alone in a child process (multiprocessing spawn): its wall time and the
  child's peak RSS;
- the top kernels of the hwcompile models (per-kernel wall time through the VM instrument).

A model that one side cannot compile, quantize or run gets the one-line reason in its row;
the run goes on. Prints Markdown for benchmarks/RESULTS.md; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import re
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "tests", Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _timing import alternating_blocks, geomean, kernel_times, ort_session, top_kernels
from corpus.fetch import FetchError, IntegrityError, cache_dir, fetch
from corpus.manifest import MODELS, CorpusModel
from test_corpus import generate, make_feeds, relative_error

INT8_PASSES = "fold-constants,fold-batchnorm,quantize"
CALIBRATION_SAMPLES = 16
HELD_OUT_SAMPLES = 8  # int8 error: over these many unseen samples, not one
QDQ_MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (axis attribute)


# ---------------------------------------------------------------------------- inputs

def calibration_samples(entry: CorpusModel, count: int = CALIBRATION_SAMPLES
                        ) -> dict[str, np.ndarray]:
    """``count`` samples per input, stacked on a new leading axis: (S, *input_shape), made by
    the corpus test's generators with one seeded generator per sample."""
    seed = zlib.crc32(entry.name.encode())
    samples = []
    for k in range(count):
        rng = np.random.default_rng([seed, k + 1])
        samples.append({spec.name: generate(spec, rng) for spec in entry.inputs})
    return {spec.name: np.stack([s[spec.name] for s in samples]) for spec in entry.inputs}


def held_out_feeds(entry: CorpusModel, count: int = HELD_OUT_SAMPLES) -> list[dict[str, np.ndarray]]:
    """``count`` samples the calibration did not see (the same generators, the seeds after
    the calibration's): the int8 error is measured on these."""
    stacked = calibration_samples(entry, CALIBRATION_SAMPLES + count)
    return [{name: np.asarray(a[CALIBRATION_SAMPLES + k]) for name, a in stacked.items()}
            for k in range(count)]


def input_shapes(entry: CorpusModel) -> dict[str, tuple[int, ...]]:
    return {spec.name: spec.shape for spec in entry.inputs if spec.shape}  # scalars are fixed


def input_values(entry: CorpusModel) -> dict[str, float]:
    """Scalar "value" inputs (a sample rate) fixed at compile time, as the corpus test's
    ``--input-value`` does; they are then no inputs of the artifact."""
    return {spec.name: spec.value for spec in entry.inputs
            if spec.gen == "value" and not spec.shape}


# Lines of a multi-line error that only say where it was raised (OpenVINO, TVM checks).
_LOCATION = re.compile(r"^(Exception from |Check '|FrontEnd API failed|While validating|"
                       r"Traceback|File \"|\[bt\]|Summary:$)")


def one_line(err: BaseException | str, limit: int = 200) -> str:
    """The informative line of an error, with its type; the corpus cache path shortened."""
    text = str(err).strip().replace(str(cache_dir()) + os.sep, "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    summary = [ln for ln in lines if "Conversion is failed for" in ln]  # OpenVINO's
    useful = summary or [ln for ln in lines if not _LOCATION.match(ln)] or lines
    line = useful[0] if useful else ""
    if isinstance(err, BaseException):
        line = f"{type(err).__name__}: {line}" if line else type(err).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---------------------------------------------------------------------------- child processes

def _child_main(conn, work, args: tuple) -> None:
    """Runs in a spawned process: ``work(*args)`` (a dict), or the error as one line."""
    try:
        result = work(*args)
    except BaseException as err:
        result = {"error": one_line(err)}
    conn.send(result)
    conn.close()


def in_child(work, *args: Any, timeout: float, what: str) -> dict[str, Any]:
    """``work(*args)`` in a fresh spawned process, one at a time (a crash or a hang costs
    that one figure, not the run)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, work, args), daemon=True)
    proc.start()
    child.close()
    try:
        if parent.poll(timeout):
            result = parent.recv()
        else:
            proc.kill()
            result = {"error": f"{what} did not finish in {timeout:.0f} s"}
    except EOFError:
        proc.join(10)
        result = {"error": f"the {what} process died (exit code {proc.exitcode})"}
    proc.join(30)
    return result


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not carried over from
    the parent across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compile(model: str, output: str, shapes: dict, values: dict, passes: str | None,
             calibration: dict | None) -> dict[str, Any]:
    import hwcompile

    result: dict[str, Any] = {"base_mb": _peak_rss_mb()}
    start = time.perf_counter()
    try:
        hwcompile.compile(model, target="cpu", output=output, passes=passes,
                          input_shapes=shapes, input_values=values or None,
                          calibration=calibration)
        result["compile_s"] = time.perf_counter() - start
    except Exception as err:
        result["error"] = one_line(err)
    result["peak_mb"] = _peak_rss_mb()
    return result


def compile_in_child(model: Path, output: Path, shapes: dict, values: dict,
                     passes: str | None = None, calibration: dict | None = None,
                     timeout: float = 1800.0) -> dict[str, Any]:
    """``hwcompile.compile`` alone in a fresh process: compile_s (its wall time), peak_mb
    (the process's peak resident memory, Python and TVM included: base_mb after the
    imports), or error."""
    return in_child(_compile, str(model), str(output), shapes, values, passes, calibration,
                    timeout=timeout, what="compile")


def _profile(art: str, feeds: dict, threads: int, calls: int, top: int) -> dict[str, Any]:
    import hwcompile
    from hwcompile.bench import set_threads

    set_threads(threads)
    model = hwcompile.load(art)
    found = kernel_times(model, model.to_device(feeds), calls=calls)
    times = {**found["kernels"], **found["builtins"]}
    return {"kernels": top_kernels(times, top),
            "kernel_ms": sum(found["kernels"].values()) * 1e3,
            "builtin_ms": sum(found["builtins"].values()) * 1e3,
            "sites": found["sites"], "instrument_us": found["instrument_s"] * 1e6}


def profile_in_child(art: Path, feeds: dict, args: argparse.Namespace) -> dict[str, Any]:
    """The top kernels of an artifact (benchmarks/_timing.kernel_times) in a fresh process,
    so the instrument never touches the timed model and a crash costs only this figure."""
    return in_child(_profile, str(art), feeds, args.threads, args.profile_calls, args.top,
                    timeout=args.compile_timeout, what="profile")


# ---------------------------------------------------------------------------- onnxruntime int8

def ort_quantize(path: Path, workdir: Path, calibration: dict[str, np.ndarray]) -> tuple[Path, str]:
    """onnxruntime's quantize_static (QDQ, per-channel s8 weights, u8 activations; reduce_range
    where the CPU has no VNNI) on the calibration samples; returns the file and a note."""
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes = []
    proto = onnx.load(str(path))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    source = path
    if opset < QDQ_MIN_OPSET:
        try:
            proto = version_converter.convert_version(proto, QDQ_MIN_OPSET)
        except Exception as err:
            raise RuntimeError(f"opset {opset} → {QDQ_MIN_OPSET} conversion failed: "
                               f"{one_line(err)}") from None
        source = workdir / "upgraded.onnx"
        onnx.save(proto, str(source))
        notes.append(f"opset {opset}→{QDQ_MIN_OPSET}")
    pre = workdir / "pre.onnx"
    samples = [{name: np.asarray(array[k]) for name, array in calibration.items()}
               for k in range(len(next(iter(calibration.values()))))]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(samples)

        def get_next(self):
            return next(self.feeds, None)

    out = workdir / "qdq.onnx"
    logging.disable(logging.WARNING)
    try:
        try:
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception as err:
            notes.append(f"no pre-processing ({one_line(err, 60)})")
        quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, reduce_range=not has_vnni())
    finally:
        logging.disable(logging.NOTSET)
    return out, "; ".join(notes)


def has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


# ---------------------------------------------------------------------------- OpenVINO

def openvino_runner(path: Path, entry: CorpusModel, feeds: dict[str, np.ndarray], threads: int):
    """(call, outputs) for OpenVINO's CPU plugin in fp32 at the manifest's shapes; raises
    ImportError when OpenVINO is not installed (``pip install .[bench]``)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    names = {name for port in model.inputs for name in port.get_names()}
    shapes = {name: ov.PartialShape(list(shape)) for name, shape in input_shapes(entry).items()
              if name in names}
    if shapes:
        model.reshape(shapes)
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False})
    request = compiled.create_infer_request()
    request.infer(feeds)
    outputs = [np.array(request.get_output_tensor(i).data) for i in range(len(compiled.outputs))]
    return (lambda: request.infer(feeds)), outputs


# ---------------------------------------------------------------------------- errors

def float_outputs(values: list[np.ndarray]) -> np.ndarray:
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in values
              if np.issubdtype(np.asarray(v).dtype, np.floating)]
    return np.concatenate(arrays) if arrays else np.zeros(0)


def quant_error(actual: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    """max abs error and SQNR (dB) of ``actual`` against ``reference`` over all float outputs."""
    got, ref = float_outputs(actual), float_outputs(reference)
    if got.shape != ref.shape or not ref.size:
        raise ValueError(f"outputs differ in size ({got.size} vs {ref.size})")
    noise = float(np.sum((got - ref) ** 2))
    signal = float(np.sum(ref ** 2))
    sqnr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
    return {"max_abs": float(np.max(np.abs(got - ref))), "sqnr_db": sqnr}


def fp32_error(actual: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """The corpus test's rel_err, worst over float outputs; inf when integer outputs differ."""
    worst = 0.0
    for got, ref in zip(actual, reference):
        got, ref = np.asarray(got), np.asarray(ref)
        if got.shape != ref.shape:
            return math.inf
        if np.issubdtype(ref.dtype, np.floating):
            worst = max(worst, relative_error(got, ref))
        elif not np.array_equal(got, ref):
            return math.inf
    return worst


# ---------------------------------------------------------------------------- one model

def bench_entry(entry: CorpusModel, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import hwcompile

    row: dict[str, Any] = {"model": entry.name, "fast": entry.fast, "errors": {}}
    errors = row["errors"]
    say = (lambda msg: print(f"[{entry.name}] {msg}", file=sys.stderr, flush=True))
    try:
        path = fetch(entry)
    except (FetchError, IntegrityError) as err:
        errors["fetch"] = one_line(err)
        return row
    feeds = make_feeds(entry)
    shapes, values = input_shapes(entry), input_values(entry)
    hw_feeds = {name: a for name, a in feeds.items() if name not in values}
    reference_session = ort_session(str(path), args.threads)
    reference = reference_session.run(None, feeds)
    calibration = None if args.no_int8 else calibration_samples(entry)
    held_out = [] if args.no_int8 else held_out_feeds(entry)
    held_out_reference = [out for feed in held_out for out in reference_session.run(None, feed)]

    # -- compile (each alone in a child process)
    say("compiling fp32")
    fp32 = compile_in_child(path, workdir / "fp32", shapes, values,
                            timeout=args.compile_timeout)
    row.update(compile_s=fp32.get("compile_s"), peak_mb=fp32.get("peak_mb"),
               base_mb=fp32.get("base_mb"))
    if "error" in fp32:
        errors["hwcompile"] = fp32["error"]
    int8: dict[str, Any] = {}
    if calibration is not None:
        say("compiling int8")
        int8 = compile_in_child(path, workdir / "int8", shapes, values, INT8_PASSES,
                                {n: a for n, a in calibration.items() if n not in values},
                                timeout=args.compile_timeout)
        row.update(int8_compile_s=int8.get("compile_s"), int8_peak_mb=int8.get("peak_mb"))
        if "error" in int8:
            errors["hwcompile_int8"] = int8["error"]

    # -- fp32 runners
    runners: dict[str, Any] = {"onnxruntime": lambda: reference_session.run(None, feeds)}
    hw = None
    if "error" not in fp32:
        try:
            hw = hwcompile.load(workdir / "fp32")
            got = list(hw.run(hw_feeds).values())
            row["fp32_rel_err"] = fp32_error(got, reference)
            hw_inputs = hw.to_device(hw_feeds)
            runners = {"hwcompile": lambda: hw.invoke(hw_inputs), **runners}
        except Exception as err:
            errors["hwcompile"] = "run: " + one_line(err)
            hw = None
    try:
        ov_call, ov_out = openvino_runner(path, entry, feeds, args.threads)
        row["ov_rel_err"] = fp32_error(ov_out, reference)
        runners["openvino"] = ov_call
    except ImportError as err:
        errors["openvino"] = f"n/a: OpenVINO not installed ({one_line(err, 80)}); pip install .[bench]"
    except Exception as err:
        errors["openvino"] = one_line(err)
    say(f"timing fp32: {', '.join(runners)}")
    row["load_1min"] = [os.getloadavg()[0]]  # other processes on the machine, before / after
    stats = alternating_blocks(runners, args.repeat, args.rounds, args.warmup)
    row["ort_fp32_ms"] = stats["onnxruntime"]["median_ms"]
    row["ort_fp32_blocks_ms"] = stats["onnxruntime"]["block_medians_ms"]
    if "hwcompile" in stats:
        row["hw_fp32_ms"] = stats["hwcompile"]["median_ms"]
        row["hw_fp32_blocks_ms"] = stats["hwcompile"]["block_medians_ms"]
        row["fp32_ratio"] = row["hw_fp32_ms"] / row["ort_fp32_ms"]
    if "openvino" in stats:
        row["ov_fp32_ms"] = stats["openvino"]["median_ms"]
        row["ov_fp32_blocks_ms"] = stats["openvino"]["block_medians_ms"]
    runners.clear()
    row["load_1min"].append(os.getloadavg()[0])

    # -- int8 runners
    hw8 = None
    if calibration is not None:
        int8_runners: dict[str, Any] = {}
        if "error" not in int8:
            try:
                hw8 = hwcompile.load(workdir / "int8")
                row["hw_int8_err"] = quant_error(
                    [out for feed in held_out for out in hw8.run(
                        {n: a for n, a in feed.items() if n not in values}).values()],
                    held_out_reference)
                hw8_inputs = hw8.to_device(hw_feeds)
                int8_runners["hwcompile"] = lambda: hw8.invoke(hw8_inputs)
            except Exception as err:
                errors["hwcompile_int8"] = "run: " + one_line(err)
                hw8 = None
        try:
            say("onnxruntime quantize_static")
            qdir = workdir / "ort_int8"
            qdir.mkdir()
            qdq, note = ort_quantize(path, qdir, calibration)
            if note:
                row["ort_int8_note"] = note
            q_session = ort_session(str(qdq), args.threads)
            row["ort_int8_err"] = quant_error(
                [out for feed in held_out for out in q_session.run(None, feed)], held_out_reference)
            int8_runners["onnxruntime"] = lambda: q_session.run(None, feeds)
        except Exception as err:
            errors["onnxruntime_int8"] = one_line(err)
        if int8_runners:
            say(f"timing int8: {', '.join(int8_runners)}")
            stats = alternating_blocks(int8_runners, args.repeat, args.rounds, args.warmup)
            if "hwcompile" in stats:
                row["hw_int8_ms"] = stats["hwcompile"]["median_ms"]
            if "onnxruntime" in stats:
                row["ort_int8_ms"] = stats["onnxruntime"]["median_ms"]
            if "hwcompile" in stats and "onnxruntime" in stats:
                row["int8_ratio"] = row["hw_int8_ms"] / row["ort_int8_ms"]
        int8_runners.clear()

    # -- where hwcompile's time goes
    for kind, loaded in (("fp32", hw), ("int8", hw8)):
        if loaded is not None:
            say(f"profiling {kind}")
            found = profile_in_child(workdir / kind, hw_feeds, args)
            if "error" in found:
                errors[f"profile_{kind}"] = found["error"]
            else:
                row[f"top_kernels_{kind}"] = found
    return row


# ---------------------------------------------------------------------------- report

def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return f"{cpu}, {os.cpu_count()} cores"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _err(err: dict | None) -> str:
    if not err:
        return "—"
    sqnr = "∞" if math.isinf(err["sqnr_db"]) else f"{err['sqnr_db']:.1f}"
    return f"{err['max_abs']:.2g} / {sqnr} dB"


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _short(name: str, limit: int = 64) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(result: dict[str, Any]) -> str:
    meta, rows = result["meta"], result["rows"]
    lines = [
        (f"Machine: {meta['machine']}; {meta['threads']} threads for every runtime; batch as "
         f"in the manifest; best block median of {meta['rounds']} alternating blocks of "
         f"{meta['repeat']} calls (after {meta['warmup']} warm-up)"),
        f"Date: {meta['date']}; commit {meta['commit']}; command: `{meta['command']}`",
        f"Versions: {meta['versions']}",
        "",
        ("| model | hwcompile fp32 ms | ort fp32 ms | hw / ort | OpenVINO ms | fp32 rel err "
         "hw / ov | hw int8 ms | ort int8 ms | hw / ort int8 | int8 err hw (max abs / SQNR) "
         "| int8 err ort (max abs / SQNR) | compile s fp32 / int8 | peak MB fp32 / int8 |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rel = (f"{_num(r.get('fp32_rel_err'), '.1e')} / {_num(r.get('ov_rel_err'), '.1e')}")
        lines.append(
            f"| {r['model']} | {_ms(r.get('hw_fp32_ms'))} | {_ms(r.get('ort_fp32_ms'))} "
            f"| {_ratio(r.get('fp32_ratio'))} | {_ms(r.get('ov_fp32_ms'))} | {rel} "
            f"| {_ms(r.get('hw_int8_ms'))} | {_ms(r.get('ort_int8_ms'))} "
            f"| {_ratio(r.get('int8_ratio'))} | {_err(r.get('hw_int8_err'))} "
            f"| {_err(r.get('ort_int8_err'))} "
            f"| {_num(r.get('compile_s'), '.1f')} / {_num(r.get('int8_compile_s'), '.1f')} "
            f"| {_num(r.get('peak_mb'), '.0f')} / {_num(r.get('int8_peak_mb'), '.0f')} |")
    bases = [r["base_mb"] for r in rows if r.get("base_mb")]
    lines += ["", "int8: hwcompile `" + INT8_PASSES + "`; onnxruntime `quantize_static` (QDQ, "
              "per-channel s8 weights, u8 activations, reduce_range "
              + ("off: the CPU has VNNI" if meta["vnni"] else "on: the CPU has no VNNI")
              + f"); both calibrated on the same {meta['calibration_samples']} generated "
              f"samples; errors against onnxruntime fp32 over all float outputs of "
              f"{HELD_OUT_SAMPLES} held-out samples. compile s: "
              "wall time of `hwcompile.compile` alone in a fresh process; peak MB: that "
              "process's peak resident memory"
              + (f" (Python + TVM imports alone: {np.median(bases):.0f} MB)." if bases else ".")]
    loads = [x for r in rows for x in r.get("load_1min", [])]
    if loads:
        lines[-1] += (f" Load average (1 min) around the fp32 timings: {min(loads):.1f}–"
                      f"{max(loads):.1f} on {os.cpu_count()} cores.")
    s = result["summary"]
    lines += ["", f"Geometric mean of hwcompile / onnxruntime fp32 over the {s['fp32_models']} "
              f"models both ran: {_ratio(s['fp32_geomean'])}"
              + (f"; int8 over {s['int8_models']}: {_ratio(s['int8_geomean'])}"
                 if s["int8_models"] else "")
              + (f"; hwcompile / OpenVINO fp32 over {s['ov_models']}: {_ratio(s['ov_geomean'])}"
                 if s["ov_models"] else "") + "."]
    notes = [(r["model"], k, v) for r in rows for k, v in r["errors"].items()]
    notes += [(r["model"], "onnxruntime_int8", r["ort_int8_note"]) for r in rows
              if r.get("ort_int8_note")]
    if notes:
        lines += ["", "Failures and notes (one line each):", ""]
        lines += [f"- {model}, {what}: {_cell(text)}" for model, what, text in notes]
    profiled = [r for r in rows if r.get("top_kernels_fp32") or r.get("top_kernels_int8")]
    if profiled:
        lines += ["", ("Top kernels of the hwcompile models (VM instrument: compiled kernels "
                       "re-run in place, fastest of several less a no-op call; VM builtins by "
                       "their window less the instrument's cost; share of kernels + builtins):"),
                  ""]
        for r in profiled:
            for kind in ("fp32", "int8"):
                prof = r.get(f"top_kernels_{kind}")
                if prof:
                    lines.append(
                        f"- {r['model']} {kind} (call {_ms(r.get(f'hw_{kind}_ms'))} ms; kernels "
                        f"{_ms(prof['kernel_ms'])} + builtins {_ms(prof['builtin_ms'])} ms, "
                        f"{prof['sites']} VM calls): " + ", ".join(
                            f"`{_short(k['kernel'])}` {_ms(k['ms'])} ({k['share']:.0%})"
                            for k in prof["kernels"]))
    return "\n".join(lines)


def summary(rows: list[dict]) -> dict[str, Any]:
    fp32 = [r["fp32_ratio"] for r in rows if r.get("fp32_ratio")]
    int8 = [r["int8_ratio"] for r in rows if r.get("int8_ratio")]
    ov = [r["hw_fp32_ms"] / r["ov_fp32_ms"] for r in rows
          if r.get("hw_fp32_ms") and r.get("ov_fp32_ms")]
    return {"fp32_geomean": geomean(fp32) if fp32 else None, "fp32_models": len(fp32),
            "int8_geomean": geomean(int8) if int8 else None, "int8_models": len(int8),
            "ov_geomean": geomean(ov) if ov else None, "ov_models": len(ov)}


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("hwcompile", "apache-tvm", "onnxruntime", "openvino"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} not installed")
    return ", ".join(parts)


def _commit() -> str:
    """HEAD of the checkout, "+ uncommitted changes" when tracked files differ from it (the
    compile children import the working tree as it is when each one starts)."""
    import subprocess

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=ROOT,
                              check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" + uncommitted changes" if git("status", "--porcelain",
                                                   "--untracked-files=no") else "")


# ---------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated subset of the corpus")
    parser.add_argument("--fast", action="store_true", help="only the fast corpus models")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for hwcompile, onnxruntime and OpenVINO (default 2)")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per block")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks per runner")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each block")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 comparison")
    parser.add_argument("--top", type=int, default=5, help="kernels listed per model")
    parser.add_argument("--profile-calls", type=int, default=5,
                        help="model calls profiled for the kernel list (best per kernel)")
    parser.add_argument("--compile-timeout", type=float, default=1800.0,
                        help="seconds one compile may take")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rounds < 1 or args.threads < 1:
        parser.error("--repeat, --rounds and --threads must be ≥ 1")
    return args


def select(args: argparse.Namespace) -> list[CorpusModel]:
    chosen = [m for m in MODELS if m.fast or not args.fast]
    if args.models:
        wanted = [n.strip() for n in args.models.split(",") if n.strip()]
        unknown = set(wanted) - {m.name for m in MODELS}
        if unknown:
            raise SystemExit(f"unknown corpus model(s): {', '.join(sorted(unknown))}")
        chosen = [m for m in chosen if m.name in wanted]
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hwcompile.bench import set_threads

    args.threads = set_threads(args.threads)
    entries = select(args)
    command = ".venv/bin/python benchmarks/real_models.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    commit = _commit()  # at the start: a shared checkout may move during a long run
    rows = []
    for entry in entries:
        started = time.perf_counter()
        print(f"benchmarking {entry.name} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix=f"real-{entry.name}-") as tmp:
            try:
                row = bench_entry(entry, args, Path(tmp))
            except Exception as err:  # never abort the whole run
                row = {"model": entry.name, "fast": entry.fast,
                       "errors": {"benchmark": one_line(err)}}
        row["wall_s"] = time.perf_counter() - started
        rows.append(row)
        print(f"[{entry.name}] done in {row['wall_s']:.0f} s: "
              f"hw {_ms(row.get('hw_fp32_ms'))} ms, ort {_ms(row.get('ort_fp32_ms'))} ms, "
              f"ov {_ms(row.get('ov_fp32_ms'))} ms; int8 hw {_ms(row.get('hw_int8_ms'))} ms, "
              f"ort {_ms(row.get('ort_int8_ms'))} ms; {row['errors'] or ''}",
              file=sys.stderr, flush=True)
        gc.collect()
        if args.json:  # keep what is done if a later model takes the process down
            _write_json(args, rows, command, commit)
    result = _write_json(args, rows, command, commit)
    print(markdown(result))
    return 0


def _write_json(args: argparse.Namespace, rows: list[dict], command: str,
                commit: str) -> dict[str, Any]:
    result = {"meta": {"machine": machine(), "date": str(datetime.date.today()),
                       "commit": commit, "command": command.strip(), "threads": args.threads,
                       "repeat": args.repeat, "rounds": args.rounds, "warmup": args.warmup,
                       "calibration_samples": CALIBRATION_SAMPLES, "versions": versions(),
                       "vnni": has_vnni()},
              "rows": rows, "summary": summary(rows)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=_jsonable))
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
