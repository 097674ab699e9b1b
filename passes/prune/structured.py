"""The ``prune`` pass: structured channel pruning that physically removes channels.

Weights are sliced, conv ``groups``, split indices and reshape targets are rewritten, and
``rebuild`` re-infers every shape, so the result is a smaller Relax graph (not masks).
Kept channel counts respect the target's channel multiple (``round_to``): a layer whose
count is a multiple of it before stays one after (or becomes a divisor of it, below one
vector), and any other count keeps the granularity it had (88 of 16 stays a multiple of 8),
so pruning never gives a layer a more ragged vector tail than it had unpruned.
Removed channels' expected activations are folded into their consumers' biases
(compensate.py), so pruning without fine-tuning keeps what the consumers were trained on.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from tvm import relax

from hwcompile.constant_weights import constants_as_weights
from hwcompile.errors import PassError
from hwcompile.model import Model
from hwcompile.pipeline import PassContext, register_pass
from hwcompile.rewrite import RebuildContext, call_name, rebuild

from . import autodiff, data, importance
from .compensate import Compensation, compensate_removed
from .groups import Analysis, Chan, Group, analyze, int_values
from .steps import STEP_FIGURES, StepTracker, step_summary


def check_ratio(ratio: float, name: str = "ratio") -> None:
    if not 0.0 <= ratio < 1.0:
        raise PassError(f"{name}={ratio} is outside [0, 1): it is the fraction of channels "
                        "(or weights) to remove, e.g. 0.3")


def _space_ok(size: int, removed: int, round_to: int, max_layer_ratio: float) -> bool:
    kept = size - removed
    if removed == 0:
        return True
    if kept <= 0 or removed > max_layer_ratio * size:
        return False
    # A count keeps the granularity it had: a whole number of vectors stays one, 88 channels
    # (5.5 vectors of 16) stay a multiple of 8; or it becomes a divisor of the vector width
    # (8 of 16 lanes: half vectors, no ragged tail).
    return kept % math.gcd(size, round_to) == 0 or (kept < round_to and round_to % kept == 0)


def _group_key(analysis: Analysis, group: Group) -> tuple:
    return tuple(group.layers), tuple(sorted((analysis.spaces[s].name, c)
                                             for s, c in group.counts.items()))


def sizes(analysis: Analysis, groups: list[Group]) -> dict:
    """Unit count per group and channel count per space: the baseline of iterative pruning."""
    return {"groups": {_group_key(analysis, g): len(g.units) for g in groups},
            "spaces": {s.name: len(s.ids) for s in analysis.spaces}}


def plan(analysis: Analysis, groups: list[Group], scores: list[np.ndarray], ratio: float,
         scope: str, max_layer_ratio: float, round_to: int, baseline: dict | None = None
         ) -> tuple[set[int], list[int]]:
    """Units (union-find roots) to remove, and how many per group.

    Local: each group removes ``ratio`` of its units. Global: the lowest-scored ``ratio`` of
    all units (scores are normalized per group). Either way each group's count is moved to
    the nearest count that keeps every layer it touches valid (``_space_ok``); groups are
    settled in order against the counts already removed, so shared layers stay valid.

    ``baseline`` (``sizes`` of the unpruned model) makes ``ratio`` cumulative: counts, the
    rounding rule and ``max_layer_ratio`` refer to the original sizes, less what earlier
    steps removed, so pruning in steps ends at the counts one step would give.
    """
    base_groups = [len(g.units) for g in groups]
    base_spaces = [len(s.ids) for s in analysis.spaces]
    if baseline is not None:
        base_groups = [baseline["groups"].get(_group_key(analysis, g), n)
                       for g, n in zip(groups, base_groups)]
        base_spaces = [baseline["spaces"].get(s.name, n) for s, n in zip(analysis.spaces, base_spaces)]
    if scope == "global":
        flat = sorted((s, g, u) for g, group_scores in enumerate(scores)
                      for u, s in enumerate(group_scores))
        gone = sum(base_groups) - len(flat)
        wanted = [0] * len(groups)
        for _, g, _ in flat[:max(0, round(ratio * sum(base_groups)) - gone)]:
            wanted[g] += 1
    else:
        wanted = [max(0, round(ratio * base) - (base - len(group.units)))
                  for group, base in zip(groups, base_groups)]
    # channels already gone (earlier steps) count against each layer's original size
    removed_in = [base - len(space.ids) for base, space in zip(base_spaces, analysis.spaces)]
    removed: set[int] = set()
    counts = []
    for group, group_scores, target in zip(groups, scores, wanted):
        options = sorted(range(len(group.units) + 1), key=lambda n: (abs(n - target), n))
        n = next(n for n in options if all(
            _space_ok(base_spaces[s], removed_in[s] + n * c, round_to, max_layer_ratio)
            for s, c in group.counts.items()))
        for s, c in group.counts.items():
            removed_in[s] += n * c
        for u in np.argsort(group_scores, kind="stable")[:n]:
            removed.add(group.units[u].root)
        counts.append(n)
    return removed, counts


def apply(model: Model, analysis: Analysis, removed: set[int],
          compensation: Compensation | None = None) -> Model:
    """Rebuild ``model`` without the channels of the ``removed`` units.

    With ``compensation`` (see compensate.py) its adjusted params are used and its remaining
    shifts are added after their consumers as new bias adds.
    """
    if compensation is not None:
        model = model.replace(params=compensation.params)
    inserts = compensation.inserts if compensation is not None else {}

    def keep(ids: tuple[int, ...]) -> np.ndarray:
        return np.array([analysis.find(i) not in removed for i in ids], dtype=bool)

    sliced: dict[str, np.ndarray] = {}
    for s in analysis.slices.values():
        mask = keep(s.ids)
        if not mask.all():
            value = sliced.get(s.weight, model.params[s.weight])
            sliced[s.weight] = np.compress(mask, value, axis=s.axis)
    new_vars: dict[str, relax.Var] = {}

    def operand(rc: RebuildContext, arg: relax.Expr) -> relax.Expr:
        name = rc.weight_name(arg)
        if name in sliced:
            if name not in new_vars:
                new_vars[name] = rc.param(name, sliced[name])
            return new_vars[name]
        return rc.arg(arg)

    def rewrite(rc: RebuildContext, binding: relax.VarBinding):
        new = build(rc, binding)
        name = binding.var.name
        if name not in inserts:
            return new
        chan = analysis.chan[name]
        shift = inserts[name][keep(chan.ids)]
        shape = [1] * binding.value.ty.ndim
        shape[chan.axis] = len(shift)
        dtype = str(binding.value.ty.dtype)
        param = rc.param(rc.unique_name(f"{rc.weight_name(binding.value.args[1])}.prune_shift"),
                         shift.reshape(shape).astype(dtype))
        return relax.op.add(rc.emit(new if new is not None else rc.arg(binding.value)), param)

    def build(rc: RebuildContext, binding: relax.VarBinding):
        value, name = binding.value, binding.var.name
        op = call_name(value)
        if op is None:
            return None
        args = [operand(rc, a) for a in value.args]
        if op == "relax.nn.conv2d" and name in analysis.depthwise:
            a = value.attrs
            groups = int(keep(analysis.chan[value.args[0].name].ids).sum()) \
                if value.args[0].name in analysis.chan else int(a.groups)
            return relax.op.nn.conv2d(args[0], args[1], a.strides, a.padding, a.dilation, groups,
                                      a.data_layout, a.kernel_layout, a.out_layout,
                                      a.out_dtype or None)
        chan = analysis.chan.get(name)
        if op == "relax.split" and isinstance(chan, list) and chan and chan[0] is not None \
                and chan[0].axis == int(value.attrs.axis) % value.args[0].ty.ndim:
            sizes = np.cumsum([int(keep(c.ids).sum()) for c in chan])[:-1]
            return relax.op.split(args[0], [int(s) for s in sizes], int(value.attrs.axis))
        if name in analysis.channel_slices:  # a slice of the channel axis: re-count its bounds
            src = analysis.chan[value.args[0].name]
            axes = int_values(value.args[1])
            k = [a % value.args[0].ty.ndim for a in axes].index(src.axis)
            begin, end = int_values(value.args[2]), int_values(value.args[3])
            begin[k] = int(keep(src.ids[:analysis.channel_slices[name]]).sum())
            end[k] = begin[k] + int(keep(chan.ids).sum())
            strides = int_values(value.args[4]) if len(value.args) > 4 else None
            return relax.op.strided_slice(args[0], axes, begin, end, strides,
                                          bool(value.attrs.assume_inbound))
        if op == "relax.reshape" and isinstance(chan, Chan):
            dims = list(value.args[1].values)
            dims[chan.axis] = int(keep(chan.ids).sum())
            return relax.op.reshape(args[0], relax.ShapeExpr(dims))
        return relax.Call(value.op, args, value.attrs, value.ty_args)

    return rebuild(model, rewrite)


def _layer_channels(analysis: Analysis, removed: set[int], baseline: dict | None) -> dict[str, str]:
    out = {}
    for space in analysis.spaces:
        if space.name.endswith(":out"):
            kept = sum(analysis.find(i) not in removed for i in space.ids)
            before = len(space.ids) if baseline is None else baseline["spaces"].get(space.name,
                                                                                     len(space.ids))
            if kept != before:
                out[space.name[:-4]] = f"{before} -> {kept}"
    return out


def removed_positions(analysis: Analysis, removed: set[int]) -> dict[str, list[int]]:
    """Per conv/dense layer, the positions of its output channels that go."""
    out = {}
    for space in analysis.spaces:
        if space.name.endswith(":out"):
            gone = [p for p, i in enumerate(space.ids) if analysis.find(i) in removed]
            if gone:
                out[space.name[:-4]] = gone
    return out


_REWRITE_ERRORS = (RuntimeError, ValueError, TypeError, KeyError, IndexError)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _apply_safely(model: Model, analysis: Analysis, groups: list[Group], removed: set[int],
                  compensate: bool) -> tuple[Model, set[int], Compensation | None, list[dict]]:
    """``apply``, and when the rewrite fails (a coupling the analysis got wrong), the same
    without every group whose removal alone fails: those layers stay unpruned and are
    returned as excluded entries (layers, reason) instead of failing the whole model."""
    def attempt(units: set[int]):
        shifts = compensate_removed(model, analysis, units) if compensate and units else None
        return (apply(model, analysis, units, shifts) if units else model), shifts

    try:
        pruned, shifts = attempt(removed)
        return pruned, removed, shifts, []
    except _REWRITE_ERRORS:
        pass
    failed = []
    for group in groups:
        units = {u.root for u in group.units} & removed
        if not units:
            continue
        try:
            apply(model, analysis, units)
        except _REWRITE_ERRORS as err:
            removed = removed - units
            failed.append({"layers": group.layers,
                           "reason": f"pruning it breaks the rewrite ({_first_line(err)})"})
    try:
        pruned, shifts = attempt(removed)
    except _REWRITE_ERRORS as err:
        layers = sorted({layer for g in groups for layer in g.layers})
        failed.append({"layers": layers, "reason": f"pruning the rest together breaks the "
                       f"rewrite ({_first_line(err)}); the model is left unpruned"})
        return model, set(), None, failed
    return pruned, removed, shifts, failed


def prune_once(model: Model, *, ratio: float, criterion: str, scope: str, max_layer_ratio: float,
               round_to: int, ignore: list[str], aggregate: str, normalize: str,
               grads: dict[str, np.ndarray] | None, compensate: bool = True,
               bn_fold: bool = True, baseline: dict | None = None) -> tuple[Model, dict]:
    """One pruning step; returns the pruned model and its report details.

    With ``baseline`` (``sizes`` of the model before the first step) ``ratio`` is the
    cumulative fraction of the original channels, and ``channels`` reports original -> now.
    ``removed`` maps each pruned layer to the positions (in this step's model) of the output
    channels that went; layers that could not be pruned are in ``excluded`` with the reason.
    """
    analysis, groups, excluded = analyze(model, ignore)
    skipped = [{"layers": e.layers, "reason": e.reason} for e in excluded]
    if not groups:
        return model, {"groups": [], "excluded": skipped, "channels": {}, "removed": {},
                       "units_removed": "0 of 0"}
    scores, notes = importance.unit_scores(model, analysis, groups, criterion, aggregate,
                                           normalize, grads, bn_fold=bn_fold)
    removed, counts = plan(analysis, groups, scores, ratio, scope, max_layer_ratio, round_to,
                           baseline)
    pruned, removed, shifts, failed = _apply_safely(model, analysis, groups, removed, compensate)
    counts = [len({u.root for u in g.units} & removed) for g in groups]
    details = {
        "groups": [{"layers": g.layers, "units": len(g.units), "removed": n}
                   for g, n in zip(groups, counts)],
        "excluded": skipped + failed,
        "channels": _layer_channels(analysis, removed, baseline),
        "removed": removed_positions(analysis, removed),
        "units_removed": f"{sum(counts)} of {sum(len(g.units) for g in groups)}",
    }
    if shifts is not None:
        details["compensation"] = {"consumers": shifts.consumers,
                                   "new_bias_adds": len(shifts.inserts),
                                   "uncompensated_inputs": shifts.uncompensated}
    if notes:
        details["notes"] = notes
    return pruned, details


def _to_original(alive: dict[str, list[int]], removed: dict[str, list[int]],
                 sizes: dict[str, int]) -> None:
    """Move one step's removed positions into ``alive`` (each layer's original indices that
    are still there), so the report can name the original channels after several steps."""
    for layer, positions in removed.items():
        kept = alive.setdefault(layer, list(range(sizes[layer])))
        gone = set(positions)
        alive[layer] = [c for p, c in enumerate(kept) if p not in gone]


@register_pass("prune")
def prune(model: Model, ctx: PassContext, *, ratio: float = 0.5,
          criterion: Literal["magnitude", "l1", "l2", "grad_l1", "grad_l2", "taylor",
                             "bn_scale"] = "l2",
          scope: Literal["local", "global"] = "local", max_layer_ratio: float = 0.9,
          round_to: int | None = None, ignore: list[str] | None = None,
          aggregate: Literal["mean", "sum", "max"] = "mean",
          normalize: Literal["none", "mean", "max", "sum"] = "mean",
          steps: int = 1, finetune_steps: int = 100, lr: float = 1e-3, batch: int = 32,
          distill: bool = False, compensate: bool = True, bn_fold: bool = True,
          measure: bool = False, measure_repeat: int = 20) -> Model:
    """Structured channel pruning: physically remove the least important channels.

    Coupled channels (residual adds, concat/split, depthwise/grouped convs, flatten->dense)
    are removed together; graph outputs and ops the analysis does not understand are left
    alone and listed in the report. ``round_to`` defaults to the target's channel multiple.
    ``steps`` > 1 prunes iteratively with ``finetune_steps`` of fine-tuning (Adam, ``lr``,
    ``batch``; ``distill`` from the unpruned model) in between (needs calibration data);
    each step is reported (``steps``: sizes, held-out accuracy with ``val_`` data, latency
    with ``measure``). Gradient criteria (grad_l1, grad_l2, taylor) need calibration data.
    ``compensate`` folds each removed channel's expected activation into its consumers'
    biases; ``bn_fold`` scores kernels with their batch-norm scale folded in. ``measure``
    compiles the model before and after for the current target and times batch-1 runs
    (median of ``measure_repeat``): ``latency_ms_before``/``_after`` and ``speedup``.
    """
    from hwcompile.passes.fold import fold_constants

    from .finetune import finetune_model, remember_teacher, training_function

    check_ratio(ratio)
    importance.check_criterion(criterion)
    check_ratio(max_layer_ratio - 1e-9, "max_layer_ratio")
    if scope not in ("local", "global"):
        raise PassError(f"prune: scope '{scope}' is not local or global")
    if aggregate not in importance.AGGREGATES or normalize not in importance.NORMALIZATIONS:
        raise PassError(f"prune: aggregate must be one of {importance.AGGREGATES}, normalize "
                        f"one of {importance.NORMALIZATIONS}")
    if steps < 1 or batch < 1 or lr <= 0:
        raise PassError(f"prune: steps={steps} and batch={batch} must be at least 1, lr={lr} > 0")
    if measure_repeat < 1:
        raise PassError(f"prune: measure_repeat={measure_repeat} must be at least 1")
    multiple = getattr(ctx.constraints, "channel_multiple", 1)
    round_to = multiple if round_to is None else round_to
    if round_to < 1:
        raise PassError(f"prune: round_to={round_to} must be at least 1")
    needs_data = criterion in importance.GRADIENT_CRITERIA or steps > 1
    samples = data.load(ctx.calibration, model, f"prune(criterion={criterion}, steps={steps})") \
        if needs_data else None
    # Weight-only subgraphs (e.g. a Gemm's transposed weight) become named weights first,
    # so every conv/dense weight the analysis sees is a parameter it can slice.
    source = model
    model = constants_as_weights(fold_constants(model, ctx))
    original = model
    remember_teacher(ctx, model)
    tracker = StepTracker(ctx, data.validation(ctx.calibration, model), measure, measure_repeat)
    if steps > 1 or tracker.val is not None or measure:
        tracker.record_unpruned(model)
    # Every step's ratio is cumulative and refers to the original sizes, so the final
    # channel counts are those of a single step with the same ratio (only which channels go
    # may differ: later steps score the fine-tuned weights).
    baseline = sizes(*analyze(model, ignore or [])[:2]) if steps > 1 else None
    teacher_logits = None
    all_details = []
    alive: dict[str, list[int]] = {}  # steps > 1: original indices of the channels left
    for step in range(1, steps + 1):
        target = ratio * step / steps  # cumulative fraction of the original channels
        grads = None
        if criterion in importance.GRADIENT_CRITERIA:
            ctx.progress(f"prune: gradients on {len(samples[0])} calibration samples")
            grads = importance.gradients(model, *samples)
        model, details = prune_once(model, ratio=target, criterion=criterion, scope=scope,
                                    max_layer_ratio=max_layer_ratio, round_to=round_to,
                                    ignore=ignore or [], aggregate=aggregate,
                                    normalize=normalize, grads=grads, compensate=compensate,
                                    bn_fold=bn_fold, baseline=baseline)
        all_details.append(details)
        if not details["groups"]:
            break
        if baseline is not None:
            _to_original(alive, details["removed"],
                         {k[:-4]: n for k, n in baseline["spaces"].items() if k.endswith(":out")})
        tuned, forward = None, None
        if step < steps:
            if distill and teacher_logits is None:
                teacher = tracker.unpruned_forward or autodiff.forward_function(
                    original, logits=True, samples=len(samples[0]))
                teacher_logits = teacher(samples[0], original.params)
            ctx.progress(f"prune: step {step}/{steps} done, fine-tuning {finetune_steps} steps")
            step_batch = min(batch, len(samples[0]))
            evaluated = 2 * len(tracker.val[1]) if tracker.val is not None else 0
            gradient = training_function(model, step_batch, distill,
                                         samples=finetune_steps * step_batch + evaluated)
            forward = gradient.forward  # the same build evaluates the pruned and tuned weights
            tuned, loss = finetune_model(model, *samples, steps=finetune_steps, lr=lr,
                                         batch=gradient.batch, teacher_logits=teacher_logits,
                                         gradient=gradient)
            details["finetune_loss"] = round(loss, 5)
        if steps > 1 or tracker.val is not None:
            tracker.record_step(details, step, steps, target, model, tuned, forward)
        model = tuned or model
    # with steps > 1: channels are original -> final; sizes are in the pass's "after"
    final = {k: v for k, v in all_details[-1].items() if k not in STEP_FIGURES}
    if baseline is not None:
        final["removed"] = {layer: sorted(set(range(baseline["spaces"][f"{layer}:out"])) - set(kept))
                            for layer, kept in alive.items()}
    for entry in final["excluded"]:
        layers = entry["layers"]
        more = f" (+{len(layers) - 3} more)" if len(layers) > 3 else ""
        ctx.progress(f"prune: {', '.join(layers[:3])}{more} left unpruned: {entry['reason'][:300]}")
    ctx.details.update(final)
    if steps > 1:
        ctx.details["steps"] = [step_summary(d) for d in all_details]
    ctx.details["round_to"] = round_to
    ctx.details.update(tracker.summary())
    if not final["groups"]:
        ctx.progress("prune: nothing prunable in this model; it is left as it was")
        return source
    if measure:
        ctx.details.update(tracker.latency(original, model))
    return model
