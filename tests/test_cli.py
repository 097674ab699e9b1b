"""The command line: each verb once, and every bad input the issue names gives one clear
`error:` line, a non-zero exit, no traceback, and nothing half-written."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import pytest
from conftest import HWCOMPILE, conv_bn_model, ort_run
from onnx import TensorProto, helper

from hwcompile import cli


def run_cli(capfd, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err and "Check failed" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture()
def two_input_onnx(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "two_inputs",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


# --- the verbs ---------------------------------------------------------------------------

def test_compile_run_verify_bench_inspect(capfd, tmp_path, conv_bn_onnx):
    art = tmp_path / "art"
    code, _, err = run_cli(capfd, "compile", conv_bn_onnx, "-o", art)
    assert code == 0 and "pass 1/3: fold-constants" in err  # progress on stderr
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, _ = run_cli(capfd, "run", art, "-i", tmp_path / "x.npy", "-o", tmp_path / "y.npz")
    assert code == 0 and "y: shape (3, 10)" in out
    got = np.load(tmp_path / "y.npz")["y"]
    assert np.abs(got - ort_run(conv_bn_onnx, {"x": x})[0]).max() <= 1e-4
    np.savez(tmp_path / "in.npz", x=x)
    code, out, _ = run_cli(capfd, "verify", conv_bn_onnx, art, "-i", tmp_path / "in.npz")
    assert code == 0 and "top-1 agreement 1.0000" in out and "[ok" in out
    code, out, _ = run_cli(capfd, "bench", art, "--repeat", "5", "--warmup", "1", "--threads", "1")
    assert code == 0 and "5 runs after 1 warm-up, 1 threads" in out
    for key in ("mean", "median", "p90", "min", "std"):
        assert f"{key} " in out
    code, out, _ = run_cli(capfd, "inspect", art, "--graph", tmp_path / "g.dot")
    assert code == 0 and "pipeline: fold-constants, fold-batchnorm, dce" in out
    assert (tmp_path / "g.dot").read_text() == (art / "graph.dot").read_text()


def test_verify_reports_mismatch_with_exit_1(capfd, tmp_path, conv_bn_onnx):
    """An artifact compiled from a different model must fail verification."""
    other = tmp_path / "other.onnx"
    proto = conv_bn_model()
    proto.graph.initializer[0].float_data[:] = []
    weights = onnx.numpy_helper.to_array(proto.graph.initializer[0]) * 1.5
    proto.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(weights, proto.graph.initializer[0].name))
    onnx.save(proto, other)
    art = tmp_path / "art"
    assert run_cli(capfd, "compile", other, "-o", art)[0] == 0
    code, out, _ = run_cli(capfd, "verify", conv_bn_onnx, art)
    assert code == 1 and "MISMATCH" in out


def test_passes_and_targets_listings(capfd):
    code, out, _ = run_cli(capfd, "passes")
    assert code == 0 and "fold-batchnorm" in out and "fold-constants" in out and "dce" in out
    code, out, _ = run_cli(capfd, "targets", "--tags")
    assert code == 0 and out.startswith("cpu:") and "nvidia/" in out


def test_console_script_exit_code(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model")
    proc = subprocess.run([HWCOMPILE, "compile", str(bad), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc.returncode, proc.stderr, "not a readable ONNX model")


# --- bad inputs ----------------------------------------------------------------------------

def test_not_onnx_file(capfd, tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_bytes(b"\x00\x01garbage that is not protobuf\xff" * 10)
    code, _, err = run_cli(capfd, "compile", bad, "-o", tmp_path / "out")
    assert_one_line_error(code, err, str(bad), "not a readable ONNX model")
    assert not (tmp_path / "out").exists()


def test_missing_file(capfd, tmp_path):
    code, _, err = run_cli(capfd, "compile", tmp_path / "nope.onnx", "-o", tmp_path / "out")
    assert_one_line_error(code, err, "nope.onnx: no such model file")


def test_truncated_file(capfd, tmp_path):
    data = conv_bn_model().SerializeToString()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capfd, "compile", bad, "-o", tmp_path / "out")
    assert_one_line_error(code, err, str(bad))
    assert not (tmp_path / "out").exists()


def test_unsupported_ops_listed_with_nodes(capfd, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"], name="ok"),
         helper.make_node("FancyOp", ["a"], ["b"], name="fancy_1", domain="com.example"),
         helper.make_node("FancyOp", ["b"], ["c"], name="fancy_2", domain="com.example"),
         helper.make_node("Relu", ["c"], ["y"], name="ok2")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    code, _, err = run_cli(capfd, "compile", path, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "unsupported operators", "com.example.FancyOp",
                          "fancy_1", "fancy_2")


def test_wrong_input_shape_and_dtype_at_run(capfd, tmp_path, conv_bn_artifact):
    np.save(tmp_path / "shape.npy", np.zeros((1, 3, 9, 8), np.float32))
    code, _, err = run_cli(capfd, "run", conv_bn_artifact, "-i", tmp_path / "shape.npy", "-o", tmp_path / "o.npz")
    assert_one_line_error(code, err, "input 'x': shape 1x3x9x8, expected Nx3x8x8")
    np.save(tmp_path / "dtype.npy", np.zeros((1, 3, 8, 8), np.float64))
    code, _, err = run_cli(capfd, "run", conv_bn_artifact, "-i", tmp_path / "dtype.npy", "-o", tmp_path / "o.npz")
    assert_one_line_error(code, err, "input 'x': dtype float64, expected float32")
    assert not (tmp_path / "o.npz").exists()


def test_missing_and_unknown_inputs(capfd, tmp_path, two_input_onnx):
    art = tmp_path / "two"
    assert run_cli(capfd, "compile", two_input_onnx, "-o", art)[0] == 0
    np.savez(tmp_path / "only_a.npz", a=np.zeros((2, 3), np.float32))
    code, _, err = run_cli(capfd, "run", art, "-i", tmp_path / "only_a.npz")
    assert_one_line_error(code, err, "missing input 'b' (shape 2x3, float32)")
    np.savez(tmp_path / "typo.npz", a=np.zeros((2, 3), np.float32), c=np.zeros((2, 3), np.float32))
    code, _, err = run_cli(capfd, "run", art, "-i", tmp_path / "typo.npz")
    assert_one_line_error(code, err, "unknown input 'c'", "a, b")


def test_unknown_target(capfd, tmp_path, conv_bn_onnx):
    code, _, err = run_cli(capfd, "compile", conv_bn_onnx, "--target", "tpu9", "-o", tmp_path / "out")
    assert_one_line_error(code, err, "unknown target 'tpu9'", "available: cpu")
    assert not (tmp_path / "out").exists()


def test_unknown_pass_and_bad_option(capfd, tmp_path, conv_bn_onnx):
    code, _, err = run_cli(capfd, "compile", conv_bn_onnx, "--passes", "fold-constants,frobnicate",
                           "-o", tmp_path / "out")
    assert_one_line_error(code, err, "unknown pass 'frobnicate'")
    code, _, err = run_cli(capfd, "compile", conv_bn_onnx, "--passes", "dce(level=3)", "-o", tmp_path / "out")
    assert_one_line_error(code, err, "pass 'dce' has no option 'level'")
    code, _, err = run_cli(capfd, "compile", conv_bn_onnx, "--input-shape", "x=1xthree", "-o", tmp_path / "out")
    assert_one_line_error(code, err, "bad --input-shape 'x=1xthree'")
    assert not (tmp_path / "out").exists()


def test_modified_artifact_file(capfd, tmp_path, conv_bn_onnx):
    art = tmp_path / "art"
    assert run_cli(capfd, "compile", conv_bn_onnx, "-o", art)[0] == 0
    with open(art / "model.so", "r+b") as f:
        f.seek(100)
        f.write(b"\x00tampered")
    code, _, err = run_cli(capfd, "run", art)
    assert_one_line_error(code, err, "'model.so' was modified after compilation")


def test_other_schema_version(capfd, tmp_path, conv_bn_onnx):
    art = tmp_path / "art"
    assert run_cli(capfd, "compile", conv_bn_onnx, "-o", art)[0] == 0
    meta = json.loads((art / "metadata.json").read_text())
    meta["schema_version"] = 99
    (art / "metadata.json").write_text(json.dumps(meta))
    code, _, err = run_cli(capfd, "bench", art)
    assert_one_line_error(code, err, "schema version 99", "recompile")


def test_not_an_artifact(capfd, tmp_path):
    code, _, err = run_cli(capfd, "run", tmp_path)
    assert_one_line_error(code, err, "not an hwcompile artifact (metadata.json is missing)")


def test_failed_build_leaves_nothing_behind(capfd, tmp_path, conv_bn_onnx):
    """A target that fails mid-build: no output directory, no staging leftovers."""
    from hwcompile.target import Target, register_target

    class Exploding(Target):
        name = "exploding"

        def build(self, model, out_dir):
            (out_dir / "model.so").write_bytes(b"partial")
            raise RuntimeError("linker crashed")

    register_target("exploding")(lambda argument: Exploding())
    code, _, err = run_cli(capfd, "compile", conv_bn_onnx, "--target", "exploding", "-o", tmp_path / "out")
    assert_one_line_error(code, err, "internal error", "linker crashed")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_non_artifact_directory(capfd, tmp_path, conv_bn_onnx):
    precious = tmp_path / "mydata"
    precious.mkdir()
    (precious / "keep.txt").write_text("important")
    code, _, err = run_cli(capfd, "compile", conv_bn_onnx, "-o", precious)
    assert_one_line_error(code, err, "exists and is not an hwcompile artifact")
    assert (precious / "keep.txt").read_text() == "important"
