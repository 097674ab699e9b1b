"""Loading calibration data into batches of model feeds, checked against the model's inputs.

Accepted forms (see DESIGN.md, ``--calibration``):

- an ``.npz`` file (or a mapping) keyed by input name, each array holding the samples stacked
  on a new leading axis: shape ``(S, *input_shape)``. When the input's leading dimension is
  symbolic (a free batch), ``(S, *input_shape[1:])`` is accepted too (one sample per row);
- a directory of such ``.npz`` files, and/or ``.npy`` files named after an input (``x.npy``)
  or, for a single-input model, any ``.npy`` files; they are read in sorted order;
- a numpy array (single-input models), laid out as in an ``.npz``;
- a Python iterable of feeds: each item a mapping name → array, or an array for a
  single-input model, shaped exactly as one model input (a batch of its own).

Integer class labels (for fine-tuning, gradient pruning criteria and accuracy evaluation)
ride along under the key ``labels`` of a mapping or ``.npz`` file, one per sample, in sample
order: ``CalibrationSet.labels``.

Every failure raises ``CalibrationError`` naming the input, the file and what to fix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CalibrationError
from .model import TensorSpec

BATCH = 64  # samples per run when the model's batch dimension is free
LABELS = "labels"


@dataclass
class CalibrationSet:
    """Checked calibration data as ready-to-run feeds (each a valid model input)."""

    feeds: list[dict[str, np.ndarray]]
    num_samples: int
    labels: np.ndarray | None = None  # int64, one per sample

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.feeds)

    def digest(self) -> str:
        """A hash of the data, so cached statistics are reused only for the same data."""
        h = hashlib.sha256()
        for feed in self.feeds:
            for name in sorted(feed):
                h.update(name.encode())
                h.update(str(feed[name].shape).encode())
                h.update(np.ascontiguousarray(feed[name]).tobytes())
        return h.hexdigest()

    def head(self, samples: int) -> CalibrationSet:
        """The first feeds holding at least ``samples`` samples (for cheaper evaluations)."""
        kept, count = [], 0
        for feed in self.feeds:
            if count >= samples:
                break
            kept.append(feed)
            count += _feed_samples(feed)
        return CalibrationSet(kept, count, None if self.labels is None else self.labels[:count])


def _feed_samples(feed: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feed.values()))
    return int(first.shape[0]) if first.ndim else 1


def _fmt(shape: tuple) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _check_dtype(name: str, array: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if np.issubdtype(want, np.floating):
        if not np.issubdtype(array.dtype, np.floating):
            raise CalibrationError(f"{where}: input '{name}' has dtype {array.dtype}, expected a "
                                   f"floating-point array ({spec.dtype})")
        bad = ~np.isfinite(array)
        if bad.any():
            index = np.unravel_index(int(np.argmax(bad)), array.shape)
            kind = "NaN" if np.isnan(array[index]) else "Inf"
            raise CalibrationError(f"{where}: input '{name}' contains {kind} (first at index "
                                   f"{tuple(int(i) for i in index)}); remove or fix those samples")
    elif array.dtype.kind not in "iub":
        raise CalibrationError(f"{where}: input '{name}' has dtype {array.dtype}, "
                               f"expected {spec.dtype}")
    return array.astype(want, copy=False)


def _matches(shape: tuple[int, ...], spec: TensorSpec) -> bool:
    return len(shape) == len(spec.shape) and all(
        not isinstance(d, int) or d == s for d, s in zip(spec.shape, shape))


def _stacked_to_feeds(arrays: Mapping[str, np.ndarray], inputs: list[TensorSpec],
                      where: str) -> list[dict[str, np.ndarray]]:
    """Arrays of samples stacked on a leading axis → model feeds (batched when possible)."""
    names = [s.name for s in inputs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise CalibrationError(f"{where}: no data for input '{missing[0]}'; keys are "
                               f"{', '.join(arrays) or 'none'}, the model's inputs are "
                               f"{', '.join(names)}")
    per_input: dict[str, np.ndarray] = {}
    for spec in inputs:
        array = np.asarray(arrays[spec.name])
        free_batch = bool(spec.shape) and not isinstance(spec.shape[0], int)
        if array.ndim == len(spec.shape) + 1 and _matches(array.shape[1:], spec):
            rows = array
        elif free_batch and array.ndim == len(spec.shape) and _matches(array.shape, spec):
            rows = array[:, None]  # one sample per row, each a batch of one
        else:
            raise CalibrationError(
                f"{where}: input '{spec.name}' has shape {_fmt(array.shape)}; expected samples "
                f"stacked on a leading axis: (S, {', '.join(map(str, spec.shape))})")
        _check_dtype(spec.name, array, spec, where)  # indices in errors are the user's
        per_input[spec.name] = rows.astype(spec.dtype, copy=False)
    counts = {n: a.shape[0] for n, a in per_input.items()}
    if len(set(counts.values())) > 1:
        raise CalibrationError(f"{where}: inputs have different sample counts: {counts}")
    count = next(iter(counts.values()))
    if count == 0:
        return []
    if all(bool(s.shape) and not isinstance(s.shape[0], int) for s in inputs):
        merged = {n: a.reshape(-1, *a.shape[2:]) for n, a in per_input.items()}
        total = next(iter(merged.values())).shape[0]
        return [{n: a[i:i + BATCH] for n, a in merged.items()} for i in range(0, total, BATCH)]
    return [{n: a[i] for n, a in per_input.items()} for i in range(count)]


def _read(path: Path) -> dict[str, np.ndarray] | np.ndarray:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        return np.load(path, allow_pickle=False)
    except Exception as err:
        raise CalibrationError(f"{path}: not a readable numpy file ({err})") from None


def _labels_of(arrays: Mapping[str, Any]) -> list[np.ndarray]:
    return [np.asarray(arrays[LABELS]).reshape(-1)] if LABELS in arrays else []


def _from_path(path: Path, inputs: list[TensorSpec]
               ) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray]]:
    """Feeds, and the label arrays found with them (in the same order)."""
    if not path.exists():
        raise CalibrationError(f"{path}: no such calibration file or directory")
    if path.is_file():
        if path.suffix not in (".npz", ".npy"):
            raise CalibrationError(f"{path}: calibration data must be .npz or .npy")
        data = _as_mapping(_read(path), inputs, str(path))
        return _stacked_to_feeds(data, inputs, str(path)), _labels_of(data)
    files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
    feeds: list[dict[str, np.ndarray]] = []
    labels: list[np.ndarray] = []
    npy_by_input: dict[str, list[np.ndarray]] = {}
    names = {s.name for s in inputs}
    for file in files:
        data = _read(file)
        if isinstance(data, dict):
            feeds += _stacked_to_feeds(data, inputs, str(file))
            labels += _labels_of(data)
        elif file.stem in names:
            npy_by_input.setdefault(file.stem, []).append(data)
        elif len(inputs) == 1:
            feeds += _stacked_to_feeds({inputs[0].name: data}, inputs, str(file))
        else:
            raise CalibrationError(f"{file}: name a .npy file after a model input "
                                   f"({', '.join(sorted(names))}) or use .npz files")
    if npy_by_input:
        stacked = {n: np.concatenate(a) for n, a in npy_by_input.items()}
        feeds += _stacked_to_feeds(stacked, inputs, str(path))
    return feeds, labels


def _as_mapping(data: Any, inputs: list[TensorSpec], where: str) -> Mapping[str, Any]:
    if isinstance(data, Mapping):
        return data
    if len(inputs) != 1:
        raise CalibrationError(f"{where}: the model has {len(inputs)} inputs; give arrays keyed "
                               f"by input name ({', '.join(s.name for s in inputs)})")
    return {inputs[0].name: data}


def _from_iterable(items: Iterable[Any], inputs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    feeds = []
    for index, item in enumerate(items):
        where = f"calibration item {index}"
        mapping = _as_mapping(item, inputs, where)
        feed = {}
        for spec in inputs:
            if spec.name not in mapping:
                raise CalibrationError(f"{where}: no data for input '{spec.name}'")
            array = np.asarray(mapping[spec.name])
            if not _matches(array.shape, spec):
                raise CalibrationError(f"{where}: input '{spec.name}' has shape "
                                       f"{_fmt(array.shape)}, expected "
                                       f"({', '.join(map(str, spec.shape))})")
            feed[spec.name] = _check_dtype(spec.name, array, spec, where)
        feeds.append(feed)
    return feeds


def load_calibration(data: Any, inputs: list[TensorSpec]) -> CalibrationSet:
    """Check ``data`` (see module docstring) against ``inputs``; return it as feeds."""
    if data is None:
        raise CalibrationError("quantization needs calibration data: pass --calibration "
                               "DATA.npz (or calibration=... in Python)")
    if isinstance(data, CalibrationSet):
        return data
    labels: list[np.ndarray] = []
    if isinstance(data, (str, Path)):
        feeds, labels = _from_path(Path(data), inputs)
    elif isinstance(data, (Mapping, np.ndarray)):
        mapping = _as_mapping(data, inputs, "calibration data")
        feeds, labels = _stacked_to_feeds(mapping, inputs, "calibration data"), _labels_of(mapping)
    elif isinstance(data, Iterable):
        feeds = _from_iterable(data, inputs)
    else:
        raise CalibrationError(f"calibration data of type {type(data).__name__} is not "
                               "supported; give a path, a mapping of arrays, or an iterable")
    if not feeds:
        raise CalibrationError("the calibration set is empty: give at least one sample")
    count = sum(_feed_samples(f) for f in feeds)
    if not labels:
        return CalibrationSet(feeds, count)
    merged = np.concatenate(labels)
    if len(merged) != count or merged.dtype.kind not in "iu":
        raise CalibrationError(f"calibration '{LABELS}': {len(merged)} values of type "
                               f"{merged.dtype} for {count} samples; give one integer class "
                               "label per sample")
    return CalibrationSet(feeds, count, merged.astype(np.int64))
