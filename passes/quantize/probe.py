"""Running a Model, or functions built on its graph, on the host CPU (calibration, reports).

Probes are compiled once with the CPU target's own pipeline (its default schedules, fused
kernels, the integer dot products of int8 convs), so a calibration run costs about what the
compiled model costs, not TVM's unscheduled loops. Tensors are named by their binding
position in ``main`` (``"b<position>"``) or ``"in:<input>"``: every rebuild makes new
variables but keeps the binding order.

``ProbeModule`` builds functions that replay ``main``'s bindings and then reduce chosen
tensors inside the graph (``kernels.py``), so a probe returns a few numbers per tensor
instead of the tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import numpy as np
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import get_default_pipeline
from tvm.relax.utils import copy_with_new_vars

from hwcompile import parallel_build
from hwcompile.model import Model
from hwcompile.progress import BuildProgress
from hwcompile.rewrite import dataflow_bindings, free_vars
from hwcompile.targets.cpu import CpuTarget, host_build_target

from .kernels import Emitter

_DEQUANTIZE = tvm.ir.Op.get("relax.dequantize")
# Bindings per dataflow block of a report function. TVM's ConvertLayout copies its map of
# every variable seen in the block for each call it converts: quadratic in the block's
# length (mobilenetv3_small's report, float model and four twins in 4,847 bindings: 10 s
# in one block). Blocks of this size keep it linear at the price of a layout conversion of
# the few tensors live across each cut, and kernels do not fuse across it.
REPORT_BLOCK_BINDINGS = 500


def compile_for_host(mod: tvm.IRModule, progress: Callable[[str], None] | None = None,
                     what: str = "compiling a probe", samples: int | None = None
                     ) -> relax.VirtualMachine:
    """``mod`` built for this CPU with the CPU target's pipeline (TVM's stock lowering if
    that fails, as the target itself does), loaded in a VM (LLVM emits its machine code
    then); ``progress`` hears of the build's phases as ``what``. ``samples``: how many the
    build will run, which chooses LLVM's optimization level (``host_build_target``)."""
    target = CpuTarget(host_build_target(samples), "cpu")
    with BuildProgress(progress, what) if progress else nullcontext():
        try:
            executable = parallel_build.compile(mod, target.tvm_target, target.relax_pipeline(),
                                                jit=True)
        except RuntimeError:  # TVM's InternalError: a check failed inside the CPU pipeline
            executable = tvm.compile(mod, target.tvm_target,
                                     relax_pipeline=get_default_pipeline(target.tvm_target))
        return relax.VirtualMachine(executable, tvm.cpu())


def _numpy(result) -> list[np.ndarray]:
    if isinstance(result, tvm.runtime.Tensor):
        return [result.numpy()]
    return [r.numpy() for r in result]


def _tensors(feed: dict[str, np.ndarray], names: Sequence[str]) -> list:
    return [tvm.runtime.tensor(np.require(feed[n], requirements="C")) for n in names]


def key_of(model: Model) -> dict[relax.Var, str]:
    """Tensor names of ``main``'s inputs and bindings (see module docstring)."""
    keys = {v: f"in:{s.name}" for v, s in zip(model.main.params, model.inputs)}
    keys.update({b.var: f"b{i}" for i, b in enumerate(dataflow_bindings(model.main))})
    return keys


def exposed(model: Model, positions: Sequence[int]) -> Model:
    """``model`` whose main returns a tuple of the bindings at ``positions``; one binding
    per position as before (the integer rewrite counts them), in a dataflow block again so
    the kernels still fuse."""
    mod = relax.transform.ToNonDataflow()(model.mod)
    func = mod["main"]
    bindings = dataflow_bindings(func)
    fields = [bindings[i].var for i in positions]
    body = relax.SeqExpr(func.body.blocks, relax.Tuple(fields))
    new = relax.Function(func.params, body, relax.TupleType([f.ty for f in fields]), True,
                         func.attrs)
    mod = relax.transform.ConvertToDataflow(min_size=1)(model.module_with_main(new))
    return model.replace(mod=mod)


