"""Depthwise convs in NHWC on the CPU target (targets/cpu/depthwise.py): MobileNet/PP-LCNet
blocks (depthwise conv, hard-swish, squeeze-and-excitation) against onnxruntime, for 3×3 and
5×5 kernels, strides 1 and 2, dilation, a channel multiplier and odd channel counts; and that
the backbone stays NHWC: no transpose between the convs, every depthwise kernel scheduled by
depthwise.py, no kernel left with TVM's loops."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import tvm
from conftest import float_model, ort_run
from onnx import helper, numpy_helper
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.target import resolve_target
from hwcompile.targets.cpu.depthwise import ScheduleDepthwise

SIZE = 17  # odd: the register tile's columns do not divide every output width


def _block_model(channels: int = 16, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 multiplier: int = 1, batch: int | str = 1, groups: int | None = None,
                 seed: int = 0) -> onnx.ModelProto:
    """stem conv + hard-swish → depthwise conv + hard-swish → SE (pool, 1×1 conv, ReLU,
    1×1 conv, hard-sigmoid, multiply) → depthwise 3×3 + hard-swish → 1×1 conv. ``groups``
    other than ``channels`` makes the first grouped conv not depthwise."""
    rng = np.random.default_rng(seed)
    inits = []

    def weight(name, shape):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(shape) * 0.4).astype(np.float32), name))
        return name

    groups = groups or channels
    wide, squeezed = channels * multiplier, max(2, channels // 4)
    pad = dilation * (kernel - 1) // 2
    nodes = [
        helper.make_node("Conv", ["x", weight("w0", (channels, 3, 3, 3)), weight("b0", (channels,))],
                         ["c0"], pads=[1] * 4),
        helper.make_node("HardSwish", ["c0"], ["a0"]),
        helper.make_node("Conv", ["a0", weight("w1", (wide, channels // groups, kernel, kernel)),
                                  weight("b1", (wide,))], ["c1"], pads=[pad] * 4,
                         strides=[stride] * 2, dilations=[dilation] * 2, group=groups),
        helper.make_node("HardSwish", ["c1"], ["a1"]),
        helper.make_node("GlobalAveragePool", ["a1"], ["pooled"]),
        helper.make_node("Conv", ["pooled", weight("ws1", (squeezed, wide, 1, 1)),
                                  weight("bs1", (squeezed,))], ["s1"]),
        helper.make_node("Relu", ["s1"], ["r1"]),
        helper.make_node("Conv", ["r1", weight("ws2", (wide, squeezed, 1, 1)),
                                  weight("bs2", (wide,))], ["s2"]),
        helper.make_node("HardSigmoid", ["s2"], ["gate"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["a1", "gate"], ["excited"]),
        helper.make_node("Conv", ["excited", weight("w2", (wide, 1, 3, 3)), weight("b2", (wide,))],
                         ["c2"], pads=[1] * 4, group=wide),
        helper.make_node("HardSwish", ["c2"], ["a2"]),
        helper.make_node("Conv", ["a2", weight("w3", (8, wide, 1, 1)), weight("b3", (8,))], ["y"]),
    ]
    out = (SIZE + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    return float_model("depthwise_block", nodes, inits, {"x": [batch, 3, SIZE, SIZE]},
                       {"y": [batch, 8, out, out]})


def _compile(tmp_path, model: onnx.ModelProto):
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art")
    lowering = json.loads((art / "metadata.json").read_text())["target_extra"]["lowering"]
    return hwcompile.load(art), lowering


def _kernels(model: onnx.ModelProto) -> tuple[tvm.IRModule, list[tvm.relax.VarBinding]]:
    return _kernels_of(import_onnx(model).bound_module())


def _kernels_of(mod: tvm.IRModule) -> tuple[tvm.IRModule, list[tvm.relax.VarBinding]]:
    """The CPU target's module after layout, legalization and fusion, and its bindings
    that call a kernel."""
    mod = resolve_target("cpu").tunable_module(mod)
    bindings = [b for block in mod["main"].body.blocks for b in block.bindings
                if isinstance(b.value, tvm.relax.Call) and isinstance(b.value.op, tvm.ir.Op)
                and b.value.op.name == "relax.call_tir"]
    return mod, bindings


def _callee(binding: tvm.relax.VarBinding) -> tvm.ir.GlobalVar:
    return binding.value.args[0]


def _assert_nhwc_between_convs(model: onnx.ModelProto, depthwise_convs: int) -> None:
    """Transposes only where the model's NCHW input enters and its output leaves; every
    depthwise conv a kernel of depthwise.py's compute, scheduled by depthwise.py."""
    mod, bindings = _kernels(model)
    main = mod["main"]
    for b in bindings:
        if "transpose" in _callee(b).name_hint:
            reads_input = any(arg.same_as(p) for arg in b.value.args[1].fields
                              for p in main.params)
            assert reads_input or b.var.same_as(main.body.body), \
                f"a transpose between the convs: {_callee(b).name_hint}"
    depthwise = [_callee(b) for b in bindings if "depthwise" in _callee(b).name_hint]
    assert len(depthwise) == depthwise_convs
    scheduled = ScheduleDepthwise(resolve_target("cpu").default_schedule_lanes)(mod)
    for gvar in depthwise:
        assert scheduled[gvar.name_hint].attrs.get("tirx.is_scheduled") == 1


