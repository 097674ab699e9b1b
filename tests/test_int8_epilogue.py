"""int8 conv epilogues as vector code (targets/cpu/int8_epilogue.py): the 32-bit
requantization gives numpy's int64 integers, the byte-permute lookup numpy's table entries,
and whole quantized models the same outputs as the int64 / gather form they replace."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import float_model
from onnx import helper, numpy_helper
from tvm import te

import hwcompile.targets.cpu.layout as cpu_layout_module
from hwcompile.target import resolve_target
from hwcompile.targets.cpu.int8_epilogue import (
    requantize_expr,
    rescale_expr,
    rescale_fits_int32,
    table_lookup,
    wrapping_sum,
)

HOST = resolve_target("cpu").tvm_target
VBMI = {"kind": "llvm", "mcpu": "icelake-server", "num-cores": 2}  # AVX-512 VNNI and VBMI
AVX2 = {"kind": "llvm", "mcpu": "haswell", "num-cores": 2}


def _host_has(feature: str) -> bool:
    return bool(tvm.target.codegen.target_has_features(feature, HOST))


def _reference(acc: np.ndarray, m: np.ndarray, shift: int, zp: int, low: int, high: int):
    scaled = (acc.astype(np.int64) * m + (1 << (shift - 1))) >> shift
    return np.clip(scaled + zp, low, high).astype(np.int8)


def _accumulators(rng, rows: int, channels: int, shift: int) -> np.ndarray:
    """Half over all of int32 (its extremes included), half where the result is not
    clipped (|acc·m| up to ~2^(shift+7))."""
    acc = rng.integers(-2**31, 2**31, (rows, channels), dtype=np.int64)
    inside = 1 << max(shift - 23, 1)
    acc[: rows // 2] = rng.integers(-inside, inside, (rows // 2, channels))
    acc[-1, :4] = [2**31 - 1, -2**31, 0, -1]
    return acc.astype(np.int32)


@pytest.mark.parametrize("shift", [20, 31, 32, 33, 36, 41, 52, 62])
def test_requantization_equals_the_int64_reference(shift):
    """Every int32 accumulator, multipliers up to 2^30 (and 2^31 − 1), the shifts of the
    quantize pass: 32-bit (shift ≥ 33) and int64 forms both exact, on int32 extremes too."""
    rng = np.random.default_rng(shift)
    rows, channels = 512, 32
    acc = _accumulators(rng, rows, channels, shift)
    m = rng.integers(2**29, 2**30 + 1, channels, dtype=np.int64)
    m[:2] = [2**31 - 1, 1]
    m = m.astype(np.int32)
    zp = int(rng.integers(-20, 20))
    a = te.placeholder((rows, channels), "int32", name="a")
    mult = te.placeholder((channels,), "int32", name="m")
    out = te.compute((rows, channels), lambda i, c: requantize_expr(a[i, c], mult[c], shift, zp,
                                                                    -128, 127), name="q")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, mult, out]))
    _, inner = sch.split(sch.get_loops(sch.get_sblock("q"))[-1], [None, 16])
    sch.vectorize(inner)
    lib = tvm.compile(sch.mod, HOST)
    got = tvm.runtime.tensor(np.zeros((rows, channels), np.int8))
    lib["main"](tvm.runtime.tensor(acc), tvm.runtime.tensor(m), got)
    want = _reference(acc, m, shift, zp, -128, 127)
    np.testing.assert_array_equal(got.numpy(), want)
    if shift >= 30:  # not a degenerate test: many values inside the clip range
        assert np.count_nonzero((want > -128) & (want < 127)) > rows


def _rescaled(q1: np.ndarray, q2: np.ndarray, terms: list, shift: int, zp: int) -> np.ndarray:
    """``rescale_expr`` of two code arrays, vectorized by 16, compiled for this CPU."""
    a, b = (te.placeholder((q1.size,), "int8", name=n) for n in "ab")
    out = te.compute((q1.size,), lambda i: rescale_expr([a[i], b[i]], terms, shift, zp, -128, 127),
                     name="r")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, b, out]))
    _, inner = sch.split(sch.get_loops(sch.get_sblock("r"))[0], [None, 16])
    sch.vectorize(inner)
    got = tvm.runtime.tensor(np.zeros(q1.size, np.int8))
    tvm.compile(sch.mod, HOST)["main"](tvm.runtime.tensor(q1), tvm.runtime.tensor(q2), got)
    return got.numpy()


@pytest.mark.parametrize("shift", [17, 29, 30, 31, 40])
def test_rescaled_sum_equals_the_int64_reference(shift):
    """A residual add's ``Σ (q_i − zp_i)·m_i`` requantized in int32 (the multiplier split in
    16-bit halves): numpy's int64 integers for every pair of int8 codes, with the extreme
    zero points and multipliers and random ones."""
    codes = np.arange(-128, 128)
    q1, q2 = (a.ravel().astype(np.int8) for a in np.meshgrid(codes, codes))
    rng = np.random.default_rng(shift)
    extremes = [(-128, 2**31 - 1), (127, -2**31)]
    for terms in (extremes, [(int(rng.integers(-128, 128)), int(rng.integers(2**29, 2**31)))
                             for _ in range(2)]):
        assert rescale_fits_int32(terms, shift)
        zp = int(rng.integers(-20, 20))
        total = sum((q.astype(np.int64) - z) * m for q, (z, m) in zip((q1, q2), terms))
        want = np.clip(((total + (1 << (shift - 1))) >> shift) + zp, -128, 127).astype(np.int8)
        np.testing.assert_array_equal(_rescaled(q1, q2, terms, shift, zp), want)
        if shift >= 29 and terms is not extremes:  # the pass's shifts: not all clipped
            assert np.count_nonzero((want > -128) & (want < 127)) > 256


def test_rescaled_sum_keeps_int64_where_int32_could_overflow():
    assert not rescale_fits_int32([(0, 2**30)], 16)  # the rounding term has no high half
    assert not rescale_fits_int32([(0, 2**31 - 1)] * 300, 31)  # 300 terms: A overflows
    assert rescale_fits_int32([(0, 2**31 - 1)] * 60, 31)


def test_wrapping_sum_is_the_int32_sum():
    rng = np.random.default_rng(5)
    terms = rng.integers(-2**31, 2**31, (3, 64), dtype=np.int64).astype(np.int32)
    ts = [te.placeholder((64,), "int32", name=f"t{k}") for k in range(3)]
    out = te.compute((64,), lambda i: wrapping_sum([t[i] for t in ts]), name="s")
    lib = tvm.compile(te.create_prim_func([*ts, out]), HOST)
    got = tvm.runtime.tensor(np.zeros(64, np.int32))
    lib(*[tvm.runtime.tensor(t) for t in terms], got)
    np.testing.assert_array_equal(got.numpy(), terms.sum(axis=0, dtype=np.int32))


@pytest.mark.skipif(not _host_has("avx512vbmi"), reason="this CPU has no AVX512-VBMI")
@pytest.mark.parametrize("lanes", [0, 16, 64, 96])
def test_byte_permute_lookup_is_the_table(lanes):
    """The lookup of every code, vectorized by 16, 64, 96 (a 64-lane chunk and a padded 32)
    lanes, and unvectorized (0): the table's entries, through vpermi2b/vpermt2b."""
    table = np.random.default_rng(lanes).integers(-128, 128, 256).astype(np.int8)
    n = 768
    q = te.placeholder((n,), "int8", name="q")
    out = te.compute((n,), lambda i: table_lookup(q[i], table), name="t")
    sch = tvm.s_tir.Schedule(te.create_prim_func([q, out]))
    if lanes:
        _, inner = sch.split(sch.get_loops(sch.get_sblock("t"))[0], [None, lanes])
        sch.vectorize(inner)
    lib = tvm.compile(sch.mod, HOST)
    codes = np.tile(np.arange(-128, 128, dtype=np.int8), 3)
    np.random.default_rng(1).shuffle(codes)
    got = tvm.runtime.tensor(np.zeros(n, np.int8))
    lib["main"](tvm.runtime.tensor(codes), got)
    np.testing.assert_array_equal(got.numpy(), table[codes.astype(np.int32) + 128])
    asm = lib.mod.inspect_source("asm") if hasattr(lib, "mod") else lib.inspect_source("asm")
    assert "vpermt2b" in asm or "vpermi2b" in asm


