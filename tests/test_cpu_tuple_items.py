"""Items of a tuple built in the function read as the values themselves
(targets/cpu/tuple_items.py): the tuple and its item lookups are gone, the result is the
same."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from hwcompile.targets.cpu.tuple_items import tuple_items_in_place


def _module():
    """``t = (c0, c1); y = x + t[1] - t[0]``, as folding two weights leaves them."""
    x = relax.Var("x", relax.TensorType((3,), "float32"))
    c0 = relax.const(np.array([1, 2, 3], np.float32))
    c1 = relax.const(np.array([10, 20, 30], np.float32))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            pair = bb.emit(relax.Tuple([c0, c1]))
            second = bb.emit(relax.TupleGetItem(pair, 1))
            first = bb.emit(relax.TupleGetItem(pair, 0))
            out = bb.emit_output(relax.op.subtract(relax.op.add(x, second), first))
        bb.emit_func_output(out)
    return bb.get()


def _bindings(mod) -> list:
    return [b.value for block in mod["main"].body.blocks for b in block.bindings]


def test_tuple_items_become_the_values():
    before = _module()
    after = tuple_items_in_place(before)
    assert any(isinstance(v, relax.TupleGetItem) for v in _bindings(before))
    assert not any(isinstance(v, (relax.TupleGetItem, relax.Tuple)) for v in _bindings(after))
    x = np.array([0.5, -1.0, 2.0], np.float32)
    for mod in (before, after):
        vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(),
                                      x + np.array([9, 18, 27], np.float32))
