"""ONNX-level rewrites that route around gaps in TVM 0.27's Relax ONNX importer.

``legalize(model)`` returns a rewritten *copy* of an ONNX model that computes the same
function but only uses constructs ``tvm.relax.frontend.onnx.from_onnx`` imports correctly.
Each rewrite is a small function ``(model, info) -> int`` (number of nodes changed) with a
docstring naming the importer gap it covers; ``legalize`` applies them in ``REWRITES`` order.
Every rewrite keeps the model's opset (old-opset models stay valid for that opset) and leaves
a node alone whenever it cannot prove the replacement equivalent (unknown ranks/dims,
non-constant operands), so legalization never makes a model worse.

Gaps covered (TVM 0.27.0.post1, ``tvm/relax/frontend/onnx/onnx_frontend.py``):

* ``PRelu`` before opset 7 applies a 1-D slope per *channel* (axis 1); the converter
  has a single implementation that broadcasts it numpy-style (last axis), which fails to
  build (or silently picks the wrong axis when C equals the last dim).
  -> :func:`prelu_channel_slope`
* ``Slice`` before opset 10 takes starts/ends/axes as attributes; the converter only has
  the opset-13 form reading them from inputs and fails ("Cannot cast NoneType to list of
  Expr"). -> :func:`slice_attrs_to_split`
* ``Expand`` with a non-constant shape: for a run-time shape tensor the converter
  broadcasts straight to the shape values, so a shape with fewer dims than the input fails
  to import, and a target dim of 1 where the input dim is >1 yields the wrong shape (ONNX
  keeps the input dim); for a shape built from ``Shape`` ops a shorter shape trips an
  assertion. -> :func:`expand_runtime_shape`
* ``SplitToSequence`` is imported as a bare ``split`` call, not a tuple, so any consumer
  that needs the sequence's length (``SequenceLength``, ``ConcatFromSequence``...) fails.
  -> :func:`split_to_sequence_static`
* ``SequenceInsert`` with a negative position inserts one slot too far right (-1 appends,
  ONNX inserts before the last element). -> :func:`sequence_insert_position`

Every gap found on the onnx wheel's test models could be fixed at the ONNX level, so there
is no post-import (Relax) fix-up. Rewrites look at the main graph only (not If/Loop/Scan
bodies).
Operators the importer lacks altogether are the other modules' business (recurrent
cells, integer convolutions, control flow); nothing helps ``Gradient``, string ops or
sequences whose split sizes are only known at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from .graph import Info, add_initializer, analyze, attr, is_default, splice

__all__ = [
    "REWRITES",
    "expand_runtime_shape",
    "legalize",
    "prelu_channel_slope",
    "sequence_insert_position",
    "slice_attrs_to_split",
    "split_to_sequence_static",
]


def _pad_leading_ones(model: onnx.ModelProto, info: Info, shape: str, count: int, label: str,
                      nodes: list[onnx.NodeProto]) -> str:
    """A 1-D shape tensor ``shape`` with ``count`` leading 1s (a Concat appended to
    ``nodes``): the shape broadcast against one of higher rank."""
    ones = add_initializer(model, info, "expand_pad", np.ones(count, dtype=np.int64))
    padded = info.fresh(f"{shape}_padded")
    nodes.append(helper.make_node("Concat", [ones, shape], [padded], axis=0, name=info.fresh(label)))
    return padded


def _depends_on(model: onnx.ModelProto, name: str, op_types: set[str]) -> bool:
    """Whether value ``name`` is computed (transitively) from a node of ``op_types``."""
    producer = {o: n for n in model.graph.node for o in n.output}
    seen, stack = set(), [name]
    while stack:
        v = stack.pop()
        node = producer.get(v)
        if node is None or v in seen:
            continue
        seen.add(v)
        if node.op_type in op_types:
            return True
        stack.extend(node.input)
    return False


def prelu_channel_slope(model: onnx.ModelProto, info: Info) -> int:
    """PRelu before opset 7: reshape a 1-D per-channel slope ``[C]`` to ``[C, 1, ..., 1]``.

    Gap: PRelu-1/6 applies a 1-D slope along the channel axis (axis 1); TVM's single
    ``PRelu._impl_v1`` uses numpy broadcasting instead (slope on the *last* axis), so
    ``x[N, C, L]`` with ``slope[C]`` fails to build, or is silently wrong when ``C == L``.
    ``[C, 1, ..., 1]`` is broadcast on axis 1 under both readings, so the rewritten model
    means the same to any opset-6 runtime and imports correctly.
    """
    if info.opset >= 7:
        return 0
    changed = 0
    replace: dict[int, list[onnx.NodeProto]] = {}
    for idx, node in enumerate(model.graph.node):
        if node.op_type != "PRelu" or not is_default(node) or len(node.input) < 2:
            continue
        x_shape = info.shapes.get(node.input[0])
        s_shape = info.shapes.get(node.input[1])
        if x_shape is None or s_shape is None or len(x_shape) < 3 or len(s_shape) != 1:
            continue
        c = s_shape[0]
        if c is None or c == 1 or (x_shape[1] is not None and x_shape[1] != c):
            continue
        new_shape = np.array([c] + [1] * (len(x_shape) - 2), dtype=np.int64)
        slope = node.input[1]
        if slope in info.consts and any(i.name == slope for i in model.graph.initializer):
            # fold the reshape into a fresh constant (the original may have other users)
            value = info.consts[slope].reshape(new_shape)
            node.input[1] = add_initializer(model, info, slope, value)
        else:
            shape_name = add_initializer(model, info, f"{slope}_shape", new_shape)
            out = info.fresh(f"{slope}_per_channel")
            reshape = helper.make_node(
                "Reshape", [slope, shape_name], [out], name=info.fresh("prelu_slope_reshape")
            )
            node.input[1] = out
            replace[idx] = [reshape, node]
        changed += 1
    splice(model, replace)
    return changed


def slice_attrs_to_split(model: onnx.ModelProto, info: Info) -> int:
    """Slice before opset 10 (attributes starts/ends/axes): rewrite as one Split per axis.

    Gap: the importer only has ``Slice._impl_v13``, which reads starts/ends from inputs, so
    attribute-form Slice (opset 1-9) fails to import. Inside the same opset the equivalent
    is ``Split(x, split=[before, length, after])`` keeping the middle piece; the importer
    lowers that to strided slices. Needs the sliced dims statically known (to clamp
    INT_MAX/negative bounds); an empty slice is left alone.
    """
    if info.opset >= 10:
        return 0
    changed = 0
    replace: dict[int, list[onnx.NodeProto]] = {}
    for idx, node in enumerate(model.graph.node):
        if node.op_type != "Slice" or not is_default(node) or len(node.input) != 1:
            continue
        starts = attr(node, "starts")
        ends = attr(node, "ends")
        if starts is None or ends is None:
            continue
        shape = info.shapes.get(node.input[0])
        if shape is None:
            continue
        axes = attr(node, "axes", list(range(len(starts))))
        plan = []
        ok = True
        cur_shape = list(shape)
        for ax, st, en in zip(axes, starts, ends):
            ax = ax + len(shape) if ax < 0 else ax
            dim = cur_shape[ax] if 0 <= ax < len(cur_shape) else None
            if dim is None:
                ok = False
                break
            st = min(max(st + dim if st < 0 else st, 0), dim)
            en = min(max(en + dim if en < 0 else en, 0), dim)
            if en <= st:
                ok = False  # empty result: Split cannot express a 0-length piece here
                break
            pieces = [p for p in (st, en - st, dim - en)]
            plan.append((ax, pieces))
            cur_shape[ax] = en - st
        if not ok:
            continue
        new_nodes = []
        src = node.input[0]
        for k, (ax, pieces) in enumerate(plan):
            last = k == len(plan) - 1
            keep = 1 if pieces[0] > 0 else 0
            sizes = [p for p in pieces if p > 0]
            outs = [info.fresh(f"{src}_split") for _ in sizes]
            dst = node.output[0] if last else outs[keep]
            outs[keep] = dst
            new_nodes.append(
                helper.make_node(
                    "Split", [src], outs, axis=ax, split=sizes, name=info.fresh("slice_split")
                )
            )
            src = dst
        replace[idx] = new_nodes
        changed += 1
    splice(model, replace)
    return changed


def expand_runtime_shape(model: onnx.ModelProto, info: Info) -> int:
    """Expand with a non-constant shape: give the importer the final ONNX result shape.

    Gap: ONNX Expand broadcasts *bidirectionally*: the shape may have fewer dims than ``x``
    and a 1 in it keeps ``x``'s dim. For a shape computed at run time the importer emits
    ``broadcast_to(x, shape)`` directly, so a shorter shape fails to import ("broadcast_to
    expects the input shape to have the number of ndim at least as the input tensor's") and
    a 1 gives a wrong result shape (``(3, 1, 3)`` for ``(3, 3, 3)``). For a shape derived
    from ``Shape`` ops (imported as a ``ShapeExpr``) a shorter shape trips an assertion.

    * Shape derived from ``Shape``/``Size`` and the result shape statically known (onnx shape
      inference with data propagation, from inputs and constants only): the shape operand is
      replaced by that constant result shape (the importer's constant path is correct).
    * Shape not derived from ``Shape``/``Size`` (a run-time tensor): the rewrite computes
      ``where(shape_padded == 1, x_shape_padded, shape_padded)`` in the graph and expands to
      that, which has full rank and no spurious 1s. Needs opset >= 9 (Where) and a known
      rank of ``x``. (Tensor ops on a ``ShapeExpr`` do not import, hence the split.)

    Constant shapes are left alone.
    """
    if info.opset < 9:
        return 0
    changed = 0
    replace: dict[int, list[onnx.NodeProto]] = {}
    for idx, node in enumerate(model.graph.node):
        if node.op_type != "Expand" or not is_default(node) or len(node.input) != 2:
            continue
        x, shape = node.input
        if shape in info.consts:
            continue
        if _depends_on(model, shape, {"Shape", "Size"}):
            y_shape = info.static_shape(node.output[0])
            if y_shape is not None:
                node.input[1] = add_initializer(
                    model, info, f"{shape}_static", np.array(y_shape, dtype=np.int64)
                )
                changed += 1
            continue
        x_shape = info.shapes.get(x)
        s_shape = info.shapes.get(shape)
        if x_shape is None or s_shape is None or len(s_shape) != 1 or s_shape[0] is None:
            continue
        r, k = len(x_shape), int(s_shape[0])
        n = max(r, k)
        new_nodes = []
        shape_p = shape
        if n > k:
            shape_p = _pad_leading_ones(model, info, shape, n - k, "expand_pad_shape", new_nodes)
        if all(d is not None for d in x_shape):
            xs_p = add_initializer(
                model, info, f"{x}_shape", np.array([1] * (n - r) + x_shape, dtype=np.int64)
            )
        else:
            xs = info.fresh(f"{x}_shape")
            new_nodes.append(helper.make_node("Shape", [x], [xs], name=info.fresh("expand_x")))
            xs_p = xs
            if n > r:
                xs_p = _pad_leading_ones(model, info, xs, n - r, "expand_pad_x", new_nodes)
        one = add_initializer(model, info, "expand_one", np.array(1, dtype=np.int64))
        is_one = info.fresh(f"{shape}_is_one")
        target = info.fresh(f"{shape}_broadcast")
        new_nodes += [
            helper.make_node("Equal", [shape_p, one], [is_one], name=info.fresh("expand_eq")),
            helper.make_node("Where", [is_one, xs_p, shape_p], [target],
                             name=info.fresh("expand_where")),
        ]
        node.input[1] = target
        replace[idx] = new_nodes + [node]
        changed += 1
    splice(model, replace)
    return changed


def split_to_sequence_static(model: onnx.ModelProto, info: Info) -> int:
    """SplitToSequence with a static piece count: rewrite as Split + SequenceConstruct.

    Gap: the importer returns the bare ``relax.op.split`` call for SplitToSequence instead
    of a tuple, so ``SequenceLength`` (``len()`` of a Call) and other consumers that walk
    the sequence fail at import ("object of type 'Call' has no len()"). ``Split`` followed
    by ``SequenceConstruct`` (a ``relax.Tuple``) is equivalent when the split sizes are
    constants and the split dim is static; ``keepdims=0`` becomes a Squeeze per piece.
    """
    if info.opset < 11:
        return 0
    changed = 0
    replace: dict[int, list[onnx.NodeProto]] = {}
    for idx, node in enumerate(model.graph.node):
        if node.op_type != "SplitToSequence" or not is_default(node):
            continue
        x = node.input[0]
        x_shape = info.shapes.get(x)
        if x_shape is None:
            continue
        axis = int(attr(node, "axis", 0))
        axis = axis + len(x_shape) if axis < 0 else axis
        if not 0 <= axis < len(x_shape) or x_shape[axis] is None:
            continue
        dim = int(x_shape[axis])
        has_split = len(node.input) > 1 and node.input[1] != ""
        keepdims = int(attr(node, "keepdims", 1))
        if has_split:
            if node.input[1] not in info.consts:
                continue
            split = info.consts[node.input[1]]
            if split.ndim == 0:
                c = int(split)
                if c <= 0:
                    continue
                sizes = [c] * (dim // c) + ([dim % c] if dim % c else [])
            else:
                sizes = [int(s) for s in split.reshape(-1)]
            squeeze = False
        else:
            sizes = [1] * dim
            squeeze = keepdims == 0
        if not sizes or any(s <= 0 for s in sizes) or sum(sizes) != dim:
            continue
        pieces = [info.fresh(f"{node.output[0]}_piece") for _ in sizes]
        new_nodes = []
        if info.opset >= 13:
            split_name = add_initializer(model, info, "split_sizes", np.array(sizes, dtype=np.int64))
            new_nodes.append(
                helper.make_node("Split", [x, split_name], pieces, axis=axis,
                                 name=info.fresh("split_to_seq"))
            )
        else:
            new_nodes.append(
                helper.make_node("Split", [x], pieces, axis=axis, split=sizes,
                                 name=info.fresh("split_to_seq"))
            )
        if squeeze:
            squeezed = []
            axes_name = (
                add_initializer(model, info, "squeeze_axes", np.array([axis], dtype=np.int64))
                if info.opset >= 13 else None
            )
            for p in pieces:
                out = info.fresh(f"{p}_squeezed")
                if axes_name is not None:
                    sq = helper.make_node("Squeeze", [p, axes_name], [out])
                else:
                    sq = helper.make_node("Squeeze", [p], [out], axes=[axis])
                sq.name = info.fresh("split_to_seq_squeeze")
                new_nodes.append(sq)
                squeezed.append(out)
            pieces = squeezed
        new_nodes.append(
            helper.make_node("SequenceConstruct", pieces, [node.output[0]],
                             name=info.fresh("split_to_seq_construct"))
        )
        replace[idx] = new_nodes
        changed += 1
    splice(model, replace)
    return changed


def _sequence_lengths(model: onnx.ModelProto) -> dict[str, int]:
    """Statically known lengths of sequence values (constructed from fixed pieces)."""
    lengths: dict[str, int] = {}
    for node in model.graph.node:
        if not is_default(node):
            continue
        op, ins = node.op_type, list(node.input)
        if op == "SequenceConstruct":
            lengths[node.output[0]] = len(ins)
        elif op == "SequenceEmpty":
            lengths[node.output[0]] = 0
        elif op == "SequenceInsert" and ins[0] in lengths:
            lengths[node.output[0]] = lengths[ins[0]] + 1
        elif op == "SequenceErase" and ins[0] in lengths and lengths[ins[0]] > 0:
            lengths[node.output[0]] = lengths[ins[0]] - 1
        elif op == "Identity" and ins[0] in lengths:
            lengths[node.output[0]] = lengths[ins[0]]
    return lengths


def sequence_insert_position(model: onnx.ModelProto, info: Info) -> int:
    """SequenceInsert with a constant negative position: make the position non-negative.

    Gap: the importer maps a negative position ``p`` to ``len + p + 1`` (so -1 appends);
    ONNX (and onnxruntime / the onnx reference) insert at ``len + p`` (-1 = before the
    last element). With the sequence length known statically (built by SequenceConstruct /
    SequenceEmpty / Insert / Erase), ``p`` is replaced by the constant ``len + p``, which
    both readings agree on. An omitted position (append) is already right.
    """
    if info.opset < 11:
        return 0
    lengths = _sequence_lengths(model)
    changed = 0
    replace: dict[int, list[onnx.NodeProto]] = {}
    for idx, node in enumerate(model.graph.node):
        if node.op_type != "SequenceInsert" or not is_default(node):
            continue
        if len(node.input) < 3 or node.input[2] == "" or node.input[2] not in info.consts:
            continue
        n = lengths.get(node.input[0])
        pos_value = info.consts[node.input[2]]
        if n is None or pos_value.size != 1:
            continue
        p = int(pos_value.reshape(-1)[0])
        if p >= 0 or p < -n:
            continue
        node.input[2] = add_initializer(
            model, info, f"{node.input[2]}_normalized", np.array(n + p, dtype=pos_value.dtype)
        )
        changed += 1
    splice(model, replace)
    return changed


#: The rewrites, in the order ``legalize`` applies them, each with the op types it touches
#: (a rewrite is skipped, without analyzing the model, when none of them occurs).
REWRITES: tuple[Callable[[onnx.ModelProto, Info], int], ...] = (
    prelu_channel_slope,
    slice_attrs_to_split,
    expand_runtime_shape,
    split_to_sequence_static,
    sequence_insert_position,
)
_TRIGGERS: dict[str, str] = {
    "prelu_channel_slope": "PRelu",
    "slice_attrs_to_split": "Slice",
    "expand_runtime_shape": "Expand",
    "split_to_sequence_static": "SplitToSequence",
    "sequence_insert_position": "SequenceInsert",
}


def legalize(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    report: dict[str, int] | None = None,
) -> onnx.ModelProto:
    """Return a copy of ``model`` rewritten around TVM ONNX-importer gaps.

    ``input_shapes`` (optional, name -> concrete dims, as given to ``from_onnx``'s
    ``shape_dict``) sharpens shape inference for models with symbolic input dims; the
    model's declared inputs are not changed. If ``report`` is given, it receives the
    number of nodes each rewrite changed, keyed by rewrite name. ``model`` is not modified.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for rewrite in REWRITES:
        trigger = _TRIGGERS.get(rewrite.__name__)
        if trigger is not None and not any(n.op_type == trigger for n in out.graph.node):
            n = 0
        else:
            info = analyze(out, input_shapes)  # re-analyze: earlier rewrites add values
            n = rewrite(out, info)
        if report is not None:
            report[rewrite.__name__] = n
    return out

