"""Artifact contents, reproducibility, cross-compilation, and load-time checks."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import tvm

import hwcompile
from hwcompile.artifact import SCHEMA_VERSION, sha256
from hwcompile.errors import ArtifactError


def test_metadata_describes_the_artifact(conv_bn_artifact):
    meta = json.loads((conv_bn_artifact / "metadata.json").read_text())
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["versions"]["tvm"] == tvm.__version__
    assert meta["versions"]["tvm_ffi"] == "0.1.14.post1"
    assert meta["target"]["name"] == "cpu"
    assert meta["target"]["tvm_target"]["mcpu"] == tvm.target.codegen.llvm_get_system_cpu()
    assert meta["inputs"] == [{"name": "x", "shape": ["N", 3, 8, 8], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "y", "shape": ["N", 10], "dtype": "float32"}]
    assert [p["pass"] for p in meta["pipeline"]] == ["fold-constants", "fold-batchnorm", "dce"]
    # weights after folding: conv 8x3x3x3 + bias 8 + fc 8x10 + 10, float32
    assert meta["memory"]["weight_bytes"] == 4 * (216 + 8 + 80 + 10)
    assert meta["memory"]["io_bytes"] == 4 * (3 * 8 * 8 + 10)
    assert meta["memory"]["library_bytes"] == (conv_bn_artifact / "model.so").stat().st_size
    assert set(meta["files"]) == {"model.so", "graph.dot"}
    for name, digest in meta["files"].items():
        assert sha256(conv_bn_artifact / name) == digest


def test_same_inputs_give_byte_identical_files(conv_bn_onnx, tmp_path):
    first = hwcompile.compile(conv_bn_onnx, "cpu", tmp_path / "a")
    second = hwcompile.compile(conv_bn_onnx, "cpu", tmp_path / "b")
    files = json.loads((first / "metadata.json").read_text())["files"]
    assert files == json.loads((second / "metadata.json").read_text())["files"]
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_recompiling_into_an_artifact_replaces_it(conv_bn_onnx, tmp_path):
    out = tmp_path / "art"
    hwcompile.compile(conv_bn_onnx, "cpu", out, passes="")
    hwcompile.compile(conv_bn_onnx, "cpu", out)
    meta = json.loads((out / "metadata.json").read_text())
    assert len(meta["pipeline"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_cross_compile_aarch64_gives_object_archive(conv_bn_onnx, tmp_path):
    art = hwcompile.compile(conv_bn_onnx, "cpu:aarch64", tmp_path / "arm")
    meta = json.loads((art / "metadata.json").read_text())
    assert meta["target"]["triple"] == "aarch64-linux-gnu"
    assert meta["loadable"] is False
    library = art / meta["library"]
    if meta["library"] == "model.tar":
        with tarfile.open(library) as archive:
            members = [m for m in archive.getmembers() if m.name.endswith(".o")]
            assert members
            header = archive.extractfile(members[0]).read(20)
    else:  # a cross linker was installed: a shared object
        header = library.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    with pytest.raises(ArtifactError, match="compiled for aarch64-linux-gnu"):
        hwcompile.load(art)


def test_json_target_and_tag(conv_bn_onnx, tmp_path):
    art = hwcompile.compile(conv_bn_onnx, '{"kind": "llvm", "mcpu": "x86-64-v2"}', tmp_path / "j")
    meta = json.loads((art / "metadata.json").read_text())
    assert meta["target"]["tvm_target"]["mcpu"] == "x86-64-v2"
    x = np.ones((1, 3, 8, 8), np.float32)
    np.testing.assert_allclose(hwcompile.load(art)(x), hwcompile.load(
        hwcompile.compile(conv_bn_onnx, "cpu", tmp_path / "h"))(x), rtol=1e-5, atol=1e-5)
    tagged = hwcompile.compile(conv_bn_onnx, "arm/rasp4b64", tmp_path / "tag")
    assert json.loads((tagged / "metadata.json").read_text())["target"]["tvm_target"]["mcpu"] == "cortex-a72"


def test_load_rejects_other_tvm_version(conv_bn_onnx, tmp_path):
    art = hwcompile.compile(conv_bn_onnx, "cpu", tmp_path / "v")
    meta = json.loads((art / "metadata.json").read_text())
    meta["versions"]["tvm"] = "0.18.0"
    (art / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="built with tvm 0.18.0"):
        hwcompile.load(art)


def test_load_rejects_missing_file(conv_bn_onnx, tmp_path):
    art = hwcompile.compile(conv_bn_onnx, "cpu", tmp_path / "m")
    (art / "graph.dot").unlink()
    with pytest.raises(ArtifactError, match="file 'graph.dot' listed in metadata.json is missing"):
        hwcompile.load(art)
