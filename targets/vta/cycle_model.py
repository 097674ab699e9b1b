"""Analytical cycle model of a VTA program: per-module timelines joined by the tokens.

Assumptions (all overheads are :class:`CycleParams` fields, so they can be calibrated
against a board):

* The load, compute and store modules each execute their own instructions in order, one
  at a time. An instruction starts when its module is free and every token it pops is
  available; the tokens it pushes become available when it ends. Token FIFOs are unbounded
  and instruction fetch is free (the fetch module runs ahead).
* GEMM issues one uop per cycle (II = 1), reset GEMMs included; ALU has II = 2. Each adds
  ``pipeline_depth`` cycles of fill/drain and ``insn_overhead`` cycles of decode.
* DMA (LOAD/STORE, and the compute module's UOP/ACC loads) moves ``AXI_WIDTH`` bits per
  cycle at the board clock, per 2-D row: ``ceil(row bytes / AXI bytes)`` beats plus
  ``dma_row_overhead``; each instruction pays ``dma_latency`` once. Padding is written into
  SRAM at one element per cycle. Every module has its own AXI master, so module DMAs do not
  contend for DRAM bandwidth (optimistic when the board shares one memory port).
* The core runs at the board clock (``CLOCK_MHZ``); latency = total cycles / clock.

GEMM utilization is useful GEMM cycles (non-reset uops, the simulator's ``gemm_counter``)
over total cycles: 1.0 means the GEMM core did a 256-MAC product every cycle.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from hwcompile.errors import VTAError

from .config import VTAConfig
from .isa import AluInsn, GemmInsn, Instruction, MemInsn, MemType, Stage
from .simulator import C2L, C2S, L2C, S2C, deadlock_message, token_queues, validate_stream


@dataclass(frozen=True)
class CycleParams:
    insn_overhead: int = 4
    pipeline_depth: int = 6
    gemm_ii: int = 1
    alu_ii: int = 2
    dma_latency: int = 40
    dma_row_overhead: int = 2


@dataclass
class CycleReport:
    total_cycles: int
    busy_cycles: dict[str, int]  # per module
    gemm_cycles: int  # useful (non-reset) GEMM uop cycles
    clock_mhz: float
    timeline: list[tuple[int, str, int, int]] = field(repr=False, default_factory=list)
    """(instruction index, module, start cycle, end cycle)."""

    @property
    def gemm_utilization(self) -> float:
        return self.gemm_cycles / self.total_cycles if self.total_cycles else 0.0

    @property
    def latency_s(self) -> float:
        return self.total_cycles / (self.clock_mhz * 1e6)

    def summary(self) -> str:
        busy = ", ".join(f"{k} {v} ({v / max(self.total_cycles, 1):.0%})"
                         for k, v in self.busy_cycles.items())
        return (f"{self.total_cycles} cycles = {self.latency_s * 1e3:.3f} ms at "
                f"{self.clock_mhz:g} MHz; busy: {busy}; GEMM utilization "
                f"{self.gemm_utilization:.1%}")


def insn_cycles(insn: Instruction, cfg: VTAConfig, p: CycleParams) -> int:
    """Duration of one instruction on its module."""
    if isinstance(insn, MemInsn):
        if insn.x_size == 0:
            return p.insn_overhead
        if insn.memory_type == MemType.UOP:
            rows, row_bytes, pad = 1, insn.x_size * cfg.uop_elem_bytes, 0
        else:
            elem = {MemType.INP: cfg.inp_elem_bytes, MemType.WGT: cfg.wgt_elem_bytes,
                    MemType.ACC: cfg.acc_elem_bytes}.get(insn.memory_type, cfg.out_elem_bytes)
            rows, row_bytes = insn.y_size, insn.x_size * elem
            rect = ((insn.y_pad_0 + insn.y_size + insn.y_pad_1)
                    * (insn.x_pad_0 + insn.x_size + insn.x_pad_1))
            pad = rect - insn.y_size * insn.x_size
        beats = math.ceil(row_bytes / cfg.axi_bytes)
        return (p.insn_overhead + p.dma_latency + rows * (beats + p.dma_row_overhead) + pad)
    if isinstance(insn, (GemmInsn, AluInsn)):
        n = insn.iter_out * insn.iter_in * (insn.uop_end - insn.uop_bgn)
        ii = p.gemm_ii if isinstance(insn, GemmInsn) else p.alu_ii
        return p.insn_overhead + p.pipeline_depth + n * ii
    return p.insn_overhead  # FINISH


def estimate(insns: list[Instruction], cfg: VTAConfig,
             params: CycleParams | None = None) -> CycleReport:
    """Schedule ``insns`` on the three modules and report cycles and utilization."""
    p = params or CycleParams()
    validate_stream(insns)
    queues: dict[Stage, list[tuple[int, Instruction]]] = {s: [] for s in Stage}
    flags = []
    for i, insn in enumerate(insns):
        queues[insn.stage].append((i, insn))
        flags.append(token_queues(insn, i))
    tokens: dict[str, deque[int]] = {q: deque() for q in (L2C, C2L, C2S, S2C)}
    free = dict.fromkeys(Stage, 0)
    busy = dict.fromkeys(Stage, 0)
    pos = dict.fromkeys(Stage, 0)
    gemm_cycles = 0
    timeline = []
    while any(pos[s] < len(queues[s]) for s in Stage):
        progressed = False
        for stage in Stage:
            q = queues[stage]
            while pos[stage] < len(q):
                index, insn = q[pos[stage]]
                pops, pushes = flags[index]
                if any(not tokens[t] for t in pops):
                    break
                start = max([free[stage]] + [tokens[t].popleft() for t in pops])
                dur = insn_cycles(insn, cfg, p)
                end = start + dur
                for t in pushes:
                    tokens[t].append(end)
                free[stage], pos[stage] = end, pos[stage] + 1
                busy[stage] += dur
                timeline.append((index, stage.name.lower(), start, end))
                if isinstance(insn, GemmInsn) and not insn.reset_reg:
                    gemm_cycles += insn.iter_out * insn.iter_in * (insn.uop_end - insn.uop_bgn)
                progressed = True
        if not progressed:
            counts = {t: len(v) for t, v in tokens.items()}
            raise VTAError(deadlock_message(queues, pos, flags, counts))
    return CycleReport(total_cycles=max(free.values()),
                       busy_cycles={s.name.lower(): busy[s] for s in Stage},
                       gemm_cycles=gemm_cycles, clock_mhz=cfg.clock_mhz,
                       timeline=timeline)
