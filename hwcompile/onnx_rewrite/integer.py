"""Integer operators rewritten for TVM's importer: ``ConvInteger``, ``DynamicQuantizeLinear``.

* ``ConvInteger`` has no converter. ``ConvInteger(x, w, x_zp, w_zp)`` is
  ``Conv(int32(x) - x_zp, int32(w) - w_zp)`` accumulated in int32 with the same attributes
  (the importer's ``Conv`` keeps the input dtype, so the result is exact). Padding adds
  zeros *after* the zero point is subtracted, i.e. pads with the zero point, as onnxruntime
  does. A per-channel ``w_zp`` (``[M]``) is reshaped to broadcast over each filter. The
  rewritten node is not valid ONNX (``Conv`` takes float types): only the importer reads it.
* ``DynamicQuantizeLinear``'s converter divides by a zero scale when the input is all
  zeros (it returns scale 0, zero point 255); onnxruntime uses scale 1 and zero point 0
  there. It is written out as ``ReduceMin``/``ReduceMax`` → scale (1 for an empty range) →
  zero point → ``QuantizeLinear``, exactly onnxruntime's arithmetic.

``MatMulInteger``'s converter is exact as it is (the tests compare it with onnxruntime).
"""

from __future__ import annotations

import numpy as np
import onnx

from .graph import Emitter, Info, attr, is_default, rewrite_nodes

_INT32 = onnx.TensorProto.INT32


def rewrite_integer_ops(model: onnx.ModelProto) -> int:
    """Rewrite every ``ConvInteger`` and ``DynamicQuantizeLinear``; returns how many."""
    rewrites = {"ConvInteger": _conv_integer, "DynamicQuantizeLinear": _dynamic_quantize}
    return rewrite_nodes(model, lambda n: n.op_type in rewrites and is_default(n),
                         lambda node, info: rewrites[node.op_type](node, info))


def _conv_integer(node: onnx.NodeProto, info: Info) -> list[onnx.NodeProto]:
    ins = list(node.input) + [""] * (4 - len(node.input))
    em = Emitter(info, node.name or "conv_integer")
    x = em.op("Cast", [ins[0]], to=_INT32)
    if ins[2]:
        x = em.op("Sub", [x, em.op("Cast", [ins[2]], to=_INT32)])
    w = em.op("Cast", [ins[1]], to=_INT32)
    if ins[3]:
        w_shape = info.shapes.get(ins[1])
        zp = em.op("Cast", [ins[3]], to=_INT32)
        if w_shape is not None and len(w_shape) > 1:
            # [M] or [] -> [M or 1, 1, ...]: one zero point per output channel
            zp = em.op("Reshape", [zp, em.const(np.array([-1] + [1] * (len(w_shape) - 1),
                                                         np.int64), "zp_shape")])
        w = em.op("Sub", [w, zp])
    attrs = {a.name: attr(node, a.name) for a in node.attribute}
    em.op("Conv", [x, w], [node.output[0]], **attrs)
    return em.nodes


def _dynamic_quantize(node: onnx.NodeProto, info: Info) -> list[onnx.NodeProto]:
    """onnxruntime's uint8 arithmetic: range widened to include 0, scale = range / 255 (1
    for an empty range), zero point = round-half-even(clip(-min / scale, 0, 255))."""
    em = Emitter(info, node.name or "dynamic_quantize")
    x = node.input[0]
    zero, one = em.const(np.float32(0), "zero"), em.const(np.float32(1), "one")
    # Clip, not Min/Max: those import as a stack of 0-d tensors, which crashes the CPU
    # target's ConvertLayout (SIGFPE)
    low = em.op("Clip", [em.op("ReduceMin", [x], keepdims=0), "", zero])
    high = em.op("Clip", [em.op("ReduceMax", [x], keepdims=0), zero])
    scale = em.op("Div", [em.op("Sub", [high, low]), em.const(np.float32(255), "qmax")])
    scale = em.op("Where", [em.op("Equal", [high, low]), one, scale])
    zp = em.op("Clip", [em.op("Sub", [zero, em.op("Div", [low, scale])]), zero,
                        em.const(np.float32(255), "qmax")])
    zp = em.op("Cast", [em.op("Round", [zp])], to=onnx.TensorProto.UINT8)
    outs = list(node.output) + [""] * (3 - len(node.output))
    em.op("QuantizeLinear", [x, scale, zp], [outs[0] or info.fresh("dql_y")])
    for target, value in zip(outs[1:], (scale, zp)):
        if target:
            em.op("Identity", [value], [target])
    return em.nodes
