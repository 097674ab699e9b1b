"""Softmax over the last axis: a hand-written row kernel in place of TVM's four loop nests.

TVM legalizes softmax into four full-tensor loop nests (max, exp, sum, divide), each
scalar, one thread, ``exp`` a libm call per element: wav2vec2's attention softmax
(4×199 rows of 199) took 9× onnxruntime's time, 44% of the model. Schedule primitives
cannot fix the two costs that matter: rows whose length is no multiple of the vector
width (a predicated tail makes TVM scalarize the whole vectorized loop) and ``exp`` (LLVM
has no vector ``exp`` without a vector math library). So this module writes the kernel
directly, as onnxruntime's MLAS does: per row, in parallel over rows,

1. the maximum, in ``lanes`` running maxima (whole vectors, then a scalar tail);
2. ``exp(x - max)`` into the output, summed in ``lanes`` partial sums (also what keeps a
   sum over 18385 classes accurate: one float32 accumulator lost 5.7e-5 relative);
3. the output scaled by ``1 / sum``.

``exp`` is evaluated inline, vectorizable: ``2^n · p(r)`` with ``n = round(x / ln 2)``,
``r = x - n ln 2`` (ln 2 in two parts, so ``r`` stays exact), ``p`` the degree-6 minimax
polynomial of Cephes' ``expf`` (1–2 ulp on ``|r| ≤ ln 2 / 2``) and ``2^n`` built in the
exponent bits. Arguments are ≤ 0 here (``x - max``); below -87.3 they are clamped, where
``exp`` is below float32's normal range and contributes nothing a sum can see.
"""

from __future__ import annotations

import math

from tvm import tirx
from tvm.s_tir import Schedule
from tvm.script import tirx as T

_NAMES = ("T_softmax_maxelem", "T_softmax_exp", "T_softmax_expsum", "T_softmax_norm")
_LOG2E = 1.4426950408889634
_LN2_HI = 0.693359375  # ln 2 = _LN2_HI + _LN2_LO; _LN2_HI has few mantissa bits: n·_LN2_HI exact
_LN2_LO = -2.12194440e-4
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
             1.6666665459e-1, 5.0000001201e-1)
_EXP_MIN = -87.3  # exp(_EXP_MIN) ≈ 1.2e-38, float32's smallest normal


def softmax_shape(func: tirx.PrimFunc) -> tuple[int, ...] | None:
    """The float32 input shape when ``func`` is TVM's legalized softmax over the last axis
    with static shapes (and nothing fused into it), else None."""
    sch = Schedule(func)
    stmts = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    blocks = [stmt.name_hint for stmt in stmts]
    axis = [int(stmt.annotations["axis"]) for stmt in stmts if "axis" in stmt.annotations]
    if tuple(blocks) != _NAMES or len(func.params) != 2:
        return None
    types = list(func.ty.params)
    shapes = [t.shape for t in types]
    if any(str(t.dtype) != "float32" for t in types) or not all(
            isinstance(d, tirx.IntImm) for d in shapes[0]):
        return None
    shape = tuple(int(d) for d in shapes[0])
    if tuple(int(d) for d in shapes[1]) != shape or axis != [len(shape) - 1]:
        return None
    return shape if math.prod(shape) < 2 ** 31 else None  # the kernel indexes in int32


def _exp_nonpositive(x):
    """``exp(x)`` for ``x ≤ 0`` as vectorizable arithmetic (see module docstring)."""
    clamped = tirx.Var("exp_x", "float32")
    n = tirx.Var("exp_n", "float32")
    r = tirx.Var("exp_r", "float32")
    p = T.float32(_EXP_POLY[0])
    for c in _EXP_POLY[1:]:
        p = p * r + T.float32(c)
    p = p * r * r + r + T.float32(1.0)
    scale = T.reinterpret("float32", T.shift_left(T.Cast("int32", n) + 127, 23))
    return tirx.Let(clamped, T.max(x, T.float32(_EXP_MIN)),
                    tirx.Let(n, T.floor(clamped * T.float32(_LOG2E) + T.float32(0.5)),
                             tirx.Let(r, clamped - n * T.float32(_LN2_HI) - n * T.float32(_LN2_LO),
                                      p * scale)))


