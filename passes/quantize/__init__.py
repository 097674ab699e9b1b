"""Post-training int8 quantization: calibrate, pick the target's scheme, rewrite to integers,
control accuracy, report. See README.md in this folder."""

from __future__ import annotations

from typing import Literal

from hwcompile.calibration_data import load_calibration
from hwcompile.constant_weights import constants_as_weights
from hwcompile.errors import PassError
from hwcompile.model import Model
from hwcompile.pipeline import PassContext, register_pass
from hwcompile.rewrite import dataflow_bindings

from . import accuracy, qdq, report  # noqa: F401  (qdq registers lower-qdq)
from .calibration import HISTOGRAM_METHODS, collect, float_positions, observed_keys, tensor_range
from .coverage import coverage
from .rewrite import IntegerEmitter, UnquantizableLayer, plan
from .scheme import resolve_scheme

REPORT_SAMPLES = 256  # samples the per-layer error report runs on
# Range methods tried when none is given: neither wins on every network (ppocrv4_det's
# output: 8.4 dB with mse, 12.8 dB with percentile), so the report measures both.
AUTO_METHODS = ("mse", "percentile")


@register_pass("quantize")
def quantize(model: Model, ctx: PassContext, *,
             method: Literal["minmax", "maxabs", "meanstd", "percentile", "entropy", "mse"]
             | None = None,
             granularity: str | None = None, symmetric: bool | None = None,
             power_of_two: bool | None = None, keep_float: list[str] | None = None,
             max_drop: float | None = None, eval: str | None = None,
             bias_correction: bool | None = None, cache: str | None = None,
             percentile: float = 99.99, k: float = 3.0) -> Model:
    """Post-training int8 quantization with calibration data (``--calibration``).

    The target's scheme is the default; ``granularity``/``symmetric``/``power_of_two``
    override it where the target can execute the result. ``method`` picks activation ranges;
    by default (None) the report measures ``AUTO_METHODS`` on the calibration data and keeps
    the one whose output is closer to float.
    ``max_drop`` (e.g. 0.005) keeps the most sensitive layers float until the top-1 drop on
    ``eval`` (an .npz of inputs and optional ``labels``; default: the calibration data,
    against the float model's predictions) is within it. ``cache`` is an .npz file for the
    calibration statistics. ``bias_correction`` subtracts each layer's expected weight-rounding
    shift (W_q − W)·E[x]; by default (None) the report measures the model with and without
    it on the calibration data and keeps the one whose output is closer to float.
    """
    constraints = ctx.constraints
    scheme = resolve_scheme(constraints.quant_scheme if constraints else None, granularity,
                            symmetric, power_of_two)
    data = load_calibration(ctx.calibration, model.inputs)
    model = constants_as_weights(model)  # layers are found by their weights
    the_plan = plan(model)
    names = the_plan.layer_names()
    if not names:
        raise PassError("pass 'quantize': the model has no conv2d/dense layer with constant "
                        "weights to quantize")
    unknown = sorted(set(keep_float or []) - set(names))
    if unknown:
        raise PassError(f"pass 'quantize' option 'keep_float': no layer named "
                        f"{', '.join(unknown)}; layers are {', '.join(names)}")
    ctx.progress(f"calibrating on {data.num_samples} samples")
    methods = (method,) if method else AUTO_METHODS
    stats, from_cache = collect(model, observed_keys(model, the_plan), data,
                                any(m in HISTOGRAM_METHODS for m in methods), cache, ctx.progress)

    bindings = dataflow_bindings(model.main)
    input_key = {v: f"in:{s.name}" for v, s in zip(model.main.params, model.inputs)}
    input_key.update({b.var: f"b{i}" for i, b in enumerate(bindings)})
    shifts = accuracy.bias_shifts(model, the_plan, stats, scheme,
                                  lambda core: input_key.get(bindings[core].value.args[0], "")) \
        if bias_correction is not False else {}

    def make(kept: set[str], corrected: bool = True, how: str = methods[0]) -> IntegerEmitter:
        def ranges(key: str) -> tuple[float, float]:
            return tensor_range(stats[key], how, k=k, percentile=percentile)

        return IntegerEmitter(model, the_plan, scheme, ranges, kept,
                              shifts if corrected else {}, how)

    kept = set(keep_float or [])
    emitter, quantized, left_float = _emit_quantizable(make, kept, ctx.progress)
    extra: dict = {"calibration_samples": data.num_samples, "statistics_from_cache": from_cache}
    if max_drop is not None:
        quantized, emitter, kept, extra["accuracy"] = _control(
            model, quantized, emitter, kept, names, make, max_drop, eval, data, ctx)
    # Bias correction and the range method are no sure gain in a whole network (README):
    # by default every combination runs in the report and the one whose output is closest
    # to float is kept — unless accuracy control already chose the layers on the first.
    choose = max_drop is None
    corrections = [True, False] if bias_correction is None and shifts and choose else [True]
    variants = [(how, c) for how in (methods if choose else methods[:1]) for c in corrections]
    # Each variant's own integer model: a layer that one variant's ranges cannot represent
    # (a bias overflowing int32) stays float in that variant only.
    candidates = [(emitter, quantized, left_float, kept)]
    for how, corrected in variants[1:]:
        own_kept = set(keep_float or [])
        candidates.append((*_emit_quantizable(
            lambda k, how=how, corrected=corrected: make(k, corrected, how), own_kept,
            lambda message: None), own_kept))
    # The last float tensor stands for the output (the last binding may be a tuple).
    last = float_positions(model)[-1]
    positions = sorted({r.position for c in candidates for r in c[0].records} | {last})
    all_errors = accuracy.layer_errors(model, [c[0] for c in candidates], positions,
                                       data.head(REPORT_SAMPLES), ctx.progress)
    output_sqnr = [errors[last][0] for errors in all_errors]
    best = max(range(len(variants)), key=lambda v: output_sqnr[v])
    errors = all_errors[best]
    extra.update(_choices(variants, best, output_sqnr, ctx))
    for layer, reason in candidates[best][2].items():
        if layer not in left_float:
            ctx.progress(f"quantize: layer '{layer}' left in float: {reason}")
    emitter, quantized, left_float, kept = candidates[best]
    if left_float:
        extra["left_float"] = left_float
    extra.update(coverage(emitter, left_float))
    extra["output_sqnr_db"] = report._number(errors[last][0])
    kept_list = [n for n in names if n in kept]
    ctx.details.update(report.details(scheme, emitter.records, errors, kept_list,
                                      model.weight_bytes, quantized.weight_bytes, extra))
    notes = dict(model.annotations)
    notes["quantization"] = report.annotations(scheme, emitter.records, emitter.input_qparams,
                                               kept_list)
    return quantized.replace(annotations=notes)


