"""Regular (groups=1) fp32 convs with a bias + SiLU epilogue, as in the YOLO detectors: the
default CPU schedule (targets/cpu/defaults.py) inlines the whole epilogue into the conv's
register-tile write-back, and sigmoid is inline arithmetic (targets/cpu/fast_sigmoid.py),
not an ``expf`` call per lane. Numerics against onnxruntime through the product path, on
small shapes of the kinds the detectors have: 3×3, strided, 1×1, odd channel counts and
the 3-channel stem."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import float_model, ort_run
from onnx import helper, numpy_helper

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.target import resolve_target
from hwcompile.targets.cpu.defaults import schedule_func
from hwcompile.targets.cpu.pipeline import tunable_module

# (input channels, height, width, output channels, kernel, stride): padding kernel // 2
SHAPES = {
    "3x3": (16, 12, 12, 32, 3, 1),
    "3x3_stride2_odd_input": (16, 13, 13, 32, 3, 2),
    "1x1": (24, 10, 10, 48, 1, 1),
    "odd_channels": (5, 9, 11, 18, 3, 1),
    "stem_3_channels": (3, 32, 32, 16, 3, 2),
}


def _conv_silu_model(cin, h, w, cout, k, stride, silu=True):
    rng = np.random.default_rng(cin * 1000 + cout)
    weight = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    bias = (rng.standard_normal(cout) * 0.5).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if silu else "y"],
                              kernel_shape=[k, k], strides=[stride] * 2, pads=[k // 2] * 4)]
    if silu:
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]),
                  helper.make_node("Mul", ["c", "s"], ["y"])]
    out = (h + 2 * (k // 2) - k) // stride + 1, (w + 2 * (k // 2) - k) // stride + 1
    return float_model("conv_silu", nodes, [numpy_helper.from_array(weight, "w"),
                                            numpy_helper.from_array(bias, "b")],
                       {"x": [1, cin, h, w]}, {"y": [1, cout, *out]})


def _compile(tmp_path, model):
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return hwcompile.compile(str(path), "cpu", tmp_path / "art")


@pytest.mark.parametrize("name", list(SHAPES))
def test_conv_silu_matches_onnxruntime(tmp_path, name):
    cin, h, w, *_ = SHAPES[name]
    model = _conv_silu_model(*SHAPES[name])
    x = np.random.default_rng(7).uniform(-2, 2, (1, cin, h, w)).astype(np.float32)
    art = _compile(tmp_path, model)
    got = hwcompile.load(art)(x)
    [want] = ort_run(model, {"x": x})
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()
    assert b"expf" not in (art / "model.so").read_bytes()  # sigmoid inline, not libm per lane


def _scheduled_conv(model):
    target = resolve_target("cpu")
    mod = target.tunable_module(import_onnx(model).bound_module())
    [func] = [f for gv, f in mod.functions_items()
              if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint]
    return func, schedule_func(func, target.default_schedule_lanes)


@pytest.mark.parametrize("name", ["3x3", "1x1", "stem_3_channels"])
def test_silu_is_inlined_into_the_tile_write_back(name):
    """One block writes the output: the register tile's write-back, with bias and SiLU; no
    full-size intermediate for the conv, the bias sum or the sigmoid is left."""
    func, scheduled = _scheduled_conv(_conv_silu_model(*SHAPES[name]))
    assert func.script().count("T.sblock(") >= 5  # pad, conv, add, sigmoid, multiply
    script = scheduled.script()
    blocks = [line.split('"')[1] for line in script.splitlines() if "T.sblock(\"" in line]
    output = func.params[-1].name
    writers = [line for line in script.splitlines() if f"{output}[" in line and " = " in line]
    assert len(writers) == 1 and "T.sigmoid" in writers[0]
    assert not any(name in ("T_add", "compute", "T_multiply") for name in blocks)
    assert "T.unroll" in script and "T.vectorized" in script  # the register tile


def test_sigmoid_is_accurate_over_its_whole_range(tmp_path):
    x = np.concatenate([np.linspace(-100, 100, 4001), [-88.5, -87.4, 0.0, -0.0, 88.8, 1e-8]]
                       ).astype(np.float32).reshape(1, -1)
    model = float_model("sigmoid", [helper.make_node("Sigmoid", ["x"], ["y"])], [],
                        {"x": list(x.shape)}, {"y": list(x.shape)})
    art = _compile(tmp_path, model)
    got = hwcompile.load(art)(x).astype(np.float64)
    want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert np.abs(got - want).max() <= 1.2e-7
    normal = x >= -87.0  # below, exp(x) leaves float32's normal range
    assert (np.abs(got - want) / want)[normal].max() <= 1e-6
    assert b"expf" not in (art / "model.so").read_bytes()


def test_48_channels_are_three_unrolled_registers():
    """48 output channels (no multiple of 2 × 16): a tile of 3 registers per row, each a
    16-lane vector (one 48-lane vector became scalar shuffles: 2 GFLOP/s)."""
    lanes = resolve_target("cpu").default_schedule_lanes
    if lanes != 16:
        pytest.skip("the 3-register tile is for AVX-512's 16 lanes")
    _, scheduled = _scheduled_conv(_conv_silu_model(*SHAPES["1x1"]))
    script = scheduled.script()
    assert "T.vectorized(T.int64(48))" not in script
    assert "T.unroll(T.int64(3))" in script and "T.vectorized(T.int64(16))" in script


def _nearest_loop(lines: list[str], index: int) -> str:
    return next(line for line in reversed(lines[:index]) if line.lstrip().startswith("for "))


@pytest.mark.parametrize("name", ["stem_3_channels", "3x3", "odd_channels"])
def test_the_write_back_is_vectorized(name):
    """The tile's write-back, SiLU included, runs on whole vectors (also with a single
    channel block, whose outer loops the schedule fuses)."""
    func, scheduled = _scheduled_conv(_conv_silu_model(*SHAPES[name]))
    lines = scheduled.script().splitlines()
    output = func.params[-1].name
    [writer] = [i for i, line in enumerate(lines) if f"{output}[" in line and " = " in line]
    assert "T.vectorized" in _nearest_loop(lines, writer)


def _pad_block(scheduled) -> tuple[str, str]:
    """The innermost loop around the padding block and that block's row binding."""
    lines = scheduled.script().splitlines()
    pad = next(i for i, line in enumerate(lines) if 'T.sblock("pad_temp")' in line)
    rows = next(line for line in lines[pad:pad + 6] if "v_i1" in line)
    return _nearest_loop(lines, pad), rows


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def test_a_strided_stem_pads_per_output_row():
    """The stride-2 stem pads its input inside the output-row loop (rows ``2·y + 0..2``),
    not in a separate pass over the whole image; a stride-1 conv keeps the separate pass."""
    loop, rows = _pad_block(_scheduled_conv(_conv_silu_model(*SHAPES["stem_3_channels"]))[1])
    assert "* T.int64(2) + " in rows
    plain_loop, plain_rows = _pad_block(_scheduled_conv(_conv_silu_model(*SHAPES["3x3"]))[1])
    assert "* T.int64(2)" not in plain_rows
    assert _indent(loop) > _indent(plain_loop)  # nested in the conv's row loop


