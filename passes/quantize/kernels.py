"""Reductions the calibration and report probes compute inside the compiled model.

Calibration needs a few numbers per tensor, not the tensor: returning whole tensors from a
probe costs a copy of every activation of every sample. These kernels reduce a tensor where
the model computes it, so only small arrays leave the VM:

- ``channel_stats``: per index of axis 1, min, max, sum, sum of squares and count (float64);
- ``histogram``: bin counts over fixed edges, bin for bin what ``np.histogram`` counts
  (the same index guess, corrected against the same float64 edges);
- ``error_sums``: Σa², Σ(a−b)², Σab, Σb² of a float tensor and its quantized version.

Each kernel reads the tensor in its own shape (a flat view inside the kernel): a Relax
reshape in front of it would fuse into the producing kernel and make a variant of it for
every compared tensor, twice the kernels to schedule and compile (yolov8_tiny's report:
370 of them for 157 model kernels). One kernel per rank serves every shape.

Sums are accumulated in float64 in chunks, so they differ from numpy's pairwise sums only in
rounding (~1e-16 relative); min, max and the counts are exact. Each kernel is written as
scheduled TIR so the CPU pipeline leaves it alone, and runs on one thread: a probe calls
them hundreds of times per sample, and waking the thread pool for each call cost ten times
the kernels' own work on a loaded 2-core machine (yolov8_tiny: 1.37 s → 0.20 s a sample).
"""

from __future__ import annotations

import functools

import numpy as np
from tvm import relax, tirx
from tvm.script import tirx as T

BINS = 2048
CHUNKS = 8  # partial results of histogram and error_sums (summed on the host)


def _dims(rank: int) -> tuple[list[tirx.Var], tuple[slice, ...], tirx.PrimExpr]:
    """Symbolic dims of a rank-``rank`` tensor, its whole region, its element count."""
    dims = [tirx.Var(f"d{i}", "int64") for i in range(rank)]
    count = tirx.const(1, "int64")
    for d in dims:
        count = count * d
    return dims, tuple(slice(0, d) for d in dims), count


