"""What the ONNX→ONNX rewrites share: constants, static shapes, fresh names, node emission.

Every rewrite edits a ``ModelProto`` in place and sees the same facts through ``Info``
(``analyze``): the default-domain opset, the value of every constant (initializers and
``Constant`` nodes) and the static shapes onnx shape inference derives *from the inputs and
constants only* (declared intermediate/output shapes are dropped first: exporters sometimes
declare shapes a run-time input contradicts).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import UnsupportedOpError

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class Info:
    """What the rewrites may know about a model: opset, constants, static shapes."""

    opset: int
    #: name -> value of every tensor TVM imports as a constant (initializers, Constant nodes)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    #: name -> shape (ints, or None for an unknown dim); missing = unknown rank
    shapes: dict[str, list[int | None]] = field(default_factory=dict)
    #: name -> ONNX element type, where inference knows it
    elem_types: dict[str, int] = field(default_factory=dict)
    _used: set[str] = field(default_factory=set)

    def fresh(self, base: str) -> str:
        """A value/node name not used anywhere in the model (subgraphs included) yet."""
        i = 0
        name = f"{base}__hwc"
        while name in self._used:
            i += 1
            name = f"{base}__hwc{i}"
        self._used.add(name)
        return name

    def static_shape(self, name: str) -> list[int] | None:
        shape = self.shapes.get(name)
        if shape is None or any(d is None for d in shape):
            return None
        return [int(d) for d in shape]


def opset_of(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    return 1


def is_default(node: onnx.NodeProto) -> bool:
    return node.domain in DEFAULT_DOMAINS


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held in a node's attributes (If branches, Loop/Scan bodies)."""
    found = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            found.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            found.extend(a.graphs)
    return found


def outer_refs(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads from enclosing scopes: used but not defined inside it."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(i for i in node.input if i and i not in defined)
        for sub in subgraphs(node):
            used.update(n for n in outer_refs(sub) if n not in defined)
        defined.update(o for o in node.output if o)
    used.update(o.name for o in graph.output if o.name not in defined)
    return used


def node_reads(node: onnx.NodeProto) -> list[str]:
    """Every value a node reads: its inputs and what its subgraphs read from outside."""
    reads = [i for i in node.input if i]
    for sub in subgraphs(node):
        reads.extend(sorted(outer_refs(sub)))
    return reads


def all_names(graph: onnx.GraphProto, into: set[str] | None = None) -> set[str]:
    """Every value and node name in a graph and its subgraphs."""
    names = set() if into is None else into
    names.update(v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info))
    names.update(t.name for t in graph.initializer)
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
        for sub in subgraphs(node):
            all_names(sub, names)
    return names


def constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a default-domain Constant node (None for sparse/string forms)."""
    if node.op_type != "Constant" or not is_default(node):
        return None
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None


def all_graphs(graph: onnx.GraphProto, branches_only: bool = False):
    """A graph and, recursively, every subgraph of its nodes (outer ones first);
    ``branches_only`` skips loop bodies (values there change from one iteration to the next)."""
    yield graph
    for node in graph.node:
        if branches_only and node.op_type != "If":
            continue
        for sub in subgraphs(node):
            yield from all_graphs(sub, branches_only)


def graph_constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant outputs of a graph and its subgraphs (ONNX names are unique
    across scopes)."""
    consts = {}
    for g in all_graphs(graph):
        consts.update({t.name: numpy_helper.to_array(t) for t in g.initializer})
        for node in g.node:
            value = constant_value(node)
            if value is not None:
                consts[node.output[0]] = value
    return consts


