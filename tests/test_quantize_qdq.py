"""A model quantized elsewhere (onnxruntime's quantize_static, QDQ format) imports, compiles
and matches onnxruntime's own output on the same inputs; ``lower-qdq`` runs its convs in
integers with the same result."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ort_run
from onnx import numpy_helper

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.models.qdq import quantize_with_onnxruntime
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.rewrite import call_name, dataflow_bindings


@pytest.fixture(scope="module")
def qdq_digits(digits_onnx, digits_data, tmp_path_factory):
    """The digits CNN through onnxruntime's quantize_static (per-channel int8, QDQ)."""
    out = tmp_path_factory.mktemp("qdq") / "qdq.onnx"
    return quantize_with_onnxruntime(digits_onnx, out, digits_data[0][:256])


@pytest.mark.parametrize("passes", [None, "lower-qdq"])
def test_onnxruntime_qdq_model_matches_onnxruntime(passes, qdq_digits, digits_data, tmp_path):
    x_test = digits_data[2]
    proto = onnx.load(qdq_digits)
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops

    model = hwcompile.load(hwcompile.compile(qdq_digits, "cpu", tmp_path / "art", passes=passes))
    got = model(x_test)
    want = ort_run(proto, {"input": x_test})[0]
    # The logits are DequantizeLinear of an int8 tensor, so both sides take values on the
    # same grid of step `logits_scale`. onnxruntime runs fused integer kernels, TVM
    # dequantize → float op → quantize (or, lowered, fixed-point requantization); the two
    # can only disagree where a value sits on a rounding tie, which moves it by one step. Allow one step; anything wrong in the import
    # (scales, zero points, axes) moves logits by many steps.
    step = next(float(numpy_helper.to_array(i)) for i in proto.graph.initializer
                if i.name == "logits_scale")
    assert np.abs(got - want).max() <= step * 1.0001
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99


def test_lower_qdq_leaves_no_float_conv(qdq_digits):
    model, report = run_pipeline(import_onnx(qdq_digits), parse_spec("lower-qdq"), PassContext())
    convs = [b.value for b in dataflow_bindings(model.main) if call_name(b.value) == "relax.nn.conv2d"]
    assert len(convs) == report[-1]["details"]["lowered_convs"] == 6  # every conv of the CNN
    assert all(str(c.args[0].ty.dtype) == "int8" and str(c.attrs.out_dtype) == "int32" for c in convs)
