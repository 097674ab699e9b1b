"""Control flow the compiler can resolve: static ``If`` branches, static-count loops.

* ``If`` whose condition is a constant (after folding) is replaced by the branch it takes.
  TVM's importer would compute *both* branches and select, and many exports guard
  shape-specific code with such Ifs (e.g. one branch per input rank), so inlining also
  lets the shape folding see through them.
* ``If`` decided at run time (e.g. on a sample-rate input) whose branches give outputs of
  the same static shapes becomes both branches and a ``Where``: what the importer computes
  too, without its If conversion (see ``select_runtime_ifs``).
* ``Loop`` with a constant trip count and a condition that stays true, and ``Scan`` (opset
  9+) over a static sequence length, are unrolled: the body once per iteration. The
  importer has no converter for either. Any other Loop/Scan is refused by ``refusal``'s
  one-line reason.

Inlining copies a subgraph into the main graph: every name defined inside gets a fresh
name, references to the enclosing scope stay as they are, and nested subgraphs see the
renamed values.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import Emitter, Info, attr, constant_value, is_default, rewrite_nodes, subgraphs

#: More iterations than this would make the unrolled graph unreasonably large.
MAX_UNROLL = 1024


def _copy_scope(graph: onnx.GraphProto, mapping: dict[str, str], info: Info, label: str) -> None:
    """Rename, in place, a nested subgraph of a node being copied: its reads from enclosing
    scopes through ``mapping``, and every name it defines afresh, so that the copies of one
    body (one per loop iteration) stay distinct."""
    local = dict(mapping)

    def define(name: str) -> str:
        local[name] = info.fresh(f"{label}_{name}")
        return local[name]

    for vi in graph.input:
        vi.name = define(vi.name)
    for init in graph.initializer:
        init.name = define(init.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = local.get(name, name)
        for sub in subgraphs(node):
            _copy_scope(sub, local, info, label)
        for i, name in enumerate(node.output):
            if name:
                node.output[i] = define(name)
        node.name = info.fresh(f"{label}_{node.name or node.op_type}")
    for out in graph.output:
        out.name = local.get(out.name, out.name)
    del graph.value_info[:]  # hints under the old names


def inline_graph(graph: onnx.GraphProto, bindings: dict[str, str], info: Info,
                 label: str) -> tuple[list[onnx.NodeProto], list[str]]:
    """Nodes computing ``graph`` in the enclosing scope, and the names of its outputs.

    ``bindings`` maps the subgraph's inputs to enclosing-scope values."""
    mapping = dict(bindings)
    nodes: list[onnx.NodeProto] = []
    for init in graph.initializer:
        mapping[init.name] = info.fresh(f"{label}_{init.name}")
        value = numpy_helper.to_array(init)
        nodes.append(helper.make_node("Constant", [], [mapping[init.name]],
                                      name=info.fresh(f"{label}_const"),
                                      value=numpy_helper.from_array(value, mapping[init.name])))
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for i, name in enumerate(copy.input):
            copy.input[i] = mapping.get(name, name)
        for sub in subgraphs(copy):
            _copy_scope(sub, mapping, info, label)
        for i, name in enumerate(copy.output):
            if name:
                mapping[name] = info.fresh(f"{label}_{name}")
                copy.output[i] = mapping[name]
        copy.name = info.fresh(f"{label}_{node.name or node.op_type}")
        nodes.append(copy)
    return nodes, [mapping.get(o.name, o.name) for o in graph.output]


def _truth(value: np.ndarray) -> bool | None:
    value = np.asarray(value)
    return bool(value.reshape(-1)[0]) if value.size == 1 else None


def _inline_if(node: onnx.NodeProto, info: Info) -> list[onnx.NodeProto] | None:
    """The taken branch of an If whose condition is a constant, else None."""
    if node.input[0] not in info.consts:
        return None
    taken = _truth(info.consts[node.input[0]])
    if taken is None:
        return None
    branch = attr(node, "then_branch" if taken else "else_branch")
    nodes, outs = inline_graph(branch, {}, info, node.name or "if")
    for target, source in zip(node.output, outs):
        if target:
            nodes.append(helper.make_node("Identity", [source], [target],
                                          name=info.fresh(f"{target}_if")))
    return nodes


def inline_constant_ifs(model: onnx.ModelProto) -> int:
    """Replace each ``If`` with a constant condition by its taken branch."""
    return rewrite_nodes(model, lambda n: n.op_type == "If" and is_default(n), _inline_if,
                         infer=False)


