"""Integer versions of the ops real networks put between convolutions (issue: compression on
real architectures): elementwise activations as 256-entry tables, split, concat, max pool,
nearest resize, squeeze-excitation products — checked against onnxruntime, through the
product path (``hwcompile.compile`` with the CPU target's own pipeline)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import float_model, ort_run
from onnx import helper, numpy_helper

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.passes.quantize import lookup
from hwcompile.passes.quantize.rewrite import plan
from hwcompile.passes.quantize.scheme import QParams, quantize, sqnr_db
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.rewrite import RebuildContext, call_name, dataflow_bindings

ACTIVATIONS = {
    "silu": [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
    "hard_swish": [helper.make_node("HardSwish", ["x"], ["y"])],
    "hard_sigmoid": [helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.2, beta=0.5)],
    "sigmoid": [helper.make_node("Sigmoid", ["x"], ["y"])],
    "tanh": [helper.make_node("Tanh", ["x"], ["y"])],
    "leaky_relu": [helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.1)],
    "gelu_erf": [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                 helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["x", "p"], ["m"]),
                 helper.make_node("Mul", ["m", "half"], ["y"])],
    "relu6": [helper.make_node("Clip", ["x", "zero", "six"], ["y"])],
}
SCALARS = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
           (("sqrt2", np.sqrt(2.0)), ("one", 1.0), ("half", 0.5), ("zero", 0.0), ("six", 6.0))]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_tables_are_the_quantized_activation_of_every_code(name):
    """The table entry of each of the 256 codes is onnxruntime's float result for the
    dequantized code, quantized with the output scale (a float32 result lying within 1e-4
    of a step's rounding boundary may go either way)."""
    used = {i for n in ACTIVATIONS[name] for i in n.input}
    model = float_model(name, ACTIVATIONS[name], [s for s in SCALARS if s.name in used],
                        {"x": [256]}, {"y": [256]}, 14)
    folded, _ = run_pipeline(import_onnx(model), parse_spec("fold-constants"), PassContext())
    bindings = dataflow_bindings(folded.main)
    regions = list(plan(folded).lookups.values())
    assert len(regions) == 1 and regions[0].tail == len(bindings) - 1 - _trailing(bindings)
    weight = RebuildContext(folded).weight
    qp_in = QParams(np.asarray(6.0 / 127), np.asarray(-3))
    qp_out = QParams(np.asarray(1.1 / 127), np.asarray(5))
    table = lookup.table(regions[0], bindings, weight, qp_in, qp_out)
    codes = np.arange(-128, 128)
    real = ((codes - qp_in.zero_point) * qp_in.scale).astype(np.float32)
    reference = ort_run(model, {"x": real})[0].astype(np.float64)
    expected = quantize(reference, qp_out)
    steps = reference / float(qp_out.scale) + float(qp_out.zero_point)
    near_boundary = np.abs(steps - np.floor(steps) - 0.5) < 1e-4
    differ = table != expected
    assert not np.any(differ & ~near_boundary), (codes[differ], table[differ], expected[differ])
    assert np.abs(table.astype(int) - expected).max() <= 1


def _trailing(bindings) -> int:
    """Bindings after the region that only rename its result (``gv = lv``)."""
    return sum(1 for b in bindings if call_name(b.value) is None)


def yolo_block() -> onnx.ModelProto:
    """The constructs between convolutions of YOLO/MobileNet-style networks: SiLU, a C2f
    split into a bottleneck and a concat, hard-swish, SPPF max pooling, a squeeze-excitation
    gate (global pool, 1x1 convs, hard-sigmoid, channel product), nearest upsampling."""
    rng = np.random.default_rng(0)

    def w(name, o, i, k):
        return numpy_helper.from_array((rng.standard_normal((o, i, k, k)) / np.sqrt(i * k * k))
                                       .astype(np.float32), name)

    def b(name, o):
        return numpy_helper.from_array((rng.standard_normal(o) * 0.1).astype(np.float32), name)

    inits = [w("w1", 16, 3, 3), b("b1", 16), w("w2", 8, 8, 3), b("b2", 8), w("w3", 16, 24, 1),
             b("b3", 16), w("se1", 4, 16, 1), b("seb1", 4), w("se2", 16, 4, 1), b("seb2", 16),
             w("w4", 8, 32, 3), b("b4", 8),
             numpy_helper.from_array(np.array([8, 8], np.int64), "split"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             n("Sigmoid", ["c1"], ["s1"]), n("Mul", ["c1", "s1"], ["a1"]),
             n("Split", ["a1", "split"], ["p0", "p1"], axis=1),
             n("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             n("HardSwish", ["c2"], ["a2"]),
             n("Concat", ["p0", "p1", "a2"], ["cat"], axis=1),
             n("Conv", ["cat", "w3", "b3"], ["c3"]),
             n("Sigmoid", ["c3"], ["s3"]), n("Mul", ["c3", "s3"], ["a3"]),
             n("MaxPool", ["a3"], ["m1"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
             n("GlobalAveragePool", ["a3"], ["g"]),
             n("Conv", ["g", "se1", "seb1"], ["e1"]), n("Relu", ["e1"], ["r1"]),
             n("Conv", ["r1", "se2", "seb2"], ["e2"]),
             n("HardSigmoid", ["e2"], ["gate"], alpha=1 / 6, beta=0.5),
             n("Mul", ["m1", "gate"], ["sem"]),
             n("Resize", ["sem", "", "scales"], ["up"], mode="nearest"),
             n("Concat", ["up", "up"], ["cat2"], axis=1),
             n("Conv", ["cat2", "w4", "b4"], ["y"], pads=[1, 1, 1, 1])]
    return float_model("yolo_block", nodes, inits, {"x": [1, 3, 32, 32]}, {"y": [1, 8, 32, 32]},
                       14)


def _ort_int8(model, calibration: np.ndarray, tmp_path) -> onnx.ModelProto:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": sample} for sample in calibration])

        def get_next(self):
            return next(self.items, None)

    src, dst = tmp_path / "float.onnx", tmp_path / "ort_int8.onnx"
    src.write_bytes(model.SerializeToString())
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    return onnx.load(str(dst))


def test_yolo_block_is_integer_from_input_to_output(tmp_path):
    model = yolo_block()
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    rng = np.random.default_rng(5)
    calibration = rng.uniform(-1, 1, (16, 1, 3, 32, 32)).astype(np.float32)
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art", calibration={"x": calibration},
                            passes="fold-constants,quantize")
    report = json.loads((art / "metadata.json").read_text())["pipeline"]
    details = next(p for p in report if p["pass"] == "quantize")["details"]
    assert details["integer_mac_fraction"] == 1.0
    assert details["float_ops"] == []
    ops = {layer["op"] for layer in details["layers"]}
    assert {"lookup(sigmoid,multiply)", "split", "concat", "nn.max_pool2d", "multiply",
            "image.resize2d"} <= ops, ops
    assert any(op.startswith("lookup(add,minimum,maximum,divide,multiply)") for op in ops), ops

    # one quantize at the input, one dequantize at the output, nothing float in between
    quantized, _ = run_pipeline(import_onnx(model), parse_spec("fold-constants,quantize"),
                                PassContext(calibration={"x": calibration}))
    bindings = dataflow_bindings(quantized.main)
    names = [call_name(b.value) for b in bindings]
    assert names.count("relax.quantize") == 1 and "relax.dequantize" not in names
    last_conv = max(i for i, n in enumerate(names) if n == "relax.nn.conv2d")
    floats = [i for i, b in enumerate(bindings) if "float" in str(getattr(b.var.ty, "dtype", ""))]
    assert all(i > last_conv for i in floats)  # the head's accumulator scaled to float

    x = rng.uniform(-1, 1, (8, 1, 3, 32, 32)).astype(np.float32)
    compiled, ort_q = hwcompile.load(art), _ort_int8(model, calibration, tmp_path)
    reference = np.concatenate([ort_run(model, {"x": s})[0] for s in x])
    ours = np.concatenate([compiled(s) for s in x])
    theirs = np.concatenate([ort_run(ort_q, {"x": s})[0] for s in x])
    assert sqnr_db(reference, ours) >= max(sqnr_db(reference, theirs), 30.0), \
        (sqnr_db(reference, ours), sqnr_db(reference, theirs))


def test_float_ops_are_reported_with_the_reason(tmp_path):
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]),  # before any integer layer
             helper.make_node("Conv", ["s", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Softmax", ["c"], ["y"], axis=1)]
    model = float_model("floats", nodes, [w], {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]})
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    calibration = {"x": rng.standard_normal((4, 1, 3, 8, 8)).astype(np.float32)}
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art", calibration=calibration,
                            passes="fold-constants,quantize")
    report = json.loads((art / "metadata.json").read_text())["pipeline"]
    details = next(p for p in report if p["pass"] == "quantize")["details"]
    reasons = {entry["op"]: entry["reason"] for entry in details["float_ops"]}
    assert "input is float" in reasons["sigmoid"]
    assert "no integer form" in reasons["nn.softmax"]
    assert details["integer_mac_fraction"] == 1.0  # the conv is integer


def test_layers_feeding_a_too_coarse_table_stay_float(tmp_path):
    """A sigmoid whose input spans thousands (an LSTM gate on unnormalized features) has no
    int8 table, and int8 cannot feed it either: the layer computing its input stays float,
    with the reason, so the output tracks float; a layer elsewhere stays integer."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array((rng.standard_normal((32, 64)) * 0.2).astype(np.float32), "gate"),
             numpy_helper.from_array((rng.standard_normal((32, 8)) * 0.2).astype(np.float32), "side")]
    nodes = [helper.make_node("MatMul", ["x", "gate"], ["g"]),
             helper.make_node("Sigmoid", ["g"], ["y"]),
             helper.make_node("MatMul", ["x", "side"], ["z"])]
    model = float_model("gate", nodes, inits, {"x": [1, 32]}, {"y": [1, 64], "z": [1, 8]})
    x = (rng.standard_normal((24, 1, 32)) * 300).astype(np.float32)
    art = hwcompile.compile(model, "cpu", tmp_path / "art", calibration={"x": x[:16]},
                            passes="fold-constants,quantize")
    details = hwcompile.load(art).metadata["pipeline"][-1]["details"]
    assert "too coarse" in details["left_float"]["gate"]
    assert [layer["layer"] for layer in details["layers"] if layer["op"] == "dense"] == ["side"]
    loaded = hwcompile.load(art)
    for sample in x[16:]:
        want = ort_run(model, {"x": sample})[0]
        np.testing.assert_allclose(loaded.run({"x": sample})["y"], want, atol=1e-5)
