"""The integer rewrite: conv2d/dense layers and the ops between them run on int8 tensors.

A *layer* is conv2d (NCHW/OIHW) or matmul with a 2-D weight, plus an optional bias add and
ReLU. It becomes: int8 input (padded with its zero point when that is not 0), int8 weight,
``out_dtype="int32"`` accumulation, int32 bias (with the input zero point's contribution
folded in), then either requantization to int8 — a fixed-point multiply and rounding right
shift in int64, or a pure int32 shift under power-of-two scales, then the zero point, a clip
(ReLU's lower bound is the zero point) and a cast — or, when nothing integer consumes it,
a dequantization of the int32 accumulator straight to float.

Between layers, adds and products of two tensors (residuals, squeeze-excitation gates),
ReLU, concat, split, global average pooling (``mean``), max pooling, nearest resize and
layout ops stay integer when an input is already int8, and so does any elementwise chain of
one tensor (SiLU, hard-swish, sigmoid, GELU, clips...) as a 256-entry lookup table
(``lookup.py``). ``R.quantize``/``R.dequantize``
appear only where float and integer parts meet. Planning (``plan``) is done once on the
float model, by binding position, so the same plan rewrites the model and its probes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm_ffi import structural_equal

from hwcompile.model import Model
from hwcompile.rewrite import (
    RebuildContext,
    binding_users,
    call_name,
    dataflow_bindings,
    free_vars,
    rebuild,
)

from . import lookup
from . import scheme as sc
from .scheme import QParams, Requant, Scheme

# Largest output step change between neighbouring codes an int8 table may have.
MAX_TABLE_JUMP = 16

# Ops that move int8 values without changing them: the output keeps the input's scale.
_LAYOUT_OPS = ("relax.reshape", "relax.flatten", "relax.permute_dims", "relax.squeeze",
               "relax.expand_dims", "relax.strided_slice", "relax.split",
               "relax.image.resize2d")
_SAME_SCALE_OPS = _LAYOUT_OPS + ("relax.nn.relu", "relax.nn.max_pool2d")
INT_OPS = _LAYOUT_OPS + ("relax.add", "relax.multiply", "relax.nn.relu", "relax.concat",
                          "relax.mean", "relax.nn.max_pool2d")


@dataclass
class Layer:
    """A conv2d/dense layer: binding positions of its parts, and its weights' names."""

    name: str
    kind: str  # "conv2d" or "dense"
    core: int
    weight: str
    bias: int | None = None
    bias_weight: str | None = None
    relu: int | None = None

    @property
    def tail(self) -> int:
        return self.relu if self.relu is not None else (self.bias if self.bias is not None
                                                        else self.core)


@dataclass
class Plan:
    layers: dict[int, Layer]  # by tail position
    owner: dict[int, int]  # position folded into another → the position that emits it
    int_ops: set[int]  # positions of ops that run on int8 when an input is integer
    fused_relu: dict[int, int] = field(default_factory=dict)  # add position → its ReLU
    lookups: dict[int, lookup.Region] = field(default_factory=dict)  # by tail position

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers.values()]


class UnquantizableLayer(ValueError):
    """A layer whose integer form cannot represent it; the pass keeps it in float."""

    def __init__(self, layer: str, reason: str):
        super().__init__(f"layer '{layer}': {reason}")
        self.layer, self.reason = layer, reason


def _layer_name(weight: str) -> str:
    for suffix in (".weight", ".bn", ".permute_dims", "_weight"):
        cut = weight.find(suffix)
        if cut > 0:
            return weight[:cut]
    return weight