def analyze(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None,
            infer: bool = True) -> Info:
    """Constants, static shapes and the name supply of ``model``; ``input_shapes`` (name ->
    dims) sharpens shape inference without changing the model; ``infer=False`` skips shape
    inference (constants and names only)."""
    info = Info(opset=opset_of(model))
    info.consts = graph_constants(model.graph)
    info._used = all_names(model.graph)
    info._used |= set(info.consts)
    if not infer:
        return info

    # shape inference on a scratch copy whose inputs carry the caller's concrete shapes
    scratch = onnx.ModelProto()
    scratch.CopyFrom(model)
    if input_shapes:
        for vi in scratch.graph.input:
            if vi.name in input_shapes and vi.type.HasField("tensor_type"):
                dims = vi.type.tensor_type.shape
                dims.ClearField("dim")
                for d in input_shapes[vi.name]:
                    dims.dim.add().dim_value = int(d)
    # trust only what follows from the inputs and constants (see the module docstring)
    del scratch.graph.value_info[:]
    for vi in scratch.graph.output:
        if vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")
    _lend_constants(scratch.graph, info.consts)
    try:
        scratch = onnx.shape_inference.infer_shapes(scratch, data_prop=True)
    except Exception as exc:  # best effort: shape-needing rewrites skip
        warnings.warn(f"onnx shape inference failed ({exc}); shape-dependent rewrites skipped",
                      stacklevel=3)
    infos = [vi for g in all_graphs(scratch.graph)
             for vi in list(g.input) + list(g.value_info) + list(g.output)]
    for vi in infos:
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            continue
        if tt.elem_type:
            info.elem_types[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            info.shapes[vi.name] = [
                d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                for d in tt.shape.dim
            ]
    for name, value in info.consts.items():
        info.shapes[name] = list(value.shape)
        info.elem_types[name] = helper.np_dtype_to_tensor_dtype(value.dtype)
    return info


#: Constants up to this size are copied into subgraphs for shape inference (see below).
_LENT_ELEMENTS = 1 << 16


def _lend_constants(graph: onnx.GraphProto, consts: dict[str, np.ndarray]) -> None:
    """Give each subgraph (of a scratch copy) the small outer-scope constants it reads, as
    its own initializers: onnx shape inference uses the values of a subgraph's own
    initializers (e.g. a Pad's pads) but not those of outer ones."""
    for node in graph.node:
        for sub in subgraphs(node):
            have = {t.name for t in sub.initializer}
            for name in sorted(outer_refs(sub)):
                value = consts.get(name)
                if value is not None and name not in have and value.size <= _LENT_ELEMENTS:
                    sub.initializer.append(numpy_helper.from_array(value, name))
            _lend_constants(sub, consts)


def splice(model: onnx.ModelProto | onnx.GraphProto,
           replace: dict[int, list[onnx.NodeProto]]) -> None:
    """Replace node ``i`` of the (main) graph by ``replace[i]`` (in order) for every index
    given, in one pass.

    Rewrites record replacements while iterating the live node list and splice once at the
    end, so node handles stay valid during the walk (a list rebuild detaches them).
    """
    if not replace:
        return
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    new_nodes: list[onnx.NodeProto] = []
    for i, n in enumerate(graph.node):
        new_nodes.extend(replace.get(i, [n]))
    copies = [onnx.NodeProto() for _ in new_nodes]
    for c, n in zip(copies, new_nodes):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def remove_unused(model: onnx.ModelProto) -> int:
    """In every graph, drop nodes none of whose outputs is read (by a node, a subgraph or the
    graph's outputs) and initializers nothing reads; returns the number of nodes removed."""
    return sum(_remove_unused(g) for g in reversed(list(all_graphs(model.graph))))


def _remove_unused(g: onnx.GraphProto) -> int:
    live = {o.name for o in g.output}
    keep = []
    for node in reversed(g.node):
        if any(o in live for o in node.output if o):
            keep.append(node)
            live.update(node_reads(node))
    removed = len(g.node) - len(keep)
    if removed:
        kept = [onnx.NodeProto() for _ in keep]
        for c, n in zip(kept, reversed(keep)):
            c.CopyFrom(n)
        del g.node[:]
        g.node.extend(kept)
    inits = [t for t in g.initializer if t.name in live]
    if len(inits) != len(g.initializer):
        kept_inits = [onnx.TensorProto() for _ in inits]
        for c, t in zip(kept_inits, inits):
            c.CopyFrom(t)
        del g.initializer[:]
        g.initializer.extend(kept_inits)
    return removed


def rewrite_nodes(model: onnx.ModelProto, select: Callable[[onnx.NodeProto], bool],
                  rewrite: Callable[[onnx.NodeProto, Info], list[onnx.NodeProto] | None],
                  infer: bool = True) -> int:
    """Replace each node ``select`` picks, in the main graph and in subgraphs (the branches
    of an If decided at run time), by the nodes ``rewrite`` returns (None keeps it); returns
    how many were replaced. Subgraphs are rewritten before the graphs holding them, whose
    rewrite may copy them."""
    graphs = [g for g in all_graphs(model.graph) if any(select(n) for n in g.node)]
    if not graphs:
        return 0
    info = analyze(model, infer=infer)
    count = 0
    for graph in reversed(graphs):
        replace = {}
        for idx, node in enumerate(graph.node):
            if select(node):
                try:
                    nodes = rewrite(node, info)
                except UnsupportedOpError as err:
                    raise UnsupportedOpError(f"{err}{_whereabouts(model.graph, graph)}") from None
                if nodes is not None:
                    replace[idx] = nodes
        splice(graph, replace)
        count += len(replace)
    return count


def _whereabouts(main: onnx.GraphProto, graph: onnx.GraphProto) -> str:
    """Where a subgraph sits, for errors: which node's branch or body holds it."""
    if graph is main:
        return ""
    for outer in all_graphs(main):
        for node in outer.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH and a.g is graph:
                    if node.op_type == "If":
                        return (f" (in the {a.name.replace('_', ' ')} of If node '{node.name}', "
                                "decided at run time: both branches are compiled, so each must "
                                "fit the given input shapes)")
                    return f" (in the {a.name} of {node.op_type} node '{node.name}')"
    return ""


def add_initializer(model: onnx.ModelProto, info: Info, base: str, value: np.ndarray) -> str:
    name = info.fresh(base)
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    info.consts[name] = np.asarray(value)
    info.shapes[name] = list(np.asarray(value).shape)
    return name


class Emitter:
    """Appends default-domain nodes to ``nodes``, in the form the model's opset expects
    (``axes``/``split`` moved from attributes to inputs at opset 13, ``Split`` needs
    ``num_outputs`` from 18)."""

    def __init__(self, info: Info, label: str):
        self.info, self.label, self.nodes = info, label, []

    def op(self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1,
           **attrs) -> str | list[str]:
        names = ([self.info.fresh(f"{self.label}_{op_type.lower()}") for _ in range(outputs)]
                 if isinstance(outputs, int) else list(outputs))
        self.nodes.append(helper.make_node(op_type, list(inputs), names,
                                           name=self.info.fresh(f"{self.label}_{op_type}"),
                                           **attrs))
        return names[0] if len(names) == 1 else names

    def const(self, value, base: str = "const") -> str:
        value = np.asarray(value)
        name = self.info.fresh(f"{self.label}_{base}")
        self.nodes.append(helper.make_node("Constant", [], [name], name=self.info.fresh(name),
                                           value=numpy_helper.from_array(value, name)))
        self.info.consts[name] = value
        return name

    def unsqueeze(self, x: str, axes: Sequence[int], out: str | None = None) -> str:
        outs = 1 if out is None else [out]
        if self.info.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(np.array(axes, np.int64), "axes")], outs)
        return self.op("Unsqueeze", [x], outs, axes=list(axes))

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        if self.info.opset >= 13:
            return self.op("Squeeze", [x, self.const(np.array(axes, np.int64), "axes")])
        return self.op("Squeeze", [x], axes=list(axes))

    def split(self, x: str, parts: int, axis: int) -> list[str]:
        """``parts`` equal pieces along ``axis``."""
        if parts == 1:
            return [x]
        if self.info.opset >= 18:
            return self.op("Split", [x], parts, axis=axis, num_outputs=parts)
        return self.op("Split", [x], parts, axis=axis)

    def take(self, x: str, index: int, axis: int) -> str:
        """``x``'s slice ``index`` along ``axis``, that axis removed (Gather, scalar index)."""
        return self.op("Gather", [x, self.const(np.array(index, np.int64), "index")], axis=axis)
