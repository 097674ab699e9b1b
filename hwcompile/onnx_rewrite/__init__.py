"""ONNX→ONNX rewrites that run before the Relax import, one module per family.

``prepare`` turns a model whose input shapes are settled into one TVM's importer takes:

1. model-local functions inlined (exporters such as torch's dynamo emit them);
2. until nothing changes: shape computations folded (``folding``).

``importer_gaps.legalize`` (operators the importer converts wrongly) runs after it.
"""

from __future__ import annotations

import onnx
import onnx.inliner

from . import folding

#: A bound on folding rounds; each round removes at least one node.
MAX_ROUNDS = 64


def simplify(model: onnx.ModelProto) -> int:
    """Fold until the model stops changing; returns the rewrites made."""
    total = 0
    for _ in range(MAX_ROUNDS):
        changed = folding.fold_constants(model)
        total += changed
        if not changed:
            break
    return total


def prepare(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The model rewritten for the importer (``model`` itself may be modified; ``source``
    names it in errors)."""
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    simplify(model)
    return model
