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

The accumulators are a stack buffer (TVM allocates buffers of any other scope as heap
workspace, per row here), two registers of them (even and odd vectors: two dependency
chains, not one), their lanes folded as a tree of halving vector operations (not 15
dependent scalar steps). On wav2vec2's 4×199 rows of 199, one thread: 2.3× onnxruntime's
time before, 1.0× after (with the stack buffer, the previous one-register kernel took
1.45× this one's time, timed in one process).

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


def _halvings(lanes: int) -> tuple[tuple[int, int], ...]:
    """The tree that folds ``lanes`` accumulators into one: (present, width) per level, four
    levels (enough for 16 lanes), absent ones (present 0) for narrower vectors."""
    widths = []
    while lanes > 1:
        lanes //= 2
        widths.append(lanes)
    if len(widths) > 4:
        raise ValueError("softmax_kernel folds at most 16 lanes")
    return tuple((1, w) for w in widths) + ((0, 1),) * (4 - len(widths))


def softmax_kernel(shape: tuple[int, ...], lanes: int, parallel: bool) -> tirx.PrimFunc:
    """The row kernel for a float32 softmax over the last axis of ``shape``. A row's last
    ``length % lanes`` elements are one more whole vector, the row's last ``lanes``
    elements (overlapping the previous ones, masked where that matters: the sum and the
    scaling); rows shorter than a vector run scalar."""
    length = shape[-1]
    rows = math.prod(shape[:-1])
    vectors, tail = divmod(length, lanes)
    pairs, odd = divmod(vectors, 2)  # whole vectors into the two accumulator registers
    window = 1 if vectors and tail else 0  # the overlapping last vector: 0 or 1 of it
    scalar = 0 if vectors else length  # rows shorter than a vector
    last = length - lanes  # where the overlapping vector starts
    fresh = lanes - tail  # its first element not covered by the whole vectors
    (p1, w1), (p2, w2), (p3, w3), (p4, w4) = _halvings(lanes)
    outer = T.parallel if parallel else T.serial
    red = 2 * lanes  # acc[red]: the row's maximum, acc[red + 1]: 1 / its sum

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
                    # "global", not "local": TVM puts only global buffers on the stack (where
                    # LLVM keeps them in registers); others are heap workspace, allocated
                    # and freed per row at the cost of the row's arithmetic (1.55x -> 1.05x
                    # onnxruntime on wav2vec2's 796 rows of 199)
                    acc = T.alloc_buffer((2 * lanes + 2,), "float32", scope="global")
                    # 1. the row's maximum
                    for j in T.vectorized(2 * lanes):
                        acc[j] = T.float32(-3.4028234663852886e38)
                    for i in range(pairs):
                        for j in T.vectorized(2 * lanes):
                            acc[j] = T.max(acc[j], x[row * length + i * 2 * lanes + j])
                    for _ in range(odd):
                        for j in T.vectorized(lanes):
                            acc[j] = T.max(acc[j], x[row * length + (vectors - 1) * lanes + j])
                    for _ in range(window):
                        for j in T.vectorized(lanes):
                            acc[lanes + j] = T.max(acc[lanes + j], x[row * length + last + j])
                    for j in T.vectorized(lanes):
                        acc[j] = T.max(acc[j], acc[lanes + j])
                    for _ in range(p1):
                        for j in T.vectorized(w1):
                            acc[j] = T.max(acc[j], acc[w1 + j])
                    for _ in range(p2):
                        for j in T.vectorized(w2):
                            acc[j] = T.max(acc[j], acc[w2 + j])
                    for _ in range(p3):
                        for j in T.vectorized(w3):
                            acc[j] = T.max(acc[j], acc[w3 + j])
                    for _ in range(p4):
                        for j in T.vectorized(w4):
                            acc[j] = T.max(acc[j], acc[w4 + j])
                    acc[red] = acc[0]
                    for t in range(scalar):
                        acc[red] = T.max(acc[red], x[row * length + t])
                    # 2. exp(x - max) into the output, summed
                    for j in T.vectorized(2 * lanes):
                        acc[j] = T.float32(0)
                    for i in range(pairs):
                        for j in T.vectorized(2 * lanes):
                            y[row * length + i * 2 * lanes + j] = _exp_nonpositive(
                                x[row * length + i * 2 * lanes + j] - acc[red])
                            acc[j] = acc[j] + y[row * length + i * 2 * lanes + j]
                    for _ in range(odd):
                        for j in T.vectorized(lanes):
                            y[row * length + (vectors - 1) * lanes + j] = _exp_nonpositive(
                                x[row * length + (vectors - 1) * lanes + j] - acc[red])
                            acc[j] = acc[j] + y[row * length + (vectors - 1) * lanes + j]
                    for _ in range(window):
                        for j in T.vectorized(lanes):
                            y[row * length + last + j] = _exp_nonpositive(x[row * length + last + j] - acc[red])
                            acc[lanes + j] = acc[lanes + j] + T.if_then_else(
                                j >= fresh, y[row * length + last + j], T.float32(0))
                    for t in range(scalar):
                        y[row * length + t] = _exp_nonpositive(x[row * length + t] - acc[red])
                        acc[t] = acc[t] + y[row * length + t]
                    for j in T.vectorized(lanes):
                        acc[j] = acc[j] + acc[lanes + j]
                    for _ in range(p1):
                        for j in T.vectorized(w1):
                            acc[j] = acc[j] + acc[w1 + j]
                    for _ in range(p2):
                        for j in T.vectorized(w2):
                            acc[j] = acc[j] + acc[w2 + j]
                    for _ in range(p3):
                        for j in T.vectorized(w3):
                            acc[j] = acc[j] + acc[w3 + j]
                    for _ in range(p4):
                        for j in T.vectorized(w4):
                            acc[j] = acc[j] + acc[w4 + j]
                    acc[red + 1] = T.float32(1) / acc[0]
                    # 3. scaled by 1 / sum
                    for i in range(vectors):
                        for j in T.vectorized(lanes):
                            y[row * length + i * lanes + j] = y[row * length + i * lanes + j] * acc[red + 1]
                    for _ in range(window):
                        for j in T.vectorized(lanes):
                            y[row * length + last + j] = T.if_then_else(
                                j >= fresh, y[row * length + last + j] * acc[red + 1], y[row * length + last + j])
                    for t in range(scalar):
                        y[row * length + t] = y[row * length + t] * acc[red + 1]

    return softmax
