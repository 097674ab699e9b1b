"""Lowering one offloaded layer to a static VTA program.

A :class:`LayerSpec` is what partitioning hands over: an int8 conv2d (dense is a 1x1 conv
on a 1x1 image) of one sample, then a chain of ALU steps on the int32 accumulator
(bias/residual adds, shifts, clips) whose result is stored as int8 (STORE truncates, as
``astype("int8")`` does). A :class:`TilePlan` says how to cut it: output tiles of
``th`` rows x ``tw`` columns x ``toc`` output-channel blocks, reduced over chunks of ``tic``
input-channel blocks, with 1 or 2 virtual threads.

Schedule (double buffering as the reference runtime's virtual threads): every reduction
*step* loads one padded input chunk and one weight chunk into INP/WGT slot ``step % v``;
every output *tile* accumulates in ACC slot ``tile % v``. Tokens: a load waits for the
compute of step ``step - v`` (compute→load), a tile's first GEMM waits for the store of tile
``tile - v`` (store→compute); compute waits for its load (load→compute), store for the
epilogue (compute→store). A slot that already holds the chunk a step needs is not reloaded
(weights stay resident when they fit).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from hwcompile.errors import VTAError

from .config import VTAConfig
from .layout import pack_bias, pack_conv_weights
from .program import Program, ProgramBuilder

ALU_OPS = ("add", "shr", "max", "min")
IMM_MIN, IMM_MAX = -(1 << 15), (1 << 15) - 1  # ALU immediates are 16-bit signed


@dataclass(frozen=True)
class AluStep:
    """``acc = op(acc, operand)``; the operand is an immediate, a per-channel vector
    (index into ``LayerSpec.vectors``) or a residual tensor (index into ``residuals``)."""

    op: str
    imm: int | None = None
    vector: int | None = None
    tensor: int | None = None

    def key(self) -> str:
        kind = (f"i{self.imm}" if self.imm is not None else
                f"v{self.vector}" if self.vector is not None else f"t{self.tensor}")
        return f"{self.op}:{kind}"


@dataclass(frozen=True)
class Residual:
    """A second int32 tensor of the output's shape, loaded into ACC; ``steps`` (immediates
    only) run on it before it is used (e.g. the left shift aligning a residual's scale)."""

    steps: tuple[AluStep, ...] = ()


@dataclass
class LayerSpec:
    """One sample of ``steps(conv2d(x, weight))`` with x (C, H, W) int8, weight OIHW int8."""

    in_shape: tuple[int, int, int]
    weight: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    steps: list[AluStep] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)  # (O,) int32 each
    residuals: list[Residual] = field(default_factory=list)
    name: str = "layer"

    @property
    def out_shape(self) -> tuple[int, int, int]:
        _, h, w = self.in_shape
        o, _, kh, kw = self.weight.shape
        top, left, bottom, right = self.padding
        return (o, (h + top + bottom - kh) // self.stride[0] + 1,
                (w + left + right - kw) // self.stride[1] + 1)

    @property
    def macs(self) -> int:
        o, oh, ow = self.out_shape
        return o * oh * ow * int(np.prod(self.weight.shape[1:]))

    def key(self) -> str:
        """Workload identity for the tuning database (shapes and the epilogue's form)."""
        c, h, w = self.in_shape
        o, _, kh, kw = self.weight.shape
        steps = ",".join(s.key() for s in self.steps)
        res = ";".join(",".join(s.key() for s in r.steps) for r in self.residuals)
        return (f"conv{c}x{h}x{w}_o{o}_k{kh}x{kw}_s{self.stride[0]}x{self.stride[1]}"
                f"_p{'-'.join(map(str, self.padding))}_v{len(self.vectors)}_r[{res}]_e[{steps}]")


@dataclass(frozen=True)
class TilePlan:
    th: int
    tw: int
    toc: int
    tic: int
    vthreads: int = 2
    order: str = "spatial"  # "spatial": oc tiles innermost; "channel": spatial innermost

    def to_json(self) -> dict:
        return {"th": self.th, "tw": self.tw, "toc": self.toc, "tic": self.tic,
                "vthreads": self.vthreads, "order": self.order}


@dataclass
class Lowered:
    """A layer's program and the DRAM buffers the runtime fills and reads."""

    program: Program
    spec: LayerSpec
    plan: TilePlan


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def blocks(spec: LayerSpec, cfg: VTAConfig) -> tuple[int, int]:
    """(input-channel blocks, output-channel blocks)."""
    return _ceil(spec.in_shape[0], cfg.block_in), _ceil(spec.weight.shape[0], cfg.block_out)


def divisors(n: int) -> list[int]:
    """Divisors of ``n``, largest first."""
    return [d for d in range(n, 0, -1) if n % d == 0]


def _edges(total: int, tile: int) -> set[int]:
    """The distinct sizes tiles of ``tile`` take over ``total``."""
    return {tile, total - (_ceil(total, tile) - 1) * tile}


def check_plan(spec: LayerSpec, plan: TilePlan, cfg: VTAConfig) -> str | None:
    """Why ``plan`` cannot run ``spec`` on ``cfg`` (SRAM depths, ISA fields), or None."""
    icb, ocb = blocks(spec, cfg)
    _, oh, ow = spec.out_shape
    kh, kw = spec.weight.shape[2:]
    sh, sw = spec.stride
    v = plan.vthreads
    if not (1 <= plan.th <= oh and 1 <= plan.tw <= ow and 1 <= plan.toc <= ocb
            and 1 <= plan.tic <= icb and v in (1, 2)):
        return f"tile {plan.to_json()} is outside the layer ({ocb} oc blocks, {oh}x{ow})"
    if max(spec.padding) > 15:
        return f"padding {spec.padding} exceeds the 4-bit pad fields (15)"
    rows_in, cols_in = (plan.th - 1) * sh + kh, (plan.tw - 1) * sw + kw
    n_out = plan.toc * plan.th * plan.tw
    needs = {"INP": (plan.tic * rows_in * cols_in, cfg.inp_depth // v),
             "WGT": (plan.toc * plan.tic * kh * kw, cfg.wgt_depth // v),
             "ACC": (n_out * (1 + len(spec.residuals)) + plan.toc * len(spec.vectors),
                     cfg.acc_depth // v),
             "UOP": (kh * kw * plan.toc * plan.tw, cfg.uop_depth // 4)}
    for name, (need, have) in needs.items():
        if need > have:
            return f"{name} needs {need} elements per thread, has {have}"
    if min(_edges(ocb, plan.toc)) * min(_edges(ow, plan.tw)) < 3:
        return ("fewer than 3 accumulators per GEMM uop sweep (output-channel blocks x tile "
                "columns): consecutive uops would hit the accumulator RAW hazard")
    return None


def default_plan(spec: LayerSpec, cfg: VTAConfig) -> TilePlan:
    """The untuned tiling: 2 threads, whole rows, as many channels and then rows as fit."""
    icb, ocb = blocks(spec, cfg)
    _, oh, ow = spec.out_shape
    for tw in sorted({ow, _ceil(ow, 2), _ceil(ow, 4)}, reverse=True):
        for toc, tic in itertools.product(divisors(ocb), divisors(icb)):
            for th in range(oh, 0, -1):
                plan = TilePlan(th, tw, toc, tic)
                if check_plan(spec, plan, cfg) is None:
                    return plan
    raise VTAError(f"layer '{spec.name}' ({spec.key()}) has no tiling that fits the SRAMs of "
                   f"config {cfg.bitstream}")


def _tiles(spec: LayerSpec, plan: TilePlan, cfg: VTAConfig) -> list[tuple[int, int, int]]:
    _, ocb = blocks(spec, cfg)
    _, oh, ow = spec.out_shape
    ocs = range(0, ocb, plan.toc)
    ys, xs = range(0, oh, plan.th), range(0, ow, plan.tw)
    if plan.order == "spatial":
        return [(oc, y, x) for y in ys for x in xs for oc in ocs]
    return [(oc, y, x) for oc in ocs for y in ys for x in xs]


def lower(spec: LayerSpec, plan: TilePlan, cfg: VTAConfig) -> Lowered:
    """Build the program of ``spec`` tiled by ``plan`` (see the module docstring)."""
    reason = check_plan(spec, plan, cfg)
    if reason:
        raise VTAError(f"layer '{spec.name}': tiling {plan.to_json()} is infeasible: {reason}")
    b = ProgramBuilder(cfg)
    _, h, w = spec.in_shape
    icb, ocb = blocks(spec, cfg)
    _, oh, ow = spec.out_shape
    kh, kw = spec.weight.shape[2:]
    sh, sw = spec.stride
    pt, pl = spec.padding[:2]
    v, bt, blk = plan.vthreads, cfg.batch, cfg.block_out
    inp = b.alloc("input", (1, icb, h, w, bt, cfg.block_in), np.int8)
    wgt = b.buffer("weights", pack_conv_weights(spec.weight, cfg))
    vecs = [b.buffer(f"vector{i}", pack_bias(vec, cfg)) for i, vec in enumerate(spec.vectors)]
    res = [b.alloc(f"residual{i}", (1, ocb, oh, ow, bt, blk), np.int32)
           for i in range(len(spec.residuals))]
    out = b.alloc("output", (1, ocb, oh, ow, bt, blk), np.int8)
    inp_slot, wgt_slot, acc_slot = cfg.inp_depth // v, cfg.wgt_depth // v, cfg.acc_depth // v
    resident_w: list[tuple | None] = [None] * v
    resident_i: list[tuple | None] = [None] * v
    tiles = _tiles(spec, plan, cfg)
    step = 0
    for t, (oc0, y0, x0) in enumerate(tiles):
        ocs, rows, cols = min(plan.toc, ocb - oc0), min(plan.th, oh - y0), min(plan.tw, ow - x0)
        ab = (t % v) * acc_slot
        n_out, plane = ocs * rows * cols, rows * cols
        res_base = [ab + n_out * (1 + k) for k in range(len(res))]
        vec_base = [ab + n_out * (1 + len(res)) + k * ocs for k in range(len(vecs))]
        rows_in, cols_in = (rows - 1) * sh + kh, (cols - 1) * sw + kw
        r0, c0 = y0 * sh - pt, x0 * sw - pl
        top, bottom = max(0, -r0), max(0, r0 + rows_in - h)
        left, right = max(0, -c0), max(0, c0 + cols_in - w)
        if t >= v:
            b.dep_pop("store", "compute")  # ACC slot drained by the store of tile t - v
        b.gemm([(ab, 0, 0)], [(n_out, 1, 0, 0)], reset=True)
        for ic0 in range(0, icb, plan.tic):
            ics, s = min(plan.tic, icb - ic0), step % v
            ib, wb = s * inp_slot, s * wgt_slot
            # load stage
            if step >= v:
                b.dep_pop("compute", "load")
            wkey, ikey = (oc0, ocs, ic0, ics), (y0, x0, rows, cols, ic0, ics)
            if resident_w[s] != wkey:
                b.load("wgt", wgt, wb, x_size=ics * kh * kw, y_size=ocs,
                       x_stride=icb * kh * kw, offset=(oc0 * icb + ic0) * kh * kw)
                resident_w[s] = wkey
            if resident_i[s] != ikey:
                for i in range(ics):
                    b.load("inp", inp, ib + i * rows_in * cols_in, x_size=cols_in - left - right,
                           y_size=rows_in - top - bottom, x_stride=w,
                           offset=((ic0 + i) * h + r0 + top) * w + c0 + left,
                           pad=(top, bottom, left, right))
                resident_i[s] = ikey
            b.dep_push("load", "compute")
            # compute stage: uops over (kh, kw, oc, x) keep 3 consecutive dst distinct;
            # loops over output rows and the chunk's input-channel blocks.
            b.dep_pop("load", "compute")
            uops = [(ab + oc * plane + x, ib + i * cols_in + j + x * sw,
                     wb + oc * ics * kh * kw + i * kw + j)
                    for i in range(kh) for j in range(kw) for oc in range(ocs)
                    for x in range(cols)]
            b.gemm(uops, [(rows, cols, sh * cols_in, 0), (ics, 0, rows_in * cols_in, kh * kw)])
            b.dep_push("compute", "load")
            step += 1
        # epilogue on the ALU
        for k, buf in enumerate(vecs):
            b.load("acc", buf, vec_base[k], x_size=ocs, offset=oc0)
        for k, buf in enumerate(res):
            for oc in range(ocs):
                b.load("acc", buf, res_base[k] + oc * plane, x_size=cols, y_size=rows,
                       x_stride=ow, offset=((oc0 + oc) * oh + y0) * ow + x0)
            for st in spec.residuals[k].steps:
                b.alu(st.op, [(res_base[k], res_base[k])], [(n_out, 1, 1)], imm=st.imm)
        for st in spec.steps:
            if st.vector is not None:
                b.alu(st.op, [(ab + oc * plane, vec_base[st.vector] + oc) for oc in range(ocs)],
                      [(plane, 1, 0)])
            elif st.tensor is not None:
                b.alu(st.op, [(ab, res_base[st.tensor])], [(n_out, 1, 1)])
            else:
                b.alu(st.op, [(ab, ab)], [(n_out, 1, 1)], imm=st.imm)
        b.dep_push("compute", "store")
        # store stage
        b.dep_pop("compute", "store")
        for oc in range(ocs):
            b.store(out, ab + oc * plane, x_size=cols, y_size=rows, x_stride=ow,
                    offset=((oc0 + oc) * oh + y0) * ow + x0)
        b.dep_push("store", "compute")
    # Drain the tokens nobody popped, so FINISH really follows the last store and load.
    for _ in range(min(step, v)):
        b.dep_pop("compute", "load")
    for _ in range(min(len(tiles), v)):
        b.dep_pop("store", "compute")
    return Lowered(b.finish(), spec, plan)
