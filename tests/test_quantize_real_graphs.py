"""Quantization on constructs of real exported graphs: a layer with no integer form is left
in float, named in the report, and the rest is still quantized (YOLOv8's box head: a conv
whose bias, divided by its tiny input and weight scales, overflows int32; an LSTM's initial
state times its weights); models with several outputs (BERT's hidden states and pooler)."""

from __future__ import annotations

import json

import numpy as np
from conftest import float_model, ort_run
from onnx import helper, numpy_helper

import hwcompile
from hwcompile.passes import quantize


def test_bias_overflow_leaves_that_layer_in_float(tmp_path):
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((4, 8, 1, 1)) * 1e-4)
                                 .astype(np.float32), "w2")
    scale = numpy_helper.from_array(np.array(1e-4, np.float32), "scale")
    b2 = numpy_helper.from_array(np.full(4, 50.0, np.float32), "b2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="big"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Mul", ["r1", "scale"], ["s"]),  # a tiny activation range
             helper.make_node("Conv", ["s", "w2", "b2"], ["y"], name="tiny")]
    model = float_model("overflow", nodes, [w1, w2, scale, b2], {"x": [1, 3, 8, 8]},
                        {"y": [1, 4, 8, 8]})
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    calib = {"x": rng.standard_normal((8, 1, 3, 8, 8)).astype(np.float32)}
    lines = []
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art", calibration=calib,
                            passes="fold-constants,quantize", progress=lines.append)
    report = json.loads((art / "metadata.json").read_text())["pipeline"]
    quant = next(p for p in report if p["pass"].startswith("quantize"))
    left = quant["details"]["left_float"]
    assert "overflows int32" in left["w2"]  # layers take their weight's name
    assert "w1" not in left
    assert any("layer 'w2' left in float" in line for line in lines)
    x = calib["x"][0]
    np.testing.assert_allclose(hwcompile.load(art)(x), ort_run(model, {"x": x})[0],
                               rtol=0.05, atol=0.05)


def test_a_layer_only_one_range_method_cannot_quantize(tmp_path, monkeypatch):
    """The report compares range methods; a layer whose bias overflows under one method's
    ranges only (ppocrv4_rec's under percentile) stays float in that variant, and the
    others still quantize it (the pass used to fail)."""
    real_range = quantize.tensor_range

    def percentile_ranges_tiny(stats, method, **options):
        low, high = real_range(stats, method, **options)
        return (low * 1e-7, high * 1e-7) if method == "percentile" else (low, high)

    monkeypatch.setattr(quantize, "tensor_range", percentile_ranges_tiny)
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(np.full(4, 0.5, np.float32), "b2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"])]
    model = float_model("overflow", nodes, [w1, w2, b2], {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]})
    calib = {"x": rng.standard_normal((8, 1, 3, 8, 8)).astype(np.float32)}
    lines = []
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art", calibration=calib,
                            passes="fold-constants,quantize", progress=lines.append)
    details = next(p for p in json.loads((art / "metadata.json").read_text())["pipeline"]
                   if p["pass"].startswith("quantize"))["details"]
    assert details["range_method"]["applied"] == "mse"
    assert "left_float" not in details and not any("left in float" in line for line in lines)
    assert details["output_sqnr_db"] > 30
    x = calib["x"][0]
    want = ort_run(model, {"x": x})[0]
    assert np.abs(hwcompile.load(art)(x) - want).max() <= 0.03 * np.abs(want).max()


def _quantize(tmp_path, model, calib):
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return hwcompile.compile(str(path), "cpu", tmp_path / "art", calibration=calib,
                             passes="fold-constants,quantize")


def test_constant_input_layer_and_two_outputs(tmp_path):
    rng = np.random.default_rng(1)
    h0 = numpy_helper.from_array(rng.standard_normal((1, 16)).astype(np.float32), "h0")
    w = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w")
    v = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "v")
    nodes = [helper.make_node("MatMul", ["h0", "w"], ["hw"]),  # constant input: stays float
             helper.make_node("MatMul", ["x", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "hw"], ["a"]),
             helper.make_node("Relu", ["a"], ["hidden"]),
             helper.make_node("MatMul", ["hidden", "v"], ["pooled"])]
    model = float_model("two_outputs", nodes, [h0, w, v], {"x": [1, 16]},
                        {"hidden": [1, 16], "pooled": [1, 8]})
    calib = {"x": rng.standard_normal((16, 1, 16)).astype(np.float32)}
    art = _quantize(tmp_path, model, calib)
    report = json.loads((art / "metadata.json").read_text())["pipeline"]
    details = next(p for p in report if p["pass"] == "quantize")["details"]
    reasons = list(details["left_float"].values())
    assert len(reasons) == 1 and "input is a constant" in reasons[0], details["left_float"]
    assert len(details["layers"]) >= 2  # the other two matmuls are integer layers
    x = calib["x"][0]
    got = hwcompile.load(art).run({"x": x})
    for value, ref in zip(got.values(), ort_run(model, {"x": x})):  # int8: 2% of the range
        np.testing.assert_allclose(value, ref, rtol=0, atol=0.02 * np.abs(ref).max())


def test_scalar_intermediates(tmp_path):
    """A 0-d float tensor inside the graph (PaddleOCR's exports compute such scalars): the
    per-layer report stacked every float value per sample, and 0-d ones made it fail."""
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c"], ["m"], keepdims=0),  # shape ()
             helper.make_node("Mul", ["c", "m"], ["y"])]
    model = float_model("scalar", nodes, [w], {"x": [1, 3, 8, 8]}, {"y": [1, 8, 8, 8]})
    calib = {"x": rng.standard_normal((8, 1, 3, 8, 8)).astype(np.float32)}
    art = _quantize(tmp_path, model, calib)
    x = calib["x"][0]
    ref = ort_run(model, {"x": x})[0]
    np.testing.assert_allclose(hwcompile.load(art)(x), ref, rtol=0,
                               atol=0.05 * np.abs(ref).max())