class Runner:
    """A model compiled for the host CPU, run on numpy feeds; returns every output."""

    def __init__(self, model: Model):
        self.names = [s.name for s in model.inputs]
        self._vm = compile_for_host(model.bound_module())

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return _numpy(self._vm["main"](*_tensors(feed, self.names)))


# What a probe function adds after the replayed bindings: given the kernel emitter, the
# tensors by name and the function's extra parameters, the expressions it returns.
Outputs = Callable[[Emitter, dict[str, relax.Expr], list[relax.Var]], list[relax.Expr]]


class ProbeModule:
    """Functions that each replay ``model``'s graph (weights bound as constants) and return
    what an ``Outputs`` callback computes from its tensors; compiled once, together."""

    def __init__(self, model: Model):
        self.model = model
        bound = model.bound_module()
        self._main = bound["main"]
        self._bb = relax.BlockBuilder()
        self._others = {gv: f for gv, f in bound.functions_items() if gv.name_hint != "main"}
        self._vm: relax.VirtualMachine | None = None

    def add(self, name: str, outputs: Outputs, extra_params: Sequence[relax.Var] = ()) -> None:
        func = copy_with_new_vars(self._main)  # each function binds its own variables
        bindings = dataflow_bindings(func)
        tensors = {f"in:{s.name}": v for v, s in zip(func.params, self.model.inputs)}
        tensors.update({f"b{i}": b.var for i, b in enumerate(bindings)})
        bb = self._bb
        with bb.function(name, list(func.params) + list(extra_params), pure=True):
            with bb.dataflow():
                for binding in bindings:
                    bb.emit_normalized(binding)
                results = outputs(Emitter(bb), tensors, list(extra_params))
                out = bb.emit_output(relax.Tuple(results))
            bb.emit_func_output(out)

    def compile(self, progress: Callable[[str], None] | None = None,
                what: str = "compiling a probe") -> None:
        functions = dict(self._others)
        functions.update(dict(self._bb.get().functions_items()))
        mod = tvm.IRModule(functions, attrs=self.model.mod.attrs)
        self._vm = compile_for_host(relax.transform.DeadCodeElimination(
            [gv.name_hint for gv, f in functions.items() if isinstance(f, relax.Function)])(mod),
            progress, what)

    def __call__(self, name: str, feed: dict[str, np.ndarray], *extra: np.ndarray
                 ) -> list[np.ndarray]:
        if self._vm is None:
            self.compile()
        args = _tensors(feed, [s.name for s in self.model.inputs])
        args += [tvm.runtime.tensor(np.require(a, requirements="C")) for a in extra]
        return _numpy(self._vm[name](*args))


def _tensor_qparams(bb: relax.BlockBuilder, binding: relax.Binding) -> relax.Binding:
    """``binding`` with a dequantize's scalar scale and zero point as one-element tensors.

    Legalization inlines scalar constants into the kernel, so every tensor a report
    compares got its own dequantize kernel (161 of yolov8_tiny's 349 kernels); read from
    tensors, one kernel per shape serves them all."""
    call = binding.value
    if not (isinstance(call, relax.Call) and call.op == _DEQUANTIZE
            and all(isinstance(a, tvm.ir.Constant) and a.value.numpy().ndim == 0
                    for a in call.args[1:])):
        return binding
    scale, zero_point = (relax.const(a.value.numpy().reshape(1), str(a.value.dtype))
                         for a in call.args[1:])
    return relax.VarBinding(binding.var, bb.normalize(relax.op.dequantize(
        call.args[0], scale, zero_point, axis=call.attrs.axis, out_dtype=call.attrs.out_dtype)))


