"""VTA instructions and micro-ops: data classes and the exact bit layouts.

Layouts follow ``include/vta/hw_spec.h`` of apache/tvm-vta (HW_VER 0.0.2): an instruction is
128 bits stored as two little-endian 64-bit words, fields packed LSB-first, and a field that
would cross bit 64 starts at bit 64 instead (the C bit-fields are ``uint64_t``). A micro-op
is one little-endian 32-bit word. Widths that depend on SRAM depths are derived from the
config, so non-default configs shift field positions exactly as hw_spec.h does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from hwcompile.errors import VTAError

if TYPE_CHECKING:  # config validates its layouts with this module
    from .config import VTAConfig

INSN_BITS = 128  # an instruction; a micro-op is one 32-bit word
UOP_BITS = 32
INSN_BYTES = INSN_BITS // 8

# Fixed widths from hw_spec_const.h.
OPCODE_BITS = 3
MEMTYPE_BITS = 3
SRAM_ADDR_BITS = 16
DRAM_ADDR_BITS = 32
SIZE_BITS = 16
STRIDE_BITS = 16
PAD_BITS = 4
LOOP_ITER_BITS = 14
ALU_OPCODE_BITS = 3
IMM_BITS = 16


class Opcode(IntEnum):
    LOAD = 0
    STORE = 1
    GEMM = 2
    FINISH = 3
    ALU = 4


class MemType(IntEnum):
    UOP = 0
    WGT = 1
    INP = 2
    ACC = 3
    OUT = 4
    ACC_8BIT = 5


class AluOp(IntEnum):
    MIN = 0
    MAX = 1
    ADD = 2
    SHR = 3
    MUL = 4


class Stage(IntEnum):
    """Pipeline stages (modules); numbering as the reference runtime's kLoadStage etc."""

    LOAD = 1
    COMPUTE = 2
    STORE = 3


@dataclass(frozen=True, kw_only=True)
class Insn:
    """Dependency flags shared by every instruction kind."""

    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    @property
    def stage(self) -> Stage:
        return Stage.COMPUTE


@dataclass(frozen=True, kw_only=True)
class MemInsn(Insn):
    """LOAD or STORE of a 2-D block; sizes and addresses count elements of ``memory_type``."""

    opcode: Opcode
    memory_type: MemType
    sram_base: int = 0
    dram_base: int = 0
    y_size: int = 0
    x_size: int = 0
    x_stride: int = 0
    y_pad_0: int = 0
    y_pad_1: int = 0
    x_pad_0: int = 0
    x_pad_1: int = 0

    @property
    def stage(self) -> Stage:
        # Routing rule of the fetch module (vta.cc): INP/WGT loads go to the load module,
        # stores to the store module, UOP/ACC loads to compute.
        if self.opcode == Opcode.STORE:
            return Stage.STORE
        if self.memory_type in (MemType.INP, MemType.WGT):
            return Stage.LOAD
        return Stage.COMPUTE


@dataclass(frozen=True, kw_only=True)
class _LoopInsn(Insn):
    """Fields GEMM and ALU share: the same word-0 layout and the two-level uop loop."""

    reset_reg: bool = False
    uop_bgn: int = 0
    uop_end: int = 0
    iter_out: int = 1
    iter_in: int = 1
    dst_factor_out: int = 0
    dst_factor_in: int = 0
    src_factor_out: int = 0
    src_factor_in: int = 0


@dataclass(frozen=True, kw_only=True)
class GemmInsn(_LoopInsn):
    wgt_factor_out: int = 0
    wgt_factor_in: int = 0

    opcode = Opcode.GEMM


@dataclass(frozen=True, kw_only=True)
class AluInsn(_LoopInsn):
    alu_opcode: AluOp = AluOp.MIN
    use_imm: bool = False
    imm: int = 0

    opcode = Opcode.ALU


@dataclass(frozen=True, kw_only=True)
class FinishInsn(Insn):
    opcode = Opcode.FINISH


Instruction = MemInsn | GemmInsn | AluInsn | FinishInsn


@dataclass(frozen=True)
class Uop:
    """One micro-op: ACC destination, source (INP for GEMM, ACC for ALU) and weight index."""

    dst_idx: int
    src_idx: int
    wgt_idx: int = 0


class Field(NamedTuple):
    name: str
    offset: int
    width: int
    signed: bool = False


