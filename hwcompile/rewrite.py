"""Rebuild ``main`` binding by binding: the mechanism every structural pass uses.

A pass gives a function ``rewrite(ctx, binding)`` that returns a replacement expression for
a binding (built from ``ctx.arg`` / ``ctx.param`` / ``ctx.emit``) or ``None`` to keep it.
Everything is re-emitted through a Relax ``BlockBuilder`` so shapes are re-inferred; dead
bindings and unused weights are dropped at the end. Weights stay named (see model.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from .model import Model


def call_name(expr: relax.Expr) -> str | None:
    """``"relax.nn.conv2d"`` for a call to a Relax operator, else None."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


def dense_nchw_conv(call: relax.Call) -> bool:
    """A ``relax.nn.conv2d`` in NCHW/OIHW (output NCHW), not grouped, on a constant weight:
    the convolutions the CPU's conv rewrites handle."""
    if call_name(call) != "relax.nn.conv2d":
        return False
    a = call.attrs
    return (isinstance(call.args[1], tvm.ir.Constant) and int(a.groups) == 1
            and a.data_layout == "NCHW" and a.kernel_layout == "OIHW" and a.out_layout == "NCHW")


def mutate_functions(mutator: relax.PyExprMutator, mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with every Relax function rewritten by ``mutator`` (created on ``mod``)."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.get()


def free_vars(expr: relax.Expr) -> list[relax.Var]:
    """Relax variables an expression uses (symbolic shape variables excluded)."""
    return [v for v in relax.analysis.free_vars(expr) if not isinstance(v.ty, tvm.ir.PrimType)]


def dataflow_bindings(func: relax.Function) -> list[relax.VarBinding]:
    """All bindings of a function body, in order (from_onnx emits one dataflow block)."""
    return [b for block in func.body.blocks for b in block.bindings]


def binding_users(bindings: list[relax.VarBinding]) -> dict[relax.Var, list[int]]:
    """For each variable, the indices (into ``bindings``) of the bindings that use it."""
    users: dict[relax.Var, list[int]] = {}
    for index, binding in enumerate(bindings):
        for var in free_vars(binding.value):
            users.setdefault(var, []).append(index)
    return users


class RebuildContext:
    """What a rewrite function sees: old graph facts, and tools to emit the new one."""

    def __init__(self, model: Model):
        self.model = model
        self.bb = relax.BlockBuilder()
        self._var_map: dict[relax.Var, relax.Expr] = {}
        self._param_vars: dict[str, relax.Var] = {}
        self._param_values: dict[str, np.ndarray] = {}
        old_params = model.param_vars
        self._old_param_names = {v: v.name for v in old_params}
        self._old_param_types = {v.name: v.ty for v in old_params}
        self.definitions: dict[relax.Var, relax.Expr] = {}
        self.users: dict[relax.Var, int] = {}
        for binding in dataflow_bindings(model.main):
            self.definitions[binding.var] = binding.value
        for value in self.definitions.values():
            for var in free_vars(value):
                self.users[var] = self.users.get(var, 0) + 1
        for var in free_vars(model.main.body.body):
            self.users[var] = self.users.get(var, 0) + 1

    # --- facts about the old graph -------------------------------------------------
    def weight_name(self, old: relax.Expr) -> str | None:
        """Name of the weight an old expression is, or None if it is not a weight."""
        return self._old_param_names.get(old) if isinstance(old, relax.Var) else None

    def weight(self, old: relax.Expr) -> np.ndarray | None:
        """Value of an old expression when it is a weight or a constant, else None."""
        name = self.weight_name(old)
        if name is not None:
            return self.model.params[name]
        if isinstance(old, tvm.ir.Constant) and hasattr(old, "value"):
            return old.value.numpy()
        return None

    def producer(self, old: relax.Expr) -> relax.Expr | None:
        """The expression bound to an old dataflow variable, if any."""
        return self.definitions.get(old) if isinstance(old, relax.Var) else None

    def num_users(self, old: relax.Var) -> int:
        return self.users.get(old, 0)

    # --- building the new graph ------------------------------------------------------
    def param(self, name: str, value: np.ndarray) -> relax.Var:
        """A (new or replaced) weight parameter named ``name`` holding ``value``."""
        value = np.require(value, requirements="C")
        var = relax.Var(name, relax.TensorType(list(value.shape), str(value.dtype)))
        self._param_vars[name] = var
        self._param_values[name] = value
        return var

    def unique_name(self, base: str) -> str:
        taken = set(self.model.params) | set(self._param_vars)
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        return name

    def arg(self, old: relax.Expr) -> relax.Expr:
        """The new-graph expression standing for an old expression."""
        if isinstance(old, relax.Var):
            if old in self._var_map:
                return self._var_map[old]
            name = self._old_param_names.get(old)
            if name is None:
                raise KeyError(f"variable {old.name} used before its definition")
            if name not in self._param_vars:
                self._param_vars[name] = relax.Var(name, self._old_param_types[name])
                self._param_values[name] = self.model.params[name]
            return self._param_vars[name]
        if isinstance(old, relax.Call):
            return relax.Call(old.op, [self.arg(a) for a in old.args], old.attrs, old.ty_args)
        if isinstance(old, relax.Tuple):
            return relax.Tuple([self.arg(f) for f in old.fields])
        if isinstance(old, relax.TupleGetItem):
            return relax.TupleGetItem(self.arg(old.tuple_value), old.index)
        return old  # constants, shapes, primitive values

    def emit(self, expr: relax.Expr, name: str = "") -> relax.Var:
        return self.bb.emit(expr, name_hint=name)


RewriteFn = Callable[[RebuildContext, relax.VarBinding], "relax.Expr | None"]


def rebuild(model: Model, rewrite: RewriteFn) -> Model:
    """Re-emit ``model.main`` applying ``rewrite`` to each binding; see module docstring."""
    ctx = RebuildContext(model)
    old_main = model.main
    inputs = [relax.Var(v.name, v.ty) for v in old_main.params[: len(model.inputs)]]
    for old, new in zip(old_main.params, inputs):
        ctx._var_map[old] = new
    ctx.bb._begin_dataflow_block()
    for binding in dataflow_bindings(old_main):
        new_value = rewrite(ctx, binding)
        if new_value is None:
            new_value = ctx.arg(binding.value)
        if isinstance(binding, relax.MatchCast):  # it defines symbolic dims: keep the cast
            cast = ctx.bb.match_cast(new_value, binding.ty, name_hint=binding.var.name)
            ctx._var_map[binding.var] = (cast if isinstance(binding.var, relax.DataflowVar)
                                         else ctx.bb.emit_output(cast))
        elif isinstance(new_value, relax.Var) and isinstance(binding.var, relax.DataflowVar):
            ctx._var_map[binding.var] = new_value  # an alias: no binding needed
        elif isinstance(binding.var, relax.DataflowVar):
            ctx._var_map[binding.var] = ctx.bb.emit(new_value, name_hint=binding.var.name)
        else:
            ctx._var_map[binding.var] = ctx.bb.emit_output(new_value, name_hint=binding.var.name)
    block = ctx.bb._end_block()
    result = ctx.bb.normalize(ctx.arg(old_main.body.body))
    func = relax.Function(inputs + list(ctx._param_vars.values()), relax.SeqExpr([block], result),
                          result.ty)
    func = relax.analysis.remove_all_unused(func)
    used = set(free_vars(func.body))
    kept = [v for v in ctx._param_vars.values() if v in used]
    func = relax.Function(inputs + kept, func.body, result.ty, True, old_main.attrs)
    mod = relax.transform.Normalize()(model.module_with_main(func))
    params = {v.name: ctx._param_values[v.name] for v in kept}
    return model.replace(mod=mod, params=params)
