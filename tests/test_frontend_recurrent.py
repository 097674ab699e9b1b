"""LSTM, GRU and RNN expanded over their static sequence length, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ort_run
from frontend_util import assert_like_ort, model, product_run, tensor, tvm_run, vinfo
from onnx import TensorProto, helper

from hwcompile.errors import UnsupportedOpError
from hwcompile.frontend import import_onnx

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def cell_model(kind, steps=4, batch=3, inputs=5, hidden=4, direction="forward", lens=None,
               initial=True, peepholes=False, bias=True, layout=0, **attrs):
    """One recurrent node with random weights; returns (model, feeds)."""
    rng = np.random.default_rng(len(kind) + steps + len(attrs))
    gates, dirs = GATES[kind], 2 if direction == "bidirectional" else 1
    x_shape = [steps, batch, inputs] if layout == 0 else [batch, steps, inputs]
    state_shape = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
    y_shape = ([steps, dirs, batch, hidden] if layout == 0 else [batch, steps, dirs, hidden])
    feeds = {"x": rng.standard_normal(x_shape).astype(np.float32)}
    graph_inputs = [vinfo("x", x_shape)]
    inits = [tensor("W", rng.uniform(-1, 1, (dirs, gates * hidden, inputs)).astype(np.float32)),
             tensor("R", rng.uniform(-1, 1, (dirs, gates * hidden, hidden)).astype(np.float32))]
    names = ["x", "W", "R", ""]
    if bias:
        inits.append(tensor("B", rng.uniform(-1, 1, (dirs, 2 * gates * hidden))
                            .astype(np.float32)))
        names[3] = "B"
    names.append("")
    if lens is not None:
        graph_inputs.append(vinfo("lens", [batch], TensorProto.INT32))
        feeds["lens"] = np.array(lens, np.int32)
        names[4] = "lens"
    states = ["h0", "c0"] if kind == "LSTM" else ["h0"]
    for state in states:
        names.append(state if initial else "")
        if initial:
            graph_inputs.append(vinfo(state, state_shape))
            feeds[state] = rng.standard_normal(state_shape).astype(np.float32)
    if peepholes:
        inits.append(tensor("P", rng.uniform(-1, 1, (dirs, 3 * hidden)).astype(np.float32)))
        names.append("P")
    while names[-1] == "":
        names.pop()
    outputs = ["Y", "Y_h", "Y_c"][:len(states) + 1]
    node = helper.make_node(kind, names, outputs, hidden_size=hidden, direction=direction,
                            layout=layout, name=f"{kind.lower()}0", **attrs)
    out_infos = [vinfo(o, y_shape if o == "Y" else state_shape) for o in outputs]
    return model([node], graph_inputs, out_infos, inits), feeds


CASES = [
    ("LSTM", {}),
    ("LSTM", {"direction": "reverse", "lens": [4, 2, 3], "peepholes": True}),
    ("LSTM", {"direction": "bidirectional", "lens": [0, 2, 4], "initial": False}),
    ("LSTM", {"clip": 0.5, "input_forget": 1}),
    ("GRU", {}),
    ("GRU", {"linear_before_reset": 1, "direction": "bidirectional", "lens": [3, 4, 1]}),
    ("GRU", {"initial": False, "bias": False, "direction": "reverse", "clip": 0.7}),
    ("GRU", {"activations": ["HardSigmoid", "LeakyRelu"], "activation_alpha": [0.3, 0.2],
             "activation_beta": [0.4]}),
    ("RNN", {"direction": "bidirectional"}),
    ("RNN", {"activations": ["Relu"], "lens": [1, 4, 0], "bias": False}),
]


@pytest.mark.parametrize(("kind", "options"), CASES)
def test_cell_matches_onnxruntime(kind, options):
    proto, feeds = cell_model(kind, **options)
    assert_like_ort(proto, feeds, tvm_run(proto, feeds))


ACTIVATION_CASES = [
    ("RNN", {"activations": ["Affine"], "activation_alpha": [0.5], "activation_beta": [0.1]}),
    ("RNN", {"activations": ["ScaledTanh"], "activation_alpha": [1.5],
             "activation_beta": [0.5]}),
    ("RNN", {"activations": ["Softplus"]}),
    ("RNN", {"activations": ["LeakyRelu"]}),  # default alpha
    ("LSTM", {"activations": ["HardSigmoid", "Elu", "Softsign"], "activation_alpha": [0.3, 0.9],
              "activation_beta": [0.6]}),
]


@pytest.mark.parametrize(("kind", "options"), ACTIVATION_CASES)
def test_optional_activations(kind, options):
    """alpha/beta are consumed in activation order by the functions that take them."""
    proto, feeds = cell_model(kind, steps=2, **options)
    assert_like_ort(proto, feeds, tvm_run(proto, feeds))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_layout_1_is_the_transposed_layout_0(kind):
    """onnxruntime has no layout=1 kernels; the spec defines layout 1 as layout 0 with
    batch and sequence axes swapped, so the reference is onnxruntime on the layout-0 model."""
    proto, feeds = cell_model(kind, layout=1, direction="bidirectional", lens=[4, 1, 3])
    flat, _ = cell_model(kind, layout=0, direction="bidirectional", lens=[4, 1, 3])
    flat_feeds = {k: (np.swapaxes(v, 0, 1) if v.ndim == 3 else v) for k, v in feeds.items()}
    want = ort_run(flat, flat_feeds)
    got = tvm_run(proto, feeds)
    np.testing.assert_allclose(got[0], want[0].transpose(2, 0, 1, 3), rtol=1e-5, atol=1e-5)
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g, np.swapaxes(w, 0, 1), rtol=1e-5, atol=1e-5)


def _torch_lstm_model(hidden=6):
    """What ``torch.onnx.export`` writes for ``nn.LSTM(batch_first=True)`` called without
    states: zero states built from the batch size (Shape/Gather/Concat/Expand),
    ``sequence_lens`` absent, Y squeezed and transposed back to batch-first."""
    rng = np.random.default_rng(7)
    weights = [tensor(name, rng.uniform(-0.5, 0.5, shape).astype(np.float32)) for name, shape in
               (("W", (1, 4 * hidden, 3)), ("R", (1, 4 * hidden, hidden)),
                ("B", (1, 8 * hidden)))]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axis0"], ["batch1"]),
        helper.make_node("Concat", ["one", "batch1", "hidden"], ["state_shape"], axis=0),
        helper.make_node("Expand", ["zeros", "state_shape"], ["h0"]),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["xt", "W", "R", "B", "", "h0", "h0"], ["Y", "Y_h", "Y_c"],
                         hidden_size=hidden, name="/lstm/LSTM"),
        helper.make_node("Squeeze", ["Y", "axis1"], ["ys"]),
        helper.make_node("Transpose", ["ys"], ["out"], perm=[1, 0, 2]),
    ]
    inits = weights + [tensor("zero", np.int64(0)), tensor("axis0", np.array([0], np.int64)),
                       tensor("axis1", np.array([1], np.int64)),
                       tensor("one", np.array([1], np.int64)),
                       tensor("hidden", np.array([hidden], np.int64)),
                       tensor("zeros", np.zeros((1, 1, 1), np.float32))]
    return model(nodes, [vinfo("x", ["batch", "seq", 3])],
                 [vinfo("out", ["batch", "seq", hidden]), vinfo("Y_h", [1, "batch", hidden])],
                 inits, opset=14)


def test_torch_style_lstm_through_compile(tmp_path):
    proto = _torch_lstm_model()
    x = np.random.default_rng(8).standard_normal((2, 5, 3)).astype(np.float32)
    got = product_run(proto, {"x": x}, tmp_path / "a", {"x": (2, 5, 3)})
    assert_like_ort(proto, {"x": x}, got)


def test_constant_weights_become_named_matmul_weights():
    imported = import_onnx(_torch_lstm_model(), input_shapes={"x": (2, 5, 3)})
    assert {name for name in imported.params if name.startswith(("W_d0", "R_d0"))}
    assert all(v.ndim == 2 for k, v in imported.params.items() if k.startswith(("W_", "R_")))


def test_unfixed_sequence_length_refused():
    with pytest.raises(UnsupportedOpError, match=r"LSTM node '/lstm/LSTM': its sequence length "
                                                 r"\(dim 0 of 'xt'\) is not fixed; .*"
                                                 r"--input-shape"):
        import_onnx(_torch_lstm_model())


def test_recurrent_node_in_a_runtime_branch_that_cannot_fit_is_named():
    """silero-vad's pattern: an If on a run-time input whose other branch only works for
    other input shapes (there its LSTM gets a 4-D input). Both branches are compiled, so
    the error names the cell, the problem and the If."""
    proto, _ = cell_model("GRU", steps=2, batch=1, inputs=3, hidden=2, initial=False)
    cell = proto.graph.node[0]
    bad = helper.make_node("Unsqueeze", ["x", "axis0"], ["x4"])
    cell_copy = helper.make_node("GRU", ["x4", "W", "R", "B"], ["Y2", "Y_h2"], hidden_size=2,
                                 name="gru_other")
    then = helper.make_graph([cell], "t", [], [vinfo("Y_h", None)])
    other = helper.make_graph([bad, cell_copy], "e", [], [vinfo("Y_h2", None)])
    gate = helper.make_node("If", ["c"], ["h"], then_branch=then, else_branch=other, name="gate")
    graph = helper.make_graph([gate], "test", [vinfo("c", [], TensorProto.BOOL),
                                               vinfo("x", [2, 1, 3])], [vinfo("h", [1, 1, 2])],
                              list(proto.graph.initializer) + [tensor("axis0", np.array([0]))])
    bad_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError, match=r"GRU node 'gru_other': its input 'x4' has 4 "
                                                 r"dims; GRU takes 3 \(in the else branch of If "
                                                 r"node 'gate', decided at run time"):
        import_onnx(bad_model)
