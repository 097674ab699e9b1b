"""Program builder, layouts, blocked GEMM 256^3 and ResNet-18 C2 bit-exact vs numpy,
and the cycle model."""

import numpy as np
import pytest

from hwcompile.errors import VTAError
from hwcompile.targets.vta import layout, workloads
from hwcompile.targets.vta.config import load_config
from hwcompile.targets.vta.cycle_model import CycleParams, estimate
from hwcompile.targets.vta.isa import (
    AluInsn,
    FinishInsn,
    GemmInsn,
    MemInsn,
    MemType,
    Opcode,
    decode_program,
)
from hwcompile.targets.vta.program import ProgramBuilder

CFG = load_config("sim")
RNG = np.random.default_rng(7)


def conv2d_reference(x, w, bias, stride, pad, shift, lo, hi):
    """Plain numpy conv (int64), then >> shift, + bias, clip, int8."""
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    acc = np.zeros((n, o, oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            acc += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j].astype(np.int64))
    return np.clip((acc >> shift) + bias[None, :, None, None], lo, hi).astype(np.int8)


# --- operator level ----------------------------------------------------------------------
def test_blocked_gemm_256():
    a = RNG.integers(-128, 128, (256, 256), dtype=np.int8)
    w = RNG.integers(-128, 128, (256, 256), dtype=np.int8)
    wl = workloads.gemm(CFG, a, w, shift=8)
    results = {mode: wl.program.run(mode) for mode in ("hardware", "reference")}
    expect = np.clip((a.astype(np.int64) @ w.T.astype(np.int64)) >> 8, -128, 127)
    for r in results.values():
        np.testing.assert_array_equal(layout.unpack_matrix(r.read(wl.output), 256, 256), expect)
    stats = results["hardware"].stats
    assert stats.gemm_counter * 256 == wl.macs == 256**3


def test_resnet18_c2_conv():
    """C2: 56x56, 64->64, 3x3, pad 1, stride 1; >> 8, + bias, clip [0, 127]."""
    x = RNG.integers(-128, 128, (1, 64, 56, 56), dtype=np.int8)
    w = RNG.integers(-128, 128, (64, 64, 3, 3), dtype=np.int8)
    bias = RNG.integers(-64, 64, 64).astype(np.int32)
    wl = workloads.conv2d(CFG, x, w, bias, stride=1, pad=1, shift=8)
    result = wl.program.run()
    got = layout.unpack_activations(result.read(wl.output), 1, 64)
    expect = conv2d_reference(x, w, bias, 1, 1, 8, 0, 127)
    np.testing.assert_array_equal(got, expect)
    assert 0 < (got > 0).mean() < 1  # the clip bounds were exercised
    assert result.stats.gemm_counter * 256 == wl.macs == 115_605_504


@pytest.mark.parametrize("shape,stride,pad,vthreads", [
    ((2, 20, 9, 9), 2, 1, 2),   # stride 2, channel and batch padding to the block
    ((1, 16, 7, 6), 1, 0, 1),   # no padding, one virtual thread
])
def test_conv_variants(shape, stride, pad, vthreads):
    x = RNG.integers(-128, 128, shape, dtype=np.int8)
    w = RNG.integers(-128, 128, (40, shape[1], 3, 3), dtype=np.int8)
    bias = RNG.integers(-50, 50, 40).astype(np.int32)
    wl = workloads.conv2d(CFG, x, w, bias, stride=stride, pad=pad, shift=6, lo=-127,
                          vthreads=vthreads)
    got = layout.unpack_activations(wl.program.run().read(wl.output), shape[0], 40)
    np.testing.assert_array_equal(got, conv2d_reference(x, w, bias, stride, pad, 6, -127, 127))


# --- layouts -----------------------------------------------------------------------------
def test_pack_activations_layout_and_roundtrip():
    x = RNG.integers(-128, 128, (1, 20, 3, 2), dtype=np.int8)
    p = layout.pack_activations(x, CFG)
    assert p.shape == (1, 2, 3, 2, 1, 16)
    assert p[0, 1, 2, 1, 0, 3] == x[0, 19, 2, 1]
    assert not p[0, 1, :, :, 0, 4:].any()  # channels 20..31 zero-padded
    np.testing.assert_array_equal(layout.unpack_activations(p, 1, 20), x)