def plan(model: Model) -> Plan:
    """Find the layers and the integer-capable ops of ``model`` (see module docstring)."""
    rc = RebuildContext(model)
    bindings = dataflow_bindings(model.main)
    users = binding_users(bindings)

    def only_user(var: relax.Var, op: str) -> int | None:
        used = users.get(var, [])
        if len(used) == 1 and rc.num_users(var) == 1 and call_name(bindings[used[0]].value) == op:
            return used[0]
        return None

    layers: dict[int, Layer] = {}
    owner: dict[int, int] = {}
    taken_names: set[str] = set()
    for i, b in enumerate(bindings):
        value, op = b.value, call_name(b.value)
        if op == "relax.nn.conv2d":
            attrs = value.attrs
            ok = attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW" \
                and attrs.out_layout == "NCHW"
            kind = "conv2d"
        elif op == "relax.matmul":
            ok, kind = value.args[1].ty.ndim == 2, "dense"
        else:
            continue
        weight = rc.weight_name(value.args[1])
        if not ok or weight is None or "float" not in str(b.var.ty.dtype):
            continue
        name = _layer_name(weight)
        while name in taken_names:
            name += "'"
        taken_names.add(name)
        layer = Layer(name, kind, i, weight)
        channels = int(value.args[1].ty.shape[0 if kind == "conv2d" else 1])
        tail_var = b.var
        add = only_user(tail_var, "relax.add")
        if add is not None:
            other = bindings[add].value.args[1]
            bias = rc.weight(other)
            named = rc.weight_name(other) is not None  # inline constants are not folded in
            if named and bias.size == channels and bindings[add].value.args[0] \
                    .same_as(tail_var) and (kind == "dense" or bias.shape in
                                            ((1, channels, 1, 1), (channels, 1, 1))):
                layer.bias, layer.bias_weight = add, rc.weight_name(other)
                tail_var = bindings[add].var
        relu = only_user(tail_var, "relax.nn.relu")
        if relu is not None:
            layer.relu = relu
        for part in (layer.core, layer.bias):
            if part is not None and part != layer.tail:
                owner[part] = layer.tail
        layers[layer.tail] = layer

    lookups = _lookup_regions(model, bindings, users, layers, owner, rc.weight)
    int_ops, fused = set(lookups), {}
    split_items = _split_items(bindings)
    for i, b in enumerate(bindings):
        if i in split_items:
            int_ops.add(i)
        if i in owner or i in layers or i in lookups or call_name(b.value) not in INT_OPS:
            continue
        if call_name(b.value) in ("relax.add", "relax.multiply"):
            a, c = b.value.args
            if rc.weight(a) is not None or rc.weight(c) is not None or not _broadcasts(a, c):
                continue  # only tensor (op) tensor: residual adds, gates
            if gating_product(b.value):
                continue
        if call_name(b.value) == "relax.add":
            relu = only_user(b.var, "relax.nn.relu")
            if relu is not None:
                fused[i] = relu
                owner[i] = relu
                int_ops.add(relu)
                continue
        if call_name(b.value) == "relax.concat" and not isinstance(b.value.args[0], relax.Tuple):
            continue
        if call_name(b.value) == "relax.mean" and not _static_reduction(b.value):
            continue
        if call_name(b.value) == "relax.image.resize2d" and \
                b.value.attrs.method != "nearest_neighbor":
            continue  # interpolation makes new values: stays float
        int_ops.add(i)
    return Plan(layers, owner, int_ops, fused, lookups)


def _lookup_regions(model: Model, bindings, users, layers, owner, weight
                    ) -> dict[int, lookup.Region]:
    """Elementwise chains that become tables; their inner positions are owned by the tail.
    A lone ReLU is left to ``max(q, zero point)``, cheaper than a gather."""
    outputs = set(free_vars(model.main.body.body))
    found = {}
    for region in lookup.find_regions(bindings, users, outputs, weight):
        if any(m in owner or m in layers for m in region.members):
            continue
        if region.ops(bindings) == ["nn.relu"]:
            continue
        found[region.tail] = region
        for m in region.members[:-1]:
            owner[m] = region.tail
    return found


def _split_items(bindings) -> set[int]:
    """Positions of ``TupleGetItem``s of a ``split``: integer when the split is."""
    splits = {b.var for b in bindings if call_name(b.value) == "relax.split"}
    return {i for i, b in enumerate(bindings)
            if isinstance(b.value, relax.TupleGetItem) and b.value.tuple_value in splits}


