"""Constant folding of kernel calls with one LLVM build for all of them.

After legalization, every weight transform the CPU pipeline asks for (the NHWC/HWIO
permutation, the register-tile re-layout of each conv's weights) is a ``call_tir`` on
constants. TVM's FoldConstant builds each such kernel as its own LLVM module to evaluate
it: ~0.2 s apiece, 16 of the 24 s of SqueezeNet's build, minutes for DenseNet. Here all
kernels that can be folded in one round go into one module and one build; rounds repeat
while folding exposes new candidates (a re-layout of a permuted weight). TVM's own
FoldConstant runs afterwards for anything else, now with nothing left to build, and the
kernels no longer called are dropped (TVM keeps them, and builds them into the library).

The values are the same: the same kernels evaluate them, built for this host as TVM's
FoldConstant does.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.ir import IRModule

from hwcompile.rewrite import call_name, mutate_functions

# This host, unoptimized: the kernels run once, on weights; LLVM's -O3 of every kernel
# cost more than running them unoptimized.
_HOST = {"kind": "llvm", "opt-level": 0}


def _static_tensor(ty: object) -> bool:
    return (isinstance(ty, relax.TensorType) and ty.shape is not None
            and all(isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values))


def _outputs(call: relax.Call) -> list[relax.TensorType] | None:
    """The tensors a call_tir writes, when all have static shapes."""
    ty = call.ty_args[0] if call.ty_args else None
    fields = list(ty.fields) if isinstance(ty, relax.TupleType) else [ty]
    return fields if fields and all(_static_tensor(f) for f in fields) else None


def _known_constants(func: relax.Function) -> dict[relax.Var, tvm.ir.Constant]:
    """Variables bound to constants, directly or as a field of a tuple of constants."""
    known: dict[relax.Var, tvm.ir.Constant] = {}
    tuples: dict[relax.Var, relax.Tuple] = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, tvm.ir.Constant):
                known[binding.var] = value
            elif isinstance(value, relax.Tuple) and all(isinstance(f, tvm.ir.Constant)
                                                        for f in value.fields):
                tuples[binding.var] = value
            elif isinstance(value, relax.TupleGetItem) and value.tuple_value in tuples:
                known[binding.var] = tuples[value.tuple_value].fields[value.index]
    return known


def _candidates(mod: IRModule) -> dict[relax.Call, list[tvm.ir.Constant]]:
    """Each foldable call_tir with the constant values of its arguments."""
    found: dict[relax.Call, list[tvm.ir.Constant]] = {}
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        known = _known_constants(func)

        def visit(expr: relax.Expr, known=known) -> None:
            if call_name(expr) != "relax.call_tir" or not isinstance(expr.args[1], relax.Tuple):
                return
            if not isinstance(mod[expr.args[0]], tvm.tirx.PrimFunc) or _outputs(expr) is None:
                return
            values = [a if isinstance(a, tvm.ir.Constant) else known.get(a)
                      for a in expr.args[1].fields]
            if all(v is not None for v in values):
                found[expr] = values

        relax.analysis.post_order_visit(func, visit)
    return found


def _evaluate(calls: dict[relax.Call, list[tvm.ir.Constant]], mod: IRModule) -> dict:
    kernels = {call.args[0].name_hint: call.args[0] for call in calls}
    built = tvm.tirx.build(IRModule({gvar: mod[gvar].with_attr("global_symbol", name)
                                     for name, gvar in kernels.items()}), target=_HOST)
    folded = {}
    for call, args in calls.items():
        outs = [tvm.runtime.empty([int(d) for d in t.shape.values], t.dtype) for t in _outputs(call)]
        built[call.args[0].name_hint](*[a.value for a in args], *outs)
        consts = [relax.const(out) for out in outs]
        folded[call] = consts[0] if isinstance(call.ty_args[0], relax.TensorType) \
            else relax.Tuple(consts)
    return folded


@relax.expr_functor.mutator
class _Replace(relax.PyExprMutator):
    def __init__(self, mod: IRModule, folded: dict):
        super().__init__(mod)
        self.folded = folded

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        value = self.folded.get(call)
        return value if value is not None else super().visit_call_(call)


def batched_fold_constant() -> tvm.transform.Pass:
    """FoldConstant with one build per round, on this host (see module docstring)."""

    @tvm.transform.module_pass(opt_level=0, name="BatchedFoldConstant")
    def _pass(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        while calls := _candidates(mod):
            mod = mutate_functions(_Replace(mod, _evaluate(calls, mod)), mod)
        # The folded kernels are dead now: dropped, not built into the library.
        return relax.transform.DeadCodeElimination()(relax.transform.FoldConstant()(mod))

    return _pass