def test_pack_conv_weights_layout():
    w = RNG.integers(-128, 128, (32, 16, 3, 3), dtype=np.int8)
    p = layout.pack_conv_weights(w, CFG)
    assert p.shape == (2, 1, 3, 3, 16, 16)
    assert p[1, 0, 2, 0, 5, 7] == w[21, 7, 2, 0]  # [o/16, i/16, kh, kw, o%16, i%16]
    d = layout.pack_dense_weights(w[:, :, 0, 0], CFG)
    np.testing.assert_array_equal(d, p[:, :, 0, 0])


def test_pack_rejects_wrong_rank():
    with pytest.raises(VTAError, match="NCHW"):
        layout.pack_activations(np.zeros((3, 3), np.int8), CFG)


# --- builder -----------------------------------------------------------------------------
def test_dep_push_sets_flag_or_inserts_noop():
    b = ProgramBuilder(CFG)
    x = b.buffer("x", np.zeros((2, 1, 16), np.int8))
    b.load("inp", x, 0, x_size=2)
    b.dep_push("load", "compute")  # sets push_next on the load
    b.dep_push("load", "compute")  # already set: a no-op load carries the second push
    b.dep_pop("load", "compute")
    b.dep_pop("load", "compute")  # second pending pop commits a compute no-op
    b.gemm([(0, 0, 0)], reset=True)
    insns = b.finish().instructions
    assert insns[0].push_next and insns[0].x_size == 2
    assert insns[1].push_next and insns[1].x_size == 0 and insns[1].memory_type == MemType.INP
    assert insns[2].pop_prev and insns[2].memory_type == MemType.UOP and insns[2].x_size == 0
    assert insns[3].pop_prev and insns[3].memory_type == MemType.UOP  # LOAD UOP takes the pop
    assert isinstance(insns[4], GemmInsn)
    # finish: store no-op push, load no-op push, compute no-op with both pops, FINISH
    assert insns[-4].opcode == Opcode.STORE and insns[-4].push_prev
    assert insns[-3].memory_type == MemType.INP and insns[-3].push_next
    assert insns[-2].pop_prev and insns[-2].pop_next
    assert isinstance(insns[-1], FinishInsn) and not (insns[-1].pop_prev or insns[-1].pop_next)


def test_program_roundtrips_through_bytes_and_runs():
    a = RNG.integers(-128, 128, (32, 64), dtype=np.int8)
    wl = workloads.gemm(CFG, a, RNG.integers(-128, 128, (48, 64), dtype=np.int8), vthreads=1)
    prog = wl.program
    assert decode_program(prog.insn_bytes(), CFG) == prog.instructions
    assert len(prog.uop_blob) == prog.uop_buffer.nbytes > 0
    assert prog.run().stats.uop_load_nbytes == len(prog.uop_blob)  # each kernel loaded once


def test_uop_ring_cache_reloads_evicted_kernels():
    b = ProgramBuilder(CFG)
    big = [(i % 3, 0, 0) for i in range(5000)]
    other = [(i % 3 + 3, 0, 0) for i in range(5000)]
    b.gemm(big, reset=True)
    b.gemm(big, reset=True)  # resident: no reload
    b.gemm(other, reset=True)  # does not fit after big: ring wraps, evicts big
    b.gemm(big, reset=True)  # reloaded
    insns = b.finish().instructions
    uop_loads = [i for i in insns if isinstance(i, MemInsn) and i.memory_type == MemType.UOP
                 and i.x_size]
    assert [(u.sram_base, u.x_size) for u in uop_loads] == [(0, 5000), (0, 5000), (0, 5000)]
    assert uop_loads[0].dram_base == uop_loads[2].dram_base != uop_loads[1].dram_base
    assert insns.index(uop_loads[0]) < insns.index(next(i for i in insns
                                                        if isinstance(i, GemmInsn)))


