"""int8 epilogues as vector code: requantization in 32-bit arithmetic, 256-entry table
lookups as byte permutes.

The quantize pass requantizes an int32 accumulator ``a`` as

    q = clip(((int64(a)·m + 2^(s−1)) >> s) + zp, low, high)      (int64; m: int32 per channel)

TVM folds ``m`` into an int64 constant, so LLVM cannot tell the product is 32×32 bits: it
multiplies with ``vpmullq`` (3 µops) on two registers of 8 lanes and clips in int64
(~25 instructions per 16 outputs). For ``s ≥ 33`` the same integers come from the high
half of the product alone (``mulhi``, which x86 does with two ``vpmuldq``):

    q = clip(((h + 2^(s−33)) >> (s−32)) + zp, low, high),   h = (int64(a)·m) >> 32   (int32)

Exact for every int32 ``a`` and ``m``: ``P = a·m = h·2^32 + l`` with ``0 ≤ l < 2^32``, and
since ``2^(s−1) = 2^(s−33)·2^32``, ``(P + 2^(s−1)) >> s = ⌊(N + l/2^32) / 2^(s−32)⌋`` with
the integer ``N = h + 2^(s−33)``; adding a fraction below 1 to an integer does not change its
floor division by a power of two. ``|h| ≤ 2^30`` and ``2^(s−33) ≤ 2^29`` (``s ≤ 62``), so
nothing overflows int32. Convs have ``s`` ≈ 36–42 (the accumulator scale is far below the
output's); ``s < 33`` keeps the int64 form, with ``m`` an int32 operand (``vpmuldq``).

The integer ops between layers (a residual add, a concat input rescaled to the concat's
scale) requantize a sum of int8 codes in int64 as well:

    q = clip(((Σ (int64(q_i) − zp_i)·m_i + 2^(s−1)) >> s) + zp, low, high)    (m_i: int32)

With ``m_i = a_i·2^16 + b_i`` (``0 ≤ b_i < 2^16``) the sum is ``2^16·A + B``,
``A = Σ (q_i − zp_i)·a_i + 2^(s−17)`` and ``B = Σ (q_i − zp_i)·b_i``, each a few int8 × 16-bit
products (int32), and, by the same argument on the fraction ``(B mod 2^16) / 2^16``,

    q = clip(((A + (B >> 16)) >> (s − 16)) + zp, low, high)                      (int32)

used where interval arithmetic over all codes bounds ``A`` and ``B`` inside int32 (``s ≥ 17``):
no int64 multiplies (``vpmullq``), shifts and clips on half-width registers.

A lookup ``table[q + 128]`` (SiLU and other elementwise chains, ``passes/quantize/lookup.py``)
is a gather: one scalar load per lane, ~50 instructions per 16 outputs. With AVX512-VBMI it
is two ``vpermi2b`` (each a 128-entry table in two zmm registers, indexed by the low 7 bits
of ``q``) and a select on ``q``'s sign bit (``q + 128`` ≥ 128 exactly when ``q ≥ 0``). The
table rides in the call as 32 int64 immediates (LLVM keeps them as constant vectors), through
an op of its own that the vectorizer widens and whose LLVM lowering emits the permutes.
Lookups are rewritten only where they fuse into an int8 conv kernel that the tuner leaves
alone (``CpuTarget.keeps_default``): tuning workers do not import this module, so a kernel
they build must not hold the op.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.ir import IRModule

from hwcompile.rewrite import call_name, mutate_functions

from .features import cpu_has
from .integer_graph import fused_zero_point_pads

LOOKUP_OP = "tirx.hwcompile_byte_table_lookup"
TABLE_SIZE = 256
_VECTOR_BYTES = 64  # one zmm register
_WORDS = TABLE_SIZE // 8  # the table as int64 immediates

tvm.ir.register_op_attr(LOOKUP_OP, "TCallEffectKind", tirx.CallEffectKind.Pure.value)
tvm.ir.register_op_attr(LOOKUP_OP, "TVectorizable", True)
tvm.ir.register_op_attr(LOOKUP_OP, "TScriptPrinterName", "hwcompile_byte_table_lookup")


def table_lookup(code: tirx.PrimExpr, table: np.ndarray) -> tirx.PrimExpr:
    """``table[code + 128]`` for an int8 ``code`` and a 256-entry int8 ``table``."""
    words = np.ascontiguousarray(table, np.int8).view(np.int64)
    return tirx.call_intrin("int8", tvm.ir.Op.get(LOOKUP_OP), code,
                            *[tirx.const(int(w), "int64") for w in words])


def _immediate(arg: tirx.PrimExpr) -> int:
    return int((arg.value if isinstance(arg, tirx.Broadcast) else arg).value)


def _byte_vector(values: np.ndarray) -> tirx.PrimExpr:
    return tirx.Shuffle([tirx.const(int(v), "int8") for v in values], list(range(len(values))))


def _permute_lookup(code: tirx.PrimExpr, quarters: list[tirx.PrimExpr]) -> tirx.PrimExpr:
    """The lookup of one int8x64 ``code`` vector."""
    def permute(low, high):
        return tirx.call_llvm_pure_intrin("int8x64", "llvm.x86.avx512.vpermi2var.qi.512",
                                          low, code, high)

    negative = code < tirx.Broadcast(tirx.const(0, "int8"), _VECTOR_BYTES)
    return tirx.Select(negative, permute(*quarters[:2]), permute(*quarters[2:]))


def _lower_lookup(call: tirx.PrimExpr) -> tirx.PrimExpr:
    """LLVM lowering of ``LOOKUP_OP`` (after vectorization; any lane count): the codes in
    chunks of 64 lanes (a shorter one padded with zeros), each looked up by permutes."""
    code = call.args[0]
    lanes = tvm.DataType(str(code.ty.dtype)).lanes
    table = np.array([_immediate(a) for a in call.args[1:]], np.int64).view(np.int8)
    quarters = [_byte_vector(table[k:k + _VECTOR_BYTES])
                for k in range(0, TABLE_SIZE, _VECTOR_BYTES)]
    if lanes == 1:
        wide = _permute_lookup(tirx.Broadcast(code, _VECTOR_BYTES), quarters)
        return tirx.Shuffle([wide], [0])
    parts = []
    for start in range(0, lanes, _VECTOR_BYTES):
        count = min(_VECTOR_BYTES, lanes - start)
        chunk = code if count == lanes else tirx.Shuffle([code], list(range(start, start + count)))
        if count < _VECTOR_BYTES:  # zeros above: free (a narrower write clears the rest)
            zeros = tirx.Broadcast(tirx.const(0, "int8"), _VECTOR_BYTES - count)
            chunk = tirx.Shuffle([chunk, zeros], list(range(_VECTOR_BYTES)))
        looked_up = _permute_lookup(chunk, quarters)
        parts.append(looked_up if count == _VECTOR_BYTES
                     else tirx.Shuffle([looked_up], list(range(count))))
    return parts[0] if len(parts) == 1 else tirx.Shuffle(parts, list(range(lanes)))


tirx.register_intrin_lowering(LOOKUP_OP, target="llvm", f=_lower_lookup, level=99)


# ---- the Relax rewrite -------------------------------------------------------------------

MULHI_MIN_SHIFT = 33  # from here on the high half of the product suffices (module docstring)


def wrapping_sum(terms: list[tirx.PrimExpr]) -> tirx.PrimExpr:
    """The int32 sum of ``terms`` added as uint32: the same bits, but LLVM's ``add`` without
    ``nsw``, which it cannot widen term by term. After ``sext(add nsw a, b)`` became
    ``add(sext a, sext b)``, LLVM no longer knew the product's operand was 32 bits and
    multiplied in 64 (``vpmullq``) instead of ``vpmuldq``."""
    if len(terms) == 1:
        return terms[0]
    total = tirx.reinterpret("uint32", terms[0])
    for term in terms[1:]:
        total = total + tirx.reinterpret("uint32", term)
    return tirx.reinterpret("int32", total)


def requantize_expr(acc: tirx.PrimExpr, multiplier: tirx.PrimExpr, shift: int, zero_point: int,
                    low: int, high: int) -> tirx.PrimExpr:
    """int8 ``clip(((a·m + 2^(s−1)) >> s) + zp, low, high)`` of int32 ``acc`` and ``multiplier``
    (module docstring): in int32 through the product's high half when ``shift ≥ 33``."""
    product = tirx.Cast("int64", acc) * tirx.Cast("int64", multiplier)
    if shift >= MULHI_MIN_SHIFT:
        top = tirx.Cast("int32", tirx.shift_right(product, tirx.const(32, "int64")))
        rounded = tirx.shift_right(top + tirx.const(1 << (shift - 33), "int32"),
                                   tirx.const(shift - 32, "int32"))
        dtype = "int32"
    else:
        rounded = tirx.shift_right(product + tirx.const(1 << (shift - 1), "int64"),
                                   tirx.const(shift, "int64"))
        dtype = "int64"
    value = rounded + tirx.const(zero_point, dtype)
    clipped = tirx.min(tirx.max(value, tirx.const(low, dtype)), tirx.const(high, dtype))
    return tirx.Cast("int8", clipped)


