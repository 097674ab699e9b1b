"""ONNX→ONNX rewrites that run before the Relax import, one module per family.

``prepare`` turns a model whose input shapes are settled into one TVM's importer takes:

1. model-local functions inlined (exporters such as torch's dynamo emit them);
2. until nothing changes: shape computations folded (``folding``), constant ``If``
   branches inlined, static loops unrolled (``control_flow``);
3. Ifs decided at run time turned into both branches + ``Where`` where they can be,
   recurrent cells expanded (``recurrent``), integer operators rewritten (``integer``),
   scikit-learn's ai.onnx.ml wrappers written in standard ops (``onnx_ml``);
   2 and 3 again until nothing changes;
4. any ``Loop``/``Scan`` left is refused with its reason.

``importer_gaps.legalize`` (operators the importer converts wrongly) runs after it.
"""

from __future__ import annotations

import onnx
import onnx.inliner

from ..errors import UnsupportedOpError
from . import control_flow, folding, integer, onnx_ml, recurrent
from .graph import all_graphs, analyze

#: A bound on folding/inlining rounds; each round removes at least one node or nesting level.
MAX_ROUNDS = 64


def simplify(model: onnx.ModelProto) -> int:
    """Fold, inline and unroll until the model stops changing; returns the rewrites made."""
    total = 0
    for _ in range(MAX_ROUNDS):
        changed = (folding.fold_constants(model) + control_flow.inline_constant_ifs(model)
                   + control_flow.unroll_loops(model) + control_flow.unroll_scans(model))
        total += changed
        if not changed:
            break
    return total


def prepare(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The model rewritten for the importer (``model`` itself may be modified)."""
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    try:
        for _ in range(MAX_ROUNDS):  # an expansion may expose more to fold, and vice versa
            simplify(model)
            if not (control_flow.select_runtime_ifs(model) + recurrent.expand_recurrent(model)
                    + integer.rewrite_integer_ops(model) + onnx_ml.rewrite_ml_ops(model)):
                break
    except UnsupportedOpError as err:
        raise UnsupportedOpError(f"{source}: {err}") from None
    _refuse_loops(model, source)
    return model


def _refuse_loops(model: onnx.ModelProto, source: str) -> None:
    """One error naming the first Loop/Scan left (anywhere) and why it was not unrolled."""
    loops = [n for g in all_graphs(model.graph) for n in g.node if n.op_type in ("Loop", "Scan")]
    if loops:
        info = analyze(model)
        for node in loops:
            why = control_flow.refusal(node, info)
            if why is not None:
                raise UnsupportedOpError(f"{source}: {why}")
