"""Numpy training for small :class:`~hwcompile.models.graph.Graph` networks.

Layer functions come in forward/backward pairs (``conv2d`` / ``conv2d_backward`` …) and work in
any float dtype. :class:`Network` runs a Graph's ONNX nodes with them in order and
back-propagates in reverse, so the network that is trained is exactly the one exported:
there is no second definition to keep in sync. :func:`fit` trains one with Adam; it is also
what a fine-tuning step after pruning would call.

Supported ops: Conv (any stride/group, symmetric pads), BatchNormalization, Relu, Add
(with broadcasting), Concat, Split, GlobalAveragePool, Flatten, Gemm (transB=1), MatMul.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from hwcompile.models.graph import Graph, Node

Array = np.ndarray


# -- layer functions -------------------------------------------------------------------------
def conv2d(x: Array, w: Array, b: Array | None = None, stride: int = 1, pad: int = 0,
           group: int = 1) -> tuple[Array, tuple]:
    """NCHW convolution by im2col + one batched matmul per call; returns (y, cache)."""
    n = x.shape[0]
    cout, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    win = win[:, :, ::stride, ::stride]  # (n, c, oh, ow, k, k)
    oh, ow = win.shape[2:4]
    m = n * oh * ow
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(m, group, cg * k * k).transpose(1, 0, 2)
    wg = w.reshape(group, cout // group, cg * k * k)
    y = np.matmul(cols, wg.transpose(0, 2, 1))  # (group, m, cout/group)
    y = y.transpose(1, 0, 2).reshape(n, oh, ow, cout).transpose(0, 3, 1, 2)
    if b is not None:
        y = y + b[None, :, None, None]
    return np.ascontiguousarray(y), (xp.shape, cols, wg, w.shape, stride, pad, b is not None)


def conv2d_backward(dy: Array, cache: tuple) -> tuple[Array, Array, Array | None]:
    """Gradients (dx, dw, db) of :func:`conv2d`; col2im adds one kernel offset at a time."""
    xp_shape, cols, wg, w_shape, stride, pad, has_bias = cache
    n, cout, oh, ow = dy.shape
    group, m, _ = cols.shape
    c, k = xp_shape[1], w_shape[2]
    dyg = dy.transpose(0, 2, 3, 1).reshape(m, group, cout // group).transpose(1, 0, 2)
    dw = np.matmul(dyg.transpose(0, 2, 1), cols).reshape(w_shape)
    dcols = np.matmul(dyg, wg).transpose(1, 0, 2).reshape(n, oh, ow, c, k, k)
    dxp = np.zeros(xp_shape, dy.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += \
                dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    dx = dxp[:, :, pad:xp_shape[2] - pad, pad:xp_shape[3] - pad] if pad else dxp
    return dx, dw, (dy.sum(axis=(0, 2, 3)) if has_bias else None)


def _channel_view(v: Array, ndim: int) -> Array:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batchnorm_train(x: Array, gamma: Array, beta: Array, eps: float
                    ) -> tuple[Array, tuple, Array, Array]:
    """Batch-statistics normalisation; returns (y, cache, batch_mean, batch_var)."""
    axes = (0,) + tuple(range(2, x.ndim))
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x - _channel_view(mean, x.ndim)) * _channel_view(inv, x.ndim)
    y = xhat * _channel_view(gamma, x.ndim) + _channel_view(beta, x.ndim)
    return y, (xhat, inv, gamma, axes), mean, var


def batchnorm_eval(x: Array, gamma: Array, beta: Array, mean: Array, var: Array,
                   eps: float) -> Array:
    """Inference-mode BatchNormalization with running statistics (what ONNX computes)."""
    scale = gamma / np.sqrt(var + eps)
    return x * _channel_view(scale, x.ndim) + _channel_view(beta - mean * scale, x.ndim)


def batchnorm_backward(dy: Array, cache: tuple) -> tuple[Array, Array, Array]:
    xhat, inv, gamma, axes = cache
    count = dy.size // dy.shape[1]
    dbeta, dgamma = dy.sum(axis=axes), (dy * xhat).sum(axis=axes)
    dxhat = dy * _channel_view(gamma, dy.ndim)
    dx = (count * dxhat - _channel_view(dxhat.sum(axis=axes), dy.ndim)
          - xhat * _channel_view((dxhat * xhat).sum(axis=axes), dy.ndim))
    return dx * _channel_view(inv / count, dy.ndim), dgamma, dbeta


def relu(x: Array) -> Array:
    return np.maximum(x, 0)


def relu_backward(dy: Array, y: Array) -> Array:
    return dy * (y > 0)


def global_avg_pool(x: Array) -> Array:
    return x.mean(axis=(2, 3), keepdims=True)


def global_avg_pool_backward(dy: Array, x_shape: tuple[int, ...]) -> Array:
    return np.broadcast_to(dy / (x_shape[2] * x_shape[3]), x_shape).copy()


def dense(x: Array, w: Array, b: Array | None) -> Array:
    """``x @ w.T + b`` with ``w`` of shape (out, in), as ONNX Gemm(transB=1)."""
    y = x @ w.T
    return y + b if b is not None else y


def dense_backward(dy: Array, x: Array, w: Array) -> tuple[Array, Array, Array]:
    return dy @ w, dy.T @ x, dy.sum(axis=0)


def softmax_cross_entropy(logits: Array, labels: Array) -> tuple[float, Array]:
    """Mean cross-entropy of integer ``labels`` and its gradient w.r.t. ``logits``."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(labels)
    loss = -logp[np.arange(n), labels].mean()
    grad = np.exp(logp)
    grad[np.arange(n), labels] -= 1
    return float(loss), grad / n


