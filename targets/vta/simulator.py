"""Bit-exact behavioural simulator of the VTA core (load, compute and store modules).

Semantics follow apache/tvm-vta ``hardware/xilinx/src/vta.cc`` and ``src/sim/sim_driver.cc``:
instructions are routed to three in-order modules that synchronise only through four
dependency-token FIFOs. The simulator runs each module as far as its tokens allow, in turn
(as sim_driver does), so an unsynchronised program is reported as a deadlock instead of
hanging. Each GEMM/ALU instruction executes as whole-array numpy work over all
uops x loop iterations.

Two modes: ``"hardware"`` stores the OUT buffer (low 8 bits of the last GEMM/ALU write to
each element, as the FPGA does); ``"reference"`` stores ACC truncated to 8 bits, as the
reference simulator does. They differ only for programs that store an ACC element that no
GEMM/ALU wrote since it was loaded.

Deviation: a GEMM/ALU with ``reset_reg`` writes 0 to OUT as well as ACC (vta.cc writes the
low bits of the un-reset sum); no correct program stores a freshly reset element.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from hwcompile.errors import VTAError

from .config import VTAConfig
from .isa import (
    AluInsn,
    AluOp,
    FinishInsn,
    GemmInsn,
    Instruction,
    MemInsn,
    MemType,
    Opcode,
    Stage,
    decode_uops,
)

Mode = Literal["hardware", "reference"]

# Token queues, named "<pusher>→<popper>".
L2C, C2L, C2S, S2C = "load→compute", "compute→load", "compute→store", "store→compute"

# (stage, flag) -> token queue; combinations missing here are invalid for that stage.
_POPS = {(Stage.LOAD, "pop_next"): C2L, (Stage.COMPUTE, "pop_prev"): L2C,
         (Stage.COMPUTE, "pop_next"): S2C, (Stage.STORE, "pop_prev"): C2S}
_PUSHES = {(Stage.LOAD, "push_next"): L2C, (Stage.COMPUTE, "push_prev"): C2L,
           (Stage.COMPUTE, "push_next"): C2S, (Stage.STORE, "push_prev"): S2C}

# Rows of uop x iteration work per numpy batch in GEMM (bounds temporary memory ~16 MB).
_GEMM_CHUNK = 16384


@dataclass
class Stats:
    """Counters with the reference simulator's names (sim_driver.cc)."""

    inp_load_nbytes: int = 0
    wgt_load_nbytes: int = 0
    acc_load_nbytes: int = 0
    uop_load_nbytes: int = 0
    out_store_nbytes: int = 0
    gemm_counter: int = 0
    alu_counter: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def describe(insn: Instruction, index: int) -> str:
    """``instruction #12 (LOAD INP)`` for error messages."""
    name = Opcode(insn.opcode).name
    if isinstance(insn, MemInsn):
        name += f" {insn.memory_type.name}"
    elif isinstance(insn, AluInsn):
        name += f" {insn.alu_opcode.name}"
    return f"instruction #{index} ({name})"


def token_queues(insn: Instruction, index: int) -> tuple[list[str], list[str]]:
    """(queues popped, queues pushed) by ``insn``; raises for flags its module cannot have."""
    pops, pushes = [], []
    for flag in ("pop_prev", "pop_next", "push_prev", "push_next"):
        if not getattr(insn, flag):
            continue
        table = _POPS if flag.startswith("pop") else _PUSHES
        queue = table.get((insn.stage, flag))
        if queue is None:
            raise VTAError(f"{describe(insn, index)} runs on the {insn.stage.name.lower()} "
                           f"module, which has no {flag.split('_')[1]} stage; clear {flag}")
        (pops if flag.startswith("pop") else pushes).append(queue)
    if isinstance(insn, FinishInsn) and pops:
        raise VTAError(f"{describe(insn, index)} pops {', '.join(pops)}, but FINISH carries no "
                       f"pops; pop on a no-op before it (ProgramBuilder.finish does)")
    return pops, pushes


def validate_stream(insns: list[Instruction]) -> None:
    """Structural checks that do not need data: exactly one FINISH, last."""
    if not insns or not isinstance(insns[-1], FinishInsn):
        raise VTAError("program does not end with FINISH; end it with ProgramBuilder.finish()")
    for i, insn in enumerate(insns[:-1]):
        if isinstance(insn, FinishInsn):
            raise VTAError(f"{describe(insn, i)}: FINISH before the end of the program; "
                           f"only the last instruction may be FINISH")


