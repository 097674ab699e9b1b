"""Tuning: heuristic default schedules, MetaSchedule end to end on this machine, databases
(target check, resume, reuse across models), budgets and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import conv_bn_model, float_model, ort_run
from onnx import numpy_helper

import hwcompile
from hwcompile import cli
from hwcompile.errors import TuningError
from hwcompile.frontend import import_onnx
from hwcompile.models import zoo
from hwcompile.target import resolve_target


def _cli(capfd, *argv: str) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capfd.readouterr().err


def _one_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def _check_against_ort(proto: onnx.ModelProto, art: Path, tol: float = 1e-4) -> None:
    model = hwcompile.load(art)
    rng = np.random.default_rng(1)
    feeds = {s.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in s.shape])
             .astype(s.dtype) for s in model.inputs}
    want = ort_run(proto, feeds)[0]
    got = model(**feeds)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())))


# --- untuned defaults ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["depthwise_grouped_cnn", "resnet18_small", "mlp"])
def test_default_schedules_match_onnxruntime(tmp_path, name):
    proto = zoo.resnet18_shaped(batch=1, image=32, num_classes=10) if name == "resnet18_small" \
        else getattr(zoo, name)()
    shapes = {i.name: tuple(d.dim_value or 1 for d in i.type.tensor_type.shape.dim)
              for i in proto.graph.input}
    art = hwcompile.compile(proto, "cpu", tmp_path / name, input_shapes=shapes)
    _check_against_ort(proto, art)


def test_default_schedules_cover_conv_and_dense():
    """Every conv/matmul/pool kernel gets the register-tiled, vectorized schedule."""
    import tvm
    from tvm.s_tir import Schedule

    from hwcompile.targets.cpu.defaults import schedule_func
    from hwcompile.tune.kernels import iter_kinds

    target = resolve_target("cpu")
    mod = target.tunable_module(import_onnx(conv_bn_model(batch=1)).bound_module())
    reductions = 0
    for gvar, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        sch = Schedule(func)
        if not any("R" in iter_kinds(sch, b) for b in sch.get_child_blocks(sch.get_sblock("root"))):
            continue
        reductions += 1
        scheduled = schedule_func(func, target.default_schedule_lanes)
        assert scheduled is not None, gvar.name_hint
        assert "T.vectorized" in scheduled.script(), gvar.name_hint
    assert reductions >= 3  # conv, global pool, dense


# --- tuning end to end ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """conv_bn tuned with a small budget (about a minute here), and both artifacts."""
    from hwcompile.tune.budget import Budget
    from hwcompile.tune.tuner import tune_model

    root = tmp_path_factory.mktemp("tune")
    proto = conv_bn_model(batch=1)
    target = resolve_target("cpu")
    model, _ = hwcompile.pipeline.run_pipeline(
        import_onnx(proto), hwcompile.pipeline.parse_spec(hwcompile.driver.DEFAULT_PASSES),
        hwcompile.pipeline.PassContext(constraints=target.constraints))
    lines: list[str] = []
    # Without the seeded default schedules, so every applied kernel is a tuned candidate.
    report = tune_model(model, target, root / "db", Budget(trials=12), progress=lines.append,
                        seed_defaults=False)
    untuned = hwcompile.compile(proto, "cpu", root / "untuned")
    tuned_art = hwcompile.compile(proto, "cpu", root / "tuned", db=root / "db")
    return {"proto": proto, "report": report, "db": root / "db", "untuned": untuned,
            "tuned": tuned_art, "progress": lines, "root": root}


def test_tuning_records_are_all_valid(tuned):
    from hwcompile.tune.database import FAILED_RUN_SECS, record_latencies

    report = tuned["report"]
    assert report.trials >= 12 and report.valid == report.trials
    latencies = record_latencies(tuned["db"])
    assert len(latencies) >= report.trials  # + the seeded default schedules
    assert all(0 < t < FAILED_RUN_SECS for t in latencies)
    # Progress names each task with its best latency so far.
    assert any("valid trials, best" in line and " ms" in line for line in tuned["progress"])


def test_tuned_artifact_applies_database_and_matches_onnxruntime(tuned):
    meta = json.loads((tuned["tuned"] / "metadata.json").read_text())
    assert meta["target_extra"]["tuned_kernels"] == len(tuned["report"].tasks)
    assert "tuned_kernels" not in json.loads((tuned["untuned"] / "metadata.json").read_text())["target_extra"]
    _check_against_ort(tuned["proto"], tuned["tuned"])


def test_tuned_module_differs_from_untuned(tuned):
    """The database's schedules, not the defaults, were compiled in."""
    untuned = (tuned["untuned"] / "model.so").read_bytes()
    assert (tuned["tuned"] / "model.so").read_bytes() != untuned
    # Same inputs, no database: byte-identical (so the difference above is the database).
    again = hwcompile.compile(tuned["proto"], "cpu", tuned["root"] / "untuned_again")
    assert (again / "model.so").read_bytes() == untuned


