"""Sparse weights stored compactly in the artifact, densified when it is loaded.

A weight whose CSR form (over its first axis) is smaller than its dense bytes is not bound
into the library: the library's ``main`` keeps it as a parameter, the artifact stores it
in ``weights.sparse.bin``, and the runtime passes it on every call. The file is plain
concatenated little-endian arrays (values, int32 column indices, int32 row pointers per
weight) located by offsets in metadata.json, so identical weights give identical bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SPARSE_FILE = "weights.sparse.bin"


def csr_bytes(array: np.ndarray) -> int:
    """Bytes of ``array`` as CSR over its first axis (values, int32 indices, int32 row ptr)."""
    return int(np.count_nonzero(array)) * (array.itemsize + 4) + 4 * (array.shape[0] + 1)


def compact_worthy(params: dict[str, np.ndarray]) -> list[str]:
    """Names of the weights (≥ 2-D) that CSR stores in fewer bytes than dense."""
    return [name for name, a in params.items() if a.ndim >= 2 and csr_bytes(a) < a.nbytes]


def write(path: Path, params: dict[str, np.ndarray], names: list[str]) -> list[dict[str, Any]]:
    """Write ``names`` as CSR into ``path``; return their index entries (for metadata)."""
    index, offset = [], 0
    with open(path, "wb") as f:
        for name in names:
            dense = params[name]
            rows = dense.reshape(dense.shape[0], -1)
            indptr = np.concatenate([[0], np.cumsum(np.count_nonzero(rows, axis=1))]).astype("<i4")
            indices = np.nonzero(rows)[1].astype("<i4")
            values = rows[rows != 0].astype(dense.dtype.newbyteorder("<"))
            entry = {"name": name, "shape": list(dense.shape), "dtype": str(dense.dtype),
                     "nnz": int(values.size)}
            for part, array in (("values", values), ("indices", indices), ("indptr", indptr)):
                data = array.tobytes()
                entry[part] = [offset, len(data)]
                f.write(data)
                offset += len(data)
            index.append(entry)
    return index


def read(path: Path, index: list[dict[str, Any]]) -> list[np.ndarray]:
    """The dense weights of ``index``, in its order."""
    blob = path.read_bytes()

    def part(entry: dict[str, Any], name: str, kind: np.dtype) -> np.ndarray:
        start, size = entry[name]
        return np.frombuffer(blob, dtype=kind, count=size // kind.itemsize, offset=start)

    result = []
    for entry in index:
        shape = entry["shape"]
        values = part(entry, "values", np.dtype(entry["dtype"]).newbyteorder("<"))
        indices = part(entry, "indices", np.dtype("<i4"))
        indptr = part(entry, "indptr", np.dtype("<i4"))
        rows = np.zeros((shape[0], int(np.prod(shape[1:]))), dtype=entry["dtype"])
        row_of = np.repeat(np.arange(shape[0]), np.diff(indptr))
        rows[row_of, indices] = values
        result.append(rows.reshape(shape))
    return result
