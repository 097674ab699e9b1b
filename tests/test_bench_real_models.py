"""benchmarks/real_models.py's pieces on one small corpus model (no timing is asserted)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from hwcompile.bench import set_threads

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import real_models
from _timing import alternating_blocks, geomean, top_kernels
from corpus.manifest import BY_NAME

SMALL = "lstm_gru"  # committed, fast, compiles in seconds


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_main_on_one_model_writes_every_field(tmp_path, capsys):
    out = tmp_path / "real.json"
    try:
        assert real_models.main(["--models", SMALL, "--repeat", "2", "--rounds", "1",
                                 "--no-int8", "--json", str(out)]) == 0
    finally:
        set_threads(None)  # main sized TVM's pool to --threads (2)
    result = json.loads(out.read_text())
    assert result["meta"]["threads"] == 2 and result["meta"]["command"].endswith(str(out))
    (row,) = result["rows"]
    assert row["model"] == SMALL
    assert "hwcompile" not in row["errors"], row["errors"]
    for field in ("hw_fp32_ms", "ort_fp32_ms", "fp32_ratio", "compile_s", "peak_mb", "base_mb"):
        assert _positive(row[field]), (field, row[field])
    assert row["peak_mb"] >= row["base_mb"]
    assert math.isfinite(row["fp32_rel_err"])
    assert len(row["hw_fp32_blocks_ms"]) == 1
    # OpenVINO is a benchmark-only dependency: a figure when installed, else the reason
    assert _positive(row.get("ov_fp32_ms")) or row["errors"]["openvino"].startswith("n/a")
    profile = row["top_kernels_fp32"]
    assert _positive(profile["kernel_ms"]) and 0 < len(profile["kernels"]) <= 5
    shares = [k["share"] for k in profile["kernels"]]
    assert all(0 <= s <= 1 for s in shares) and sum(shares) <= 1 + 1e-9
    assert shares == sorted(shares, reverse=True)
    assert not any(k.startswith(("hw_int8", "ort_int8")) for k in row)
    assert result["summary"]["fp32_models"] == 1
    table = capsys.readouterr().out
    assert f"| {SMALL} | " in table and "Geometric mean" in table


def test_calibration_samples_follow_the_manifest():
    entry = BY_NAME["bert_tiny"]
    calib = real_models.calibration_samples(entry, count=4)
    for spec in entry.inputs:
        assert calib[spec.name].shape == (4, *spec.shape)
        assert str(calib[spec.name].dtype) == spec.dtype
    ids = calib["input_ids"]
    assert not np.array_equal(ids[0], ids[1])  # one generator per sample
    assert np.array_equal(real_models.calibration_samples(entry, count=4)["input_ids"], ids)


def test_quant_error_is_max_abs_and_sqnr_over_float_outputs():
    ref = [np.array([1.0, -2.0, 2.0], dtype=np.float32), np.array([3], dtype=np.int64)]
    got = [np.array([1.1, -2.0, 2.0], dtype=np.float32), np.array([3], dtype=np.int64)]
    err = real_models.quant_error(got, ref)
    assert err["max_abs"] == pytest.approx(0.1, rel=1e-5)
    assert err["sqnr_db"] == pytest.approx(10 * math.log10(9.0 / 0.01), rel=1e-4)
    assert math.isinf(real_models.quant_error(ref, ref)["sqnr_db"])
    assert real_models.fp32_error(got, ref) == pytest.approx(0.05, rel=1e-5)
    assert math.isinf(real_models.fp32_error(ref, [ref[0], np.array([4])]))


def test_alternating_blocks_and_ranking():
    calls = []
    stats = alternating_blocks({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                               repeat=3, rounds=2, warmup=1)
    assert calls == ["a"] * 4 + ["b"] * 4 + ["b"] * 4 + ["a"] * 4  # blocks, order alternated
    assert all(len(s["block_medians_ms"]) == 2 and s["median_ms"] == min(s["block_medians_ms"])
               for s in stats.values())
    top = top_kernels({"x": 0.003, "y": 0.001, "z": 0.0}, top=2)
    assert [k["kernel"] for k in top] == ["x", "y"]
    assert top[0]["ms"] == pytest.approx(3.0) and top[0]["share"] == pytest.approx(0.75)
    assert geomean([2.0, 0.5]) == pytest.approx(1.0)
