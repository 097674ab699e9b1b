"""networkx view of a Model's Relax dataflow, and per-layer figures (shapes, params, MACs).

The view is built on demand for analyses and drawings; it never owns the model.
Nodes are named by Relax variable: model inputs (kind="input"), weights (kind="weight"),
and bindings (kind="op", with the operator name, output shape and dtype).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
from tvm import relax

from .errors import HwcompileError
from .model import Model, shape_of
from .rewrite import call_name, dataflow_bindings, free_vars

# Operators shown in layer listings; the rest (reshapes, tuple plumbing) are folded away.
_SHOWN = ("relax.nn.", "relax.matmul", "relax.add", "relax.multiply", "relax.concat",
          "relax.split", "relax.mean", "relax.max", "relax.quantize", "relax.dequantize",
          "relax.subtract", "relax.clip", "relax.permute_dims", "relax.reshape")


@dataclass(frozen=True)
class Layer:
    var: str
    op: str
    shape: tuple
    dtype: str
    weights: tuple[str, ...]
    params: int
    macs: int


def _tensor_shape(ty) -> tuple:
    return shape_of(ty) if isinstance(ty, relax.TensorType) and ty.shape is not None else ()


def _numel(shape: tuple) -> int:
    """Element count, counting a symbolic dimension (the batch, usually) as 1."""
    return int(np.prod([d if isinstance(d, int) else 1 for d in shape], dtype=np.int64))


MAC_OPS = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d", "relax.nn.conv2d_transpose",
           "relax.matmul", "relax.nn.dense", "relax.linear")


def macs(call: relax.Call) -> int:
    """Multiply-accumulates of one conv/matmul call (a symbolic dimension counts as 1)."""
    op, out_shape = call_name(call), _tensor_shape(call.ty)
    if op == "relax.nn.conv2d_transpose":  # each input: (Cout/groups) × kernel
        return _numel(_tensor_shape(call.args[0].ty)) * _numel(_tensor_shape(call.args[1].ty)[1:])
    if op in ("relax.nn.conv2d", "relax.nn.conv1d", "relax.nn.conv3d"):
        w_shape = _tensor_shape(call.args[1].ty)
        return _numel(out_shape) * _numel(w_shape[1:])  # each output: Cin/groups × kernel
    if op in ("relax.matmul", "relax.nn.dense", "relax.linear"):
        k = _tensor_shape(call.args[0].ty)[-1]
        return _numel(out_shape) * (k if isinstance(k, int) else 1)
    return 0


def layers(model: Model) -> list[Layer]:
    """Per-binding figures for every operator call in ``main``."""
    weight_names = {v: v.name for v in model.param_vars}
    result = []
    for binding in dataflow_bindings(model.main):
        op = call_name(binding.value)
        if op is None:
            continue
        weights = tuple(weight_names[a] for a in binding.value.args if a in weight_names)
        out_shape = _tensor_shape(binding.var.ty)
        result.append(Layer(
            var=binding.var.name,
            op=op.removeprefix("relax."),
            shape=out_shape,
            dtype=str(getattr(binding.var.ty, "dtype", "")),
            weights=weights,
            params=sum(int(model.params[w].size) for w in weights),
            macs=macs(binding.value),
        ))
    return result


def total_macs(model: Model) -> int:
    return sum(layer.macs for layer in layers(model))


def to_networkx(model: Model) -> nx.DiGraph:
    """The dataflow of ``main`` as a DiGraph (see module docstring)."""
    graph = nx.DiGraph()
    main = model.main
    for spec, var in zip(model.inputs, main.params):
        graph.add_node(var.name, kind="input", shape=spec.shape, dtype=spec.dtype)
    for var in model.param_vars:
        array = model.params[var.name]
        graph.add_node(var.name, kind="weight", shape=array.shape, dtype=str(array.dtype))
    for binding in dataflow_bindings(main):
        name = binding.var.name
        graph.add_node(name, kind="op", op=call_name(binding.value) or type(binding.value).__name__,
                       shape=_tensor_shape(binding.var.ty), dtype=str(getattr(binding.var.ty, "dtype", "")))
        for used in free_vars(binding.value):
            graph.add_edge(used.name, name)
    for spec, var in zip(model.outputs, _output_vars(main)):
        graph.add_node(f"output:{spec.name}", kind="output", shape=spec.shape, dtype=spec.dtype)
        graph.add_edge(var.name, f"output:{spec.name}")
    return graph


def _output_vars(main: relax.Function) -> list[relax.Var]:
    result = main.body.body
    if isinstance(result, relax.Tuple):
        return list(result.fields)
    return [result]


def to_dot(model: Model) -> str:
    """Graphviz DOT text of the dataflow; weights are folded into their consumer's label."""
    graph = to_networkx(model)
    lines = [f'digraph "{model.name}" {{', "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    for name, data in graph.nodes(data=True):
        if data["kind"] == "weight":
            continue
        shape = "x".join(map(str, data["shape"]))
        if data["kind"] == "op":
            weights = [p for p in graph.predecessors(name) if graph.nodes[p]["kind"] == "weight"]
            extra = "".join(f"\\n{w} {'x'.join(map(str, graph.nodes[w]['shape']))}" for w in weights)
            label = f"{data['op'].removeprefix('relax.')}\\n{shape}{extra}"
            lines.append(f'  "{name}" [shape=box, label="{label}"];')
        else:
            lines.append(f'  "{name}" [shape=ellipse, style=filled, fillcolor=lightgrey, '
                         f'label="{name.removeprefix("output:")}\\n{shape}"];')
    for src, dst in graph.edges:
        if graph.nodes[src]["kind"] != "weight":
            lines.append(f'  "{src}" -> "{dst}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(model: Model, path: str | Path) -> Path:
    """Write the model's graph as .dot, or render .svg/.png (see ``render_dot``)."""
    return render_dot(to_dot(model), path)


def render_dot(dot_text: str, path: str | Path) -> Path:
    """Write DOT text as .dot, or render it to .svg/.png through Graphviz's ``dot``."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt == "dot":
        path.write_text(dot_text)
        return path
    if fmt not in ("svg", "png"):
        raise HwcompileError(f"--graph {path}: unknown format '.{fmt}', use .dot, .svg or .png")
    dot = shutil.which("dot")
    if dot is None:
        raise HwcompileError(f"--graph {path}: rendering .{fmt} needs Graphviz's 'dot' "
                             "(apt-get install graphviz), or write .dot instead")
    subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=dot_text.encode(), check=True)
    return path
