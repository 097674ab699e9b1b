"""Gradients (Relax autodiff), sparsify, finetune, sensitivity; the digits accuracy run is slow."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ort_run
from onnx import numpy_helper

from hwcompile.cli import main as cli_main
from hwcompile.errors import CalibrationError, PassError
from hwcompile.frontend import import_onnx
from hwcompile.models import zoo
from hwcompile.passes.prune import autodiff
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline
from hwcompile.target import Constraints
from hwcompile.targets.cpu import O3_FROM_SAMPLES, host_build_target


def _ce(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def test_autodiff_gradient_matches_finite_differences_of_onnxruntime():
    proto = zoo.mlp()
    model = import_onnx(proto)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    fn = autodiff.gradient_function(model, 8)
    loss, grads = fn(x, model.params, np.eye(10, dtype=np.float32)[labels])
    assert loss == pytest.approx(_ce(ort_run(proto, {"input": x})[0], labels), rel=1e-4)

    def loss_with(name, index, delta):
        p = onnx.ModelProto.FromString(proto.SerializeToString())
        init = next(i for i in p.graph.initializer if i.name == name)
        value = numpy_helper.to_array(init).astype(np.float64)
        value[index] += delta
        init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
        return _ce(ort_run(p, {"input": x})[0], labels)

    for name, index in (("fc3.weight", (3, 5)), ("fc1.weight", (7, 2)), ("fc2.bias", (4,))):
        eps = 1e-2
        numeric = (loss_with(name, index, eps) - loss_with(name, index, -eps)) / (2 * eps)
        assert grads[name][index] == pytest.approx(numeric, rel=2e-2, abs=2e-4)


def test_sparsify_zeroes_the_smallest_weights():
    model, _ = run_pipeline(import_onnx(zoo.mlp()), parse_spec("fold-constants"), PassContext())
    for scope in ("global", "local"):
        out, report = run_pipeline(model, parse_spec(f"sparsify(ratio=0.6, scope={scope})"),
                                   PassContext())
        details = report[0]["details"]
        kernels = [n for n in out.params if ".weight" in n]
        assert len(kernels) == 3
        zeros = sum(int((out.params[n] == 0).sum()) for n in kernels)
        total = sum(out.params[n].size for n in kernels)
        assert details["kernel_sparsity"] == pytest.approx(zeros / total, abs=1e-4)
        assert zeros / total == pytest.approx(0.6, abs=1e-3)
        for n in kernels:
            before, after = np.abs(model.params[n]), out.params[n]
            dropped, kept = before[after == 0], before[after != 0]
            assert np.array_equal(after[after != 0], model.params[n][after != 0])
            if scope == "local":
                assert dropped.max() <= kept.min()
                assert (after == 0).mean() == pytest.approx(0.6, abs=1e-3)
        assert details["kernel_bytes_compact"] < details["kernel_bytes_dense"]


def test_sparsify_and_finetune_errors():
    model = import_onnx(zoo.mlp())
    with pytest.raises(PassError, match="outside"):
        run_pipeline(model, parse_spec("sparsify(ratio=1.5)"), PassContext())
    with pytest.raises(CalibrationError, match="needs calibration data"):
        run_pipeline(model, parse_spec("sparsify(criterion=taylor)"), PassContext())
    with pytest.raises(PassError, match="needs a teacher"):
        run_pipeline(model, parse_spec("finetune(distill=true)"), PassContext())
    with pytest.raises(CalibrationError, match="finetune: .*no data for input 'input'"):
        run_pipeline(model, parse_spec("finetune"), PassContext(calibration={"x": np.zeros((2, 64))}))


def test_prune_with_taylor_criterion_on_calibration_data():
    """The gradient criteria run end to end on calibration data (pseudo-labels)."""
    model = import_onnx(zoo.mlp())
    x = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    ctx = PassContext(constraints=Constraints(channel_multiple=16), calibration={"input": x})
    _out, report = run_pipeline(model, parse_spec("prune(ratio=0.5, criterion=taylor)"), ctx)
    assert report[0]["details"]["channels"] == {"fc1.weight.permute_dims": "128 -> 64",
                                                "fc2.weight": "64 -> 32"}
    assert report[0]["after"]["params"] < report[0]["before"]["params"]


def test_prune_sensitivity_cli(tmp_path, capsys):
    path = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), path)
    data = tmp_path / "data.npz"
    np.savez(data, input=np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32))
    png = tmp_path / "sens.png"
    assert cli_main(["prune-sensitivity", str(path), "--data", str(data), "--ratios", "0,0.5",
                     "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("fc")]
    assert len(rows) == 2
    for row in rows:  # no channel removed: exactly the unpruned outputs; half: an error
        assert float(row[-2]) == 0.0 and float(row[-1]) > 0.0
    assert png.stat().st_size > 0
    assert cli_main(["prune-sensitivity", str(path), "--data", str(data), "--ratios", "1.2"]) == 2
    assert "outside [0, 1)" in capsys.readouterr().err


@pytest.mark.slow
def test_digits_prune_30_finetune_distill_within_one_point(digits_onnx, digits_data):
    x_train, y_train, x_test, y_test = digits_data
    model = import_onnx(digits_onnx)
    ctx = PassContext(constraints=Constraints(channel_multiple=1),
                      calibration={"input": x_train, "labels": y_train})
    acc = lambda m: float((autodiff.forward(m, x_test).argmax(1) == y_test).mean())
    reference = float((ort_run(digits_onnx, {"input": x_test})[0].argmax(1) == y_test).mean())
    assert acc(model) == pytest.approx(reference, abs=1e-9)
    pruned, _ = run_pipeline(model, parse_spec("prune(ratio=0.3)"), ctx)
    tuned, report = run_pipeline(model, parse_spec(
        "prune(ratio=0.3),finetune(steps=500, lr=0.003, distill=true, tau=2, alpha=0.5)"), ctx)
    assert report[0]["after"]["params"] < 0.6 * report[0]["before"]["params"]
    print(f"digits held-out: unpruned {reference:.4f}, pruned 30% {acc(pruned):.4f}, "
          f"+finetune/distill {acc(tuned):.4f}")
    assert acc(tuned) >= reference - 0.01


@pytest.mark.slow
def test_digits_prune_without_finetuning_compensated_beats_plain(digits_onnx, digits_data):
    """Issue 3 item 1 fix: BN-folded scores + expected-activation compensation keep much more
    of the held-out accuracy than the plain removal, at every ratio (no fine-tuning)."""
    _, _, x_test, y_test = digits_data
    model = import_onnx(digits_onnx)
    reference = float((ort_run(digits_onnx, {"input": x_test})[0].argmax(1) == y_test).mean())
    ctx = PassContext(constraints=Constraints(channel_multiple=1))
    acc = lambda m: float((autodiff.forward(m, x_test).argmax(1) == y_test).mean())
    for ratio in (0.1, 0.3):
        plain, _ = run_pipeline(model, parse_spec(
            f"prune(ratio={ratio}, compensate=false, bn_fold=false)"), ctx)
        fixed, _ = run_pipeline(model, parse_spec(f"prune(ratio={ratio})"), ctx)
        print(f"digits {ratio}: unpruned {reference:.4f}, plain {acc(plain):.4f}, "
              f"compensated {acc(fixed):.4f}")
        assert acc(fixed) > acc(plain)
        if ratio == 0.1:
            assert reference - acc(fixed) < 0.5 * (reference - acc(plain))


def test_short_training_builds_at_o1():
    """A training (or probe) build that runs few samples is compiled at LLVM -O1 (minutes
    less on a real CNN); a long run, or an unknown one, at the default -O3."""
    assert host_build_target(64).attrs.get("opt-level") == 1
    for samples in (O3_FROM_SAMPLES, None):
        assert "opt-level" not in host_build_target(samples).attrs