def silu_convs():
    """A 3→16 stem, 3×3 and 1×1 convs with SiLU (tables), a residual add, a ReLU conv (a
    clip from the zero point) and a float head: requantizations of every form."""
    rng = np.random.default_rng(21)

    def weight(name, shape):
        scale = 1.0 / np.sqrt(np.prod(shape[1:]))
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [weight("w0", (16, 3, 3, 3)), weight("b0", (16,)), weight("w1", (32, 16, 3, 3)),
             weight("b1", (32,)), weight("w2", (32, 32, 1, 1)), weight("w3", (16, 32, 3, 3))]
    nodes = []
    for i, (x, w, b, pads) in enumerate([("x", "w0", "b0", 1), ("y0", "w1", "b1", 1),
                                          ("y1", "w2", None, 0)]):
        nodes += [helper.make_node("Conv", [x, w] + ([b] if b else []), [f"c{i}"], pads=[pads] * 4),
                  helper.make_node("Sigmoid", [f"c{i}"], [f"s{i}"]),
                  helper.make_node("Mul", [f"c{i}", f"s{i}"], [f"y{i}"])]
    nodes += [helper.make_node("Add", ["y2", "y1"], ["r"]),
              helper.make_node("Conv", ["r", "w3"], ["c3"], pads=[1] * 4),
              helper.make_node("Relu", ["c3"], ["y"])]
    return float_model("silu_convs", nodes, inits, {"x": ["N", 3, 16, 16]}, {"y": ["N", 16, 16, 16]})