def wrap32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of an int64 array to int32."""
    return ((x + (1 << 31)) & 0xFFFFFFFF).astype(np.int64) - (1 << 31)


class Simulator:
    """The VTA core with its SRAMs attached to a DRAM byte array (modified in place)."""

    def __init__(self, cfg: VTAConfig, dram: np.ndarray, mode: Mode = "hardware"):
        if mode not in ("hardware", "reference"):
            raise VTAError(f"simulator mode {mode!r} is unknown; use 'hardware' or 'reference'")
        if not isinstance(dram, np.ndarray) or dram.dtype != np.uint8 or dram.ndim != 1:
            raise VTAError("DRAM must be a 1-D numpy uint8 array")
        self.cfg, self.dram, self.mode = cfg, dram, mode
        b, bi, bo = cfg.batch, cfg.block_in, cfg.block_out
        self.inp = np.zeros((cfg.inp_depth, b, bi), np.int8)
        self.wgt = np.zeros((cfg.wgt_depth, bo, bi), np.int8)
        self.acc = np.zeros((cfg.acc_depth, b, bo), np.int32)
        self.out = np.zeros((cfg.out_depth, b, bo), np.int8)
        self.uop = np.zeros((cfg.uop_depth, 3), np.int64)  # decoded (dst, src, wgt)
        self.stats = Stats()
        # float copies for BLAS products; exact while |sum| < 2**24 (BLOCK_IN <= 512)
        self._float = np.float32 if bi * (1 << 14) < (1 << 24) else np.float64
        self._inp_f: np.ndarray | None = None
        self._wgt_f: np.ndarray | None = None

    # --- DRAM views ---------------------------------------------------------------------
    def _dram_view(self, dtype, shape: tuple[int, ...]) -> np.ndarray:
        elem = int(np.prod(shape)) * np.dtype(dtype).itemsize
        n = len(self.dram) // elem
        return self.dram[:n * elem].view(dtype).reshape(n, *shape)

    def _views(self, mt: MemType) -> tuple[np.ndarray, np.ndarray, str]:
        """(DRAM view, SRAM array, stats counter) for a memory type."""
        c = self.cfg
        if mt == MemType.INP:
            return self._dram_view(np.int8, (c.batch, c.block_in)), self.inp, "inp_load_nbytes"
        if mt == MemType.WGT:
            return (self._dram_view(np.int8, (c.block_out, c.block_in)), self.wgt,
                    "wgt_load_nbytes")
        if mt == MemType.ACC:
            return self._dram_view(np.int32, (c.batch, c.block_out)), self.acc, "acc_load_nbytes"
        if mt == MemType.ACC_8BIT:
            return self._dram_view(np.int8, (c.batch, c.block_out)), self.acc, "acc_load_nbytes"
        return self._dram_view(np.int8, (c.batch, c.block_out)), self.out, "out_store_nbytes"

    def _dram_rows(self, insn: MemInsn, view: np.ndarray, where: str) -> np.ndarray:
        """Element indices [y, x] of a 2-D DRAM access, range-checked."""
        idx = (insn.dram_base + np.arange(insn.y_size)[:, None] * insn.x_stride
               + np.arange(insn.x_size)[None, :])
        last = int(idx.max())
        if last >= len(view):
            elem = view.dtype.itemsize * int(np.prod(view.shape[1:]))
            raise VTAError(f"{where}: DRAM element {last} is beyond the end of DRAM "
                           f"({len(view)} elements of {elem} B); check dram_base, "
                           f"y_size, x_stride and the buffer allocation")
        return idx

    # --- modules ---------------------------------------------------------------------
    def _load(self, insn: MemInsn, where: str) -> None:
        if insn.x_size == 0:
            return  # a no-op that only carries dependency flags
        if insn.memory_type == MemType.UOP:
            self._load_uop(insn, where)
            return
        if insn.memory_type == MemType.OUT:
            raise VTAError(f"{where}: LOAD of OUT is not supported; load INP, WGT, ACC, "
                           f"ACC_8BIT or UOP")
        view, sram, counter = self._views(insn.memory_type)
        rows = insn.y_pad_0 + insn.y_size + insn.y_pad_1
        cols = insn.x_pad_0 + insn.x_size + insn.x_pad_1
        end = insn.sram_base + rows * cols
        if end > len(sram):
            raise VTAError(f"{where}: writes SRAM elements {insn.sram_base}..{end - 1} but the "
                           f"{insn.memory_type.name} buffer has {len(sram)}; lower sram_base or "
                           f"the tile size")
        idx = self._dram_rows(insn, view, where)
        block = np.zeros((rows, cols) + sram.shape[1:], sram.dtype)
        block[insn.y_pad_0:insn.y_pad_0 + insn.y_size,
              insn.x_pad_0:insn.x_pad_0 + insn.x_size] = view[idx]  # ACC_8BIT sign-extends
        sram[insn.sram_base:end] = block.reshape((-1,) + sram.shape[1:])
        nbytes = idx.size * view.dtype.itemsize * int(np.prod(view.shape[1:]))
        setattr(self.stats, counter, getattr(self.stats, counter) + nbytes)
        if insn.memory_type == MemType.INP:
            self._inp_f = None
        elif insn.memory_type == MemType.WGT:
            self._wgt_f = None

    def _load_uop(self, insn: MemInsn, where: str) -> None:
        # vta.cc copies x_size uops from dram_base; y and padding do not apply.
        words = self._dram_view(np.uint32, ())
        end, dend = insn.sram_base + insn.x_size, insn.dram_base + insn.x_size
        if end > len(self.uop):
            raise VTAError(f"{where}: writes uop SRAM {insn.sram_base}..{end - 1} but it holds "
                           f"{len(self.uop)} uops")
        if dend > len(words):
            raise VTAError(f"{where}: reads uops {insn.dram_base}..{dend - 1} beyond the end of "
                           f"DRAM ({len(words)} uops)")
        self.uop[insn.sram_base:end] = decode_uops(words[insn.dram_base:dend], self.cfg)
        self.stats.uop_load_nbytes += insn.x_size * self.cfg.uop_elem_bytes

    def _store(self, insn: MemInsn, where: str) -> None:
        if insn.memory_type != MemType.OUT:
            raise VTAError(f"{where}: STORE memory_type must be OUT, got "
                           f"{insn.memory_type.name}")
        if insn.y_pad_0 or insn.y_pad_1 or insn.x_pad_0 or insn.x_pad_1:
            raise VTAError(f"{where}: STORE cannot pad; set every pad field to 0")
        if insn.x_size == 0:
            return
        view, _, _ = self._views(MemType.OUT)
        n = insn.y_size * insn.x_size
        if insn.sram_base + n > self.cfg.out_depth:
            raise VTAError(f"{where}: reads OUT elements {insn.sram_base}.."
                           f"{insn.sram_base + n - 1} but the OUT buffer has "
                           f"{self.cfg.out_depth}")
        idx = self._dram_rows(insn, view, where)
        if self.mode == "hardware":
            src = self.out[insn.sram_base:insn.sram_base + n]
        else:
            src = self.acc[insn.sram_base:insn.sram_base + n].astype(np.int8)  # truncation
        view[idx] = src.reshape(idx.shape + src.shape[1:])
        self.stats.out_store_nbytes += n * self.cfg.out_elem_bytes

    def _indices(self, insn: GemmInsn | AluInsn, where: str) -> dict[str, np.ndarray]:
        """Flattened (iter_out, iter_in, uop) index arrays, in execution order."""
        if not 0 <= insn.uop_bgn <= insn.uop_end <= self.cfg.uop_depth:
            raise VTAError(f"{where}: uop range [{insn.uop_bgn}, {insn.uop_end}) is not inside "
                           f"the uop buffer (0..{self.cfg.uop_depth})")
        u = self.uop[insn.uop_bgn:insn.uop_end]
        i = np.arange(insn.iter_out)[:, None, None]
        j = np.arange(insn.iter_in)[None, :, None]
        out = {"dst": (u[:, 0] + i * insn.dst_factor_out + j * insn.dst_factor_in).ravel(),
               "src": (u[:, 1] + i * insn.src_factor_out + j * insn.src_factor_in).ravel()}
        if isinstance(insn, GemmInsn):
            out["wgt"] = (u[:, 2] + i * insn.wgt_factor_out + j * insn.wgt_factor_in).ravel()
        limits = {"dst": ("ACC", self.cfg.acc_depth),
                  "src": ("INP", self.cfg.inp_depth) if isinstance(insn, GemmInsn)
                  else ("ACC", self.cfg.acc_depth),
                  "wgt": ("WGT", self.cfg.wgt_depth)}
        for key, arr in out.items():
            if key != "dst" and (insn.reset_reg or getattr(insn, "use_imm", False)):
                continue  # reset reads no operands; an immediate replaces the source
            name, depth = limits[key]
            bad = arr >= depth
            if bad.any():
                n = int(np.argmax(bad))
                it, k = divmod(n, len(u))
                raise VTAError(f"{where}: {key} index {int(arr[n])} is outside the {name} "
                               f"buffer (depth {depth}) at uop {insn.uop_bgn + k}, iteration "
                               f"({it // insn.iter_in}, {it % insn.iter_in}); check the "
                               f"uop {key}_idx and {key}_factor fields")
        return out

    def _gemm(self, insn: GemmInsn, where: str) -> None:
        ix = self._indices(insn, where)
        dst = ix["dst"]
        if dst.size == 0:
            return
        if insn.reset_reg:
            self.acc[dst] = 0
            self.out[dst] = 0
            return
        # vta.cc pipelines the accumulator read-modify-write over 2 uops.
        hazard = np.flatnonzero(np.r_[False, dst[1:] == dst[:-1]] |
                                np.r_[False, False, dst[2:] == dst[:-2]])
        if hazard.size:
            n = int(hazard[0])
            raise VTAError(f"{where}: uop execution {n} writes ACC[{int(dst[n])}] which one of "
                           f"the two previous uops also writes (a read-after-write hazard on "
                           f"hardware); reorder the uops so equal dst_idx are >= 3 apart")
        if self._inp_f is None:
            self._inp_f = self.inp.astype(self._float)
        if self._wgt_f is None:
            self._wgt_f = self.wgt.astype(self._float)
        lanes = self.cfg.batch * self.cfg.block_out
        lane = np.arange(lanes)
        sums = np.zeros(self.cfg.acc_depth * lanes)
        src, wgt = ix["src"], ix["wgt"]
        for c0 in range(0, dst.size, _GEMM_CHUNK):
            sl = slice(c0, c0 + _GEMM_CHUNK)
            # (n, batch, in) @ (n, in, out): int8 products summed exactly in float
            prod = np.matmul(self._inp_f[src[sl]], self._wgt_f[wgt[sl]].transpose(0, 2, 1))
            sums += np.bincount((dst[sl, None] * lanes + lane).ravel(),
                                weights=prod.ravel(), minlength=sums.size)
        touched = np.unique(dst)
        total = sums.reshape(self.cfg.acc_depth, -1)[touched].astype(np.int64)
        new = wrap32(self.acc[touched].reshape(len(touched), -1) + total)
        self.acc[touched] = new.reshape(self.acc[touched].shape)
        self.out[touched] = self.acc[touched].astype(np.int8)
        self.stats.gemm_counter += dst.size

    def _alu(self, insn: AluInsn, where: str) -> None:
        ix = self._indices(insn, where)
        dst, src = ix["dst"], ix["src"]
        self.stats.alu_counter += dst.size
        if dst.size == 0:
            return
        if insn.reset_reg:
            self.acc[dst] = 0
            self.out[dst] = 0
            return
        if insn.use_imm:
            operand = np.full((dst.size,) + self.acc.shape[1:], insn.imm, np.int64)
        else:
            # Sequential semantics: a uop may read an ACC element written earlier in this
            # instruction. Detect that; otherwise every read sees the pre-instruction value.
            first_write = np.full(self.cfg.acc_depth, dst.size)
            np.minimum.at(first_write, dst, np.arange(dst.size))
            if (first_write[src] < np.arange(dst.size)).any():
                self._alu_sequential(insn, dst, src)
                return
            operand = self.acc[src].astype(np.int64)
        # Repeated dst (e.g. a pooling reduction) applies in waves of unique indices.
        order = np.argsort(dst, kind="stable")
        sorted_dst = dst[order]
        starts = np.r_[0, np.flatnonzero(sorted_dst[1:] != sorted_dst[:-1]) + 1]
        rank = np.empty(dst.size, np.int64)
        rank[order] = np.arange(dst.size) - np.repeat(starts, np.diff(np.r_[starts, dst.size]))
        if rank.max() == 0:
            self.acc[dst] = _alu_op(insn.alu_opcode, self.acc[dst].astype(np.int64), operand)
        else:
            for r in range(int(rank.max()) + 1):
                sel = rank == r
                d = dst[sel]
                self.acc[d] = _alu_op(insn.alu_opcode, self.acc[d].astype(np.int64),
                                      operand[sel])
        touched = np.unique(dst)
        self.out[touched] = self.acc[touched].astype(np.int8)

    def _alu_sequential(self, insn: AluInsn, dst: np.ndarray, src: np.ndarray) -> None:
        # Rare chained case (a uop reads what an earlier uop wrote): follow program order.
        for d, s in zip(dst.tolist(), src.tolist()):
            self.acc[d] = _alu_op(insn.alu_opcode, self.acc[d].astype(np.int64),
                                  self.acc[s].astype(np.int64))
            self.out[d] = self.acc[d].astype(np.int8)

    def _execute(self, insn: Instruction, index: int) -> None:
        where = describe(insn, index)
        if isinstance(insn, MemInsn):
            if insn.opcode == Opcode.STORE:
                self._store(insn, where)
            else:
                self._load(insn, where)
        elif isinstance(insn, GemmInsn):
            self._gemm(insn, where)
        elif isinstance(insn, AluInsn):
            self._alu(insn, where)

    # --- scheduling ----------------------------------------------------------------------
    def run(self, insns: list[Instruction]) -> Stats:
        """Execute a whole program (ending in FINISH); returns the statistics."""
        validate_stream(insns)
        queues: dict[Stage, list[tuple[int, Instruction]]] = {s: [] for s in Stage}
        flags = []
        for i, insn in enumerate(insns):
            queues[insn.stage].append((i, insn))
            flags.append(token_queues(insn, i))
        tokens = dict.fromkeys((L2C, C2L, C2S, S2C), 0)
        pos = dict.fromkeys(Stage, 0)
        while any(pos[s] < len(queues[s]) for s in Stage):
            progressed = False
            for stage in Stage:  # each module runs until it blocks, as in sim_driver
                q = queues[stage]
                while pos[stage] < len(q):
                    index, insn = q[pos[stage]]
                    pops, pushes = flags[index]
                    if any(tokens[t] == 0 for t in pops):
                        break
                    for t in pops:
                        tokens[t] -= 1
                    self._execute(insn, index)
                    for t in pushes:
                        tokens[t] += 1
                    pos[stage] += 1
                    progressed = True
            if not progressed:
                raise VTAError(deadlock_message(queues, pos, flags, tokens))
        return self.stats


def deadlock_message(queues, pos, flags, tokens) -> str:
    parts = []
    for stage in Stage:
        q = queues[stage]
        name = f"{stage.name.lower()} module"
        if pos[stage] >= len(q):
            parts.append(f"{name} finished")
            continue
        index, insn = q[pos[stage]]
        empty = [t for t in flags[index][0] if tokens[t] == 0]
        parts.append(f"{name} waits at {describe(insn, index)} on the empty {' and '.join(empty)}"
                     f" token queue")
    return ("deadlock: " + "; ".join(parts) + ". No remaining instruction can push the "
            "awaited token; add the matching dependency push (ProgramBuilder.dep_push) or "
            "remove the pop")


def _alu_op(op: AluOp, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One ALU op on int64 copies of int32 lanes; returns int32 results."""
    if op == AluOp.MIN:
        r = np.minimum(a, b)
    elif op == AluOp.MAX:
        r = np.maximum(a, b)
    elif op == AluOp.ADD:
        r = a + b
    elif op == AluOp.SHR:
        # Arithmetic shift right by b; a negative b shifts left by -b (vta.cc). Shifts of
        # 32 or more saturate to the sign (right) or to 0 (left).
        right = a >> np.clip(b, 0, 63)
        left = a << np.clip(-b, 0, 32)
        r = np.where(b >= 0, right, left)
    elif op == AluOp.MUL:
        r = a * b
    else:
        raise VTAError(f"ALU opcode {op!r} is unknown")
    return wrap32(r).astype(np.int32)
