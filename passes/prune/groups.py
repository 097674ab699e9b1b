"""Dependency groups: which channels of a Model must be removed together.

Walks the networkx view (``hwcompile.graph.to_networkx``) in topological order and gives
every tensor at most one *channel axis*, described position by position with channel ids.
Each conv/dense output channel gets a fresh id; ops propagate ids (elementwise, pooling,
resize, pad, batch-norm, permute, squeeze), re-index them (concat, split, channel slices),
repeat them (reshape/flatten: one channel becomes a block of dense inputs; one tensor
concatenated several times, as in SPPF) or *couple* them with a union-find, as DepGraph
(Torch-Pruning) does: residual adds and channel multiplies (squeeze-excitation), depthwise
convs (in-channel k with out-channels of group k), grouped convs (the same position in
every group), tensors joined along another axis (a detector's levels: position p of each),
a channel axis split into (heads, head_dim) (each head one unit) and the head axis two
activations share in a matmul (attention). A *unit* is a union-find class: the channels
removed together.

Channels that must stay are *fixed*, with the reason kept for the report: those reaching a
graph output, and every channel of an operand of an op the analysis does not understand.
The Relax bindings are consulted only for op attributes (axis, groups, split indices).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import tvm
from tvm import relax

from hwcompile.graph import to_networkx
from hwcompile.model import Model
from hwcompile.rewrite import call_name, dataflow_bindings

Ids = tuple[int, ...]

# Ops that keep every channel where it is.
_UNARY = {"relax.nn.relu", "relax.nn.gelu", "relax.nn.silu", "relax.sigmoid", "relax.tanh",
          "relax.clip", "relax.exp", "relax.negative", "relax.abs", "relax.sqrt", "relax.astype",
          "relax.nn.leakyrelu", "relax.nn.gelu_tanh", "relax.square", "relax.erf"}
# Ops that work on each channel's spatial plane on its own (NCHW): channels stay in place.
_SPATIAL = {"relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d",
            "relax.image.resize2d"}
_BINARY = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum",
           "relax.minimum", "relax.power"}
_REDUCE = {"relax.mean", "relax.sum", "relax.max", "relax.min"}


@dataclass(frozen=True)
class Chan:
    """The channel axis of a tensor and the channel id at each position along it."""

    axis: int
    ids: Ids


@dataclass
class WeightSlice:
    """Positions along ``axis`` of weight ``weight`` belong to channel ``ids``."""

    weight: str
    axis: int
    ids: Ids
    layer: str  # the conv/dense/batch-norm layer (its weight name) for reports
    role: str  # "kernel" (conv/dense weight), "gamma" (batch-norm scale) or "other"


@dataclass
class Space:
    """A channel count of one layer (conv/dense in or out, a split piece): rounding applies."""

    name: str
    ids: Ids


@dataclass
class Analysis:
    parent: list[int] = field(default_factory=list)
    chan: dict[str, Chan | list[Chan | None]] = field(default_factory=dict)
    slices: dict[tuple[str, int], WeightSlice] = field(default_factory=dict)
    spaces: list[Space] = field(default_factory=list)
    fixed: dict[int, str] = field(default_factory=dict)  # id -> why it must stay
    source_layer: dict[int, str] = field(default_factory=dict)  # id -> layer creating it
    depthwise: set[str] = field(default_factory=set)  # conv bindings whose groups follow Cin
    # strided_slice bindings that cut the channel axis -> the first input position they keep
    channel_slices: dict[str, int] = field(default_factory=dict)
    # id -> |γ|/√(var+ε) of the inference batch-norm normalizing that channel (scale invariance:
    # the BN-folded effective kernel of a conv/dense output channel is W·γ/√(var+ε))
    bn_scale: dict[int, float] = field(default_factory=dict)

    def new_ids(self, n: int, layer: str) -> Ids:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        for i in range(start, start + n):
            self.source_layer[i] = layer
        return tuple(range(start, start + n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: Ids, b: Ids) -> None:
        for x, y in zip(a, b):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def fix(self, ids: Ids, reason: str) -> None:
        for i in ids:
            self.fixed.setdefault(i, reason)

    def add_slice(self, weight: str, axis: int, ids: Ids, layer: str, role: str) -> None:
        """Record a sliced weight axis; a weight shared by two ops couples their channels."""
        key = (weight, axis)
        if key in self.slices:
            self.union(self.slices[key].ids, ids)
        else:
            self.slices[key] = WeightSlice(weight, axis, ids, layer, role)


@dataclass
class Unit:
    root: int
    ids: list[int]


@dataclass
class Group:
    """Units that touch the same layers the same way: one ratio and rounding rule apply."""

    layers: list[str]
    units: list[Unit]
    counts: dict[int, int]  # space index -> positions one unit holds in that space


@dataclass
class Excluded:
    layers: list[str]
    reason: str


def _shape(ty) -> tuple:
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return ()
    return tuple(int(d) if isinstance(d, tvm.tirx.IntImm) else d for d in ty.shape.values)


def int_values(expr) -> list[int]:
    """The integers of a Relax tuple/shape argument (strided_slice's axes, begin, end...)."""
    items = expr.fields if isinstance(expr, relax.Tuple) else expr.values
    return [int(getattr(i, "value", i)) for i in items]


def _ints_only(dims) -> bool:
    return all(isinstance(d, int) for d in dims)


def _same_extent(a: tuple, b: tuple) -> bool:
    """Whether two runs of dims hold the same number of elements (symbolic ones by name)."""
    if _ints_only(a) and _ints_only(b):
        return math.prod(a) == math.prod(b)
    return [str(d) for d in a if str(d) != "1"] == [str(d) for d in b if str(d) != "1"]


class _Walker:
    """One pass over the bindings in topological order, filling an Analysis."""

    def __init__(self, model: Model):
        self.model = model
        self.a = Analysis()
        self.graph = to_networkx(model)
        self.bindings = {b.var.name: b for b in dataflow_bindings(model.main)}
        self.weights = {v: v.name for v in model.param_vars}

    # -- helpers --------------------------------------------------------------------------
    def info(self, expr: relax.Expr) -> Chan | list | None:
        if isinstance(expr, relax.Var):
            return self.a.chan.get(expr.name)
        return None

    def fix_all(self, exprs, reason: str) -> None:
        for expr in exprs:
            if isinstance(expr, relax.Tuple):
                self.fix_all(expr.fields, reason)
                continue
            info = self.info(expr)
            for chan in info if isinstance(info, list) else [info]:
                if chan is not None:
                    self.a.fix(chan.ids, reason)

    def weight_name(self, expr: relax.Expr) -> str | None:
        return self.weights.get(expr) if isinstance(expr, relax.Var) else None

    # -- the walk -------------------------------------------------------------------------
    def run(self) -> Analysis:
        for name in nx.topological_sort(self.graph):
            if name in self.bindings:
                binding = self.bindings[name]
                out = self.visit(name, binding.value)
                if out is not None:
                    self.a.chan[name] = out
            elif name.startswith("output:"):
                for pred in self.graph.predecessors(name):
                    info = self.a.chan.get(pred)
                    for chan in info if isinstance(info, list) else [info]:
                        if chan is not None:
                            self.a.fix(chan.ids, "reaches a graph output")
        return self.a

    def visit(self, name: str, value: relax.Expr):
        if isinstance(value, relax.TupleGetItem):
            info = self.info(value.tuple_value)
            return info[value.index] if isinstance(info, list) else None
        if isinstance(value, relax.Tuple) and all(isinstance(f, relax.Var) for f in value.fields):
            return [self.info(f) for f in value.fields]  # e.g. the outputs of a detector
        op = call_name(value)
        handler = {"relax.nn.conv2d": self.conv2d, "relax.nn.conv2d_transpose": self.conv2d_transpose,
                   "relax.matmul": self.matmul, "relax.nn.batch_norm": self.batch_norm,
                   "relax.concat": self.concat, "relax.split": self.split,
                   "relax.strided_slice": self.strided_slice, "relax.reshape": self.reshape,
                   "relax.permute_dims": self.permute, "relax.squeeze": self.squeeze,
                   "relax.expand_dims": self.expand_dims, "relax.nn.pad": self.pad,
                   "relax.nn.softmax": self.softmax, "relax.nn.log_softmax": self.softmax}.get(op)
        if handler is not None:
            return handler(name, value)
        if op in _UNARY or (op in _SPATIAL and value.attrs.layout == "NCHW"):
            return self.info(value.args[0])
        if op in _BINARY:
            return self.binary(name, value)
        if op in _REDUCE:
            return self.reduce(value)
        self.fix_all(value.args if isinstance(value, relax.Call) else [value],
                     f"used by {op or type(value).__name__} ({name}), which pruning does not handle")
        return None

    def conv2d(self, name: str, call: relax.Call):
        x, w = call.args
        attrs = call.attrs
        weight = self.weight_name(w)
        if weight is None or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" \
                or attrs.out_layout not in ("NCHW", ""):
            self.fix_all(call.args, f"conv2d {name} has a computed weight or a non-NCHW layout")
            return None
        cout, cin_g = _shape(w.ty)[:2]
        groups = int(attrs.groups)
        out = self.a.new_ids(cout, weight)
        self.a.add_slice(weight, 0, out, weight, "kernel")
        self.a.spaces.append(Space(f"{weight}:out", out))
        xin = self.info(x)
        if xin is not None and xin.axis != 1:
            self.a.fix(xin.ids, f"conv2d {name} reads them along a spatial axis (after a "
                       "reshape, e.g. a DFL box decode)")
            xin = None
        cout_g = cout // groups
        if groups == 1:
            if xin is not None:
                self.a.add_slice(weight, 1, xin.ids, weight, "kernel")
                self.a.spaces.append(Space(f"{weight}:in", xin.ids))
        elif cin_g == 1:  # depthwise (multiplier cout_g): in-channel k owns out-channels of group k
            self.a.depthwise.add(name)
            ins = xin.ids if xin is not None else self.a.new_ids(groups, weight)
            if xin is None:
                self.a.fix(ins, f"depthwise conv {name} reads an untracked tensor")
            self.a.union(tuple(i for i in ins for _ in range(cout_g)), out)
        else:  # grouped: keep the groups uniform by removing the same position in every group
            for g in range(1, groups):
                self.a.union(out[:cout_g], out[g * cout_g:(g + 1) * cout_g])
            if xin is not None:
                for g in range(1, groups):
                    self.a.union(xin.ids[:cin_g], xin.ids[g * cin_g:(g + 1) * cin_g])
                self.a.add_slice(weight, 1, xin.ids[:cin_g], weight, "kernel")
                self.a.spaces.append(Space(f"{weight}:in", xin.ids))
        return Chan(1, out)

    def conv2d_transpose(self, name: str, call: relax.Call):
        """Transposed conv (IOHW): in-channels on weight axis 0, fresh out-channels on axis 1."""
        x, w = call.args
        attrs = call.attrs
        weight = self.weight_name(w)
        if weight is None or int(attrs.groups) != 1 or attrs.data_layout != "NCHW" \
                or attrs.kernel_layout != "IOHW" or attrs.out_layout not in ("NCHW", ""):
            self.fix_all(call.args, f"conv2d_transpose {name} is grouped, has a computed weight "
                         "or a non-NCHW layout")
            return None
        out = self.a.new_ids(_shape(w.ty)[1], weight)
        self.a.add_slice(weight, 1, out, weight, "kernel")
        self.a.spaces.append(Space(f"{weight}:out", out))
        xin = self.info(x)
        if xin is not None and xin.axis == 1:
            self.a.add_slice(weight, 0, xin.ids, weight, "kernel")
            self.a.spaces.append(Space(f"{weight}:in", xin.ids))
        elif xin is not None:
            self.a.fix(xin.ids, f"conv2d_transpose {name} reads channels on a non-channel axis")
        return Chan(1, out)

    def matmul(self, name: str, call: relax.Call):
        x, w = call.args
        weight = self.weight_name(w)
        w_shape = _shape(w.ty)
        x_ndim = len(_shape(x.ty))
        if weight is None or len(w_shape) != 2:
            return self.activation_matmul(name, call)
        xin = self.info(x)
        if xin is not None and xin.axis == x_ndim - 1:
            self.a.add_slice(weight, 0, xin.ids, weight, "kernel")
            self.a.spaces.append(Space(f"{weight}:in", xin.ids))
        elif xin is not None:  # channels on a batch-like axis pass through unchanged
            return xin
        out = self.a.new_ids(w_shape[1], weight)
        self.a.add_slice(weight, 1, out, weight, "kernel")
        self.a.spaces.append(Space(f"{weight}:out", out))
        return Chan(x_ndim - 1, out)

    def activation_matmul(self, name: str, call: relax.Call):
        """Two activations (attention's q·kᵀ and p·v): channels on a batch-like axis both
        share (the heads) are the same channels of both; on a multiplied axis they stay."""
        out_ndim = len(_shape(call.ty))
        axes, tracked = set(), []
        for arg in call.args:
            chan, shape = self.info(arg), _shape(arg.ty)
            if chan is not None and chan.axis < len(shape) - 2:
                axes.add(chan.axis + out_ndim - len(shape))
                tracked.append(chan)
            elif chan is not None:
                axes.add(None)
        if len(axes) == 1 and None not in axes:
            axis = axes.pop()
            untracked_ok = all(self.info(arg) is not None or out_ndim - axis > len(_shape(arg.ty))
                               or _shape(arg.ty)[axis - out_ndim] == 1 for arg in call.args)
            if untracked_ok and all(len(c.ids) == len(tracked[0].ids) for c in tracked):
                for chan in tracked[1:]:
                    self.a.union(tracked[0].ids, chan.ids)
                return Chan(axis, tracked[0].ids)
        self.fix_all(call.args, f"matmul {name} multiplies two activations along their channels")
        return None

    def softmax(self, name: str, call: relax.Call):
        chan = self.info(call.args[0])
        if chan is not None and int(call.attrs.axis) % len(_shape(call.ty)) == chan.axis:
            self.a.fix(chan.ids, f"{call_name(call)} {name} normalizes over the channels")
            return None
        return chan

    def batch_norm(self, name: str, call: relax.Call):
        x = call.args[0]
        xin = self.info(x)
        axis = int(call.attrs.axis) % len(_shape(x.ty))
        if xin is None or xin.axis != axis:
            self.fix_all(call.args[:1], f"batch_norm {name} normalizes a non-channel axis")
            return None
        layer = self.weight_name(call.args[1]) or name
        for index, arg in enumerate(call.args[1:5], start=1):
            weight = self.weight_name(arg)
            if weight is None:
                self.a.fix(xin.ids, f"batch_norm {name} has computed statistics")
                return None
            self.a.add_slice(weight, 0, xin.ids, layer, "gamma" if index == 1 else "other")
        params = self.model.params
        gamma = np.abs(params[self.weight_name(call.args[1])].astype(np.float64)) \
            if call.attrs.scale else np.ones(len(xin.ids))
        var = params[self.weight_name(call.args[4])].astype(np.float64)
        for i, factor in zip(xin.ids, gamma / np.sqrt(var + float(call.attrs.epsilon))):
            self.a.bn_scale.setdefault(i, float(factor))
        return [xin, Chan(0, xin.ids), Chan(0, xin.ids)]

    def binary(self, name: str, call: relax.Call):
        out_shape = _shape(call.ty)
        chans = [self.info(a) for a in call.args]
        tracked = [c for c in chans if c is not None]
        if not tracked:
            return None
        # Align every operand's channel axis to the output's (numpy broadcasting from the right).
        axes = {c.axis + len(out_shape) - len(_shape(a.ty)) for a, c in zip(call.args, chans) if c}
        if len(axes) != 1:
            self.fix_all(call.args, f"{call_name(call)} {name} mixes channel axes")
            return None
        axis = axes.pop()
        width = out_shape[axis] if axis < len(out_shape) else None
        broadcast = [c for c in tracked if len(c.ids) == 1 and width != 1]
        for chan in broadcast:  # e.g. a one-channel spatial gate: it multiplies every channel
            self.a.fix(chan.ids, f"{call_name(call)} {name} broadcasts it over all channels")
        tracked = [c for c in tracked if c not in broadcast]
        if not tracked:
            return None
        ids = tracked[0].ids
        for chan in tracked[1:]:
            if len(chan.ids) == len(ids):
                self.a.union(ids, chan.ids)
            else:
                self.fix_all(call.args, f"{call_name(call)} {name} broadcasts channels")
                return None
        for arg, chan in zip(call.args, chans):
            if chan is not None and chan not in broadcast:
                continue
            shape = _shape(arg.ty)
            local = axis - (len(out_shape) - len(shape))
            if local < 0 or shape[local] == 1:
                continue  # does not vary along the channel axis
            weight = self.weight_name(arg)
            if weight is not None:
                self.a.add_slice(weight, local, ids, weight, "other")
            else:
                self.a.fix(ids, f"{call_name(call)} {name} combines channels with an untracked tensor")
        return Chan(axis, ids)

    def reduce(self, call: relax.Call):
        chan = self.info(call.args[0])
        if chan is None:
            return None
        ndim = len(_shape(call.args[0].ty))
        axes = list(range(ndim)) if call.attrs.axis is None else \
            [int(a) % ndim for a in call.attrs.axis]
        if chan.axis in axes:
            self.a.fix(chan.ids, f"{call_name(call)} reduces over channels")
            return None
        if call.attrs.keepdims:
            return chan
        return Chan(chan.axis - sum(a < chan.axis for a in axes), chan.ids)

    def concat(self, name: str, call: relax.Call):
        fields = call.args[0].fields
        axis = int(call.attrs.axis) % len(_shape(call.ty))
        chans = [self.info(f) for f in fields]
        if all(c is None for c in chans):
            return None
        if all(c is not None and c.axis == axis for c in chans):
            return Chan(axis, tuple(i for c in chans for i in c.ids))
        first = chans[0]
        if first is not None and all(c is not None and c.axis == first.axis and
                                     len(c.ids) == len(first.ids) for c in chans):
            # joined along another axis (e.g. a detection head's levels along the anchors):
            # position p of every operand is output channel p
            for chan in chans[1:]:
                self.a.union(first.ids, chan.ids)
            return first
        why = "a tensor not made by a prunable layer" if None in chans else \
            "tensors whose channels do not line up"
        self.fix_all(fields, f"concat {name} joins channels with {why}")
        return None

    def split(self, name: str, call: relax.Call):
        chan = self.info(call.args[0])
        if chan is None:
            return None
        axis = int(call.attrs.axis) % len(_shape(call.args[0].ty))
        pieces = [_shape(f)[axis] for f in call.ty.fields]
        if chan.axis != axis:
            return [Chan(chan.axis, chan.ids) for _ in pieces]
        result, start = [], 0
        for index, size in enumerate(pieces):
            ids = chan.ids[start:start + size]
            self.a.spaces.append(Space(f"{name}[{index}]", ids))
            result.append(Chan(axis, ids))
            start += size
        return result

    def strided_slice(self, name: str, call: relax.Call):
        """A slice of the channel axis keeps those positions' ids (step 1; structured.apply
        re-counts begin/end); slices of other axes leave the channels where they are."""
        chan = self.info(call.args[0])
        if chan is None:
            return None
        ndim = len(_shape(call.args[0].ty))
        axes = [a % ndim for a in int_values(call.args[1])]
        if chan.axis not in axes:
            return chan
        k = axes.index(chan.axis)
        size = len(chan.ids)
        begin, end = int_values(call.args[2])[k], int_values(call.args[3])[k]
        stride = int_values(call.args[4])[k] if len(call.args) > 4 else 1
        if stride != 1:
            self.a.fix(chan.ids, f"strided_slice {name} takes every {stride}th channel")
            return None
        begin, end = (max(0, min(size, v + size if v < 0 else v)) for v in (begin, end))
        ids = chan.ids[begin:end]
        self.a.channel_slices[name] = begin
        self.a.spaces.append(Space(f"{name}[slice]", ids))
        return Chan(chan.axis, ids)

    def squeeze(self, name: str, call: relax.Call):
        chan = self.info(call.args[0])
        if chan is None:
            return None
        src = _shape(call.args[0].ty)
        axes = [i for i, d in enumerate(src) if d == 1] if call.attrs.axis is None else \
            [int(a) % len(src) for a in call.attrs.axis]
        if chan.axis in axes:
            self.a.fix(chan.ids, f"squeeze {name} removes the channel axis")
            return None
        return Chan(chan.axis - sum(a < chan.axis for a in axes), chan.ids)

    def expand_dims(self, name: str, call: relax.Call):
        chan = self.info(call.args[0])
        if chan is None:
            return None
        ndim = len(_shape(call.ty))
        axis = chan.axis
        for new in sorted(int(a) % ndim for a in call.attrs.axis):
            axis += new <= axis
        return Chan(axis, chan.ids)

    def pad(self, name: str, call: relax.Call):
        chan = self.info(call.args[0])
        if chan is None:
            return None
        width = [int(w) for w in call.attrs.pad_width]
        if width[2 * chan.axis] or width[2 * chan.axis + 1]:
            self.a.fix(chan.ids, f"pad {name} pads the channel axis")
            return None
        return chan

    def reshape(self, name: str, call: relax.Call):
        chan = self.info(call.args[0])
        if chan is None:
            return None
        src, dst = _shape(call.args[0].ty), _shape(call.ty)
        a = chan.axis
        # Supported: the channel axis lands on one output axis b with the same elements
        # before it, alone or merged with following dims (flatten before a dense layer: each
        # channel becomes a block of dense inputs); unit dims may come or go around it.
        if isinstance(call.args[1], relax.ShapeExpr) and _ints_only(src[a:]):
            inner = math.prod(src[a + 1:])
            for b in sorted(range(len(dst)), key=lambda b: b != a):  # same axis first
                if not _ints_only(dst[b:]) or not _same_extent(src[:a], dst[:b]) \
                        or dst[b] % src[a]:
                    continue
                block = dst[b] // src[a]
                if block * math.prod(dst[b + 1:]) == inner:
                    return Chan(b, tuple(i for i in chan.ids for _ in range(block)))
            # the channel axis split in two (C -> G x C/G: attention heads): each block of C/G
            # channels becomes one unit, tracked on the G axis, so whole heads are pruned
            for b in range(len(dst) - 1):
                if _ints_only(dst[b:]) and _same_extent(src[:a], dst[:b]) and dst[b] > 1 \
                        and dst[b + 1] > 1 and dst[b] * dst[b + 1] == src[a] \
                        and math.prod(dst[b + 2:]) == inner:
                    size = dst[b + 1]
                    heads = [chan.ids[g * size:(g + 1) * size] for g in range(dst[b])]
                    for head in heads:
                        self.a.union(head[:1] * (size - 1), head[1:])
                    return Chan(b, tuple(head[0] for head in heads))
        self.a.fix(chan.ids, f"reshape {name} splits or moves the channel axis "
                   f"({'x'.join(map(str, src))} -> {'x'.join(map(str, dst))})")
        return None

    def permute(self, name: str, call: relax.Call):
        chan = self.info(call.args[0])
        if chan is None:
            return None
        ndim = len(_shape(call.args[0].ty))
        axes = list(range(ndim))[::-1] if call.attrs.axes is None else [int(x) for x in call.attrs.axes]
        return Chan(axes.index(chan.axis), chan.ids)


def analyze(model: Model, ignore: list[str] = ()) -> tuple[Analysis, list[Group], list[Excluded]]:
    """Channel analysis of ``model``: the prunable groups and the excluded ones (with why).

    ``ignore`` names layers (weight names or their prefixes) whose output channels stay.
    """
    a = _Walker(model).run()
    for i, layer in a.source_layer.items():
        if any(layer == p or layer.startswith((p + ".", p + "_")) for p in ignore):
            a.fix((i,), f"layer {layer} is in ignore")
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(a.parent)):
        members[a.find(i)].append(i)
    positions: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for index, space in enumerate(a.spaces):
        for i in space.ids:
            positions[a.find(i)][index] += 1
    groups: dict[tuple, Group] = {}
    excluded: dict[tuple, Excluded] = {}
    for root, ids in members.items():
        layers = sorted({a.source_layer[i] for i in ids})
        reasons = sorted({a.fixed[i] for i in ids if i in a.fixed})
        if reasons:
            key = (tuple(layers), reasons[0])
            excluded.setdefault(key, Excluded(layers, "; ".join(reasons)))
            continue
        counts = dict(sorted(positions[root].items()))
        key = (tuple(layers), tuple(counts.items()))
        group = groups.setdefault(key, Group(layers, [], counts))
        group.units.append(Unit(root, ids))
    return a, list(groups.values()), list(excluded.values())
