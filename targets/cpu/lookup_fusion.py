"""Int8 lookup tables fuse into the kernel that computes their codes.

The quantize pass writes an elementwise chain on an int8 tensor (SiLU, hard-swish...) as
``take(table, q + 128)`` with a 256-entry constant table. TVM's pattern analysis calls a
gather opaque, so every table would be a kernel of its own: one more pass over the tensor
per activation. Per element it is elementwise (output i reads code i and the constant
table), so it is annotated as such after ``AnnotateTIROpPattern``, and FuseOps puts it in
the epilogue of the convolution that produces the codes.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from hwcompile.rewrite import call_name, mutate_functions

_ELEMWISE = 0  # tvm.relay-era OpPatternKind.kElemWise, the value FuseOps reads
TABLE_SIZE = 256


def _is_table(expr: relax.Expr) -> bool:
    ty = expr.ty
    return (isinstance(expr, tvm.ir.Constant) and isinstance(ty, relax.TensorType)
            and str(ty.dtype) in ("int8", "uint8") and ty.ndim == 1
            and [int(d) for d in ty.shape.values] == [TABLE_SIZE])


def _lookup_kernels(mod: tvm.IRModule) -> set[tvm.ir.GlobalVar]:
    found: set[tvm.ir.GlobalVar] = set()

    def visit(expr: relax.Expr) -> None:
        if call_name(expr) != "relax.call_tir":
            return
        callee, args = expr.args[0], expr.args[1]
        if isinstance(args, relax.Tuple) and len(args.fields) == 2 and _is_table(args.fields[0]) \
                and callee.name_hint.startswith("take"):
            found.add(callee)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return found


@tvm.transform.module_pass(opt_level=0, name="LookupTablesElementwise")
def lookup_tables_elementwise(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Marks the kernels of int8 table lookups elementwise (module docstring)."""
    for gvar in _lookup_kernels(mod):
        mod[gvar] = mod[gvar].with_attr("op_pattern", _ELEMWISE)
    return mod


def layout_transparent_lookups(convert: tvm.transform.Pass) -> tvm.transform.Pass:
    """``convert`` (ConvertLayout) with table lookups carried along in the layout of their
    codes. ConvertLayout knows no layout rule for ``take``: it would transpose the codes
    back to NCHW for every lookup and the result to NHWC again for the next conv. A lookup
    is elementwise on its codes, so during the conversion it stands in as
    ``astype(bitwise_xor(codes, id), int8)`` (elementwise ops ConvertLayout propagates;
    ``id`` numbers the table), and is put back after."""

    @tvm.transform.module_pass(opt_level=0, name="LayoutTransparentLookups")
    def _pass(mod: tvm.IRModule, ctx) -> tvm.IRModule:
        tables: list[relax.Expr] = []
        hidden = mutate_functions(_HideLookups(mod, tables), mod)
        if not tables:
            return convert(mod)
        converted = convert(hidden)
        return mutate_functions(_RestoreLookups(converted, tables), converted)

    return _pass


_MARK = 0x5EB0_0000  # placeholder ids: _MARK + table index (int32)


def _placeholder_id(call: relax.Call, count: int) -> int | None:
    if call_name(call) != "relax.bitwise_xor" or not isinstance(call.args[1], tvm.ir.Constant):
        return None
    value = call.args[1].value.numpy()
    if value.shape != () or value.dtype != "int32":
        return None
    index = int(value) - _MARK
    return index if 0 <= index < count else None


@relax.expr_functor.mutator
class _HideLookups(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, tables: list[relax.Expr]):
        super().__init__(mod)
        self.tables = tables

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call_name(call) != "relax.take" or not _is_table(call.args[0]) \
                or str(call.args[1].ty.dtype) != "int32":
            return call
        self.tables.append(call)
        marker = relax.const(np.int32(_MARK + len(self.tables) - 1), "int32")
        # the cast keeps the lookup's dtype for its consumers (left as a no-op after)
        return relax.op.astype(relax.op.bitwise_xor(call.args[1], marker), call.ty.dtype)


@relax.expr_functor.mutator
class _RestoreLookups(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, tables: list[relax.Call]):
        super().__init__(mod)
        self.tables = tables

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        index = _placeholder_id(call, len(self.tables))
        if index is None:
            return call
        original = self.tables[index]
        return relax.op.take(original.args[0], call.args[0], axis=0, mode=original.attrs.mode)