CASES = {
    "3x3": {},
    "5x5": {"kernel": 5},
    "3x3_stride2": {"stride": 2},
    "5x5_stride2": {"kernel": 5, "stride": 2},
    "dilation2": {"dilation": 2},
    "multiplier2": {"multiplier": 2},
    "odd_channels": {"channels": 13, "kernel": 5},
}


@pytest.mark.parametrize("case", list(CASES))
def test_depthwise_block_matches_onnxruntime_in_nhwc(tmp_path, case):
    model = _block_model(**CASES[case])
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    compiled, lowering = _compile(tmp_path, model)
    got, want = compiled(x), ort_run(model, {"x": x})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # The whole graph converted, and no kernel (the SE multiply's either) left with TVM's loops.
    assert lowering == {"pipeline": "hwcompile-cpu", "layout": "full"}
    _assert_nhwc_between_convs(model, depthwise_convs=2)


@pytest.mark.parametrize("kernel, unrolled", [(3, ["ry", "rx", "x_1"]), (5, ["ry", "x_1"])])
def test_a_large_window_keeps_its_columns_a_loop(kernel, unrolled):
    """A 3×3 window is unrolled whole into the register tile; a 5×5 one over 17 columns
    (425 bounds-checked multiply-adds, ~1 s of lowering and LLVM each) keeps its columns
    a loop. The 5×5 cases above check the numbers of that loop against onnxruntime."""
    from tvm.s_tir import Schedule

    mod, bindings = _kernels(_block_model(kernel=kernel))
    first = next(_callee(b) for b in bindings if "depthwise" in _callee(b).name_hint)
    func = ScheduleDepthwise(resolve_target("cpu").default_schedule_lanes)(mod)[first.name_hint]
    sch = Schedule(tvm.IRModule({"main": func}))
    loops = {sch.get(loop).loop_var.name: sch.get(loop).kind
             for loop in sch.get_loops(sch.get_sblock("depthwise_conv2d_nhwc_update"))}
    # the window's rows and columns, the tile's columns (x_1)
    assert [name for name in ("ry", "rx", "x_1")
            if loops[name] == tvm.tirx.ForKind.UNROLLED] == unrolled
    assert loops["c_1"] == tvm.tirx.ForKind.VECTORIZED


