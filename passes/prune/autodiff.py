"""Loss and weight gradients of a Model through Relax autodiff (``relax.transform.Gradient``).

Used by the gradient/Taylor importance criteria and by recovery fine-tuning. The model's own
Relax graph is differentiated, so what is trained is exactly what is compiled: no second,
hand-written copy of the network to keep in sync (DESIGN.md: one IR handle).

Inference batch-norm has no registered gradient; ``DecomposeOpsForInference`` rewrites it into
elementwise ops on the same named parameters first. The symbolic batch is fixed to the
training batch size so the default CPU schedules see static shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from hwcompile.errors import PassError
from hwcompile.model import Model


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
    """A compiled ``(inputs, params, onehot[, teacher]) -> (loss, grads)`` for one batch size."""

    vm: relax.VirtualMachine
    names: list[str]  # parameter names, in gradient order
    batch: int
    distill: bool

    def __call__(self, x: np.ndarray, params: dict[str, np.ndarray], onehot: np.ndarray,
                 teacher: np.ndarray | None = None) -> tuple[float, dict[str, np.ndarray]]:
        args = [x] + [params[n] for n in self.names] + [onehot]
        if self.distill:
            args.append(teacher)
        loss, grads = self.vm["main_loss_adjoint"](*[tvm.runtime.tensor(np.ascontiguousarray(a))
                                                     for a in args])
        return float(loss.numpy()), {n: g.numpy() for n, g in zip(self.names, grads)}


def gradient_function(model: Model, batch: int, *, distill: bool = False, tau: float = 4.0,
                      alpha: float = 0.5) -> GradientFunction:
    """Compile the loss-and-gradient function of ``model`` for a fixed ``batch``."""
    from hwcompile.targets.cpu import host_target

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise PassError("gradients need a model with one input and one (logits) output")
    mod = relax.transform.DecomposeOpsForInference()(model.mod)
    symbols = {str(d): batch for d in model.inputs[0].shape if isinstance(d, str)}
    if symbols:
        mod = relax.transform.BindSymbolicVars(symbols, "main")(mod)
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
    mod = tvm.IRModule({"main_loss_adjoint": mod["main_loss_adjoint"]})
    executable = tvm.compile(mod, host_target())
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return GradientFunction(vm, [v.name for v in param_vars], batch, distill)


def forward(model: Model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The model's output on ``x`` (built with the default CPU schedules), batch by batch."""
    from hwcompile.targets.cpu import host_target

    vm = relax.VirtualMachine(tvm.compile(model.bound_module(), host_target()), tvm.cpu())
    return np.concatenate([vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x[i:i + batch]))).numpy()
                           for i in range(0, len(x), batch)])


def batches(n: int, batch: int, steps: int, seed: int = 0):
    """``steps`` index arrays of ``batch`` samples, reshuffled each epoch (fixed seed)."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch:
            order += list(rng.permutation(n))
        yield np.array(order[:batch])
        order = order[batch:]
