"""Folding passes: evaluate weight-only subgraphs, fold batch-norm into conv/dense, drop dead code."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from hwcompile.model import Model
from hwcompile.pipeline import PassContext, register_pass
from hwcompile.rewrite import RebuildContext, call_name, free_vars, rebuild

from . import numpy_fold

# Layout-only ops worth folding into a weight; arithmetic on weights folds too.
_FOLDABLE_CALLS = ("relax.permute_dims", "relax.reshape", "relax.squeeze", "relax.expand_dims",
                   "relax.astype", "relax.add", "relax.subtract", "relax.multiply",
                   "relax.divide", "relax.sqrt", "relax.rsqrt", "relax.negative",
                   "relax.transpose", "relax.flatten", "relax.broadcast_to",
                   # the importer's Clip: NaN bounds replaced on weight scalars
                   "relax.isnan", "relax.where", "relax.maximum", "relax.minimum")


def _evaluate(expr: relax.Expr) -> np.ndarray | None:
    """Value of an expression whose operands are all constants (Relax's own folder), or
    None when that folder leaves it unevaluated (TVM 0.27's FoldConstant does not fold
    e.g. ``astype`` of a 0-d tensor, such as the Cast of a scalar zero point that
    MatMulInteger's converter emits); such an expression simply stays in the graph."""
    bb = relax.BlockBuilder()
    with bb.function("main", []):
        with bb.dataflow():
            out = bb.emit_output(expr)
        bb.emit_func_output(out)
    folded = relax.transform.FoldConstant()(bb.get())["main"].body
    value = folded.blocks[0].bindings[-1].value if folded.blocks else folded.body
    return value.value.numpy() if isinstance(value, tvm.ir.Constant) else None


@register_pass("fold-constants")
def fold_constants(model: Model, ctx: PassContext) -> Model:
    """Evaluate every subgraph that depends only on weights (e.g. the transposed Gemm
    weight, reshaped biases) and store the result as a new named weight."""
    folded: dict[relax.Var, tuple[str, np.ndarray]] = {}

    def rewrite(rc: RebuildContext, binding: relax.VarBinding):
        value = binding.value
        op = call_name(value)
        if op not in _FOLDABLE_CALLS:
            return None
        operands = free_vars(value)
        sources = []
        for var in operands:
            if var in folded:
                sources.append(folded[var][0])
            elif rc.weight_name(var) is not None:
                sources.append(rc.weight_name(var))
            else:
                return None
        arrays = {v: folded[v][1] if v in folded else rc.weight(v) for v in operands}
        result = numpy_fold.evaluate(op, value, arrays, binding.var.ty)
        if result is None:  # not one numpy reproduces exactly: TVM's own folder
            result = _evaluate(relax.Call(value.op, [relax.const(arrays[a]) if a in arrays else a
                                                     for a in value.args],
                                          value.attrs, value.ty_args))
        if result is None:
            return None
        name = rc.unique_name(f"{'+'.join(dict.fromkeys(sources))}.{op.rsplit('.', 1)[-1]}")
        folded[binding.var] = (name, result)
        return rc.param(name, result)

    return rebuild(model, rewrite)


def _bn_parts(rc: RebuildContext, bn: relax.Call):
    """(scale, shift, axis) of an inference batch-norm with weight operands, else None."""
    values = [rc.weight(a) for a in bn.args[1:5]]
    if any(v is None for v in values) or bn.attrs.training:
        return None
    gamma, beta, mean, var = (v.astype(np.float64) for v in values)
    if not bn.attrs.scale:
        gamma = np.ones_like(gamma)
    if not bn.attrs.center:
        beta = np.zeros_like(beta)
    scale = gamma / np.sqrt(var + float(bn.attrs.epsilon))
    return scale, beta - mean * scale, int(bn.attrs.axis)


def _single_use_producer(rc: RebuildContext, expr: relax.Expr, op: str):
    producer = rc.producer(expr)
    if call_name(producer) == op and rc.num_users(expr) == 1:
        return producer
    return None


def _fold_into_producer(rc, data, scale, shift, axis, dtype):
    """conv2d/matmul (+ bias) → batch-norm, as a single conv2d/matmul + bias, or None."""
    bias_value, core = None, data
    add = _single_use_producer(rc, data, "relax.add")
    if add is not None and rc.weight(add.args[1]) is not None:
        bias_value, core = rc.weight(add.args[1]), add.args[0]
    conv = _single_use_producer(rc, core, "relax.nn.conv2d")
    matmul = _single_use_producer(rc, core, "relax.matmul")
    channels = scale.shape[0]
    bias = np.zeros(channels) if bias_value is None else bias_value.reshape(-1).astype(np.float64)
    if bias.shape[0] != channels:
        return None
    if conv is not None and axis == 1 and conv.attrs.kernel_layout == "OIHW" \
            and conv.attrs.data_layout == "NCHW" and rc.weight(conv.args[1]) is not None:
        weight = rc.weight(conv.args[1]) * scale.reshape(-1, 1, 1, 1)
        new = relax.Call(conv.op, [rc.arg(conv.args[0]),
                                   rc.param(rc.unique_name(f"{rc.weight_name(conv.args[1]) or 'conv'}.bn"),
                                            weight.astype(dtype))], conv.attrs)
        bias_shape = (1, channels, 1, 1)
    elif matmul is not None and rc.weight(matmul.args[1]) is not None \
            and rc.weight(matmul.args[1]).ndim == 2 and axis in (1, -1):
        weight = rc.weight(matmul.args[1]) * scale.reshape(1, -1)
        new = relax.Call(matmul.op, [rc.arg(matmul.args[0]),
                                     rc.param(rc.unique_name(f"{rc.weight_name(matmul.args[1]) or 'dense'}.bn"),
                                              weight.astype(dtype))], matmul.attrs)
        bias_shape = (channels,)
    else:
        return None
    folded_bias = (bias * scale + shift).astype(dtype).reshape(bias_shape)
    return relax.op.add(rc.emit(new), rc.param(rc.unique_name("bn_bias"), folded_bias))


@register_pass("fold-batchnorm")
def fold_batchnorm(model: Model, ctx: PassContext) -> Model:
    """Fold inference batch-norm into the preceding conv2d/dense weights and bias; a
    batch-norm with no foldable producer becomes one multiply-add with folded weights."""

    def rewrite(rc: RebuildContext, binding: relax.VarBinding):
        value = binding.value
        if not isinstance(value, relax.TupleGetItem) or value.index != 0:
            return None
        bn = rc.producer(value.tuple_value)
        if call_name(bn) != "relax.nn.batch_norm":
            return None
        parts = _bn_parts(rc, bn)
        if parts is None:
            return None
        scale, shift, axis = parts
        data = bn.args[0]
        dtype = str(data.ty.dtype)
        folded = _fold_into_producer(rc, data, scale, shift, axis, dtype)
        if folded is not None:
            return folded
        ndim = data.ty.ndim
        axis = axis % ndim
        shape = [1] * ndim
        shape[axis] = scale.shape[0]
        mul = rc.emit(relax.op.multiply(rc.arg(data), rc.param(rc.unique_name("bn_scale"),
                                                               scale.astype(dtype).reshape(shape))))
        return relax.op.add(mul, rc.param(rc.unique_name("bn_shift"), shift.astype(dtype).reshape(shape)))

    return rebuild(model, rewrite)


@register_pass("dce")
def dead_code_elimination(model: Model, ctx: PassContext) -> Model:
    """Remove bindings whose results are never used, and weights nothing reads."""
    return rebuild(model, lambda rc, binding: None)