RESCALE_SPLIT = 16  # m = a·2^16 + b: both halves multiply an int8 code within int32


def _split(multiplier: int) -> tuple[int, int]:
    return multiplier >> RESCALE_SPLIT, multiplier & ((1 << RESCALE_SPLIT) - 1)


def _rescale_constants(terms: list[tuple[int, int]], shift: int) -> tuple[int, int]:
    """The constant parts of ``A`` and ``B``: the rounding term and ``−Σ zp_i·a_i``, ``−Σ zp_i·b_i``."""
    a_sum = (1 << (shift - RESCALE_SPLIT - 1)) - sum(zp * _split(m)[0] for zp, m in terms)
    return a_sum, -sum(zp * _split(m)[1] for zp, m in terms)


def rescale_fits_int32(terms: list[tuple[int, int]], shift: int) -> bool:
    """Whether ``rescale_expr``'s int32 form holds for int8 codes with these (zero point,
    multiplier) terms: every partial sum of ``A`` and ``B`` (module docstring) and their
    carried sum inside int32 for every code."""
    if not RESCALE_SPLIT < shift <= 62:
        return False
    sums = [(c, c) for c in _rescale_constants(terms, shift)]  # A, B: (lowest, highest)
    seen = [v for pair in sums for v in pair]
    for _, m in terms:
        for k, part in enumerate(_split(m)):
            ends = (part * -128, part * 127)
            sums[k] = (sums[k][0] + min(ends), sums[k][1] + max(ends))
            seen += [*ends, *sums[k]]
    (low_a, high_a), (low_b, high_b) = sums
    seen += [low_a + (low_b >> RESCALE_SPLIT), high_a + (high_b >> RESCALE_SPLIT)]
    return all(-2**31 <= v < 2**31 for v in seen)


