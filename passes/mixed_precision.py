"""Mixed precision: conv2d/matmul in float16 or bfloat16 with float32 accumulation
(Relax's ToMixedPrecision, then a retyping to bfloat16 when asked). Weights are stored in
the narrow type (half the bytes); model inputs and outputs stay float32. float16 suits
GPUs with fp16 tensor cores; bfloat16 keeps float32's exponent range (no overflow on large
activations) at 3 fewer mantissa bits. The accuracy loss is measured by tests/test_cuda.py
and benchmarks/cuda_check.py against onnxruntime fp32.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import tvm
from tvm import relax

from hwcompile.errors import PassError
from hwcompile.model import Model, TensorSpec
from hwcompile.pipeline import PassContext, register_pass

_STORAGE = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


@register_pass("mixed-precision")
def mixed_precision(model: Model, ctx: PassContext, *, dtype: str = "float16") -> Model:
    """Compute conv2d/matmul in ``dtype`` (float16 or bfloat16) accumulating in float32;
    float32 weights are stored in ``dtype``."""
    if dtype not in _STORAGE:
        raise PassError(f"mixed-precision(dtype={dtype}): use float16 or bfloat16")
    weights = [name for name, value in model.params.items() if value.dtype == np.float32]
    mod = relax.transform.ToMixedPrecision(out_dtype="float32", fp16_input_names=weights)(model.mod)
    if dtype == "bfloat16":
        mod = _float16_to_bfloat16(mod)
    params = {name: (value.astype(_STORAGE[dtype]) if name in weights else value)
              for name, value in model.params.items()}
    outputs = _output_specs(mod, model.outputs)
    return model.replace(mod=mod, params=params, outputs=outputs,
                         annotations={**model.annotations,
                                      "mixed_precision": {"dtype": dtype, "accumulate": "float32",
                                                          "narrow_weights": len(weights)}})


@relax.expr_functor.mutator
class _Bfloat16Mutator(relax.PyExprMutator):
    """ToMixedPrecision's float16 casts and constants become bfloat16; the types of
    everything computed from them follow when the builder re-normalizes each binding."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.astype"
                and str(call.attrs.dtype) == "float16"):
            return relax.op.astype(call.args[0], "bfloat16")
        return call

    def visit_constant_(self, const: relax.Constant) -> relax.Expr:
        value = const.data.numpy()
        if value.dtype != np.float16:
            return const
        return relax.const(value.astype(ml_dtypes.bfloat16), "bfloat16")


def _float16_to_bfloat16(mod: tvm.IRModule) -> tvm.IRModule:
    """The same module with float16 parameters, casts and constants in bfloat16."""
    func = mod["main"]
    mutator = _Bfloat16Mutator(mod)
    params = []
    for param in func.params:
        ty = param.ty
        if isinstance(ty, relax.TensorType) and str(ty.dtype) == "float16":
            new = relax.Var(param.name, relax.TensorType(ty.shape, "bfloat16"))
            mutator.set_var_remap(param, new)
            param = new
        params.append(param)
    body = mutator.visit_expr(func.body)
    mutator.builder_.update_func(mod.get_global_var("main"), relax.Function(params, body, attrs=func.attrs))
    return relax.transform.Normalize()(mutator.builder_.get())


def _output_specs(mod: tvm.IRModule, old: list[TensorSpec]) -> list[TensorSpec]:
    """Output dtypes after the rewrite (ToMixedPrecision keeps float32 outputs, but check)."""
    ret = mod["main"].ret_ty
    infos = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    return [TensorSpec(spec.name, spec.shape, str(info.dtype)) for spec, info in zip(old, infos)]
