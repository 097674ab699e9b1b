"""A model quantized elsewhere (onnxruntime's quantize_static, QDQ format) imports, compiles
and matches onnxruntime's own output on the same inputs."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from conftest import ort_run
from onnx import numpy_helper

import hwcompile


def test_onnxruntime_qdq_model_matches_onnxruntime(digits_onnx, digits_data, tmp_path):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x_train, _, x_test, _ = digits_data

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": x_train[i:i + 32]} for i in range(0, 256, 32)])

        def get_next(self):
            return next(self.batches, None)

    logging.disable(logging.WARNING)  # onnxruntime's advice on pre-processing
    try:
        quant_pre_process(str(digits_onnx), str(tmp_path / "pre.onnx"), skip_symbolic_shape=True)
        quantize_static(str(tmp_path / "pre.onnx"), str(tmp_path / "qdq.onnx"), Reader(),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    proto = onnx.load(tmp_path / "qdq.onnx")
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops

    model = hwcompile.load(hwcompile.compile(tmp_path / "qdq.onnx", "cpu", tmp_path / "art"))
    got = model(x_test)
    want = ort_run(proto, {"input": x_test})[0]
    # The logits are DequantizeLinear of an int8 tensor, so both sides take values on the
    # same grid of step `logits_scale`. onnxruntime runs fused integer kernels, TVM
    # dequantize → float op → quantize; the two can only disagree where a value sits on a
    # rounding tie, which moves it by one step. Allow one step; anything wrong in the import
    # (scales, zero points, axes) moves logits by many steps.
    step = next(float(numpy_helper.to_array(i)) for i in proto.graph.initializer
                if i.name == "logits_scale")
    assert np.abs(got - want).max() <= step * 1.0001
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99
