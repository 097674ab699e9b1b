"""Compile → run → compare with onnxruntime, for the model families the issue names."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ort_run

import hwcompile
from hwcompile.inputs import random_inputs
from hwcompile.models import zoo

ZOO_CASES = ["mlp", "depthwise_grouped_cnn", "concat_split_reshape_transpose", "prune_testbed"]


@pytest.mark.parametrize("name", ZOO_CASES)
def test_zoo_model_matches_onnxruntime(name, tmp_path):
    proto = zoo.ZOO[name]()
    art = hwcompile.compile(proto, "cpu", tmp_path / name)
    model = hwcompile.load(art)
    feeds = random_inputs(model.inputs, seed=1, batch=3)
    got = model(**feeds)
    want = ort_run(proto, feeds)[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4


def test_resnet18_shaped_small_image_matches_onnxruntime(tmp_path):
    proto = zoo.resnet18_shaped(batch=1, image=32, num_classes=10)
    model = hwcompile.load(hwcompile.compile(proto, "cpu", tmp_path / "r18"))
    feeds = random_inputs(model.inputs, seed=2)
    want = ort_run(proto, feeds)[0]
    assert np.abs(model(**feeds) - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_digits_cnn_accuracy_and_agreement(digits_onnx, digits_data, tmp_path):
    _, _, x_test, y_test = digits_data
    model = hwcompile.load(hwcompile.compile(digits_onnx, "cpu", tmp_path / "digits"))
    logits = model(x_test)
    want = ort_run(digits_onnx, {"input": x_test})[0]
    assert np.abs(logits - want).max() <= 1e-4
    assert np.array_equal(logits.argmax(1), want.argmax(1))
    assert np.mean(logits.argmax(1) == y_test) >= 0.97


def test_without_passes_matches_too(conv_bn_onnx, tmp_path):
    model = hwcompile.load(hwcompile.compile(conv_bn_onnx, "cpu", tmp_path / "raw", passes=""))
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert np.abs(model(x) - ort_run(conv_bn_onnx, {"x": x})[0]).max() <= 1e-4
    assert model.metadata["pipeline"] == []


def test_inputs_by_name_and_position_agree(conv_bn_artifact):
    model = hwcompile.load(conv_bn_artifact)
    x = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(model(x), model(x=x))
    np.testing.assert_array_equal(model(x), model.run({"x": x})["y"])
