"""Bias compensation: what a removed channel still contributed, folded into its consumers.

A conv/dense output channel is ``act(W·x + shift)`` (shift: its bias and the batch-norm
shift β − γμ/√(var+ε), through ReLU & co.). Removing the channel removes both parts; the
weight part is what the importance criteria rank as small, but the constant part can be
large and the consumers were trained on it. So before slicing, each removed channel's
*constant value* — what it outputs when its kernel rows are zero — is propagated along the
channel-wise path the dependency analysis tracked (batch-norm, bias adds, activations,
pooling, residual adds, concat/split, flatten) to every consumer, and the consumer's output
gets ``Σ_c W_next[:, c] · const_c`` added (for a conv, summed over the kernel window) — in
the batch-norm mean or bias add that follows it, or as a new bias add.

This is exact for channels whose kernel rows are zero, whatever their bias (dense and 1×1
conv consumers; average pooling over the channel with zero padding is approximated as the
constant); for k×k conv consumers with zero padding it is approximate at the borders, where
the consumer read padding zeros rather than the constant. For channels whose weights are
small but not zero it replaces the channel by its zero-input value, a first-order estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from tvm import relax

from hwcompile.model import Model
from hwcompile.rewrite import call_name, dataflow_bindings, free_vars

from .groups import Analysis, Chan

_ERF = np.vectorize(math.erf)
_UNARY = {
    "relax.nn.relu": lambda v, c: np.maximum(v, 0.0),
    "relax.nn.leakyrelu": lambda v, c: np.where(v > 0, v, v * float(c.attrs.alpha)),
    "relax.nn.silu": lambda v, c: v / (1.0 + np.exp(-v)),
    "relax.nn.gelu": lambda v, c: 0.5 * v * (1.0 + _ERF(v / math.sqrt(2.0))),
    "relax.nn.gelu_tanh": lambda v, c: 0.5 * v * (1.0 + np.tanh(
        math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3))),
    "relax.sigmoid": lambda v, c: 1.0 / (1.0 + np.exp(-v)),
    "relax.tanh": lambda v, c: np.tanh(v),
    "relax.exp": lambda v, c: np.exp(v),
    "relax.negative": lambda v, c: -v,
    "relax.abs": lambda v, c: np.abs(v),
    "relax.sqrt": lambda v, c: np.sqrt(np.maximum(v, 0.0)),
    "relax.square": lambda v, c: v * v,
    "relax.erf": lambda v, c: _ERF(v),
    "relax.astype": lambda v, c: v,
    "relax.clip": lambda v, c: np.clip(v, _prim(c.args[1]), _prim(c.args[2])),
}
_BINARY = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
           "relax.divide": np.divide, "relax.maximum": np.maximum, "relax.minimum": np.minimum,
           "relax.power": np.power}
# Mean and spread kept as they are (max pooling's upward bias is ignored; averaging over a
# window, reshapes and permutes leave a channel's mean unchanged).
_SAME = {"relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d",
         "relax.permute_dims", "relax.mean", "relax.max", "relax.min", "relax.image.resize2d",
         "relax.squeeze", "relax.expand_dims", "relax.nn.pad"}
# Gauss-Hermite (probabilists') nodes and weights: E[f(z)], z ~ N(m, v), for any elementwise f.
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(40)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _prim(value) -> float:
    while hasattr(value, "value"):
        value = value.value
    return float(value)


def _dims(ty) -> list:
    return [int(d) if hasattr(d, "value") else None for d in ty.shape.values]


@dataclass
class Moments:
    """Per channel position: mean and variance of the channel's value over inputs.

    ``var`` is NaN where the spread is unknown (the output of a conv/dense row that is not
    zero): a batch-norm then supplies it from its running statistics, and every other
    nonlinearity treats it as 0 (the channel's zero-input value: exact for zero rows).
    """

    mean: np.ndarray
    var: np.ndarray

    def map(self, fn) -> Moments:
        return Moments(fn(self.mean), fn(self.var))


def _elementwise(fn, x: Moments) -> Moments:
    """Mean and variance of fn(z), z ~ N(x.mean, x.var), by Gauss-Hermite quadrature."""
    std = np.sqrt(np.nan_to_num(np.maximum(x.var, 0.0)))
    samples = fn(x.mean[:, None] + std[:, None] * _NODES[None, :])
    mean = samples @ _WEIGHTS
    return Moments(mean, np.maximum((samples ** 2) @ _WEIGHTS - mean ** 2, 0.0))


def _relu(x: Moments) -> Moments:
    """Rectified Gaussian moments, in closed form (a point mass where the spread is 0)."""
    m, v = x.mean, np.nan_to_num(np.maximum(x.var, 0.0))
    s = np.sqrt(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s > 0, m / np.where(s > 0, s, 1.0), 0.0)
    cdf = 0.5 * (1.0 + _ERF(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    mean = np.where(s > 0, m * cdf + s * pdf, np.maximum(m, 0.0))
    second = np.where(s > 0, (m * m + v) * cdf + m * s * pdf, np.maximum(m, 0.0) ** 2)
    return Moments(mean, np.maximum(second - mean ** 2, 0.0))


class _Expected:
    """Per tracked tensor, the Moments of each channel position when the channel is one of
    the removed ones: its conv/dense producers are replaced by their output distribution
    (a point at 0 for a zero kernel row; the following batch-norm's running statistics
    otherwise), then carried along the channel-wise path the analysis tracked."""

    def __init__(self, model: Model, analysis: Analysis):
        self.model, self.a = model, analysis
        self.weights = {v: v.name for v in model.param_vars}
        self.values: dict[str, Moments | list] = {}

    def of(self, expr) -> Moments | list | None:
        return self.values.get(expr.name) if isinstance(expr, relax.Var) else None

    def array(self, expr) -> np.ndarray | None:
        if isinstance(expr, relax.Var) and expr in self.weights:
            return self.model.params[self.weights[expr]].astype(np.float64)
        if isinstance(expr, relax.Constant):
            return expr.data.numpy().astype(np.float64)
        return None

    def run(self) -> dict[str, Moments | list]:
        for binding in dataflow_bindings(self.model.main):
            name = binding.var.name
            chan = self.a.chan.get(name)
            if chan is None:
                continue
            try:
                value = self.visit(name, binding.value, chan)
            except (ValueError, IndexError, TypeError, AttributeError):
                value = None
            if value is None:  # unknown: no compensation through here
                def unknown(c):
                    return None if c is None else Moments(np.full(len(c.ids), np.nan),
                                                          np.full(len(c.ids), np.nan))
                value = [unknown(c) for c in chan] if isinstance(chan, list) else unknown(chan)
            self.values[name] = value
        return self.values

    def visit(self, name: str, value, chan):
        if isinstance(value, relax.TupleGetItem):
            parts = self.of(value.tuple_value)
            return parts[value.index] if isinstance(parts, list) else None
        op = call_name(value)
        args = value.args
        if op in ("relax.nn.conv2d", "relax.nn.conv2d_transpose", "relax.matmul"):
            x = self.a.chan.get(args[0].name) if isinstance(args[0], relax.Var) else None
            if op == "relax.matmul" and isinstance(x, Chan) and x.ids == chan.ids:
                return None  # channels on a batch-like axis of a matmul: not constant
            kernel = self.array(args[1])
            axis = 0 if op == "relax.nn.conv2d" else 1
            rows = np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1)
            zero = ~rows.any(axis=1)
            return Moments(np.zeros(len(zero)), np.where(zero, 0.0, np.nan))
        if op == "relax.nn.batch_norm":
            x = self.of(args[0])
            gamma, beta, mean, var = (self.array(a) for a in args[1:5])
            gamma = gamma if value.attrs.scale else np.ones_like(gamma)
            beta = beta if value.attrs.center else np.zeros_like(beta)
            known = np.isfinite(x.var)  # else: its input is distributed as the running stats
            m_in = np.where(known, x.mean, mean)
            v_in = np.where(known, x.var, var)
            scale = gamma / np.sqrt(var + float(value.attrs.epsilon))
            return [Moments(scale * (m_in - mean) + beta, scale ** 2 * v_in), None, None]
        if op == "relax.nn.relu":
            return _relu(self.of(args[0]))
        if op == "relax.astype":
            return self.of(args[0])
        if op == "relax.negative":
            return Moments(-self.of(args[0]).mean, self.of(args[0]).var)
        if op in _UNARY:
            return _elementwise(lambda z: _UNARY[op](z, value), self.of(args[0]))
        if op in _SAME:
            return self.of(args[0])
        if op == "relax.sum":
            src = _dims(args[0].ty)
            axes = range(len(src)) if value.attrs.axis is None else [int(a) for a in value.attrs.axis]
            n = math.prod(src[a] for a in axes)
            return Moments(self.of(args[0]).mean * n, self.of(args[0]).var * n * n)
        if op in _BINARY:
            return self.binary(op, [self.operand(a, chan, value) for a in args])
        if op == "relax.concat":
            parts = [self.of(f) for f in args[0].fields]
            if sum(len(p.mean) for p in parts) == len(chan.ids):
                return Moments(np.concatenate([p.mean for p in parts]),
                               np.concatenate([p.var for p in parts]))
            # joined along another axis: each output channel pools its operands' values
            return Moments(np.mean([p.mean for p in parts], axis=0),
                           np.mean([p.var for p in parts], axis=0))
        if op == "relax.strided_slice":
            x = self.of(args[0])
            if name not in self.a.channel_slices:
                return x
            start = self.a.channel_slices[name]
            return x.map(lambda a: a[start:start + len(chan.ids)])
        if op == "relax.split":
            x = self.of(args[0])
            if all(c.ids == self.a.chan[args[0].name].ids for c in chan):
                return [x for _ in chan]  # split along another axis
            sizes = np.cumsum([len(c.ids) for c in chan])[:-1]
            return [Moments(m, v) for m, v in zip(np.split(x.mean, sizes), np.split(x.var, sizes))]
        if op == "relax.reshape":
            x = self.of(args[0])
            if len(chan.ids) < len(x.mean):
                return None  # channels split into heads: no per-head value
            return x.map(lambda a: np.repeat(a, len(chan.ids) // len(a)))
        return None

    @staticmethod
    def binary(op: str, xs: list[Moments]) -> Moments:
        a, b = xs
        if op in ("relax.add", "relax.subtract"):  # operands taken as independent
            sign = 1.0 if op == "relax.add" else -1.0
            return Moments(a.mean + sign * b.mean, a.var + b.var)
        if op == "relax.multiply":
            va, vb = np.nan_to_num(a.var), np.nan_to_num(b.var)
            var = va * vb + va * b.mean ** 2 + vb * a.mean ** 2
            unknown = np.isnan(a.var) | np.isnan(b.var)
            return Moments(a.mean * b.mean, np.where(unknown, np.nan, var))
        if not np.any(np.nan_to_num(b.var)):  # x op constant: quadrature over x
            fn = _BINARY[op]
            return _elementwise(lambda z: fn(z, b.mean[:, None]), a)
        fn = _BINARY[op]
        return Moments(fn(a.mean, b.mean), np.zeros_like(a.mean))  # two spreads: means only

    def operand(self, arg, chan: Chan, call) -> Moments:
        tracked = self.of(arg)
        if tracked is not None:
            return tracked
        value = self.array(arg)
        if value is None:
            raise ValueError("untracked activation")
        n = len(chan.ids)
        if value.ndim == 0:
            return Moments(np.full(n, float(value)), np.zeros(n))
        out_ndim = len(_dims(call.ty))
        local = chan.axis - (out_ndim - value.ndim)
        if any(d != 1 for i, d in enumerate(value.shape) if i != local):
            raise ValueError("operand varies along a non-channel axis")
        vector = value.reshape(-1) if local >= 0 else value.reshape(1)
        return Moments(np.broadcast_to(vector, (n,)).astype(np.float64), np.zeros(n))


@dataclass
class Compensation:
    """Params with shifts absorbed, shifts still to add after consumers, and a summary."""

    params: dict[str, np.ndarray]
    inserts: dict[str, np.ndarray] = field(default_factory=dict)  # consumer binding -> shift
    consumers: int = 0
    uncompensated: int = 0  # removed (channel, consumer) pairs without a known constant


def compensate_removed(model: Model, analysis: Analysis, removed: set[int]) -> Compensation:
    """Shift every consumer of a removed channel by that channel's constant contribution.

    A shift goes into the consumer's single following batch-norm (its running mean) or bias
    add when there is one used only there, else into ``inserts`` (a new bias add).
    """
    consts = _Expected(model, analysis).run()
    params = dict(model.params)
    bindings = dataflow_bindings(model.main)
    weights = {v: v.name for v in model.param_vars}
    users: dict[relax.Var, list] = {}
    for b in bindings:
        for var in free_vars(b.value):
            users.setdefault(var, []).append(b.value)
    for var in free_vars(model.main.body.body):
        users.setdefault(var, []).append(None)  # a function output: nothing to absorb into
    result = Compensation(params)
    for b in bindings:
        op = call_name(b.value)
        if op not in ("relax.nn.conv2d", "relax.matmul") or b.var.name in analysis.depthwise:
            continue
        x, w = b.value.args
        xin = analysis.chan.get(x.name) if isinstance(x, relax.Var) else None
        weight = weights.get(w)
        if not isinstance(xin, Chan) or weight is None or not isinstance(analysis.chan.get(b.var.name), Chan):
            continue
        gone = np.array([analysis.find(i) in removed for i in xin.ids])
        if not gone.any():
            continue
        values = np.array(consts[x.name].mean, dtype=np.float64)[gone]
        unknown = ~np.isfinite(values)
        result.uncompensated += int(unknown.sum())
        values[unknown] = 0.0
        kernel = model.params[weight].astype(np.float64)
        positions = np.nonzero(gone)[0]
        if op == "relax.matmul":
            if xin.axis != len(_dims(x.ty)) - 1:
                continue
            shift = values @ kernel[positions, :]
        else:
            # Σ over the kernel window of W_next[:, c] · const_c: exact for 1×1 convs, and for
            # k×k convs everywhere the window does not overlap the zero padding.
            groups = int(b.value.attrs.groups)
            cout, cin_g = kernel.shape[:2]
            per_input = kernel.sum(axis=(2, 3))  # (Cout, Cin/groups)
            shift = np.zeros(cout)
            cout_g = cout // groups
            for p, v in zip(positions, values):
                g, j = divmod(int(p), cin_g)
                shift[g * cout_g:(g + 1) * cout_g] += per_input[g * cout_g:(g + 1) * cout_g, j] * v
        result.consumers += 1
        if np.any(shift != 0):
            _place(result, b, shift, users, weights)
    return result


def _place(result: Compensation, binding, shift: np.ndarray, users, weights) -> None:
    """Absorb ``shift`` (on the consumer's output channels) into a following BN or bias."""
    out = binding.var
    after = users.get(out, [])
    if len(after) == 1:
        user = after[0]
        op = call_name(user)
        if op == "relax.nn.batch_norm" and user.args[0].same_as(out):
            mean = weights.get(user.args[3])
            if mean is not None and len(users.get(user.args[3], [])) == 1:
                # BN(y + s) = γ(y − (μ − s))/σ + β
                result.params[mean] = (result.params[mean] - shift).astype(result.params[mean].dtype)
                return
        if op == "relax.add":
            other = user.args[1] if user.args[0].same_as(out) else user.args[0]
            bias = weights.get(other)
            if bias is not None and len(users.get(other, [])) == 1:
                value = result.params[bias]
                ndim = len(_dims(user.ty))
                axis = 1 if call_name(binding.value) == "relax.nn.conv2d" else ndim - 1
                local = axis - (ndim - value.ndim)
                if 0 <= local < value.ndim and value.shape[local] == len(shift) and \
                        value.size == len(shift):
                    result.params[bias] = (value + shift.reshape(value.shape)).astype(value.dtype)
                    return
    result.inserts[out.name] = shift