def gating_product(value: relax.Expr) -> bool:
    """A product of two activations of one shape: a recurrent cell's gating (LSTM/GRU:
    f·c, i·g, o·tanh(c), z·h). Its result is the next step's state, so requantizing it to
    int8 at every step compounds over the sequence (lstm_gru: output SQNR 45.6 → 37 dB
    with the cells integer); it stays float, as onnxruntime's quantizer leaves recurrent
    cells. Channel gates (squeeze-excitation: a pooled gate broadcast over the map) are
    not this and stay integer."""
    if call_name(value) != "relax.multiply":
        return False
    a, b = value.args
    return structural_equal(a.ty.shape, b.ty.shape)


def _broadcasts(a: relax.Expr, b: relax.Expr) -> bool:
    """Two tensors of one shape, or of static shapes broadcasting to one of them."""
    if structural_equal(a.ty.shape, b.ty.shape):
        return True
    try:
        sa = [int(d) for d in a.ty.shape.values]
        sb = [int(d) for d in b.ty.shape.values]
    except (AttributeError, TypeError):
        return False
    rank = max(len(sa), len(sb))
    sa, sb = [1] * (rank - len(sa)) + sa, [1] * (rank - len(sb)) + sb
    if any(m != n and 1 not in (m, n) for m, n in zip(sa, sb)):
        return False
    result = [max(m, n) for m, n in zip(sa, sb)]
    return result in (sa, sb)


def _static_reduction(mean: relax.Call) -> bool:
    shape = mean.args[0].ty.shape.values
    axes = mean.attrs.axis
    return axes is not None and all(isinstance(shape[int(a)], tvm.tirx.IntImm) for a in axes)


# ---- emitting integer code ----------------------------------------------------------------

def _const(value, dtype: str) -> relax.Constant:
    return relax.const(np.asarray(value).astype(dtype), dtype)


def _channel_shape(kind: str, ndim: int, channels: int) -> tuple[int, ...]:
    if kind == "dense":
        return (channels,)
    shape = [1] * ndim
    shape[1] = channels
    return tuple(shape)


def emit_requant(rc: RebuildContext, acc: relax.Expr, rq: Requant, zero_point: int, low: int,
                 high: int, shape: tuple[int, ...]) -> relax.Expr:
    """int32 ``acc`` → int8 via ``rq``, + ``zero_point``, clipped to [low, high]."""
    if rq.multiplier is None:  # power of two: int32 shifts only
        shift = rq.shift.reshape(shape) if rq.shift.ndim else rq.shift
        left, right = np.maximum(-shift, 0), np.maximum(shift, 0)
        value = acc
        if np.any(left):
            value = rc.emit(relax.op.left_shift(value, _const(left, "int32")))
        if np.any(right):
            rounding = (np.int64(1) << right) >> 1
            value = rc.emit(relax.op.add(value, _const(rounding, "int32")))
            value = rc.emit(relax.op.right_shift(value, _const(right, "int32")))
        dtype = "int32"
    else:
        multiplier = rq.multiplier.reshape(shape) if rq.multiplier.ndim else rq.multiplier
        mult = rc.param(rc.unique_name("requant_multiplier"), multiplier.astype(np.int32)) \
            if multiplier.ndim else _const(multiplier, "int32")
        wide = rc.emit(relax.op.astype(acc, "int64"))
        value = rc.emit(relax.op.multiply(wide, relax.op.astype(mult, "int64")
                                          if multiplier.ndim else _const(multiplier, "int64")))
        shift = int(rq.shift)
        if shift:
            value = rc.emit(relax.op.add(value, _const(np.int64(1) << (shift - 1), "int64")))
            value = rc.emit(relax.op.right_shift(value, _const(shift, "int64")))
        dtype = "int64"
    value = rc.emit(relax.op.add(value, _const(zero_point, dtype)))
    value = rc.emit(relax.op.clip(value, int(low), int(high)))
    return relax.op.astype(value, "int8")


@dataclass
class LayerRecord:
    """What the rewrite chose for one layer or integer op (for annotations and the report)."""

    name: str
    op: str
    input: list[QParams]
    output: QParams | None  # None: the output is float
    weight: QParams | None = None
    requant: Requant | None = None
    position: int = -1
    range_method: str = ""

    def to_json(self) -> dict:
        out = {"op": self.op, "input": [q.to_json() for q in self.input],
               "output": self.output.to_json() if self.output else "float32",
               "range_method": self.range_method}
        if self.weight is not None:
            out["weight"] = self.weight.to_json()
        if self.requant is not None:
            out["requant"] = self.requant.to_json()
        return out