def rescale_expr(codes: list[tirx.PrimExpr], terms: list[tuple[int, int]], shift: int,
                 zero_point: int, low: int, high: int) -> tirx.PrimExpr:
    """int8 ``clip(((Σ (q_i − zp_i)·m_i + 2^(s−1)) >> s) + zp, low, high)`` of int8 ``codes``
    and constant (zp_i, m_i) ``terms`` in int32 (module docstring; ``rescale_fits_int32``)."""
    a_sum, b_sum = _rescale_constants(terms, shift)
    high_part, low_part = tirx.const(a_sum, "int32"), tirx.const(b_sum, "int32")
    for code, (_, m) in zip(codes, terms):
        a, b = _split(m)
        wide = tirx.Cast("int32", code)
        high_part = high_part + wide * tirx.const(a, "int32")
        low_part = low_part + wide * tirx.const(b, "int32")
    carried = high_part + tirx.shift_right(low_part, tirx.const(RESCALE_SPLIT, "int32"))
    value = tirx.shift_right(carried, tirx.const(shift - RESCALE_SPLIT, "int32")) \
        + tirx.const(zero_point, "int32")
    clipped = tirx.min(tirx.max(value, tirx.const(low, "int32")), tirx.const(high, "int32"))
    return tirx.Cast("int8", clipped)


