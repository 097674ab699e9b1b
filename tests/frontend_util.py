"""What the frontend robustness tests share: ONNX model building, running the imported model
(plain TVM build, or the product path compile + load) and onnxruntime as the reference."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import ort_run
from onnx import TensorProto, helper, numpy_helper

import hwcompile
from hwcompile.frontend import import_onnx


def tensor(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def vinfo(name: str, shape, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    """A checked model (IR version 8, which onnxruntime reads) from value infos."""
    graph = helper.make_graph(nodes, "test", list(inputs), list(outputs), list(inits))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def tvm_build(proto: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None):
    """Import with hwcompile's frontend, build with TVM's stock pipeline; returns a function
    from feeds to the list of outputs."""
    import tvm
    from tvm import relax

    imported = import_onnx(proto, input_shapes=input_shapes)
    vm = relax.VirtualMachine(tvm.compile(imported.bound_module(), "llvm"), tvm.cpu())

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = vm["main"](*[tvm.runtime.tensor(feeds[s.name]) for s in imported.inputs])
        return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]

    return run


def tvm_run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray],
            input_shapes: dict[str, tuple[int, ...]] | None = None) -> list[np.ndarray]:
    return tvm_build(proto, input_shapes)(feeds)


def product_run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], out_dir,
                input_shapes: dict[str, tuple[int, ...]] | None = None) -> list[np.ndarray]:
    """The path users run: ``hwcompile.compile(target="cpu")``, ``hwcompile.load``, run."""
    return run_artifact(hwcompile.compile(proto, "cpu", out_dir, input_shapes=input_shapes),
                        proto, feeds)


def run_artifact(art, proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A compiled artifact's outputs, in the ONNX model's output order."""
    results = hwcompile.load(art).run(feeds)
    return [results[o.name] for o in proto.graph.output]


def assert_like_ort(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], got: list[np.ndarray],
                    rtol: float = 1e-5, atol: float = 1e-5, exact: bool = False) -> None:
    want = ort_run(proto, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
