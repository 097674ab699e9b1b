"""Partitioning a quantized Relax graph between VTA and the host CPU.

A *segment* is what one VTA program executes: an int8 x int8 -> int32 ``conv2d`` (NCHW/OIHW,
groups 1, no dilation) or ``matmul`` with a constant weight, followed by the single-use
elementwise chain the quantize pass emits after it — bias add, rounding add, right/left
shift, clip/ReLU/max/min, casts, and a residual add of a second tensor — up to a cast to
int8 (STORE truncates exactly as ``astype("int8")`` does). The segment's final binding is
replaced by ``call_dps_packed("hwcompile.vta.run", key, data, *residuals)``; the rest
becomes dead code. Everything else (float layers, pooling, concat, softmax, layout ops,
quantize/dequantize, layers that do not pay off or fit) stays on the host, and each
decision is reported with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from hwcompile.errors import VTAError
from hwcompile.model import Model
from hwcompile.rewrite import (
    RebuildContext,
    binding_users,
    call_name,
    dataflow_bindings,
    rebuild,
)

from .config import VTAConfig
from .lower import IMM_MAX, IMM_MIN, AluStep, LayerSpec, Residual, blocks, default_plan

PACKED_FUNC = "hwcompile.vta.run"
# Below this fraction of useful MACs after padding channels to blocks, a layer stays on the
# CPU (the historical flow's 3-channel first convolution: 3/16 = 19 %).
MIN_MAC_EFFICIENCY = 0.5
_SHIFTS = {"relax.right_shift": 1, "relax.left_shift": -1}
_MINMAX = {"relax.maximum": "max", "relax.minimum": "min"}


@dataclass
class Segment:
    """An offloadable layer: its LayerSpec, the old vars it reads, its tail binding."""

    spec: LayerSpec
    kind: str  # "conv2d" or "dense"
    data: relax.Var
    residuals: list[relax.Var]
    tail: int
    note: str = ""


@dataclass
class Decision:
    layer: str
    op: str
    placement: str  # "vta" or "cpu"
    reason: str

    def to_json(self) -> dict:
        return {"layer": self.layer, "op": self.op, "placement": self.placement,
                "reason": self.reason}


@dataclass
class Partition:
    segments: list[Segment] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


def _int(arg: relax.Expr) -> int:
    value = getattr(arg, "value", arg)
    return int(getattr(value, "value", value))


def _dtype(expr: relax.Expr) -> str:
    return str(expr.ty.dtype)


class _Chain:
    """Accumulates the ALU steps of one segment while walking its users."""

    def __init__(self, rc: RebuildContext, channels: int, dense: bool):
        self.rc, self.channels, self.dense = rc, channels, dense
        self.steps: list[AluStep] = []
        self.vectors: list[np.ndarray] = []
        self.residuals: list[Residual] = []
        self.residual_vars: list[relax.Var] = []
        self.positions: list[int] = []  # bindings the chain (and its residuals) replace
        self.bounds = (-np.inf, np.inf)  # known value range of the accumulator

    def operand(self, const: np.ndarray) -> dict | None:
        """An immediate or per-channel vector operand for ``const``, or None."""
        const = np.asarray(const)
        if const.dtype.kind not in "iu":
            return None
        if const.size == 1:
            value = int(const.reshape(()))
            if IMM_MIN <= value <= IMM_MAX:
                return {"imm": value}
            const = np.full(self.channels, value)
        per_channel = ((self.channels,), (1, self.channels)) if self.dense else \
            ((1, self.channels, 1, 1), (self.channels, 1, 1))
        if const.shape not in per_channel and const.size != self.channels:
            return None
        flat = const.reshape(-1).astype(np.int64)
        if np.all(flat == flat[0]) and IMM_MIN <= flat[0] <= IMM_MAX:
            return {"imm": int(flat[0])}
        if flat.min() < -(1 << 31) or flat.max() >= 1 << 31:
            return None
        self.vectors.append(flat.astype(np.int32))
        return {"vector": len(self.vectors) - 1}

    def const_step(self, op: str, const: np.ndarray, negate: bool = False) -> bool:
        const = np.asarray(const)
        if negate:
            const = -const.astype(np.int64)
        operand = self.operand(const)
        if operand is None:
            return False
        self.steps.append(AluStep(op, **operand))
        lo, hi = self.bounds
        if op in ("max", "min") and "imm" in operand:
            f = max if op == "max" else min
            self.bounds = (f(lo, operand["imm"]), f(hi, operand["imm"]))
        else:
            self.bounds = (-np.inf, np.inf)
        return True


def _side_chain(rc: RebuildContext, other: relax.Expr, where: dict, taken: set[int]
                ) -> tuple[relax.Expr, list[AluStep], list[int]] | None:
    """Trace a residual operand back through single-use unary immediate ops to its base;
    the base, the steps and the positions they occupy."""
    steps: list[AluStep] = []
    positions: list[int] = []
    while isinstance(other, relax.Var) and _dtype(other) != "int8" \
            and rc.num_users(other) == 1 and where.get(other) not in taken:
        producer = rc.producer(other)
        op = call_name(producer)
        if op == "relax.astype" and _dtype(producer.args[0]) == "int8":  # widening
            positions.append(where[other])
            other = producer.args[0]
            continue
        if op not in ("relax.add", "relax.subtract", *_SHIFTS):
            break
        const = rc.weight(producer.args[1])
        if const is None or np.asarray(const).size != 1:
            break
        value = int(np.asarray(const).reshape(()))
        value = {"relax.subtract": -value, "relax.left_shift": -value}.get(op, value)
        if not IMM_MIN <= value <= IMM_MAX:
            break
        steps.insert(0, AluStep("shr" if op in _SHIFTS else "add", imm=value))
        positions.append(where[other])
        other = producer.args[0]
    if _dtype(other) not in ("int8", "int32"):
        return None
    return other, steps, positions


def _walk(rc: RebuildContext, bindings: list, users: dict, start: int, chain: _Chain,
          taken: set[int]) -> tuple[int, int, int, int, int] | None:
    """Follow the chain from binding ``start`` through positions not ``taken`` by earlier
    segments; (tail, steps, vectors, residuals, positions) counts at the last point it was int8."""
    cur, best = bindings[start].var, None
    out_shape = tuple(bindings[start].var.ty.shape)
    where = {b.var: i for i, b in enumerate(bindings)}
    while True:
        used = users.get(cur, [])
        if len(used) != 1 or rc.num_users(cur) != 1 or used[0] in taken:
            return best
        pos = used[0]
        value = bindings[pos].value
        op = call_name(value)
        args = list(value.args) if op else []
        if op in ("relax.add", *_MINMAX) and args[1].same_as(cur):
            args = [args[1], args[0]]  # commutative: the chain's operand first
        if op == "relax.astype":
            if str(value.attrs.dtype) not in ("int8", "int32"):
                return best
        elif op == "relax.clip":
            if not (chain.const_step("max", np.asarray(_int(args[1])))
                    and chain.const_step("min", np.asarray(_int(args[2])))):
                return best
        elif op == "relax.nn.relu":
            chain.const_step("max", np.asarray(0))
        elif op in ("relax.add", "relax.subtract", *_SHIFTS, *_MINMAX) and args[0].same_as(cur):
            const = rc.weight(args[1])
            if const is not None:
                alu = "shr" if op in _SHIFTS else _MINMAX.get(op, "add")
                negate = op in ("relax.subtract", "relax.left_shift")
                if not chain.const_step(alu, const, negate):
                    return best
            elif op == "relax.add" and tuple(args[1].ty.shape) == out_shape:
                traced = _side_chain(rc, args[1], where, taken)
                if traced is None:
                    return best
                chain.residual_vars.append(traced[0])
                chain.residuals.append(Residual(tuple(traced[1])))
                chain.positions.extend(traced[2])
                chain.steps.append(AluStep("add", tensor=len(chain.residuals) - 1))
                chain.bounds = (-np.inf, np.inf)
            else:
                return best
        else:
            return best
        chain.positions.append(pos)
        cur = bindings[pos].var
        lo, hi = chain.bounds
        if _dtype(cur) == "int8":
            best = (pos, len(chain.steps), len(chain.vectors), len(chain.residuals),
                    len(chain.positions))
            if op == "relax.astype" and (lo < -128 or hi > 127):
                return best  # the cast truncates: only the store may do that


def _core(rc: RebuildContext, value: relax.Call) -> tuple[str, np.ndarray, dict] | str:
    """(kind, OIHW int8 weight, conv params) of an int8 conv2d/matmul, or why not."""
    op = call_name(value)
    data, weight = value.args[0], rc.weight(value.args[1])
    if weight is None:
        return "weight is not a constant"
    if _dtype(data) != "int8" or weight.dtype != np.int8:
        return f"{_dtype(data)} x {weight.dtype} (VTA multiplies int8 x int8)"
    if op == "relax.matmul":
        if weight.ndim != 2 or data.ty.ndim != 2:
            return "only a 2-D input times a 2-D weight (dense) is offloaded"
        return "dense", np.ascontiguousarray(weight.T[:, :, None, None]), \
            {"stride": (1, 1), "padding": (0, 0, 0, 0)}
    a = value.attrs
    if (a.data_layout, a.kernel_layout, a.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return f"layout {a.data_layout}/{a.kernel_layout} (VTA takes NCHW/OIHW)"
    if int(a.groups) != 1 or any(int(d) != 1 for d in a.dilation):
        return "grouped or dilated convolution"
    top, left, bottom, right = (int(p) for p in a.padding)
    return "conv2d", weight, {"stride": tuple(int(s) for s in a.strides),
                              "padding": (top, left, bottom, right)}


def find_segments(model: Model, cfg: VTAConfig) -> Partition:
    """Decide, layer by layer, what runs on VTA (see the module docstring)."""
    rc = RebuildContext(model)
    bindings = dataflow_bindings(model.main)
    users = binding_users(bindings)
    result = Partition()
    taken: set[int] = set()
    for i, b in enumerate(bindings):
        op = call_name(b.value)
        if op not in ("relax.nn.conv2d", "relax.matmul"):
            continue
        weight_name = rc.weight_name(b.value.args[1])
        name, short = weight_name or b.var.name, op.rsplit(".", 1)[-1]
        if "float" in _dtype(b.var):
            result.decisions.append(Decision(name, short, "cpu", "float layer (not quantized)"))
            continue
        core = _core(rc, b.value)
        if isinstance(core, str):
            result.decisions.append(Decision(name, short, "cpu", core))
            continue
        kind, weight, conv = core
        shape = [d for d in b.value.args[0].ty.shape.values]
        if any(not isinstance(d, tvm.tirx.IntImm) for d in shape[1:]):
            result.decisions.append(Decision(name, short, "cpu", "non-static C/H/W"))
            continue
        in_shape = (int(shape[1]), 1, 1) if kind == "dense" else tuple(int(d) for d in shape[1:])
        chain = _Chain(rc, weight.shape[0], kind == "dense")
        walked = _walk(rc, bindings, users, i, chain, taken)
        if walked is None:
            result.decisions.append(Decision(name, short, "cpu", "its int32 result is not "
                                             "requantized to int8 (VTA stores int8 only)"))
            continue
        tail, steps, nvec, nres, npos = walked
        spec = LayerSpec(in_shape, weight, conv["stride"], conv["padding"], chain.steps[:steps],
                         chain.vectors[:nvec], chain.residuals[:nres], name=name)
        icb, ocb = blocks(spec, cfg)
        useful = in_shape[0] * weight.shape[0] / (icb * ocb * cfg.block_in * cfg.block_out)
        if useful < MIN_MAC_EFFICIENCY:
            result.decisions.append(Decision(name, short, "cpu", f"channels {in_shape[0]}->"
                                             f"{weight.shape[0]} padded to blocks of "
                                             f"{cfg.block_in} leave {useful:.0%} useful MACs"))
            continue
        try:
            default_plan(spec, cfg)
        except VTAError as err:
            result.decisions.append(Decision(name, short, "cpu", str(err)))
            continue
        note = "" if useful == 1 else (f"channels {in_shape[0]}->{weight.shape[0]} zero-padded "
                                       f"to multiples of {cfg.block_in} ({useful:.0%} useful MACs)")
        taken.update(chain.positions[:npos])
        result.segments.append(Segment(spec, kind, b.value.args[0],
                                       chain.residual_vars[:nres], tail, note))
        result.decisions.append(Decision(name, short, "vta", note or "offloaded"))
    return result


def float_layers_only(model: Model) -> bool:
    """True when the model has conv2d/matmul layers and none of them is integer."""
    kinds = [_dtype(b.var) for b in dataflow_bindings(model.main)
             if call_name(b.value) in ("relax.nn.conv2d", "relax.matmul")]
    return bool(kinds) and all("float" in k for k in kinds)


def apply(model: Model, segments: list[Segment], keys: list[int]) -> Model:
    """Replace each segment's tail with the packed call that runs its program ``keys[i]``."""
    by_tail = {s.tail: (s, k) for s, k in zip(segments, keys)}
    position = iter(range(len(dataflow_bindings(model.main))))

    def rewrite(rc: RebuildContext, binding: relax.VarBinding):
        found = by_tail.get(next(position))
        if found is None:
            return None
        seg, key = found
        args = [relax.prim_value(key), rc.arg(seg.data)] + [rc.arg(v) for v in seg.residuals]
        return relax.call_dps_packed(PACKED_FUNC, args, binding.var.ty)

    return rebuild(model, rewrite)
