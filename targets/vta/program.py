"""Program builder: the runtime-level API a compiler uses to write VTA programs.

Mirrors the reference runtime (apache/tvm-vta ``src/runtime/runtime.cc``): DRAM buffers,
2-D loads/stores with padding, micro-kernels (a uop list plus at most two loops) cached in
a uop ring buffer with a ``LOAD UOP`` before first use, dependency push/pop that set flags
on the adjacent instruction or insert no-ops, and the synchronise sequence ending in FINISH.
The result is a :class:`Program`: instruction stream, uop blob and initial DRAM image.

Example::

    b = ProgramBuilder("sim")
    x = b.buffer("x", packed_int32)               # DRAM buffer from an array
    y = b.alloc("y", (n, 1, 16), np.int8)
    b.load("acc", x, sram_base=0, x_size=n)
    b.alu("shr", [(0, 0)], loops=[(n, 1, 1)], imm=0)
    b.store(y, sram_base=0, x_size=n)
    result = b.finish().run()
    result.read(y)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hwcompile.errors import VTAError

from .config import VTAConfig, load_config
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
    Uop,
    encode_insn,
    encode_program,
    encode_uops,
    replace,
)
from .simulator import Mode, Simulator, Stats

# Loop spec: (extent, dst_factor, src_factor[, wgt_factor]).
Loop = Sequence[int]
# Uop spec: Uop or (dst, src[, wgt]).
UopSpec = Uop | Sequence[int]


@dataclass(frozen=True)
class Buffer:
    """A region of DRAM; ``shape``/``dtype`` say how :meth:`SimResult.read` views it."""

    name: str
    offset: int  # bytes
    nbytes: int
    shape: tuple[int, ...]
    dtype: np.dtype

    def elem(self, elem_bytes: int) -> int:
        """Start of the buffer in elements of ``elem_bytes`` (what instructions address)."""
        return self.offset // elem_bytes


@dataclass
class SimResult:
    dram: np.ndarray
    stats: Stats

    def read(self, buf: Buffer) -> np.ndarray:
        """A copy of ``buf`` after the run, with its shape and dtype."""
        raw = self.dram[buf.offset:buf.offset + buf.nbytes]
        return raw.view(buf.dtype).reshape(buf.shape).copy()


@dataclass
class Program:
    """A finished VTA program: everything the simulator (or a board runtime) needs."""

    config: VTAConfig
    instructions: list[Instruction]
    dram: np.ndarray  # initial DRAM image, uop blob included
    buffers: dict[str, Buffer] = field(default_factory=dict)
    uop_buffer: Buffer | None = None

    def insn_bytes(self) -> bytes:
        """The instruction stream as the hardware reads it (16 B per instruction)."""
        return encode_program(self.instructions, self.config)

    @property
    def uop_blob(self) -> bytes:
        if self.uop_buffer is None:
            return b""
        return self.dram[self.uop_buffer.offset:
                         self.uop_buffer.offset + self.uop_buffer.nbytes].tobytes()

    def run(self, mode: Mode = "hardware") -> SimResult:
        """Simulate on a copy of the DRAM image."""
        dram = self.dram.copy()
        stats = Simulator(self.config, dram, mode).run(self.instructions)
        return SimResult(dram, stats)


_STAGE_NAMES = {"load": Stage.LOAD, "compute": Stage.COMPUTE, "store": Stage.STORE}
_MEM_NAMES = {m.name.lower(): m for m in MemType}
_ALU_NAMES = {a.name.lower(): a for a in AluOp}


def _stage(s: Stage | str) -> Stage:
    if isinstance(s, Stage):
        return s
    if s not in _STAGE_NAMES:
        raise VTAError(f"pipeline stage {s!r} is unknown; use load, compute or store")
    return _STAGE_NAMES[s]


class ProgramBuilder:
    """Builds one VTA program; see the module docstring for an example."""

    def __init__(self, config: VTAConfig | str = "sim"):
        self.cfg = config if isinstance(config, VTAConfig) else load_config(config)
        self.insns: list[Instruction] = []
        self.buffers: dict[str, Buffer] = {}
        self._data: list[tuple[Buffer, bytes]] = []
        self._dram_end = 0
        # Every DRAM address must be a whole element of every memory type.
        self._align = max(self.cfg.inp_elem_bytes, self.cfg.wgt_elem_bytes,
                          self.cfg.acc_elem_bytes, self.cfg.out_elem_bytes,
                          self.cfg.uop_elem_bytes)
        self._pending_pop = {s: {"pop_prev": False, "pop_next": False} for s in Stage}
        # uop ring cache: kernel key -> (sram offset, length); blob offsets in uops
        self._blob: list[np.ndarray] = []
        self._blob_offset: dict[tuple, int] = {}
        self._blob_len = 0
        self._resident: dict[tuple, int] = {}
        self._ring = 0
        self._uop_loads: list[tuple[int, int]] = []  # (insn index, blob offset) to relocate
        self._finished = False

    # --- DRAM buffers ------------------------------------------------------------------
    def alloc(self, name: str, shape: tuple[int, ...] | int, dtype=np.int8) -> Buffer:
        """Reserve a zero-filled DRAM buffer, aligned to every element size."""
        if name in self.buffers:
            raise VTAError(f"DRAM buffer {name!r} already exists; choose another name")
        shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        offset = -(-self._dram_end // self._align) * self._align
        buf = Buffer(name, offset, nbytes, shape, dtype)
        self._dram_end = offset + nbytes
        self.buffers[name] = buf
        return buf

    def buffer(self, name: str, data: np.ndarray) -> Buffer:
        """A DRAM buffer initialised with ``data`` (any shape; bytes in C order)."""
        data = np.ascontiguousarray(data)
        buf = self.alloc(name, data.shape, data.dtype)
        self._data.append((buf, data.tobytes()))
        return buf

    # --- instructions -------------------------------------------------------------------
    def _emit(self, insn: Instruction) -> int:
        if self._finished:
            raise VTAError("the program is finished; start a new ProgramBuilder")
        pending = self._pending_pop[insn.stage]
        if pending["pop_prev"] or pending["pop_next"]:
            insn = replace(insn, **pending)
            pending.update(pop_prev=False, pop_next=False)
        encode_insn(insn, self.cfg)  # range-check every field now, at the faulty call
        self.insns.append(insn)
        return len(self.insns) - 1

    def _elem_bytes(self, mem: MemType) -> int:
        c = self.cfg
        return {MemType.INP: c.inp_elem_bytes, MemType.WGT: c.wgt_elem_bytes,
                MemType.ACC: c.acc_elem_bytes, MemType.ACC_8BIT: c.out_elem_bytes,
                MemType.OUT: c.out_elem_bytes, MemType.UOP: c.uop_elem_bytes}[mem]

    def load(self, mem: MemType | str, buf: Buffer, sram_base: int, x_size: int,
             y_size: int = 1, x_stride: int | None = None, offset: int = 0,
             pad: tuple[int, int, int, int] = (0, 0, 0, 0)) -> None:
        """2-D load of ``y_size`` rows x ``x_size`` elements from ``buf`` (starting ``offset``
        elements in, rows ``x_stride`` apart) into SRAM at ``sram_base``, zero-padded by
        ``pad`` = (top, bottom, left, right)."""
        mem = _MEM_NAMES.get(mem, mem) if isinstance(mem, str) else mem
        if mem not in (MemType.INP, MemType.WGT, MemType.ACC, MemType.ACC_8BIT):
            raise VTAError(f"load memory type {mem!r} is invalid; use inp, wgt, acc or "
                           f"acc_8bit (uops are loaded by the kernel cache)")
        self._check_in_buffer(buf, mem, offset, y_size, x_size, x_stride)
        top, bottom, left, right = pad
        self._emit(MemInsn(opcode=Opcode.LOAD, memory_type=mem, sram_base=sram_base,
                           dram_base=buf.elem(self._elem_bytes(mem)) + offset, y_size=y_size,
                           x_size=x_size, x_stride=x_size if x_stride is None else x_stride,
                           y_pad_0=top, y_pad_1=bottom, x_pad_0=left, x_pad_1=right))

    def store(self, buf: Buffer, sram_base: int, x_size: int, y_size: int = 1,
              x_stride: int | None = None, offset: int = 0) -> None:
        """2-D store of OUT elements ``sram_base + y*x_size + x`` to
        ``buf[offset + y*x_stride + x]``."""
        self._check_in_buffer(buf, MemType.OUT, offset, y_size, x_size, x_stride)
        self._emit(MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, sram_base=sram_base,
                           dram_base=buf.elem(self.cfg.out_elem_bytes) + offset,
                           y_size=y_size, x_size=x_size,
                           x_stride=x_size if x_stride is None else x_stride))

    def _check_in_buffer(self, buf: Buffer, mem: MemType, offset: int, y_size: int,
                         x_size: int, x_stride: int | None) -> None:
        if x_size == 0 or y_size == 0:
            return
        elem = self._elem_bytes(mem)
        last = offset + (y_size - 1) * (x_size if x_stride is None else x_stride) + x_size
        if offset < 0 or last * elem > buf.nbytes:
            raise VTAError(f"{mem.name} access of elements {offset}..{last - 1} overruns DRAM "
                           f"buffer {buf.name!r} ({buf.nbytes // elem} elements of {elem} B)")

    # --- micro-kernels -----------------------------------------------------------------
    def gemm(self, uops: Iterable[UopSpec], loops: Sequence[Loop] = (),
             reset: bool = False) -> None:
        """GEMM micro-kernel: uops (dst ACC, src INP, wgt WGT) inside <= 2 loops of
        (extent, dst_factor, src_factor, wgt_factor); loop 0 is iter_out."""
        fields, f = self._loop_fields(uops, loops, reset, gemm=True)
        self._emit(GemmInsn(**fields, wgt_factor_out=f[0][2], wgt_factor_in=f[1][2]))

    def alu(self, op: AluOp | str, uops: Iterable[UopSpec], loops: Sequence[Loop] = (),
            imm: int | None = None, reset: bool = False) -> None:
        """ALU micro-kernel: ACC[dst] = op(ACC[dst], imm if given else ACC[src]).
        With one loop it becomes iter_in (as the runtime does)."""
        op = _ALU_NAMES.get(op, op) if isinstance(op, str) else op
        if not isinstance(op, AluOp):
            raise VTAError(f"ALU op {op!r} is unknown; use one of {', '.join(_ALU_NAMES)}")
        fields, _ = self._loop_fields(uops, loops, reset, gemm=False)
        self._emit(AluInsn(**fields, alu_opcode=op, use_imm=imm is not None,
                           imm=0 if imm is None else imm))

    def _loop_fields(self, uops: Iterable[UopSpec], loops: Sequence[Loop], reset: bool,
                     gemm: bool) -> tuple[dict, list]:
        """Fields GEMM and ALU share (uop range in the cache, loops, dst/src factors), and
        the per-loop factor tuples."""
        kernel = self._uop_array(uops)
        (io, ii), f = self._loops(loops, gemm=gemm)
        bgn = self._cached(kernel)
        return {"reset_reg": reset, "uop_bgn": bgn, "uop_end": bgn + len(kernel),
                "iter_out": io, "iter_in": ii, "dst_factor_out": f[0][0],
                "dst_factor_in": f[1][0], "src_factor_out": f[0][1],
                "src_factor_in": f[1][1]}, f

    @staticmethod
    def _uop_array(uops: Iterable[UopSpec]) -> np.ndarray:
        rows = [(u.dst_idx, u.src_idx, u.wgt_idx) if isinstance(u, Uop)
                else (tuple(u) + (0,))[:3] for u in uops]
        if not rows:
            raise VTAError("a micro-kernel needs at least one uop")
        return np.asarray(rows, dtype=np.int64)

    @staticmethod
    def _loops(loops: Sequence[Loop], gemm: bool) -> tuple[tuple[int, int], list[tuple]]:
        if len(loops) > 2:
            raise VTAError(f"a micro-kernel has at most 2 loops, got {len(loops)}; split it "
                           f"into several kernels")
        spec = [tuple(loop) + (0,) * (4 - len(loop)) for loop in loops]
        for s in spec:
            if len(s) != 4 or s[0] < 1:
                raise VTAError(f"loop {s} must be (extent >= 1, dst_factor, src_factor"
                               f"[, wgt_factor])")
        if not gemm and len(spec) == 1:
            spec.insert(0, (1, 0, 0, 0))  # ALU: a single loop is the inner one
        while len(spec) < 2:
            spec.append((1, 0, 0, 0))
        return (spec[0][0], spec[1][0]), [s[1:] for s in spec]

    def _cached(self, kernel: np.ndarray) -> int:
        """uop SRAM offset of ``kernel``, emitting LOAD UOP if it is not resident."""
        key = tuple(kernel.ravel().tolist())
        if key in self._resident:
            return self._resident[key]
        n = len(kernel)
        if n > self.cfg.uop_depth:
            raise VTAError(f"micro-kernel of {n} uops exceeds the uop buffer "
                           f"({self.cfg.uop_depth}); split it")
        if key not in self._blob_offset:
            encode_uops(kernel, self.cfg)  # range-check the indices
            self._blob_offset[key] = self._blob_len
            self._blob.append(kernel)
            self._blob_len += n
        if self._ring + n > self.cfg.uop_depth:
            self._ring = 0  # wrap the ring
        lo, hi = self._ring, self._ring + n
        self._resident = {k: off for k, off in self._resident.items()
                          if off + len(k) // 3 <= lo or off >= hi}
        idx = self._emit(MemInsn(opcode=Opcode.LOAD, memory_type=MemType.UOP, sram_base=lo,
                                 dram_base=0, y_size=1, x_size=n, x_stride=n))
        self._uop_loads.append((idx, self._blob_offset[key]))
        self._resident[key] = lo
        self._ring = hi
        return lo

    # --- dependencies --------------------------------------------------------------------
    def dep_pop(self, src: Stage | str, dst: Stage | str) -> None:
        """The next instruction of stage ``dst`` waits for a token from ``src``."""
        src, dst = _stage(src), _stage(dst)
        if abs(src - dst) != 1:
            raise VTAError(f"no token queue from {src.name.lower()} to {dst.name.lower()}; "
                           f"tokens flow only between neighbouring stages")
        flag = "pop_prev" if src < dst else "pop_next"
        if self._pending_pop[dst][flag]:
            self._commit_pending_pop(dst)
        self._pending_pop[dst][flag] = True

    def dep_push(self, src: Stage | str, dst: Stage | str) -> None:
        """Stage ``src`` signals ``dst`` after its latest instruction (no-op if needed)."""
        src, dst = _stage(src), _stage(dst)
        if abs(src - dst) != 1:
            raise VTAError(f"no token queue from {src.name.lower()} to {dst.name.lower()}; "
                           f"tokens flow only between neighbouring stages")
        self._commit_pending_pop(src)
        flag = "push_next" if src < dst else "push_prev"
        if self.insns and self.insns[-1].stage == src and not getattr(self.insns[-1], flag):
            self.insns[-1] = replace(self.insns[-1], **{flag: True})
            return
        self._emit(replace(self._noop(src), **{flag: True}))

    def _commit_pending_pop(self, stage: Stage) -> None:
        if any(self._pending_pop[stage].values()):
            self._emit(self._noop(stage))  # _emit attaches the pending pops

    @staticmethod
    def _noop(stage: Stage) -> MemInsn:
        # The runtime's PushNoop: a zero-size memory instruction routed to ``stage``.
        if stage == Stage.STORE:
            return MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT)
        mem = MemType.INP if stage == Stage.LOAD else MemType.UOP
        return MemInsn(opcode=Opcode.LOAD, memory_type=mem)

    # --- finish --------------------------------------------------------------------------
    def finish(self) -> Program:
        """Synchronise like VTASynchronize (every stage drains into compute), end with
        FINISH, and lay out the uop blob and DRAM image."""
        self.dep_push(Stage.STORE, Stage.COMPUTE)
        self.dep_push(Stage.LOAD, Stage.COMPUTE)
        self.dep_pop(Stage.STORE, Stage.COMPUTE)
        self.dep_pop(Stage.LOAD, Stage.COMPUTE)
        self._commit_pending_pop(Stage.COMPUTE)  # FINISH itself carries no pops
        self._emit(FinishInsn())
        self._finished = True
        uop_buf = None
        if self._blob:
            blob = encode_uops(np.concatenate(self._blob), self.cfg)
            uop_buf = self.alloc("__uops__", blob.shape, np.uint32)
            self._data.append((uop_buf, blob.tobytes()))
            base = uop_buf.elem(self.cfg.uop_elem_bytes)
            for idx, off in self._uop_loads:
                self.insns[idx] = replace(self.insns[idx], dram_base=base + off)
                encode_insn(self.insns[idx], self.cfg)
        dram = np.zeros(-(-self._dram_end // self._align) * self._align, np.uint8)
        for buf, data in self._data:
            dram[buf.offset:buf.offset + len(data)] = np.frombuffer(data, np.uint8)
        buffers = {k: v for k, v in self.buffers.items() if v is not uop_buf}
        return Program(self.cfg, list(self.insns), dram, buffers, uop_buf)