def _select(node: onnx.NodeProto, info: Info) -> list[onnx.NodeProto] | None:
    """Both branches of an If decided at run time, inlined, and a ``Where`` per output; None
    unless every output has one static shape and type in both branches."""
    then, other = attr(node, "then_branch"), attr(node, "else_branch")
    if info.opset < 9 or len(then.output) != len(other.output):  # Where: opset 9
        return None
    for a, b in zip(then.output, other.output):
        shape = info.static_shape(a.name)
        kind = info.elem_types.get(a.name)
        if shape is None or shape != info.static_shape(b.name) or kind is None \
                or kind != info.elem_types.get(b.name):
            return None
    label = node.name or "if"
    em = Emitter(info, label)
    cond = em.op("Reshape", [node.input[0], em.const(np.zeros(0, np.int64), "scalar")])
    then_nodes, then_outs = inline_graph(then, {}, info, f"{label}_then")
    else_nodes, else_outs = inline_graph(other, {}, info, f"{label}_else")
    em.nodes[:0] = then_nodes + else_nodes
    for target, a, b in zip(node.output, then_outs, else_outs):
        if target:
            em.op("Where", [cond, a, b], [target])
    return em.nodes


def select_runtime_ifs(model: onnx.ModelProto) -> int:
    """Replace each If decided at run time whose branches agree on their outputs' shapes by
    both branches and a ``Where``. TVM's importer computes both branches anyway (it emits
    them into the enclosing block and only selects the results), but its If conversion drops
    the dataflow block and fails on some graphs ("Var ... is not defined")."""
    return rewrite_nodes(model, lambda n: n.op_type == "If" and is_default(n), _select)


def _index_value(vi: onnx.ValueInfoProto, value, dtype) -> np.ndarray:
    """A body input's value in the rank the body declares (scalar unless it says [1])."""
    shape = vi.type.tensor_type.shape if vi.type.HasField("tensor_type") else None
    rank1 = shape is not None and len(shape.dim) == 1
    return np.array([value] if rank1 else value, dtype=dtype)


def _stays_true(body: onnx.GraphProto, consts: dict[str, np.ndarray]) -> bool:
    """Whether a Loop body's condition output is provably true whenever its input is."""
    producers = {o: n for n in body.node for o in n.output}
    local_consts = {t.name: numpy_helper.to_array(t) for t in body.initializer}
    name = body.output[0].name
    for _ in range(len(body.node) + 1):
        if len(body.input) > 1 and name == body.input[1].name:
            return True
        node = producers.get(name)
        value = (constant_value(node) if node is not None
                 else local_consts.get(name, consts.get(name)))
        if value is not None:
            return bool(_truth(value))
        if node is None or node.op_type != "Identity":
            return False
        name = node.input[0]
    return False


def _loop_trip_count(node: onnx.NodeProto, info: Info) -> tuple[int | None, str]:
    """(iterations, "") for a Loop the unroller can take, else (None, why not)."""
    m = node.input[0] if len(node.input) > 0 else ""
    cond = node.input[1] if len(node.input) > 1 else ""
    if cond and cond not in info.consts:
        return None, "its start condition is computed at run time"
    if cond and not _truth(info.consts[cond]):
        return 0, ""
    if not m:
        return None, "it has no trip count (a while loop)"
    if m not in info.consts:
        return None, ("its trip count is computed at run time (fix the input shapes with "
                      "--input-shape if it derives from them)")
    trip = int(np.asarray(info.consts[m]).reshape(-1)[0])
    if trip > MAX_UNROLL:
        return None, f"its trip count {trip} exceeds the unrolling limit {MAX_UNROLL}"
    if not _stays_true(attr(node, "body"), info.consts):
        return None, "its body computes the loop condition at run time (a while loop)"
    return max(trip, 0), ""


def _stack(em: Emitter, pieces: list[str], axis: int) -> str:
    """Pieces (each without the axis) stacked along a new ``axis``."""
    expanded = [em.unsqueeze(p, [axis]) for p in pieces]
    return expanded[0] if len(expanded) == 1 else em.op("Concat", expanded, axis=axis)


def _unroll_loop(node: onnx.NodeProto, info: Info) -> list[onnx.NodeProto] | None:
    """The iterations of a Loop with a static trip count, else None."""
    trip, _ = _loop_trip_count(node, info)
    body = attr(node, "body")
    carried = list(node.input[2:])
    n_scan = len(body.output) - 1 - len(carried)
    if trip is None or (trip == 0 and n_scan > 0):
        return None
    label = node.name or "loop"
    em = Emitter(info, label)
    true = em.const(_index_value(body.input[1], True, np.bool_), "cond")
    scans: list[list[str]] = [[] for _ in range(n_scan)]
    for i in range(trip):
        bindings = {body.input[0].name: em.const(_index_value(body.input[0], i, np.int64),
                                                 "iter"),
                    body.input[1].name: true}
        bindings.update({vi.name: v for vi, v in zip(body.input[2:], carried)})
        nodes, outs = inline_graph(body, bindings, info, f"{label}_it{i}")
        em.nodes.extend(nodes)
        carried = outs[1:1 + len(carried)]
        for k, out in enumerate(outs[1 + len(carried):]):
            scans[k].append(out)
    finals = carried + [_stack(em, pieces, 0) for pieces in scans]
    for target, source in zip(node.output, finals):
        if target:
            em.op("Identity", [source], [target])
    return em.nodes


