"""The one IR handle every pass takes and returns.

A ``Model`` is a Relax ``IRModule`` whose ``main`` takes the model inputs first, then one
parameter per weight; the weights' values live in ``params`` (numpy arrays keyed by the
parameter's name). Keeping weights named and outside the IR lets passes rewrite them
(fold, prune, quantize) by name, and the graph view show them; ``bound_module`` binds them
as constants right before a target builds the module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax

Dim = int | str  # a concrete size, or the name of a symbolic dimension


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one model input or output."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of one tensor; a symbolic dimension (the batch, usually) counts as 1."""
        dims = [d if isinstance(d, int) else 1 for d in self.shape]
        return int(np.prod(dims, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(data["name"], tuple(data["shape"]), data["dtype"])


def shape_of(struct_info: relax.TensorStructInfo) -> tuple[Dim, ...]:
    """Relax tensor shape as ints, with symbolic dims given by their variable's name."""
    if struct_info.shape is None:  # rank known, sizes not: name each dimension
        return tuple(f"d{i}" for i in range(max(struct_info.ndim, 0)))
    dims: list[Dim] = []
    for dim in struct_info.shape.values:
        dims.append(int(dim) if isinstance(dim, tvm.tirx.IntImm) else str(dim))
    return tuple(dims)


@dataclass
class Model:
    """A Relax module plus its weights and I/O signature (see module docstring)."""

    mod: tvm.IRModule
    params: dict[str, np.ndarray]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    name: str = "model"
    # Free-form facts passes leave for later passes and the artifact (e.g. quantization).
    annotations: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> relax.Function:
        return self.mod["main"]

    def replace(self, **changes: Any) -> Model:
        return dataclasses.replace(self, **changes)

    def module_with_main(self, main: relax.Function) -> tvm.IRModule:
        """``mod`` with ``main`` replaced; every other function (the PrimFuncs the importer
        emits for pad, clip, tile ...) is kept, since ``main`` may call them."""
        mod = tvm.IRModule(dict(self.mod.functions_items()), attrs=self.mod.attrs,
                           global_infos=self.mod.global_infos)
        mod["main"] = main
        return mod

    @property
    def param_vars(self) -> list[relax.Var]:
        """The weight parameters of ``main`` (everything after the inputs)."""
        return list(self.main.params[len(self.inputs):])

    @property
    def weight_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.params.values())

    @property
    def num_params(self) -> int:
        return sum(int(a.size) for a in self.params.values())

    def bound_module(self, keep: Collection[str] = ()) -> tvm.IRModule:
        """The module with every weight bound as a constant (what a target builds), except
        the weights named in ``keep``, which stay parameters of ``main`` in their order."""
        # np.require, not ascontiguousarray: that turns a 0-d weight into shape (1,)
        binding = {name: tvm.runtime.tensor(np.require(a, requirements="C"))
                   for name, a in self.params.items() if name not in keep}
        return relax.transform.BindParams("main", binding)(self.mod)
