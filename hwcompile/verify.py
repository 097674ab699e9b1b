"""Compare a compiled artifact with onnxruntime on the same inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .frontend import load_onnx
from .inputs import load_inputs, random_inputs
from .runtime import load


def onnxruntime_outputs(onnx_path: str | Path, feeds: dict[str, np.ndarray], threads: int = 0) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def verify(onnx_path: str | Path, art_dir: str | Path, input_path: str | None = None,
           atol: float = 1e-4, rtol: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Per-output max abs/rel error and top-1 agreement of artifact vs onnxruntime."""
    load_onnx(onnx_path)  # clear error for a bad model file before anything else
    model = load(art_dir)
    feeds = load_inputs(input_path, model.inputs) or random_inputs(model.inputs, seed=seed)
    ours = model.run(feeds)
    try:
        reference = onnxruntime_outputs(onnx_path, feeds)
    except Exception as err:
        raise InputError(f"onnxruntime could not run {onnx_path} on these inputs: "
                         f"{str(err).strip().splitlines()[0]}") from None
    rows, ok = [], True
    for (name, got), want in zip(ours.items(), reference):
        if got.shape != want.shape:
            rows.append({"output": name, "error": f"shape {got.shape} vs onnxruntime {want.shape}"})
            ok = False
            continue
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        row = {"output": name, "max_abs": float(diff.max(initial=0.0)),
               "max_rel": float((diff / (np.abs(want) + 1e-12)).max(initial=0.0)),
               "within_tolerance": bool(np.allclose(got, want, atol=atol, rtol=rtol))}
        if got.ndim == 2 and got.shape[1] > 1:
            row["top1_agreement"] = float(np.mean(got.argmax(1) == want.argmax(1)))
        ok &= row["within_tolerance"]
        rows.append(row)
    return {"ok": ok, "atol": atol, "rtol": rtol, "outputs": rows,
            "samples": int(next(iter(feeds.values())).shape[0]) if feeds else 0}


def format_report(report: dict[str, Any]) -> str:
    lines = []
    for row in report["outputs"]:
        if "error" in row:
            lines.append(f"{row['output']}: MISMATCH {row['error']}")
            continue
        top1 = f"  top-1 agreement {row['top1_agreement']:.4f}" if "top1_agreement" in row else ""
        verdict = "ok" if row["within_tolerance"] else "MISMATCH"
        lines.append(f"{row['output']}: max abs {row['max_abs']:.3e}  max rel {row['max_rel']:.3e}"
                     f"{top1}  [{verdict} at atol={report['atol']}, rtol={report['rtol']}]")
    return "\n".join(lines)
