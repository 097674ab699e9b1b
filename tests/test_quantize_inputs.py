"""Bad input to quantization: calibration data and schemes a target cannot execute.
Each case must fail fast, before anything is compiled, with a message naming the problem."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import HWCOMPILE
from test_quantize import conv_dense_model

import hwcompile
from hwcompile.calibration_data import load_calibration
from hwcompile.errors import CalibrationError, PassError
from hwcompile.frontend import import_onnx
from hwcompile.model import TensorSpec
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.target import Constraints, QuantScheme, Target

X = TensorSpec("x", ("N", 3, 8, 8), "float32")
FIXED = TensorSpec("x", (1, 3, 8, 8), "float32")


def good(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 8, 8)).astype(np.float32)


def test_loader_accepts_npz_directory_mapping_and_iterable(tmp_path):
    np.savez(tmp_path / "a.npz", x=good(3))
    np.save(tmp_path / "b.npy", good(2))
    assert load_calibration(tmp_path / "a.npz", [X]).num_samples == 3
    assert load_calibration(tmp_path, [X]).num_samples == 5
    assert load_calibration({"x": good(70)}, [X]).num_samples == 70
    assert len(load_calibration({"x": good(70)}, [X]).feeds) == 2  # batches of 64
    stacked = load_calibration({"x": good(3)[:, None]}, [FIXED])  # (S, 1, 3, 8, 8)
    assert stacked.num_samples == 3 and stacked.feeds[0]["x"].shape == (1, 3, 8, 8)
    items = load_calibration(iter([good(2), {"x": good(1)}]), [X])
    assert items.num_samples == 3 and items.feeds[0]["x"].dtype == np.float32


def test_labels_follow_the_samples(tmp_path):
    np.savez(tmp_path / "a.npz", x=good(3), labels=np.array([1, 2, 3]))
    np.savez(tmp_path / "b.npz", x=good(2), labels=np.array([4, 5]))
    assert load_calibration(tmp_path, [X]).labels.tolist() == [1, 2, 3, 4, 5]
    mapped = load_calibration({"x": good(70), "labels": np.arange(70)}, [X])
    assert mapped.labels.dtype == np.int64 and mapped.head(64).labels.tolist() == list(range(64))
    assert load_calibration({"x": good(3)}, [X]).labels is None


@pytest.mark.parametrize("data, message", [
    ({"x": np.zeros((4, 3, 9, 9), np.float32)}, "input 'x' has shape 4x3x9x9; expected samples"),
    ({"x": np.zeros((4, 3, 8, 8), np.int32)}, "input 'x' has dtype int32, expected a floating"),
    ({"y": good()}, "no data for input 'x'; keys are y"),
    ({"x": good(0)}, "the calibration set is empty"),
    ([], "the calibration set is empty"),
    (None, "quantization needs calibration data"),
    ([np.zeros((2, 3, 8), np.float32)], "calibration item 0: input 'x' has shape 2x3x8"),
    ({"x": good(4), "labels": np.arange(3)}, "'labels': 3 values of type int64 for 4 samples"),
    ({"x": good(4), "labels": np.zeros(4)}, "'labels': 4 values of type float64 for 4 samples"),
])
def test_bad_calibration_data(data, message):
    with pytest.raises(CalibrationError, match=message.replace("(", r"\(")):
        load_calibration(data, [X])


@pytest.mark.parametrize("bad, kind", [(np.nan, "NaN"), (np.inf, "Inf")])
def test_non_finite_calibration_data(bad, kind):
    data = good()
    data[2, 1, 3, 4] = bad
    with pytest.raises(CalibrationError, match=rf"contains {kind} \(first at index \(2, 1, 3, 4\)\)"):
        load_calibration({"x": data}, [X])


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(CalibrationError, match="no such calibration file"):
        load_calibration(tmp_path / "nope.npz", [X])
    (tmp_path / "data.txt").write_text("1 2 3")
    with pytest.raises(CalibrationError, match=r"must be \.npz or \.npy"):
        load_calibration(tmp_path / "data.txt", [X])


class ShiftOnlyTarget(Target):
    """A VTA-like target: symmetric, per-tensor, power-of-two scales."""

    name = "shift-only"
    constraints = Constraints(quant_scheme=QuantScheme("per-tensor", True, True))


@pytest.mark.parametrize("options, message", [
    ("granularity=per-channel", "cannot execute per-channel weight scales"),
    ("power_of_two=false", "cannot execute non-power-of-two scales"),
    ("symmetric=false", "cannot execute affine activations"),
])
def test_scheme_the_target_cannot_execute(options, message, tmp_path):
    with pytest.raises(PassError, match=message):
        hwcompile.compile(conv_dense_model(), ShiftOnlyTarget(), tmp_path / "out",
                          passes=f"fold-constants,quantize({options})",
                          calibration={"x": good()})
    assert not (tmp_path / "out").exists()


def test_target_scheme_is_the_default():
    source = import_onnx(conv_dense_model())
    ctx = PassContext(constraints=ShiftOnlyTarget.constraints, calibration={"x": good(8)})
    model, report = run_pipeline(source, parse_spec("fold-constants,quantize"), ctx)
    scheme = report[-1]["details"]["scheme"]
    assert scheme["power_of_two_scales"] and scheme["weights"].endswith("per-tensor")
    for layer in model.annotations["quantization"]["layers"].values():
        for qp in layer["input"] + [layer["output"]] * (layer["output"] != "float32"):
            assert qp["zero_point"] == 0 and np.log2(qp["scale"]) == round(np.log2(qp["scale"]))
        if "requant" in layer:
            assert layer["requant"]["kind"] == "shift"


def test_unknown_keep_float_layer():
    source = import_onnx(conv_dense_model())
    with pytest.raises(PassError, match="no layer named nope; layers are w, fw"):
        run_pipeline(source, parse_spec("fold-constants,quantize(keep_float=[nope])"),
                     PassContext(calibration={"x": good()}))


def test_cli_reports_bad_calibration_as_one_error_line(tmp_path):
    import onnx

    onnx.save(conv_dense_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3, 8, 8), np.float64) + np.inf)
    result = subprocess.run([HWCOMPILE, "compile", str(tmp_path / "m.onnx"), "--target", "cpu",
                             "-o", str(tmp_path / "out"), "--passes", "fold-constants,quantize",
                             "--calibration", str(tmp_path / "bad.npz")],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[hwcompile")]
    assert len(errors) == 1 and errors[0].startswith("error:") and "contains Inf" in errors[0]
    assert "Traceback" not in result.stderr
