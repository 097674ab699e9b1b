"""Elementwise functions of one int8 tensor as 256-entry lookup tables.

An int8 tensor takes 256 values, so any chain of elementwise float ops whose only tensor
input is that tensor — SiLU ``x·sigmoid(x)``, hard-swish ``x·min(max(x+3, 0), 6)/6``,
sigmoid, tanh, GELU, leaky ReLU, clips — is a function of its int8 code: tabulate it once
(the float function evaluated in float64 on the 256 dequantized values, quantized with the
chain output's scale and zero point) and the op becomes one gather. The table is exact for
the quantized input: every code maps to the correctly rounded int8 of the true value.

``find_regions`` finds such chains in a model's ``main`` (by binding position, like the
rest of the plan); ``table`` evaluates one. Both take ``weight``, the rebuild context's
lookup of an expression's constant value (scalars are often named 0-d weights).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special
from tvm import relax
from tvm_ffi import structural_equal

from hwcompile.rewrite import call_name

from . import scheme as sc
from .scheme import QParams


def _relu(x):
    return np.maximum(x, 0.0)


def _gelu(x):
    return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _sigmoid(x):
    return special.expit(x)


# Relax operators the tables evaluate, in float64 numpy.
UNARY = {
    "relax.sigmoid": _sigmoid, "relax.tanh": np.tanh, "relax.exp": np.exp,
    "relax.erf": special.erf, "relax.nn.relu": _relu, "relax.nn.silu": lambda x: x * _sigmoid(x),
    "relax.nn.gelu": _gelu, "relax.nn.gelu_tanh": _gelu_tanh, "relax.negative": np.negative,
    "relax.abs": np.abs, "relax.sqrt": np.sqrt, "relax.rsqrt": lambda x: 1.0 / np.sqrt(x),
}
BINARY = {
    "relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
    "relax.divide": np.divide, "relax.maximum": np.maximum, "relax.minimum": np.minimum,
    "relax.power": np.power,
}
OTHER = ("relax.nn.leakyrelu", "relax.clip")


@dataclass
class Region:
    """Bindings ``members`` (ascending positions, the last is the output) computing an
    elementwise function of one tensor (``root``). Positions, not variables, so that the
    plan applies to every rebuild of the model (probes included)."""

    members: list[int]

    @property
    def tail(self) -> int:
        return self.members[-1]

    def root(self, bindings: list[relax.VarBinding]) -> relax.Var:
        inner = {bindings[m].var for m in self.members}
        for m in self.members:
            for arg in bindings[m].value.args:
                if isinstance(arg, relax.Var) and arg not in inner:
                    return arg
        raise ValueError("a lookup region without an input")

    def ops(self, bindings: list[relax.VarBinding]) -> list[str]:
        return [call_name(bindings[m].value).removeprefix("relax.") for m in self.members]


Weight = Callable[[relax.Expr], "np.ndarray | None"]


def _scalar(expr: relax.Expr, weight: Weight) -> float | None:
    """A constant or weight holding one float value (any all-ones shape), else None."""
    if not isinstance(expr.ty, relax.TensorType):
        return None
    value = weight(expr)
    if value is not None and value.size == 1 and value.dtype.kind == "f":
        return float(value.reshape(()))
    return None


def _float_tensor(expr: relax.Expr) -> bool:
    ty = expr.ty
    return isinstance(ty, relax.TensorType) and "float" in str(ty.dtype)


def find_regions(bindings: list[relax.VarBinding], users: dict[relax.Var, list[int]],
                 outputs: set[relax.Var], weight: Weight) -> list[Region]:
    """Maximal elementwise chains of one float tensor (module docstring). A chain's inner
    values must have no users outside it (only its output is kept); every tensor in it has
    the root's shape."""
    root_of: dict[relax.Var, relax.Var] = {}  # candidate binding var → its root
    position = {b.var: i for i, b in enumerate(bindings)}
    for b in bindings:
        op, value = call_name(b.value), b.value
        if op is None or not (op in UNARY or op in BINARY or op in OTHER) \
                or not _float_tensor(b.var):
            continue
        tensors = [a for a in value.args
                   if isinstance(a.ty, relax.TensorType) and _scalar(a, weight) is None]
        roots = {root_of.get(a, a) for a in tensors}
        if len(roots) != 1 or not all(_same_shape(a, b.var) for a in tensors):
            continue
        root = roots.pop()
        if isinstance(root, relax.Var) and _float_tensor(root) and _same_shape(root, b.var):
            root_of[b.var] = root
    regions = []
    claimed: set[int] = set()
    for var in reversed(list(root_of)):
        i = position[var]
        if i in claimed:
            continue
        root = root_of[var]
        inside = lambda u, r=root: bindings[u].var in root_of and root_of[bindings[u].var].same_as(r)
        if var not in outputs and all(inside(u) for u in users.get(var, [])):
            continue  # not a chain's output: a chain further down contains it
        members = _ancestors(i, bindings, position, root_of, root)
        if not all(bindings[m].var not in outputs and
                   all(u in members for u in users.get(bindings[m].var, []))
                   for m in members if m != i):
            continue  # an inner value is used elsewhere
        claimed.update(members)
        regions.append(Region(sorted(members)))
    return sorted(regions, key=lambda r: r.tail)


def _same_shape(a: relax.Expr, b: relax.Expr) -> bool:
    sa, sb = a.ty.shape, b.ty.shape
    return sa is not None and sb is not None and structural_equal(sa, sb)


def _ancestors(tail: int, bindings, position, root_of, root) -> set[int]:
    members, stack = set(), [tail]
    while stack:
        i = stack.pop()
        if i in members:
            continue
        members.add(i)
        for arg in bindings[i].value.args:
            if isinstance(arg, relax.Var) and root_of.get(arg) is not None and root_of[arg].same_as(root):
                stack.append(position[arg])
    return members


def evaluate(region: Region, bindings: list[relax.VarBinding], x: np.ndarray,
             weight: Weight) -> np.ndarray:
    """The region's function on float64 values ``x`` of its root."""
    values: dict[relax.Var, np.ndarray] = {region.root(bindings): x}

    def arg(expr):
        scalar = _scalar(expr, weight)
        return np.float64(scalar) if scalar is not None else values[expr]

    with np.errstate(all="ignore"):
        for i in region.members:
            b = bindings[i]
            op, args = call_name(b.value), b.value.args
            if op in UNARY:
                out = UNARY[op](arg(args[0]))
            elif op in BINARY:
                out = BINARY[op](arg(args[0]), arg(args[1]))
            elif op == "relax.clip":
                lo, hi = (float(_prim(a)) for a in args[1:])
                out = np.clip(arg(args[0]), lo, hi)
            else:  # leaky ReLU
                v = arg(args[0])
                out = np.where(v >= 0, v, float(b.value.attrs.alpha) * v)
            values[b.var] = out
    return values[bindings[region.tail].var]


def _prim(value):
    inner = value.value
    return inner.value if hasattr(inner, "value") else inner


def table(region: Region, bindings, weight: Weight, qp_in: QParams, qp_out: QParams
          ) -> np.ndarray:
    """int8 table indexed by ``code + 128``: the quantized region output of every code."""
    codes = np.arange(-128, 128, dtype=np.float64)
    real = (codes - float(qp_in.zero_point)) * float(qp_in.scale)
    out = evaluate(region, bindings, real, weight)
    out = np.nan_to_num(out, nan=0.0, posinf=np.finfo(np.float64).max,
                        neginf=-np.finfo(np.float64).max)
    return sc.quantize(out, qp_out).astype(np.int8)
