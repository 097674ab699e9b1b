"""ConvInteger, MatMulInteger and DynamicQuantizeLinear, bit-exact against onnxruntime."""

from __future__ import annotations

import numpy as np
from frontend_util import (
    assert_like_ort,
    model,
    product_run,
    run_artifact,
    tensor,
    tvm_run,
    vinfo,
)
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

UINT8, INT32 = TensorProto.UINT8, TensorProto.INT32


def _conv_integer(w, x_shape, y_shape, zero_points=("x_zp", "w_zp"), inits=(), **attrs):
    node = helper.make_node("ConvInteger", ["x", "w", *zero_points], ["y"], **attrs)
    return model([node], [vinfo("x", x_shape, UINT8)], [vinfo("y", y_shape, INT32)],
                 [tensor("w", w), *inits], opset=13)


def test_conv_integer_through_compile(tmp_path):
    """int8 weights, scalar zero points on both sides, padding (which pads with the input
    zero point) and strides."""
    rng = np.random.default_rng(0)
    proto = _conv_integer(rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8),
                          [1, 3, 6, 6], [1, 4, 3, 6],
                          inits=[tensor("x_zp", np.uint8(7)), tensor("w_zp", np.int8(-3))],
                          pads=[1, 1, 1, 1], strides=[2, 1])
    x = rng.integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)
    assert_like_ort(proto, {"x": x}, product_run(proto, {"x": x}, tmp_path / "a"), exact=True)


def test_grouped_conv_integer_without_zero_points():
    rng = np.random.default_rng(1)
    proto = _conv_integer(rng.integers(0, 256, (4, 1, 3, 3)).astype(np.uint8), [1, 4, 5, 5],
                          [1, 4, 3, 3], zero_points=(), group=4)
    x = rng.integers(0, 256, (1, 4, 5, 5)).astype(np.uint8)
    assert_like_ort(proto, {"x": x}, tvm_run(proto, {"x": x}), exact=True)


def test_conv_integer_per_channel_weight_zero_point():
    """onnxruntime refuses a per-channel w_zero_point ("Non per-tensor quantization is not
    supported"); the reference is the ONNX spec's own evaluator."""
    rng = np.random.default_rng(2)
    proto = _conv_integer(rng.integers(-128, 128, (3, 2, 2, 2)).astype(np.int8), [2, 2, 4, 4],
                          [2, 3, 3, 3],
                          inits=[tensor("x_zp", np.uint8(128)),
                                 tensor("w_zp", np.array([1, -2, 5], np.int8))])
    x = rng.integers(0, 256, (2, 2, 4, 4)).astype(np.uint8)
    want = ReferenceEvaluator(proto).run(None, {"x": x})[0]
    got = tvm_run(proto, {"x": x})[0]
    assert got.dtype == want.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_dynamic_quantize_and_matmul_integer_through_compile(tmp_path):
    """The dynamic-quantization pattern onnxruntime's quantizer writes for MatMul; inputs
    include an all-zero tensor (scale 1 there), exact .5 ties (round half to even) and a
    negative minimum (non-zero zero point)."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "scale", "zp"]),
             helper.make_node("MatMulInteger", ["q", "w", "zp", "w_zp"], ["y"])]
    proto = model(nodes, [vinfo("x", [2, 8])],
                  [vinfo("y", [2, 5], INT32), vinfo("q", [2, 8], UINT8),
                   vinfo("scale", []), vinfo("zp", [], UINT8)],
                  [tensor("w", rng.integers(-128, 128, (8, 5)).astype(np.int8)),
                   tensor("w_zp", np.int8(3))])
    ties = np.concatenate([[0, 255], np.arange(14) + 0.5])           # scale 1, x.5 values
    zp_tie = np.concatenate([[-1.5, 253.5], np.arange(14)])           # zero point 1.5
    samples = [np.zeros(16), ties, zp_tie] + [rng.standard_normal(16) * s
                                              for s in (0.01, 1.0, 300.0)]
    art = tmp_path / "a"
    product_run(proto, {"x": samples[0].reshape(2, 8).astype(np.float32)}, art)
    for x in samples:
        feeds = {"x": x.reshape(2, 8).astype(np.float32)}
        assert_like_ort(proto, feeds, run_artifact(art, proto, feeds), exact=True)
