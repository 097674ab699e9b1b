"""QDQ models made by onnxruntime's own quantizer: the reference for importing models
quantized elsewhere (tests, benchmarks/qdq_cpu.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np


def quantize_with_onnxruntime(source: Path, out: Path, calibration: np.ndarray,
                              input_name: str = "input") -> Path:
    """``source`` through onnxruntime's ``quantize_static`` (QDQ format, per-channel int8
    weights, int8 activations, calibrated on ``calibration`` in batches of 32) → ``out``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: calibration[i:i + 32]}
                                 for i in range(0, len(calibration), 32)])

        def get_next(self):
            return next(self.batches, None)

    pre = out.with_suffix(".pre.onnx")
    logging.disable(logging.WARNING)  # onnxruntime's advice on pre-processing
    try:
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    return out