def test_symbolic_batch(tmp_path):
    model = _block_model(kernel=5, stride=2, batch="N")
    x = np.random.default_rng(2).uniform(-1, 1, (3, 3, SIZE, SIZE)).astype(np.float32)
    compiled, lowering = _compile(tmp_path, model)
    got, want = compiled(x), ort_run(model, {"x": x})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert lowering == {"pipeline": "hwcompile-cpu", "layout": "full"}
    _assert_nhwc_between_convs(model, depthwise_convs=2)


def test_grouped_conv_that_is_not_depthwise_stays_nchw(tmp_path):
    """Two input channels per group: TVM's own grouped conv, in NCHW; still correct."""
    model = _block_model(channels=16, groups=8)
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    compiled, _ = _compile(tmp_path, model)
    got, want = compiled(x), ort_run(model, {"x": x})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    _, bindings = _kernels(model)
    assert sum("depthwise" in _callee(b).name_hint for b in bindings) == 1  # the second conv


def _run(executable, x: np.ndarray) -> np.ndarray:
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_int8_depthwise_reads_its_zero_point_pad_and_equals_tvms_own_lowering():
    """The quantized graph pads each depthwise conv's input with its zero point: read inside
    the kernel (no pad kernel), the integer sums equal TVM's stock NCHW grouped conv's."""
    rng = np.random.default_rng(4)
    calibration = {"x": rng.uniform(-1, 1, (8, 1, 3, SIZE, SIZE)).astype(np.float32)}
    target = resolve_target("cpu")
    quantized, _ = run_pipeline(import_onnx(_block_model(kernel=5, stride=2)),
                                parse_spec("fold-constants,fold-batchnorm,quantize"),
                                PassContext(constraints=target.constraints, target=target,
                                            calibration=calibration))
    mod = quantized.bound_module()
    _, bindings = _kernels_of(mod)
    names = [_callee(b).name_hint for b in bindings]
    assert sum("depthwise" in n for n in names) == 2
    quantize_input, *rest = names  # it also pads the 3-channel stem's input to 4 channels
    assert quantize_input.startswith("fused_quantize")
    assert not any(n.startswith("pad") or "_pad" in n for n in rest)
    tvm_target = target.tvm_target
    ours = tvm.compile(mod, tvm_target, relax_pipeline=target.relax_pipeline())
    stock = tvm.compile(mod, tvm_target,
                        relax_pipeline=cpu_generic.get_default_pipeline(tvm_target))
    x = rng.uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    got, want = _run(ours, x), _run(stock, x)
    # one quantization step anywhere would be ~1e-2 of the output's range
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def _functions_asm(asm: str, name_part: str) -> str:
    """The assembly of the functions whose symbol contains ``name_part``."""
    picked, inside = [], False
    for line in asm.splitlines():
        if line.endswith(":") and not line.startswith((".", "\t", " ")):
            inside = name_part in line
        if inside:
            picked.append(line)
    return "\n".join(picked)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("mcpu,feature", [("skylake-avx512", "avx512bw"), ("haswell", "avx2")])
