"""int8 quantization: bit-exact integer layers against numpy, the digits acceptance figures,
the integer IR, the report and the statistics cache."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import float_model, ort_run
from onnx import helper, numpy_helper

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.passes.quantize import REPORT_SAMPLES
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.rewrite import call_name, dataflow_bindings
from hwcompile.target import resolve_target

DIGITS_PASSES = "fold-constants,fold-batchnorm,dce,quantize"


def conv_dense_model(outlier: float = 1.0, second_gemm: bool = False) -> onnx.ModelProto:
    """Conv(3→8, pad 1)+bias → Relu → MaxPool 2×2 → Flatten → Gemm(128→10)+bias → Relu →
    Reshape(N, 2, 5): the conv's output is int8 (the pooling and the Gemm read it as int8);
    the Gemm, read only by float code (the model output), dequantizes its int32
    accumulator. ``outlier`` scales one Gemm weight (a layer per-tensor int8 cannot
    represent); ``second_gemm`` adds a Gemm(10→10) after the ReLU, so the first one's output
    is int8 too."""
    rng = np.random.default_rng(7)
    fw = rng.standard_normal((10, 128)).astype(np.float32) * 0.1
    fw[0, 0] *= outlier
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b"),
             numpy_helper.from_array(fw, "fw"),
             numpy_helper.from_array(rng.standard_normal(10).astype(np.float32) * 0.1, "fb"),
             numpy_helper.from_array(np.array([-1, 2, 5], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["g"], transB=1),
             helper.make_node("Relu", ["g"], ["gr"]),
             helper.make_node("Reshape", ["gr", "shape"], ["y"])]
    if second_gemm:
        inits.append(numpy_helper.from_array(
            (np.eye(10) + rng.standard_normal((10, 10)) * 0.1).astype(np.float32), "fw2"))
        nodes[-1:] = [helper.make_node("Gemm", ["gr", "fw2"], ["g2"]),
                      helper.make_node("Reshape", ["g2", "shape"], ["y"])]
    return float_model("conv_dense", nodes, inits, {"x": ["N", 3, 8, 8]}, {"y": ["N", 2, 5]})


def _requant_reference(acc: np.ndarray, requant: dict, zp_out: int, low: int, axis_shape):
    """The integer requantization the annotations describe, in numpy int64."""
    shift = np.asarray(requant["shift"], np.int64).reshape(axis_shape if np.ndim(requant["shift"])
                                                            else ())
    if requant["kind"] == "shift":
        right, left = np.maximum(shift, 0), np.maximum(-shift, 0)
        y = ((acc << left) + ((np.int64(1) << right) >> 1)) >> right
    else:
        m = np.asarray(requant["multiplier"], np.int64).reshape(axis_shape)
        y = (acc * m + (np.int64(1) << (shift - 1))) >> shift
    return np.clip(y + zp_out, low, 127)


def _conv_reference(xq, zp_x, wq, bias_q):
    xp = np.pad(xq.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=zp_x)
    n, _, h, w = xq.shape
    out = np.zeros((n, wq.shape[0], h, w), np.int64)
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = np.einsum("nchw,ochw->no", xp[:, :, i:i + 3, j:j + 3],
                                        wq.astype(np.int64))
    return out + bias_q.reshape(1, -1, 1, 1)


SCHEMES = {"cpu-default": "", "vta-like": "granularity=per-tensor, symmetric=true, power_of_two=true"}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_conv_and_dense_match_numpy_integer_reference_bit_exactly(scheme, tmp_path):
    proto = conv_dense_model()
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((64, 3, 8, 8)).astype(np.float32)
    options = ", ".join(o for o in (SCHEMES[scheme], "bias_correction=false", "method=minmax") if o)
    art = hwcompile.compile(proto, "cpu", tmp_path / scheme, passes=f"fold-constants,quantize({options})",
                            calibration={"x": calib})
    model = hwcompile.load(art)
    notes = model.metadata["model"]["quantization"]
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    conv, dense = (v for k, v in notes["layers"].items() if v["op"] in ("conv2d", "dense"))

    # input boundary: x_q = clamp(round(x / s) + zp)
    s_x, zp_x = notes["inputs"]["x"]["scale"], notes["inputs"]["x"]["zero_point"]
    xq = np.clip(np.round(x.astype(np.float64) / s_x) + zp_x, -128, 127).astype(np.int64)

    # conv: int8 weights from the float weights and the recorded scales, int32 bias
    w = numpy_helper.to_array(proto.graph.initializer[0]).astype(np.float64)
    b = numpy_helper.to_array(proto.graph.initializer[1]).astype(np.float64)
    s_w = np.broadcast_to(np.asarray(conv["weight"]["scale"]), (8,))
    wq = np.clip(np.round(w / s_w.reshape(-1, 1, 1, 1)), -127, 127)
    bias_q = np.round(b / (s_x * s_w)) - zp_x * wq.reshape(8, -1).sum(1)
    acc = _conv_reference(xq, zp_x, wq, bias_q.astype(np.int64))
    out = conv["output"]
    q1 = _requant_reference(acc, conv["requant"], out["zero_point"], out["zero_point"], (1, 8, 1, 1))
    real = s_x * s_w / out["scale"]
    if conv["requant"]["kind"] == "shift":
        np.testing.assert_array_equal(2.0 ** -np.asarray(conv["requant"]["shift"]), real)
    else:  # the fixed-point multiplier approximates the real one to 30 bits
        approx = np.asarray(conv["requant"]["multiplier"]) * 2.0 ** -conv["requant"]["shift"]
        np.testing.assert_allclose(approx, real, rtol=2 ** -28)
    pooled = q1.reshape(5, 8, 4, 2, 4, 2).max(axis=(3, 5)).reshape(5, -1)

    # dense on the pooled int8 activations (same scale as the conv output)
    s_f, zp_f = out["scale"], out["zero_point"]
    fw = numpy_helper.to_array(proto.graph.initializer[2]).astype(np.float64).T  # (K, N)
    fb = numpy_helper.to_array(proto.graph.initializer[3]).astype(np.float64)
    s_fw = np.broadcast_to(np.asarray(dense["weight"]["scale"]), (10,))
    fwq = np.clip(np.round(fw / s_fw), -127, 127).astype(np.int64)
    fbias = np.round(fb / (s_f * s_fw)).astype(np.int64) - zp_f * fwq.sum(0)
    acc2 = pooled @ fwq + fbias
    assert dense["output"] == "float32"  # the accumulator times s_f·s_fw, in float32, ReLU
    expected = np.maximum(acc2.astype(np.float32) * (s_f * s_fw).astype(np.float32), 0)

    got = model(x).reshape(5, 10)
    np.testing.assert_array_equal(got, expected)
    # and the integer model tracks the float one (error bounded, relative to the output range)
    ref = ort_run(proto, {"x": x})[0].reshape(5, 10)
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()


@pytest.fixture(scope="module")
def digits_quantized(digits_onnx, digits_data, tmp_path_factory):
    x_train, _, _, _ = digits_data
    target = resolve_target("cpu")
    source = import_onnx(digits_onnx)
    calib = tmp_path_factory.mktemp("calib") / "digits_calib.npz"
    np.savez(calib, input=x_train[:512])
    ctx = PassContext(constraints=target.constraints, calibration=str(calib))
    model, report = run_pipeline(source, parse_spec(DIGITS_PASSES), ctx)
    art = hwcompile.compile(model, target, tmp_path_factory.mktemp("art") / "digits_int8", passes="")
    floats, _ = run_pipeline(source, parse_spec("fold-constants,fold-batchnorm,dce"), PassContext())
    return model, report[-1], hwcompile.load(art), floats


def test_digits_int8_accuracy_within_half_a_point_of_float(digits_quantized, digits_onnx,
                                                           digits_data):
    _, _, x_test, y_test = digits_data
    _, _, int8, _ = digits_quantized
    float_acc = np.mean(ort_run(digits_onnx, {"input": x_test})[0].argmax(1) == y_test)
    int8_acc = np.mean(int8(x_test).argmax(1) == y_test)
    assert int8_acc >= float_acc - 0.005, (float_acc, int8_acc)


def test_digits_weight_bytes_at_most_27_percent(digits_quantized):
    model, entry, _, floats = digits_quantized
    assert model.weight_bytes <= 0.27 * floats.weight_bytes
    assert entry["details"]["weight_bytes_after"] == model.weight_bytes
    assert entry["details"]["weight_bytes_before"] == floats.weight_bytes


def test_digits_integer_graph_has_no_float_between_layers(digits_quantized):
    model, _, _, _ = digits_quantized
    bindings = dataflow_bindings(model.main)
    ops = [call_name(b.value) for b in bindings]
    layers = [i for i, op in enumerate(ops) if op in ("relax.nn.conv2d", "relax.matmul")]
    assert len(layers) == 7
    assert ops.count("relax.quantize") == 1 and ops.index("relax.quantize") < layers[0]
    assert "relax.dequantize" not in ops
    for i in layers:  # int8 operands, int32 accumulation
        value = bindings[i].value
        assert [str(a.ty.dtype) for a in value.args] == ["int8", "int8"]
        assert str(bindings[i].var.ty.dtype) == "int32"
    # from the input quantize to the last accumulator, every tensor is an integer
    span = bindings[ops.index("relax.quantize"):layers[-1] + 1]
    floats = [(call_name(b.value), b.var.name) for b in span if "float" in str(b.var.ty.dtype)]
    assert floats == []


def test_digits_report_and_annotations(digits_quantized):
    _, entry, int8, _ = digits_quantized
    details = entry["details"]
    layers = {e["layer"]: e for e in details["layers"]}
    assert {"stem", "res.conv1", "res.conv2", "branch_a", "branch_b", "down", "fc"} <= set(layers)
    method = details["range_method"]["applied"]
    for e in layers.values():
        assert e["range_method"] == method
        assert e["cosine"] > 0.99 and e["sqnr_db"] > 20  # int8 error per layer, bounded
    assert details["kept_float"] == []
    notes = int8.metadata["model"]["quantization"]  # what the VTA compiler reads
    stem = notes["layers"]["stem"]
    assert len(stem["weight"]["scale"]) == 16 and stem["requant"]["kind"] == "multiply-shift"
    assert isinstance(stem["output"]["zero_point"], int)


def test_range_method_and_bias_correction_chosen_by_the_output_error(
        digits_quantized, digits_onnx, digits_data):
    """By default the report measures mse and percentile ranges, each with and without bias
    correction, and keeps the combination whose output is closest to float on the
    calibration data; the SQNR it reports for it is what the compiled artifact gives
    against onnxruntime's float output on those samples."""
    x_train, _, _, _ = digits_data
    _, entry, int8, _ = digits_quantized
    details = entry["details"]
    methods = details["range_method"]["output_sqnr_db"]
    corrections = details["bias_correction"]["output_sqnr_db"]
    assert set(methods) == {"mse", "percentile"} and set(corrections) == {"with", "without"}
    best = max(methods.values())
    assert methods[details["range_method"]["applied"]] == best == max(corrections.values())
    assert corrections["with" if details["bias_correction"]["applied"] else "without"] == best
    assert details["output_sqnr_db"] == best
    calibration = x_train[:REPORT_SAMPLES]  # what the report runs on
    want = ort_run(digits_onnx, {"input": calibration})[0].astype(np.float64)
    noise = np.sum((int8(calibration).astype(np.float64) - want) ** 2)
    assert 10 * np.log10(np.sum(want ** 2) / noise) == pytest.approx(best, abs=0.05)


