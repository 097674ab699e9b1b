"""An ONNX-model-zoo style MNIST CNN (the layout of the zoo's ``mnist-8``: opset 8,
``auto_pad=SAME_UPPER`` convolutions with bias added by a separate Add, a weight reshaped
by a Reshape node, a MatMul head) through every feature: float compile, int8 quantization,
and the VTA target. Its padded convs import as PrimFunc calls beside ``main``, which made
all three end in an internal error before."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import float_model, ort_run
from onnx import helper, numpy_helper

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.target import resolve_target


def mnist_zoo_style_model():
    rng = np.random.default_rng(7)

    def init(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [init("conv1_w", (8, 1, 5, 5), 0.3), init("conv1_b", (8, 1, 1), 0.1),
             init("conv2_w", (16, 8, 5, 5), 0.1), init("conv2_b", (16, 1, 1), 0.1),
             init("fc_w_4d", (16, 4, 4, 10), 0.1), init("fc_b", (1, 10), 0.1),
             numpy_helper.from_array(np.array([256, 10], np.int64), "fc_w_shape"),
             numpy_helper.from_array(np.array([1, 256], np.int64), "flat_shape")]
    node = helper.make_node
    nodes = [
        node("Reshape", ["fc_w_4d", "fc_w_shape"], ["fc_w"], name="Times212_reshape1"),
        node("Conv", ["Input3", "conv1_w"], ["c1"], auto_pad="SAME_UPPER", kernel_shape=[5, 5],
             name="Convolution28"),
        node("Add", ["c1", "conv1_b"], ["a1"], name="Plus30"),
        node("Relu", ["a1"], ["r1"], name="ReLU32"),
        node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="Pooling66"),
        node("Conv", ["p1", "conv2_w"], ["c2"], auto_pad="SAME_UPPER", kernel_shape=[5, 5],
             name="Convolution110"),
        node("Add", ["c2", "conv2_b"], ["a2"], name="Plus112"),
        node("Relu", ["a2"], ["r2"], name="ReLU114"),
        node("MaxPool", ["r2"], ["p2"], kernel_shape=[3, 3], strides=[3, 3], name="Pooling160"),
        node("Reshape", ["p2", "flat_shape"], ["flat"], name="Times212_reshape0"),
        node("MatMul", ["flat", "fc_w"], ["mm"], name="Times212"),
        node("Add", ["mm", "fc_b"], ["Plus214_Output_0"], name="Plus214"),
    ]
    return float_model("mnist_zoo_style", nodes, inits, {"Input3": [1, 1, 28, 28]},
                       {"Plus214_Output_0": [1, 10]}, opset=8)


def digit_images(count: int, start: int = 0) -> np.ndarray:
    """scikit-learn's 8x8 digits scaled 3x and padded to MNIST's 28x28, in [0, 1]."""
    from sklearn.datasets import load_digits

    images = load_digits().images[start:start + count] / 16.0
    big = np.kron(images, np.ones((3, 3)))
    return np.pad(big, ((0, 0), (2, 2), (2, 2)))[:, None].astype(np.float32)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("mnist") / "mnist.onnx"
    path.write_bytes(mnist_zoo_style_model().SerializeToString())
    return path


def test_float_compile_matches_onnxruntime(model_path, tmp_path):
    compiled = hwcompile.load(hwcompile.compile(model_path, "cpu", tmp_path / "a"))
    for image in digit_images(8):
        x = image[None]
        np.testing.assert_allclose(compiled(x), ort_run(model_path, {"Input3": x})[0],
                                   rtol=1e-5, atol=1e-5)


def test_quantized_compile_stays_close_to_float(model_path, tmp_path):
    calibration = {"Input3": digit_images(32)[:, None]}  # (samples, *input shape)
    int8 = hwcompile.load(hwcompile.compile(
        model_path, "cpu", tmp_path / "q", passes="fold-constants,fold-batchnorm,quantize",
        calibration=calibration))
    quantized = [layer for layer in int8.metadata["layers"] if "int8" in str(layer)]
    assert quantized, "no layer was quantized"
    x = digit_images(64, start=100)
    ref = np.concatenate([ort_run(model_path, {"Input3": image[None]})[0] for image in x])
    got = np.concatenate([int8(image[None]) for image in x])
    sqnr = 10 * np.log10(np.sum(ref ** 2) / np.sum((got - ref) ** 2))
    print(f"int8 SQNR vs float: {sqnr:.1f} dB")
    assert sqnr > 25


def test_vta_compile_is_bit_identical_to_cpu_int8(model_path, tmp_path):
    target = resolve_target("vta")
    ctx = PassContext(constraints=target.constraints, calibration={"Input3": digit_images(32)[:, None]})
    model, _ = run_pipeline(import_onnx(model_path),
                            parse_spec("fold-constants,fold-batchnorm,dce,quantize,dce"), ctx)
    cpu = hwcompile.load(hwcompile.compile(model, "cpu", tmp_path / "cpu", passes=""))
    vta = hwcompile.load(hwcompile.compile(model, target, tmp_path / "vta", passes=""))
    placements = [d["placement"] for d in vta.metadata["target_extra"]["partition"]]
    assert "vta" in placements
    for image in digit_images(4, start=200):
        np.testing.assert_array_equal(vta(image[None]), cpu(image[None]))
