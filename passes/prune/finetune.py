"""The ``finetune`` pass: recovery training of a (pruned) Model, optionally distilled.

Training runs on the Model's own Relax graph through Relax autodiff (see autodiff.py), so the
weights trained are exactly the weights compiled; Adam updates happen in numpy. With
``distill`` the unpruned model (remembered by ``prune`` in the pass context) is the teacher
and the loss is (1−α)·CE(y_s, y) + α·τ²·KL(softmax(z_t/τ) ‖ softmax(z_s/τ)).
"""

from __future__ import annotations

import numpy as np

from hwcompile.errors import PassError
from hwcompile.model import Model
from hwcompile.pipeline import PassContext, register_pass
from hwcompile.rewrite import call_name, dataflow_bindings

from . import autodiff, data


def remember_teacher(ctx: PassContext, model: Model) -> None:
    """Keep the first unpruned model of a pipeline as the distillation teacher."""
    if ctx.teacher is None:
        ctx.teacher = model


def _frozen(model: Model) -> set[str]:
    """Parameters that are not trained: batch-norm running statistics, and scalars (the
    bounds of a clip or hard-swish made weights by constants_as_weights: an activation's
    constants, not a layer's; a layer's bias has a channel axis)."""
    names = {name for name, value in model.params.items() if value.ndim == 0}
    for binding in dataflow_bindings(model.main):
        if call_name(binding.value) == "relax.nn.batch_norm":
            names |= {a.name for a in binding.value.args[3:5] if a in model.param_vars}
    return names


def finetune_model(model: Model, x: np.ndarray, labels: np.ndarray | None, *, steps: int = 200,
                   lr: float = 1e-3, batch: int = 64, teacher_logits: np.ndarray | None = None,
                   tau: float = 4.0, alpha: float = 0.7, seed: int = 0,
                   gradient: autodiff.GradientFunction | None = None,
                   progress=lambda message: None) -> tuple[Model, float]:
    """Train ``model`` for ``steps`` Adam steps on (x, labels); return it with new weights
    and the mean loss of its last (up to) 10 steps.

    ``teacher_logits`` (the teacher's logits on ``x``, ``autodiff.forward(..., logits=True)``)
    turn on distillation. Without labels the targets are the teacher's predictions (so a
    teacher is then required). ``gradient``: a build of ``training_function`` to reuse.
    """
    if labels is None:
        if teacher_logits is None:
            raise PassError("finetune needs labels ('labels' in the calibration data) or distill=true")
        labels = teacher_logits.argmax(axis=-1)
    batch = min(batch, len(x))
    classes = int(model.outputs[0].shape[-1])
    onehot = np.eye(classes, dtype=np.float32)[labels]
    distill = teacher_logits is not None
    fn = gradient or training_function(model, batch, distill, tau, alpha, samples=steps * batch)
    if fn.batch != batch or fn.distill != distill:
        raise PassError(f"finetune: a gradient function built for batch {fn.batch}, distill "
                        f"{fn.distill} cannot train at batch {batch}, distill {distill}")
    params = {k: v.copy() for k, v in model.params.items()}
    trained = [n for n in fn.names if n not in _frozen(model)]
    m = {n: np.zeros_like(params[n]) for n in trained}
    v = {n: np.zeros_like(params[n]) for n in trained}
    b1, b2, eps = 0.9, 0.999, 1e-8
    losses = []
    for step, index in enumerate(autodiff.batches(len(x), batch, steps, seed), start=1):
        extra = (teacher_logits[index],) if distill else ()
        loss, grads = fn(x[index], params, onehot[index], *extra)
        losses.append(loss)
        for n in trained:
            m[n] = b1 * m[n] + (1 - b1) * grads[n]
            v[n] = b2 * v[n] + (1 - b2) * grads[n] ** 2
            update = lr * (m[n] / (1 - b1 ** step)) / (np.sqrt(v[n] / (1 - b2 ** step)) + eps)
            params[n] = (params[n] - update).astype(params[n].dtype)
        if step % 50 == 0 or step == steps:
            progress(f"finetune: step {step}/{steps}, loss {loss:.4f}")
    return model.replace(params=params), float(np.mean(losses[-10:]))


def training_function(model: Model, batch: int, distill: bool = False, tau: float = 4.0,
                      alpha: float = 0.7, samples: int | None = None) -> autodiff.GradientFunction:
    """The gradient (and forward) build ``finetune_model`` trains ``model`` with; ``samples``
    it will run in all (``host_build_target``)."""
    return autodiff.gradient_function(model, batch, distill=distill, tau=tau, alpha=alpha,
                                      samples=samples)


def held_out_accuracy(forward: autodiff.ForwardFunction, model: Model,
                      val: tuple[np.ndarray, np.ndarray]) -> float:
    return data.accuracy(forward(val[0], model.params), val[1])


@register_pass("finetune")
def finetune(model: Model, ctx: PassContext, *, steps: int = 200, lr: float = 1e-3,
             batch: int = 64, distill: bool = False, tau: float = 4.0, alpha: float = 0.7,
             seed: int = 0) -> Model:
    """Recovery fine-tuning with Relax autodiff on the calibration data (with 'labels').

    ``distill=true`` uses the model before ``prune`` as the teacher: loss
    (1-alpha)*CE + alpha*tau^2*KL(teacher || student). With held-out data in the
    calibration mapping (``val_<input>``, ``val_labels``) the report gives the held-out
    accuracy before and after.
    """
    if steps < 1 or lr <= 0 or batch < 1:
        raise PassError(f"finetune: steps ({steps}) and batch ({batch}) must be >= 1 and lr ({lr}) > 0")
    if not 0.0 <= alpha <= 1.0 or tau <= 0:
        raise PassError(f"finetune: alpha={alpha} must be in [0, 1] and tau={tau} positive")
    if distill and ctx.teacher is None:
        raise PassError("finetune(distill=true) needs a teacher: run prune earlier in the same "
                        "pipeline (the unpruned model is the teacher)")
    x, labels = data.load(ctx.calibration, model, "finetune")
    val = data.validation(ctx.calibration, model)
    batch = min(batch, len(x))
    evaluated = 2 * len(val[1]) if val else 0
    gradient = training_function(model, batch, distill, tau, alpha,
                                 samples=steps * batch + evaluated)
    before = held_out_accuracy(gradient.forward, model, val) if val else None
    teacher_logits = autodiff.forward(ctx.teacher, x, logits=True) if distill else None
    log: list[str] = []
    result, loss = finetune_model(model, x, labels, steps=steps, lr=lr, batch=batch,
                                  teacher_logits=teacher_logits, tau=tau, alpha=alpha, seed=seed,
                                  gradient=gradient,
                                  progress=lambda msg: (log.append(msg), ctx.progress(msg)))
    ctx.details.update({"steps": steps, "distill": distill, "loss": round(loss, 5), "log": log[-3:]})
    if val:
        after = held_out_accuracy(gradient.forward, result, val)
        ctx.details.update({"val_samples": len(val[1]), "val_accuracy_before": before,
                            "val_accuracy": after})
        ctx.progress(f"finetune: held-out accuracy {before:.2%} -> {after:.2%} "
                     f"({len(val[1])} samples)")
    return result
