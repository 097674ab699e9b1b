"""A split whose pieces only feed elementwise ops becomes one slice per piece.

The ONNX LSTM (TorchScript exporter, TVM's importer) splits each step's gate
pre-activations ``(1, 4·hidden)`` into four ``(1, hidden)`` pieces read by two elementwise
kernels (the cell update and the output gate). A split returns a tuple, so FuseOps keeps
it a kernel of its own: per step one more call, four allocated pieces and a tuple. A
strided slice is injective and fuses into its elementwise reader, which then reads its
piece straight from the gates' buffer: lstm_gru's VM calls 805 → 529, and most of its call
time was those calls, not the kernels. Splits read by anything else (a matmul cannot take
an injective producer into its kernel: each slice would be a kernel) stay.
"""

from __future__ import annotations

import itertools

import tvm
from tvm import relax, tirx

from hwcompile.rewrite import binding_users, call_name, dataflow_bindings, mutate_functions

# Relax ops legalized to elementwise or broadcast kernels, which take injective producers.
_ELEMENTWISE = frozenset(f"relax.{name}" for name in (
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "power", "sigmoid", "tanh",
    "exp", "negative", "sqrt", "rsqrt", "abs", "clip", "erf", "nn.relu", "nn.silu", "nn.gelu"))


def _pieces(call: relax.Call) -> list[tuple[int, int]] | None:
    """``[begin, end)`` of each piece along the split axis, or None when not static."""
    ty = call.args[0].ty
    axis = int(call.attrs.axis)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    extent = list(ty.shape.values)[axis]
    if not isinstance(extent, tirx.IntImm):
        return None
    extent, sections = int(extent), call.attrs.indices_or_sections
    if isinstance(sections, tirx.IntImm):
        step = extent // int(sections)
        bounds = [i * step for i in range(int(sections))] + [extent]
    else:
        bounds = [0, *(int(i) for i in sections), extent]
    return list(itertools.pairwise(bounds))


def _sliceable_splits(func: relax.Function) -> dict[relax.Var, tuple[int, list]]:
    """Split results used only through their pieces, each piece only by elementwise ops:
    split var → (axis, piece bounds)."""
    bindings = dataflow_bindings(func)
    users = binding_users(bindings)
    found = {}
    for binding in bindings:
        if call_name(binding.value) != "relax.split":
            continue
        pieces = _pieces(binding.value)
        getters = [bindings[i] for i in users.get(binding.var, [])]
        if pieces is None or not getters or not all(
                isinstance(g.value, relax.TupleGetItem) for g in getters):
            continue
        readers = [bindings[i].value for g in getters for i in users.get(g.var, [])]
        if readers and all(call_name(r) in _ELEMENTWISE for r in readers):
            found[binding.var] = (int(binding.value.attrs.axis), pieces)
    return found


@relax.expr_functor.mutator
class _SplitToSlices(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, splits: dict):
        super().__init__(mod)
        self.splits = splits

    def visit_tuple_getitem_(self, op: relax.TupleGetItem) -> relax.Expr:
        split = self.splits.get(op.tuple_value) if isinstance(op.tuple_value, relax.Var) else None
        if split is None:
            return super().visit_tuple_getitem_(op)
        axis, pieces = split
        source = self.lookup_binding(self.visit_expr(op.tuple_value)).args[0]
        begin, end = pieces[op.index]
        return relax.op.strided_slice(source, axes=[axis], begin=[begin], end=[end])


@tvm.transform.module_pass(opt_level=0, name="SplitToSlices")
def split_to_slices(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """The rewrite of the module docstring, in every Relax function."""
    splits = {var: piece for _, func in mod.functions_items() if isinstance(func, relax.Function)
              and isinstance(func.body, relax.SeqExpr) for var, piece in _sliceable_splits(func).items()}
    if not splits:
        return mod
    return relax.transform.DeadCodeElimination()(mutate_functions(_SplitToSlices(mod, splits), mod))
