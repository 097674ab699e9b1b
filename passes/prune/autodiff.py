"""Loss and weight gradients of a Model through Relax autodiff (``relax.transform.Gradient``).

Used by the gradient/Taylor importance criteria and by recovery fine-tuning. The model's own
Relax graph is differentiated, so what is trained is exactly what is compiled: no second,
hand-written copy of the network to keep in sync (DESIGN.md: one IR handle).

Inference batch-norm has no registered gradient; ``DecomposeOpsForInference`` rewrites it into
elementwise ops on the same named parameters first. The batch is fixed to the training batch
size so the default CPU schedules see static shapes: a symbolic batch is bound, and a model
imported at a fixed batch (a corpus model compiled with ``--input-shape x=1x3x48x192``) is
re-emitted with the training batch as its leading dimension (``training_graph``). A model
whose output is a softmax is trained on its input, the logits: the cross-entropy of the
probabilities is then exact, and distillation's temperature applies to real logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from hwcompile.errors import PassError
from hwcompile.model import Model, TensorSpec, shape_of
from hwcompile.rewrite import call_name, dataflow_bindings
from hwcompile.targets.cpu import host_build_target


def _ends_in_softmax(binding: relax.VarBinding) -> bool:
    value = binding.value
    return call_name(value) == "relax.nn.softmax" and \
        int(value.attrs.axis) % value.args[0].ty.ndim == value.args[0].ty.ndim - 1


def training_graph(model: Model, batch: int, logits: bool = True) -> tuple[Model, bool]:
    """``model`` with a static leading batch of ``batch`` and (with ``logits``) its logits
    as the output, and whether a final softmax was dropped for that.

    A symbolic batch is bound. A fixed one (an import at batch 1) is replaced: ``main`` is
    re-emitted with the new input shape, every shape re-inferred, and a reshape that keeps
    the batch as its leading dimension (a classifier's flatten) gets the new batch. A graph
    that has the old batch baked in elsewhere fails the check on its output's batch.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise PassError("training needs a model with one input and one (logits) output")
    func = model.main
    old = model.inputs[0].shape[0] if model.inputs[0].shape else None
    if isinstance(old, str):
        func = relax.transform.BindSymbolicVars({old: batch}, "main")(model.mod)["main"]
        old = batch
    x = func.params[0]
    new_x = relax.Var(x.name, relax.TensorType([batch, *x.ty.shape.values[1:]], x.ty.dtype))
    weights = [relax.Var(v.name, v.ty) for v in func.params[1:]]
    mapped: dict[relax.Expr, relax.Expr] = dict(zip(func.params, [new_x, *weights]))

    def arg(expr: relax.Expr) -> relax.Expr:
        if isinstance(expr, relax.Var):
            return mapped[expr]
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([arg(f) for f in expr.fields])
        if isinstance(expr, relax.TupleGetItem):
            return relax.TupleGetItem(arg(expr.tuple_value), expr.index)
        return expr  # constants, shapes, prim values

    returned = func.body.body
    dropped = False
    bb = relax.BlockBuilder()
    with bb.function("main", [new_x, *weights]):
        with bb.dataflow():
            for binding in dataflow_bindings(func):
                value = binding.value
                if isinstance(binding, relax.MatchCast) or not isinstance(value, (relax.Call, relax.Var,
                                                                                   relax.Tuple, relax.TupleGetItem)):
                    raise PassError(f"training cannot re-batch this graph ({binding.var.name}: "
                                    f"{type(value).__name__})")
                if logits and binding.var.same_as(returned) and _ends_in_softmax(binding):
                    mapped[returned], dropped = mapped[value.args[0]], True
                    continue
                if isinstance(value, relax.Call):
                    args = [arg(a) for a in value.args]
                    if call_name(value) == "relax.reshape" and old != batch:
                        dims = list(value.args[1].values)
                        if int(dims[0]) == old and shape_of(args[0].ty)[:1] == (batch,):
                            args[1] = relax.ShapeExpr([batch, *dims[1:]])
                    value = relax.Call(value.op, args, value.attrs, value.ty_args)
                else:
                    value = arg(value)
                mapped[binding.var] = bb.emit(value, name_hint=binding.var.name)
            out = bb.emit_output(mapped[returned])
        bb.emit_func_output(out)
    main = bb.get()["main"]
    out_shape = shape_of(main.ret_ty) if isinstance(main.ret_ty, relax.TensorType) else ()
    if out_shape[:1] != (batch,):
        raise PassError(f"training cannot re-batch this graph: its output is {out_shape} at "
                        f"batch {batch} (the batch {old} is baked into an op)")
    spec = model.inputs[0]
    return model.replace(mod=model.module_with_main(main),
                         inputs=[TensorSpec(spec.name, shape_of(new_x.ty), spec.dtype)],
                         outputs=[TensorSpec(model.outputs[0].name, out_shape, model.outputs[0].dtype)]
                         ), dropped


def _loss_function(logits: relax.TensorType, tau: float, alpha: float, distill: bool) -> relax.Function:
    """(logits, onehot[, teacher_logits]) -> (1-α)·CE + α·τ²·KL(softmax(t/τ) ‖ softmax(s/τ))."""
    batch = int(logits.shape[0])
    z = relax.Var("logits", logits)
    y = relax.Var("onehot", logits)
    args = [z, y]
    bb = relax.BlockBuilder()
    if distill:
        t = relax.Var("teacher", logits)
        args.append(t)
    with bb.function("loss", args):
        with bb.dataflow():
            log_p = bb.emit(relax.op.nn.log_softmax(z, axis=-1))
            ce = bb.emit(relax.op.negative(relax.op.sum(relax.op.multiply(y, log_p))))
            loss = bb.emit(relax.op.divide(ce, relax.const(float(batch))))
            if distill:
                inv_tau = relax.const(1.0 / tau)
                log_ps = bb.emit(relax.op.nn.log_softmax(relax.op.multiply(z, inv_tau), axis=-1))
                log_pt = bb.emit(relax.op.nn.log_softmax(relax.op.multiply(t, inv_tau), axis=-1))
                kl = bb.emit(relax.op.sum(relax.op.multiply(relax.op.exp(log_pt),
                                                            relax.op.subtract(log_pt, log_ps))))
                kl = bb.emit(relax.op.divide(kl, relax.const(float(batch))))
                loss = bb.emit(relax.op.add(relax.op.multiply(loss, relax.const(1.0 - alpha)),
                                            relax.op.multiply(kl, relax.const(alpha * tau * tau))))
            out = bb.emit_output(loss)
        bb.emit_func_output(out)
    return bb.get()["loss"]


@dataclass
class GradientFunction:
    """A compiled ``(inputs, params, onehot[, teacher]) -> (loss, grads)`` for one batch size,
    built together with the model's forward pass (``forward``: one build, not two, for
    evaluating a model and training it)."""

    vm: relax.VirtualMachine
    names: list[str]  # parameter names, in gradient order
    batch: int
    distill: bool

    def __call__(self, x: np.ndarray, params: dict[str, np.ndarray], onehot: np.ndarray,
                 teacher: np.ndarray | None = None) -> tuple[float, dict[str, np.ndarray]]:
        args = [x] + [params[n] for n in self.names] + [onehot]
        if self.distill:
            args.append(teacher)
        loss, grads = self.vm["main_loss_adjoint"](*[tvm.runtime.tensor(np.require(a, requirements="C"))
                                                     for a in args])
        return float(loss.numpy()), {n: g.numpy() for n, g in zip(self.names, grads)}

    @property
    def forward(self) -> ForwardFunction:
        """The model's logits on ``batch``-sample runs (see ``forward_function``)."""
        return ForwardFunction(self.vm, self.names, self.batch)


def gradient_function(model: Model, batch: int, *, distill: bool = False, tau: float = 4.0,
                      alpha: float = 0.5, samples: int | None = None) -> GradientFunction:
    """Compile the loss-and-gradient function of ``model`` for a fixed ``batch``;
    ``samples``: how many it will run (forward passes of the build included), which
    chooses the optimization level (``host_build_target``)."""
    mod = relax.transform.DecomposeOpsForInference()(training_graph(model, batch)[0].mod)
    logits_ty = mod["main"].ret_ty
    if not isinstance(logits_ty, relax.TensorType) or logits_ty.ndim != 2:
        raise PassError("gradients need a model whose output is (batch, classes) logits")
    mod = relax.training.AppendLoss("main", _loss_function(logits_ty, tau, alpha, distill))(mod)
    func = mod["main_loss"]
    param_vars = list(func.params[1:1 + len(model.params)])
    try:
        mod = relax.transform.Gradient("main_loss", require_grads=param_vars)(mod)
    except Exception as err:  # TVM reports an op without a gradient as a C++ error
        raise PassError(f"Relax autodiff cannot differentiate this model: "
                        f"{str(err).strip().splitlines()[-1]}") from None
    mod = tvm.IRModule({"main_loss_adjoint": mod["main_loss_adjoint"], "main": mod["main"]})
    executable = tvm.compile(mod, host_build_target(samples))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return GradientFunction(vm, [v.name for v in param_vars], batch, distill)


@dataclass
class ForwardFunction:
    """A compiled ``(x, params) -> outputs`` for one model structure: the weights are
    arguments, so a model and its fine-tuned version share one build."""

    vm: relax.VirtualMachine
    names: list[str]  # parameter names, in argument order
    batch: int

    def __call__(self, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        weights = [tvm.runtime.tensor(np.require(params[n], requirements="C")) for n in self.names]
        out = []
        for i in range(0, len(x), self.batch):  # the last run is padded to a whole batch
            chunk = x[i:i + self.batch]
            padded = np.concatenate([chunk, np.zeros((self.batch - len(chunk), *chunk.shape[1:]),
                                                     chunk.dtype)])
            result = self.vm["main"](tvm.runtime.tensor(np.require(padded, requirements="C")),
                                     *weights)
            out.append(result.numpy()[:len(chunk)])
        return np.concatenate(out)


def forward_function(model: Model, batch: int = 64, logits: bool = False,
                     samples: int | None = None) -> ForwardFunction:
    """``model``'s forward pass built for ``batch`` samples per run; with ``logits`` its
    output is the input of a final softmax. ``samples``: see ``gradient_function``."""
    graph, _ = training_graph(model, batch, logits=logits)
    vm = relax.VirtualMachine(tvm.compile(graph.mod, host_build_target(samples)), tvm.cpu())
    return ForwardFunction(vm, [v.name for v in graph.param_vars], batch)


def forward(model: Model, x: np.ndarray, batch: int = 64, logits: bool = False) -> np.ndarray:
    """The model's output on ``x`` (see ``forward_function``)."""
    return forward_function(model, min(batch, len(x)), logits, samples=len(x))(x, model.params)


def batches(n: int, batch: int, steps: int, seed: int = 0):
    """``steps`` index arrays of ``batch`` samples, reshuffled each epoch (fixed seed)."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch:
            order += list(rng.permutation(n))
        yield np.array(order[:batch])
        order = order[batch:]