class IntegerEmitter:
    """Rewrites one model following a Plan; call ``run`` once."""

    def __init__(self, model: Model, the_plan: Plan, scheme: Scheme,
                 ranges: Callable[[str], tuple[float, float]], keep_float: set[str],
                 bias_shift: dict[str, np.ndarray] | None = None, range_method: str = ""):
        self.model, self.plan, self.scheme = model, the_plan, scheme
        self.ranges, self.keep_float = ranges, keep_float
        self.bias_shift = bias_shift or {}
        self.range_method = range_method
        self.records: list[LayerRecord] = []
        self.input_qparams: dict[str, QParams] = {}
        self.q: dict[relax.Var, tuple[relax.Expr, QParams]] = {}
        bindings = dataflow_bindings(model.main)
        self.bindings = bindings
        self.key = {b.var: f"b{i}" for i, b in enumerate(bindings)}
        self.positions = {b.var: i for i, b in enumerate(bindings)}
        self.key.update({v: f"in:{s.name}" for v, s in zip(model.main.params, model.inputs)})
        self.users = binding_users(bindings)
        self.coarse_lookups: dict[int, str] = {}  # lookup tail → why it stays float
        self.read_by_float_only: set[int] = set()  # integer ops left float: no int consumer
        self.sensitive_layers: dict[str, str] = {}  # layers left float → why (see below)
        self.quantized = self._quantized_positions()
        # A layer's output is int8 only when an integer op or layer consumes it.
        self.int8_out = {t for t in self.quantized if self._integer_consumer(t)}

    def _integer_consumer(self, position: int) -> bool:
        return any(self.plan.owner.get(u, u) in self.quantized
                   for u in self.users.get(self.bindings[position].var, []))

    def _quantized_positions(self) -> set[int]:
        """Layers (minus kept-float ones) and the integer ops reachable from them; minus
        lookup tables too coarse to represent their function, and integer ops whose result
        only float code reads (int8 there would add error and save nothing)."""
        quantized = self._reachable(set())
        weight = RebuildContext(self.model).weight
        for tail, region in self.plan.lookups.items():
            reason = self._too_coarse(region, weight) if tail in quantized else None
            if reason:
                self.coarse_lookups[tail] = reason
                # What int8 cannot feed this function, the layers computing its input cannot
                # either: their output error (a step of their int8 input, through the weights)
                # lands on the same range (silero_vad's LSTM gates: 9 dB with them int8).
                for layer in self._layers_feeding(region.root(self.bindings)):
                    ops = "·".join(region.ops(self.bindings))
                    self.sensitive_layers.setdefault(
                        self.plan.layers[layer].name,
                        f"its output feeds {ops}, which stays float: {reason}")
        if self.coarse_lookups:
            quantized = self._reachable(set(self.coarse_lookups))
        self.quantized = quantized
        for i in sorted(quantized, reverse=True):  # users come after their producers
            if i not in self.plan.layers and not self._integer_consumer(i):
                quantized.discard(i)
                self.read_by_float_only.add(i)
        return quantized

    def _reachable(self, excluded: set[int]) -> set[int]:
        done: set[relax.Var] = set()
        quantized: set[int] = set()
        fused_add = {relu: add for add, relu in self.plan.fused_relu.items()}
        for i, b in enumerate(self.bindings):
            layer = self.plan.layers.get(i)
            if layer is not None and layer.name not in self.keep_float \
                    and layer.name not in self.sensitive_layers:
                quantized.add(i)
                done.add(b.var)
            elif i in self.plan.int_ops and i not in excluded:
                source = self.bindings[fused_add[i]].value if i in fused_add else b.value
                region = self.plan.lookups.get(i)
                sources = [region.root(self.bindings)] if region else free_vars(source)
                if any(v in done for v in sources):
                    quantized.add(i)
                    done.add(b.var)
        return quantized

    def _layers_feeding(self, var: relax.Var) -> set[int]:
        """Tails of the layers whose outputs reach ``var`` through adds, concats, views and
        selections only (an LSTM gate: x·W + h·R, split)."""
        found: set[int] = set()
        stack, seen = [var], set()
        while stack:
            position = self.positions.get(stack.pop())
            if position is None or position in seen:
                continue
            seen.add(position)
            tail = self.plan.owner.get(position, position)
            if tail in self.plan.layers:
                found.add(tail)
                continue
            value = self.bindings[position].value
            if isinstance(value, relax.TupleGetItem):
                stack.append(value.tuple_value)
            elif call_name(value) == "relax.take":  # a selection of the data's values
                stack.append(value.args[0])
            elif call_name(value) in _LAYOUT_OPS + ("relax.add", "relax.concat"):
                stack.extend(free_vars(value))
        return found

    def _too_coarse(self, region: lookup.Region, weight) -> str | None:
        """Why an int8 table cannot carry ``region`` (its input's step moves the output
        by more than ``MAX_TABLE_JUMP`` output steps: e.g. an LSTM gate's sigmoid fed a
        pre-activation whose calibrated range is ±15,000), or None."""
        qp_in = self._input_qparams(region.root(self.bindings))
        qp_out = self.qparams_of(self.bindings[region.tail].var)
        table = lookup.table(region, self.bindings, weight, qp_in, qp_out).astype(np.int32)
        jump = int(np.abs(np.diff(table)).max(initial=0))
        if jump <= MAX_TABLE_JUMP:
            return None
        return (f"an int8 table is too coarse: one input step moves the output by up to "
                f"{jump} steps (input range ±{float(qp_in.scale) * 128:.3g})")

    def _input_qparams(self, var: relax.Var) -> QParams:
        """The quantization ``var`` will have as an integer op's input: its own, or that of
        the tensor it is a view of (layout ops, split parts, ReLU, max pooling)."""
        position = self.positions.get(var)
        while position is not None and position in self.plan.int_ops \
                and position not in self.plan.lookups:
            value = self.bindings[position].value
            if isinstance(value, relax.TupleGetItem):
                source = value.tuple_value
            elif call_name(value) in _SAME_SCALE_OPS:
                source = value.args[0]
            else:
                break
            var, position = source, self.positions.get(source)
        return self.qparams_of(var)

    def qparams_of(self, old: relax.Var) -> QParams:
        lo, hi = self.ranges(self.key[old])
        return sc.activation_qparams(lo, hi, self.scheme)

    def int8(self, rc: RebuildContext, old: relax.Var) -> tuple[relax.Expr, QParams]:
        """The int8 form of an old tensor, quantizing it at a float boundary if needed."""
        if old not in self.q:
            qp = self.qparams_of(old)
            expr = rc.emit(relax.op.quantize(rc.arg(old), _const(qp.scale, "float32"),
                                             _const(qp.zero_point, "int8"), out_dtype="int8"),
                           "quantize")
            self.q[old] = (expr, qp)
            if self.key[old].startswith("in:"):
                self.input_qparams[self.key[old][3:]] = qp
        return self.q[old]

    def _finish(self, rc, old_var, q_expr, qp) -> relax.Expr:
        """Record ``old_var``'s int8 form; return its float view (dead unless used)."""
        q_expr = rc.emit(q_expr, "q")
        self.q[old_var] = (q_expr, qp)
        return self._dequantize(q_expr, qp)

    @staticmethod
    def _dequantize(q_expr: relax.Expr, qp: QParams) -> relax.Expr:
        return relax.op.dequantize(q_expr, _const(qp.scale, "float32"),
                                   _const(qp.zero_point, "int8"), out_dtype="float32")

    # -- layers --
    def layer(self, rc: RebuildContext, layer: Layer, tail_var: relax.Var) -> relax.Expr:
        core = self.bindings[layer.core].value
        if core.args[0] not in self.key:  # e.g. an LSTM's initial state times its weights
            raise UnquantizableLayer(layer.name, "its input is a constant, not an activation")
        q_x, qp_x = self.int8(rc, core.args[0])
        w = self.model.params[layer.weight].astype(np.float64)
        axis = 0 if layer.kind == "conv2d" else 1
        qp_w = sc.weight_qparams(w, axis, self.scheme)
        w_q = sc.quantize(w, qp_w)
        channels = w.shape[axis]
        bias = np.zeros(channels) if layer.bias_weight is None else \
            self.model.params[layer.bias_weight].astype(np.float64).reshape(-1)
        bias = bias - self.bias_shift.get(layer.name, 0.0)
        s_acc = np.broadcast_to(qp_x.scale * qp_w.scale, (channels,)).astype(np.float64)
        zp_x = int(qp_x.zero_point)
        reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
        w_sum = w_q.astype(np.int64).sum(axis=reduce_axes)
        bias_q = np.round(bias / s_acc).astype(np.int64) - zp_x * w_sum
        if np.abs(bias_q).max(initial=0) >= 2 ** 31:
            raise UnquantizableLayer(layer.name, "its quantized bias overflows int32 (the "
                                     "input and weight scales are too small for the bias)")
        w_param = rc.param(rc.unique_name(f"{layer.name}.weight_int8"), w_q)
        out_ndim = tail_var.ty.ndim
        shape = _channel_shape(layer.kind, out_ndim, channels)
        if layer.kind == "conv2d":
            a = core.attrs
            padding = [int(p) for p in a.padding]
            data = q_x
            if zp_x != 0 and any(padding):  # pad with the zero point: the value of real 0
                top, left, bottom, right = padding
                data = rc.emit(relax.op.nn.pad(q_x, [0, 0, 0, 0, top, bottom, left, right],
                                               pad_value=float(zp_x)))
                padding = [0, 0, 0, 0]
            acc = rc.emit(relax.op.nn.conv2d(
                data, w_param, strides=[int(s) for s in a.strides], padding=padding,
                dilation=[int(d) for d in a.dilation], groups=int(a.groups),
                out_dtype="int32"))
        else:
            acc = rc.emit(relax.op.matmul(q_x, w_param, out_dtype="int32"))
        if np.any(bias_q):
            bias_param = rc.param(rc.unique_name(f"{layer.name}.bias_int32"),
                                  bias_q.astype(np.int32).reshape(shape))
            acc = rc.emit(relax.op.add(acc, bias_param))
        record = LayerRecord(layer.name, layer.kind, [qp_x], None, qp_w, None, layer.tail,
                             self.range_method)
        self.records.append(record)
        if layer.tail not in self.int8_out:  # dequantize the accumulator to float
            scale = rc.param(rc.unique_name(f"{layer.name}.out_scale"),
                             s_acc.astype(np.float32).reshape(shape))
            value = rc.emit(relax.op.multiply(relax.op.astype(acc, "float32"), scale))
            return relax.op.nn.relu(value) if layer.relu is not None else value
        qp_out = self.qparams_of(tail_var)
        record.output = qp_out
        record.requant = sc.requant_params(s_acc / qp_out.scale, self.scheme.power_of_two)
        low = int(qp_out.zero_point) if layer.relu is not None else qp_out.qmin
        q = emit_requant(rc, acc, record.requant, int(qp_out.zero_point), low, int(qp_out.qmax), shape)
        return self._finish(rc, tail_var, q, qp_out)

    # -- integer ops between layers --
    def _rescale_sum(self, rc, terms: list[tuple[relax.Expr, QParams]], qp_out: QParams,
                     low: int) -> relax.Expr:
        """int8 ``sum((q_i − zp_i)·s_i) / s_out + zp_out``, rounded and clipped."""
        real = np.array([float(qp.scale) / float(qp_out.scale) for _, qp in terms])
        rq = sc.requant_params(real, self.scheme.power_of_two)
        if rq.multiplier is None:  # powers of two: align by left shifts, one right shift
            common = int(max(rq.shift.max(), 0))
            total = None
            for (q, qp), k in zip(terms, rq.shift):
                term = rc.emit(relax.op.astype(q, "int32"))
                if int(qp.zero_point):
                    term = rc.emit(relax.op.subtract(term, _const(qp.zero_point, "int32")))
                if common - k:
                    term = rc.emit(relax.op.left_shift(term, _const(common - k, "int32")))
                total = term if total is None else rc.emit(relax.op.add(total, term))
            final = Requant(None, np.asarray(common, np.int64))
            return emit_requant(rc, total, final, int(qp_out.zero_point), low, int(qp_out.qmax), ())
        total = None
        for (q, qp), m in zip(terms, rq.multiplier):
            term = rc.emit(relax.op.astype(q, "int64"))
            if int(qp.zero_point):
                term = rc.emit(relax.op.subtract(term, _const(qp.zero_point, "int64")))
            term = rc.emit(relax.op.multiply(term, _const(m, "int64")))
            total = term if total is None else rc.emit(relax.op.add(total, term))
        shift = int(rq.shift)
        if shift:
            total = rc.emit(relax.op.add(total, _const(np.int64(1) << (shift - 1), "int64")))
            total = rc.emit(relax.op.right_shift(total, _const(shift, "int64")))
        total = rc.emit(relax.op.add(total, _const(qp_out.zero_point, "int64")))
        total = rc.emit(relax.op.clip(total, int(low),
                                      int(qp_out.qmax)))
        return relax.op.astype(total, "int8")

    def int_op(self, rc: RebuildContext, position: int, binding: relax.VarBinding) -> relax.Expr:
        value, op = binding.value, call_name(binding.value)
        fused_add = {relu: add for add, relu in self.plan.fused_relu.items()}
        name = f"{(op or 'item').rsplit('.', 1)[-1]}@{binding.var.name}"
        if position in fused_add:  # add + relu
            value, op = self.bindings[fused_add[position]].value, "relax.add+relu"
        if position in self.plan.lookups:
            return self._lookup(rc, position, binding, self.plan.lookups[position])
        if isinstance(value, relax.TupleGetItem):  # a part of an integer split
            parts, qp = self.q[value.tuple_value]
            self._record(name.replace("item@", "split@"), "split", [qp], qp, position)
            return self._finish(rc, binding.var, relax.TupleGetItem(parts, value.index), qp)
        if op == "relax.multiply":
            return self._product(rc, position, binding, name)
        if op == "relax.split":
            q, qp = self.int8(rc, value.args[0])
            parts = rc.emit(relax.Call(value.op, [q], value.attrs), "q")
            self.q[binding.var] = (parts, qp)  # recorded per part (float positions)
            count = len(binding.var.ty.fields)
            return relax.Tuple([self._dequantize(rc.emit(relax.TupleGetItem(parts, k)), qp)
                                for k in range(count)])
        if op in ("relax.add", "relax.add+relu"):
            terms = [self.int8(rc, a) for a in value.args]
            qp_out = self.qparams_of(binding.var)
            low = int(qp_out.zero_point) if op.endswith("relu") else qp_out.qmin
            q = self._rescale_sum(rc, terms, qp_out, low)
            self._record(name, op, [t[1] for t in terms], qp_out, position)
            return self._finish(rc, binding.var, q, qp_out)
        if op == "relax.concat":
            qp_out = self.qparams_of(binding.var)
            parts = []
            for field_ in value.args[0].fields:
                q, qp = self.int8(rc, field_)
                parts.append(q if qp.same_as(qp_out) else
                             rc.emit(self._rescale_sum(rc, [(q, qp)], qp_out, qp_out.qmin)))
            self._record(name, op, [self.q[f][1] for f in value.args[0].fields], qp_out, position)
            return self._finish(rc, binding.var, relax.op.concat(parts, int(value.attrs.axis)),
                                qp_out)
        if op == "relax.mean":
            q, qp = self.int8(rc, value.args[0])
            in_shape = value.args[0].ty.shape.values
            axes = [int(a) % len(in_shape) for a in value.attrs.axis]
            count = int(np.prod([int(in_shape[a]) for a in axes]))
            total = rc.emit(relax.op.sum(relax.op.astype(q, "int32"), axes,
                                         bool(value.attrs.keepdims)))
            if int(qp.zero_point):
                total = rc.emit(relax.op.subtract(total, _const(count * int(qp.zero_point),
                                                                "int32")))
            qp_out = self.qparams_of(binding.var)
            rq = sc.requant_params(np.asarray(float(qp.scale) / (count * float(qp_out.scale))),
                                   self.scheme.power_of_two)
            self._record(name, op, [qp], qp_out, position, rq)
            q = emit_requant(rc, total, rq, int(qp_out.zero_point), qp_out.qmin,
                             int(qp_out.qmax), ())
            return self._finish(rc, binding.var, q, qp_out)
        # ReLU, max pooling and layout ops keep the input's scale and zero point.
        q, qp = self.int8(rc, value.args[0])
        if op == "relax.nn.relu":
            out = relax.op.maximum(q, _const(qp.zero_point, "int8"))
        else:
            out = relax.Call(value.op, [q] + [rc.arg(a) for a in value.args[1:]], value.attrs,
                             value.ty_args)
        self._record(name, op, [qp], qp, position)
        return self._finish(rc, binding.var, out, qp)

    def _lookup(self, rc: RebuildContext, position: int, binding: relax.VarBinding,
                region: lookup.Region) -> relax.Expr:
        q, qp = self.int8(rc, region.root(self.bindings))
        qp_out = self.qparams_of(binding.var)
        table = lookup.table(region, self.bindings, rc.weight, qp, qp_out)
        index = rc.emit(relax.op.add(relax.op.astype(q, "int32"), _const(128, "int32")))
        ops = ",".join(region.ops(self.bindings))
        self._record(f"lookup@{binding.var.name}", f"lookup({ops})", [qp], qp_out, position)
        # in bounds by construction; "clip" only spares users TVM's warning about "fast"
        looked_up = relax.op.take(_const(table, "int8"), index, axis=0, mode="clip")
        return self._finish(rc, binding.var, looked_up, qp_out)

    def _product(self, rc: RebuildContext, position: int, binding: relax.VarBinding,
                 name: str) -> relax.Expr:
        """int8 ``(q_a − zp_a)(q_b − zp_b)·s_a·s_b / s_out + zp_out``: the products fit
        int32 (|·| ≤ 255²), one fixed-point requantization."""
        terms = [self.int8(rc, a) for a in binding.value.args]
        product = None
        for q, qp in terms:
            term = rc.emit(relax.op.astype(q, "int32"))
            if int(qp.zero_point):
                term = rc.emit(relax.op.subtract(term, _const(qp.zero_point, "int32")))
            product = term if product is None else rc.emit(relax.op.multiply(product, term))
        qp_out = self.qparams_of(binding.var)
        real = float(terms[0][1].scale) * float(terms[1][1].scale) / float(qp_out.scale)
        rq = sc.requant_params(np.asarray(real), self.scheme.power_of_two)
        self._record(name, "relax.multiply", [t[1] for t in terms], qp_out, position, rq)
        q = emit_requant(rc, product, rq, int(qp_out.zero_point), qp_out.qmin,
                         int(qp_out.qmax), ())
        return self._finish(rc, binding.var, q, qp_out)

    def _record(self, name, op, inputs, out, position, rq=None) -> None:
        self.records.append(LayerRecord(name, op.replace("relax.", ""), inputs, out, None, rq,
                                        position, self.range_method))

    def run(self, model: Model | None = None) -> Model:
        """Rewrite ``model`` (default: the planned model; or a probe of it)."""
        counter = iter(range(len(self.bindings)))

        def rewrite(rc: RebuildContext, binding: relax.VarBinding):
            position = next(counter)
            if position not in self.quantized:
                return None
            layer = self.plan.layers.get(position)
            if layer is not None:
                return self.layer(rc, layer, binding.var)
            return self.int_op(rc, position, binding)

        target = model or self.model
        if target is not self.model:  # probes have new variables at the same positions
            rebound = dataflow_bindings(target.main)
            self.key.update({b.var: f"b{i}" for i, b in enumerate(rebound)})
            self.key.update({v: f"in:{s.name}" for v, s in zip(target.main.params, target.inputs)})
            self.bindings = rebound
        self.records, self.q = [], {}
        return rebuild(target, rewrite)
