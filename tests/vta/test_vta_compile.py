"""The vta target: lowering with channel tiling, partitioning, execution through the packed
function, tuning, artifact files and loader checks. References are numpy integer
convolutions and the CPU target running the same quantized model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tvm import relax

import hwcompile
from hwcompile.errors import ArtifactError, TargetError, VTAError
from hwcompile.target import resolve_target
from hwcompile.targets.vta import layout, qgraph
from hwcompile.targets.vta.config import load_config
from hwcompile.targets.vta.cycle_model import estimate
from hwcompile.targets.vta.isa import decode_program
from hwcompile.targets.vta.lower import (
    AluStep,
    LayerSpec,
    Residual,
    TilePlan,
    check_plan,
    default_plan,
    lower,
)
from hwcompile.targets.vta.runtime import register, run_sample
from hwcompile.targets.vta.tune import TuningDatabase, candidates

CFG = load_config("pynq")


def np_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """int64 NCHW/OIHW convolution of one sample (C, H, W) -> (O, OH, OW)."""
    _, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    acc = np.zeros((o, oh, ow), np.float64)  # int8 products, sums < 2^53: exact
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
            acc += np.einsum("chw,oc->ohw", patch.astype(np.float64), w[:, :, i, j].astype(np.float64))
    return acc.astype(np.int64)


def shift_bias_clip_ref(x, w, bias, stride, pad):
    acc = np_conv(x, w, stride, pad)
    return np.clip((acc >> 8) + bias[:, None, None], 0, 127).astype(np.int8)


def _run_spec(spec: LayerSpec, plan: TilePlan, x: np.ndarray, residuals=()) -> np.ndarray:
    image = register(-1, lower(spec, plan, CFG))
    return run_sample(image, x, list(residuals))


RNG = np.random.default_rng(7)


@pytest.mark.parametrize("plan", [
    TilePlan(th=3, tw=5, toc=1, tic=1, vthreads=2, order="spatial"),
    TilePlan(th=2, tw=10, toc=2, tic=2, vthreads=1, order="channel"),
    TilePlan(th=10, tw=4, toc=3, tic=1, vthreads=2, order="channel"),
])
def test_lowered_conv_with_channel_tiling_is_bit_exact(plan):
    # 40 in / 48 out channels: 3 input blocks (the last one zero-padded), 3 output blocks
    x = RNG.integers(-128, 128, (40, 10, 10)).astype(np.int8)
    w = RNG.integers(-128, 128, (48, 40, 3, 3)).astype(np.int8)
    bias = RNG.integers(-64, 64, 48).astype(np.int32)
    steps = [AluStep("shr", imm=8), AluStep("add", vector=0), AluStep("max", imm=0),
             AluStep("min", imm=127)]
    spec = LayerSpec((40, 10, 10), w, (1, 1), (1, 1, 1, 1), steps, [bias])
    assert check_plan(spec, plan, CFG) is None
    got = _run_spec(spec, plan, x)
    np.testing.assert_array_equal(got, shift_bias_clip_ref(x, w, bias, 1, 1))


def test_lowered_residual_with_side_chain_and_stride():
    x = RNG.integers(-128, 128, (32, 9, 9)).astype(np.int8)
    w = RNG.integers(-128, 128, (48, 32, 3, 3)).astype(np.int8)
    r = RNG.integers(-128, 128, (48, 5, 5)).astype(np.int8)
    steps = [AluStep("add", imm=1 << 9), AluStep("shr", imm=10), AluStep("add", tensor=0),
             AluStep("shr", imm=1), AluStep("max", imm=-128), AluStep("min", imm=127)]
    spec = LayerSpec((32, 9, 9), w, (2, 2), (1, 1, 1, 1), steps, [],
                     [Residual((AluStep("shr", imm=-2),))])
    plan = default_plan(spec, CFG)
    got = _run_spec(spec, plan, x, [r])
    acc = ((np_conv(x, w, 2, 1) + (1 << 9)) >> 10) + (r.astype(np.int64) << 2)
    np.testing.assert_array_equal(got, np.clip(acc >> 1, -128, 127).astype(np.int8))


def test_infeasible_plans_are_rejected_with_the_reason():
    w = np.zeros((512, 512, 3, 3), np.int8)
    spec = LayerSpec((512, 7, 7), w, (1, 1), (1, 1, 1, 1))
    assert "WGT needs 9216" in check_plan(spec, TilePlan(1, 7, 32, 32), CFG)
    assert "INP needs 2592" in check_plan(spec, TilePlan(7, 7, 32, 32), CFG)
    with pytest.raises(VTAError, match="infeasible"):
        lower(spec, TilePlan(7, 7, 32, 32), CFG)
    one_block = LayerSpec((16, 4, 4), np.zeros((16, 16, 1, 1), np.int8))
    assert "hazard" in check_plan(one_block, TilePlan(4, 2, 1, 1), CFG)


def test_resnet18_c2_to_c11_through_the_compiler_are_bit_exact(tmp_path):
    model, data = qgraph.conv_workloads_model(qgraph.RESNET18_CONVS, seed=3)
    out = hwcompile.compile(model, target="vta:pynq", output=tmp_path / "convs", passes="")
    meta = json.loads((out / "metadata.json").read_text())
    programs = meta["target_extra"]["programs"]
    assert [p["op"] for p in programs] == ["conv2d"] * 10
    assert all(0 < p["gemm_utilization"] <= 1 for p in programs)
    compiled = hwcompile.load(out)
    rng = np.random.default_rng(4)
    feeds = {f"x_{w.name}": rng.integers(-128, 128, (1, w.cin, w.size, w.size)).astype(np.int8)
             for w in qgraph.RESNET18_CONVS}
    results = compiled.run(feeds)
    for wl, got in zip(qgraph.RESNET18_CONVS, results.values()):
        d = data[wl.name]
        want = shift_bias_clip_ref(feeds[f"x_{wl.name}"][0], d["weight"], d["bias"],
                                   wl.stride, wl.pad)
        np.testing.assert_array_equal(got[0], want, err_msg=wl.name)


def _small_residual_model(cin: int = 32, batch="N"):
    """stem (cin channels) -> conv -> conv + residual -> pooled dense (float out)."""
    import tvm

    rng = np.random.default_rng(11)
    bb = relax.BlockBuilder()
    n = tvm.tirx.Var(batch, "int64") if isinstance(batch, str) else batch
    x = relax.Var("input", relax.TensorType([n, cin, 6, 6], "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = qgraph.qconv(bb, x, rng, 32, 3)
            y = qgraph.qconv(bb, h, rng, 32, 3)
            y = qgraph.qconv(bb, y, rng, 32, 3, relu=False)
            h = qgraph.qadd(bb, y, h)
            d = qgraph.qconv(bb, h, rng, 48, 1, stride=2, relu=False)
            out = bb.emit_output(relax.op.astype(d, "float32"))
        bb.emit_func_output(out)
    return qgraph._model(bb, "small_residual", [x])


def test_residual_model_matches_the_cpu_int8_result(tmp_path):
    model = _small_residual_model()
    cpu = hwcompile.load(hwcompile.compile(model, "cpu", tmp_path / "cpu", passes=""))
    vta = hwcompile.load(hwcompile.compile(model, "vta", tmp_path / "vta", passes=""))
    decisions = vta.metadata["target_extra"]["partition"]
    assert [d["placement"] for d in decisions] == ["vta"] * 4
    # the residual add is fused into the second conv's program (a residual operand)
    assert any("residual0" in p["buffers"] for p in vta.metadata["target_extra"]["programs"])
    x = np.random.default_rng(5).integers(-128, 128, (3, 32, 6, 6)).astype(np.int8)
    want = cpu(x)
    assert np.abs(want).max() > 0
    np.testing.assert_array_equal(vta(x), want)


def test_narrow_channels_are_padded_or_left_on_the_cpu(tmp_path):
    padded = _small_residual_model(cin=24)  # 24 of 32 padded channels: offloaded, noted
    meta = hwcompile.load(hwcompile.compile(padded, "vta", tmp_path / "p", passes="")).metadata
    first = meta["target_extra"]["partition"][0]
    assert first["placement"] == "vta" and "zero-padded" in first["reason"]
    narrow = _small_residual_model(cin=3)  # 3 of 16: stays on the CPU, with the reason
    cpu = hwcompile.load(hwcompile.compile(narrow, "cpu", tmp_path / "c", passes=""))
    vta = hwcompile.load(hwcompile.compile(narrow, "vta", tmp_path / "v", passes=""))
    first = vta.metadata["target_extra"]["partition"][0]
    assert first["placement"] == "cpu" and "19% useful MACs" in first["reason"]
    x = np.random.default_rng(6).integers(-128, 128, (2, 3, 6, 6)).astype(np.int8)
    np.testing.assert_array_equal(vta(x), cpu(x))


def test_float_model_without_quantization_is_refused(tmp_path):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 16, 4, 4], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w = relax.const(np.ones((16, 16, 3, 3), np.float32))
            out = bb.emit_output(relax.op.nn.conv2d(x, w, padding=1))
        bb.emit_func_output(out)
    model = qgraph._model(bb, "float", [x])
    with pytest.raises(TargetError, match="quantize it first"):
        hwcompile.compile(model, "vta", tmp_path / "f", passes="")


def test_target_specs_and_constraints(tmp_path):
    t = resolve_target("vta")
    assert t.cfg.target == "sim" and t.constraints.channel_multiple == 16
    q = t.constraints.quant_scheme
    assert (q.weight_granularity, q.activation_symmetric, q.power_of_two_scales) == \
        ("per-tensor", True, True)
    assert "relax.nn.conv2d" in t.constraints.offload_ops
    assert resolve_target("vta:ultra96").cfg.clock_mhz == 333.0
    path = tmp_path / "my.json"
    path.write_text(json.dumps(load_config("de10nano").to_dict()))
    assert resolve_target(f"vta:{path},tune").search
    with pytest.raises(TargetError, match="neither a shipped config"):
        resolve_target("vta:nosuchboard")
    with pytest.raises(TargetError, match="unknown option"):
        resolve_target("vta:pynq,fast")


def test_artifact_files_memory_map_and_config_check(tmp_path, monkeypatch):
    model, _ = qgraph.conv_workloads_model([qgraph.ConvWorkload("small", 8, 32, 32, 3, 1, 1)])
    out = hwcompile.compile(model, "vta:pynq", tmp_path / "a", passes="")
    meta = json.loads((out / "metadata.json").read_text())
    extra = meta["target_extra"]
    assert extra["bitstream"] == "1x16_i8w8a32_15_15_18_17" and extra["hw_ver"] == "0.0.2"
    assert json.loads((out / "vta_config.json").read_text())["TARGET"] == "pynq"
    prog = extra["programs"][0]
    insns = decode_program((out / prog["insn"]).read_bytes(), CFG)
    assert len(insns) == prog["instructions"] and insns[-1].opcode == 3  # FINISH
    wgt = prog["buffers"]["weights"]
    assert (out / wgt["file"]).stat().st_size == wgt["nbytes"] == 2 * 2 * 9 * 256
    assert (out / prog["buffers"]["uops"]["file"]).stat().st_size % 4 == 0
    for name in ("input", "output", "weights", "uops"):
        assert name in prog["buffers"]
    assert all(f in meta["files"] for f in (prog["insn"], wgt["file"], "vta_config.json"))
    # loader: a device with another config (bitstream) is refused
    other = load_config("pynq").to_dict() | {"LOG_ACC_BUFF_SIZE": 16}
    dev = tmp_path / "board.json"
    dev.write_text(json.dumps(other))
    monkeypatch.setenv("HWCOMPILE_VTA_CONFIG", str(dev))
    with pytest.raises(ArtifactError, match="compiled for VTA 1x16_i8w8a32_15_15_18_17.*"
                                            "device is 1x16_i8w8a32_15_15_18_16"):
        hwcompile.load(out)
    monkeypatch.setenv("HWCOMPILE_VTA_CONFIG", "pynq")
    hwcompile.load(out)  # the matching board loads


def test_tuning_searches_feasible_plans_and_reuses_the_database(tmp_path):
    w = RNG.integers(-128, 128, (64, 64, 3, 3)).astype(np.int8)
    spec = LayerSpec((64, 14, 14), w, (1, 1), (1, 1, 1, 1),
                     [AluStep("shr", imm=8), AluStep("max", imm=0), AluStep("min", imm=127)])
    pool = candidates(spec, CFG)
    assert pool and all(check_plan(spec, p, CFG) is None for p in pool)
    db = TuningDatabase(tmp_path / "tune.json")
    result = db.best(spec, CFG, search=True, limit=12)
    assert result.tried > 1 and not result.cached
    assert result.cycles <= result.default_cycles
    assert result.cycles == estimate(lower(spec, result.plan, CFG).program.instructions,
                                     CFG).total_cycles
    db.save()
    again = TuningDatabase(tmp_path / "tune.json").best(spec, CFG, search=False)
    assert again.cached and again.plan == result.plan
    # the tuned program still computes the layer
    x = RNG.integers(-128, 128, (64, 14, 14)).astype(np.int8)
    want = np.clip(np_conv(x, w, 1, 1) >> 8, 0, 127).astype(np.int8)
    np.testing.assert_array_equal(_run_spec(spec, result.plan, x), want)


def test_compile_with_tuning_database_records_plans(tmp_path):
    model, _ = qgraph.conv_workloads_model([qgraph.ConvWorkload("t", 8, 32, 32, 3, 1, 1)])
    db = tmp_path / "db.json"
    out = hwcompile.compile(model, f"vta:pynq,tune,db={db}", tmp_path / "a", passes="")
    entries = json.loads(db.read_text())
    assert len(entries) == 1
    prog = json.loads((out / "metadata.json").read_text())["target_extra"]["programs"][0]
    assert prog["tuned"] and prog["plan"] == next(iter(entries.values()))["plan"]


@pytest.mark.slow
def test_digits_quantized_on_vta_is_bit_identical_to_cpu(tmp_path):
    from hwcompile.frontend import import_onnx
    from hwcompile.models.digits import ensure_digits_model, load_split
    from hwcompile.pipeline import PassContext, parse_spec, run_pipeline

    path = ensure_digits_model(tmp_path / "digits.onnx")
    x_train, _, x_test, y_test = load_split()
    target = resolve_target("vta")
    ctx = PassContext(constraints=target.constraints, calibration={"input": x_train[:256]})
    model, _ = run_pipeline(import_onnx(path),
                            parse_spec("fold-constants,fold-batchnorm,dce,quantize,dce"), ctx)
    cpu = hwcompile.load(hwcompile.compile(model, "cpu", tmp_path / "cpu", passes=""))
    vta = hwcompile.load(hwcompile.compile(model, target, tmp_path / "vta", passes=""))
    placements = [d["placement"] for d in vta.metadata["target_extra"]["partition"]]
    assert placements.count("vta") >= 4
    want = cpu(x_test)
    np.testing.assert_array_equal(vta(x_test), want)
    accuracy = float(np.mean(want.argmax(1) == y_test))
    print(f"held-out accuracy on vta: {accuracy:.2%}")
    assert accuracy >= 0.97  # float model: 99.17%; power-of-two int8 measured 98.89%


@pytest.mark.slow
def test_resnet18_shaped_model_matches_cpu_int8(tmp_path):
    model = qgraph.resnet18_like(size=32, batch="N")
    cpu = hwcompile.load(hwcompile.compile(model, "cpu", tmp_path / "cpu", passes=""))
    vta = hwcompile.load(hwcompile.compile(model, "vta:pynq", tmp_path / "vta", passes=""))
    extra = vta.metadata["target_extra"]
    assert sum(d["placement"] == "vta" for d in extra["partition"]) == 19  # all but stem, fc
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(vta(x), cpu(x))
    assert extra["latency_ms_per_sample"] == pytest.approx(extra["cycles_per_sample"] / 1e5)


def test_packed_layouts_roundtrip_through_run_sample():
    # dense as a 1x1 conv: (K=48) -> (O=40), per-channel bias vector and shift
    w = RNG.integers(-128, 128, (40, 48, 1, 1)).astype(np.int8)
    bias = RNG.integers(-5000, 5000, 40).astype(np.int32)
    spec = LayerSpec((48, 1, 1), w, steps=[AluStep("add", vector=0), AluStep("shr", imm=6),
                                           AluStep("max", imm=-128), AluStep("min", imm=127)],
                     vectors=[bias])
    x = RNG.integers(-128, 128, (48, 1, 1)).astype(np.int8)
    got = _run_spec(spec, default_plan(spec, CFG), x)
    acc = w[:, :, 0, 0].astype(np.int64) @ x[:, 0, 0].astype(np.int64) + bias
    np.testing.assert_array_equal(got[:, 0, 0], np.clip(acc >> 6, -128, 127).astype(np.int8))
    assert layout.pack_bias(bias, CFG).shape == (3, 1, 16)
