"""A chain of small kernels, each reading the one before (a recurrence's steps), becomes
one kernel.

An LSTM layer of lstm_gru runs per step a cell-state kernel, a hidden-state kernel and
the recurrent product ``h · R``, each on a few hundred bytes: the kernels take a few
hundred nanoseconds, the VM's call, allocation and release around each take more
(lstm_gru: 377 VM calls, two thirds of its time in ``alloc_tensor``). FuseOps cannot group them (the cell state
is read by the next step too, a matmul takes no elementwise producer). After scheduling,
their bodies are simply run one after the other in one kernel: values only the chain
reads live in the kernel's stack buffers (each under 1 KiB: TVM lowers them to
``alloca``), values read after it (each step's hidden state) are the kernel's outputs.

A chain is a run of consecutive ``call_tir`` bindings with one small output each, every
member after the first reading an earlier member's output. The merged kernel computes
exactly what the calls did, in the same order: the same values bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.s_tir import stmt as sblock

from hwcompile.rewrite import binding_users, free_vars

# TVM keeps a kernel-local buffer below this size on the stack (others: a workspace call).
_MAX_STACK_BYTES = 1024


def _tensor_bytes(ty: relax.Type) -> int | None:
    if not isinstance(ty, relax.TensorType) or ty.shape is None or not all(
            isinstance(d, tirx.IntImm) for d in ty.shape.values):
        return None
    return math.prod(int(d) for d in ty.shape.values) * np.dtype(str(ty.dtype)).itemsize


def _is_call_tir(value: relax.Expr) -> bool:
    return (isinstance(value, relax.Call) and value.op == tvm.ir.Op.get("relax.call_tir")
            and isinstance(value.args[0], relax.GlobalVar))


def _call_args(call: relax.Call) -> list[relax.Expr]:
    return list(call.args[1].fields) if isinstance(call.args[1], relax.Tuple) else [call.args[1]]


def _reads_through_views(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` declares buffer views (``T.decl_buffer(data=x.data)``: the written
    softmax and attention kernels read their tensors as flat views). Merged, a tensor the
    chain keeps internal becomes a stack buffer, and TVM's storage lowering does not see
    the reads through such a view: the values were lost (ONNX conformance test_Softmax)."""
    views = []
    tvm_ffi.structural_map(func.body, (tirx.DeclBuffer, lambda node: views.append(node) or node))
    return bool(views)


def _small_step(binding: relax.VarBinding, mod: tvm.IRModule) -> bool:
    """A call of a scheduled kernel (one root block, no buffer views) with one output of a
    few hundred bytes."""
    value = binding.value
    if not _is_call_tir(value) or len(value.args) != 2:  # no symbolic shape arguments
        return False
    func = mod[value.args[0]]
    size = _tensor_bytes(binding.var.ty)
    return (isinstance(func, tirx.PrimFunc) and isinstance(func.body, sblock.SBlockRealize)
            and len(func.params) == len(_call_args(value)) + 1
            and size is not None and size < _MAX_STACK_BYTES
            and not _reads_through_views(func))


def _chains(bindings: list[relax.VarBinding], mod: tvm.IRModule) -> list[list[int]]:
    """Index runs of consecutive chained kernel calls (two or more)."""
    chains, current = [], []
    for index, binding in enumerate(bindings):
        outputs = {bindings[i].var for i in current}
        reads_chain = any(v in outputs for v in free_vars(binding.value))
        if not _small_step(binding, mod):
            # A computation, or anything reading the chain before its end (the merged call
            # stands where the last step was), ends it; a constant in between does not.
            if current and (isinstance(binding.value, relax.Call) or reads_chain):
                chains.append(current)
                current = []
            continue
        if current and reads_chain:
            current.append(index)
        else:
            if current:
                chains.append(current)
            current = [index]
    if current:
        chains.append(current)
    return [c for c in chains if len(c) > 1]


def _renamed(func: tirx.PrimFunc, params: dict) -> tuple[tirx.Stmt, list]:
    """``func``'s root block body with its parameters replaced per ``params`` and every
    other variable a fresh copy, so a kernel called twice defines no variable twice."""
    fresh = dict(params)

    def rename(var: tvm.ir.expr.Var) -> tvm.ir.expr.Var:
        if var not in fresh:
            fresh[var] = tvm.ir.expr.Var(var.name, var.ty)
        return fresh[var]

    block = func.body.block
    body = tvm_ffi.structural_map(block.body, (tvm.ir.expr.Var, rename))
    allocs = [rename(b) for b in block.alloc_buffers]
    return body, allocs