def _choices(variants: list[tuple[str, bool]], best: int, output_sqnr: list[float],
             ctx) -> dict:
    """The report's entries for what was chosen between ``variants`` (range method, bias
    correction): per option, the best output SQNR on the calibration data with it."""
    def best_with(index: int, option) -> float:
        return max(q for v, q in zip(variants, output_sqnr) if v[index] == option)

    extra = {}
    methods = list(dict.fromkeys(how for how, _ in variants))
    if len(methods) > 1:
        figures = {how: best_with(0, how) for how in methods}
        extra["range_method"] = {"applied": variants[best][0], "output_sqnr_db": {
            how: report._number(q) for how, q in figures.items()}}
        ctx.progress(f"quantize: range method {variants[best][0]} (output SQNR "
                     + ", ".join(f"{how} {q:.1f} dB" for how, q in figures.items()) + ")")
    if len({c for _, c in variants}) > 1:
        with_it, without = best_with(1, True), best_with(1, False)
        extra["bias_correction"] = {"applied": variants[best][1], "output_sqnr_db": {
            "with": report._number(with_it), "without": report._number(without)}}
        ctx.progress(f"quantize: bias correction {'kept' if variants[best][1] else 'dropped'} "
                     f"(output SQNR {with_it:.1f} dB with it, {without:.1f} dB without)")
    return extra


def _emit_quantizable(make, kept: set[str], say) -> tuple:
    """The integer model, with every layer that has no integer form (``kept`` grows by
    them) left in float; says which and why, one line each."""
    left_float: dict[str, str] = {}
    while True:
        emitter = make(kept)
        try:
            quantized = emitter.run()
            for layer, reason in emitter.sensitive_layers.items():
                if layer not in left_float:
                    left_float[layer] = reason
                    say(f"quantize: layer '{layer}' left in float: {reason}")
            return emitter, quantized, left_float
        except UnquantizableLayer as err:
            kept.add(err.layer)
            left_float[err.layer] = err.reason
            say(f"quantize: layer '{err.layer}' left in float: {err.reason}")


def _control(model, quantized, emitter, kept, names, make, max_drop, eval_path, data, ctx):
    """Keep the most sensitive layers float until the drop is within ``max_drop``."""
    eval_data, labels = accuracy.load_eval(eval_path, model, data)
    evaluator = accuracy.Evaluator(model, eval_data, labels)
    score = evaluator.score(quantized)
    steps = [{"kept_float": sorted(kept), "score": score}]
    order: list[str] | None = None
    while evaluator.reference - score > max_drop:
        if order is None:
            ctx.progress("measuring per-layer sensitivity")
            sens = accuracy.sensitivity(model, make, names, eval_data.head(REPORT_SAMPLES))
            order = sorted(names, key=lambda n: sens[n])
        candidates = [n for n in order if n not in kept]
        if not candidates:
            break
        kept = kept | {candidates[0]}
        ctx.progress(f"keeping {candidates[0]} in float")
        emitter = make(kept)
        quantized = emitter.run()
        score = evaluator.score(quantized)
        steps.append({"kept_float": sorted(kept), "score": score})
    summary = {"metric": "top-1 accuracy" if labels is not None else "top-1 agreement with float",
               "float": evaluator.reference, "quantized": score,
               "drop": round(evaluator.reference - score, 6), "max_drop": max_drop,
               "within_bound": evaluator.reference - score <= max_drop, "steps": steps}
    if order is not None:
        summary["sensitivity_order"] = order
    return quantized, emitter, kept, summary
