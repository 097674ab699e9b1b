"""``--input-value NAME=NUMBER``: a scalar input fixed to a value becomes a constant, so
what depends on it folds (silero VAD's If on its sample rate) and the artifact no longer
takes it."""

from __future__ import annotations

import subprocess

import numpy as np
from conftest import HWCOMPILE, float_model, ort_run
from onnx import TensorProto, helper

import hwcompile


def _scaled_model():
    model = float_model("scaled", [helper.make_node("Mul", ["x", "s"], ["y"])], [],
                        {"x": [2, 3]}, {"y": [2, 3]})
    model.graph.input.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, []))
    return model


def test_fixed_scalar_input_becomes_a_constant(tmp_path):
    model = _scaled_model()
    art = hwcompile.compile(model, "cpu", tmp_path / "a", input_values={"s": 3.0})
    compiled = hwcompile.load(art)
    assert [spec.name for spec in compiled.inputs] == ["x"]
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(compiled(x), ort_run(model, {"x": x, "s": np.array(3, np.float32)})[0])


def test_bad_input_values_give_one_error_line(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_scaled_model().SerializeToString())
    for value, expected in (("t=1", "names 't'"), ("x=1", "only scalar numeric inputs"),
                            ("s=abc", "expected NAME=NUMBER")):
        proc = subprocess.run([HWCOMPILE, "compile", str(path), "-o", str(tmp_path / "o"),
                               "--input-value", value], capture_output=True, text=True,
                              check=False)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode != 0 and len(lines) == 1 and expected in lines[0], proc.stderr