def test_tuning_resumes_and_reuses_across_models(tuned, tmp_path):
    from hwcompile.tune.budget import Budget
    from hwcompile.tune.database import record_latencies
    from hwcompile.tune.tuner import tune_model

    # Another model with the same kernel shapes (different weights) reuses every record.
    other = conv_bn_model(batch=1)
    for init in other.graph.initializer:
        if init.name == "fc_w":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 2, "fc_w"))
    art = hwcompile.compile(other, "cpu", tmp_path / "other", db=tuned["db"])
    assert json.loads((art / "metadata.json").read_text())["target_extra"]["tuned_kernels"] >= 1
    _check_against_ort(other, art)
    # Tuning again adds to the same database.
    before = len(record_latencies(tuned["db"]))
    model = import_onnx(other)
    report = tune_model(model, resolve_target("cpu"), tuned["db"],
                        Budget(trials=3, trials_per_task=1))
    # 3 new trials, plus each kernel's default schedule, measured and recorded.
    assert all(t.default_s is not None for t in report.tasks)
    assert len(record_latencies(tuned["db"])) == before + 3 + len(report.tasks)


# --- bad input -----------------------------------------------------------------------------

def test_database_for_another_target_is_refused(tuned, tmp_path, capfd, conv_bn_onnx):
    from hwcompile.tune.database import MANIFEST

    db = tmp_path / "db"
    db.mkdir()
    for name in ("database_workload.json", "database_tuning_record.json"):
        (db / name).write_text((tuned["db"] / name).read_text())
    manifest = json.loads((tuned["db"] / MANIFEST).read_text())
    manifest["target"] = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}
    (db / MANIFEST).write_text(json.dumps(manifest))
    code, err = _cli(capfd, "compile", conv_bn_onnx, "--db", db, "-o", tmp_path / "o")
    _one_error(code, err, "tuned for target", "cortex-a72")
    code, err = _cli(capfd, "tune", conv_bn_onnx, "--db", db, "--trials", "4")
    _one_error(code, err, "tuned for target")


def test_compile_with_missing_database(tmp_path, capfd, conv_bn_onnx):
    code, err = _cli(capfd, "compile", conv_bn_onnx, "--db", tmp_path / "nothing", "-o", tmp_path / "o")
    _one_error(code, err, "no tuning database")


@pytest.mark.parametrize("argv, fragment", [
    (["--trials", "0"], "at least 1"),
    (["--trials", "-3"], "at least 1"),
    (["--trials-per-task", "0"], "at least 1"),
    (["--tune-time", "soon"], "positive duration"),
    (["--rpc-tracker", "127.0.0.1"], "HOST:PORT"),
    (["--rpc-tracker", "127.0.0.1:9"], "--rpc-key"),
])
def test_bad_budgets_and_rpc_options(tmp_path, capfd, conv_bn_onnx, argv, fragment):
    code, err = _cli(capfd, "tune", conv_bn_onnx, "--db", tmp_path / "db", *argv)
    _one_error(code, err, fragment)


def test_parse_duration():
    from hwcompile.tune.budget import parse_duration

    assert parse_duration("90") == 90 and parse_duration("90s") == 90
    assert parse_duration("10m") == 600 and parse_duration("1.5h") == 5400
    with pytest.raises(TuningError):
        parse_duration("0m")