def _unbroadcast(d: Array, shape: tuple[int, ...]) -> Array:
    """Sum a broadcast gradient back down to ``shape``."""
    while d.ndim > len(shape):
        d = d.sum(axis=0)
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and d.shape[i] != 1)
    return d.sum(axis=axes, keepdims=True) if axes else d


# -- ONNX op adapters: forward(node, inputs, train) -> (outputs, cache);
#    backward(node, output_grads, cache) -> input grads (None where there is none) -----------
BN_MOMENTUM = 0.1


def _attr_int(node: Node, key: str, default: int) -> int:
    v = node.attrs.get(key, default)
    return v[0] if isinstance(v, list | tuple) else v


def _conv_fwd(node: Node, xs: list[Array], train: bool) -> tuple[list[Array], Any]:
    pads = node.attrs.get("pads", [0] * 4)
    if len(set(pads)) > 1 or len(set(node.attrs.get("strides", [1, 1]))) > 1:
        raise NotImplementedError(f"{node.name}: only symmetric pads and strides")
    y, cache = conv2d(xs[0], xs[1], xs[2] if len(xs) > 2 else None,
                      _attr_int(node, "strides", 1), pads[0], node.attrs.get("group", 1))
    return [y], cache


def _conv_bwd(node: Node, dys: list[Array], cache: Any) -> list[Array | None]:
    dx, dw, db = conv2d_backward(dys[0], cache)
    return [dx, dw] + ([db] if db is not None else [])


def _bn_fwd(node: Node, xs: list[Array], train: bool) -> tuple[list[Array], Any]:
    x, gamma, beta, mean, var = xs
    eps = node.attrs.get("epsilon", 1e-5)
    if not train:
        return [batchnorm_eval(x, gamma, beta, mean, var, eps)], None
    y, cache, bmean, bvar = batchnorm_train(x, gamma, beta, eps)
    count = x.size // x.shape[1]
    # The running statistics are the Graph's own initializer arrays: update them in place.
    mean += BN_MOMENTUM * (bmean.astype(mean.dtype) - mean)
    var += BN_MOMENTUM * ((bvar * count / max(count - 1, 1)).astype(var.dtype) - var)
    return [y], cache


def _bn_bwd(node: Node, dys: list[Array], cache: Any) -> list[Array | None]:
    if cache is None:
        raise RuntimeError(f"{node.name}: backward needs a forward pass with train=True")
    dx, dgamma, dbeta = batchnorm_backward(dys[0], cache)
    return [dx, dgamma, dbeta, None, None]


def _relu_fwd(node: Node, xs: list[Array], train: bool) -> tuple[list[Array], Any]:
    y = relu(xs[0])
    return [y], y


