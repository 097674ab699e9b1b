"""Sparse weights stored compactly in the artifact (after sparsify) and densified at load."""

from __future__ import annotations

import json

import numpy as np
from conftest import ort_run
from onnx import numpy_helper

import hwcompile
from hwcompile.inputs import random_inputs
from hwcompile.models import zoo
from hwcompile.sparse_weights import compact_worthy, read, write


def test_csr_file_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.8] = 0
    other = np.zeros((4, 5), np.float32)
    other[1, 2] = 3.5
    params = {"w": dense, "v": other, "bias": np.ones(16, np.float32)}
    assert compact_worthy(params) == ["w", "v"]  # 1-D biases stay dense
    index = write(tmp_path / "s.bin", params, ["w", "v"])
    first = (tmp_path / "s.bin").read_bytes()
    back = read(tmp_path / "s.bin", index)
    np.testing.assert_array_equal(back[0], dense)
    np.testing.assert_array_equal(back[1], other)
    write(tmp_path / "t.bin", params, ["w", "v"])
    assert (tmp_path / "t.bin").read_bytes() == first  # deterministic
    assert len(first) < dense.nbytes + other.nbytes


def test_sparsified_model_artifact_is_smaller_and_exact(tmp_path):
    proto = zoo.mlp()
    dense_art = hwcompile.compile(proto, "cpu", tmp_path / "dense")
    sparse_art = hwcompile.compile(proto, "cpu", tmp_path / "sparse",
                                   passes="fold-constants,sparsify(ratio=0.9),dce")
    meta = json.loads((sparse_art / "metadata.json").read_text())
    spec = meta["runtime_weights"]
    assert spec["format"] == "csr" and (sparse_art / spec["file"]).is_file()
    assert spec["file"] in meta["files"]
    size = sum((sparse_art / f).stat().st_size for f in meta["files"] if f != "graph.dot")
    dense_size = sum((dense_art / f).stat().st_size for f in json.loads(
        (dense_art / "metadata.json").read_text())["files"] if f != "graph.dot")
    assert size < dense_size
    # Reference: onnxruntime on the ONNX model with the same weights zeroed by numpy.
    model = hwcompile.load(sparse_art)
    zeroed = dict(zip([w["name"] for w in spec["weights"]],
                      read(sparse_art / spec["file"], spec["weights"])))
    assert all(np.mean(w == 0) >= 0.85 for w in zeroed.values())
    feeds = random_inputs(model.inputs, seed=3, batch=4)
    # Each stored weight is an ONNX initializer (perhaps transposed by fold-constants) with
    # most entries zeroed: find it by its surviving values and zero the same entries.
    proto_zeroed, matched = zoo.mlp(), 0
    for init in proto_zeroed.graph.initializer:
        value = numpy_helper.to_array(init)
        for weight in zeroed.values():
            for kept in (weight, weight.T):
                if kept.shape == value.shape and np.array_equal(np.where(kept == 0, 0, value), kept):
                    init.CopyFrom(numpy_helper.from_array(kept.astype(value.dtype), init.name))
                    matched += 1
    assert matched == len(zeroed)
    want = ort_run(proto_zeroed, feeds)[0]
    assert np.abs(model(**feeds) - want).max() <= 1e-4