def test_int8_depthwise_multiplies_with_vpmaddwd(mcpu, feature, kernel):
    """int8 depthwise kernels read their input as unsigned codes (depthwise_int8.py), so
    LLVM multiplies with vpmaddwd, not vpmulld (on AVX-512; with AVX2's 8 lanes the tile's
    border branches still hide the zero extension from some products), and the sums stay
    those of TVM's stock lowering, on each instruction set the host can run."""
    rng = np.random.default_rng(5)
    calibration = {"x": rng.uniform(-1, 1, (8, 1, 3, SIZE, SIZE)).astype(np.float32)}
    target = resolve_target(f'cpu:{{"kind": "llvm", "mcpu": "{mcpu}", "num-cores": 2}}')
    quantized, _ = run_pipeline(import_onnx(_block_model(kernel=kernel)),
                                parse_spec("fold-constants,fold-batchnorm,quantize"),
                                PassContext(constraints=target.constraints, target=target,
                                            calibration=calibration))
    mod = quantized.bound_module()
    ours = tvm.compile(mod, target.tvm_target, relax_pipeline=target.relax_pipeline())
    # The instruction count stands for the products where the window is unrolled whole
    # (3×3: 2 vpmulld, 310 vpmaddwd); a 5×5 window over this many columns keeps its
    # columns a loop (depthwise.py), whose code appears once (15 and 255).
    if feature == "avx512bw" and kernel == 3:  # 5×5 before the unsigned codes: 543 and 40
        depthwise = _functions_asm(ours.mod.imports[0].inspect_source("asm"), "depthwise")
        assert depthwise.count("vpmulld") * 20 < depthwise.count("vpmaddwd")
    if not tvm.target.codegen.target_has_features(feature, resolve_target("cpu").tvm_target):
        pytest.skip(f"this CPU has no {feature} to run the code")
    stock = tvm.compile(mod, target.tvm_target,
                        relax_pipeline=cpu_generic.get_default_pipeline(target.tvm_target))
    x = rng.uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    got, want = _run(ours, x), _run(stock, x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_paddle_style_constants_keep_the_layout(tmp_path):
    """paddle2onnx's LCNetV3 blocks: a learnable affine written ``scale · x + bias`` with
    scalars of shape (1,), the scale first, and hard-swish as ``x · clip(x + 3, 0, 6) / 6``
    with 3 and 6 of shape (1,). None of them may hold the layout back (each had sat
    between two transposes)."""
    rng = np.random.default_rng(5)

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value, np.float32).reshape(-1), name)

    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), n)
             for n, s in (("w0", (16, 3, 3, 3)), ("wd", (16, 1, 3, 3)), ("w1", (8, 16, 1, 1)))]
    inits += [const("scale", 1.3), const("shift", -0.2), const("three", 3.0),
              const("six", 6.0), numpy_helper.from_array(np.float32(0.0), "zero"),
              numpy_helper.from_array(np.float32(6.0), "six_scalar")]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1] * 4),
        helper.make_node("Conv", ["c0", "wd"], ["cd"], pads=[1] * 4, group=16),
        helper.make_node("Mul", ["scale", "cd"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["affine"]),
        helper.make_node("Add", ["affine", "three"], ["plus3"]),
        helper.make_node("Clip", ["plus3", "zero", "six_scalar"], ["relu6"]),
        helper.make_node("Mul", ["affine", "relu6"], ["prod"]),
        helper.make_node("Div", ["prod", "six"], ["act"]),
        helper.make_node("Conv", ["act", "w1"], ["y"]),
    ]
    model = float_model("paddle_affine", nodes, inits, {"x": [1, 3, SIZE, SIZE]},
                        {"y": [1, 8, SIZE, SIZE]})
    x = rng.uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    compiled, lowering = _compile(tmp_path, model)
    got, want = compiled(x), ort_run(model, {"x": x})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert lowering == {"pipeline": "hwcompile-cpu", "layout": "full"}
    _assert_nhwc_between_convs(model, depthwise_convs=1)


def test_only_repeating_broadcasts_are_kept_out_of_a_conv_kernel():
    """A lower-rank operand whose extra leading axes have extent 1 is no repeat (an SVTR
    neck's (W, C) + (1, W, C)): separating it from its conv made ppocrv5_rec 60× slower."""
    from tvm import relax, tirx

    from hwcompile.targets.cpu.broadcast_epilogue import _expanded

    def ty(*dims):
        return relax.TensorType([tirx.Var("n", "int64") if d == "N" else d for d in dims],
                                "float32")

    assert not _expanded(ty(40, 64), ty(1, 40, 64))
    assert not _expanded(ty(1, 40, 64), ty(1, 40, 64))
    assert _expanded(ty(64), ty(1, 8, 40, 64))
    assert _expanded(ty(1, 1, 1, 64), ty(1, 8, 40, 64))
    assert _expanded(ty(1, 1, 1, 64), ty("N", 1, 1, 64))