def _add_fwd(node: Node, xs: list[Array], train: bool) -> tuple[list[Array], Any]:
    return [xs[0] + xs[1]], (xs[0].shape, xs[1].shape)


def _concat_fwd(node: Node, xs: list[Array], train: bool) -> tuple[list[Array], Any]:
    axis = node.attrs["axis"]
    return [np.concatenate(xs, axis=axis)], (axis, np.cumsum([x.shape[axis] for x in xs])[:-1])


def _split_fwd(node: Node, xs: list[Array], train: bool) -> tuple[list[Array], Any]:
    axis = node.attrs.get("axis", 0)
    outs = np.split(xs[0], np.cumsum(xs[1])[:-1], axis=axis)
    return outs, (axis, [o.shape for o in outs])


def _split_bwd(node: Node, dys: list[Array | None], cache: Any) -> list[Array | None]:
    axis, shapes = cache
    dtype = next(d for d in dys if d is not None).dtype
    parts = [d if d is not None else np.zeros(s, dtype) for d, s in zip(dys, shapes, strict=True)]
    return [np.concatenate(parts, axis=axis), None]


def _gemm_fwd(node: Node, xs: list[Array], train: bool) -> tuple[list[Array], Any]:
    if (node.attrs.get("transB") != 1 or node.attrs.get("transA", 0)
            or node.attrs.get("alpha", 1.0) != 1.0 or node.attrs.get("beta", 1.0) != 1.0):
        raise NotImplementedError(f"{node.name}: only Gemm(transB=1) is supported")
    return [dense(xs[0], xs[1], xs[2] if len(xs) > 2 else None)], (xs[0], xs[1])


def _gemm_bwd(node: Node, dys: list[Array], cache: Any) -> list[Array | None]:
    dx, dw, db = dense_backward(dys[0], *cache)
    return [dx, dw, db]


def _matmul_fwd(node: Node, xs: list[Array], train: bool) -> tuple[list[Array], Any]:
    if xs[0].ndim != 2 or xs[1].ndim != 2:
        raise NotImplementedError(f"{node.name}: only 2-D MatMul is supported")
    return [xs[0] @ xs[1]], (xs[0], xs[1])


OPS: dict[str, tuple[Callable, Callable]] = {
    "Conv": (_conv_fwd, _conv_bwd),
    "BatchNormalization": (_bn_fwd, _bn_bwd),
    "Relu": (_relu_fwd, lambda n, d, y: [relu_backward(d[0], y)]),
    "Add": (_add_fwd, lambda n, d, s: [_unbroadcast(d[0], s[0]), _unbroadcast(d[0], s[1])]),
    "Concat": (_concat_fwd, lambda n, d, c: np.split(d[0], c[1], axis=c[0])),
    "Split": (_split_fwd, _split_bwd),
    "GlobalAveragePool": (lambda n, x, t: ([global_avg_pool(x[0])], x[0].shape),
                          lambda n, d, s: [global_avg_pool_backward(d[0], s)]),
    "Flatten": (lambda n, x, t: ([x[0].reshape(x[0].shape[0], -1)], x[0].shape),
                lambda n, d, s: [d[0].reshape(s)]),
    "Gemm": (_gemm_fwd, _gemm_bwd),
    "MatMul": (_matmul_fwd, lambda n, d, c: [d[0] @ c[1].T, c[0].T @ d[0]]),
}