def test_statistics_cache_is_reused(tmp_path):
    proto = conv_dense_model()
    calib = {"x": np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(np.float32)}
    source = import_onnx(proto)
    cache = tmp_path / "stats.npz"
    spec = parse_spec(f"quantize(cache={cache})")
    first, r1 = run_pipeline(source, spec, PassContext(calibration=calib))
    second, r2 = run_pipeline(source, spec, PassContext(calibration=calib))
    assert cache.is_file()
    assert r1[0]["details"]["statistics_from_cache"] is False
    assert r2[0]["details"]["statistics_from_cache"] is True
    for name in first.params:
        np.testing.assert_array_equal(first.params[name], second.params[name])
    calib["x"] = calib["x"] * 2  # other data: recomputed
    _, r3 = run_pipeline(source, spec, PassContext(calibration=calib))
    assert r3[0]["details"]["statistics_from_cache"] is False


def test_accuracy_control_keeps_the_sensitive_layer_float(tmp_path):
    """Per-tensor power-of-two weights cannot hold one huge weight next to small ones: the
    dense layer's other outputs collapse (its int8 output feeds a second Gemm). max_drop
    must find it and keep it float."""
    proto = conv_dense_model(outlier=400.0, second_gemm=True)
    rng = np.random.default_rng(3)
    calib = rng.standard_normal((64, 3, 8, 8)).astype(np.float32)
    x_eval = rng.standard_normal((128, 3, 8, 8)).astype(np.float32)
    labels = ort_run(proto, {"x": x_eval})[0].reshape(128, -1).argmax(1)  # float accuracy 1.0
    np.savez(tmp_path / "eval.npz", x=x_eval, labels=labels)
    scheme = "granularity=per-tensor, symmetric=true, power_of_two=true"
    art = hwcompile.compile(
        proto, "cpu", tmp_path / "art", calibration={"x": calib},
        passes=f"fold-constants,quantize({scheme}, max_drop=0.02, eval={tmp_path / 'eval.npz'})")
    details = hwcompile.load(art).metadata["pipeline"][-1]["details"]
    control = details["accuracy"]
    assert control["metric"] == "top-1 accuracy" and control["float"] == 1.0
    assert control["steps"][0]["score"] < 0.98  # fully quantized: too lossy
    assert control["sensitivity_order"][0] == "fw"
    assert details["kept_float"] == ["fw"] and control["within_bound"]
    model = hwcompile.load(art)
    assert np.mean(model(x_eval).reshape(128, -1).argmax(1) == labels) >= 0.98


