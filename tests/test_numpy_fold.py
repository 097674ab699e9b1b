"""fold-constants' numpy evaluation gives TVM's folded values bit for bit, and declines
what it cannot reproduce exactly."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

from hwcompile.passes import fold, numpy_fold


def _values(shape, dtype="float32", seed=0):
    """Random values with the awkward ones in: NaN, ±inf, ±0, a denormal."""
    rng = np.random.default_rng(seed)
    flat = rng.standard_normal(int(np.prod(shape))).astype(dtype)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40], dtype=dtype)
    flat[:min(len(flat), len(specials))] = specials[:len(flat)]
    return flat.reshape(shape)


def _both(build, *arrays):
    """(numpy's value, TVM's value) of ``build(*vars)`` on constant ``arrays``."""
    params = [relax.Var(f"w{i}", relax.TensorType(a.shape, str(a.dtype)))
              for i, a in enumerate(arrays)]
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(build(*params))
        bb.emit_func_output(out)
    call = bb.get()["main"].body.blocks[0].bindings[-1].value
    ours = numpy_fold.evaluate(call.op.name, call, dict(zip(params, arrays, strict=True)), out.ty)
    consts = {p: relax.const(a) for p, a in zip(params, arrays, strict=True)}
    theirs = fold._evaluate(relax.Call(call.op, [consts.get(a, a) for a in call.args],
                                       call.attrs, call.ty_args))
    return ours, theirs


def _identical(ours, theirs):
    assert ours is not None and theirs is not None
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert ours.tobytes() == theirs.tobytes()


@pytest.mark.parametrize("build", [
    relax.op.add, relax.op.subtract, relax.op.multiply, relax.op.divide,
    relax.op.maximum, relax.op.minimum,
], ids=["add", "subtract", "multiply", "divide", "maximum", "minimum"])
def test_binary_ops_match_tvm_bitwise(build):
    a = _values((4, 6), seed=1)
    b = _values((1, 6), seed=2)[:, ::-1].copy()  # broadcast; NaN meets a number and NaN
    _identical(*_both(build, a, b))


def test_clip_guard_matches_tvm_bitwise():
    """The importer's guard on a Clip bound: where(isnan(bound), -inf, bound)."""
    for bound in np.array(np.nan, dtype="float32"), np.array(6.0, dtype="float32"):
        _identical(*_both(relax.op.isnan, bound))
        _identical(*_both(lambda nan, b: relax.op.where(nan, relax.const(-np.inf, "float32"), b),
                          np.isnan(bound), bound))


@pytest.mark.parametrize("build", [
    relax.op.sqrt, relax.op.negative, relax.op.isnan,
    lambda a: relax.op.permute_dims(a, [2, 0, 1]), lambda a: relax.op.permute_dims(a),
    lambda a: relax.op.reshape(a, (6, 4)), lambda a: relax.op.expand_dims(a, 1),
    relax.op.flatten, lambda a: relax.op.broadcast_to(a, (3, 2, 3, 4)),
    lambda a: relax.op.astype(a, "float16"), lambda a: relax.op.astype(a, "float64"),
], ids=["sqrt", "negative", "isnan", "permute", "transpose", "reshape", "expand_dims",
        "flatten", "broadcast_to", "astype-f16", "astype-f64"])
def test_unary_ops_match_tvm_bitwise(build):
    _identical(*_both(build, _values((2, 3, 4), seed=3)))


def test_integer_casts_and_squeeze_match_tvm():
    ints = np.arange(-300, 300, 50, dtype="int32").reshape(1, 12)
    _identical(*_both(lambda a: relax.op.astype(a, "int8"), ints))
    _identical(*_both(lambda a: relax.op.astype(a, "float32"), ints))
    _identical(*_both(lambda a: relax.op.squeeze(a, [0]), ints))


def test_int64_weights_keep_their_declared_type():
    """TVM's path narrows an int64 operand to int32 (``relax.const``'s default); the numpy
    path keeps the type the graph declares."""
    ints = np.arange(12, dtype="int64").reshape(1, 12)
    ours, theirs = _both(lambda a: relax.op.squeeze(a, [0]), ints)
    assert ours.dtype == np.int64 and theirs.dtype == np.int32
    np.testing.assert_array_equal(ours, ints[0])


def test_inexact_cases_are_left_to_tvm():
    """float→int casts, 0-d casts (which TVM does not fold), rsqrt and integer division
    are not computed with numpy."""
    a = _values((2, 3))
    assert _both(lambda x: relax.op.astype(x, "float32"), np.array(3, "int8")) == (None, None)
    ours, _ = _both(lambda x: relax.op.astype(x, "int32"), np.abs(np.nan_to_num(a)))
    assert ours is None
    ours, theirs = _both(relax.op.rsqrt, np.abs(np.nan_to_num(a)) + 1)
    assert ours is None and theirs is not None
    ints = np.arange(1, 7, dtype="int32").reshape(2, 3)
    assert _both(lambda x, y: relax.op.divide(x, y), ints, ints[::-1].copy())[0] is None
