"""Structured pruning: coupled channels are removed consistently and the result is exact.

The reference is onnxruntime on the *original ONNX model with chosen channels zeroed by
hand* (producer rows and every consumer's columns, written out per model below, not
derived from the pruner's analysis). Pruning those channels must remove exactly them, shrink
the tensors, and leave the compiled model's outputs equal to the reference.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ort_run
from onnx import numpy_helper

import hwcompile
from hwcompile.errors import CalibrationError, PassError
from hwcompile.frontend import import_onnx
from hwcompile.models import zoo
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.target import Constraints


def _zeroed(proto: onnx.ModelProto, cuts: dict[str, list[tuple]]) -> onnx.ModelProto:
    """A copy of ``proto`` with ``init[index] = 0`` for each (initializer, index) given."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for init in proto.graph.initializer:
        if init.name in cuts:
            value = numpy_helper.to_array(init).copy()
            for index in cuts[init.name]:
                value[index] = 0
            init.CopyFrom(numpy_helper.from_array(value, init.name))
    return proto


def _prune_and_compare(tmp_path, proto, spec, shape, seed=0):
    """Compile ``proto`` with ``spec`` (round_to=1 target), compare with onnxruntime."""
    path = tmp_path / "model.onnx"
    onnx.save(proto, path)
    model = import_onnx(path)
    ctx = PassContext(constraints=Constraints(channel_multiple=1))
    pruned, report = run_pipeline(model, parse_spec(spec), ctx)
    art = hwcompile.compile(pruned, "cpu", tmp_path / "art", passes="fold-batchnorm,dce")
    x = np.random.default_rng(seed).standard_normal((2, *shape)).astype(np.float32)
    got = hwcompile.load(art)(x)
    want = ort_run(proto, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    return pruned, report[0]


def test_zero_channels_residual_grouped_flatten_dense(tmp_path):
    """prune_testbed: residual add, split/concat, depthwise, grouped conv, flatten -> dense."""
    r = list(range(4))  # residual channels 0..3 (stem = res.conv2, both Add operands)
    cuts = {
        "stem.weight": [(c,) for c in r], "res.conv2.weight": [(c,) for c in r],
        "res.conv1.weight": [(slice(None), c) for c in r] + [(c,) for c in range(8, 16)],
        "branch_a.weight": [(slice(None), c) for c in r],           # split half a reads 0..7
        # grouped conv (32 out, 4 groups of 8): position j of every group is one unit
        "grouped.weight": [(j + 8 * k,) for j in range(4) for k in range(4)],
        "squeeze.weight": [(slice(None), j + 8 * k) for j in range(4) for k in range(4)]
        + [(c,) for c in (1, 3, 5, 7)],
        # flatten: squeeze channel c is the block c*16 .. c*16+15 of fc1's inputs
        "fc1.weight": [(slice(None), slice(16 * c, 16 * c + 16)) for c in (1, 3, 5, 7)]
        + [(c,) for c in range(16)],
        "fc2.weight": [(slice(None), c) for c in range(16)],
    }
    cuts["res.conv2.weight"] += [(slice(None), c) for c in range(8, 16)]  # res.conv1 8..15
    proto = _zeroed(zoo.prune_testbed(), cuts)
    # 4+8+4+4+16 = 36 zero units of 8+16+4+8+8+32 = 76: global scope removes exactly them.
    pruned, entry = _prune_and_compare(
        tmp_path, proto, f"prune(ratio={36 / 76}, scope=global, criterion=l1)", (3, 16, 16))
    assert entry["details"]["channels"] == {
        "stem.weight": "16 -> 12", "res.conv2.weight": "16 -> 12", "res.conv1.weight": "16 -> 8",
        "grouped.weight": "32 -> 16", "squeeze.weight": "8 -> 4",
        "fc1.weight.permute_dims": "32 -> 16"}
    shapes = {k: v.shape for k, v in pruned.params.items()}
    assert shapes["stem.weight"] == (12, 3, 3, 3)
    assert shapes["res.conv1.weight"] == (8, 12, 3, 3)
    assert shapes["branch_a.weight"] == (8, 4, 3, 3)   # split piece a: 8 -> 4 channels
    assert shapes["branch_dw.weight"] == (8, 1, 3, 3)  # piece b untouched
    assert shapes["grouped.weight"] == (16, 4, 3, 3)
    assert shapes["fc1.weight.permute_dims"] == (64, 16)
    assert shapes["fc2.weight.permute_dims"] == (16, 10)
    assert entry["after"]["macs"] < entry["before"]["macs"]


def test_zero_channels_depthwise_and_grouped_inputs(tmp_path):
    """depthwise_grouped_cnn: stem channel p couples dw channel p and grouped input p of
    every group (4 groups of 4 inputs): units {p, p+4, p+8, p+12}."""
    p_units = [1, 2]
    chans = [p + 4 * k for p in p_units for k in range(4)]
    cuts = {"stem.weight": [(c,) for c in chans], "dw.weight": [(c,) for c in chans],
            "grouped.weight": [(slice(None), p) for p in p_units]}
    proto = _zeroed(zoo.depthwise_grouped_cnn(), cuts)
    pruned, entry = _prune_and_compare(
        tmp_path, proto, "prune(ratio=0.5, criterion=l1, ignore=[grouped, pw])", (3, 32, 32))
    assert entry["details"]["channels"] == {"stem.weight": "16 -> 8", "dw.weight": "16 -> 8"}
    assert pruned.params["dw.weight"].shape == (8, 1, 3, 3)
    assert pruned.params["grouped.weight"].shape == (32, 2, 3, 3)
    assert "groups=8" in pruned.mod.script() and "groups=4" in pruned.mod.script()


def test_zero_channels_split_concat_reshape(tmp_path):
    """concat_split_reshape_transpose: conv channel c (through split, a transposed half,
    concat and a reshape to tokens) is row c of the projection."""
    chans = [0, 2, 5, 7]  # two from each split half
    cuts = {"conv.weight": [(c,) for c in chans], "proj.weight": [(c,) for c in chans]}
    proto = _zeroed(zoo.concat_split_reshape_transpose(), cuts)
    pruned, entry = _prune_and_compare(tmp_path, proto, "prune(ratio=0.5, criterion=l2)", (3, 16, 16))
    assert entry["details"]["channels"] == {"conv.weight": "8 -> 4"}
    assert pruned.params["proj.weight"].shape == (4, 16)
    assert "R.split(" in pruned.mod.script() and "indices_or_sections=[2]" in pruned.mod.script()


def test_round_to_defaults_to_target_multiple():
    """round_to defaults to the target's channel multiple; counts stay multiples of it."""
    model = import_onnx(zoo.resnet18_shaped(image=32, num_classes=10))
    ctx = PassContext(constraints=Constraints(channel_multiple=16))
    _, report = run_pipeline(model, parse_spec("prune(ratio=0.3)"), ctx)
    details = report[0]["details"]
    assert details["round_to"] == 16
    kept = [int(v.split(" -> ")[1]) for v in details["channels"].values()]
    assert kept and all(k % 16 == 0 for k in kept)
    # ignore keeps a layer's own output channels
    _, report = run_pipeline(model, parse_spec("prune(ratio=0.3, ignore=[layer1.0.conv1])"), ctx)
    assert "layer1.0.conv1.weight" not in report[0]["details"]["channels"]


@pytest.mark.parametrize("spec, message", [
    ("prune(ratio=1.0)", "outside [0, 1)"),
    ("prune(ratio=-0.1)", "outside [0, 1)"),
    ("prune(criterion=taylor)", "needs calibration data"),
    ("prune(criterion=grad_l2)", "needs calibration data"),
])
def test_bad_options(spec, message):
    model = import_onnx(zoo.mlp())
    with pytest.raises((PassError, CalibrationError), match=message.replace("[", r"\[").replace(")", r"\)")):
        run_pipeline(model, parse_spec(spec), PassContext(constraints=Constraints()))


def test_unknown_criterion():
    with pytest.raises(PassError, match="'fancy' is not one of"):
        parse_spec("prune(criterion=fancy)")
    from hwcompile.passes.prune.structured import prune

    with pytest.raises(PassError, match="unknown criterion 'fancy'"):
        prune(import_onnx(zoo.mlp()), PassContext(), criterion="fancy")


def test_nothing_prunable():
    """A single conv feeding the output layer through a graph output: nothing can go."""
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"])], "single",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 4, 4])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(PassError, match=r"nothing prunable.*w: reaches a graph output"):
        run_pipeline(import_onnx(proto), parse_spec("prune(ratio=0.5)"), PassContext())


def test_unknown_op_excludes_its_channels():
    """Channels reaching an op the analysis does not know (softmax over channels) stay, named."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (8, 3, 3, 3)), ("w2", (8, 8, 1, 1)), ("fc", (8, 4)))]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Softmax", ["a"], ["b"], axis=1),
             helper.make_node("Conv", ["b", "w2"], ["c"]),
             helper.make_node("GlobalAveragePool", ["c"], ["d"]),
             helper.make_node("Flatten", ["d"], ["e"]),
             helper.make_node("MatMul", ["e", "fc"], ["output"])]
    graph = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "output", TensorProto.FLOAT, [1, 4])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _, report = run_pipeline(import_onnx(proto), parse_spec("prune(ratio=0.5, round_to=1)"),
                             PassContext())
    details = report[0]["details"]
    assert details["channels"] == {"w2": "8 -> 4"}
    reasons = {tuple(e["layers"]): e["reason"] for e in details["excluded"]}
    assert "which pruning does not handle" in reasons[("w1",)]
