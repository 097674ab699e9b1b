"""Disassembler: one VTA instruction per line, fields named as in hw_spec.h."""

from __future__ import annotations

from .config import VTAConfig
from .isa import AluInsn, FinishInsn, GemmInsn, Instruction, MemInsn, decode_program


def _deps(insn: Instruction) -> str:
    flags = [f for f in ("pop_prev", "pop_next", "push_prev", "push_next") if getattr(insn, f)]
    return f"  deps: {' '.join(flags)}" if flags else ""


def format_insn(insn: Instruction) -> str:
    """One instruction as text, e.g. ``LOAD INP sram=0x0000 dram=0x00000010 y=4 ...``."""
    if isinstance(insn, MemInsn):
        pads = f"pad=({insn.y_pad_0},{insn.y_pad_1},{insn.x_pad_0},{insn.x_pad_1})"
        body = (f"{insn.opcode.name:<6} {insn.memory_type.name:<8} sram=0x{insn.sram_base:04x} "
                f"dram=0x{insn.dram_base:08x} y={insn.y_size} x={insn.x_size} "
                f"stride={insn.x_stride} {pads}")
    elif isinstance(insn, (GemmInsn, AluInsn)):
        loops = (f"uop=[{insn.uop_bgn},{insn.uop_end}) iter=({insn.iter_out},{insn.iter_in}) "
                 f"dst=({insn.dst_factor_out},{insn.dst_factor_in}) "
                 f"src=({insn.src_factor_out},{insn.src_factor_in})")
        reset = " reset" if insn.reset_reg else ""
        if isinstance(insn, GemmInsn):
            body = (f"GEMM{reset:<11} {loops} "
                    f"wgt=({insn.wgt_factor_out},{insn.wgt_factor_in})")
        else:
            operand = f"imm={insn.imm}" if insn.use_imm else "src=tensor"
            body = f"ALU    {insn.alu_opcode.name:<8}{reset} {loops} {operand}"
    elif isinstance(insn, FinishInsn):
        body = "FINISH"
    else:
        body = repr(insn)
    return body + _deps(insn)


def disassemble(data: bytes, cfg: VTAConfig) -> str:
    """A listing of an encoded program: ``index  instruction`` per line."""
    return "\n".join(f"{i:05d}  {format_insn(insn)}"
                     for i, insn in enumerate(decode_program(data, cfg)))
