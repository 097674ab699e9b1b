"""A split whose pieces only feed elementwise ops becomes one slice per piece.

The ONNX LSTM (TorchScript exporter, TVM's importer) splits each step's gate
pre-activations ``(1, 4·hidden)`` into four ``(1, hidden)`` pieces read by two elementwise
kernels (the cell update and the output gate). A split returns a tuple, so FuseOps keeps
it a kernel of its own: per step one more call, four allocated pieces and a tuple. A
strided slice is injective and fuses into its elementwise reader, which then reads its
piece straight from the gates' buffer: lstm_gru's VM calls 805 → 529, and most of its call
time was those calls, not the kernels. Splits read by anything else (a matmul cannot take
an injective producer into its kernel: each slice would be a kernel) stay.

The gates are the step's input projection, taken from the whole sequence's product
(``take(xw, t)``), plus the recurrent product ``h · R``. Added in the matmul's kernel,
the ``take`` was one more kernel per step (FuseOps fuses no injective producer into a
reduction's kernel) with its allocation and release. When the gates are only split, each
piece becomes ``slice(take(xw, t)) + slice(h · R)`` instead: the matmul kernel computes
the product alone and each cell kernel adds its pieces, reading them straight from
``xw``: per step three VM instructions fewer (lstm_gru: 28 steps).

For that, and anywhere else, a ``take`` of one index known at compile time (the ONNX
importer computes a step's index from the tensor's static shape) becomes the slice it
is, ``squeeze(strided_slice(x))``: TVM's take is a gather whose index is read from a
tensor, which FuseOps fuses into nothing; a slice fuses into its readers.
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


_ARITHMETIC = {"relax.add": lambda a, b: a + b, "relax.subtract": lambda a, b: a - b,
               "relax.multiply": lambda a, b: a * b, "relax.less": lambda a, b: a < b}


def static_value(expr: relax.Expr, values: dict, depth: int = 12):
    """The integer (or shape: list of integers) ``expr`` computes from constants and
    static shapes alone, following variables through ``values`` (var → bound value);
    None when it depends on anything else."""
    if depth == 0:
        return None
    if isinstance(expr, relax.Var):
        return static_value(values[expr], values, depth - 1) if expr in values else None
    if isinstance(expr, tvm.ir.Constant):
        array = expr.value.numpy()
        return array.tolist() if array.ndim <= 1 and array.dtype.kind in "iub" else None
    if isinstance(expr, relax.ShapeExpr):
        return [int(v) for v in expr.values] if all(
            isinstance(v, tirx.IntImm) for v in expr.values) else None
    name = call_name(expr)
    if name == "relax.shape_of":
        shape = expr.args[0].ty.shape if isinstance(expr.args[0].ty, relax.TensorType) else None
        return static_value(shape, values, depth - 1) if shape is not None else None
    args = [static_value(a, values, depth - 1) for a in expr.args] if name else [None]
    if any(a is None for a in args):
        return None
    if name == "relax.shape_to_tensor":
        return args[0]
    if name == "relax.take" and isinstance(args[0], list) and isinstance(args[1], int):
        return args[0][args[1] % len(args[0])] if -len(args[0]) <= args[1] < len(args[0]) \
            else None
    if name in _ARITHMETIC and all(isinstance(a, int) for a in args):
        return int(_ARITHMETIC[name](*args))
    if name == "relax.where" and all(isinstance(a, int) for a in args):
        return args[1] if args[0] else args[2]
    return None


def take_as_slice(take: relax.Call, values: dict) -> relax.Expr:
    """``take(x, i, axis)`` with ``i`` one in-range index known at compile time as
    ``squeeze(strided_slice(x))``; other takes unchanged."""
    ty = take.args[0].ty
    index = static_value(take.args[1], values)
    if (not isinstance(index, int) or take.attrs.axis is None  # axis None: a flat take
            or not isinstance(ty, relax.TensorType) or ty.shape is None):
        return take
    axis = int(take.attrs.axis) % len(ty.shape.values)
    extent = ty.shape.values[axis]
    if not isinstance(extent, tirx.IntImm) or not 0 <= index < int(extent):
        return take
    piece = relax.op.strided_slice(take.args[0], axes=[axis], begin=[index], end=[index + 1])
    return relax.op.squeeze(piece, axis=[axis])


def _projection_plus_product(binding: relax.VarBinding, users: dict, values: dict) -> bool:
    """``take(xw, t) + matmul(h, R)`` (either order) whose sum only the split reads."""
    value = binding.value
    return (call_name(value) == "relax.add" and len(users.get(binding.var, [])) == 1
            and sorted(str(call_name(values.get(a))) for a in value.args)
            == ["relax.matmul", "relax.take"])


def _sliceable_splits(func: relax.Function) -> dict[relax.Var, tuple]:
    """Split results used only through their pieces, each piece only by elementwise ops:
    split var → (axis, piece bounds, the ``take + matmul`` sum each piece adds its slices
    of itself, or None)."""
    bindings = dataflow_bindings(func)
    users = binding_users(bindings)
    by_var = {b.var: b for b in bindings}
    values = {b.var: b.value for b in bindings}
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
            summed = by_var.get(binding.value.args[0])
            per_piece = summed is not None and _projection_plus_product(summed, users, values)
            found[binding.var] = (int(binding.value.attrs.axis), pieces,
                                  summed.value if per_piece else None)
    return found


@relax.expr_functor.mutator
class _SplitToSlices(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, splits: dict, values: dict):
        super().__init__(mod)
        self.splits = splits
        self.values = values  # var → bound value, of the functions as they were

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        return take_as_slice(call, self.values) if call_name(call) == "relax.take" else call

    def visit_tuple_getitem_(self, op: relax.TupleGetItem) -> relax.Expr:
        split = self.splits.get(op.tuple_value) if isinstance(op.tuple_value, relax.Var) else None
        if split is None:
            return super().visit_tuple_getitem_(op)
        axis, pieces, summed = split
        source = self.lookup_binding(self.visit_expr(op.tuple_value)).args[0]
        begin, end = pieces[op.index]

        def piece(of: relax.Expr) -> relax.Expr:
            return relax.op.strided_slice(of, axes=[axis], begin=[begin], end=[end])

        if summed is None:
            return piece(source)
        # A take of its own per piece: one take read by two kernels would stay a kernel.
        terms = []
        for term in summed.args:
            take = self.values[term]
            terms.append(self.visit_expr(term) if call_name(take) != "relax.take" else
                         take_as_slice(relax.op.take(self.visit_expr(take.args[0]), take.args[1],
                                                     take.attrs.axis, take.attrs.mode),
                                       self.values))
        return relax.op.add(*(piece(t) for t in terms))


@tvm.transform.module_pass(opt_level=0, name="SplitToSlices")
def split_to_slices(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """The rewrite of the module docstring, in every Relax function."""
    funcs = [f for _, f in mod.functions_items()
             if isinstance(f, relax.Function) and isinstance(f.body, relax.SeqExpr)]
    splits = {var: piece for func in funcs for var, piece in _sliceable_splits(func).items()}
    values = {b.var: b.value for func in funcs for b in dataflow_bindings(func)}
    return relax.transform.DeadCodeElimination()(
        mutate_functions(_SplitToSlices(mod, splits, values), mod))
