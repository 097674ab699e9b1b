"""``lower-qdq``: run a QDQ model's convolutions in integers.

A model quantized elsewhere (onnxruntime ``quantize_static``, QDQ format) imports as
simulated quantization: ``dequantize → float conv → quantize``. This pass replaces each

    quantize(conv2d(dequantize(x_q, s_x, z_x), dequantize(W_q, s_w, 0)) [+ bias] [→ relu], s_y, z_y)

with the integer layer the ``quantize`` pass emits: ``x_q`` padded with ``z_x``, an int8 ×
int8 → int32 conv, the int32 bias minus ``z_x·ΣW_q``, fixed-point requantization by
``s_x·s_w / s_y`` plus ``z_y``, clipped to int8. Everything else (residual adds, pooling,
the classifier) keeps running as the importer made it, between the integer layers'
dequantize and the next quantize. Results differ from onnxruntime's only where its float
requantization and the fixed-point one round a tie differently (one step of ``s_y``).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from hwcompile.model import Model
from hwcompile.pipeline import PassContext, register_pass
from hwcompile.rewrite import RebuildContext, call_name, rebuild

from .rewrite import emit_requant
from .scheme import requant_params


@register_pass("lower-qdq")
def lower_qdq(model: Model, ctx: PassContext) -> Model:
    """Integer convolutions for the QDQ patterns of an imported quantized model."""
    lowered: list[str] = []

    def rewrite(rc: RebuildContext, binding: relax.VarBinding) -> relax.Expr | None:
        layer = _match(rc, binding.value)
        if layer is None:
            return None
        lowered.append(binding.var.name)
        return _emit(rc, layer)

    result = rebuild(model, rewrite)
    ctx.details["lowered_convs"] = len(lowered)
    return result


def _scalar(rc: RebuildContext, expr: relax.Expr) -> float | None:
    value = rc.weight(expr)
    return None if value is None or value.size != 1 else float(value.reshape(()))


def _dequantize_args(rc: RebuildContext, expr: relax.Expr
                     ) -> tuple[relax.Expr, np.ndarray, np.ndarray] | None:
    """(quantized input, scale, zero point) of an old ``R.dequantize`` call."""
    call = rc.producer(expr) if isinstance(expr, relax.Var) else expr
    if call_name(call) != "relax.dequantize":
        return None
    scale, zero = rc.weight(call.args[1]), rc.weight(call.args[2])
    if scale is None or zero is None:
        return None
    return call.args[0], np.asarray(scale, np.float64), np.asarray(zero, np.int64)


def _match(rc: RebuildContext, value: relax.Expr) -> dict | None:
    """The QDQ conv layer ending in the ``R.quantize`` ``value``, or None."""
    if call_name(value) != "relax.quantize" or str(value.attrs.out_dtype) != "int8":
        return None
    s_y, z_y = _scalar(rc, value.args[1]), _scalar(rc, value.args[2])
    body = rc.producer(value.args[0])
    relu = call_name(body) == "relax.nn.relu"
    if relu:
        body = rc.producer(body.args[0])
    bias = None
    if call_name(body) == "relax.add":
        conv, bias_expr = rc.producer(body.args[0]), body.args[1]
        bias_call = rc.producer(bias_expr)
        if call_name(bias_call) == "relax.reshape":
            bias_expr = bias_call.args[0]
        bias = _dequantize_args(rc, bias_expr)
        if bias is None:
            return None
    else:
        conv = body
    if s_y is None or z_y is None or call_name(conv) != "relax.nn.conv2d":
        return None
    a = conv.attrs
    data, weight = _dequantize_args(rc, conv.args[0]), _dequantize_args(rc, conv.args[1])
    if (data is None or weight is None or int(a.groups) != 1 or a.data_layout != "NCHW"
            or a.kernel_layout != "OIHW" or data[1].size != 1 or data[2].size != 1):
        return None
    w_q = rc.weight(weight[0])
    if w_q is None or w_q.dtype != np.int8 or np.any(weight[2]):
        return None  # weights must be constant, symmetric int8
    b_q = None if bias is None else rc.weight(bias[0])
    if bias is not None and (b_q is None or np.any(bias[2])):
        return None
    return {"conv": conv, "x_q": data[0], "s_x": float(data[1].reshape(())),
            "z_x": int(data[2].reshape(())), "w_q": w_q, "s_w": weight[1].reshape(-1),
            "bias": None if bias is None else (b_q.astype(np.float64).reshape(-1) * bias[1].reshape(-1)),
            "s_y": s_y, "z_y": int(z_y), "relu": relu}


def _emit(rc: RebuildContext, layer: dict) -> relax.Expr:
    w_q, channels = layer["w_q"], layer["w_q"].shape[0]
    s_acc = np.broadcast_to(layer["s_x"] * layer["s_w"], (channels,))
    z_x = layer["z_x"]
    bias_q = -z_x * w_q.astype(np.int64).reshape(channels, -1).sum(1)
    if layer["bias"] is not None:
        bias_q = bias_q + np.round(layer["bias"] / s_acc).astype(np.int64)
    a = layer["conv"].attrs
    data, padding = rc.arg(layer["x_q"]), [int(p) for p in a.padding]
    if z_x != 0 and any(padding):  # pad with the zero point: the value of real 0
        top, left, bottom, right = padding
        data = rc.emit(relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right],
                                       pad_value=float(z_x)))
        padding = [0, 0, 0, 0]
    weight = rc.param(rc.unique_name("qdq_weight_int8"), w_q)
    acc = rc.emit(relax.op.nn.conv2d(data, weight, strides=[int(s) for s in a.strides],
                                     padding=padding, dilation=[int(d) for d in a.dilation],
                                     out_dtype="int32"))
    shape = (1, channels, 1, 1)
    if np.any(bias_q):
        acc = rc.emit(relax.op.add(acc, rc.param(rc.unique_name("qdq_bias_int32"),
                                                 bias_q.astype(np.int32).reshape(shape))))
    requant = requant_params(s_acc / layer["s_y"], power_of_two=False)
    low = layer["z_y"] if layer["relu"] else -128
    return emit_requant(rc, acc, requant, layer["z_y"], low, 127, shape)
