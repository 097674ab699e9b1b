"""CUDA target: artifacts compile here without a GPU (nvcc on PATH); numerics on a GPU
run only where one exists (marker ``gpu``; benchmarks/cuda_check.py does the full check)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import conv_bn_model, ort_run

import hwcompile
from hwcompile.errors import ArtifactError, PassError, TargetError
from hwcompile.target import resolve_target


def _has_gpu() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)


needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")


@pytest.mark.parametrize("spec, arch", [
    ("cuda:sm_86", "sm_86"),
    ("nvidia/nvidia-a100", "sm_80"),
    ('{"kind": "cuda", "arch": "sm_90"}', "sm_90"),
])
def test_cuda_specs_resolve(spec, arch):
    target = resolve_target(spec)
    assert target.name == "cuda" and target.device == "cuda" and target.arch == arch


def test_bad_cuda_arch_is_a_clear_error():
    with pytest.raises(TargetError, match="sm_80"):
        resolve_target("cuda:ampere")


@pytest.fixture(scope="module")
def cuda_artifact(tmp_path_factory):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    return hwcompile.compile(conv_bn_model(batch=1), "cuda:sm_80",
                             tmp_path_factory.mktemp("cuda") / "art")


def test_cuda_artifact_has_ptx_and_metadata(cuda_artifact):
    meta = json.loads((cuda_artifact / "metadata.json").read_text())
    assert meta["target"]["name"] == "cuda" and meta["target"]["device"] == "cuda"
    assert meta["target"]["arch"] == "sm_80"
    extra = meta["target_extra"]
    assert extra["device_code"] == ["kernels.cu", "kernels.ptx"]
    ptx = (cuda_artifact / "kernels.ptx").read_text()
    assert ".target sm_80" in ptx
    # One kernel per fused op; conv, pool and dense each at least once.
    entries = [line for line in ptx.splitlines() if line.startswith(".visible .entry")]
    assert len(entries) == extra["kernels"] >= 3
    assert any("conv2d" in e for e in entries) and any("matmul" in e for e in entries)
    # dlight schedules bind threads: every kernel indexes by thread and block.
    assert "%tid.x" in ptx and "%ctaid.x" in ptx
    assert (cuda_artifact / "model.so").stat().st_size > 0


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_loading_cuda_artifact_without_gpu_is_a_clear_error(cuda_artifact):
    with pytest.raises(ArtifactError, match="cuda device, and this machine has none"):
        hwcompile.load(cuda_artifact)


@needs_nvcc
def test_mixed_precision_cuda_uses_fp16(tmp_path):
    art = hwcompile.compile(conv_bn_model(batch=1), "cuda:sm_80", tmp_path / "mp",
                            passes="fold-constants,fold-batchnorm,dce,mixed-precision")
    ptx = (art / "kernels.ptx").read_text()
    assert ".f16" in ptx  # half-precision arithmetic or conversions in the kernels
    meta = json.loads((art / "metadata.json").read_text())
    assert meta["model"]["mixed_precision"]["accumulate"] == "float32"


def test_mixed_precision_accuracy_on_cpu(tmp_path):
    """fp16/bf16 storage and compute with fp32 accumulation vs onnxruntime fp32: the error
    is that of the narrow type's rounding (fp16 ~1e-3 relative, bf16 with 3 fewer mantissa
    bits larger still), far above fp32's (~1e-7), and below 1e-2."""
    proto = conv_bn_model(batch=1)
    x = np.random.default_rng(0).standard_normal((4, 1, 3, 8, 8)).astype(np.float32)
    folding = "fold-constants,fold-batchnorm,dce"
    models = {"float32": hwcompile.load(hwcompile.compile(proto, "cpu", tmp_path / "fp32"))}
    for dtype in ("float16", "bfloat16"):
        art = hwcompile.compile(proto, "cpu", tmp_path / dtype,
                                passes=f"{folding},mixed-precision(dtype={dtype})")
        assert json.loads((art / "metadata.json").read_text())["model"]["mixed_precision"]["dtype"] == dtype
        models[dtype] = hwcompile.load(art)
    errors = {name: 0.0 for name in models}
    for sample in x:
        want = ort_run(proto, {"x": sample})[0]
        scale = float(np.abs(want).max())
        for name, model in models.items():
            errors[name] = max(errors[name], float(np.abs(model(sample) - want).max()) / scale)
    assert errors["float32"] < 1e-5 < errors["float16"] < errors["bfloat16"] < 1e-2, errors


@needs_nvcc
def test_bfloat16_cuda_kernels(tmp_path):
    art = hwcompile.compile(conv_bn_model(batch=1), "cuda:sm_80", tmp_path / "bf16",
                            passes="fold-constants,fold-batchnorm,dce,mixed-precision(dtype=bfloat16)")
    assert ".bf16" in (art / "kernels.ptx").read_text()


def test_mixed_precision_rejects_other_types():
    with pytest.raises(PassError, match="float16 or bfloat16"):
        hwcompile.compile(conv_bn_model(batch=1), "cpu", "unused", passes="mixed-precision(dtype=int8)")


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs an NVIDIA GPU")
def test_cuda_matches_onnxruntime_on_gpu(tmp_path):
    proto = conv_bn_model(batch=1)
    art = hwcompile.compile(proto, "cuda", tmp_path / "gpu")
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(hwcompile.load(art)(x), ort_run(proto, {"x": x})[0],
                               rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_tuning_cuda_without_gpu_is_a_clear_error(tmp_path, capfd, conv_bn_onnx):
    from hwcompile import cli

    code = cli.main(["tune", str(conv_bn_onnx), "-t", "cuda", "--db", str(tmp_path / "db")])
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1 and "this machine has none" in errors[0], err
