"""Model inputs for run, bench and verify: arrays from .npz/.npy files, or seeded random ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .model import TensorSpec


def load_inputs(path: str | Path | None, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Inputs from a .npz (keyed by name) or a .npy (the single/first input); {} for None."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{file}: no such input file")
    try:
        data = np.load(file, allow_pickle=False)
    except Exception as err:
        raise InputError(f"{file}: not a .npy/.npz file ({err})") from None
    if isinstance(data, np.ndarray):
        if len(specs) != 1:
            raise InputError(f"{file}: a .npy holds one array, the model takes "
                             f"{len(specs)} inputs; use a .npz keyed by input name")
        return {specs[0].name: data}
    return {key: data[key] for key in data.files}


def random_inputs(specs: list[TensorSpec], seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Seeded random inputs; symbolic dimensions take ``batch``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = tuple(d if isinstance(d, int) else batch for d in spec.shape)
        if spec.dtype.startswith("float"):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[spec.name] = rng.integers(0, 10, shape).astype(spec.dtype)
    return feeds

