"""Shared fixtures: generated models, the trained digits model, onnxruntime reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
HWCOMPILE = str(Path(sys.executable).with_name("hwcompile"))


def ort_run(model: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The independent reference: onnxruntime's CPU provider."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


def float_model(name: str, nodes: list, inits: list, inputs: dict[str, list],
                outputs: dict[str, list], opset: int = 17) -> onnx.ModelProto:
    """A float32 ONNX model (IR version 8, which onnxruntime reads) from nodes and
    initializers; ``inputs``/``outputs`` map names to shapes."""
    def infos(shapes):
        return [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items()]

    graph = helper.make_graph(nodes, name, infos(inputs), infos(outputs), inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def conv_bn_model(opset: int = 17, batch: str | int = "N") -> onnx.ModelProto:
    """Conv(+bias) → BN → Relu → GlobalAveragePool → Flatten → Gemm: the folding test case."""
    rng = np.random.default_rng(0)

    def init(name, shape, positive=False):
        value = rng.standard_normal(shape).astype(np.float32)
        return numpy_helper.from_array(np.abs(value) + 0.1 if positive else value, name)

    inits = [init("w", (8, 3, 3, 3)), init("b", (8,)), init("gamma", (8,)), init("beta", (8,)),
             init("mean", (8,)), init("var", (8,), positive=True), init("fc_w", (10, 8)),
             init("fc_b", (10,))]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1, name="fc"),
    ]
    model = float_model("conv_bn", nodes, inits, {"x": [batch, 3, 8, 8]}, {"y": [batch, 10]}, opset)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="session")
def conv_bn_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "conv_bn.onnx"
    onnx.save(conv_bn_model(), path)
    return path


@pytest.fixture(scope="session")
def conv_bn_artifact(conv_bn_onnx, tmp_path_factory) -> Path:
    import hwcompile

    return hwcompile.compile(conv_bn_onnx, "cpu", tmp_path_factory.mktemp("art") / "conv_bn")


@pytest.fixture(scope="session")
def digits_onnx() -> Path:
    """The trained example model (built once, kept beside the demo, as `make demo` does)."""
    from hwcompile.models.digits import ensure_digits_model

    return ensure_digits_model(ROOT / "examples" / "digits" / "digits_cnn.onnx")


@pytest.fixture(scope="session")
def digits_data():
    from hwcompile.models.digits import load_split

    return load_split()