def constant_value(expr: relax.Expr, mutator: relax.PyExprMutator) -> np.ndarray | None:
    """The value of a constant expression built from ``astype``/``permute_dims``/``reshape``
    of a constant (the multiplier after ConvertLayout), else None."""
    while isinstance(expr, relax.Var):
        bound = mutator.lookup_binding(expr)
        if bound is None:
            return None
        expr = bound
    if isinstance(expr, tvm.ir.Constant):
        return expr.value.numpy()
    name = call_name(expr)
    inner = constant_value(expr.args[0], mutator) if name else None
    if inner is None:
        return None
    if name == "relax.astype":
        return inner.astype(str(expr.attrs.dtype))
    if name == "relax.permute_dims":
        axes = None if expr.attrs.axes is None else [int(a) for a in expr.attrs.axes]
        return np.transpose(inner, axes)
    if name == "relax.reshape":
        return inner.reshape([int(d) for d in expr.ty.shape.values])
    return None


def _scalar(expr: relax.Expr, mutator: relax.PyExprMutator) -> int | None:
    value = constant_value(expr, mutator)
    return int(value) if value is not None and value.size == 1 else None


class _Requant:
    """A matched requantization chain: the int32 terms its accumulator sums (a conv, its
    zero-point and bias constants), its multiplier and constants."""

    def __init__(self, shape, terms, multiplier, shift, zero_point, low, high):
        self.shape, self.terms, self.multiplier, self.shift = shape, terms, multiplier, shift
        self.zero_point, self.low, self.high = zero_point, low, high


class _Rescale:
    """A matched rescaled sum of int8 codes: the codes, their (zero point, multiplier)
    terms and the output's shift, zero point and clip."""

    def __init__(self, shape, codes, terms, shift, zero_point, low, high):
        self.shape, self.codes, self.terms, self.shift = shape, codes, terms, shift
        self.zero_point, self.low, self.high = zero_point, low, high


def _broadcast_index(indices: tuple, shape: list, out_shape: list) -> list:
    """Indices into a tensor of ``shape`` broadcast (right-aligned) to ``out_shape``: 0 on
    its axes of extent 1 that the output does not share (an axis both have stays indexed, so
    a same-shaped operand reads elementwise, as FuseOps wants it to fuse after a conv)."""
    skip = len(indices) - len(shape)

    def unit(d):
        return isinstance(d, tirx.IntImm) and d.value == 1

    return [0 if unit(d) and not unit(out_shape[skip + k]) else indices[skip + k]
            for k, d in enumerate(shape)]