@pytest.mark.slow
def test_unreachable_bound_still_writes_the_artifact(tmp_path):
    proto = conv_dense_model()
    calib = {"x": np.random.default_rng(4).standard_normal((32, 3, 8, 8)).astype(np.float32)}
    art = hwcompile.compile(proto, "cpu", tmp_path / "art", calibration=calib,
                            passes="fold-constants,quantize(max_drop=-1)")
    details = hwcompile.load(art).metadata["pipeline"][-1]["details"]
    assert details["accuracy"]["within_bound"] is False
    assert details["accuracy"]["metric"] == "top-1 agreement with float"
    assert sorted(details["kept_float"]) == ["fw", "w"]  # everything was tried
    assert len(details["accuracy"]["steps"]) == 3


@pytest.mark.slow
def test_depthwise_and_grouped_convs_track_float(tmp_path):
    from hwcompile.inputs import random_inputs
    from hwcompile.models import zoo

    proto = zoo.depthwise_grouped_cnn()
    spec = import_onnx(proto).inputs
    art = hwcompile.compile(proto, "cpu", tmp_path / "art",
                            passes="fold-constants,fold-batchnorm,dce,quantize",
                            calibration=random_inputs(spec, seed=0, batch=64))
    model = hwcompile.load(art)
    layers = {e["layer"]: e["op"] for e in model.metadata["pipeline"][-1]["details"]["layers"]}
    assert {"dw", "grouped", "pw"} <= set(layers)
    feeds = random_inputs(spec, seed=5, batch=16)
    got, want = model(**feeds), ort_run(proto, feeds)[0]
    cosine = float(got.ravel() @ want.ravel() / np.linalg.norm(got) / np.linalg.norm(want))
    assert cosine > 0.999 and np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def _stats_of(x: np.ndarray):
    from hwcompile.passes.quantize.calibration import _Accumulator

    acc = _Accumulator()
    for chunk in np.array_split(x, 3):  # statistics merge across batches
        acc.first(chunk)
    for chunk in np.array_split(x, 3):
        acc.second(chunk)
    return acc.stats()


