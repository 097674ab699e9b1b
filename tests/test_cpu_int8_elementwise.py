"""Integer elementwise chains (requantizing products and adds of the quantized graph) as one
loop nest under the default CPU schedule: the same integers as numpy's, computed in one pass
over memory (PP-LCNet's SE products had been ~13 passes over int32/int64 copies each)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.ir import IRModule
from tvm.s_tir import Schedule

from hwcompile.targets.cpu.defaults import schedule_func

MULTIPLIER, SHIFT, ZERO_POINT = 628877991, 36, -107


def _requantized_product(shape: tuple[int, ...], channels: int) -> tvm.tirx.PrimFunc:
    """An SE product as the quantize pass writes it: ``(x + 118) · s`` per channel, then the
    fixed-point requantization (int64 multiply, rounding shift, zero point, clip) to int8."""
    x = te.placeholder((*shape, channels), "int8", name="x")
    s = te.placeholder((1,) * len(shape) + (channels,), "int32", name="s")
    widened = te.compute(x.shape, lambda *i: x(*i).astype("int32") + 118, name="widened")
    product = te.compute(x.shape, lambda *i: widened(*i) * s(*([0] * len(shape)), i[-1]),
                         name="product")
    wide = te.compute(x.shape, lambda *i: product(*i).astype("int64"), name="wide")
    scaled = te.compute(x.shape, lambda *i: (wide(*i) * MULTIPLIER + (1 << (SHIFT - 1)))
                        >> SHIFT, name="scaled")
    out = te.compute(x.shape, lambda *i: tvm.tirx.min(tvm.tirx.max(
        scaled(*i) + ZERO_POINT, -128), 127).astype("int8"), name="out")
    return te.create_prim_func([x, s, out])


def _numpy(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    scaled = ((x.astype(np.int64) + 118) * s * MULTIPLIER + (1 << (SHIFT - 1))) >> SHIFT
    return np.clip(scaled + ZERO_POINT, -128, 127).astype(np.int8)


@pytest.mark.parametrize("shape,channels", [((1, 3, 5), 24), ((1, 2, 96), 200), ((1, 70, 70), 16)])
def test_chain_is_one_loop_nest_with_numpys_integers(shape, channels):
    func = _requantized_product(shape, channels)
    scheduled = schedule_func(func, lanes=16)
    assert scheduled is not None
    sch = Schedule(IRModule({"main": scheduled}))
    assert len(sch.get_child_blocks(sch.get_sblock("root"))) == 1  # no intermediate passes
    lib = tvm.compile(IRModule({"main": scheduled}), "llvm")
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (*shape, channels), dtype=np.int8)
    s = rng.integers(-60, 60, (1,) * len(shape) + (channels,), dtype=np.int32)
    out = tvm.runtime.tensor(np.zeros(x.shape, np.int8))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(s), out)
    want = _numpy(x, s)
    np.testing.assert_array_equal(out.numpy(), want)
    assert len(np.unique(want)) > 50  # the clip does not flatten the test to a few values



def _vector_widths(func: tvm.tirx.PrimFunc) -> list[int]:
    sch = Schedule(IRModule({"main": func}))
    (block,) = sch.get_child_blocks(sch.get_sblock("root"))
    return [int(sch.get(loop).extent) for loop in sch.get_loops(block)
            if sch.get(loop).kind == tvm.tirx.ForKind.VECTORIZED]


@pytest.mark.parametrize("channels,width", [(200, 8), (24, 8), (40, 8), (64, 32), (18, 1)])
def test_chain_vectors_are_half_registers_when_whole_ones_do_not_divide(channels, width):
    """200 channels (PP-LCNet's SE products): 8-lane vectors where 16 lanes do not divide the
    channels, not 4 (the kernel took twice the time)."""
    scheduled = schedule_func(_requantized_product((1, 2, 96), channels), lanes=16)
    assert _vector_widths(scheduled) == ([width] if width > 1 else [])
