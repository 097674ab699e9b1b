"""Instruction-level tests VTA itself used (spec §5), bit-exact against numpy, plus the
simulator's checks (hazards, out-of-range access, deadlock) and a property test of the
vectorized GEMM/ALU against a literal per-uop loop of spec §3."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwcompile.errors import VTAError
from hwcompile.targets.vta import layout, workloads
from hwcompile.targets.vta.config import load_config
from hwcompile.targets.vta.isa import AluInsn, AluOp, FinishInsn, GemmInsn, MemInsn, MemType, Opcode
from hwcompile.targets.vta.program import ProgramBuilder
from hwcompile.targets.vta.simulator import Simulator

CFG = load_config("sim")
RNG = np.random.default_rng(1234)


def _rand_acc(n, lo=-(1 << 31), hi=(1 << 31) - 1):
    return RNG.integers(lo, hi, (n, 1, 16), endpoint=True, dtype=np.int64).astype(np.int32)


def _run_acc_program(build, mode="hardware"):
    """Build with ``build(builder)``, run, return (simulator, program)."""
    b = ProgramBuilder(CFG)
    out = build(b)
    prog = b.finish()
    sim = Simulator(CFG, prog.dram.copy(), mode)
    stats = sim.run(prog.instructions)
    result = sim.dram[out.offset:out.offset + out.nbytes].view(out.dtype).reshape(out.shape)
    return sim, result, stats


# --- ACC save/load ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["hardware", "reference"])
def test_acc_load_shr0_store(mode):
    data = _rand_acc(100)

    def build(b):
        src, dst = b.buffer("src", data), b.alloc("dst", (100, 1, 16), np.int8)
        b.load("acc", src, 0, x_size=100)
        b.alu("shr", [(0, 0)], [(100, 1, 1)], imm=0)
        b.store(dst, 0, x_size=100)
        return dst

    sim, got, stats = _run_acc_program(build, mode)
    np.testing.assert_array_equal(sim.acc[:100], data)
    np.testing.assert_array_equal(got, data.astype(np.int8))  # low 8 bits
    assert stats.acc_load_nbytes == 100 * 64 and stats.out_store_nbytes == 100 * 16
    assert stats.alu_counter == 100


def test_store_modes_differ_without_alu():
    """Hardware stores the OUT buffer, which a LOAD ACC does not write; the reference
    simulator stores ACC truncated."""
    data = _rand_acc(8, 1, 100)

    def build(b):
        src, dst = b.buffer("src", data), b.alloc("dst", (8, 1, 16), np.int8)
        b.load("acc", src, 0, x_size=8)
        b.store(dst, 0, x_size=8)
        return dst

    assert not _run_acc_program(build, "hardware")[1].any()
    np.testing.assert_array_equal(_run_acc_program(build, "reference")[1], data.astype(np.int8))


@pytest.mark.parametrize("pad", [(2, 0, 0, 0), (0, 3, 0, 0), (0, 0, 1, 0), (0, 0, 0, 4),
                                 (1, 2, 3, 4), (15, 15, 15, 15)], ids=[
    "top", "bottom", "left", "right", "all_around", "max_pads"])
def test_padded_acc_load(pad):
    rows, cols, stride = 5, 7, 9  # strided rows inside a larger DRAM matrix
    data = _rand_acc(rows * stride, -1000, 1000)
    top, bottom, left, right = pad
    prows, pcols = top + rows + bottom, left + cols + right

    def build(b):
        src, dst = b.buffer("src", data), b.alloc("dst", (prows * pcols, 1, 16), np.int8)
        b.load("acc", src, 0, x_size=cols, y_size=rows, x_stride=stride, pad=pad)
        b.alu("shr", [(0, 0)], [(prows * pcols, 1, 1)], imm=0)
        b.store(dst, 0, x_size=pcols, y_size=prows)
        return dst

    sim, got, _ = _run_acc_program(build)
    expect = np.pad(data.reshape(rows, stride, 16)[:, :cols], ((top, bottom), (left, right),
                                                             (0, 0)))
    np.testing.assert_array_equal(sim.acc[:prows * pcols].reshape(prows, pcols, 16), expect)
    np.testing.assert_array_equal(got.reshape(prows, pcols, 16), expect.astype(np.int8))


def test_padded_inp_load_feeds_gemm():
    """INP padding: an identity weight copies the padded input rectangle into ACC."""
    x = RNG.integers(-128, 128, (3, 4, 1, 16), dtype=np.int8)

    def build(b):
        xi = b.buffer("x", x)
        w = b.buffer("w", np.eye(16, dtype=np.int8)[None])
        out = b.alloc("out", (6 * 7, 1, 16), np.int8)
        b.load("wgt", w, 0, x_size=1)
        b.load("inp", xi, 0, x_size=4, y_size=3, x_stride=4, pad=(1, 2, 2, 1))
        b.dep_push("load", "compute")
        b.dep_pop("load", "compute")
        b.gemm([(0, 0, 0), (1, 1, 0), (2, 2, 0)], [(14, 3, 3, 0)])
        b.dep_push("compute", "store")
        b.dep_pop("compute", "store")
        b.store(out, 0, x_size=42)
        return out

    _, got, _ = _run_acc_program(build)
    expect = np.pad(x, ((1, 2), (2, 1), (0, 0), (0, 0)))
    np.testing.assert_array_equal(got.reshape(6, 7, 1, 16), expect)


# --- GEMM with 1 and 2 virtual threads, then SHR 8 / MAX 0 / MIN 127 ------------------
@pytest.mark.parametrize("vthreads", [1, 2])
def test_gemm_virtual_threads(vthreads):
    a = RNG.integers(-128, 128, (256, 256), dtype=np.int8)
    w = RNG.integers(-128, 128, (64, 256), dtype=np.int8)
    wl = workloads.gemm(CFG, a, w, shift=8, lo=0, hi=127, vthreads=vthreads)
    result = wl.program.run()
    got = layout.unpack_matrix(result.read(wl.output), 256, 64)
    expect = np.clip((a.astype(np.int64) @ w.T.astype(np.int64)) >> 8, 0, 127).astype(np.int8)
    np.testing.assert_array_equal(got, expect)
    assert result.stats.gemm_counter == 256 * 256 * 64 // 256
    assert result.stats.inp_load_nbytes == a.nbytes
    assert result.stats.wgt_load_nbytes == w.nbytes * vthreads  # resident per thread
    assert result.stats.out_store_nbytes == 256 * 64


# --- ALU ops with immediate and tensor operands ------------------------------------------
def _ref(op, a, b):
    a, b = a.astype(np.int64), b.astype(np.int64)
    r = {"min": lambda: np.minimum(a, b), "max": lambda: np.maximum(a, b),
         "add": lambda: a + b, "mul": lambda: a * b,
         # shifts of 32 or more saturate (documented simulator semantics)
         "shr": lambda: np.where(b >= 0, a // 2 ** np.clip(b, 0, 62),
                                 a * 2 ** np.clip(-b, 0, 32))}[op]()
    return ((r + 2**31) % 2**32 - 2**31).astype(np.int32)  # two's-complement wrap


ALU_CASES = [("min", None), ("max", None), ("add", None), ("mul", None),
             ("min", 17), ("max", -5), ("add", 300), ("add", -32768), ("mul", -3),
             ("shr", 4), ("shr", 0), ("shr", -3), ("shr", None)]


@pytest.mark.parametrize("op,imm", ALU_CASES)
def test_alu_op(op, imm):
    n = 64
    a = _rand_acc(n, -(1 << 20), 1 << 20)
    bshift = op == "shr" and imm is None
    b_ = (RNG.integers(-8, 9, (n, 1, 16)).astype(np.int32) if bshift
          else _rand_acc(n, -(1 << 20), 1 << 20))
    if op in ("add", "mul") and imm is None:
        a, b_ = _rand_acc(n), _rand_acc(n)  # full range: wrap-around matters

    def build(bld):
        ab, bb = bld.buffer("a", a), bld.buffer("b", b_)
        out = bld.alloc("out", (n, 1, 16), np.int8)
        bld.load("acc", ab, 0, x_size=n)
        bld.load("acc", bb, n, x_size=n)
        # dst = a[i], src = b[i]: one uop, one loop
        bld.alu(op, [(0, n)], [(n, 1, 1)], imm=imm)
        bld.store(out, 0, x_size=n)
        return out

    sim, got, stats = _run_acc_program(build)
    other = np.full_like(a, imm) if imm is not None else b_
    expect = _ref(op, a, other)
    np.testing.assert_array_equal(sim.acc[:n], expect)
    np.testing.assert_array_equal(got, expect.astype(np.int8))
    np.testing.assert_array_equal(sim.acc[n:2 * n], b_)  # source untouched
    assert stats.alu_counter == n


def test_relu():
    a = _rand_acc(50, -1000, 1000)

    def build(b):
        ab, out = b.buffer("a", a), b.alloc("out", (50, 1, 16), np.int8)
        b.load("acc", ab, 0, x_size=50)
        b.alu("max", [(0, 0)], [(5, 10, 10), (10, 1, 1)], imm=0)
        b.alu("min", [(0, 0)], [(5, 10, 10), (10, 1, 1)], imm=127)
        b.store(out, 0, x_size=50)
        return out

    np.testing.assert_array_equal(_run_acc_program(build)[1], np.clip(a, 0, 127).astype(np.int8))


def test_shift_and_scale():
    """Power-of-two requantisation: ADD 2^(s-1), SHR s, MIN 127, MAX -127."""
    a, s = _rand_acc(40, -(1 << 16), 1 << 16), 6

    def build(b):
        ab, out = b.buffer("a", a), b.alloc("out", (40, 1, 16), np.int8)
        b.load("acc", ab, 0, x_size=40)
        for op, imm in (("add", 1 << (s - 1)), ("shr", s), ("min", 127), ("max", -127)):
            b.alu(op, [(0, 0)], [(40, 1, 1)], imm=imm)
        b.store(out, 0, x_size=40)
        return out

    expect = np.clip(np.floor(a / 2**s + 0.5), -127, 127).astype(np.int8)
    np.testing.assert_array_equal(_run_acc_program(build)[1], expect)


def test_shl_then_shr_negative_immediate():
    a = _rand_acc(8, -(1 << 10), 1 << 10)

    def build(b):
        ab, out = b.buffer("a", a), b.alloc("out", (8, 1, 16), np.int8)
        b.load("acc", ab, 0, x_size=8)
        b.alu("shr", [(0, 0)], [(8, 1, 1)], imm=-12)  # x << 12
        b.alu("shr", [(0, 0)], [(8, 1, 1)], imm=10)  # then >> 10: x * 4
        b.store(out, 0, x_size=8)
        return out

    sim, _, _ = _run_acc_program(build)
    np.testing.assert_array_equal(sim.acc[:8], a * 4)


def test_alu_pooling_reduction_repeated_dst():
    """MAX into one dst across the inner loop (repeated dst is sequential, not a race)."""
    a = _rand_acc(36, -1000, 1000)

    def build(b):
        ab, out = b.buffer("a", a), b.alloc("out", (4, 1, 16), np.int8)
        b.load("acc", ab, 4, x_size=36)
        b.alu("shr", [(0, 4)], [(4, 1, 9)], imm=0)  # copy first of each group of 9
        b.alu("max", [(0, 4)], [(4, 1, 9), (9, 0, 1)])
        b.alu("add", [(0, 4)], [(4, 1, 9), (9, 0, 1)])
        b.store(out, 0, x_size=4)
        return out

    sim, _, _ = _run_acc_program(build)
    groups = a.reshape(4, 9, 16).astype(np.int64)
    np.testing.assert_array_equal(sim.acc[:4, 0], groups.max(1) + groups.sum(1))


def test_alu_chained_uops_follow_program_order():
    """uop 1 reads what uop 0 wrote in the same instruction (prefix sum)."""
    a = _rand_acc(10, -1000, 1000)

    def build(b):
        ab, out = b.buffer("a", a), b.alloc("out", (10, 1, 16), np.int8)
        b.load("acc", ab, 0, x_size=10)
        b.alu("add", [(1, 0)], [(9, 1, 1)])  # acc[i+1] += acc[i], in order
        b.store(out, 0, x_size=10)
        return out

    sim, _, _ = _run_acc_program(build)
    np.testing.assert_array_equal(sim.acc[:10], np.cumsum(a, axis=0))


# --- faults ----------------------------------------------------------------------------
def _raw_run(insns, uops=None, dram_bytes=1 << 16):
    sim = Simulator(CFG, np.zeros(dram_bytes, np.uint8))
    if uops is not None:
        sim.uop[:len(uops)] = uops
    sim.run(insns + [FinishInsn()])
    return sim


def test_gemm_hazard_same_dst_within_two_uops():
    with pytest.raises(VTAError, match=r"GEMM\).*ACC\[0\].*hazard"):
        _raw_run([GemmInsn(uop_bgn=0, uop_end=2)], uops=[[0, 0, 0], [0, 1, 0]])
    with pytest.raises(VTAError, match="hazard"):  # two apart
        _raw_run([GemmInsn(uop_bgn=0, uop_end=3)], uops=[[0, 0, 0], [1, 0, 0], [0, 0, 0]])
    with pytest.raises(VTAError, match="hazard"):  # across loop iterations
        _raw_run([GemmInsn(uop_bgn=0, uop_end=1, iter_in=2)], uops=[[0, 0, 0]])
    _raw_run([GemmInsn(uop_bgn=0, uop_end=4)], uops=[[0, 0, 0], [1, 0, 0], [2, 0, 0],
                                                    [0, 0, 0]])  # three apart is fine


@pytest.mark.parametrize("insn,message", [
    (MemInsn(opcode=Opcode.LOAD, memory_type=MemType.INP, sram_base=2040, y_size=1,
             x_size=9), r"#0 \(LOAD INP\): writes SRAM elements 2040..2048.*2048"),
    (MemInsn(opcode=Opcode.LOAD, memory_type=MemType.ACC, sram_base=0, y_size=2, x_size=4,
             x_stride=1024), "DRAM element 1027 is beyond the end of DRAM"),
    (MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, dram_base=4096, y_size=1,
             x_size=1), "beyond the end of DRAM"),
    (MemInsn(opcode=Opcode.STORE, memory_type=MemType.ACC, y_size=1, x_size=1),
     "STORE memory_type must be OUT"),
    (MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, y_size=1, x_size=1, x_pad_0=1),
     "STORE cannot pad"),
    (MemInsn(opcode=Opcode.LOAD, memory_type=MemType.UOP, sram_base=8190, y_size=1,
             x_size=3), "uop SRAM"),
    (GemmInsn(uop_bgn=0, uop_end=1, iter_out=3, dst_factor_out=1100),
     r"dst index 2200 is outside the ACC buffer \(depth 2048\).*iteration \(2, 0\)"),
    (GemmInsn(uop_bgn=0, uop_end=1, iter_in=2, wgt_factor_in=1023),
     "wgt index 1024 is outside the WGT buffer"),
    (GemmInsn(uop_bgn=8000, uop_end=8200), "uop range"),
    (AluInsn(uop_bgn=0, uop_end=1, iter_in=3, dst_factor_in=1100, use_imm=True),
     "dst index 2200 is outside the ACC buffer"),
    (AluInsn(uop_bgn=0, uop_end=1, iter_in=3, src_factor_in=2047),
     "src index 4094 is outside the ACC buffer"),
    (MemInsn(opcode=Opcode.LOAD, memory_type=MemType.INP, pop_prev=True),
     "load module, which has no prev stage"),
    (MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, push_next=True),
     "store module, which has no next stage"),
])
def test_simulator_faults_named(insn, message):
    with pytest.raises(VTAError, match=message):
        _raw_run([insn], uops=[[0, 0, 1]])


def test_alu_immediate_ignores_source_index():
    sim = _raw_run([AluInsn(uop_bgn=0, uop_end=1, iter_in=3, dst_factor_in=1,
                            src_factor_in=2047, alu_opcode=AluOp.ADD, use_imm=True, imm=5)],
                   uops=[[0, 0, 1]])
    assert (sim.acc[:3] == 5).all() and not sim.acc[3:].any()


def test_program_structure_errors():
    with pytest.raises(VTAError, match="does not end with FINISH"):
        Simulator(CFG, np.zeros(64, np.uint8)).run([GemmInsn()])
    with pytest.raises(VTAError, match="FINISH carries no pops"):
        Simulator(CFG, np.zeros(64, np.uint8)).run([FinishInsn(pop_prev=True)])
    with pytest.raises(VTAError, match="mode"):
        Simulator(CFG, np.zeros(64, np.uint8), mode="fast")


def _run_with_timeout(fn, seconds=20):
    box = {}

    def target():
        try:
            fn()
        except Exception as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "simulator hung instead of reporting a deadlock"
    return box.get("error")


def test_missing_token_is_reported_as_deadlock():
    b = ProgramBuilder(CFG)
    x = b.buffer("x", np.zeros((4, 1, 16), np.int8))
    b.load("inp", x, 0, x_size=4)  # forgot dep_push("load", "compute")
    b.dep_pop("load", "compute")
    b.gemm([(0, 0, 0)], reset=True)
    prog = b.finish()
    err = _run_with_timeout(prog.run)
    assert isinstance(err, VTAError)
    assert "deadlock" in str(err)
    assert "compute module waits at instruction #" in str(err)
    assert "load→compute" in str(err)
    assert "load module finished" in str(err)


# --- property: vectorized GEMM/ALU == literal per-uop loop (spec §3) ---------------------
def _literal(insn, sim):
    acc, out = sim.acc.astype(np.int64), sim.out.copy()
    for i in range(insn.iter_out):
        for j in range(insn.iter_in):
            for k in range(insn.uop_bgn, insn.uop_end):
                d0, s0, w0 = sim.uop[k]
                d = d0 + i * insn.dst_factor_out + j * insn.dst_factor_in
                s = s0 + i * insn.src_factor_out + j * insn.src_factor_in
                if isinstance(insn, GemmInsn):
                    w = w0 + i * insn.wgt_factor_out + j * insn.wgt_factor_in
                    acc[d] += sim.inp[s].astype(np.int64) @ sim.wgt[w].astype(np.int64).T
                else:
                    b = np.full(acc[d].shape, insn.imm) if insn.use_imm else acc[s]
                    acc[d] = _ref(insn.alu_opcode.name.lower(), acc[d], b)
                acc[d] = (acc[d] + 2**31) % 2**32 - 2**31
                out[d] = acc[d].astype(np.int8)
    return acc.astype(np.int32), out


small = st.integers(0, 6)


@settings(max_examples=60, deadline=None)
@given(gemm=st.booleans(), n_uops=st.integers(1, 5), iters=st.tuples(st.integers(1, 3),
       st.integers(1, 3)), factors=st.lists(small, min_size=6, max_size=6),
       op=st.sampled_from(list(AluOp)), imm=st.one_of(st.none(), st.integers(-9, 9)),
       seed=st.integers(0, 2**32 - 1))
def test_vectorized_matches_literal_loop(gemm, n_uops, iters, factors, op, imm, seed):
    rng = np.random.default_rng(seed)
    sim = Simulator(CFG, np.zeros(64, np.uint8))
    sim.inp[:64] = rng.integers(-128, 128, (64, 1, 16))
    sim.wgt[:64] = rng.integers(-128, 128, (64, 16, 16))
    sim.acc[:64] = rng.integers(-(1 << 31), 1 << 31, (64, 1, 16))
    sim.uop[:n_uops] = rng.integers(0, 24, (n_uops, 3))
    f = {"dst_factor_out": factors[0], "dst_factor_in": factors[1],
         "src_factor_out": factors[2], "src_factor_in": factors[3]}
    if gemm:
        insn = GemmInsn(uop_bgn=0, uop_end=n_uops, iter_out=iters[0], iter_in=iters[1],
                        wgt_factor_out=factors[4], wgt_factor_in=factors[5], **f)
    else:
        if op == AluOp.SHR and imm is None:
            sim.acc[:64] = rng.integers(-20, 21, (64, 1, 16))  # in-range shift amounts
        insn = AluInsn(uop_bgn=0, uop_end=n_uops, iter_out=iters[0], iter_in=iters[1],
                       alu_opcode=op, use_imm=imm is not None, imm=imm or 0, **f)
    expect_acc, expect_out = _literal(insn, sim)
    dst = np.array([sim.uop[k][0] + i * f["dst_factor_out"] + j * f["dst_factor_in"]
                    for i in range(iters[0]) for j in range(iters[1])
                    for k in range(n_uops)])
    hazard = any(dst[n] in dst[max(0, n - 2):n] for n in range(len(dst)))
    if gemm and hazard:
        with pytest.raises(VTAError, match="hazard"):
            sim.run([insn, FinishInsn()])
        return
    sim.run([insn, FinishInsn()])
    np.testing.assert_array_equal(sim.acc, expect_acc)
    np.testing.assert_array_equal(sim.out, expect_out)
