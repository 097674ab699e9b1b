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
from conftest import float_model, ort_run
from onnx import numpy_helper

import hwcompile
from hwcompile.errors import CalibrationError, PassError
from hwcompile.frontend import import_onnx
from hwcompile.models import zoo
from hwcompile.models.graph import Graph
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


def test_round_to_keeps_the_granularity_of_a_ragged_count():
    """24 and 40 channels are 1.5 and 2.5 vectors of 16: pruned, they stay multiples of 8
    (gcd with the vector), not the nearest count (17, 28), which would run with ragged tails."""
    g = Graph("ragged", 0, init="random")
    x = g.conv_bn_relu(g.input("input", ("N", 3, 16, 16)), "a", 24, 3)
    x = g.conv_bn_relu(x, "b", 40, 3)
    g.output(g.conv(x, "head", 4, 1, bias=True))
    ctx = PassContext(constraints=Constraints(channel_multiple=16))
    _, report = run_pipeline(import_onnx(g.to_onnx()), parse_spec("prune(ratio=0.3)"), ctx)
    assert report[0]["details"]["channels"] == {"a.weight": "24 -> 16", "b.weight": "40 -> 32"}


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
    """A single conv making the graph output: nothing can go; the model is left as it was,
    with a line saying which layer stays and why."""
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"])], "single",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 4, 4])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    lines: list[str] = []
    model = import_onnx(proto)
    pruned, report = run_pipeline(model, parse_spec("prune(ratio=0.5)"), PassContext(progress=lines.append))
    assert pruned is model  # left as it was, not refused
    assert report[0]["details"]["excluded"] == [{"layers": ["w"], "reason": "reaches a graph output"}]
    assert [ln for ln in lines if ln.startswith("prune:")] == [
        "prune: w left unpruned: reaches a graph output",
        "prune: nothing prunable in this model; it is left as it was"]