@functools.cache
def channel_stats(rank: int) -> tirx.PrimFunc:
    dims, whole, count = _dims(rank)
    n, c = (dims[0], dims[1]) if rank >= 2 else (1, 1)
    r = count // (n * c) if rank >= 2 else count

    @T.prim_func(private=True, s_tir=True)
    def kernel(x_handle: T.handle, out_handle: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        x_nd = T.match_buffer(x_handle, dims, "float32")
        out = T.match_buffer(out_handle, (5, c), "float64")
        with T.sblock("root"), T.sblock("channel_stats"):
            T.reads(x_nd[whole])
            T.writes(out[0:5, 0:c])
            x = T.decl_buffer((n, c, r), "float32", data=x_nd.data)
            for ch in T.serial(c):
                out[0, ch] = T.float64(np.inf)
                out[1, ch] = T.float64(-np.inf)
                out[2, ch] = T.float64(0)
                out[3, ch] = T.float64(0)
                out[4, ch] = T.Cast("float64", n * r)
                for i, j in T.grid(n, r):
                    v = T.Cast("float64", x[i, ch, j])
                    out[0, ch] = T.min(out[0, ch], v)
                    out[1, ch] = T.max(out[1, ch], v)
                    out[2, ch] = out[2, ch] + v
                    out[3, ch] = out[3, ch] + v * v
    return kernel


@functools.cache
def histogram(rank: int) -> tirx.PrimFunc:
    dims, whole, n = _dims(rank)

    @T.prim_func(private=True, s_tir=True)
    def kernel(x_handle: T.handle, edges_handle: T.handle, out_handle: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        x_nd = T.match_buffer(x_handle, dims, "float32")
        edges = T.match_buffer(edges_handle, (BINS + 1,), "float64")
        out = T.match_buffer(out_handle, (CHUNKS, BINS), "int64")
        with T.sblock("root"), T.sblock("histogram"):
            T.reads(x_nd[whole], edges[0:BINS + 1])
            T.writes(out[0:CHUNKS, 0:BINS])
            x = T.decl_buffer((n,), "float32", data=x_nd.data)
            for p in T.serial(CHUNKS):
                for b in range(BINS):
                    out[p, b] = T.int64(0)
                for i in range((n + CHUNKS - 1) // CHUNKS):
                    if p * ((n + CHUNKS - 1) // CHUNKS) + i < n:
                        v = T.Cast("float64", x[p * ((n + CHUNKS - 1) // CHUNKS) + i])
                        if v >= edges[0] and v <= edges[BINS]:  # np.histogram's range
                            # numpy's guess, then its corrections against the edges
                            g0 = T.Cast("int64", (v - edges[0]) / (edges[BINS] - edges[0])
                                        * T.float64(BINS))
                            g1 = T.if_then_else(g0 == BINS, g0 - 1, g0)
                            g2 = T.if_then_else(v < edges[g1], g1 - 1, g1)
                            g3 = T.if_then_else(v >= edges[g2 + 1] and g2 != BINS - 1,
                                                g2 + 1, g2)
                            out[p, g3] = out[p, g3] + T.int64(1)
    return kernel


@functools.cache
def error_sums(rank: int) -> tirx.PrimFunc:
    dims, whole, n = _dims(rank)

    @T.prim_func(private=True, s_tir=True)
    def kernel(a_handle: T.handle, b_handle: T.handle, out_handle: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        a_nd = T.match_buffer(a_handle, dims, "float32")
        b_nd = T.match_buffer(b_handle, dims, "float32")
        out = T.match_buffer(out_handle, (CHUNKS, 4), "float64")
        with T.sblock("root"), T.sblock("error_sums"):
            T.reads(a_nd[whole], b_nd[whole])
            T.writes(out[0:CHUNKS, 0:4])
            a = T.decl_buffer((n,), "float32", data=a_nd.data)
            b = T.decl_buffer((n,), "float32", data=b_nd.data)
            for p in T.serial(CHUNKS):
                for k in range(4):
                    out[p, k] = T.float64(0)
                for i in range((n + CHUNKS - 1) // CHUNKS):
                    if p * ((n + CHUNKS - 1) // CHUNKS) + i < n:
                        u = T.Cast("float64", a[p * ((n + CHUNKS - 1) // CHUNKS) + i])
                        w = T.Cast("float64", b[p * ((n + CHUNKS - 1) // CHUNKS) + i])
                        out[p, 0] = out[p, 0] + u * u
                        out[p, 1] = out[p, 1] + (u - w) * (u - w)
                        out[p, 2] = out[p, 2] + u * w
                        out[p, 3] = out[p, 3] + w * w
    return kernel


class Emitter:
    """Emits calls of the kernels into a BlockBuilder's open dataflow block."""

    def __init__(self, bb: relax.BlockBuilder):
        self.bb = bb
        self._gvars: dict[tuple[str, int], relax.GlobalVar] = {}

    def _kernel(self, make, rank: int) -> relax.GlobalVar:
        key = (make.__name__, rank)
        if key not in self._gvars:
            self._gvars[key] = self.bb.add_func(make(rank), f"hwcompile_{key[0]}_rank{rank}")
        return self._gvars[key]

    def _float(self, x: relax.Expr) -> tuple[relax.Expr, int]:
        """``x`` as float32 (the kernels' input type; exact for 16-bit floats), its rank."""
        if str(x.ty.dtype) != "float32":
            x = self.bb.emit(relax.op.astype(x, "float32"))
        return x, len(x.ty.shape.values)

    def channel_stats(self, x: relax.Expr) -> relax.Var:
        """(5, C) float64: min, max, sum, Σx², count per index of axis 1 (C = 1 below rank
        2)."""
        x, rank = self._float(x)
        channels = x.ty.shape.values[1] if rank >= 2 else 1
        return self.bb.emit(relax.call_tir(self._kernel(channel_stats, rank), [x],
                                           relax.TensorType((5, channels), "float64")))

    def histogram(self, x: relax.Expr, edges: relax.Expr) -> relax.Var:
        """(CHUNKS, BINS) int64 partial counts of ``x`` over ``edges`` (BINS + 1 values)."""
        x, rank = self._float(x)
        return self.bb.emit(relax.call_tir(self._kernel(histogram, rank), [x, edges],
                                           relax.TensorType((CHUNKS, BINS), "int64")))

    def error_sums(self, reference: relax.Expr, approx: relax.Expr) -> relax.Var:
        """(CHUNKS, 4) float64 partial Σa², Σ(a−b)², Σab, Σb² (the two of one shape)."""
        (a, rank), (b, _) = self._float(reference), self._float(approx)
        return self.bb.emit(relax.call_tir(self._kernel(error_sums, rank), [a, b],
                                           relax.TensorType((CHUNKS, 4), "float64")))
