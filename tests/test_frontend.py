"""ONNX import: symbolic shapes, --input-shape, opset upgrade, graph view."""

from __future__ import annotations

import networkx as nx
import numpy as np
import onnx
import pytest
from conftest import conv_bn_model, ort_run

import hwcompile
from hwcompile import graph
from hwcompile.errors import InputError
from hwcompile.frontend import import_onnx, parse_input_shapes


def test_symbolic_batch_kept_and_fixed_by_input_shape(tmp_path):
    model = import_onnx(conv_bn_model())
    assert model.inputs[0].shape == ("N", 3, 8, 8)
    fixed = import_onnx(conv_bn_model(), input_shapes={"x": (4, 3, 8, 8)})
    assert fixed.inputs[0].shape == (4, 3, 8, 8)
    assert fixed.outputs[0].shape == (4, 10)
    art = hwcompile.compile(conv_bn_model(), "cpu", tmp_path / "a", input_shapes={"x": (4, 3, 8, 8)})
    with pytest.raises(InputError, match="shape 2x3x8x8, expected 4x3x8x8"):
        hwcompile.load(art)(np.zeros((2, 3, 8, 8), np.float32))


def test_input_shape_errors():
    assert parse_input_shapes(["x=1x3x224x224"]) == {"x": (1, 3, 224, 224)}
    with pytest.raises(InputError, match="names 'z'.*inputs are x"):
        import_onnx(conv_bn_model(), input_shapes={"z": (1, 3, 8, 8)})
    with pytest.raises(InputError, match="has 3 dims"):
        import_onnx(conv_bn_model(), input_shapes={"x": (1, 3, 8)})
    with pytest.raises(InputError, match="contradicts the model's fixed shape"):
        import_onnx(conv_bn_model(batch=1), input_shapes={"x": (2, 3, 8, 8)})


def test_old_opset_is_upgraded(tmp_path):
    proto = conv_bn_model(opset=9)
    model = import_onnx(proto)
    art = hwcompile.compile(model, "cpu", tmp_path / "old")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert np.abs(hwcompile.load(art)(x) - ort_run(proto, {"x": x})[0]).max() <= 1e-4


def test_invalid_model_is_reported():
    proto = conv_bn_model()
    proto.graph.node[0].input[1] = "does_not_exist"
    with pytest.raises(hwcompile.errors.ModelLoadError, match="invalid ONNX model"):
        import_onnx(proto)


def test_networkx_view_matches_the_graph():
    model = import_onnx(conv_bn_model())
    view = graph.to_networkx(model)
    kinds = nx.get_node_attributes(view, "kind")
    assert sorted(n for n, k in kinds.items() if k == "weight") == sorted(model.params)
    assert [n for n, k in kinds.items() if k == "input"] == ["x"]
    assert nx.is_directed_acyclic_graph(view)
    conv = next(n for n, d in view.nodes(data=True) if d.get("op") == "relax.nn.conv2d")
    assert set(view.predecessors(conv)) == {"x", "w"}
    # The importer leaves batch-norm's unused mean/var outputs dangling; dce removes them.
    dead = [n for n, k in kinds.items() if k == "op" and not nx.has_path(view, n, "output:y")]
    assert len(dead) == 2
    from hwcompile.pipeline import parse_spec, run_pipeline

    cleaned = graph.to_networkx(run_pipeline(model, parse_spec("dce"))[0])
    assert all(nx.has_path(cleaned, n, "output:y")
               for n, k in cleaned.nodes(data="kind") if k == "op")


def test_layer_macs_match_an_independent_count():
    """MACs from the Relax graph vs. a count from the ONNX shapes by hand."""
    proto = conv_bn_model()
    layers = graph.layers(import_onnx(proto))
    conv = next(layer for layer in layers if layer.op == "nn.conv2d")
    assert conv.macs == 8 * 8 * 8 * (3 * 3 * 3)  # Cout*H*W * Cin*kh*kw
    dense = next(layer for layer in layers if layer.op == "matmul")
    assert dense.macs == 10 * 8
    assert conv.params == 8 * 3 * 3 * 3
    assert sum(layer.params for layer in layers) == sum(
        int(np.prod(i.dims)) for i in proto.graph.initializer)


def test_inspect_and_graph_drawings(tmp_path, capfd):
    from hwcompile import cli

    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_model(), path)
    assert cli.main(["inspect", str(path), "--graph", str(tmp_path / "g.dot")]) == 0
    out = capfd.readouterr().out
    assert "nn.conv2d" in out and "13,824" in out  # 8*8*8*27 MACs, thousands separated
    assert "total: " in out and "MACs per sample" in out
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith('digraph "m"') and "nn.conv2d" in dot and '"x" ->' in dot


def test_graph_svg_needs_graphviz(tmp_path):
    import shutil

    model = import_onnx(conv_bn_model())
    if shutil.which("dot") is None:
        with pytest.raises(hwcompile.errors.HwcompileError, match="needs Graphviz"):
            graph.draw(model, tmp_path / "g.svg")
    else:
        graph.draw(model, tmp_path / "g.svg")
        assert "<svg" in (tmp_path / "g.svg").read_text()
