"""The project's generated models: the trained digits CNN and the random-weight zoo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from hwcompile.models import digits, zoo
from hwcompile.models.graph import Graph
from hwcompile.models.nn import Network, conv2d, softmax_cross_entropy


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


# -- digits data ------------------------------------------------------------------------------
def test_split_is_deterministic_stratified_and_scaled() -> None:
    from sklearn.datasets import load_digits

    first, second = digits.load_split(), digits.load_split()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    x_train, y_train, x_test, y_test = first
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    np.testing.assert_array_equal((x_test * 16) % 1, 0)  # pixel / 16, nothing else
    full = np.bincount(load_digits().target, minlength=10)
    held_out = np.bincount(y_test, minlength=10)
    np.testing.assert_array_equal(held_out + np.bincount(y_train, minlength=10), full)
    assert np.all(np.abs(held_out - 0.2 * full) <= 1), held_out  # stratified: 20% per class
    # A different seed gives a different (still stratified) split.
    assert not np.array_equal(digits.load_split(seed=1)[3], y_test)


# -- the trained digits model (trained once for this module) ----------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Graph, str]:
    """Build through build_digits_model, keeping the trained Graph it exported."""
    graphs: list[Graph] = []
    real_train = digits.train_digits

    def spy(*args: object, **kwargs: object) -> Graph:
        graphs.append(real_train(*args, **kwargs))
        return graphs[-1]

    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(digits, "train_digits", spy)
        assert digits.build_digits_model(path) == path
    assert len(graphs) == 1
    return graphs[0], str(path)


def test_digits_held_out_accuracy(trained: tuple[Graph, str]) -> None:
    _, path = trained
    _, _, x_test, y_test = digits.load_split()
    logits = _session(path).run(["logits"], {"input": x_test})[0]
    assert logits.shape == (360, 10) and logits.dtype == np.float32
    accuracy = (logits.argmax(axis=1) == y_test).mean()
    assert accuracy >= 0.97, accuracy
    assert digits.onnx_accuracy(path, x_test, y_test) == pytest.approx(accuracy, abs=0)


def test_numpy_forward_matches_onnxruntime(trained: tuple[Graph, str]) -> None:
    graph, path = trained
    _, _, x_test, _ = digits.load_split()
    expected = _session(path).run(["logits"], {"input": x_test})[0]
    ours = Network(graph).predict(x_test)
    assert np.abs(ours - expected).max() <= 1e-4
    assert np.abs(expected).max() > 1.0  # not a degenerate all-zero network


def test_digits_onnx_structure(trained: tuple[Graph, str]) -> None:
    _, path = trained
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == ["input"]
    assert _dims(model.graph.input[0]) == ["N", 1, 8, 8]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert _dims(model.graph.output[0]) == ["N", 10]
    ops = [n.op_type for n in model.graph.node]
    assert set(ops) == {"Conv", "BatchNormalization", "Relu", "Add", "Concat",
                        "GlobalAveragePool", "Flatten", "Gemm"}
    assert ops.count("BatchNormalization") == ops.count("Conv") == 6
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    assert onnx.helper.get_attribute_value(concat.attribute[0]) == 1  # channels
    # Batch-norm statistics were trained, not left at their initial 0 / 1.
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert np.abs(inits["stem.bn.mean"]).max() > 0.01
    assert np.abs(inits["stem.bn.var"] - 1).max() > 0.01
    # Dynamic batch: a batch of 3 runs too.
    out = _session(path).run(None, {"input": digits.load_split()[2][:3]})[0]
    assert out.shape == (3, 10)


def test_export_is_byte_deterministic(tmp_path) -> None:
    a = digits.build_digits_model(tmp_path / "a.onnx", epochs=1, min_accuracy=0.0)
    b = digits.build_digits_model(tmp_path / "b.onnx", epochs=1, min_accuracy=0.0)
    assert a.read_bytes() == b.read_bytes()
    other = digits.export(digits.train_digits(epochs=1, seed=1)).SerializeToString()
    assert other != a.read_bytes()


def test_build_refuses_an_inaccurate_model(tmp_path) -> None:
    target = tmp_path / "bad.onnx"
    with pytest.raises(RuntimeError, match="held-out accuracy"):
        digits.build_digits_model(target, epochs=1, min_accuracy=0.999)
    assert not target.exists()


def test_ensure_builds_only_when_absent(tmp_path, monkeypatch, trained) -> None:
    calls = []

    def fake_build(path):
        calls.append(path)
        path.write_bytes(b"built")
        return path

    monkeypatch.setattr(digits, "build_digits_model", fake_build)
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"already here")
    assert digits.ensure_digits_model(existing) == existing
    assert existing.read_bytes() == b"already here" and calls == []
    absent = tmp_path / "absent.onnx"
    assert digits.ensure_digits_model(absent) == absent
    assert calls == [absent] and absent.read_bytes() == b"built"


def test_cli_prints_held_out_accuracy(tmp_path, monkeypatch, capsys, trained) -> None:
    _, path = trained
    out = tmp_path / "cli.onnx"

    def fake_build(p, epochs, seed, verbose):
        assert (epochs, seed, verbose) == (digits.EPOCHS, digits.SEED, True)
        p.write_bytes(Path(path).read_bytes())
        return p

    monkeypatch.setattr(digits, "build_digits_model", fake_build)
    assert digits.main([str(out)]) == 0
    _, _, x_test, y_test = digits.load_split()
    accuracy = digits.onnx_accuracy(path, x_test, y_test)
    assert f"held-out accuracy (onnxruntime, 360 images): {accuracy:.4f}" in capsys.readouterr().out


def test_cli_reports_a_failed_build_in_one_line(tmp_path, capsys) -> None:
    out = tmp_path / "cli.onnx"
    assert digits.main([str(out), "--epochs", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: digits model reached held-out accuracy")
    assert not out.exists()


# -- numpy layers -----------------------------------------------------------------------------
def _gradcheck_graph() -> Graph:
    g = Graph("gradcheck", seed=3, init="random")
    s = g.conv_bn_relu(g.input("input", ("N", 2, 6, 6)), "c1", 4, 3)
    t = g.conv(s, "c2", 4, 3, stride=2, group=2, bias=True)
    a, b = g.split(s, [1, 3], axis=1)
    u = g.conv(g.concat([b, a], axis=1), "c3", 4, 3, stride=2)
    v = g.relu(g.add(t, u))
    y = g.gemm(g.flatten(v), "fc", 5)
    z = g.matmul_add(g.flatten(g.global_avg_pool(v)), "mm", 5)
    g.output(g.add(y, z))
    g.params = {k: p.astype(np.float64) if p.dtype.kind == "f" else p
                for k, p in g.params.items()}
    return g


def test_backward_matches_finite_differences() -> None:
    net = Network(_gradcheck_graph())
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((4, 2, 6, 6)), np.array([0, 1, 2, 4])

    def loss() -> float:
        return softmax_cross_entropy(net.forward(x, train=True), labels)[0]

    _, dlogits = softmax_cross_entropy(net.forward(x, train=True), labels)
    grads = net.backward(dlogits)
    assert set(grads) == {k for k in net.graph.params if k not in net.graph.buffers}
    assert len(grads) == 10  # c1, c1.bn scale/bias, c2 w/b, c3, fc w/b, mm w/b
    eps = 1e-6
    for name, grad in grads.items():
        param = net.graph.params[name].reshape(-1)
        for i in rng.choice(param.size, size=min(param.size, 6), replace=False):
            keep = param[i]
            param[i] = keep + eps
            up = loss()
            param[i] = keep - eps
            down = loss()
            param[i] = keep
            numeric = (up - down) / (2 * eps)
            assert grad.reshape(-1)[i] == pytest.approx(numeric, rel=1e-5, abs=1e-8), name


def test_conv2d_matches_onnxruntime_conv() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 9, 7)).astype(np.float32)
    w = rng.standard_normal((9, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(9).astype(np.float32)
    node = onnx.helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 2],
                                 pads=[1, 1, 1, 1], group=3)
    graph = onnx.helper.make_graph(
        [node], "conv", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)],
                                   ir_version=8)
    expected = _session(model).run(None, {"x": x})[0]
    ours, _ = conv2d(x, w, b, stride=2, pad=1, group=3)
    assert ours.shape == expected.shape == (2, 9, 5, 4)
    assert np.abs(ours - expected).max() <= 1e-4


# -- the zoo ----------------------------------------------------------------------------------
ZOO_SHAPES = {  # builder: (input shape with batch 2 where symbolic, documented output dims)
    "mlp": ((2, 64), ["N", 10]),
    "depthwise_grouped_cnn": ((2, 3, 32, 32), ["N", 10]),
    "concat_split_reshape_transpose": ((2, 3, 16, 16), ["N", 256, 16]),
    "resnet18_shaped": ((1, 3, 224, 224), [1, 1000]),
    "prune_testbed": ((2, 3, 16, 16), ["N", 10]),
}


@pytest.fixture(scope="module")
def zoo_models() -> dict[str, onnx.ModelProto]:
    return {name: build() for name, build in zoo.ZOO.items()}


def _run_zoo(model: onnx.ModelProto, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return x, _session(model).run(["output"], {"input": x})[0]


@pytest.mark.parametrize("name", sorted(ZOO_SHAPES))
def test_zoo_model_checks_and_runs(name: str, zoo_models) -> None:
    model = zoo_models[name]
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    in_shape, out_dims = ZOO_SHAPES[name]
    assert _dims(model.graph.output[0]) == out_dims
    _, out = _run_zoo(model, in_shape)
    assert out.shape == tuple(d if isinstance(d, int) else in_shape[0] for d in out_dims)
    assert np.isfinite(out).all() and out.std() > 1e-3
    assert zoo.ZOO[name]().SerializeToString() == model.SerializeToString()  # deterministic
    assert zoo.ZOO[name](seed=1).SerializeToString() != model.SerializeToString()


@pytest.mark.parametrize("name", ["mlp", "depthwise_grouped_cnn", "prune_testbed"])
def test_zoo_numpy_forward_matches_onnxruntime(name: str, zoo_models) -> None:
    x, expected = _run_zoo(zoo_models[name], ZOO_SHAPES[name][0])
    ours = Network(zoo.build_graph(name)).forward(x.astype(np.float64))
    assert np.abs(ours - expected).max() <= 1e-4


def test_concat_split_reshape_transpose_against_numpy(zoo_models) -> None:
    model = zoo_models["concat_split_reshape_transpose"]
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x, expected = _run_zoo(model, (2, 3, 16, 16))
    h = np.maximum(conv2d(x, w["conv.weight"], w["conv.bias"], pad=1)[0], 0)
    h = np.concatenate([h[:, :4], h[:, 4:].transpose(0, 1, 3, 2)], axis=1)
    ref = h.reshape(2, 8, 256).transpose(0, 2, 1) @ w["proj.weight"] + w["proj.bias"]
    assert np.abs(ref - expected).max() <= 1e-4
    assert {n.op_type for n in model.graph.node} >= {"Concat", "Split", "Reshape", "Transpose"}


def test_resnet18_topology(zoo_models) -> None:
    model = zoo_models["resnet18_shaped"]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == ops.count("BatchNormalization") == 20  # 1 + 16 + 3 downsample
    assert (ops.count("Add"), ops.count("MaxPool"), ops.count("Gemm")) == (8, 1, 1)
    stem = model.graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in stem.attribute}
    assert attrs["kernel_shape"] == [7, 7] and attrs["strides"] == [2, 2]
    n_params = sum(numpy_helper.to_array(t).size for t in model.graph.initializer
                   if not t.name.endswith((".mean", ".var")))
    assert n_params == 11_689_512  # torchvision resnet18's parameter count
    small = zoo.resnet18_shaped(batch="N", image=64, num_classes=7)
    out = _session(small).run(None, {"input": np.ones((2, 3, 64, 64), np.float32)})[0]
    assert out.shape == (2, 7) and np.isfinite(out).all()


def test_prune_testbed_has_coupling_structures(zoo_models) -> None:
    model = zoo_models["prune_testbed"]
    ops = {n.op_type for n in model.graph.node}
    assert ops >= {"Add", "Concat", "Split", "Flatten", "Gemm", "Conv"}
    groups = sorted(onnx.helper.get_attribute_value(a) for n in model.graph.node
                    if n.op_type == "Conv" for a in n.attribute if a.name == "group")
    assert groups[-2:] == [4, 8]  # a grouped and a depthwise conv


def test_save_writes_a_loadable_model(tmp_path, zoo_models) -> None:
    path = zoo.save(zoo_models["mlp"], tmp_path / "sub" / "mlp.onnx")
    assert onnx.load(path).SerializeToString() == zoo_models["mlp"].SerializeToString()