def paired(model: Model, quantized_probes: Sequence[Model], positions: Sequence[int],
           compare: Callable[[Emitter, relax.Expr, relax.Expr], relax.Expr]) -> tvm.IRModule:
    """One function running ``model`` and each of ``quantized_probes`` (``model`` rewritten,
    whose main returns its values at ``positions``) on the same inputs, returning
    ``compare(kernels, float value, quantized value)`` per position and probe (position
    major).

    The graphs are interleaved position by position (the rewrite emits in position order),
    so each float value dies soon after its quantized twins are computed: memory stays near
    the models' working sets, not every tensor of all of them."""
    reference = copy_with_new_vars(model.bound_module()["main"])
    ours = dataflow_bindings(reference)
    twins = []  # per probe: its bindings, where each is defined, its returned fields
    for probe in quantized_probes:
        twin = copy_with_new_vars(probe.bound_module()["main"])
        twin = twin.bind_params(dict(zip(twin.params, reference.params)))
        theirs = dataflow_bindings(twin)
        defined = {b.var: i for i, b in enumerate(theirs)}
        result = twin.body.body
        fields = theirs[defined[result]].value.fields if result in defined else result.fields
        twins.append((theirs, defined, fields))
    bb = relax.BlockBuilder()
    kernels = Emitter(bb)
    with bb.function("main", list(reference.params), pure=True):
        with bb.dataflow():
            done_ours, done_theirs = 0, [0] * len(twins)
            outputs = []
            for k, position in enumerate(positions):
                while done_ours <= position:
                    bb.emit_normalized(ours[done_ours])
                    done_ours += 1
                for t, (theirs, defined, fields) in enumerate(twins):
                    value = fields[k]
                    while value in defined and done_theirs[t] <= defined[value]:
                        bb.emit_normalized(_tensor_qparams(bb, theirs[done_theirs[t]]))
                        done_theirs[t] += 1
                    outputs.append(compare(kernels, ours[position].var, value))
            out = bb.emit_output(relax.Tuple(outputs))
        bb.emit_func_output(out)
    functions = {gv: f for probe in quantized_probes for gv, f in probe.mod.functions_items()
                 if gv.name_hint != "main"}
    functions.update({gv: f for gv, f in model.mod.functions_items() if gv.name_hint != "main"})
    functions.update({gv: in_blocks(f, REPORT_BLOCK_BINDINGS) if gv.name_hint == "main" else f
                      for gv, f in bb.get().functions_items()})
    return relax.transform.DeadCodeElimination(["main"])(
        tvm.IRModule(functions, attrs=model.mod.attrs))


@relax.expr_functor.mutator
class _Renamed(relax.PyExprMutator):
    """Replaces variables by others (``renamed``), in expressions visited one by one."""

    def __init__(self, renamed: dict[relax.Var, relax.Var]):
        super().__init__()
        self.renamed = renamed

    def visit_var_(self, var: relax.Var) -> relax.Expr:
        return self.renamed.get(var, var)

    def visit_dataflow_var_(self, var: relax.DataflowVar) -> relax.Expr:
        return self.renamed.get(var, var)


def in_blocks(func: relax.Function, size: int) -> relax.Function:
    """``func`` (one dataflow block) with its bindings in dataflow blocks of at most ``size``;
    a value used after its block ends leaves it as the block's output."""
    bindings = dataflow_bindings(func)
    if len(func.body.blocks) != 1 or len(bindings) <= size:
        return func
    last_use: dict[relax.Var, int] = {}
    for index, binding in enumerate(bindings):
        for var in free_vars(binding.value):
            last_use[var] = index
    for var in free_vars(func.body.body):
        last_use[var] = len(bindings)
    renamed: dict[relax.Var, relax.Var] = {}
    rename = _Renamed(renamed)
    normalize = relax.BlockBuilder().normalize
    blocks = []
    for start in range(0, len(bindings), size):
        block = [relax.VarBinding(b.var, normalize(rename.visit_expr(b.value)))
                 for b in bindings[start:start + size]]
        aliases = []  # between the dataflow blocks: normalizing would merge adjacent ones
        for binding in bindings[start:start + size]:
            var = binding.var
            if isinstance(var, relax.DataflowVar) and last_use.get(var, -1) >= start + size:
                output = relax.Var(var.name, var.ty)
                block.append(relax.VarBinding(output, var))
                renamed[var] = relax.Var(var.name, var.ty)
                aliases.append(relax.VarBinding(renamed[var], output))
        blocks += [relax.DataflowBlock(block), relax.BindingBlock(aliases)]
    body = relax.SeqExpr(blocks, rename.visit_expr(func.body.body))
    return normalize(relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs))
