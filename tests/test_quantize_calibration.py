"""Calibration and the quantization report inside compiled probes: the in-graph reductions
against numpy on the same tensors, the observed tensors against what the rewrite reads, the
report's errors against numpy, progress lines."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import float_model
from onnx import helper, numpy_helper
from tvm import relax

from hwcompile.calibration_data import load_calibration
from hwcompile.frontend import import_onnx
from hwcompile.passes.quantize import accuracy, calibration, probe, scheme
from hwcompile.passes.quantize.calibration import BINS, _Accumulator, collect, observed_keys
from hwcompile.passes.quantize.probe import ProbeModule, Runner, compile_for_host, exposed
from hwcompile.passes.quantize.rewrite import IntegerEmitter, plan
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.target import resolve_target


def residual_model():
    """Conv+bias → ReLU → Conv+bias → residual Add → ReLU → global average pool → Gemm."""
    rng = np.random.default_rng(11)
    arr = lambda *shape, s=0.3: (rng.standard_normal(shape) * s).astype(np.float32)
    inits = [numpy_helper.from_array(arr(8, 3, 3, 3), "w1"), numpy_helper.from_array(arr(8), "b1"),
             numpy_helper.from_array(arr(8, 8, 3, 3), "w2"), numpy_helper.from_array(arr(8), "b2"),
             numpy_helper.from_array(arr(5, 8), "fw"), numpy_helper.from_array(arr(5), "fb")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["s"]),
             helper.make_node("Relu", ["s"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    proto = float_model("residual", nodes, inits, {"x": ["N", 3, 8, 8]}, {"y": ["N", 5]})
    model, _ = run_pipeline(import_onnx(proto), parse_spec("fold-constants,fold-batchnorm"),
                            PassContext())
    return model


@pytest.fixture(scope="module")
def model():
    return residual_model()


@pytest.fixture(scope="module")
def data(model):
    x = np.random.default_rng(2).standard_normal((12, 3, 8, 8)).astype(np.float32)
    x[3, 1, 2, 2] = 9.0  # an outlier: the histograms are not symmetric around the bulk
    return load_calibration([{"x": x[i:i + 4]} for i in range(0, 12, 4)], model.inputs)


def test_kernels_count_exactly_what_numpy_counts(model):
    """Values on bin edges (a power-of-two bound makes every edge a float32) and at ±bound:
    the histogram kernel's counts are np.histogram's; min/max exact, sums to rounding."""
    edges = np.linspace(-4.0, 4.0, BINS + 1)
    rng = np.random.default_rng(5)
    x = np.concatenate([edges, rng.uniform(-4, 4, 3 * 64 * 8 * 8 - edges.size)])
    x = rng.permutation(x).astype(np.float32).reshape(3, 64, 8, 8)[None]
    x[0, 0, 0, 0, 0], x[0, 1, 2, 3, 4] = -4.0, 4.0
    probe = ProbeModule(model)

    def outputs(kernels, _tensors, extra):
        return [kernels.channel_stats(extra[0]), kernels.histogram(extra[0], extra[1])]

    probe.add("kernels", outputs, [relax.Var("t", relax.TensorType(x.shape[1:], "float32")),
                                   relax.Var("edges", relax.TensorType((BINS + 1,), "float64"))])
    reference = _Accumulator()
    reference.first(x[0])
    got = probe("kernels", {"x": np.zeros((1, 3, 8, 8), np.float32)}, x[0], reference.edges())
    channels, counts = got[0], got[1].sum(0)
    np.testing.assert_array_equal(channels[0], reference.channels[0])
    np.testing.assert_array_equal(channels[1], reference.channels[1])
    np.testing.assert_allclose(channels[2:4], reference.channels[2:], rtol=1e-12, atol=1e-9)
    assert (channels[4] == 8 * 8 * 3).all()  # elements per channel (axis 1)
    reference.second(x[0])
    np.testing.assert_array_equal(counts, reference.hist)
    assert counts.sum() == x.size


def test_collect_equals_numpy_on_the_same_tensors(model, data):
    """collect's in-graph statistics of every observed tensor against the numpy accumulator
    fed with the whole tensors (returned by a probe of the same CPU pipeline)."""
    keys = observed_keys(model, plan(model))
    stats, cached = collect(model, keys, data, histograms=True)
    assert not cached and sorted(stats) == sorted(keys)
    positions = [int(k[1:]) for k in keys if k.startswith("b")]
    runner = Runner(exposed(model, positions))
    reference = {k: _Accumulator() for k in keys}
    outputs = [(feed["x"], runner(feed)) for feed in data]
    for x, tensors in outputs:
        reference["in:x"].first(x)
        for p, t in zip(positions, tensors):
            reference[f"b{p}"].first(t)
    for x, tensors in outputs:
        reference["in:x"].second(x)
        for p, t in zip(positions, tensors):
            reference[f"b{p}"].second(t)
    for key in keys:
        want, got = reference[key].stats(), stats[key]
        assert (got.min, got.max) == (want.min, want.max), key
        np.testing.assert_array_equal(got.hist, want.hist, err_msg=key)
        np.testing.assert_array_equal(got.channel_min, want.channel_min, err_msg=key)
        np.testing.assert_array_equal(got.channel_max, want.channel_max, err_msg=key)
        np.testing.assert_allclose([got.mean, got.var], [want.mean, want.var], rtol=1e-10,
                                   atol=1e-12, err_msg=key)
        np.testing.assert_allclose(got.channel_mean, want.channel_mean, rtol=1e-10, atol=1e-12)
        for method in calibration.METHODS:
            np.testing.assert_allclose(calibration.tensor_range(got, method),
                                       calibration.tensor_range(want, method), rtol=1e-9)


def test_minmax_only_collects_no_histograms(model, data):
    keys = observed_keys(model, plan(model))
    stats, _ = collect(model, keys, data, histograms=False)
    assert all(st.hist.size == 0 for st in stats.values())
    assert calibration.tensor_range(stats[keys[0]], "minmax")[1] > 0


def _emitter(model, stats, kept=frozenset(), record=None):
    scheme_ = scheme.resolve_scheme(resolve_target("cpu").constraints.quant_scheme,
                                    None, None, None)

    def ranges(key):
        if record is not None:
            record.add(key)
        return calibration.tensor_range(stats[key], "minmax")

    return IntegerEmitter(model, plan(model), scheme_, ranges, set(kept), {}, "minmax")


def test_observed_tensors_are_what_the_rewrite_reads(model, data):
    """Every range the rewrite asks for, with any one layer kept float, is observed; the
    bias adds inside layers (read by nobody) are not."""
    the_plan = plan(model)
    keys = observed_keys(model, the_plan)
    stats, _ = collect(model, keys, data, histograms=False)
    for kept in [set()] + [{n} for n in the_plan.layer_names()]:
        read: set[str] = set()
        _emitter(model, stats, kept, read).run()
        assert read <= set(keys), (kept, read - set(keys))
    inner = {f"b{p}" for p in the_plan.owner}
    assert inner and not inner & set(keys)
    assert len(keys) < len(calibration.float_positions(model)) + 1


@pytest.mark.parametrize("block_bindings", [None, 6])
def test_layer_errors_equal_numpy_on_the_full_tensors(model, data, block_bindings, monkeypatch):
    """Also with the report function cut into dataflow blocks of 6 bindings (real models'
    reports are cut into blocks of ``REPORT_BLOCK_BINDINGS``)."""
    blocks = []

    def compile_recording_blocks(mod, *args):
        blocks.append(sum(isinstance(b, relax.DataflowBlock) for b in mod["main"].body.blocks))
        return compile_for_host(mod, *args)

    monkeypatch.setattr(accuracy, "compile_for_host", compile_recording_blocks)
    if block_bindings:
        monkeypatch.setattr(probe, "REPORT_BLOCK_BINDINGS", block_bindings)
    keys = observed_keys(model, plan(model))
    stats, _ = collect(model, keys, data, histograms=False)
    emitter = _emitter(model, stats)
    emitter.run()
    positions = sorted({r.position for r in emitter.records}
                       | {calibration.float_positions(model)[-1]})
    lines: list[str] = []
    first = emitter.records[0].name  # a second twin with that layer float: both in one run
    kept = [frozenset(), frozenset({first})]
    all_errors = accuracy.layer_errors(model, [_emitter(model, stats, k) for k in kept],
                                       positions, data, lines.append)
    want = accuracy.run_all(Runner(exposed(model, positions)), data)
    for errors, k in zip(all_errors, kept):
        assert sorted(errors) == positions
        got = accuracy.run_all(Runner(_emitter(model, stats, k).run(exposed(model, positions))),
                               data)
        for p, w, g in zip(positions, want, got):
            sqnr, cos = errors[p]
            assert sqnr == pytest.approx(scheme.sqnr_db(w, g), abs=1e-9)
            assert cos == pytest.approx(scheme.cosine(w, g), abs=1e-12)
    assert all_errors[0] != all_errors[1]
    assert (blocks[0] > 10) if block_bindings else (blocks[0] == 1)
    assert lines[-1].startswith(f"quantization report: {len(data.feeds)}/{len(data.feeds)}")


def test_progress_of_calibration(model, data):
    keys = observed_keys(model, plan(model))
    lines: list[str] = []
    collect(model, keys, data, histograms=True, progress=lines.append)
    assert lines[0] == f"calibration: compiling a probe of {len(keys)} tensors"
    done = [ln for ln in lines if ln.startswith(("calibration ranges: 3/3",
                                                  "calibration histograms: 3/3"))]
    assert len(done) == 2