def merge_chain(kernels: list[tirx.PrimFunc], args: list[list[int]], outputs: list[int],
                n_inputs: int, internal: list[int]) -> tirx.PrimFunc:
    """One kernel running ``kernels`` in order. ``args[k]`` numbers kernel ``k``'s inputs:
    below ``n_inputs`` an input of the merged kernel, else ``n_inputs + j``: the output of
    kernel ``j``. Kernel ``j``'s output is the merged kernel's output when ``j`` is in
    ``outputs`` (in that order), a stack buffer when in ``internal``."""
    values: dict[int, tvm.ir.expr.Var] = {}
    for k, func in enumerate(kernels):
        for number, param in zip(args[k], func.params, strict=False):
            if number < n_inputs and number not in values:
                values[number] = tvm.ir.expr.Var(param.name, param.ty)
    for j in outputs + internal:
        out = kernels[j].params[-1]
        values[n_inputs + j] = tvm.ir.expr.Var(out.name, out.ty)
    stmts, allocs = [], [values[n_inputs + j] for j in internal]
    for k, func in enumerate(kernels):
        mapping = {p: values[n] for p, n in zip(func.params[:-1], args[k], strict=True)}
        mapping[func.params[-1]] = values[n_inputs + k]
        body, own = _renamed(func, mapping)
        stmts.append(body)
        allocs += own
    root = sblock.SBlock([], [], [], "root", tirx.SeqStmt(stmts), alloc_buffers=allocs)
    params = [values[i] for i in range(n_inputs)] + [values[n_inputs + j] for j in outputs]
    attrs = {"tirx.is_scheduled": True, "tirx.noalias": True, "s_tir": True}
    return tirx.PrimFunc(params, sblock.SBlockRealize([], True, root)).with_attrs(attrs)


def _merged_block(block: relax.DataflowBlock, ret: relax.Expr, builder: relax.BlockBuilder,
                  mod: tvm.IRModule) -> relax.DataflowBlock:
    bindings = list(block.bindings)
    replaced: dict[int, list[relax.VarBinding]] = {}
    chains = _chains(bindings, mod)
    users = binding_users(bindings) if chains else {}
    returned = set(free_vars(ret))
    for chain in chains:
        members = set(chain)
        position = {bindings[i].var: k for k, i in enumerate(chain)}
        inputs: list[relax.Expr] = []
        args = []
        for i in chain:
            numbers = []
            for arg in _call_args(bindings[i].value):
                if isinstance(arg, relax.Var) and arg in position:
                    numbers.append(-1 - position[arg])  # resolved below, once inputs are known
                    continue
                match = next((n for n, seen in enumerate(inputs) if seen.same_as(arg)), None)
                if match is None:
                    inputs.append(arg)
                    match = len(inputs) - 1
                numbers.append(match)
            args.append(numbers)
        args = [[n if n >= 0 else len(inputs) + (-1 - n) for n in numbers] for numbers in args]
        outputs = [k for k, i in enumerate(chain)  # read after the chain or the block
                   if bindings[i].var in returned or not isinstance(bindings[i].var, relax.DataflowVar)
                   or any(u not in members for u in users.get(bindings[i].var, ()))]
        internal = [k for k in range(len(chain)) if k not in outputs]
        kernels = [mod[bindings[i].value.args[0]] for i in chain]
        merged = merge_chain(kernels, args, outputs, len(inputs), internal)
        gvar = builder.add_func(merged, "fused_step_chain")
        out_types = [bindings[chain[k]].var.ty for k in outputs]
        new = []
        if len(outputs) == 1:
            new.append(relax.VarBinding(bindings[chain[outputs[0]]].var, relax.call_tir(
                gvar, inputs, out_types[0])))
        else:
            whole = relax.DataflowVar("step_chain", relax.TupleType(out_types))
            new.append(relax.VarBinding(whole, relax.call_tir(gvar, inputs, out_types)))
            new += [relax.VarBinding(bindings[chain[k]].var, relax.TupleGetItem(whole, n))
                    for n, k in enumerate(outputs)]
        replaced[chain[-1]] = new
        for i in chain[:-1]:
            replaced[i] = []
    if not replaced:
        return block
    out = []
    for index, binding in enumerate(bindings):
        out += replaced.get(index, [binding])
    return relax.DataflowBlock(out)


@tvm.transform.module_pass(opt_level=0, name="MergeStepChains")
def merge_step_chains(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """The rewrite of the module docstring on every Relax function (after scheduling;
    aliases first canonicalized away, so a chain's values are the calls' own variables)."""
    mod = relax.transform.CanonicalizeBindings()(mod)
    builder = relax.BlockBuilder(mod)
    for gvar, func in mod.functions_items():
        if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
            continue
        blocks = [_merged_block(b, func.body.body, builder, mod)
                  if isinstance(b, relax.DataflowBlock) else b for b in func.body.blocks]
        builder.update_func(gvar, relax.Function(
            func.params, relax.SeqExpr(blocks, func.body.body), func.ret_ty, func.is_pure,
            func.attrs, func.span))
    return relax.transform.DeadCodeElimination()(builder.get())