def softmax_kernel(shape: tuple[int, ...], lanes: int, parallel: bool) -> tirx.PrimFunc:
    """The row kernel for a float32 softmax over the last axis of ``shape``. A row's last
    ``length % lanes`` elements are one more whole vector, the row's last ``lanes``
    elements (overlapping the previous ones, masked where that matters: the sum and the
    scaling); rows shorter than a vector run scalar."""
    length = shape[-1]
    rows = math.prod(shape[:-1])
    vectors, tail = divmod(length, lanes)
    window = 1 if vectors and tail else 0  # the overlapping last vector: 0 or 1 of it
    scalar = 0 if vectors else length  # rows shorter than a vector
    last = length - lanes  # where the overlapping vector starts
    fresh = lanes - tail  # its first element not covered by the whole vectors
    outer = T.parallel if parallel else T.serial

    @T.prim_func(private=True, s_tir=True)
    def softmax(x_handle: T.handle, y_handle: T.handle):
        T.func_attr({"tirx.noalias": True})
        x_nd = T.match_buffer(x_handle, shape, "float32")
        y_nd = T.match_buffer(y_handle, shape, "float32")
        with T.sblock("root"):  # noqa: SIM117 (TVMScript: one block per with)
            # one opaque block under the root: the pipeline expects blocks at the top level
            with T.sblock("softmax_rows"):
                T.reads()  # opaque: its row buffers are no regions of the outer scope
                T.writes()
                x = T.decl_buffer((rows * length,), "float32", data=x_nd.data)
                y = T.decl_buffer((rows * length,), "float32", data=y_nd.data)
                for row in outer(rows):
                    base = row * length
                    acc = T.alloc_buffer((lanes,), "float32", scope="local")
                    red = T.alloc_buffer((2,), "float32", scope="local")
                    # 1. the row's maximum
                    for j in T.vectorized(lanes):
                        acc[j] = T.float32(-3.4028234663852886e38)
                    for i in range(vectors):
                        for j in T.vectorized(lanes):
                            acc[j] = T.max(acc[j], x[base + i * lanes + j])
                    for _ in range(window):
                        for j in T.vectorized(lanes):
                            acc[j] = T.max(acc[j], x[base + last + j])
                    red[0] = acc[0]
                    for j in range(1, lanes):
                        red[0] = T.max(red[0], acc[j])
                    for t in range(scalar):
                        red[0] = T.max(red[0], x[base + t])
                    # 2. exp(x - max) into the output, summed
                    for j in T.vectorized(lanes):
                        acc[j] = T.float32(0)
                    for i in range(vectors):
                        for j in T.vectorized(lanes):
                            y[base + i * lanes + j] = _exp_nonpositive(x[base + i * lanes + j] - red[0])
                            acc[j] = acc[j] + y[base + i * lanes + j]
                    for _ in range(window):
                        for j in T.vectorized(lanes):
                            y[base + last + j] = _exp_nonpositive(x[base + last + j] - red[0])
                            acc[j] = acc[j] + T.if_then_else(j >= fresh, y[base + last + j],
                                                             T.float32(0))
                    for t in range(scalar):
                        y[base + t] = _exp_nonpositive(x[base + t] - red[0])
                        acc[t] = acc[t] + y[base + t]
                    red[1] = acc[0]
                    for j in range(1, lanes):
                        red[1] = red[1] + acc[j]
                    red[1] = T.float32(1) / red[1]
                    # 3. scaled by 1 / sum
                    for i in range(vectors):
                        for j in T.vectorized(lanes):
                            y[base + i * lanes + j] = y[base + i * lanes + j] * red[1]
                    for _ in range(window):
                        for j in T.vectorized(lanes):
                            y[base + last + j] = T.if_then_else(
                                j >= fresh, y[base + last + j] * red[1], y[base + last + j])
                    for t in range(scalar):
                        y[base + t] = y[base + t] * red[1]

    return softmax
