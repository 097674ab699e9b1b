"""The pass registry, spec strings, reports, IR dumps, plugins, and the folding passes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, conv_bn_model, ort_run

import hwcompile
from hwcompile import graph, pipeline
from hwcompile.errors import PassError
from hwcompile.frontend import import_onnx
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.rewrite import call_name, dataflow_bindings


def _ops(model) -> list[str]:
    return [call_name(b.value) for b in dataflow_bindings(model.main) if call_name(b.value)]


def _run_compiled(model, x):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(model.bound_module(), "llvm"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_folding_removes_batchnorm_and_keeps_numerics():
    proto = conv_bn_model()
    model = import_onnx(proto)
    folded, report = run_pipeline(model, parse_spec("fold-constants,fold-batchnorm,dce"))
    assert "relax.nn.batch_norm" in _ops(model)
    assert "relax.nn.batch_norm" not in _ops(folded)
    assert "relax.permute_dims" not in _ops(folded)  # Gemm's transposed weight was folded
    # BN's four vectors are gone; the conv bias is replaced by the folded bias.
    assert folded.num_params == 8 * 27 + 8 + 10 * 8 + 10
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    assert np.abs(_run_compiled(folded, x) - ort_run(proto, {"x": x})[0]).max() <= 1e-4
    assert [r["pass"] for r in report] == ["fold-constants", "fold-batchnorm", "dce"]
    bn_entry = report[1]
    assert bn_entry["before"]["params"] - bn_entry["after"]["params"] == 4 * 8
    assert bn_entry["after"]["weight_bytes"] == folded.weight_bytes
    assert bn_entry["after"]["macs"] == graph.total_macs(folded)


def test_fold_batchnorm_alone_still_correct_without_fold_constants():
    """Without fold-constants the conv bias is a reshape, not a weight: BN then becomes a
    multiply-add with folded vectors instead of disappearing, and numerics still hold."""
    proto = conv_bn_model()
    model, _ = run_pipeline(import_onnx(proto), parse_spec("fold-batchnorm"))
    assert "relax.nn.batch_norm" not in _ops(model)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert np.abs(_run_compiled(model, x) - ort_run(proto, {"x": x})[0]).max() <= 1e-4


def test_digits_model_folds_every_batchnorm(digits_onnx):
    model = import_onnx(digits_onnx)
    folded, _ = run_pipeline(model, parse_spec("fold-constants,fold-batchnorm,dce"))
    assert _ops(model).count("relax.nn.batch_norm") == 6
    assert "relax.nn.batch_norm" not in _ops(folded)
    assert "relax.multiply" not in _ops(folded)  # every BN went into its conv


def test_spec_parsing_types_and_errors():
    calls = parse_spec("fold-constants, dce")
    assert [c.name for c in calls] == ["fold-constants", "dce"]
    with pytest.raises(PassError, match="unknown pass 'nope'.*available: .*fold-batchnorm"):
        parse_spec("fold-constants,nope")
    with pytest.raises(PassError, match="has no option 'ratio'"):
        parse_spec("dce(ratio=0.5)")
    with pytest.raises(PassError, match="unbalanced"):
        parse_spec("dce(")


def _register_options_pass():
    from typing import Literal

    @pipeline.register_pass("test-options")
    def options_pass(model, ctx, *, ratio: float = 0.5, steps: int = 1, mode: Literal["a", "b"] = "a",
                     names: list[str] | None = None, flag: bool = False):
        ctx.details["seen"] = {"ratio": ratio, "steps": steps, "mode": mode, "names": names, "flag": flag}
        return model


def test_typed_options_are_converted_and_checked():
    _register_options_pass()
    (call,) = parse_spec("test-options(ratio=0.25, steps=3, mode=b, names=[conv1, 'fc'], flag=true)")
    assert call.options == {"ratio": 0.25, "steps": 3, "mode": "b", "names": ["conv1", "fc"], "flag": True}
    for bad, message in [("ratio=abc", "'abc' is not a valid float"), ("steps=1.5", "not a valid int"),
                         ("mode=c", "'c' is not one of a, b"), ("flag=maybe", "not a valid bool"),
                         ("ratio", "must be written key=value")]:
        with pytest.raises(PassError, match=message):
            parse_spec(f"test-options({bad})")


def test_pass_details_land_in_report():
    _register_options_pass()
    _, report = run_pipeline(import_onnx(conv_bn_model()), parse_spec("test-options(steps=2)"))
    assert report[0]["details"]["seen"]["steps"] == 2


def test_dump_ir_writes_one_file_per_pass(tmp_path):
    run_pipeline(import_onnx(conv_bn_model()), parse_spec("fold-constants,fold-batchnorm"),
                 dump_ir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["00-input.py", "01-fold-constants.py", "02-fold-batchnorm.py"]
    assert "batch_norm" in (tmp_path / "00-input.py").read_text()
    assert "batch_norm" not in (tmp_path / "02-fold-batchnorm.py").read_text()


def test_pass_returning_tvm_pass_is_applied():
    from tvm import relax

    @pipeline.register_pass("test-tvm-dce")
    def tvm_dce(model, ctx):
        return relax.transform.DeadCodeElimination()

    model, _ = run_pipeline(import_onnx(conv_bn_model()), parse_spec("test-tvm-dce"))
    assert isinstance(model, hwcompile.Model)


def test_custom_pass_example_runs_and_matches_numpy_reference(tmp_path, conv_bn_onnx):
    """examples/custom_pass: registering, options, report; output equals onnxruntime on a
    model whose weights numpy rounded the same way (independent of the pass)."""
    import onnx
    from onnx import numpy_helper

    spec = importlib.util.spec_from_file_location("round_weights", ROOT / "examples/custom_pass/round_weights.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    art = hwcompile.compile(conv_bn_onnx, "cpu", tmp_path / "art", passes="round-weights(mantissa_bits=7)")
    proto = onnx.load(conv_bn_onnx)
    for init in proto.graph.initializer:
        value = numpy_helper.to_array(init)
        bf16 = (value.astype(np.float32).view(np.uint32) + 0x7FFF + ((value.view(np.uint32) >> 16) & 1)) & 0xFFFF0000
        init.CopyFrom(numpy_helper.from_array(bf16.astype(np.uint32).view(np.float32), init.name))
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    got = hwcompile.load(art)(x)
    assert np.abs(got - ort_run(proto, {"x": x})[0]).max() <= 1e-4
    meta = json.loads((art / "metadata.json").read_text())
    assert meta["pipeline"][0]["details"]["max_abs_change"] > 0
    with pytest.raises(PassError, match="mantissa_bits=30 must be in 0..23"):
        hwcompile.compile(conv_bn_onnx, "cpu", tmp_path / "bad", passes="round-weights(mantissa_bits=30)")
    assert not (tmp_path / "bad").exists()


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    """A distribution on sys.path declaring a hwcompile.passes entry point (no install)."""
    (tmp_path / "hw_plugin_demo.py").write_text(
        "def halve(model, ctx, *, factor: float = 0.5):\n"
        "    return model.replace(params={k: v * factor for k, v in model.params.items()})\n")
    dist = tmp_path / "hw_plugin_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hw-plugin-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hwcompile.passes]\nhalve-weights = hw_plugin_demo:halve\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(pipeline, "_loaded", False)
    assert "halve-weights" in pipeline.registered_passes()
    (call,) = parse_spec("halve-weights(factor=0.25)")
    model = import_onnx(conv_bn_model())
    halved, _ = run_pipeline(model, [call], PassContext())
    name = next(iter(model.params))
    np.testing.assert_allclose(halved.params[name], model.params[name] * 0.25)
    sys.modules.pop("hw_plugin_demo", None)


def test_target_constraints_reach_passes(conv_bn_onnx, tmp_path):
    seen = {}

    @pipeline.register_pass("test-constraints")
    def record(model, ctx):
        seen["multiple"] = ctx.constraints.channel_multiple
        return model

    hwcompile.compile(conv_bn_onnx, "cpu:aarch64", tmp_path / "a", passes="test-constraints")
    assert seen["multiple"] == 4  # NEON: 4 float lanes


def test_custom_pass_example_file_is_documented():
    text = (Path(ROOT) / "examples/custom_pass/round_weights.py").read_text()
    assert 'entry-points."hwcompile.passes"' in text