class Layouts(NamedTuple):
    mem: tuple[Field, ...]
    gemm: tuple[Field, ...]
    alu: tuple[Field, ...]
    finish: tuple[Field, ...]
    uop: tuple[Field, ...]


def _pack(kind: str, spec: list[tuple[str, int]], source: str, total: int = INSN_BITS,
          signed: tuple[str, ...] = ()) -> tuple[Field, ...]:
    fields, pos = [], 0
    for name, width in spec:
        if pos < 64 < pos + width:  # no field crosses the 64-bit word boundary
            pos = 64
        fields.append(Field(name, pos, width, name in signed))
        pos += width
    if pos > total:
        raise VTAError(f"{source}: the {kind} layout needs {pos} bits but has {total}; "
                       f"shrink the buffer sizes (LOG_*_BUFF_SIZE)")
    return tuple(fields)


_HEADER = [("opcode", OPCODE_BITS), ("pop_prev", 1), ("pop_next", 1), ("push_prev", 1),
           ("push_next", 1)]


@cache
def layouts(cfg: VTAConfig, source: str = "vta config") -> Layouts:
    """Bit layouts for ``cfg``; raises VTAError when a layout does not fit."""
    uop_loop = [("reset_reg", 1), ("uop_bgn", cfg.log_uop_depth),
                ("uop_end", cfg.log_uop_depth + 1), ("iter_out", LOOP_ITER_BITS),
                ("iter_in", LOOP_ITER_BITS),
                ("dst_factor_out", cfg.log_acc_depth), ("dst_factor_in", cfg.log_acc_depth),
                ("src_factor_out", cfg.log_inp_depth), ("src_factor_in", cfg.log_inp_depth)]
    mem = _HEADER + [("memory_type", MEMTYPE_BITS), ("sram_base", SRAM_ADDR_BITS),
                     ("dram_base", DRAM_ADDR_BITS), ("y_size", SIZE_BITS),
                     ("x_size", SIZE_BITS), ("x_stride", STRIDE_BITS), ("y_pad_0", PAD_BITS),
                     ("y_pad_1", PAD_BITS), ("x_pad_0", PAD_BITS), ("x_pad_1", PAD_BITS)]
    gemm = _HEADER + uop_loop + [("wgt_factor_out", cfg.log_wgt_depth),
                                 ("wgt_factor_in", cfg.log_wgt_depth)]
    # hw_spec.h sizes the ALU source factors (and uop src_idx) by the INP depth too.
    alu = _HEADER + uop_loop + [("alu_opcode", ALU_OPCODE_BITS), ("use_imm", 1),
                                ("imm", IMM_BITS)]
    uop = [("dst_idx", cfg.log_acc_depth), ("src_idx", cfg.log_inp_depth),
           ("wgt_idx", cfg.log_wgt_depth)]
    return Layouts(mem=_pack("LOAD/STORE", mem, source), gemm=_pack("GEMM", gemm, source),
                   alu=_pack("ALU", alu, source, signed=("imm",)),
                   finish=_pack("FINISH", list(_HEADER), source),
                   uop=_pack("micro-op", uop, source, total=UOP_BITS))


def _layout_of(insn: Instruction, lay: Layouts) -> tuple[Field, ...]:
    if isinstance(insn, MemInsn):
        return lay.mem
    if isinstance(insn, GemmInsn):
        return lay.gemm
    if isinstance(insn, AluInsn):
        return lay.alu
    if isinstance(insn, FinishInsn):
        return lay.finish
    raise VTAError(f"cannot encode {type(insn).__name__}: not a VTA instruction")


def _check_range(kind: str, f: Field, value: int) -> None:
    lo, hi = (-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1) if f.signed else \
        (0, (1 << f.width) - 1)
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise VTAError(f"{kind} field {f.name} = {value!r} does not fit its {f.width}-bit "
                       f"field (range {lo}..{hi}); split the operation or change the config")


def insn_name(insn: Instruction) -> str:
    return Opcode(insn.opcode).name


def encode_insn(insn: Instruction, cfg: VTAConfig) -> int:
    """The instruction as a 128-bit integer, every field range-checked."""
    layout = _layout_of(insn, layouts(cfg))
    if isinstance(insn, MemInsn) and insn.opcode not in (Opcode.LOAD, Opcode.STORE):
        raise VTAError(f"memory instruction opcode must be LOAD or STORE, got {insn.opcode!r}")
    word = 0
    for f in layout:
        value = getattr(insn, f.name)
        _check_range(insn_name(insn), f, value)
        word |= (int(value) & ((1 << f.width) - 1)) << f.offset
    return word


