"""Run every corpus model through the CLI and report where each one stands.

    .venv/bin/python tools/corpus/survey.py [NAME ...] [--json results.json]

For each model (tests/corpus/manifest.py): fetch it, ``hwcompile compile`` it with its fixed
input shapes (with HWCOMPILE_DEBUG=1, so an internal error shows its traceback), load the
artifact, run it and compare every output with onnxruntime (the measure of
tests/test_corpus.py). Prints one block per model: pass / the exact ``error:`` line and the
traceback's last lines, compile time, relative errors. This is what the xfail reasons in
the manifest are copied from.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from corpus.fetch import FetchError, fetch
from corpus.manifest import MODELS
from test_corpus import make_feeds, relative_error

HWCOMPILE = str(Path(sys.executable).with_name("hwcompile"))


def survey(entry, work: Path) -> dict:
    result = {"name": entry.name, "status": "", "error": "", "traceback": [], "compile_s": None,
              "rel_err": {}}
    try:
        path = fetch(entry)
    except FetchError as err:
        return {**result, "status": "skip", "error": str(err)}
    out = work / entry.name
    cmd = [HWCOMPILE, "compile", str(path), "--target", "cpu", "-o", str(out)]
    for spec in entry.inputs:
        if spec.shape:
            cmd += ["--input-shape", f"{spec.name}={'x'.join(map(str, spec.shape))}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "HWCOMPILE_DEBUG": "1"})
    result["compile_s"] = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        tb = [ln for ln in lines if not ln.startswith("error:")]
        return {**result, "status": "compile-fail",
                "error": (errors or lines or [f"exit {proc.returncode}"])[-1],
                "traceback": tb[-8:]}
    import onnxruntime as ort

    import hwcompile

    feeds = make_feeds(entry)
    try:
        actual = hwcompile.load(out).run(feeds)
    except Exception as err:  # report, do not stop the survey
        return {**result, "status": "run-fail", "error": f"{type(err).__name__}: {err}"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(None, feeds)))
    # float32's own spread: onnxruntime without its graph optimizations vs with them
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    result["ort_spread"] = {n: relative_error(a, expected[n])
                            for n, a in zip(names, plain.run(None, feeds))
                            if np.issubdtype(a.dtype, np.floating)}
    status = "pass"
    for name in names:
        if name not in actual:
            status, result["error"] = "mismatch", f"output {name} missing (got {list(actual)})"
            break
        got, ref = actual[name], expected[name]
        if got.shape != ref.shape:
            status, result["error"] = "mismatch", f"output {name}: shape {got.shape} vs {ref.shape}"
            break
        err = relative_error(got, ref)
        result["rel_err"][name] = err
        if not err <= entry.tol:
            status = "mismatch"
            result["error"] = f"output {name}: rel_err {err:.3e} > tol {entry.tol:g}"
    return {**result, "status": status}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    entries = [m for m in MODELS if not args.names or m.name in args.names]
    results = []
    with tempfile.TemporaryDirectory(prefix="corpus-survey-") as tmp:
        for entry in entries:
            r = survey(entry, Path(tmp))
            results.append(r)
            print(f"== {r['name']} [{r['status']}] compile {r['compile_s']} s", flush=True)
            if r["error"]:
                print(f"   {r['error']}")
            for ln in r["traceback"]:
                print(f"   | {ln}")
            for name, err in r["rel_err"].items():
                spread = r.get("ort_spread", {}).get(name)
                print(f"   {name}: rel_err {err:.2e}"
                      + (f" (onnxruntime's own spread {spread:.1e})" if spread is not None else ""))
            sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
