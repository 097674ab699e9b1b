"""Items of a tuple built in the function itself read as the values they are.

Folding a weight re-layout kernel that writes two weights (a matmul's packed weight and
its bias) leaves ``t = (c0, c1); w = t[1]; b = t[0]``: the VM then builds the tuple and
takes its items on every call, four instructions where none is needed (lstm_gru: 7 such
tuples per call). ``w`` and ``b`` become ``c1`` and ``c0``; the tuple goes.
"""

from __future__ import annotations

import tvm
from tvm import relax

from hwcompile.rewrite import mutate_functions


@relax.expr_functor.mutator
class _TupleItems(relax.PyExprMutator):
    def visit_tuple_getitem_(self, op: relax.TupleGetItem) -> relax.Expr:
        item = super().visit_tuple_getitem_(op)
        source = item.tuple_value
        bound = self.lookup_binding(source) if isinstance(source, relax.Var) else source
        if isinstance(bound, relax.Tuple):
            return bound.fields[item.index]
        return item


@tvm.transform.module_pass(opt_level=0, name="TupleItemsInPlace")
def tuple_items_in_place(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """The rewrite of the module docstring on every Relax function."""
    return relax.transform.DeadCodeElimination()(mutate_functions(_TupleItems(mod), mod))
