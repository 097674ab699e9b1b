"""Calibration/training data for the pruning passes: the samples of the model's (first)
input as one array, their labels, and held-out data to report accuracy on.

``ctx.calibration`` (what ``compile(calibration=...)`` or ``--calibration`` gave) is read
and checked by ``hwcompile.calibration_data``, as for quantization. Integer class labels,
when present, are under ``labels``; without them the passes use the model's own
predictions as targets.

Held-out data rides in the same mapping or ``.npz`` under ``val_<input name>`` and
``val_labels``. It is never trained on (the training data is read from the input's own
key); ``prune`` and ``finetune`` report the held-out accuracy of what they produce.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hwcompile.calibration_data import LABELS, load_calibration
from hwcompile.errors import CalibrationError
from hwcompile.model import Model

VAL_PREFIX = "val_"


def load(raw: Any, model: Model, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(samples, labels or None) for ``model``'s first input, the samples stacked into one
    array (from batches or single samples); ``what`` names the user."""
    spec = model.inputs[0]
    if raw is None:
        raise CalibrationError(f"{what} needs calibration data: pass --calibration DATA.npz "
                               f"(or calibration= in Python) holding '{spec.name}'")
    try:
        feeds = load_calibration(raw, model.inputs)
    except CalibrationError as err:
        raise CalibrationError(f"{what}: {err}") from None
    return np.concatenate([feed[spec.name] for feed in feeds]), feeds.labels


def validation(raw: Any, model: Model) -> tuple[np.ndarray, np.ndarray] | None:
    """The held-out (samples, labels) of a mapping or ``.npz`` (``val_<input>``,
    ``val_labels``), or None when there are none."""
    if isinstance(raw, (str, Path)) and Path(raw).is_file() and Path(raw).suffix == ".npz":
        with np.load(raw, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k.startswith(VAL_PREFIX)}
    elif isinstance(raw, Mapping):
        arrays = raw
    else:
        return None
    key = VAL_PREFIX + model.inputs[0].name
    if key not in arrays:
        return None
    if VAL_PREFIX + LABELS not in arrays:
        raise CalibrationError(f"held-out data '{key}' needs its labels: '{VAL_PREFIX}{LABELS}'")
    x, labels = load({model.inputs[0].name: arrays[key], LABELS: arrays[VAL_PREFIX + LABELS]},
                     model, "held-out data")
    return x, labels


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of (N, classes) outputs."""
    return float((outputs.argmax(axis=-1) == labels).mean())
