"""Run an artifact's C library from Python: the reference the C API is compared with.

``lib<name>.so`` is loaded into this process and its system library driven by the Relax VM,
exactly as the C glue does, so the same machine code computes both sides.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hwcompile.artifact import read_metadata
from hwcompile.errors import ArtifactError


class CLibraryModel:
    """``model(*inputs) -> list of outputs``; ``instrument`` sees every VM call."""

    def __init__(self, art_dir: str | Path):
        import tvm
        import tvm_ffi
        from tvm import relax

        self.path = Path(art_dir)
        self.metadata = read_metadata(self.path)
        info = self.metadata.get("embed", {}).get("c_library")
        if info is None:
            raise ArtifactError(f"{self.path}: has no C library; compile with --emit c-library")
        if not self.metadata.get("loadable", True):
            raise ArtifactError(f"{self.path}: C library built for {info['triple']}")
        self.info = info
        ctypes.CDLL(str(self.path / info["shared_library"]), mode=ctypes.RTLD_GLOBAL)
        self._executable = tvm_ffi.system_lib(info["system_lib_prefix"])
        self._vm = relax.VirtualMachine(self._executable, tvm.cpu())
        self._weights = [tvm.runtime.tensor(w) for w in self.weights()]

    def weights(self) -> list[np.ndarray]:
        """The weights file's tensors (empty when embedded), parsed with metadata's table."""
        if self.info["weights"] == "embedded":
            return []
        blob = (self.path / self.info["weights"]).read_bytes()
        return [np.frombuffer(blob, dtype=w["dtype"], count=int(np.prod(w["shape"], dtype=np.int64)),
                              offset=w["offset"]).reshape(w["shape"])
                for w in self.info["weights_table"]]

    def stats(self) -> str:
        """The loaded executable's own statistics (its constant pool lists the weights)."""
        return self._executable["stats"]()

    def set_instrument(self, fn: Callable[..., Any]) -> None:
        self._vm.set_instrument(fn)

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        import tvm

        result = self._vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs],
                                  *self._weights)
        values = [result] if len(self.metadata["outputs"]) == 1 else list(result)
        return [v.numpy() for v in values]