def test_builder_errors():
    b = ProgramBuilder(CFG)
    x = b.buffer("x", np.zeros((4, 1, 16), np.int8))
    with pytest.raises(VTAError, match="overruns DRAM buffer 'x'"):
        b.load("inp", x, 0, x_size=5)
    with pytest.raises(VTAError, match="at most 2 loops"):
        b.gemm([(0, 0, 0)], [(1, 0, 0), (1, 0, 0), (1, 0, 0)])
    with pytest.raises(VTAError, match="no token queue from load to store"):
        b.dep_push("load", "store")
    with pytest.raises(VTAError, match="already exists"):
        b.alloc("x", 4)
    with pytest.raises(VTAError, match="ALU op 'div'"):
        b.alu("div", [(0, 0)])
    with pytest.raises(VTAError, match="field iter_in = 20000"):
        b.alu("add", [(0, 0)], [(20000, 1, 1)], imm=1)
    with pytest.raises(VTAError, match="micro-op #0 field dst_idx = 4096"):
        b.gemm([(4096, 0, 0)])


def test_buffers_aligned_to_every_element():
    b = ProgramBuilder(CFG)
    b.alloc("a", 3)
    w = b.alloc("w", (1, 16, 16))
    assert w.offset % 256 == 0 and w.offset > 0


# --- cycle model -----------------------------------------------------------------------
ZERO = CycleParams(insn_overhead=0, pipeline_depth=0, dma_latency=0, dma_row_overhead=0)


def test_cycle_model_serial_chain():
    pynq = load_config("pynq")  # 64-bit AXI: 8 bytes per cycle
    insns = [MemInsn(opcode=Opcode.LOAD, memory_type=MemType.INP, y_size=2, x_size=4,
                     x_stride=4, x_pad_0=1, push_next=True),  # 2 rows * 8 beats + 2 pads
             GemmInsn(uop_bgn=0, uop_end=10, iter_out=2, iter_in=3, pop_prev=True),  # 60
             AluInsn(uop_bgn=0, uop_end=5, push_next=True),  # 5 uops * II 2
             MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, y_size=1, x_size=8,
                     x_stride=8, pop_prev=True),  # 128 B / 8
             FinishInsn()]
    r = estimate(insns, pynq, ZERO)
    assert r.total_cycles == 18 + 60 + 10 + 16
    assert r.busy_cycles == {"load": 18, "compute": 70, "store": 16}
    assert r.gemm_cycles == 60
    assert r.gemm_utilization == pytest.approx(60 / 104)
    assert r.latency_s == pytest.approx(104 / 100e6)
    assert r.summary() == ("104 cycles = 0.001 ms at 100 MHz; busy: load 18 (17%), compute 70 "
                           "(67%), store 16 (15%); GEMM utilization 57.7%")
    assert [(m, s, e) for _, m, s, e in r.timeline] == [
        ("load", 0, 18), ("compute", 18, 78), ("compute", 78, 88), ("compute", 88, 88),
        ("store", 88, 104)]
    # overheads are parameters: each instruction pays insn_overhead
    assert estimate(insns, pynq, CycleParams(insn_overhead=1, pipeline_depth=0, dma_latency=0,
                                             dma_row_overhead=0)).total_cycles == 104 + 4


def test_cycle_model_overlaps_independent_modules():
    ultra = load_config("ultra96")  # 128-bit AXI
    insns = [MemInsn(opcode=Opcode.LOAD, memory_type=MemType.WGT, y_size=1, x_size=10,
                     x_stride=10),  # 2560 B / 16 = 160 cycles, no tokens
             GemmInsn(uop_bgn=0, uop_end=100),  # 100 cycles in parallel
             FinishInsn()]
    r = estimate(insns, ultra, ZERO)
    assert r.total_cycles == 160
    assert r.latency_s == pytest.approx(160 / 333e6)


def test_cycle_model_deadlock():
    insns = [GemmInsn(pop_prev=True), FinishInsn()]
    with pytest.raises(VTAError, match="deadlock.*compute module.*load→compute"):
        estimate(insns, CFG)


def test_cycle_model_c2_is_compute_bound():
    x = RNG.integers(-128, 128, (1, 64, 56, 56), dtype=np.int8)
    w = RNG.integers(-128, 128, (64, 64, 3, 3), dtype=np.int8)
    wl = workloads.conv2d(load_config("pynq"), x, w, np.zeros(64, np.int32))
    r = estimate(wl.program.instructions, wl.program.config)
    # lower bound: every useful GEMM uop takes one cycle
    assert r.gemm_cycles == wl.macs // 256
    assert r.total_cycles >= r.busy_cycles["compute"] >= r.gemm_cycles
    assert 0.5 < r.gemm_utilization < 1
