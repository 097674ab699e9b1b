"""A tiny graph builder shared by the generated models.

A :class:`Graph` records ONNX nodes, named initializers and tracked tensor shapes, so that
model builders read like a network definition (``g.conv_bn_relu(x, "stem", 16, 3)``) and stay
free of onnx.helper boilerplate. The same object is what :mod:`hwcompile.models.nn` executes
and trains in numpy, and :meth:`Graph.to_onnx` exports it deterministically (fixed producer,
no timestamps, initializers in creation order).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; every onnxruntime >= 1.14 reads it
PRODUCER = "hwcompile.models"
PRODUCER_VERSION = "1"

Dim = int | str  # str = symbolic dimension (dim_param), e.g. "N"
Shape = tuple[Dim, ...]


@dataclass
class Node:
    """One ONNX node. ``inputs`` name activations or initializers."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


class Graph:
    """Records a network as ONNX nodes plus named initializers (``params``).

    ``init="train"`` gives a fresh trainable network (He-initialised weights, zero biases,
    identity batch-norm); ``init="random"`` gives a fixed random network whose biases and
    batch-norm statistics are random too, so folding/pruning passes see non-trivial values.
    Everything drawn comes from one ``numpy.random.default_rng(seed)`` in creation order.
    """

    def __init__(self, name: str, seed: int = 0, init: str = "train") -> None:
        if init not in ("train", "random"):
            raise ValueError(f"init must be 'train' or 'random', not {init!r}")
        self.name = name
        self.init = init
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Node] = []
        self.params: dict[str, np.ndarray] = {}
        self.buffers: set[str] = set()  # initializers that are not trained
        self.shapes: dict[str, Shape] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._used: set[str] = set()

    # -- bookkeeping -------------------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        return name

    def _unique(self, base: str) -> str:
        name = self._fresh(base)
        self._used.add(name)
        return name

    def input(self, name: str, shape: Shape) -> str:
        self._used.add(name)
        self.shapes[name] = tuple(shape)
        self.inputs.append(name)
        return name

    def output(self, x: str) -> str:
        self.outputs.append(x)
        return x

    def param(self, name: str, value: np.ndarray, trainable: bool = True) -> str:
        name = self._unique(name)
        self.params[name] = np.ascontiguousarray(value)
        self.shapes[name] = tuple(value.shape)
        if not trainable:
            self.buffers.add(name)
        return name

    def node(self, op: str, inputs: list[str], shapes: list[Shape], name: str | None = None,
             outputs: list[str] | None = None, **attrs: Any) -> list[str]:
        """Append a node; ``shapes`` are its output shapes. Returns the output names."""
        name = self._unique(name or op.lower())
        if outputs is None:
            outputs = [name] if len(shapes) == 1 else [f"{name}:{i}" for i in range(len(shapes))]
        for out in outputs:
            self._used.add(out)
        for out, shape in zip(outputs, shapes, strict=True):
            self.shapes[out] = tuple(shape)
        self.nodes.append(Node(op, name, list(inputs), outputs, attrs))
        return outputs

    def _he(self, shape: tuple[int, ...], fan_in: int, gain: float = 2.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * math.sqrt(gain / fan_in)).astype(np.float32)

    def _bias(self, n: int) -> np.ndarray:
        if self.init == "random":
            return self.rng.uniform(-0.1, 0.1, n).astype(np.float32)
        return np.zeros(n, np.float32)

    # -- layers ------------------------------------------------------------------------------
    def conv(self, x: str, name: str, cout: int, k: int, stride: int = 1, group: int = 1,
             bias: bool = False, pad: int | None = None) -> str:
        n, cin, h, w = self.shapes[x]
        pad = k // 2 if pad is None else pad
        if cin % group or cout % group:
            raise ValueError(f"{name}: channels {cin}->{cout} not divisible by group {group}")
        weight = self.param(f"{name}.weight", self._he((cout, cin // group, k, k),
                                                       cin // group * k * k))
        ins = [x, weight] + ([self.param(f"{name}.bias", self._bias(cout))] if bias else [])
        oh, ow = ((d + 2 * pad - k) // stride + 1 for d in (h, w))
        return self.node("Conv", ins, [(n, cout, oh, ow)], name, kernel_shape=[k, k],
                         strides=[stride, stride], pads=[pad] * 4, group=group)[0]

    def bn(self, x: str, name: str, eps: float = 1e-5) -> str:
        c = self.shapes[x][1]
        if self.init == "random":
            values = {"scale": self.rng.uniform(0.8, 1.2, c), "bias": self.rng.normal(0, 0.1, c),
                      "mean": self.rng.normal(0, 0.1, c), "var": self.rng.uniform(0.5, 1.5, c)}
        else:
            values = {"scale": np.ones(c), "bias": np.zeros(c), "mean": np.zeros(c),
                      "var": np.ones(c)}
        names = [self.param(f"{name}.{role}", v.astype(np.float32),
                            trainable=role in ("scale", "bias")) for role, v in values.items()]
        return self.node("BatchNormalization", [x, *names], [self.shapes[x]], name,
                         epsilon=eps)[0]

    def relu(self, x: str, name: str | None = None) -> str:
        return self.node("Relu", [x], [self.shapes[x]], name)[0]

    def conv_bn_relu(self, x: str, name: str, cout: int, k: int, stride: int = 1,
                     group: int = 1, relu: bool = True) -> str:
        """Conv (no bias) → BatchNormalization [→ Relu]; nodes named name, name.bn, name.relu."""
        y = self.bn(self.conv(x, name, cout, k, stride, group), f"{name}.bn")
        return self.relu(y, f"{name}.relu") if relu else y

    def add(self, a: str, b: str, name: str | None = None, output: str | None = None) -> str:
        shape = np.broadcast_shapes(*(_numeric(self.shapes[t]) for t in (a, b)))
        longer = max(self.shapes[a], self.shapes[b], key=len)
        return self.node("Add", [a, b], [_restore(shape, longer)], name,
                         outputs=[output] if output else None)[0]

    def concat(self, xs: list[str], axis: int = 1, name: str | None = None) -> str:
        shape = list(self.shapes[xs[0]])
        shape[axis] = sum(self.shapes[x][axis] for x in xs)
        return self.node("Concat", xs, [tuple(shape)], name, axis=axis)[0]

    def split(self, x: str, sizes: list[int], axis: int = 1, name: str | None = None) -> list[str]:
        name = self._fresh(name or "split")
        split = self.param(f"{name}.split", np.array(sizes, np.int64), trainable=False)
        shapes = [tuple(s if i == axis else d for i, d in enumerate(self.shapes[x]))
                  for s in sizes]
        return self.node("Split", [x, split], shapes, name, axis=axis)

    def maxpool(self, x: str, k: int, stride: int, pad: int = 0, name: str | None = None) -> str:
        n, c, h, w = self.shapes[x]
        oh, ow = ((d + 2 * pad - k) // stride + 1 for d in (h, w))
        return self.node("MaxPool", [x], [(n, c, oh, ow)], name, kernel_shape=[k, k],
                         strides=[stride, stride], pads=[pad] * 4)[0]

    def global_avg_pool(self, x: str, name: str | None = None) -> str:
        n, c = self.shapes[x][:2]
        return self.node("GlobalAveragePool", [x], [(n, c, 1, 1)], name)[0]

    def flatten(self, x: str, name: str | None = None) -> str:
        n, *rest = self.shapes[x]
        return self.node("Flatten", [x], [(n, math.prod(rest))], name, axis=1)[0]

    def gemm(self, x: str, name: str, cout: int, gain: float = 2.0,
             output: str | None = None) -> str:
        """Dense layer ``x @ weight.T + bias`` as Gemm(transB=1); weight is (cout, cin)."""
        n, cin = self.shapes[x]
        w = self.param(f"{name}.weight", self._he((cout, cin), cin, gain))
        b = self.param(f"{name}.bias", self._bias(cout))
        return self.node("Gemm", [x, w, b], [(n, cout)], name,
                         outputs=[output] if output else None, transB=1)[0]

    def matmul_add(self, x: str, name: str, cout: int, output: str | None = None) -> str:
        """Dense layer as MatMul (weight (cin, cout)) followed by a bias Add."""
        *lead, cin = self.shapes[x]
        w = self.param(f"{name}.weight", self._he((cin, cout), cin))
        y = self.node("MatMul", [x, w], [(*lead, cout)], name)[0]
        return self.add(y, self.param(f"{name}.bias", self._bias(cout)), f"{name}.add", output)

    def reshape(self, x: str, target: list[int], name: str | None = None) -> str:
        """ONNX Reshape (0 copies a dim, -1 is inferred; symbolic dims must be copied by 0)."""
        src = self.shapes[x]
        copied = {i for i, t in enumerate(target) if t == 0}
        out: list[Dim] = [src[i] if t == 0 else t for i, t in enumerate(target)]
        if -1 in target:  # copied dims cancel out; all the others must be numeric
            total = math.prod(d for i, d in enumerate(src) if i not in copied)
            known = math.prod(t for i, t in enumerate(target) if i not in copied and t != -1)
            out[target.index(-1)] = total // known
        name = self._fresh(name or "reshape")
        shape = self.param(f"{name}.shape", np.array(target, np.int64), trainable=False)
        return self.node("Reshape", [x, shape], [tuple(out)], name)[0]

    def transpose(self, x: str, perm: list[int], name: str | None = None) -> str:
        src = self.shapes[x]
        return self.node("Transpose", [x], [tuple(src[p] for p in perm)], name, perm=perm)[0]

    # -- export ------------------------------------------------------------------------------
    def to_onnx(self, doc: str = "") -> onnx.ModelProto:
        """The graph as a checked opset-17 ModelProto; byte-identical for identical graphs."""
        nodes = [helper.make_node(n.op, n.inputs, n.outputs, name=n.name, **n.attrs)
                 for n in self.nodes]
        inits = [numpy_helper.from_array(v, k) for k, v in self.params.items()]
        graph = helper.make_graph(
            nodes, self.name,
            [_value_info(x, self.shapes[x]) for x in self.inputs],
            [_value_info(y, self.shapes[y]) for y in self.outputs],
            initializer=inits, doc_string=doc)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name=PRODUCER, producer_version=PRODUCER_VERSION,
                                  ir_version=IR_VERSION)
        onnx.checker.check_model(model, full_check=True)
        return model


def _numeric(shape: Shape) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else 1 for d in shape)


def _restore(shape: tuple[int, ...], like: Shape) -> Shape:
    """Put symbolic dims of ``like`` back into a broadcast result."""
    off = len(shape) - len(like)
    return tuple(like[i - off] if i >= off and isinstance(like[i - off], str) else d
                 for i, d in enumerate(shape))


def _value_info(name: str, shape: Shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically (a reader never sees a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