def test_zero_valid_trials_is_an_error(tmp_path):
    """Every build killed by the per-candidate timeout: an error, not an empty success."""
    from hwcompile.tune.budget import Budget
    from hwcompile.tune.tuner import tune_model

    model = import_onnx(conv_bn_model(batch=1))
    target = resolve_target("cpu")
    with pytest.raises(TuningError, match="no valid measurement"):
        tune_model(model, target, tmp_path / "db", Budget(trials=2, trials_per_task=1),
                   build_timeout_s=0.001)


@pytest.mark.slow
def test_tune_time_budget_stops_tuning(tmp_path):
    from hwcompile.tune.budget import Budget
    from hwcompile.tune.tuner import tune_model

    model = import_onnx(conv_bn_model(batch=1))
    report = tune_model(model, resolve_target("cpu"), tmp_path / "db",
                        Budget(trials=1000, trials_per_task=4, seconds=1.0))
    assert report.stopped_for_time
    assert report.trials < 12  # stopped after the first measured batch


def test_warm_builder_recovers_after_a_timeout():
    """A candidate killed by the timeout takes its worker down; the next one still builds."""
    import tvm
    from tvm import te
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    from hwcompile.tune.builder import WarmBuilder

    a = te.placeholder((64,), name="a")
    b = te.compute((64,), lambda i: a[i] * 2.0, name="b")
    mod = tvm.IRModule({"main": te.create_prim_func([a, b])})
    target = resolve_target("cpu").tvm_target
    builder = WarmBuilder(workers=1, timeout_s=0.001)
    try:
        (killed,) = builder.build([BuilderInput(mod, target)])
        assert killed.artifact_path is None and "timed out" in killed.error_msg
        builder.timeout_s = 120.0
        (built,) = builder.build([BuilderInput(mod, target)])
        assert built.error_msg is None and Path(built.artifact_path).is_file()
    finally:
        builder.shutdown()


def test_default_schedules_with_a_dynamic_batch(tmp_path):
    """A symbolic batch stays an outer loop: kernels are still tiled, any batch runs."""
    import tvm

    from hwcompile.targets.cpu.defaults import schedule_func

    proto = conv_bn_model()  # batch "N"
    target = resolve_target("cpu")
    mod = target.tunable_module(import_onnx(proto).bound_module())
    for name in ("fused_conv2d_", "fused_matmul_add"):  # suffixes vary (padded channels: a slice)
        func = next(f for g, f in mod.functions_items() if g.name_hint.startswith(name))
        assert isinstance(func, tvm.tirx.PrimFunc)
        scheduled = schedule_func(func, target.default_schedule_lanes)
        assert scheduled is not None and "T.vectorized" in scheduled.script(), name
    model = hwcompile.load(hwcompile.compile(proto, "cpu", tmp_path / "dyn"))
    x = np.random.default_rng(3).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(model(x), ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_output_channels_padded_to_whole_registers(tmp_path):
    """Convs with 13 and 7 output channels (no multiple of any vector width) compute on
    zero-padded filters, the extra channels sliced away: same values as onnxruntime."""
    import tvm
    from onnx import helper

    from hwcompile.targets.cpu.channel_padding import pad_output_channels

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((13, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(13).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((7, 13, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"])]
    proto = float_model("odd_channels", nodes, inits, {"x": ["N", 3, 9, 9]}, {"y": ["N", 7, 5, 5]})

    padded = pad_output_channels(16)(import_onnx(proto).bound_module())
    convs = []
    tvm.relax.analysis.post_order_visit(padded["main"], lambda e: convs.append(e) if isinstance(
        e, tvm.relax.Call) and getattr(e.op, "name", "") == "relax.nn.conv2d" else None)
    assert sorted(int(c.args[1].ty.shape[0]) for c in convs) == [16, 16]

    model = hwcompile.load(hwcompile.compile(proto, "cpu", tmp_path / "odd"))
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(model(x), ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-4)