def test_range_methods_against_numpy():
    from hwcompile.passes.quantize.calibration import BINS, tensor_range

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4, 16)).astype(np.float32)
    x[0, 0, 0], x[1, 1, 1] = 40.0, -12.0  # rare outliers
    st = _stats_of(x)
    assert tensor_range(st, "minmax") == (x.min(), x.max())
    assert tensor_range(st, "maxabs") == (-40.0, 40.0)
    lo, hi = tensor_range(st, "meanstd", k=3.0)
    assert np.isclose(hi, x.mean() + 3 * x.std(), rtol=1e-5)
    assert np.isclose(lo, x.mean() - 3 * x.std(), rtol=1e-5)
    np.testing.assert_allclose(st.channel_mean, x.mean(axis=(0, 2)), rtol=1e-5, atol=1e-6)
    bin_width = 2 * 40.0 / BINS
    lo, hi = tensor_range(st, "percentile", percentile=99.0)
    assert abs(hi - np.percentile(x, 99.0)) <= bin_width
    assert abs(lo - np.percentile(x, 1.0)) <= bin_width
    # entropy (KL) clips the rare outliers but keeps the bulk of the Gaussian
    lo, hi = tensor_range(st, "entropy")
    assert 2.5 < hi < 12.0 and -12.0 < lo < -2.5, (lo, hi)

    def fake_quant_mse(lo, hi):  # the real error of 8-bit uniform quantization on x
        scale = (hi - lo) / 255
        q = np.clip(np.round((x - lo) / scale), 0, 255)
        return float(np.mean((q * scale + lo - x) ** 2))

    others = [tensor_range(st, m) for m in ("minmax", "entropy")] + \
        [tensor_range(st, "percentile", percentile=p) for p in (99.0, 99.99)]
    best_other = min(fake_quant_mse(*r) for r in others)
    assert fake_quant_mse(*tensor_range(st, "mse")) <= 1.05 * best_other


