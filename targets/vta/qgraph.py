"""Small integer Relax graphs in the form the power-of-two quantize pass emits, for tests
and benchmarks: ResNet-18's convolution workloads C2–C11 and a ResNet-18-shaped model.

Layers are written as the quantize pass writes them: ``conv2d(int8, int8) -> int32``, int32
bias add, rounding add + right shift, zero-point add, clip, cast to int8; residual adds cast
both sides to int32, align them by left shifts, then requantize the same way. Weights are
Relax constants, so no calibration is involved: the numbers are whatever the seed gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from hwcompile.model import Model, TensorSpec


@dataclass(frozen=True)
class ConvWorkload:
    """(name, H=W, in channels, out channels, kernel, pad, stride) of one batch-1 layer."""

    name: str
    size: int
    cin: int
    cout: int
    kernel: int
    pad: int
    stride: int


# The VTA ResNet-18 operator tests (apache/tvm-vta, tests/python/integration).
RESNET18_CONVS = [
    ConvWorkload("C2", 56, 64, 64, 3, 1, 1), ConvWorkload("C3", 56, 64, 128, 3, 1, 2),
    ConvWorkload("C4", 56, 64, 128, 1, 0, 2), ConvWorkload("C5", 28, 128, 128, 3, 1, 1),
    ConvWorkload("C6", 28, 128, 256, 3, 1, 2), ConvWorkload("C7", 28, 128, 256, 1, 0, 2),
    ConvWorkload("C8", 14, 256, 256, 3, 1, 1), ConvWorkload("C9", 14, 256, 512, 3, 1, 2),
    ConvWorkload("C10", 14, 256, 512, 1, 0, 2), ConvWorkload("C11", 7, 512, 512, 3, 1, 1),
]


def _c(value: np.ndarray | int, dtype: str) -> relax.Constant:
    return relax.const(np.asarray(value).astype(dtype), dtype)


def shift_bias_clip(bb: relax.BlockBuilder, x: relax.Expr, w: np.ndarray, bias: np.ndarray,
                    stride: int, pad: int, shift: int = 8) -> relax.Var:
    """The VTA operator test: clip((conv2d(x, w) >> shift) + bias, 0, 127) as int8."""
    acc = bb.emit(relax.op.nn.conv2d(x, _c(w, "int8"), strides=stride, padding=pad,
                                     out_dtype="int32"))
    acc = bb.emit(relax.op.right_shift(acc, _c(shift, "int32")))
    acc = bb.emit(relax.op.add(acc, _c(bias.reshape(1, -1, 1, 1), "int32")))
    acc = bb.emit(relax.op.clip(acc, relax.prim_value(0), relax.prim_value(127)))
    return bb.emit(relax.op.astype(acc, "int8"))


def _requant(bb: relax.BlockBuilder, acc: relax.Expr, shift: int, low: int) -> relax.Var:
    """Rounding right shift, zero point 0, clip [low, 127], cast (the quantize pass)."""
    if shift > 0:
        acc = bb.emit(relax.op.add(acc, _c(1 << (shift - 1), "int32")))
        acc = bb.emit(relax.op.right_shift(acc, _c(shift, "int32")))
    acc = bb.emit(relax.op.add(acc, _c(0, "int32")))
    acc = bb.emit(relax.op.clip(acc, relax.prim_value(low), relax.prim_value(127)))
    return bb.emit(relax.op.astype(acc, "int8"))


def qconv(bb: relax.BlockBuilder, x: relax.Expr, rng: np.random.Generator, cout: int,
          kernel: int, stride: int = 1, relu: bool = True, shift: int | None = None
          ) -> relax.Var:
    """A quantized conv + bias (+ ReLU) layer with random weights, requantized by ``shift``
    (default: about log2 of the accumulator's spread, so outputs use the int8 range)."""
    cin = int(x.ty.shape[1])
    w = rng.integers(-127, 128, (cout, cin, kernel, kernel)).astype(np.int8)
    bias = rng.integers(-2000, 2000, cout).astype(np.int32)
    acc = bb.emit(relax.op.nn.conv2d(x, _c(w, "int8"), strides=stride, padding=kernel // 2,
                                     out_dtype="int32"))
    acc = bb.emit(relax.op.add(acc, _c(bias.reshape(1, -1, 1, 1), "int32")))
    if shift is None:
        shift = int(np.log2(127 * 64 * np.sqrt(cin * kernel * kernel))) - 5
    return _requant(bb, acc, shift, 0 if relu else -128)


def qadd(bb: relax.BlockBuilder, a: relax.Expr, b: relax.Expr, shift_a: int = 0,
         shift_b: int = 1, out_shift: int = 1, relu: bool = True) -> relax.Var:
    """Residual add of two int8 tensors with power-of-two scale alignment."""
    terms = []
    for q, k in ((a, shift_a), (b, shift_b)):
        t = bb.emit(relax.op.subtract(bb.emit(relax.op.astype(q, "int32")), _c(0, "int32")))
        if k:
            t = bb.emit(relax.op.left_shift(t, _c(k, "int32")))
        terms.append(t)
    total = bb.emit(relax.op.add(terms[0], terms[1]))
    return _requant(bb, total, out_shift, 0 if relu else -128)


def _model(bb: relax.BlockBuilder, name: str, inputs: list[relax.Var]) -> Model:
    mod = relax.transform.Normalize()(bb.get())
    main = mod["main"]
    ret = main.ret_ty
    outs = ret.fields if isinstance(ret, relax.TupleType) else [ret]

    def spec(n: str, ty) -> TensorSpec:
        return TensorSpec(n, tuple(int(d) if hasattr(d, "value") else str(d)
                                   for d in ty.shape.values), str(ty.dtype))

    return Model(mod, {}, [spec(v.name, v.ty) for v in inputs],
                 [spec(f"output{i}", t) for i, t in enumerate(outs)], name=name)


def conv_workloads_model(workloads: list[ConvWorkload], seed: int = 0
                         ) -> tuple[Model, dict[str, dict[str, np.ndarray]]]:
    """One model computing every workload on its own int8 input (batch 1), plus each
    layer's random weight and bias for an independent reference."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    inputs = [relax.Var(f"x_{w.name}", relax.TensorType([1, w.cin, w.size, w.size], "int8"))
              for w in workloads]
    data = {}
    with bb.function("main", inputs):
        with bb.dataflow():
            outs = []
            for wl, x in zip(workloads, inputs):
                w = rng.integers(-128, 128, (wl.cout, wl.cin, wl.kernel, wl.kernel)
                                 ).astype(np.int8)
                bias = rng.integers(-64, 64, wl.cout).astype(np.int32)
                data[wl.name] = {"weight": w, "bias": bias}
                outs.append(shift_bias_clip(bb, x, w, bias, wl.stride, wl.pad))
            out = bb.emit_output(relax.Tuple(outs) if len(outs) > 1 else outs[0])
        bb.emit_func_output(out)
    return _model(bb, "resnet18_convs", inputs), data


def resnet18_like(size: int = 64, width: int = 64, batch: int | str = 1, seed: int = 0,
                  classes: int = 10) -> Model:
    """ResNet-18-shaped quantized model, random weights: float input, quantize, 7x7/2 stem
    (3 channels), 3x3/2 max pool, 4 stages of 2 basic blocks (1x1/2 downsample), global
    average pool, dense to ``classes`` dequantized to float."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    n = tvm.tirx.Var(batch, "int64") if isinstance(batch, str) else batch
    x = relax.Var("input", relax.TensorType([n, 3, size, size], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            q = bb.emit(relax.op.quantize(x, _c(1 / 64, "float32"), _c(0, "int8"),
                                          out_dtype="int8"))
            h = qconv(bb, q, rng, width, 7, stride=2)
            h = bb.emit(relax.op.nn.max_pool2d(h, 3, 2, 1))
            channels = width
            for stage in range(4):
                for block in range(2):
                    stride = 2 if stage and not block else 1
                    out_ch = width << stage
                    y = qconv(bb, h, rng, out_ch, 3, stride)
                    y = qconv(bb, y, rng, out_ch, 3, relu=False)
                    skip = h if stride == 1 and channels == out_ch else \
                        qconv(bb, h, rng, out_ch, 1, stride, relu=False)
                    h = qadd(bb, y, skip)
                    channels = out_ch
            pooled = bb.emit(relax.op.sum(relax.op.astype(h, "int32"), [2, 3]))
            pooled = _requant(bb, pooled, int(np.log2(int(h.ty.shape[2]) ** 2)), -128)
            wd = rng.integers(-127, 128, (channels, classes)).astype(np.int8)
            logits = bb.emit(relax.op.matmul(pooled, _c(wd, "int8"), out_dtype="int32"))
            out = bb.emit_output(relax.op.multiply(relax.op.astype(logits, "float32"),
                                                   _c(1 / 1024, "float32")))
        bb.emit_func_output(out)
    return _model(bb, "resnet18_like", [x])