def decode_insn(word: int | bytes, cfg: VTAConfig, index: int = 0) -> Instruction:
    """Decode one 128-bit instruction; ``index`` only labels error messages."""
    if isinstance(word, (bytes, bytearray, memoryview)):
        word = int.from_bytes(bytes(word), "little")
    lay = layouts(cfg)
    opcode = word & ((1 << OPCODE_BITS) - 1)
    kinds = {Opcode.LOAD: (MemInsn, lay.mem), Opcode.STORE: (MemInsn, lay.mem),
             Opcode.GEMM: (GemmInsn, lay.gemm), Opcode.ALU: (AluInsn, lay.alu),
             Opcode.FINISH: (FinishInsn, lay.finish)}
    if opcode not in kinds:
        raise VTAError(f"instruction #{index}: unknown opcode {opcode} (valid: "
                       f"{', '.join(f'{o.name}={o.value}' for o in Opcode)}); the file is not "
                       f"a VTA program for this config")
    cls, layout = kinds[Opcode(opcode)]
    values: dict[str, object] = {}
    for f in layout:
        v = (word >> f.offset) & ((1 << f.width) - 1)
        if f.signed and v >> (f.width - 1):
            v -= 1 << f.width
        values[f.name] = v
    for flag in ("pop_prev", "pop_next", "push_prev", "push_next", "reset_reg", "use_imm"):
        if flag in values:
            values[flag] = bool(values[flag])
    if cls is MemInsn:
        values["opcode"] = Opcode(opcode)
        try:
            values["memory_type"] = MemType(values["memory_type"])
        except ValueError:
            raise VTAError(f"instruction #{index}: unknown memory_type "
                           f"{values['memory_type']}") from None
    else:
        values.pop("opcode")
    if cls is AluInsn:
        try:
            values["alu_opcode"] = AluOp(values["alu_opcode"])
        except ValueError:
            raise VTAError(f"instruction #{index}: unknown ALU opcode "
                           f"{values['alu_opcode']}") from None
    return cls(**values)


def encode_program(insns: list[Instruction], cfg: VTAConfig) -> bytes:
    """Serialize an instruction stream: 16 bytes per instruction, little-endian."""
    return b"".join(encode_insn(i, cfg).to_bytes(INSN_BYTES, "little") for i in insns)


def decode_program(data: bytes, cfg: VTAConfig) -> list[Instruction]:
    if len(data) % INSN_BYTES:
        raise VTAError(f"program is {len(data)} bytes, not a multiple of {INSN_BYTES} "
                       f"(one VTA instruction); the file is truncated or not a VTA program")
    return [decode_insn(data[o:o + INSN_BYTES], cfg, o // INSN_BYTES)
            for o in range(0, len(data), INSN_BYTES)]


def encode_uops(uops: list[Uop] | np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """Micro-ops as uint32 words; ``uops`` is a list of Uop or an (n, 3) array of
    (dst, src, wgt) indices."""
    arr = np.asarray([(u.dst_idx, u.src_idx, u.wgt_idx) for u in uops]
                     if isinstance(uops, list) else uops, dtype=np.int64).reshape(-1, 3)
    words = np.zeros(len(arr), dtype=np.uint64)
    for col, f in enumerate(layouts(cfg).uop):
        values = arr[:, col]
        bad = (values < 0) | (values >= 1 << f.width)
        if bad.any():
            i = int(np.argmax(bad))
            raise VTAError(f"micro-op #{i} field {f.name} = {int(values[i])} does not fit its "
                           f"{f.width}-bit field (range 0..{(1 << f.width) - 1})")
        words |= values.astype(np.uint64) << np.uint64(f.offset)
    return words.astype(np.uint32)


def decode_uops(words: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """uint32 micro-op words to an (n, 3) int64 array of (dst, src, wgt)."""
    w = np.asarray(words, dtype=np.uint32).astype(np.int64)
    return np.stack([(w >> f.offset) & ((1 << f.width) - 1) for f in layouts(cfg).uop],
                    axis=-1)


def replace(insn: Instruction, **changes) -> Instruction:
    """A copy of ``insn`` with fields changed (used to set dependency flags)."""
    return dataclasses.replace(insn, **changes)
