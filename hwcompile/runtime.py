"""Loading an artifact: a callable model taking and returning numpy arrays."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .artifact import read_metadata
from .errors import ArtifactError, InputError
from .model import TensorSpec


class CompiledModel:
    """A loaded artifact. Call it with inputs by position or by name.

    ``model(x)`` returns one array for a single-output model, else a tuple;
    ``model.run({"input": x})`` returns a dict keyed by output name.
    """

    def __init__(self, art_dir: str | Path):
        import tvm
        from tvm import relax

        self.path = Path(art_dir)
        self.metadata = read_metadata(self.path)
        self.inputs = [TensorSpec.from_json(d) for d in self.metadata["inputs"]]
        self.outputs = [TensorSpec.from_json(d) for d in self.metadata["outputs"]]
        target = self.metadata["target"]
        if not self.metadata.get("loadable", True):
            raise ArtifactError(f"{self.path}: compiled for {target.get('triple')}, which this "
                                "machine cannot run; deploy it to that device")
        self.accelerator = None  # what the target's runtime hook returns (e.g. VTA programs)
        if target.get("runtime_hook"):
            self.accelerator = _runtime_hook(target["runtime_hook"])(self.path, self.metadata)
        self.device = tvm.device(target.get("device", "cpu"), 0)
        if not self.device.exist:
            raise ArtifactError(f"{self.path}: compiled for a {target.get('device')} device, "
                                "and this machine has none")
        try:
            library = tvm.runtime.load_module(str(self.path / self.metadata["library"]))
        except Exception as err:
            raise ArtifactError(f"{self.path}: cannot load {self.metadata['library']}: "
                                f"{str(err).strip().splitlines()[0]}") from None
        self._vm = relax.VirtualMachine(library, self.device)
        self._main = self._vm["main"]
        self._weights = self._runtime_weights()

    def _runtime_weights(self) -> list[Any]:
        """Weights the library takes as arguments (stored compactly beside it), on device."""
        import tvm

        from .sparse_weights import read

        spec = self.metadata.get("runtime_weights") or {}
        if not spec:
            return []
        dense = read(self.path / spec["file"], spec["weights"])
        return [tvm.runtime.tensor(np.ascontiguousarray(a), self.device) for a in dense]

    def _check(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        names = [spec.name for spec in self.inputs]
        unknown = [n for n in feeds if n not in names]
        if unknown:
            raise InputError(f"unknown input '{unknown[0]}'; the model's inputs are {', '.join(names)}")
        arrays, symbols = [], {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise InputError(f"missing input '{spec.name}' (shape {_fmt(spec.shape)}, {spec.dtype})")
            array = np.asarray(feeds[spec.name])
            if str(array.dtype) != spec.dtype:
                raise InputError(f"input '{spec.name}': dtype {array.dtype}, expected {spec.dtype}")
            if array.ndim != len(spec.shape) or any(
                    isinstance(d, int) and d != s for d, s in zip(spec.shape, array.shape)):
                raise InputError(f"input '{spec.name}': shape {_fmt(array.shape)}, expected "
                                 f"{_fmt(spec.shape)}")
            for dim, size in zip(spec.shape, array.shape):
                if isinstance(dim, str) and symbols.setdefault(dim, size) != size:
                    raise InputError(f"input '{spec.name}': dimension {dim}={size} contradicts "
                                     f"{dim}={symbols[dim]} of another input")
            arrays.append(np.require(array, requirements="C"))  # keeps 0-d arrays 0-d
        return arrays

    def to_device(self, feeds: Mapping[str, Any]) -> list[Any]:
        """Checked inputs as device tensors (what ``invoke`` takes; used by benchmarks)."""
        import tvm

        return [tvm.runtime.tensor(a, self.device) for a in self._check(feeds)]

    def invoke(self, device_inputs: list[Any]) -> Any:
        """Run on already-checked device tensors; returns the raw TVM result."""
        return self._main(*device_inputs, *self._weights)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        result = self.invoke(self.to_device(feeds))
        values = [result] if len(self.outputs) == 1 else list(result)
        return {spec.name: v.numpy() for spec, v in zip(self.outputs, values)}

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        if len(args) > len(self.inputs):
            raise InputError(f"{len(args)} inputs given, the model takes {len(self.inputs)}")
        feeds = {spec.name: a for spec, a in zip(self.inputs, args)}
        overlap = set(feeds) & set(kwargs)
        if overlap:
            raise InputError(f"input '{overlap.pop()}' given both by position and by name")
        outputs = list(self.run({**feeds, **kwargs}).values())
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _runtime_hook(spec: str) -> Any:
    module, _, function = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError):
        raise ArtifactError(f"the artifact needs runtime support '{spec}', which is not "
                            "installed") from None


def _fmt(shape: Any) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def load(art_dir: str | Path) -> CompiledModel:
    """Load an artifact directory written by ``hwcompile compile``."""
    return CompiledModel(art_dir)
