"""Kernels called again and again on one large constant weight (an LSTM's recurrent
product) walk it forwards and backwards in turn (targets/cpu/alternate_traversal.py):
the reversed kernel computes the same values, and every other step of an LSTM with
recurrent weights of at least 1 MiB calls it; outputs against onnxruntime."""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from conftest import float_model, ort_run
from onnx import helper, numpy_helper
from tvm.script import tirx as T

import hwcompile
from hwcompile.targets.cpu.alternate_traversal import reversed_twin


@T.prim_func(private=True)
def _column_sums(a: T.Buffer((6, 40), "float32"), out: T.Buffer((40,), "float32")):
    T.func_attr({"tirx.noalias": True})
    for j in T.parallel(5):
        for c in range(8):
            out[j * 8 + c] = T.float32(0)
            for r in range(6):
                out[j * 8 + c] = out[j * 8 + c] + a[r, j * 8 + c] * T.float32(j + 1)


def _run(func: tvm.tirx.PrimFunc, a: np.ndarray) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), "llvm")
    out = tvm.runtime.tensor(np.zeros(40, np.float32))
    lib["main"](tvm.runtime.tensor(a), out)
    return out.numpy()


def test_reversed_twin_computes_the_same_values():
    """The parallel loop runs from its last iteration down; every index the body derives
    from it (the columns, the scale ``j + 1``) follows, so the output is the same."""
    twin = reversed_twin(_column_sums)
    assert twin is not None and not tvm_ffi.structural_equal(twin, _column_sums)
    a = np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32)
    want = a.astype(np.float64).sum(0) * np.repeat(np.arange(1, 6), 8)
    np.testing.assert_allclose(_run(_column_sums, a), want, rtol=1e-5)
    np.testing.assert_allclose(_run(twin, a), want, rtol=1e-5)


def test_kernel_without_a_parallel_loop_has_no_twin():
    @T.prim_func(private=True)
    def serial(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32")):
        for i in range(8):
            b[i] = a[i] * T.float32(2)

    assert reversed_twin(serial) is None


def _lstm(hidden: int, seq: int = 4, inputs: int = 16):
    rng = np.random.default_rng(1)
    scale = 1 / np.sqrt(hidden)
    weights = [numpy_helper.from_array(rng.uniform(-scale, scale, shape).astype(np.float32), n)
               for n, shape in (("W", (2, 4 * hidden, inputs)), ("R", (2, 4 * hidden, hidden)),
                                ("B", (2, 8 * hidden)))]
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=hidden,
                            direction="bidirectional")
    return float_model("lstm", [node], weights, {"x": [seq, 1, inputs]},
                       {"y": [seq, 2, 1, hidden]})


def _step_kernels(art) -> list[str]:
    """The kernels of the recurrent products, in call order (the VM's code)."""
    text = tvm.runtime.load_module(str(art / "model.so"))["as_text"]()
    return [line.split()[1] for line in text.splitlines()
            if line.strip().startswith("call") and "matmul" in line.split()[1]]


def test_lstm_steps_alternate_directions_over_large_recurrent_weights(tmp_path):
    """Recurrent weights of 1 MiB per direction (hidden 256): within each direction every
    other step calls the reversed kernel; the outputs are onnxruntime's."""
    model = _lstm(256)
    path = tmp_path / "lstm.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art")
    calls = _step_kernels(art)
    reversed_calls = [c for c in calls if c.endswith("_reversed")]
    # 3 recurrent products per direction (the first step's h0 = 0 is folded): one reversed
    assert len(reversed_calls) == 2, calls
    x = np.random.default_rng(2).standard_normal((4, 1, 16)).astype(np.float32)
    [want] = ort_run(model, {"x": x})
    got = hwcompile.load(art)(x)
    assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()


def test_small_recurrent_weights_keep_one_kernel(tmp_path):
    model = _lstm(32)
    path = tmp_path / "lstm.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art")
    assert not any(c.endswith("_reversed") for c in _step_kernels(art))
