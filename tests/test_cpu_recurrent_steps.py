"""An LSTM step's input projection is read by its cell kernels, not taken by a kernel of
its own (targets/cpu/split_slices.py): a take of one index known at compile time is a
slice, and the gates ``take(xw, t) + h · R`` are summed per piece in the cell kernels.
Kernels and outputs against onnxruntime, through the product path."""

from __future__ import annotations

import numpy as np
import tvm
from conftest import float_model, ort_run
from onnx import helper, numpy_helper
from tvm import relax

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.target import resolve_target
from hwcompile.targets.cpu.split_slices import static_value, take_as_slice


def _recurrent_model(seq: int = 5, inputs: int = 6, hidden: int = 8):
    """A bidirectional LSTM, then a GRU over its outputs (lstm_gru's layers, smaller)."""
    rng = np.random.default_rng(6)
    shapes = {"W": (2, 4 * hidden, inputs), "R": (2, 4 * hidden, hidden), "B": (2, 8 * hidden),
              "GW": (1, 3 * hidden, 2 * hidden), "GR": (1, 3 * hidden, hidden),
              "GB": (1, 6 * hidden)}
    inits = [numpy_helper.from_array(rng.uniform(-0.5, 0.5, s).astype(np.float32), n)
             for n, s in shapes.items()]
    inits.append(numpy_helper.from_array(np.array([seq, 1, 2 * hidden], np.int64), "shape"))
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=hidden,
                              direction="bidirectional"),
             helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["yt", "shape"], ["g_in"]),
             helper.make_node("GRU", ["g_in", "GW", "GR", "GB"], ["g"], hidden_size=hidden,
                              linear_before_reset=1)]
    return float_model("recurrent", nodes, inits, {"x": [seq, 1, inputs]},
                       {"g": [seq, 1, 1, hidden]})


def _kernel_names(model) -> list[str]:
    mod = resolve_target("cpu").tunable_module(import_onnx(model).bound_module())
    return [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


def test_take_of_a_shape_derived_index_is_a_slice():
    """The ONNX importer's index of a Gather: ``where(t < 0, t + shape[0], t)``."""
    x = relax.Var("x", relax.TensorType((4, 1, 6), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            dims = bb.emit(relax.op.shape_to_tensor(bb.emit(relax.op.shape_of(x))))
            first = bb.emit(relax.op.take(dims, relax.const(0, "int64"), axis=0))
            two = relax.const(2, "int64")
            index = bb.emit(relax.op.where(relax.op.less(two, relax.const(0, "int64")),
                                           relax.op.add(two, first), two))
            take = relax.op.take(x, index, axis=0)
            out = bb.emit_output(take)
        bb.emit_func_output(out)
    func = bb.get()["main"]
    values = {b.var: b.value for b in func.body.blocks[0].bindings}
    assert static_value(index, values) == 2
    sliced = take_as_slice(take, values)
    assert sliced.op.name == "relax.squeeze"
    ty = relax.TensorType((4, 1, 6), "float32")
    assert take_as_slice(relax.op.take(relax.Var("y", ty), relax.Var("i", relax.TensorType(
        (), "int64")), axis=0), values).op.name == "relax.take"  # an index only known at run time
    flat = relax.op.take(relax.Var("z", ty), relax.const(3, "int64"))  # no axis: flattened
    assert take_as_slice(flat, values).op.name == "relax.take"


def test_lstm_and_gru_steps_take_no_kernel_of_their_own(tmp_path):
    model = _recurrent_model()
    names = _kernel_names(model)
    assert not [n for n in names if "take" in n], names
    # the cell kernels slice the projection themselves
    assert [n for n in names if "squeeze" in n and "sigmoid" in n], names
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art")
    x = np.random.default_rng(7).standard_normal((5, 1, 6)).astype(np.float32)
    [want] = ort_run(model, {"x": x})
    loaded = hwcompile.load(art)
    assert loaded.metadata["target_extra"]["lowering"]["pipeline"] == "hwcompile-cpu"
    got = loaded(x)
    assert np.abs(got - want).max() <= 1e-6 * max(np.abs(want).max(), 1.0)
