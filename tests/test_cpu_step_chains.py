"""A recurrence's small per-step kernels run as one kernel (targets/cpu/step_chains.py):
far fewer VM calls, the same outputs bit for bit as the unmerged build, and onnxruntime's
within float rounding."""

from __future__ import annotations

import numpy as np
import tvm
from conftest import ort_run
from test_cpu_recurrent_steps import _recurrent_model

import hwcompile
from hwcompile.targets.cpu import pipeline


def _build(model, out_dir):
    path = out_dir / "model.onnx"
    path.write_bytes(model.SerializeToString())
    hwcompile.compile(str(path), "cpu", out_dir / "art")
    loaded = hwcompile.load(out_dir / "art")
    lowering = loaded.metadata["target_extra"]["lowering"]
    assert lowering["pipeline"] == "hwcompile-cpu", lowering.get("fallback_reason")
    return loaded


def _run_counting_calls(loaded, x) -> tuple[np.ndarray, int]:
    """The output and how many VM calls (kernels and builtins) one model call made."""
    calls = []

    def instrument(func, name, before_run, ret_value, *args):
        if before_run:
            calls.append(name)
        return 0  # VMInstrumentReturnKind.NO_OP

    loaded._vm.set_instrument(tvm.runtime.convert(instrument))
    return loaded(x), len(calls)


def test_lstm_and_gru_steps_run_as_one_kernel(tmp_path, monkeypatch):
    model = _recurrent_model(hidden=16)  # hidden 8 trips batch_matmul.py: stock lowering
    x = np.random.default_rng(8).standard_normal((5, 1, 6)).astype(np.float32)
    merged, merged_calls = _run_counting_calls(_build(model, tmp_path), x)

    (tmp_path / "plain").mkdir()
    monkeypatch.setattr(pipeline, "merge_step_chains", tvm.transform.Sequential([]))
    plain, plain_calls = _run_counting_calls(_build(model, tmp_path / "plain"), x)

    # per LSTM step 3 kernels (cell, hidden, h·R) and per GRU step 2, each with its
    # allocation: 10 + 5 steps' worth of calls gone
    assert merged_calls < plain_calls / 2, (merged_calls, plain_calls)
    np.testing.assert_array_equal(merged, plain)
    [want] = ort_run(model, {"x": x})
    assert np.abs(merged - want).max() <= 1e-6 * max(np.abs(want).max(), 1.0)
