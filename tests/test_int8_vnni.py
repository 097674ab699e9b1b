"""int8 convolutions on VNNI dot products (uint8 activations, packed weights): the same
integers as the plain int8 kernels, which test_quantize.py checks against numpy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.target import resolve_target
from hwcompile.tune.defaults import has_vnni
from hwcompile.tune.pipeline import cpu_pipeline

HOST = resolve_target("cpu")
# The same CPU family without VNNI (AVX-512 F/BW/DQ/VL only): runs on this host.
NO_VNNI = 'cpu:{"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}'
needs_vnni = pytest.mark.skipif(not has_vnni(HOST.tvm_target), reason="this CPU has no AVX-512 VNNI")


def vnni_cnn() -> onnx.ModelProto:
    """Convs whose channels fit the 16×4 dot product: 3×3 pad 1, 3×3 stride 2, 1×1 without
    padding, a residual add; then a 3→16 stem-like conv the VNNI path must leave alone."""
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
    graph = helper.make_graph(nodes, "vnni_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 6, 6])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def calibration():
    return {"x": np.random.default_rng(1).standard_normal((32, 3, 12, 12)).astype(np.float32)}


@needs_vnni
def test_vnni_kernels_compute_the_same_integers(calibration, tmp_path):
    proto = vnni_cnn()
    passes = "fold-constants,quantize(method=minmax)"
    host = hwcompile.load(hwcompile.compile(proto, "cpu", tmp_path / "vnni", passes=passes,
                                            calibration=calibration))
    plain = hwcompile.load(hwcompile.compile(proto, NO_VNNI, tmp_path / "plain", passes=passes,
                                             calibration=calibration))
    x = np.random.default_rng(2).standard_normal((3, 3, 12, 12)).astype(np.float32) * 1.5
    got, want = host(x), plain(x)
    np.testing.assert_array_equal(got, want)  # bit-identical int8 results, dequantized alike
    assert np.abs(got).max() > 0  # not a degenerate all-zero output


def _assembly(target_spec: str, calibration) -> str:
    target = resolve_target(target_spec)
    ctx = PassContext(constraints=target.constraints, calibration=calibration, target=target)
    quantized, _ = run_pipeline(import_onnx(vnni_cnn()), parse_spec("fold-constants,quantize"), ctx)
    pipeline = cpu_pipeline(target.tvm_target, target.default_schedule_lanes)
    executable = tvm.compile(quantized.bound_module(), target.tvm_target, relax_pipeline=pipeline)
    return executable.mod.imports[0].inspect_source("asm")


@needs_vnni
def test_vnni_instruction_only_where_the_cpu_has_it(calibration):
    assert "vpdpbusd" in _assembly("cpu", calibration)
    assert "vpdpbusd" not in _assembly(NO_VNNI, calibration)


def test_no_vnni_without_the_feature():
    assert not has_vnni(resolve_target(NO_VNNI).tvm_target)
    assert not has_vnni(resolve_target("cpu:aarch64").tvm_target)
