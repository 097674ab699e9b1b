"""Calibration/training data for the pruning passes: samples of the one input, and labels.

``ctx.calibration`` (what ``compile(calibration=...)`` or ``--calibration`` gave) may be a
mapping, an ``.npz`` file or a directory of them. Samples are keyed by the input name and
stacked on a new leading axis (DESIGN.md); integer class labels, when present, are under
``labels``. Without labels the passes use the model's own predictions as targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hwcompile.errors import CalibrationError
from hwcompile.model import Model

LABELS = "labels"


def _read(raw: Any) -> dict[str, np.ndarray]:
    if isinstance(raw, Mapping):
        return {k: np.asarray(v) for k, v in raw.items()}
    path = Path(raw)
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise CalibrationError(f"calibration data {path}: no such .npz file or directory of them")
    parts: dict[str, list[np.ndarray]] = {}
    for file in files:
        try:
            with np.load(file, allow_pickle=False) as data:
                for key in data.files:
                    parts.setdefault(key, []).append(data[key])
        except (OSError, ValueError) as err:
            raise CalibrationError(f"calibration data {file}: not a readable .npz ({err})") from None
    return {k: np.concatenate(v) for k, v in parts.items()}


def load(raw: Any, model: Model, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(samples, labels or None) for ``model``'s single input; ``what`` names the user."""
    if raw is None:
        raise CalibrationError(f"{what} needs calibration data: pass --calibration DATA.npz "
                               f"(or calibration= in Python) holding '{model.inputs[0].name}'")
    data = _read(raw)
    spec = model.inputs[0]
    if spec.name not in data:
        raise CalibrationError(f"{what}: calibration data has no array '{spec.name}' "
                               f"(found: {', '.join(data) or 'nothing'})")
    x = data[spec.name].astype(spec.dtype, copy=False)
    if x.ndim == len(spec.shape) + 1:  # (samples, batch, ...) -> one batch axis
        x = x.reshape(-1, *x.shape[2:])
    if x.ndim != len(spec.shape) or len(x) == 0 or any(
            isinstance(d, int) and d != s for d, s in zip(spec.shape[1:], x.shape[1:])):
        raise CalibrationError(f"{what}: calibration '{spec.name}' has shape {x.shape}, expected "
                               f"(N, {', '.join(map(str, spec.shape[1:]))})")
    labels = data.get(LABELS)
    if labels is not None and labels.shape != (len(x),):
        raise CalibrationError(f"{what}: calibration '{LABELS}' has shape {labels.shape}, "
                               f"expected ({len(x)},)")
    return x, None if labels is None else labels.astype(np.int64)
