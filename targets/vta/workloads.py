"""Hand-scheduled VTA programs for a blocked GEMM and a 2-D convolution.

They show how a compiler drives :class:`ProgramBuilder` (tiling into SRAM, virtual threads
for double buffering, uop kernels, requantisation with ALU ops) and serve the tests and
``benchmarks/vta_sim.py``. Virtual thread ``t`` owns the ``t``-th slice of the INP, WGT and
ACC buffers; tokens make tile ``k`` wait for tile ``k - vthreads`` to release its slice.

Requantisation follows the VTA operator tests: ``(acc >> shift) + bias``, clipped to
[lo, hi], truncated to int8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwcompile.errors import VTAError

from .config import VTAConfig
from .layout import pack_activations, pack_bias, pack_conv_weights, pack_dense_weights, pack_matrix
from .program import Buffer, Program, ProgramBuilder


@dataclass
class Workload:
    """A built program plus what is needed to read its result."""

    program: Program
    output: Buffer
    macs: int


def _requant(b: ProgramBuilder, base: int, rows: int, cols: int, shift: int, lo: int,
             hi: int) -> None:
    """SHR/MAX/MIN over ACC[base : base + rows*cols] as one 2-loop kernel each."""
    loops = [(rows, cols, cols), (cols, 1, 1)]
    b.alu("shr", [(base, base)], loops, imm=shift)
    b.alu("max", [(base, base)], loops, imm=lo)
    b.alu("min", [(base, base)], loops, imm=hi)


def gemm(cfg: VTAConfig | str, a: np.ndarray, w: np.ndarray, shift: int = 8, lo: int = -128,
         hi: int = 127, vthreads: int = 2) -> Workload:
    """out = clip((a @ w.T) >> shift, lo, hi) as int8; a is (M, K), w is (N, K), int8.
    Output layout (M/B, N/16, B, 16)."""
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise VTAError(f"gemm workload: a {a.shape} and w {w.shape} must be (M, K) and (N, K)")
    b = ProgramBuilder(cfg)
    c = b.cfg
    pa, pw = pack_matrix(a, c), pack_dense_weights(w, c)
    mb, kb = pa.shape[:2]
    nb = pw.shape[0]
    inp, wgt = b.buffer("a", pa), b.buffer("w", pw)
    out = b.alloc("out", (mb, nb, c.batch, c.block_out), np.int8)
    # Tile: all of N and K per tile (weights stay resident), as many M rows as fit.
    inp_half, wgt_half, acc_half = (c.inp_depth // vthreads, c.wgt_depth // vthreads,
                                    c.acc_depth // vthreads)
    if nb * kb > wgt_half:
        raise VTAError(f"gemm workload: weights ({nb * kb} elements) exceed the WGT slice "
                       f"({wgt_half}); use fewer virtual threads or a smaller N*K")
    tm = min(mb, inp_half // kb, acc_half // nb)
    if tm < 1 or nb < 3:
        raise VTAError("gemm workload: K too large for INP or N < 48 (uop hazard)")
    wgt_loaded = [False] * vthreads
    for tile, m0 in enumerate(range(0, mb, tm)):
        t, rows = tile % vthreads, min(tm, mb - m0)
        ib, wb, ab = t * inp_half, t * wgt_half, t * acc_half
        # load stage
        if tile >= vthreads:
            b.dep_pop("compute", "load")
        if not wgt_loaded[t]:
            b.load("wgt", wgt, wb, x_size=nb * kb)
            wgt_loaded[t] = True
        b.load("inp", inp, ib, x_size=rows * kb, offset=m0 * kb)
        b.dep_push("load", "compute")
        # compute stage
        b.dep_pop("load", "compute")
        if tile >= vthreads:
            b.dep_pop("store", "compute")
        b.gemm([(ab, 0, 0)], [(rows * nb, 1, 0, 0)], reset=True)
        # uops over output blocks n; loops over M rows and the K reduction
        b.gemm([(ab + n, ib, wb + n * kb) for n in range(nb)],
               [(rows, nb, kb, 0), (kb, 0, 1, 1)])
        b.dep_push("compute", "load")
        _requant(b, ab, rows, nb, shift, lo, hi)
        b.dep_push("compute", "store")
        # store stage
        b.dep_pop("compute", "store")
        b.store(out, ab, x_size=rows * nb, offset=m0 * nb)
        b.dep_push("store", "compute")
    m, k = a.shape
    return Workload(b.finish(), out, m * k * w.shape[0])


def conv2d(cfg: VTAConfig | str, x: np.ndarray, w: np.ndarray, bias: np.ndarray,
           stride: int = 1, pad: int = 1, shift: int = 8, lo: int = 0, hi: int = 127,
           vthreads: int = 2) -> Workload:
    """out = clip((conv2d(x, w) >> shift) + bias, lo, hi) as int8.

    x: NCHW int8, w: OIHW int8, bias: (O,) int32. Output layout (N/B, O/16, OH, OW, B, 16).
    Tiles over output rows; all input/output channels and all weights stay in SRAM.
    """
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1] or bias.shape != w.shape[:1]:
        raise VTAError(f"conv2d workload: x {x.shape}, w {w.shape}, bias {bias.shape} must be "
                       f"NCHW, OIHW with matching C, and (O,)")
    b = ProgramBuilder(cfg)
    c = b.cfg
    px, pw, pb = pack_activations(x, c), pack_conv_weights(w, c), pack_bias(bias, c)
    nbat, icb, h, wd = px.shape[:4]
    ocb, _, kh, kw = pw.shape[:4]
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    cols = wd + 2 * pad
    inp, wgt, bia = b.buffer("x", px), b.buffer("w", pw), b.buffer("bias", pb)
    out = b.alloc("out", (nbat, ocb, oh, ow, c.batch, c.block_out), np.int8)
    inp_half, wgt_half, acc_half = (c.inp_depth // vthreads, c.wgt_depth // vthreads,
                                    c.acc_depth // vthreads)
    nw = ocb * icb * kh * kw
    # Largest row tile whose padded input rows and accumulators fit one thread's slice.
    th = 0
    for rows in range(1, oh + 1):
        rows_in = (rows - 1) * stride + kh
        if rows_in * cols * icb <= inp_half and rows * ow * ocb + ocb <= acc_half:
            th = rows
    if th == 0 or nw > wgt_half or ow < 3 or pad > 15:
        raise VTAError(f"conv2d workload: layer does not fit one SRAM slice (weights {nw} of "
                       f"{wgt_half}, row of {cols * icb * kh} INP elements) or has OW < 3 / "
                       f"pad > 15; tile channels in the compiler")
    loaded = [False] * vthreads
    tile = 0
    for n in range(nbat):
        for y0 in range(0, oh, th):
            t, rows = tile % vthreads, min(th, oh - y0)
            ib, wb, ab = t * inp_half, t * wgt_half, t * acc_half
            bias_base = ab + rows * ow * ocb
            rows_in = (rows - 1) * stride + kh
            # load stage: padded input rows of every input-channel block
            if tile >= vthreads:
                b.dep_pop("compute", "load")
            if not loaded[t]:
                b.load("wgt", wgt, wb, x_size=nw)
                loaded[t] = True
            r0 = y0 * stride - pad
            top, bottom = max(0, -r0), max(0, r0 + rows_in - h)
            for ic in range(icb):
                b.load("inp", inp, ib + ic * rows_in * cols, x_size=wd,
                       y_size=rows_in - top - bottom, x_stride=wd,
                       offset=((n * icb + ic) * h + r0 + top) * wd,
                       pad=(top, bottom, pad, cols - wd - pad))
            b.dep_push("load", "compute")
            # compute stage
            b.dep_pop("load", "compute")
            if tile >= vthreads:
                b.dep_pop("store", "compute")
            b.load("acc", bia, bias_base, x_size=ocb)
            b.gemm([(ab, 0, 0)], [(ocb * rows, ow, 0, 0), (ow, 1, 0, 0)], reset=True)
            for oc in range(ocb):
                # uops over (kh, kw, x) keep consecutive dst distinct (no RAW hazard);
                # loops over output rows and input-channel blocks.
                uops = [(ab + oc * rows * ow + xx, ib + i * cols + j + xx * stride,
                         wb + (oc * icb * kh + i) * kw + j)
                        for i in range(kh) for j in range(kw) for xx in range(ow)]
                b.gemm(uops, [(rows, ow, stride * cols, 0),
                              (icb, 0, rows_in * cols, kh * kw)])
            b.dep_push("compute", "load")
            loops = [(ocb * rows, ow, ow), (ow, 1, 1)]
            b.alu("shr", [(ab, ab)], loops, imm=shift)
            b.alu("add", [(ab + oc * rows * ow, bias_base + oc) for oc in range(ocb)],
                  [(rows, ow, 0), (ow, 1, 0)])
            b.alu("max", [(ab, ab)], loops, imm=lo)
            b.alu("min", [(ab, ab)], loops, imm=hi)
            b.dep_push("compute", "store")
            # store stage: one 2-D store per output-channel block
            b.dep_pop("compute", "store")
            for oc in range(ocb):
                b.store(out, ab + oc * rows * ow, x_size=rows * ow,
                        offset=((n * ocb + oc) * oh + y0) * ow)
            b.dep_push("store", "compute")
            tile += 1
    macs = x.shape[0] * w.shape[0] * w.shape[1] * kh * kw * oh * ow
    return Workload(b.finish(), out, macs)
