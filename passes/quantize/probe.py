"""Running a Model with its intermediate tensors exposed (for calibration and error reports).

A probe is the model's ``main`` rewritten to return chosen bindings (by their position in
``main``), compiled once for the host CPU and run on feeds. Positions, not variables, name
tensors because every rebuild makes new variables but keeps the binding order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax

from hwcompile.model import Model
from hwcompile.rewrite import dataflow_bindings


def exposed(model: Model, positions: Sequence[int]) -> Model:
    """``model`` whose main returns a tuple of the bindings at ``positions``."""
    mod = relax.transform.ToNonDataflow()(model.mod)
    func = mod["main"]
    bindings = dataflow_bindings(func)
    fields = [bindings[i].var for i in positions]
    body = relax.SeqExpr(func.body.blocks, relax.Tuple(fields))
    new = relax.Function(func.params, body, relax.TupleType([f.ty for f in fields]), True,
                         func.attrs)
    return model.replace(mod=model.module_with_main(new))


def host_target() -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


class Runner:
    """A model compiled for the host CPU, run on numpy feeds; returns every output."""

    def __init__(self, model: Model):
        self.names = [s.name for s in model.inputs]
        executable = tvm.compile(model.bound_module(), host_target())
        self._vm = relax.VirtualMachine(executable, tvm.cpu())

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = [tvm.runtime.tensor(np.require(feed[n], requirements="C")) for n in self.names]
        result = self._vm["main"](*args)
        if isinstance(result, tvm.runtime.Tensor):
            return [result.numpy()]
        return [r.numpy() for r in result]
