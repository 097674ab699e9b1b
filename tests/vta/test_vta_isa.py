"""VTA ISA: golden bit positions (spec §2), round-trips, range errors, disassembler, CLI."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwcompile.cli import main as hwcompile_main
from hwcompile.errors import VTAError
from hwcompile.targets.vta.config import from_dict, load_config
from hwcompile.targets.vta.disasm import disassemble
from hwcompile.targets.vta.isa import (
    AluInsn,
    AluOp,
    FinishInsn,
    GemmInsn,
    MemInsn,
    MemType,
    Opcode,
    Uop,
    decode_insn,
    decode_program,
    decode_uops,
    encode_insn,
    encode_program,
    encode_uops,
)

CFG = load_config("sim")

# (field, first bit, width) transcribed from the spec tables for the default config.
FLAGS = [("pop_prev", 3, 1), ("pop_next", 4, 1), ("push_prev", 5, 1), ("push_next", 6, 1)]
MEM_FIELDS = FLAGS + [("memory_type", 7, 3), ("sram_base", 10, 16), ("dram_base", 26, 32),
                      ("y_size", 64, 16), ("x_size", 80, 16), ("x_stride", 96, 16),
                      ("y_pad_0", 112, 4), ("y_pad_1", 116, 4), ("x_pad_0", 120, 4),
                      ("x_pad_1", 124, 4)]
LOOP_FIELDS = FLAGS + [("reset_reg", 7, 1), ("uop_bgn", 8, 13), ("uop_end", 21, 14),
                       ("iter_out", 35, 14), ("iter_in", 49, 14), ("dst_factor_out", 64, 11),
                       ("dst_factor_in", 75, 11), ("src_factor_out", 86, 11),
                       ("src_factor_in", 97, 11)]
GEMM_FIELDS = LOOP_FIELDS + [("wgt_factor_out", 108, 10), ("wgt_factor_in", 118, 10)]
ALU_FIELDS = LOOP_FIELDS + [("alu_opcode", 108, 3), ("use_imm", 111, 1)]


def _zero(kind):
    if kind == "load":
        return MemInsn(opcode=Opcode.LOAD, memory_type=MemType.UOP)
    if kind == "store":
        return MemInsn(opcode=Opcode.STORE, memory_type=MemType.UOP)
    if kind == "gemm":
        return GemmInsn(iter_out=0, iter_in=0)
    return AluInsn(iter_out=0, iter_in=0)


def _set(insn, name, value):
    if name in ("pop_prev", "pop_next", "push_prev", "push_next", "reset_reg", "use_imm"):
        value = bool(value)
    elif name == "memory_type":
        value = MemType(value)
    elif name == "alu_opcode":
        value = AluOp(value)
    return type(insn)(**{**insn.__dict__, name: value})


CASES = ([("load", *f) for f in MEM_FIELDS] + [("store", *f) for f in MEM_FIELDS]
         + [("gemm", *f) for f in GEMM_FIELDS] + [("alu", *f) for f in ALU_FIELDS])


@pytest.mark.parametrize("kind,name,offset,width", CASES)
def test_field_at_spec_bit_position(kind, name, offset, width):
    base = _zero(kind)
    base_word = encode_insn(base, CFG)
    # memory_type/alu_opcode: largest valid enum value; others all ones
    value = {"memory_type": 5, "alu_opcode": 4}.get(name, (1 << width) - 1)
    word = encode_insn(_set(base, name, value), CFG)
    assert word ^ base_word == value << offset


@pytest.mark.parametrize("insn,opcode", [(_zero("load"), 0), (_zero("store"), 1),
                                         (_zero("gemm"), 2), (FinishInsn(), 3),
                                         (_zero("alu"), 4)])
def test_opcode_in_bits_0_to_2(insn, opcode):
    assert encode_insn(insn, CFG) == opcode


def test_alu_imm_signed_at_112():
    word = encode_insn(AluInsn(iter_out=0, iter_in=0, alu_opcode=AluOp.MIN, imm=-2), CFG)
    assert word == (4 | (0xFFFE << 112))
    assert decode_insn(word, CFG).imm == -2


def test_finish_flags_only():
    assert encode_insn(FinishInsn(push_next=True, push_prev=True), CFG) == 3 | 1 << 6 | 1 << 5


def test_two_little_endian_words():
    insn = MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, sram_base=0x1234,
                   y_size=0x0102)
    raw = encode_program([insn], CFG)
    assert len(raw) == 16
    w0, w1 = np.frombuffer(raw, "<u8")
    assert w0 == 1 | 4 << 7 | 0x1234 << 10
    assert w1 == 0x0102
    assert raw[8:10] == b"\x02\x01"


def test_uop_golden():
    words = encode_uops([Uop(0x7FF, 0, 0), Uop(0, 0x7FF, 0), Uop(0, 0, 0x3FF), Uop(5, 6, 7)], CFG)
    assert words.tolist() == [0x7FF, 0x7FF << 11, 0x3FF << 22, 5 | 6 << 11 | 7 << 22]
    assert decode_uops(words, CFG).tolist() == [[0x7FF, 0, 0], [0, 0x7FF, 0], [0, 0, 0x3FF],
                                                [5, 6, 7]]


def test_non_default_config_shifts_fields():
    # INP depth 1024 -> src fields 10 bits: uop wgt_idx moves to bit 21
    cfg = from_dict({**load_config("sim").to_dict(), "LOG_INP_BUFF_SIZE": 14})
    assert encode_uops([Uop(0, 0, 1)], cfg).tolist() == [1 << 21]
    word = encode_insn(GemmInsn(iter_out=0, iter_in=0, wgt_factor_out=1), cfg)
    assert word == 2 | 1 << (64 + 11 + 11 + 10 + 10)


# --- property: random valid instructions round-trip ------------------------------------
b = st.booleans()
flags = {"pop_prev": b, "pop_next": b, "push_prev": b, "push_next": b}


def u(bits):
    return st.integers(0, (1 << bits) - 1)


mem_st = st.builds(MemInsn, opcode=st.sampled_from([Opcode.LOAD, Opcode.STORE]),
                   memory_type=st.sampled_from(list(MemType)), sram_base=u(16), dram_base=u(32),
                   y_size=u(16), x_size=u(16), x_stride=u(16), y_pad_0=u(4), y_pad_1=u(4),
                   x_pad_0=u(4), x_pad_1=u(4), **flags)
loop = {"reset_reg": b, "uop_bgn": u(13), "uop_end": u(14), "iter_out": u(14),
        "iter_in": u(14), "dst_factor_out": u(11), "dst_factor_in": u(11),
        "src_factor_out": u(11), "src_factor_in": u(11), **flags}
gemm_st = st.builds(GemmInsn, wgt_factor_out=u(10), wgt_factor_in=u(10), **loop)
alu_st = st.builds(AluInsn, alu_opcode=st.sampled_from(list(AluOp)), use_imm=b,
                   imm=st.integers(-(1 << 15), (1 << 15) - 1), **loop)
insn_st = st.one_of(mem_st, gemm_st, alu_st, st.builds(FinishInsn, **flags))


@settings(max_examples=300, deadline=None)
@given(st.lists(insn_st, min_size=1, max_size=8))
def test_roundtrip_random_instructions(insns):
    data = encode_program(insns, CFG)
    assert len(data) == 16 * len(insns)
    assert decode_program(data, CFG) == insns


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(u(11), u(11), u(10)), min_size=1, max_size=20))
def test_roundtrip_random_uops(rows):
    assert decode_uops(encode_uops(np.array(rows), CFG), CFG).tolist() == [list(r) for r in rows]


# --- range errors ----------------------------------------------------------------------
@pytest.mark.parametrize("kind,name,offset,width", [c for c in CASES if c[3] > 1
                                                    and c[1] not in ("memory_type",
                                                                     "alu_opcode")])
def test_field_overflow_rejected(kind, name, offset, width):
    with pytest.raises(VTAError, match=f"field {name} = {1 << width} does not fit"):
        encode_insn(_set(_zero(kind), name, 1 << width), CFG)
    with pytest.raises(VTAError, match=name):
        encode_insn(_set(_zero(kind), name, -1), CFG)


@pytest.mark.parametrize("imm", [-(1 << 15) - 1, 1 << 15])
def test_imm_range(imm):
    with pytest.raises(VTAError, match="imm"):
        encode_insn(AluInsn(imm=imm), CFG)


def test_uop_overflow_names_field():
    with pytest.raises(VTAError, match="micro-op #1 field wgt_idx = 1024"):
        encode_uops([Uop(0, 0, 0), Uop(0, 0, 1024)], CFG)


def test_decode_rejects_bad_stream():
    with pytest.raises(VTAError, match="not a multiple of 16"):
        decode_program(b"\0" * 17, CFG)
    with pytest.raises(VTAError, match="#1: unknown opcode 7"):
        decode_program(b"\0" * 16 + b"\x07" + b"\0" * 15, CFG)
    with pytest.raises(VTAError, match="unknown memory_type 6"):
        decode_insn(6 << 7, CFG)
    with pytest.raises(VTAError, match="unknown ALU opcode 5"):
        decode_insn(4 | 5 << 108, CFG)


# --- disassembler and CLI ----------------------------------------------------------------
PROGRAM = [
    MemInsn(opcode=Opcode.LOAD, memory_type=MemType.INP, sram_base=3, dram_base=16, y_size=4,
            x_size=56, x_stride=56, y_pad_0=1, x_pad_0=1, x_pad_1=1, push_next=True),
    GemmInsn(uop_bgn=0, uop_end=504, iter_out=2, iter_in=4, dst_factor_out=56,
             src_factor_out=58, src_factor_in=232, wgt_factor_in=9, pop_prev=True),
    AluInsn(uop_bgn=504, uop_end=505, alu_opcode=AluOp.SHR, use_imm=True, imm=-3),
    MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, x_size=112, x_stride=112),
    FinishInsn(),
]
LISTING = """\
00000  LOAD   INP      sram=0x0003 dram=0x00000010 y=4 x=56 stride=56 pad=(1,0,1,1)  deps: push_next
00001  GEMM            uop=[0,504) iter=(2,4) dst=(56,0) src=(58,232) wgt=(0,9)  deps: pop_prev
00002  ALU    SHR      uop=[504,505) iter=(1,1) dst=(0,0) src=(0,0) imm=-3
00003  STORE  OUT      sram=0x0000 dram=0x00000000 y=0 x=112 stride=112 pad=(0,0,0,0)
00004  FINISH"""


def test_disassembler_listing():
    assert disassemble(encode_program(PROGRAM, CFG), CFG) == LISTING


def test_cli_disasm(tmp_path, capfd):
    path = tmp_path / "program.bin"
    path.write_bytes(encode_program(PROGRAM, CFG))
    assert hwcompile_main(["vta", "disasm", str(path), "--config", "pynq"]) == 0
    assert capfd.readouterr().out == LISTING + "\n"


def test_cli_disasm_errors(tmp_path, capfd):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\0" * 20)
    for argv, message in [([str(bad)], "not a multiple of 16"),
                          ([str(tmp_path / "missing.bin")], "cannot read"),
                          ([str(bad), "--config", "nope"], "neither a shipped config")]:
        assert hwcompile_main(["vta", "disasm", *argv]) == VTAError.exit_code
        err = capfd.readouterr().err
        assert err.startswith("error: ") and message in err