def unroll_loops(model: onnx.ModelProto) -> int:
    """Unroll each ``Loop`` whose trip count is a constant (see ``_loop_trip_count``)."""
    return rewrite_nodes(model, lambda n: n.op_type == "Loop" and is_default(n), _unroll_loop,
                         infer=False)


def _scan_plan(node: onnx.NodeProto, info: Info) -> tuple[int | None, str]:
    """(sequence length, "") for a Scan the unroller can take, else (None, why not)."""
    if info.opset < 9:
        return None, "Scan before opset 9 (batched, with sequence_lens) is not supported"
    m = int(attr(node, "num_scan_inputs"))
    scan_inputs = list(node.input[len(node.input) - m:])
    axes = list(attr(node, "scan_input_axes", [0] * m))
    lengths = set()
    for x, axis in zip(scan_inputs, axes):
        shape = info.shapes.get(x)
        if shape is None:
            return None, f"the rank of its scan input '{x}' is unknown"
        length = shape[axis + len(shape) if axis < 0 else axis]
        if length is None:
            return None, (f"the sequence length of its scan input '{x}' is not fixed (fix the "
                          "input shapes with --input-shape)")
        lengths.add(int(length))
    if len(lengths) != 1:
        return None, "its scan inputs have different sequence lengths"
    length = lengths.pop()
    if length > MAX_UNROLL:
        return None, f"its sequence length {length} exceeds the unrolling limit {MAX_UNROLL}"
    if length == 0:
        return None, "its sequence length is 0"
    return length, ""


def _unroll_scan(node: onnx.NodeProto, info: Info) -> list[onnx.NodeProto] | None:
    """The steps of a Scan over a static sequence length, else None."""
    length, _ = _scan_plan(node, info)
    if length is None:
        return None
    body = attr(node, "body")
    m = int(attr(node, "num_scan_inputs"))
    states = list(node.input[:len(node.input) - m])
    scan_inputs = list(node.input[len(node.input) - m:])
    in_axes = list(attr(node, "scan_input_axes", [0] * m))
    in_dirs = list(attr(node, "scan_input_directions", [0] * m))
    k = len(body.output) - len(states)
    out_axes = list(attr(node, "scan_output_axes", [0] * k))
    out_dirs = list(attr(node, "scan_output_directions", [0] * k))
    label = node.name or "scan"
    em = Emitter(info, label)
    scans: list[list[str]] = [[] for _ in range(k)]
    for t in range(length):
        elements = [em.take(x, length - 1 - t if d else t, axis)
                    for x, axis, d in zip(scan_inputs, in_axes, in_dirs)]
        bindings = {vi.name: v for vi, v in zip(body.input, states + elements)}
        nodes, outs = inline_graph(body, bindings, info, f"{label}_t{t}")
        em.nodes.extend(nodes)
        states = outs[:len(states)]
        for j, out in enumerate(outs[len(states):]):
            scans[j].append(out)
    stacked = [_stack(em, pieces[::-1] if d else pieces, axis)
               for pieces, axis, d in zip(scans, out_axes, out_dirs)]
    for target, source in zip(node.output, states + stacked):
        if target:
            em.op("Identity", [source], [target])
    return em.nodes


def unroll_scans(model: onnx.ModelProto) -> int:
    """Unroll each ``Scan`` over a static sequence length (see ``_scan_plan``)."""
    return rewrite_nodes(model, lambda n: n.op_type == "Scan" and is_default(n), _unroll_scan)


def refusal(node: onnx.NodeProto, info: Info) -> str | None:
    """Why a Loop/Scan left in the graph cannot be compiled (None for other nodes)."""
    if not is_default(node):
        return None
    if node.op_type == "Loop":
        trip, why = _loop_trip_count(node, info)
        n_scan = len(attr(node, "body").output) - 1 - len(node.input[2:])
        if trip == 0 and n_scan > 0:
            why = "it runs zero times and has scan outputs (empty, of unknown shape)"
        return f"Loop node '{node.name}': {why}; hwcompile compiles loops by unrolling them"
    if node.op_type == "Scan":
        _, why = _scan_plan(node, info)
        return f"Scan node '{node.name}': {why}; hwcompile compiles scans by unrolling them"
    return None