def test_unknown_op_excludes_its_channels():
    """Channels reaching an op the analysis does not know (a cumulative sum over channels)
    stay, named."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (8, 3, 3, 3)), ("w2", (8, 8, 1, 1)), ("fc", (8, 4)))]
    inits.append(numpy_helper.from_array(np.array(1, np.int64), "axis"))
    nodes = [helper.make_node("Conv", ["input", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("CumSum", ["a", "axis"], ["b"]),
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


def _bias_only_channels_model(conv_bias: bool = True) -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    """Conv3x3(+bias) → BN → Relu → a; Conv1x1 → BN → b; Relu(a + b) (residual) → Conv1x1
    (+bias) → Relu → GlobalAveragePool → Flatten → Gemm(+bias).

    Chosen channels have kernel rows that are exactly zero but large non-zero biases / BN
    shifts, so each is a non-zero constant that its consumers (1x1 convs and the dense
    layer, where compensation is exact) read through small but non-zero weights.
    """
    from onnx import helper

    rng = np.random.default_rng(1)
    gone = {"ab": [1, 4], "c": [2, 5, 6]}  # residual units (a_k with b_k), conv c channels

    def arr(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = {"wa": arr(8, 3, 3, 3), "ba": arr(8, scale=1.0), "wb": arr(8, 8, 1, 1),
         "wc": arr(8, 8, 1, 1), "bc": arr(8, scale=1.0), "fc": arr(10, 8), "fcb": arr(10)}
    for bn in ("bna", "bnb"):
        w[f"{bn}.scale"], w[f"{bn}.bias"] = 1.0 + arr(8, scale=0.2), arr(8)
        w[f"{bn}.mean"], w[f"{bn}.var"] = arr(8), np.abs(arr(8)) + 0.5
    for k in gone["ab"]:
        w["wa"][k] = 0.0
        w["wb"][k] = 0.0
        w["ba"][k] = 2.0 + k  # a_k = relu(BN(bias)) > 0
        w["bnb.bias"][k] = 1.5
        w["wb"][:, k] *= 0.05  # consumers' weights: small, so these units score lowest
        w["wc"][:, k] *= 0.05
    for k in gone["c"]:
        w["wc"][k] = 0.0
        w["bc"][k] = 1.0 + k
        w["fc"][:, k] *= 0.05
    nodes = [helper.make_node("Conv", ["input", "wa", "ba"], ["ca"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["ca", "bna.scale", "bna.bias", "bna.mean",
                                                     "bna.var"], ["na"]),
             helper.make_node("Relu", ["na"], ["a"]),
             helper.make_node("Conv", ["a", "wb"], ["cb"]),
             helper.make_node("BatchNormalization", ["cb", "bnb.scale", "bnb.bias", "bnb.mean",
                                                     "bnb.var"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("Relu", ["s"], ["e"]),
             helper.make_node("Conv", ["e", "wc", "bc"] if conv_bias else ["e", "wc"], ["cc"]),
             helper.make_node("Relu", ["cc"], ["c"]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["output"], transB=1)]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items() if conv_bias or k != "bc"]
    proto = float_model("bias_only_channels", nodes, inits, {"input": ["N", 3, 8, 8]},
                        {"output": ["N", 10]})
    return proto, gone


@pytest.mark.parametrize("conv_bias", [True, False])
def test_compensated_prune_of_zero_weight_nonzero_bias_channels(tmp_path, conv_bias):
    """Channels whose kernels are exactly zero still output a constant (their bias / BN
    shift through ReLU and the residual add); pruning them must fold that constant into the
    consumers (BN mean of the 1x1 conv, the 1x1 conv's bias, the dense bias), so the
    compiled result equals onnxruntime on the original model. Without compensation it
    does not (the check that this test can fail). Without the 1x1 conv's bias its shift
    becomes a new bias add."""
    proto, gone = _bias_only_channels_model(conv_bias)
    spec = "prune(ratio=0.3125, scope=global, criterion=l2)"  # 5 of 16 units
    pruned, entry = _prune_and_compare(tmp_path, proto, spec, (3, 8, 8))
    assert entry["details"]["channels"] == {"wa": "8 -> 6", "wb": "8 -> 6", "wc": "8 -> 5"}
    assert entry["details"]["compensation"] == {
        "consumers": 3, "new_bias_adds": 0 if conv_bias else 1, "uncompensated_inputs": 0}
    # the removed channels are the chosen ones: what is left equals the kept rows
    keep_ab = [k for k in range(8) if k not in gone["ab"]]
    keep_c = [k for k in range(8) if k not in gone["c"]]
    original = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    np.testing.assert_array_equal(pruned.params["wa"], original["wa"][keep_ab])
    np.testing.assert_array_equal(pruned.params["wc"], original["wc"][keep_c][:, keep_ab])
    (tmp_path / "plain").mkdir()
    with pytest.raises(AssertionError):
        _prune_and_compare(tmp_path / "plain", proto, spec.replace(")", ", compensate=false)"),
                           (3, 8, 8))


def test_iterative_prune_ends_at_the_single_step_counts(tmp_path):
    """steps=3 prunes a cumulative ratio of the *original* sizes each step (with fine-tuning
    in between), so the final counts are the single-step counts: 128 -> 90, 64 -> 45 at 0.3
    (step-relative ratios would round to 128 -> 89, 64 -> 46). Which channels go may differ."""
    model = import_onnx(zoo.mlp())
    rng = np.random.default_rng(0)
    data = {"input": rng.standard_normal((64, 64)).astype(np.float32),
            "labels": rng.integers(0, 10, 64)}
    ctx = lambda: PassContext(constraints=Constraints(channel_multiple=1), calibration=data)
    single, one = run_pipeline(model, parse_spec("prune(ratio=0.3)"), ctx())
    staged, three = run_pipeline(model, parse_spec("prune(ratio=0.3, steps=3, finetune_steps=2)"),
                                 ctx())
    want = {"fc1.weight.permute_dims": f"128 -> {128 - round(0.3 * 128)}",
            "fc2.weight": f"64 -> {64 - round(0.3 * 64)}"}
    assert one[0]["details"]["channels"] == want
    assert three[0]["details"]["channels"] == want
    assert [s["channels"] for s in three[0]["details"]["steps"]] == [
        {"fc1.weight.permute_dims": f"128 -> {128 - round(0.3 * k / 3 * 128)}",
         "fc2.weight": f"64 -> {64 - round(0.3 * k / 3 * 64)}"} for k in (1, 2, 3)]
    assert {k: v.shape for k, v in staged.params.items() if "weight" in k} == \
        {k: v.shape for k, v in single.params.items() if "weight" in k}
    # ``removed`` names original channel indices, composed over the steps
    sizes = {"fc1.weight.permute_dims": 128, "fc2.weight": 64}
    for details in (one[0]["details"], three[0]["details"]):
        removed = details["removed"]
        assert {k: len(v) for k, v in removed.items()} == {k: round(0.3 * n) for k, n in sizes.items()}
        assert all(sorted(set(v)) == v and v[-1] < sizes[k] for k, v in removed.items())
    art = hwcompile.compile(staged, "cpu", tmp_path / "art", passes="dce")
    out = hwcompile.load(art)(data["input"][:4])
    assert out.shape == (4, 10) and np.isfinite(out).all()


def test_measure_reports_latency_before_and_after(tmp_path):
    """prune(measure=true) compiles for the compile() target and times both models."""
    art = hwcompile.compile(zoo.mlp(), "cpu", tmp_path / "art",
                            passes="prune(ratio=0.5, measure=true, measure_repeat=3),dce")
    details = hwcompile.load(art).metadata["pipeline"][0]["details"]
    before, after = details["latency_ms_before"], details["latency_ms_after"]
    assert before > 0 and after > 0
    assert details["speedup"] == pytest.approx(before / after, rel=1e-2)
    assert details["latency"]["target"] == "cpu" and details["latency"]["repeat"] == 3
    assert details["latency"]["batch"] == 1 and details["latency"]["threads"] >= 1
    _, report = run_pipeline(import_onnx(zoo.mlp()), parse_spec("prune(ratio=0.5)"), PassContext())
    assert "latency_ms_before" not in report[0]["details"]  # off by default


def test_compensation_keeps_the_expected_output_of_a_bn_relu_layer(tmp_path):
    """Removing channels that vary (not zero weights): compensation folds their *expected*
    activation E[relu(BN(z))] into the consumer. With x ~ N(0, I) and 1x1 convs the BN
    input is exactly N(bias, |w|^2), which the BN's running statistics state; so the pruned
    model's mean output must equal the original's mean output (onnxruntime, sampled), and
    the uncompensated one's must not."""
    from onnx import helper

    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((8, 3, 1, 1)).astype(np.float32)
    b1 = rng.standard_normal(8).astype(np.float32)
    inits = {"w1": w1, "b1": b1, "gamma": (0.5 + rng.random(8)).astype(np.float32),
             "beta": rng.standard_normal(8).astype(np.float32), "mean": b1,
             "var": (w1.reshape(8, -1) ** 2).sum(1).astype(np.float32),
             "w2": rng.standard_normal((4, 8, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"],
                              epsilon=1e-9),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["output"])]
    proto = float_model("expected", nodes, [numpy_helper.from_array(v, k) for k, v in inits.items()],
                        {"input": ["N", 3, 4, 4]}, {"output": ["N", 4, 4, 4]})
    path = tmp_path / "model.onnx"
    onnx.save(proto, path)
    x = rng.standard_normal((2000, 3, 4, 4)).astype(np.float32)
    want = ort_run(proto, {"input": x})[0]
    per_channel = want.transpose(1, 0, 2, 3).reshape(4, -1)
    stderr = per_channel.std(1) / np.sqrt(per_channel.shape[1])
    for compensate, close in ((True, True), (False, False)):
        spec = f"prune(ratio=0.5, round_to=1, compensate={str(compensate).lower()})"
        pruned, report = run_pipeline(import_onnx(path), parse_spec(spec), PassContext())
        assert report[0]["details"]["channels"] == {"w1": "8 -> 4"}
        art = hwcompile.compile(pruned, "cpu", tmp_path / f"art{compensate}", passes="fold-batchnorm")
        got = hwcompile.load(art)(x).transpose(1, 0, 2, 3).reshape(4, -1).mean(1)
        error = np.abs(got - per_channel.mean(1))
        assert bool((error < 6 * stderr).all()) == close, (error, stderr)
