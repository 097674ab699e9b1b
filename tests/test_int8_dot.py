"""int8 convolutions on the CPU's dot-product instructions (VNNI vpdpbusd with uint8
activations, vpmaddwd on AVX-512BW and AVX2; packed weights): the same integers as the plain
int8 kernels, which test_quantize.py checks against numpy. Each instruction set is compiled
for a CPU model (LLVM ``mcpu``) that this host can run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from conftest import float_model
from onnx import helper, numpy_helper
from tvm import relax

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.target import resolve_target
from hwcompile.targets.cpu.defaults import heuristic_schedule
from hwcompile.targets.cpu.int8_dot import MADD_256, MADD_512, VNNI, int8_dot_product
from hwcompile.targets.cpu.layout import cpu_layout
from hwcompile.targets.cpu.pipeline import cpu_pipeline, tunable_module


def cpu(mcpu: str) -> str:
    return f'cpu:{{"kind": "llvm", "mcpu": "{mcpu}", "num-cores": 2}}'


PLAIN = cpu("sandybridge")  # AVX, no AVX2: no integer dot product, the plain int8 loops
DOT_TARGETS = {"vpdpbusd": (cpu("icelake-server"), "avx512vnni"),
               "vpmaddwd-512": (cpu("skylake-avx512"), "avx512bw"),
               "vpmaddwd-256": (cpu("haswell"), "avx2")}


def _host_has(feature: str) -> bool:
    return bool(tvm.target.codegen.target_has_features(feature, resolve_target("cpu").tvm_target))


def dot_cnn() -> onnx.ModelProto:
    """Convs whose channels fit the 16×4 dot product: 3×3 pad 1, 3×3 stride 2, 1×1 without
    padding, a residual add; before them a 3→16 stem, whose input channels are padded to
    whole dot products."""
    rng = np.random.default_rng(11)

    def weight(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.2, name)

    inits = [weight("w0", (16, 3, 3, 3)), weight("w1", (32, 16, 3, 3)), weight("b1", (32,)),
             weight("w2", (32, 32, 3, 3)), weight("w3", (32, 32, 1, 1)), weight("w4", (16, 32, 3, 3))]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"]),
             helper.make_node("Add", ["c3", "r2"], ["s"]),
             helper.make_node("Relu", ["s"], ["r3"]),
             helper.make_node("Conv", ["r3", "w4"], ["y"], pads=[1, 1, 1, 1])]
    return float_model("dot_cnn", nodes, inits, {"x": ["N", 3, 12, 12]}, {"y": ["N", 16, 6, 6]})


def narrow_conv() -> onnx.ModelProto:
    """A conv with 8 output channels (padded to a whole dot product) on a symmetric input
    (zero point 0: the conv keeps its own zero padding)."""
    w = numpy_helper.from_array(np.random.default_rng(12).standard_normal((8, 16, 3, 3))
                                .astype(np.float32) * 0.2, "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    return float_model("narrow_conv", nodes, [w], {"x": ["N", 16, 12, 12]}, {"y": ["N", 8, 12, 12]})


def conv_24() -> onnx.ModelProto:
    """24 output channels: three registers of VNNI's 8-lane form per row of outputs."""
    w = numpy_helper.from_array(np.random.default_rng(13).standard_normal((24, 16, 3, 3))
                                .astype(np.float32) * 0.2, "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return float_model("conv_24", nodes, [w], {"x": ["N", 16, 12, 12]}, {"y": ["N", 24, 12, 12]})


def _quantized(proto: onnx.ModelProto, channels: int, spec: str = "fold-constants,quantize"):
    """(the VNNI target, ``proto`` quantized for it on random calibration data)."""
    target = resolve_target(DOT_TARGETS["vpdpbusd"][0])
    calibration = {"x": np.random.default_rng(3).standard_normal((8, 1, channels, 12, 12))
                   .astype(np.float32)}
    ctx = PassContext(constraints=target.constraints, calibration=calibration, target=target)
    return target, run_pipeline(import_onnx(proto), parse_spec(spec), ctx)[0]


def _laid_out_conv_operands(proto: onnx.ModelProto, channels: int,
                            spec: str = "fold-constants,quantize") -> list[tuple[str, str, list[int]]]:
    """(kind, activation dtype, HWIO weight shape) of each conv after the CPU layout, in
    order: ``relax.nn.conv2d`` or a conv kernel padding with the zero point's code."""
    target, quantized = _quantized(proto, channels, spec)
    with target.tvm_target:
        laid_out = cpu_layout(target.tvm_target)(quantized.bound_module())
    convs = []

    def visit(e):
        name = getattr(e.op, "name", "") if isinstance(e, relax.Call) else ""
        if name == "relax.nn.conv2d":
            convs.append(("conv2d", e.args[0], e.args[1]))
        elif name == "relax.call_tir" and e.args[0].name_hint.startswith("conv2d"):
            convs.append(("coded pad", *e.args[1].fields))

    relax.analysis.post_order_visit(laid_out["main"], visit)
    return [(kind, str(x.ty.dtype), [int(d) for d in w.ty.shape]) for kind, x, w in convs]


def test_narrow_self_padded_conv_takes_the_instruction_operands():
    """Channel padding runs before the integer-graph rewrite, and a conv that pads its input
    itself gets uint8 operands too (both were plain int8 loops: 12× slower); its 8 output
    channels fill VNNI's half-width form, so they are not padded to 16."""
    convs = _laid_out_conv_operands(narrow_conv(), 16, "fold-constants,quantize(symmetric=true)")
    assert [(dtype, shape[-1]) for _, dtype, shape in convs] == [("uint8", 8)]


def test_stem_input_channels_padded_to_whole_dot_products():
    """The 3-channel stem gets a zero fourth channel (and zero weights for it): every conv
    then has uint8 operands and input channels in whole groups of 4 (HWIO's axis 2)."""
    assert [(kind, dtype, shape[2]) for kind, dtype, shape in _laid_out_conv_operands(dot_cnn(), 3)] == [
        ("coded pad", "uint8", 4), ("conv2d", "uint8", 16), ("conv2d", "uint8", 32),
        ("conv2d", "uint8", 32), ("conv2d", "uint8", 32)]


def test_zero_point_padding_inside_the_conv_kernel():
    """A conv whose input zero point (uint8 code 123 here) is not 0 pads with that code in its
    own kernel: no pad kernel, and only a per-channel constant after it (no int32 image of
    border corrections read per output). The stem reads the model's input, whose zero point
    is not -128; after ReLUs (zero point -128, code 0) the convs keep their own zero padding."""
    target, quantized = _quantized(narrow_conv(), 16)
    with target.tvm_target:
        laid_out = cpu_layout(target.tvm_target)(quantized.bound_module())
    calls = []
    relax.analysis.post_order_visit(laid_out["main"], lambda e: calls.append(e) if isinstance(
        e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None)
    names = [c.op.name for c in calls]
    assert "relax.nn.pad" not in names and "relax.nn.conv2d" not in names
    constants = [a for c in calls for a in c.args if isinstance(a, tvm.ir.Constant)
                 and str(a.ty.dtype) == "int32"]
    assert constants and all(int(np.prod([int(d) for d in a.ty.shape])) == 8 for a in constants)


def test_narrow_channels_tile_several_registers_per_row():
    """24 output channels (3 registers of 8 lanes): each row of the register tile sums into
    all three (one instruction each per activation loaded), as fp32 tiles 48 channels, and
    the tile has as many accumulators as fp32's; it had one register per row (a third of
    the sums per activation) and at most 12 accumulators."""
    target, quantized = _quantized(conv_24(), 16)
    mod = tunable_module(quantized.bound_module(), target.tvm_target)
    (conv,) = [f for g, f in mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and g.name_hint.startswith("fused_conv2d")]
    sch = heuristic_schedule(tvm.IRModule({"main": conv}), target.default_schedule_lanes,
                             int8_dot_product(target.tvm_target))
    unrolled = [int(sch.get(loop).extent) for loop in sch.get_loops(sch.get_sblock("conv2d_nhwc_update_o"))
                if sch.get(loop).kind == tvm.tirx.ForKind.UNROLLED]
    assert 3 in unrolled and int(np.prod(unrolled)) == 18  # 3 registers × 6 of the 12 columns


def test_eight_channel_conv_runs_on_half_width_vnni():
    """8 output channels: vpdpbusd on 256-bit registers, no padding to 16 channels."""
    target, quantized = _quantized(narrow_conv(), 16)
    pipeline = cpu_pipeline(target.tvm_target, target.default_schedule_lanes)
    executable = tvm.compile(quantized.bound_module(), target.tvm_target, relax_pipeline=pipeline)
    asm = executable.mod.imports[0].inspect_source("asm")
    assert "vpdpbusd\t%ymm" in asm and "vpdpbusd\t%zmm" not in asm


@pytest.fixture(scope="module")
def calibration():
    return {"x": np.random.default_rng(1).standard_normal((32, 3, 12, 12)).astype(np.float32)}


_SAME_INTEGERS_PASSES = "fold-constants,quantize(method=minmax)"


def _same_integers_case(model) -> tuple[onnx.ModelProto, dict, np.ndarray]:
    """(model, calibration data, input) of the same-integers comparison."""
    channels = 3 if model is dot_cnn else 16
    calibration = {"x": np.random.default_rng(1).standard_normal((32, channels, 12, 12))
                   .astype(np.float32)}
    x = np.random.default_rng(2).standard_normal((3, channels, 12, 12)).astype(np.float32) * 1.5
    return model(), calibration, x


@pytest.fixture(scope="module")
def plain_outputs(tmp_path_factory) -> dict:
    """The plain int8 kernels' outputs per model, compiled once for all instruction sets."""
    outputs = {}
    for model in (dot_cnn, narrow_conv, conv_24):
        proto, calibration, x = _same_integers_case(model)
        art = hwcompile.compile(proto, PLAIN, tmp_path_factory.mktemp("plain") / model.__name__,
                                passes=_SAME_INTEGERS_PASSES, calibration=calibration)
        outputs[model] = hwcompile.load(art)(x)
    return outputs


@pytest.mark.parametrize("model", [dot_cnn, narrow_conv, conv_24])
@pytest.mark.parametrize("name", DOT_TARGETS)
def test_dot_product_kernels_compute_the_same_integers(name, model, plain_outputs, tmp_path):
    spec, feature = DOT_TARGETS[name]
    if not _host_has(feature):
        pytest.skip(f"this CPU has no {feature} to run {name} code")
    proto, calibration, x = _same_integers_case(model)
    dot = hwcompile.load(hwcompile.compile(proto, spec, tmp_path / "dot",
                                           passes=_SAME_INTEGERS_PASSES, calibration=calibration))
    got, want = dot(x), plain_outputs[model]
    np.testing.assert_array_equal(got, want)  # bit-identical int8 results, dequantized alike
    assert np.abs(got).max() > 0  # not a degenerate all-zero output


def _assembly(target_spec: str, calibration) -> str:
    target = resolve_target(target_spec)
    ctx = PassContext(constraints=target.constraints, calibration=calibration, target=target)
    quantized, _ = run_pipeline(import_onnx(dot_cnn()), parse_spec("fold-constants,quantize"), ctx)
    pipeline = cpu_pipeline(target.tvm_target, target.default_schedule_lanes)
    executable = tvm.compile(quantized.bound_module(), target.tvm_target, relax_pipeline=pipeline)
    return executable.mod.imports[0].inspect_source("asm")


def _functions(asm: str) -> dict[str, str]:
    """The assembly of each function, by name."""
    bodies: dict[str, list[str]] = {}
    lines = bodies.setdefault("", [])
    for line in asm.splitlines():
        if line.endswith(":") and not line.startswith((".", "\t")):
            lines = bodies.setdefault(line[:-1], [])
        lines.append(line)
    return {name: "\n".join(body) for name, body in bodies.items()}


def _madd_only_in_rescales(asm: str) -> bool:
    """No conv product on vpmaddwd: LLVM may still pick it (any SSE2 CPU has it) for a
    residual add's int8 × 16-bit sums (``int8_epilogue.rescale_expr``)."""
    return all("vpmaddwd" not in body or "rescale" in name for name, body in _functions(asm).items())


def test_each_instruction_only_where_the_cpu_has_it(calibration):
    """Compiling needs no such CPU: the instruction is in the code for the CPU model that
    has it, and in no other."""
    asm = {name: _assembly(spec, calibration) for name, (spec, _) in DOT_TARGETS.items()}
    vnni = _functions(asm["vpdpbusd"])
    convs = {name: body for name, body in vnni.items() if name.startswith("fused_conv2d")}
    assert convs and all("vpdpbusd" in body for body in convs.values())
    assert _madd_only_in_rescales(asm["vpdpbusd"])
    for name in ("vpmaddwd-512", "vpmaddwd-256"):
        assert "vpmaddwd" in asm[name] and "vpdpbusd" not in asm[name]
    assert "zmm" in asm["vpmaddwd-512"] and "zmm" not in asm["vpmaddwd-256"]
    plain = _assembly(PLAIN, calibration)
    assert "vpdpbusd" not in plain and _madd_only_in_rescales(plain)


def test_instruction_choice():
    chosen = {spec: int8_dot_product(resolve_target(spec).tvm_target)
              for spec in (cpu("icelake-server"), cpu("skylake-avx512"), cpu("haswell"), PLAIN,
                           "cpu:aarch64")}
    assert list(chosen.values()) == [VNNI, MADD_512, MADD_256, None, None]
