"""Compile-time evaluation of shape computations, at the ONNX level, before the Relax import.

Exporters compute shapes in the graph (``Shape → Gather → Concat → Reshape``, resize sizes
from ``Cast(Shape) * scale``, ``ConstantOfShape``, ``Range`` …). TVM's importer refuses most
of these when they reach it as tensors, even when every input shape is fixed. Once the
inputs are static, ``fold_constants`` replaces each such node by a ``Constant`` holding its
value: ``Shape``/``Size`` of a tensor whose shape onnx shape inference derives from the
inputs, and any default-domain node whose inputs are all constant. Values are computed by
``onnx.reference`` (the ONNX spec's own evaluator), the way the node itself would compute
them, so folding does not change results; a node the evaluator cannot run is left alone.

Left for the graph (and the Relax passes): results over ``MAX_ELEMENTS`` elements, nodes
reading float weights (initializers over one element: pruning and quantization want them
as named weights), quantize/dequantize nodes (QDQ lowering matches them), random ops, and
nodes with subgraphs (``control_flow`` inlines or unrolls those).

Why not onnxslim or onnxsim (both on PyPI; tried here, onnxslim 0.1.98 and onnxsim 0.8.1,
on three small models with the constructs above: Shape→Gather→Concat→Reshape, torch's
resize sizes from ``Cast(Shape) * scale``, an If on a shape-derived condition, inputs
fixed): both fold all three correctly (onnxruntime gives the same outputs). But onnxslim
pulls in sympy and mpmath (~85 MB), onnxsim is a 38 MB native wheel that bundles
quantization and LLM tooling, and by default both also fuse batch-norm into convolutions
and rename the weights (``w``, ``b`` → ``bn_weight``/``bn_bias`` resp. ``_v_17``…), which
is the pass pipeline's job and breaks the weight names users address (``prune(ignore=…)``);
they would have to run with their optimizers off. Neither unrolls loops or expands
recurrent cells, which hwcompile needs anyway. This folder is onnx shape inference +
``onnx.reference``: no new dependency, and it folds only what the import needs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import (
    Info,
    all_graphs,
    analyze,
    constant_value,
    is_default,
    remove_unused,
    splice,
    subgraphs,
)

#: Results larger than this stay computed at run time (shapes, indices and scalars are tiny).
MAX_ELEMENTS = 1 << 16
#: Folding these would change what later stages see (QDQ patterns) or what a run computes.
NEVER_FOLD = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
    "Multinomial", "Bernoulli",
})
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.BFLOAT16}


def _is_source(init: onnx.TensorProto) -> bool:
    """Initializers folding may read: everything but float weights (one-element floats,
    such as a resize scale, are constants of the shape arithmetic, not weights)."""
    size = int(np.prod(init.dims)) if init.dims else 1
    return init.data_type not in _FLOAT_TYPES or size <= 1


def _too_big(shape: list[int | None] | None) -> bool:
    return shape is not None and None not in shape and int(np.prod(shape)) > MAX_ELEMENTS


def _static_shape_value(node: onnx.NodeProto, shape: list[int]) -> np.ndarray:
    """The value of ``Shape`` (with its opset-15 ``start``/``end``) or ``Size``."""
    if node.op_type == "Size":
        return np.array(int(np.prod(shape)), dtype=np.int64)
    start = end = None
    for a in node.attribute:
        if a.name == "start":
            start = a.i
        elif a.name == "end":
            end = a.i
    # python slicing clamps out-of-range bounds exactly as Shape-15 specifies
    return np.array(shape[start:end], dtype=np.int64)


def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto],
              known: dict[str, object]) -> dict[str, object]:
    """Values of every output of ``nodes`` that the reference evaluator computes; all at
    once, else node by node (skipping a node it cannot run and what depends on it)."""
    from onnx.reference import ReferenceEvaluator

    def run(batch: list[onnx.NodeProto], values: dict[str, object]) -> dict[str, object] | None:
        produced = {o for n in batch for o in n.output if o}
        needed = sorted({i for n in batch for i in n.input if i and i not in produced})
        inits = [numpy_helper.from_array(np.asarray(values[i]), i) for i in needed]
        outputs = [onnx.ValueInfoProto(name=o) for n in batch for o in n.output if o]
        graph = helper.make_graph(batch, "fold", [], outputs, inits)
        sub = helper.make_model(graph, opset_imports=list(model.opset_import))
        sub.ir_version = model.ir_version
        try:
            results = ReferenceEvaluator(sub).run(None, {})
        except Exception:  # a node the evaluator rejects: the caller narrows it down
            return None
        return dict(zip((o.name for o in outputs), results))

    if not nodes:
        return {}
    together = run(nodes, known)
    if together is not None:
        return together
    values = dict(known)
    found: dict[str, object] = {}
    for node in nodes:
        if all(i in values for i in node.input if i):
            result = run([node], values) or {}
            values.update(result)
            found.update(result)
    return found


def _constant_node(name: str, value: np.ndarray, label: str) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=label,
                            value=numpy_helper.from_array(np.asarray(value), name))


def fold_constants(model: onnx.ModelProto) -> int:
    """Replace every node computable at compile time (see the module docstring) by Constant
    nodes of the same output names, in the main graph and in If branches (not loop bodies:
    their values change between iterations); returns the number of nodes replaced."""
    info = analyze(model)
    graphs = list(all_graphs(model.graph, branches_only=True))
    # one table for all scopes (ONNX names are unique across them); outer graphs come first
    known: dict[str, object] = {t.name: numpy_helper.to_array(t) for g in graphs
                                for t in g.initializer if _is_source(t)}
    plans = [_fold_plan(model, graph, info, known) for graph in graphs]
    for graph, replace in reversed(list(zip(graphs, plans))):  # inner graphs before outer
        splice(graph, replace)
    remove_unused(model)
    return sum(len(plan) for plan in plans)


def _fold_plan(model: onnx.ModelProto, graph: onnx.GraphProto, info: Info,
               known: dict[str, object]) -> dict[int, list[onnx.NodeProto]]:
    """Which nodes of ``graph`` become which Constant nodes; adds their values to ``known``."""
    replace: dict[int, list[onnx.NodeProto]] = {}
    pending: list[int] = []
    for idx, node in enumerate(graph.node):
        if not is_default(node) or subgraphs(node):
            continue
        if node.op_type == "Constant":
            value = constant_value(node)
            if value is not None:
                known[node.output[0]] = value
            continue
        if node.op_type in ("Shape", "Size"):
            shape = info.static_shape(node.input[0])
            if shape is not None:
                value = _static_shape_value(node, shape)
                known[node.output[0]] = value
                replace[idx] = [_constant_node(node.output[0], value, f"{node.output[0]}_folded")]
                continue
        inputs = [i for i in node.input if i]
        if (node.op_type in NEVER_FOLD or not inputs or not all(i in known for i in inputs)
                or any(_too_big(info.shapes.get(o)) for o in node.output if o)):
            continue
        pending.append(idx)
        for o in node.output:
            if o:
                known[o] = None  # computed below; marks the value as compile-time
    sources = {k: v for k, v in known.items() if v is not None}
    values = _evaluate(model, [graph.node[i] for i in pending], sources)
    for idx in pending:
        outs = [o for o in graph.node[idx].output if o]
        results = [values.get(o) for o in outs]
        for o, r in zip(outs, results):
            known[o] = r
        if all(isinstance(r, np.ndarray) and r.size <= MAX_ELEMENTS for r in results):
            replace[idx] = [_constant_node(o, r, f"{o}_folded") for o, r in zip(outs, results)]
    for name in [k for k, v in known.items() if v is None]:
        del known[name]  # the evaluator could not compute it: not a compile-time value
    return replace