@relax.expr_functor.mutator
class _EpilogueMutator(relax.PyExprMutator):
    def __init__(self, mod: IRModule, vector_lookup: bool):
        super().__init__(mod)
        self.vector_lookup = vector_lookup
        self.conv_codes: list[relax.Expr] = []  # requantized outputs of dot-product convs

    def _bound(self, expr: relax.Expr, op: str) -> relax.Call | None:
        value = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
        return value if call_name(value) == op else None

    def _match_requant(self, cast: relax.Call) -> _Requant | None:
        """``astype(minimum(maximum(add(right_shift(add(multiply(astype(a, int64), m), r), s),
        zp), low), high), int8)`` (emit_requant, clip as integer_graph.py leaves it)."""
        if call_name(cast) != "relax.astype" or str(cast.attrs.dtype) != "int8":
            return None
        chain, value = [], cast.args[0]
        for op in ("relax.minimum", "relax.maximum", "relax.add", "relax.right_shift",
                   "relax.add", "relax.multiply", "relax.astype"):
            bound = self._bound(value, op)
            if bound is None:
                return None
            chain.append(bound)
            value = bound.args[0]
        clip_high, clip_low, plus_zp, shifted, rounding, product, widened = chain
        if str(widened.attrs.dtype) != "int64" or str(widened.args[0].ty.dtype) != "int32":
            return None
        scalars = [_scalar(e, self) for e in (shifted.args[1], rounding.args[1], plus_zp.args[1],
                                              clip_low.args[1], clip_high.args[1])]
        multiplier = constant_value(product.args[1], self)
        if any(v is None for v in scalars) or multiplier is None:
            return None
        shift, rounding_term, zero_point, low, high = scalars
        if not 1 <= shift <= 62 or rounding_term != 1 << (shift - 1) \
                or np.any(multiplier < -2**31) or np.any(multiplier >= 2**31) \
                or multiplier.ndim > len(widened.args[0].ty.shape.values):
            return None
        return _Requant(widened.ty.shape.values, self._terms(widened.args[0]), multiplier.astype(np.int32), shift,
                        zero_point, low, high)

    def _match_rescale(self, cast: relax.Call) -> _Rescale | None:
        """``astype(minimum(maximum(add(right_shift(add(Σ multiply(x_i, m_i), r), s), zp),
        low), high), int8)`` with ``x_i`` = ``astype(q_i, int64)`` or that less a zero
        point, ``q_i`` int8 (the quantize pass's rescaled sums), in int32 where it fits."""
        if call_name(cast) != "relax.astype" or str(cast.attrs.dtype) != "int8":
            return None
        chain, value = [], cast.args[0]
        for op in ("relax.minimum", "relax.maximum", "relax.add", "relax.right_shift", "relax.add"):
            bound = self._bound(value, op)
            if bound is None or str(bound.ty.dtype) != "int64":
                return None
            chain.append(bound)
            value = bound.args[0]
        clip_high, clip_low, plus_zp, shifted, rounding = chain
        scalars = [_scalar(e, self) for e in (shifted.args[1], rounding.args[1], plus_zp.args[1],
                                              clip_low.args[1], clip_high.args[1])]
        if any(v is None for v in scalars):
            return None
        shift, rounding_term, zero_point, low, high = scalars
        leaves = self._int64_terms(value)
        if not 1 <= shift <= 62 or rounding_term != 1 << (shift - 1) or not leaves:
            return None
        codes, terms = [], []
        for leaf in leaves:
            found = self._code_term(leaf)
            if found is None:
                return None
            codes.append(found[0])
            terms.append(found[1:])
        if not rescale_fits_int32(terms, shift):
            return None
        return _Rescale(cast.ty.shape.values, codes, terms, shift, zero_point, low, high)

    def _int64_terms(self, total: relax.Expr) -> list[relax.Expr]:
        add = self._bound(total, "relax.add")
        if add is None:
            return [total]
        return [t for arg in add.args for t in self._int64_terms(arg)]

    def _code_term(self, term: relax.Expr) -> tuple[relax.Expr, int, int] | None:
        """(q, zp, m) of ``multiply(astype(q, int64) [− zp], m)`` with int8 ``q``, scalar
        zp and an int32 multiplier m."""
        product = self._bound(term, "relax.multiply")
        if product is None:
            return None
        m, zp, widened = _scalar(product.args[1], self), 0, product.args[0]
        minus = self._bound(widened, "relax.subtract")
        if minus is not None:
            zp, widened = _scalar(minus.args[1], self), minus.args[0]
        widened = self._bound(widened, "relax.astype")
        if (m is None or zp is None or widened is None or not -2**31 <= m < 2**31
                or str(widened.attrs.dtype) != "int64" or str(widened.args[0].ty.dtype) != "int8"):
            return None
        return widened.args[0], zp, m

    def _rescale(self, rs: _Rescale) -> relax.Expr:
        def compute(*codes: te.Tensor) -> te.Tensor:
            def element(*i):
                values = [q(*_broadcast_index(i, list(q.shape), list(rs.shape))) for q in codes]
                return rescale_expr(values, rs.terms, rs.shift, rs.zero_point, rs.low, rs.high)
            return te.compute(rs.shape, element, name="rescale")

        return self.builder_.call_te(compute, *rs.codes, primfunc_name_hint="rescale")

    def _terms(self, acc: relax.Expr) -> list[relax.Expr]:
        """The operands of the int32 add tree that computes ``acc`` (``acc`` if none)."""
        add = self._bound(acc, "relax.add")
        if add is None or str(add.ty.dtype) != "int32":
            return [acc]
        return [t for arg in add.args for t in self._terms(arg)]

    def _from_dot_conv(self, terms: list[relax.Expr]) -> bool:
        """Whether the accumulator sums a conv whose kernel the tuner keeps as scheduled by
        default: a conv on the dot product's uint8/int16 operands, or a depthwise conv."""
        for term in terms:
            conv = self._bound(term, "relax.nn.conv2d")
            if conv is not None and (str(conv.args[0].ty.dtype) in ("uint8", "int16")
                                     or int(conv.attrs.groups) > 1):
                return True
        return False

    def _requantize(self, rq: _Requant) -> relax.Expr:
        args = list(rq.terms)
        if rq.multiplier.ndim:
            args.append(relax.const(rq.multiplier, "int32"))

        def compute(*tensors: te.Tensor) -> te.Tensor:
            terms, mult = tensors[:len(rq.terms)], tensors[len(rq.terms):]

            def read(tensor: te.Tensor, i: tuple) -> tirx.PrimExpr:
                return tensor(*_broadcast_index(i, list(tensor.shape), list(rq.shape)))

            def element(*i):
                m = read(mult[0], i) if mult else tirx.const(int(rq.multiplier), "int32")
                acc = wrapping_sum([read(t, i) for t in terms])
                return requantize_expr(acc, m, rq.shift, rq.zero_point, rq.low, rq.high)
            return te.compute(rq.shape, element, name="requantize")

        return self.builder_.call_te(compute, *args, primfunc_name_hint="requantize")

    def _lookup(self, call: relax.Call) -> relax.Expr | None:
        """``take(table, astype(q, int32) + 128)`` of a dot-product conv's codes ``q``, as
        ``LOOKUP_OP``."""
        table, index = call.args
        if not isinstance(table, tvm.ir.Constant) or str(table.ty.dtype) != "int8" \
                or list(table.value.numpy().shape) != [TABLE_SIZE]:
            return None
        plus = self._bound(index, "relax.add")
        cast = None if plus is None else self._bound(plus.args[0], "relax.astype")
        if cast is None or _scalar(plus.args[1], self) != 128:
            return None
        code = cast.args[0]
        produced = self.lookup_binding(code) if isinstance(code, relax.Var) else None
        if produced is None or not any(produced.same_as(c) for c in self.conv_codes):
            return None
        values = table.value.numpy()

        def compute(q: te.Tensor) -> te.Tensor:
            return te.compute(q.shape, lambda *i: table_lookup(q(*i), values), name="lookup")

        return self.builder_.call_te(compute, code, primfunc_name_hint="table_lookup")

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        rq = self._match_requant(call)
        if rq is not None:
            requantized = self._requantize(rq)
            if self._from_dot_conv(rq.terms):
                self.conv_codes.append(requantized)
            return requantized
        rs = self._match_rescale(call)
        if rs is not None:
            return self._rescale(rs)
        if self.vector_lookup and call_name(call) == "relax.take":
            looked_up = self._lookup(call)
            return call if looked_up is None else looked_up
        return call


def int8_epilogues(target: tvm.target.Target) -> tvm.transform.Pass:
    """Requantization chains as 32-bit ``requantize`` kernels, rescaled sums of codes as
    32-bit ``rescale`` kernels (any target) and, with AVX512-VBMI, the table lookups of
    int8 conv epilogues as byte permutes. Runs after ConvertLayout: the new kernels have no
    layout rules."""
    vector_lookup = cpu_has(target, "avx512vbmi")

    @tvm.transform.module_pass(opt_level=0, name="Int8Epilogues")
    def _pass(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        rewritten = mutate_functions(_EpilogueMutator(mod, vector_lookup), mod)
        # after the epilogues: they find int8 convs as conv2d calls
        return fused_zero_point_pads(relax.transform.DeadCodeElimination()(rewritten))

    return _pass
