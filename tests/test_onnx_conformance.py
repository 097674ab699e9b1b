"""ONNX conformance through the product path (onnx wheel test models), and the legalize
rewrites behind it.

References are independent of TVM: the expected outputs shipped with the onnx test models,
onnxruntime, and (for PRelu-6, which onnxruntime does not implement) onnx's reference
evaluator plus a numpy formula.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_conformance
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from hwcompile.onnx_rewrite.importer_gaps import REWRITES, legalize

# What cannot pass, by design, and must end with its one-line error: Gradient (a training
# op), StringNormalizer (string tensors; TVM has no string dtype) and a SplitToSequence
# whose number of pieces is a run-time input value (no static shape can express it).
UNSUPPORTED = {
    "simple/test_sequence_model8": "SplitToSequence",
    "simple/test_gradient_of_add": "Gradient",
    "simple/test_gradient_of_add_and_mul": "Gradient",
    **{f"simple/test_strnorm_model_{name}": "StringNormalizer" for name in (
        "monday_casesensintive_lower", "monday_casesensintive_nochangecase",
        "monday_casesensintive_upper", "monday_empty_output",
        "monday_insensintive_upper_twodim", "nostopwords_nochangecase")},
}
# The full-size ImageNet CNNs take ~5-60 s each to compile and run: the default suite
# compiles the two smallest, ``-m slow`` all nine.
LIGHT_IN_DEFAULT_SUITE = ("light/light_squeezenet", "light/light_shufflenet")

# Failed with plain from_onnx (import error, build error or wrong output); pass legalized.
FIXED_MODELS = [
    "pytorch-converted/test_PReLU_1d_multiparam",
    "pytorch-converted/test_PReLU_2d_multiparam",
    "pytorch-converted/test_PReLU_3d_multiparam",
    "pytorch-operator/test_operator_index",
    "simple/test_expand_shape_model1",
    "simple/test_expand_shape_model2",
    "simple/test_expand_shape_model3",
    "simple/test_expand_shape_model4",
    "simple/test_sequence_model3",
    "simple/test_sequence_model6",
]


def _cases(keys):
    by_key = {c.key: c for c in onnx_conformance.discover_cases()}
    return [by_key[k] for k in keys]


def _check_product_results(results):
    """Every model passes, except the unsupportable ones, which fail at compile time with
    a one-line error naming their operator (never an internal error)."""
    problems = []
    for r in results:
        if r.key in UNSUPPORTED:
            if r.passed or r.stage != "compile" or UNSUPPORTED[r.key] not in r.reason \
                    or "InternalError" in r.reason:
                problems.append(f"{r.key}: expected a one-line {UNSUPPORTED[r.key]} error, got "
                                f"{r.status} [{r.stage}] {r.reason}")
        elif not r.passed:
            problems.append(f"{r.key}: [{r.stage}] {r.reason}")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def product_results():
    cases = [c for c in onnx_conformance.discover_cases()
             if c.kind != "light" or c.key in LIGHT_IN_DEFAULT_SUITE]
    return {r.key: r for r in onnx_conformance.run_coverage("product", cases)}


def test_discovers_all_shipped_models():
    cases = onnx_conformance.discover_cases()
    assert len(cases) == 149
    assert all(c.data_sets for c in cases)


def test_product_path_conformance(product_results):
    assert len(product_results) == 149 - 9 + len(LIGHT_IN_DEFAULT_SUITE)
    _check_product_results(product_results.values())


@pytest.mark.slow
def test_product_path_conformance_imagenet_models():
    cases = [c for c in onnx_conformance.discover_cases() if c.kind == "light"]
    assert len(cases) == 9
    _check_product_results(onnx_conformance.run_coverage("product", cases))


@pytest.mark.parametrize("key", FIXED_MODELS)
def test_previously_failing_model_passes(product_results, key):
    r = product_results[key]
    assert r.passed, f"{key}: [{r.stage}] {r.reason}"


def test_fixed_models_fail_on_tvms_stock_path():
    """The harness must see these fail on plain from_onnx (else the gain is not real)."""
    for case in _cases(FIXED_MODELS):
        r = onnx_conformance.run_case(case, mode="plain")
        assert not r.passed, case.key
        assert r.stage in ("compile", "run", "compare"), (case.key, r.stage)


def test_compare_outputs_detects_mismatch():
    ref = [np.array([1.0, 2.0, 3.0], dtype=np.float32)]
    ok, _, err = onnx_conformance.compare_outputs(ref, [ref[0] * (1 + 2e-3)], 1e-3, 1e-7)
    assert not ok and err == pytest.approx(6e-3, rel=1e-3)
    ok, _, _ = onnx_conformance.compare_outputs(ref, [ref[0] * (1 + 5e-4)], 1e-3, 1e-7)
    assert ok
    ok, reason, _ = onnx_conformance.compare_outputs(ref, [ref[0].astype(np.float64)], 1e-3, 1e-7)
    assert not ok and "dtype" in reason
    ok, reason, _ = onnx_conformance.compare_outputs(ref, [ref[0][:2]], 1e-3, 1e-7)
    assert not ok and "shape" in reason


# ----------------------------------------------------------------- rewrite unit tests


def _model(nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _tvm(model, feeds_list):
    """Import with from_onnx, build once for llvm, run every feed dict."""
    import warnings

    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    feeds = feeds_list[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = from_onnx(
            model,
            shape_dict={k: list(v.shape) for k, v in feeds.items()},
            dtype_dict={k: str(v.dtype) for k, v in feeds.items()},
        )
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    names = [i.name for i in model.graph.input
             if i.name not in {t.name for t in model.graph.initializer}]
    results = []
    for f in feeds_list:
        out = vm["main"](*[tvm.runtime.tensor(f[n]) for n in names])
        results.append(onnx_conformance._flatten_outputs(out))
    return results


def _report(model, **kw):
    rep: dict[str, int] = {}
    out = legalize(model, report=rep, **kw)
    return out, rep


def _check_semantics_and_tvm(model, feeds_list, rewrite_name):
    before = model.SerializeToString()
    legal, rep = _report(model)
    assert model.SerializeToString() == before, "legalize modified its input"
    assert rep[rewrite_name] >= 1, rep
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError:
        pass  # e.g. outputs declared without a shape; then only the runtimes judge
    else:
        onnx.checker.check_model(legal)
    tvm_outs = _tvm(legal, feeds_list)
    for feeds, got in zip(feeds_list, tvm_outs):
        want = _ort(model, feeds)
        assert len(want) == len(_ort(legal, feeds))
        for w, lw in zip(want, _ort(legal, feeds)):
            np.testing.assert_array_equal(lw, w)  # semantics preserved (onnxruntime)
        for w, g in zip(want, got):
            assert g.shape == w.shape and g.dtype == w.dtype
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def _prelu6(x_shape, slope_as_input):
    c = x_shape[1]
    slope = np.linspace(0.1, 0.9, c).astype(np.float32)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    inits = []
    if slope_as_input:
        inputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [c]))
    else:
        inits.append(numpy_helper.from_array(slope, "s"))
    node = helper.make_node("PRelu", ["x", "s"], ["y"])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, x_shape)
    return _model([node], inputs, [out], inits, opset=6), slope


@pytest.mark.parametrize(
    "x_shape,slope_as_input",
    [([2, 3, 4], False), ([1, 3, 4, 5], False), ([2, 3, 2, 2, 2], True)],
)
def test_prelu_channel_slope(x_shape, slope_as_input):
    # onnxruntime has no PRelu-6 kernel: the references are onnx's ReferenceEvaluator and
    # the opset-6 definition (per-channel slope on axis 1) written in numpy.
    model, slope = _prelu6(x_shape, slope_as_input)
    legal, rep = _report(model)
    assert rep["prelu_channel_slope"] == 1
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    feeds = {"x": x} | ({"s": slope} if slope_as_input else {})
    bshape = [1, len(slope)] + [1] * (len(x_shape) - 2)
    want = np.where(x > 0, x, x * slope.reshape(bshape))
    np.testing.assert_array_equal(ReferenceEvaluator(model).run(None, feeds)[0], want)
    np.testing.assert_array_equal(ReferenceEvaluator(legal).run(None, feeds)[0], want)
    (got,) = _tvm(legal, [feeds])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_prelu_rewrite_leaves_opset7_alone():
    model, _ = _prelu6([2, 3, 4], False)
    model.opset_import[0].version = 7  # opset 7+: numpy broadcasting, TVM is right
    legal, rep = _report(model)
    assert rep["prelu_channel_slope"] == 0
    assert legal.SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize(
    "starts,ends,axes",
    [
        ([0], [1], [0]),  # test_operator_index's slice (whole dim 0)
        ([1, -4], [2**63 - 1, 3], [0, 2]),  # clamped end, negative start, two axes
        ([-3, 1], [-1, 4], None),  # default axes
    ],
)
def test_slice_attrs_to_split(starts, ends, axes):
    x_shape = [4, 5, 6]
    attrs = {"starts": starts, "ends": ends} | ({"axes": axes} if axes else {})
    node = helper.make_node("Slice", ["x"], ["y"], **attrs)
    model = _model(
        [node, helper.make_node("Relu", ["y"], ["z"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        opset=9,
    )
    x = np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)
    _check_semantics_and_tvm(model, [{"x": x}], "slice_attrs_to_split")


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_expand_runtime_shape(dtype):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    node = helper.make_node("Expand", ["x", "shape"], ["y"])
    model = _model(
        [node],
        [
            helper.make_tensor_value_info("x", elem, [1, 3, 1]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", elem, None)],
        opset=13,
    )
    x = np.arange(3).reshape(1, 3, 1).astype(dtype)
    # shorter target shape (import error in plain TVM): one build, several shape values
    feeds = [{"x": x, "shape": np.array(s, dtype=np.int64)} for s in ([3, 4], [1, 5], [3, 1])]
    _check_semantics_and_tvm(model, feeds, "expand_runtime_shape")


@pytest.mark.parametrize("target", [[2, 1, 6], [2, 1, 1, 1]])
def test_expand_runtime_shape_keeps_input_dims(target):
    # a 1 in the target keeps the input dim (plain TVM returned the wrong shape)
    node = helper.make_node("Expand", ["x", "shape"], ["y"])
    model = _model(
        [node],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [len(target)]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    x = np.array([1.5, -2.0, 3.25], dtype=np.float32).reshape(1, 3, 1)
    _check_semantics_and_tvm(
        model, [{"x": x, "shape": np.array(target, dtype=np.int64)}], "expand_runtime_shape"
    )


@pytest.mark.parametrize("y_shape", [[2], [2, 1, 4]])
def test_expand_shape_from_shape_op(y_shape):
    # Expand(x, Shape(y)): the importer sees a ShapeExpr; a shorter one failed an assertion.
    # The rewrite substitutes the statically inferred result shape; the full-rank case
    # (which plain TVM already handled) must keep working.
    nodes = [helper.make_node("Shape", ["y"], ["s"]), helper.make_node("Expand", ["x", "s"], ["z"])]
    model = _model(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 1]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )
    feeds = {"x": np.array([[1.0], [-2.0], [3.5]], dtype=np.float32),
             "y": np.zeros(y_shape, dtype=np.float32)}
    _check_semantics_and_tvm(model, [feeds], "expand_runtime_shape")


def test_expand_constant_shape_untouched():
    node = helper.make_node("Expand", ["x", "shape"], ["y"])
    model = _model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([3, 4], dtype=np.int64), "shape")],
    )
    legal, rep = _report(model)
    assert rep["expand_runtime_shape"] == 0
    assert legal.SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize(
    "opset,split,attrs",
    [
        (12, None, {"axis": -1}),  # test_sequence_model6's form: pieces of 1, kept dims
        (12, None, {"axis": 1, "keepdims": 0}),  # pieces squeezed
        (13, np.array(3, dtype=np.int64), {"axis": 2}),  # scalar split, uneven: [3, 1]
        (13, np.array([1, 2], dtype=np.int64), {"axis": 0}),
    ],
)
def test_split_to_sequence_static(opset, split, attrs):
    ins = ["x"] + (["split"] if split is not None else [])
    inits = [numpy_helper.from_array(split, "split")] if split is not None else []
    nodes = [
        helper.make_node("SplitToSequence", ins, ["seq"], **attrs),
        helper.make_node("SequenceLength", ["seq"], ["n"]),
        helper.make_node("SequenceAt", ["seq", "one"], ["second"]),
    ]
    inits.append(numpy_helper.from_array(np.array(1, dtype=np.int64), "one"))
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3, 4])],
        [
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
            helper.make_tensor_value_info("second", TensorProto.FLOAT, None),
        ],
        inits,
        opset=opset,
    )
    x = np.random.default_rng(2).standard_normal((3, 3, 4)).astype(np.float32)
    _check_semantics_and_tvm(model, [{"x": x}], "split_to_sequence_static")


@pytest.mark.parametrize("pos", [-1, -2])  # ONNX range is [-len, len]
def test_sequence_insert_position(pos):
    t = TensorProto.FLOAT
    nodes = [
        helper.make_node("SequenceConstruct", ["a", "b"], ["s1"]),
        helper.make_node("SequenceInsert", ["s1", "c", "pos"], ["s2"]),
        helper.make_node("ConcatFromSequence", ["s2"], ["y"], axis=0),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info(n, t, [1, 2]) for n in "abc"],
        [helper.make_tensor_value_info("y", t, None)],
        [numpy_helper.from_array(np.array(pos, dtype=np.int64), "pos")],
        opset=12,
    )
    feeds = {n: np.full((1, 2), i, dtype=np.float32) for i, n in enumerate("abc")}
    _check_semantics_and_tvm(model, [feeds], "sequence_insert_position")


def test_several_nodes_in_one_model():
    # two Slice-1 and two run-time Expand nodes: every one is rewritten, order preserved
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    nodes = [
        helper.make_node("Slice", ["x"], ["a"], starts=[1], ends=[3], axes=[1]),
        helper.make_node("Slice", ["x"], ["b"], starts=[0, 1], ends=[1, 100], axes=[0, 2]),
        helper.make_node("Expand", ["a", "s1"], ["ya"]),
        helper.make_node("Expand", ["b", "s2"], ["yb"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", f, [2, 4, 3]),
         helper.make_tensor_value_info("s1", i64, [2]),
         helper.make_tensor_value_info("s2", i64, [4])],
        [helper.make_tensor_value_info("ya", f, None), helper.make_tensor_value_info("yb", f, None)],
        opset=9,
    )
    x = np.random.default_rng(3).standard_normal((2, 4, 3)).astype(np.float32)
    feeds = {"x": x, "s1": np.array([2, 1], dtype=np.int64),
             "s2": np.array([3, 1, 1, 2], dtype=np.int64)}
    _, rep = _report(model)
    assert rep["slice_attrs_to_split"] == 2 and rep["expand_runtime_shape"] == 2
    _check_semantics_and_tvm(model, [feeds], "expand_runtime_shape")


def test_legalize_is_identity_without_gaps():
    node = helper.make_node("Relu", ["x"], ["y"])
    model = _model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    legal, rep = _report(model)
    assert set(rep) == {r.__name__ for r in REWRITES}
    assert not any(rep.values())
    assert legal.SerializeToString() == model.SerializeToString()
