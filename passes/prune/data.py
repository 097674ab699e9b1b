"""Calibration/training data for the pruning passes: the samples of the model's (first)
input as one array, and their labels.

``ctx.calibration`` (what ``compile(calibration=...)`` or ``--calibration`` gave) is read
and checked by ``hwcompile.calibration_data``, as for quantization. Integer class labels,
when present, are under ``labels``; without them the passes use the model's own
predictions as targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwcompile.calibration_data import load_calibration
from hwcompile.errors import CalibrationError
from hwcompile.model import Model


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