class Network:
    """Runs (and back-propagates through) a Graph in numpy; parameters stay in ``graph.params``.

    ``dtype`` is the compute dtype; float32 graphs can be evaluated in float64 (for gradient
    checks), in which case parameters are cast on the fly and gradients come back in float64.
    """

    def __init__(self, graph: Graph) -> None:
        for node in graph.nodes:
            if node.op not in OPS:
                raise NotImplementedError(f"{node.name}: op {node.op} has no numpy kernel")
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise NotImplementedError("Network needs exactly one input and one output")
        self.graph = graph
        self._tape: list[tuple[Node, Any]] = []

    @property
    def trainable(self) -> list[str]:
        return [k for k in self.graph.params if k not in self.graph.buffers]

    def forward(self, x: Array, train: bool = False) -> Array:
        g = self.graph
        env: dict[str, Array] = {g.inputs[0]: x}
        self._tape = []
        for node in g.nodes:
            xs = [env[i] if i in env else g.params[i] for i in node.inputs]
            # Compute in x's dtype; in training, running statistics stay the Graph's own
            # arrays because batch-norm updates them in place.
            xs = [v if v.dtype.kind != "f" or v.dtype == x.dtype or (train and i in g.buffers)
                  else v.astype(x.dtype) for i, v in zip(node.inputs, xs, strict=True)]
            outs, cache = OPS[node.op][0](node, xs, train)
            env.update(zip(node.outputs, outs, strict=True))
            if train:
                self._tape.append((node, cache))
        return env[g.outputs[0]]

    def backward(self, dout: Array) -> dict[str, Array]:
        """Gradients of every trainable parameter, given d(loss)/d(output) of the last
        ``forward(..., train=True)``."""
        g = self.graph
        grads: dict[str, Array] = {g.outputs[0]: dout}
        for node, cache in reversed(self._tape):
            dys = [grads.pop(o, None) for o in node.outputs]
            if all(d is None for d in dys):
                continue
            dxs = OPS[node.op][1](node, dys, cache)
            for name, dx in zip(node.inputs, dxs, strict=True):
                if dx is None or name in g.buffers or name in g.inputs:
                    continue
                grads[name] = grads[name] + dx if name in grads else dx
        return {k: grads.get(k, np.zeros_like(g.params[k])) for k in self.trainable}

    def predict(self, x: Array, batch_size: int = 512) -> Array:
        return np.concatenate([self.forward(x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)])


class Adam:
    """Adam with decoupled weight decay (AdamW) on parameters with more than one dimension."""

    def __init__(self, params: dict[str, Array], names: list[str], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        self.params, self.names, self.lr = params, names, lr
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.m = {k: np.zeros_like(params[k]) for k in names}
        self.v = {k: np.zeros_like(params[k]) for k in names}
        self.t = 0

    def step(self, grads: dict[str, Array]) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for k in self.names:
            p, g = self.params[k], grads[k].astype(self.params[k].dtype)
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            if self.weight_decay and p.ndim > 1:
                p -= self.lr * self.weight_decay * p
            p -= self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


def batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[Array]:
    """Shuffled index batches covering ``range(n)``; a last short batch under 2 is dropped
    (batch-norm needs at least two samples)."""
    order = rng.permutation(n)
    for i in range(0, n, batch_size):
        if n - i >= 2:
            yield order[i:i + batch_size]


def fit(net: Network, x: Array, y: Array, *, epochs: int, batch_size: int = 64,
        lr: float = 3e-3, weight_decay: float = 0.0, seed: int = 0,
        augment: Callable[[Array, np.random.Generator], Array] | None = None,
        log: Callable[[str], None] | None = None) -> list[float]:
    """Train with Adam and a cosine learning-rate schedule; returns the mean loss per epoch.

    Deterministic for a given seed (one generator drives shuffling and augmentation) and
    single-threaded BLAS (faster for these small matrices, and the bits then do not depend
    on the thread count).
    """
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(net, x, y, epochs, batch_size, lr, weight_decay, seed, augment, log)


def _fit(net: Network, x: Array, y: Array, epochs: int, batch_size: int, lr: float,
         weight_decay: float, seed: int,
         augment: Callable[[Array, np.random.Generator], Array] | None,
         log: Callable[[str], None] | None) -> list[float]:
    rng = np.random.default_rng(seed)
    opt = Adam(net.graph.params, net.trainable, lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x) / batch_size)
    history = []
    for epoch in range(epochs):
        losses = []
        for idx in batches(len(x), batch_size, rng):
            xb = augment(x[idx], rng) if augment else x[idx]
            loss, dlogits = softmax_cross_entropy(net.forward(xb, train=True), y[idx])
            opt.lr = lr * 0.5 * (1 + math.cos(math.pi * opt.t / steps))
            opt.step(net.backward(dlogits))
            losses.append(loss)
        history.append(float(np.mean(losses)))
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}")
    return history
