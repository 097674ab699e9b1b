"""Weight expressions of fold-constants evaluated with numpy, bit-identical to TVM's folder.

TVM's FoldConstant builds each expression it folds as its own LLVM module (~0.1 s each):
paddle2onnx's Clip guards alone (``isnan`` and ``where`` on every bound, 376 of them in
layout_cdla) cost 26 of that model's 65 s compile. The ops here have one exact result
(data movement, comparisons, selects, correctly rounded IEEE arithmetic), so numpy
computes the very values TVM's kernels would. Anything else (integer division, ``rsqrt``,
float→int casts, dynamic shapes) returns None and goes to TVM as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tvm
from tvm import relax

# Same shape semantics: the elements in row-major order under the result's static shape.
_RESHAPES = ("relax.reshape", "relax.squeeze", "relax.expand_dims", "relax.flatten")
# Correctly rounded in IEEE arithmetic, so numpy and LLVM (no fast-math) agree exactly.
_FLOAT_ARITHMETIC = {"relax.add": np.add, "relax.subtract": np.subtract,
                     "relax.multiply": np.multiply, "relax.divide": np.divide,
                     "relax.sqrt": np.sqrt, "relax.negative": np.negative}
_IEEE = (np.dtype("float32"), np.dtype("float64"))  # float16 may be computed widened


def _static_shape(ty: object) -> tuple[int, ...] | None:
    shape = getattr(ty, "shape", None)
    if not isinstance(ty, relax.TensorType) or shape is None:
        return None
    try:
        return tuple(int(d) for d in shape.values)
    except TypeError:  # a symbolic dimension
        return None


def _tensor_operands(call: relax.Call, weights: Mapping[relax.Var, np.ndarray]
                     ) -> list[np.ndarray] | None:
    """The tensor operands' values in argument order (shape operands, e.g. reshape's
    target, are read from the result type instead); None if one is not known."""
    values = []
    for arg in call.args:
        if isinstance(arg, relax.Var):
            if arg not in weights:
                return None
            values.append(weights[arg])
        elif isinstance(arg, tvm.ir.Constant):
            values.append(arg.value.numpy())
        elif not isinstance(arg, relax.ShapeExpr):
            return None
    return values or None


def evaluate(op: str, call: relax.Call, weights: Mapping[relax.Var, np.ndarray],
             result_ty: object) -> np.ndarray | None:
    """The value of ``call`` (Relax operator ``op``) whose variables are the constant
    ``weights``, of type ``result_ty``; None when numpy does not reproduce it exactly."""
    shape = _static_shape(result_ty)
    values = _tensor_operands(call, weights)
    if shape is None or values is None:
        return None
    dtype = np.dtype(str(result_ty.dtype))
    result = _compute(op, call, values, shape, dtype)
    if result is None or result.shape != shape or result.dtype != dtype:
        return None
    return np.array(result, order="C")  # its own contiguous copy, not a view of a weight


def _compute(op: str, call: relax.Call, values: Sequence[np.ndarray],
             shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    x = values[0]
    if op in _RESHAPES:
        return x.reshape(shape)
    if op == "relax.broadcast_to":
        return np.broadcast_to(x, shape)
    if op == "relax.permute_dims":
        axes = call.attrs.axes
        return np.transpose(x, None if axes is None else [int(a) for a in axes])
    if op == "relax.astype":
        # float→int is undefined out of range (LLVM and numpy may differ): left to TVM. So
        # is a 0-d cast, which TVM's folder leaves in the graph: the graph stays as it was.
        if x.ndim == 0 or (x.dtype.kind == "f" and dtype.kind in "iub"):
            return None
        return x.astype(dtype)
    if op == "relax.isnan":
        return np.isnan(x)
    if op == "relax.where":
        return np.where(*values)
    if op in ("relax.maximum", "relax.minimum") and all(v.dtype == dtype for v in values):
        # TVM's Max/Min are selects on an ordered comparison: a NaN operand gives the other.
        a, b = values
        return np.where(a > b if op == "relax.maximum" else a < b, a, b)
    if op in _FLOAT_ARITHMETIC and dtype in _IEEE and all(v.dtype == dtype for v in values):
        with np.errstate(all="ignore"):  # inf and NaN results are values like any other
            return _FLOAT_ARITHMETIC[op](*values)
    return None
