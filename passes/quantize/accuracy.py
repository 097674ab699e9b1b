"""Accuracy control: bias correction, per-layer error, sensitivity, and keeping layers float.

Bias correction removes the systematic output shift a layer's weight rounding causes:
E[W_q·x] − E[W·x] = (W_q − W)·E[x], with E[x] the per-channel input means from calibration.

The per-layer error runs the float model and its quantized twin side by side in one compiled
function (``probe.paired``) and keeps four sums per layer, not the tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import tvm

from hwcompile.calibration_data import CalibrationSet, load_calibration
from hwcompile.errors import CalibrationError
from hwcompile.model import Model
from hwcompile.rewrite import dataflow_bindings

from . import scheme as sc
from .calibration import Steps, TensorStats, float_positions
from .kernels import CHUNKS
from .probe import Runner, compile_for_host, exposed, paired
from .rewrite import IntegerEmitter, Plan


def bias_shifts(model: Model, the_plan: Plan, stats: dict[str, TensorStats],
                scheme: sc.Scheme, input_key: Callable[[int], str]) -> dict[str, np.ndarray]:
    """Per layer, the expected output shift (per output channel) its weight rounding causes."""
    shifts = {}
    for layer in the_plan.layers.values():
        st = stats.get(input_key(layer.core))
        w = model.params[layer.weight].astype(np.float64)
        axis = 0 if layer.kind == "conv2d" else 1
        qp = sc.weight_qparams(w, axis, scheme)
        dw = sc.dequantize(sc.quantize(w, qp), qp).astype(np.float64) - w
        if st is None or st.channel_mean.size == 0:
            continue
        mean = st.channel_mean
        if layer.kind == "dense" and mean.size == w.shape[0]:
            shifts[layer.name] = mean @ dw
        elif layer.kind == "conv2d" and mean.size == w.shape[1]:  # groups == 1
            shifts[layer.name] = np.einsum("oihw,i->o", dw, mean)
        elif layer.kind == "conv2d" and w.shape[1] == 1 and mean.size == w.shape[0]:
            shifts[layer.name] = dw.sum(axis=(1, 2, 3)) * mean  # depthwise
    return shifts


def run_all(runner: Callable[[dict], list[np.ndarray]], data: CalibrationSet
            ) -> list[np.ndarray]:
    """Every output of ``runner`` over the data, concatenated along the batch axis (0-d
    values, scalars a graph computes, stacked)."""
    outs = [runner(feed) for feed in data]
    return [np.concatenate([np.atleast_1d(o[i]) for o in outs]) for i in range(len(outs[0]))]


def layer_errors(model: Model, emitters: list[IntegerEmitter], positions: list[int],
                 data: CalibrationSet, progress: Callable[[str], None] = lambda m: None
                 ) -> list[dict[int, tuple[float, float]]]:
    """Per emitter, (SQNR dB, cosine) of each position's quantized value against the float
    model's, over all of ``data`` (positions that hold no float tensor are left out). The
    float model and every quantized twin run in one compiled function."""
    floats = set(float_positions(model))
    positions = [p for p in positions if p in floats]
    progress(f"quantization report: compiling the float and quantized models "
             f"({len(positions)} tensors compared)")
    twins = [emitter.run(exposed(model, positions)) for emitter in emitters]
    vm = compile_for_host(paired(model, twins, positions,
                                 lambda kernels, want, got: kernels.error_sums(want, got)),
                          progress, "quantization report", len(data.feeds))
    names = [s.name for s in model.inputs]
    sums = np.zeros((len(positions) * len(twins), 4))
    steps = Steps(progress, "quantization report", len(data.feeds))
    for index, feed in enumerate(data):
        result = vm["main"](*[tvm.runtime.tensor(np.require(feed[n], requirements="C"))
                              for n in names])
        sums += np.stack([r.numpy().reshape(CHUNKS, 4).sum(0) for r in result])
        steps.done(index + 1)
    per_twin = sums.reshape(len(positions), len(twins), 4)
    return [{p: (_sqnr_db(*per_twin[k, t]), _cosine(*per_twin[k, t]))
             for k, p in enumerate(positions)} for t in range(len(twins))]


def _sqnr_db(signal: float, noise: float, _cross: float, _approx: float) -> float:
    """``scheme.sqnr_db`` from sums: Σa², Σ(a−b)²."""
    if noise == 0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-30) / noise))


def _cosine(signal: float, _noise: float, cross: float, approx: float) -> float:
    """``scheme.cosine`` from sums: Σab / (|a|·|b|)."""
    denom = np.sqrt(signal) * np.sqrt(approx)
    return float(cross / denom) if denom else 1.0


def _top1(output: np.ndarray) -> np.ndarray:
    """Per sample, the index of the largest value of the (flattened) first output."""
    return output.reshape(output.shape[0], -1).argmax(1)


def _output_probe(model: Model) -> Model:
    """``model`` returning only the tensor of its last binding (the top-1 source)."""
    return exposed(model, [len(dataflow_bindings(model.main)) - 1])


class Evaluator:
    """Top-1 accuracy on labelled data, or top-1 agreement with the float model."""

    def __init__(self, model: Model, data: CalibrationSet, labels: np.ndarray | None):
        self.data, self.labels = data, labels
        self.float_top1 = _top1(run_all(Runner(_output_probe(model)), data)[0])
        self.reference = self.score_top1(self.float_top1)

    def score_top1(self, top1: np.ndarray) -> float:
        target = self.labels if self.labels is not None else self.float_top1
        return float(np.mean(top1 == target))

    def score(self, model: Model) -> float:
        top1 = _top1(run_all(Runner(model), self.data)[0])
        return self.score_top1(top1)


def load_eval(path: str | None, model: Model, calibration: CalibrationSet
              ) -> tuple[CalibrationSet, np.ndarray | None]:
    """Evaluation data: an .npz with the model inputs (stacked) and optional ``labels``."""
    if path is None:
        return calibration, None
    file = Path(path)
    if not file.is_file() or file.suffix != ".npz":
        raise CalibrationError(f"{path}: evaluation data must be an existing .npz file")
    data = load_calibration(file, model.inputs)
    return data, data.labels


def sensitivity(model: Model, make: Callable[[set[str]], IntegerEmitter],
                names: list[str], data: CalibrationSet) -> dict[str, float]:
    """Output SQNR (dB) when only one layer is quantized: lower means more sensitive."""
    probe = _output_probe(model)
    want = run_all(Runner(probe), data)[0]
    result = {}
    for name in names:
        emitter = make({n for n in names if n != name})
        got = run_all(Runner(emitter.run(probe)), data)[0]
        result[name] = sc.sqnr_db(want, got)
    return result