def test_scheme_math():
    from hwcompile.passes.quantize import scheme as sc

    cpu = sc.Scheme(per_channel=True, symmetric=False, power_of_two=False)
    qp = sc.activation_qparams(0.5, 6.0, cpu)  # widened to contain 0: zero is exact
    assert sc.dequantize(sc.quantize(np.zeros(1, np.float32), qp), qp)[0] == 0.0
    assert np.isclose(float(qp.scale), 6.0 / 255)
    vta = sc.Scheme(per_channel=False, symmetric=True, power_of_two=True)
    qp = sc.activation_qparams(-1.0, 3.0, vta)
    assert float(qp.scale) == 2.0 ** -5 and int(qp.zero_point) == 0  # 3/127 rounded up to 2^-5
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
    wq = sc.weight_qparams(w, 0, cpu)
    np.testing.assert_allclose(wq.scale, np.abs(w).reshape(4, -1).max(1) / 127)
    rq = sc.requant_params(np.array([0.0123, 0.000456]), power_of_two=False)
    np.testing.assert_allclose(rq.multiplier * 2.0 ** -int(rq.shift), [0.0123, 0.000456],
                               rtol=2 ** -20)
    assert rq.multiplier.max() < 2 ** 30
    assert sc.requant_params(np.array(2.0 ** -7), power_of_two=True).to_json() == \
        {"kind": "shift", "shift": 7}


@pytest.mark.parametrize("kernel, groups", [(1, 1), (3, 16)])
def test_bias_correction_removes_a_layers_weight_rounding_bias(kernel, groups, tmp_path):
    """With ``bias_correction=true`` a conv (1×1, and depthwise 3×3) on inputs with a
    per-channel mean has a per-channel mean output error (against onnxruntime float, on
    held-out data) well below the uncorrected one's."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((16, 16 // groups, kernel, kernel)) * 0.2).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["y"], pads=[kernel // 2] * 4, group=groups)]
    proto = float_model("bias_bias", nodes, [numpy_helper.from_array(w, "w")],
                        {"x": [1, 16, 12, 12]}, {"y": [1, 16, 12, 12]})
    shift = rng.standard_normal((1, 1, 16, 1, 1))
    cal, held = ((rng.standard_normal((n, 1, 16, 12, 12)) + shift).astype(np.float32)
                 for n in (16, 8))
    want = np.stack([ort_run(proto, {"x": h})[0] for h in held])
    channel_bias = {}
    for correct in ("true", "false"):
        out = hwcompile.compile(proto, "cpu", tmp_path / correct, calibration={"x": cal},
                                passes=f"quantize(bias_correction={correct}, method=minmax)")
        art = hwcompile.load(out)
        got = np.stack([art.run({"x": h})["y"] for h in held])
        channel_bias[correct] = np.sqrt(((got - want).mean(axis=(0, 1, 3, 4)) ** 2).mean())
    assert channel_bias["true"] < 0.3 * channel_bias["false"]