@pytest.fixture(scope="module")
def quantized():
    from hwcompile.frontend import import_onnx
    from hwcompile.pipeline import PassContext, parse_spec, run_pipeline

    host = resolve_target("cpu")
    calibration = {"x": np.random.default_rng(1).standard_normal((8, 1, 3, 16, 16))
                   .astype(np.float32)}
    ctx = PassContext(constraints=host.constraints, calibration=calibration, target=host)
    return run_pipeline(import_onnx(silu_convs()), parse_spec("fold-constants,quantize"), ctx)[0]


def _build(quantized, target: dict):
    from hwcompile.targets.cpu.pipeline import cpu_pipeline

    spec = resolve_target("cpu:" + str(tvm.target.Target(target)).replace("'", '"'))
    pipeline = cpu_pipeline(spec.tvm_target, spec.default_schedule_lanes)
    return tvm.compile(quantized.bound_module(), spec.tvm_target, relax_pipeline=pipeline)


def _run(executable, x: np.ndarray) -> np.ndarray:
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("target,feature,lookups", [(VBMI, "avx512vbmi", True),
                                                    (AVX2, "avx2", False)])
def test_models_compute_the_same_outputs(quantized, target, feature, lookups, monkeypatch):
    """Bit-identical outputs with and without the rewrite, on VNNI + VBMI (both rewrites)
    and AVX2 (the requantization only; the gather stays). Requantizations fuse into the conv
    kernels; the byte permute is only in the code for a CPU with VBMI (compiling needs no
    such CPU)."""
    vector = _build(quantized, target)
    asm = vector.mod.imports[0].inspect_source("asm")
    kernels = {line.split(":")[0] for line in asm.splitlines()
               if line.startswith("fused_conv2d") and line.endswith("_compute_:")}
    assert sum("requantize" in k for k in kernels) == 3  # the three convs an int8 op reads
    assert any("rescale" in k for k in kernels)  # the residual add, fused into a conv
    assert any("table_lookup" in k for k in kernels) == lookups
    assert ("vpermt2b" in asm or "vpermi2b" in asm) == lookups
    if not _host_has(feature):
        pytest.skip(f"this CPU has no {feature} to run the code")
    monkeypatch.setattr(cpu_layout_module, "int8_epilogues",
                        lambda _target: tvm.transform.Sequential([]))
    reference = _build(quantized, target)  # the int64 requantization and the gather
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32) * 1.5
    got = _run(vector, x)
    np.testing.assert_array_equal(got, _run(reference, x))
    assert np.abs(got).max() > 0