@pytest.mark.parametrize("cin, length, cout, k, stride, pad", [
    (1, 576, 40, 32, 16, 0),   # an STFT basis (silero_vad: 1 → 258 channels, 256 / 128)
    (6, 50, 20, 3, 1, 1),      # a padded conv1d with a ragged channel count
])
def test_conv1d_runs_channels_last(tmp_path, cin, length, cout, k, stride, pad):
    """1-D convs go to NWC/WIO like 2-D ones (output channels the vector axis; in NCW an
    STFT's 4 output columns were the vector axis: silero_vad_16k_sequence's conv 584 →
    232 µs), bias and ReLU fused; numerics against onnxruntime with a batch of 2."""
    rng = np.random.default_rng(cin + cout)
    weight = (rng.standard_normal((cout, cin, k)) / np.sqrt(cin * k)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k],
                              strides=[stride], pads=[pad, pad]),
             helper.make_node("Relu", ["c"], ["y"])]
    out = (length + 2 * pad - k) // stride + 1
    model = float_model("conv1d", nodes, [numpy_helper.from_array(weight, "w"),
                                          numpy_helper.from_array(bias, "b")],
                        {"x": [2, cin, length]}, {"y": [2, cout, out]})
    art = _compile(tmp_path, model)
    loaded = hwcompile.load(art)
    assert loaded.metadata["target_extra"]["lowering"] == {"pipeline": "hwcompile-cpu",
                                                           "layout": "full"}
    x = rng.uniform(-1, 1, (2, cin, length)).astype(np.float32)
    [want] = ort_run(model, {"x": x})
    np.testing.assert_allclose(loaded(x), want, rtol=1e-5, atol=1e-5)
    lowered = tunable_module(import_onnx(tmp_path / "model.onnx").bound_module(),
                             resolve_target("cpu").tvm_target)
    [conv] = [f for gv, f in lowered.functions_items() if "conv1d" in gv.name_hint]
    assert f"T.Buffer((T.int64(2), T.int64({out}), T.int64({cout}))" in conv.script()  # NWC
