"""Mixed precision: conv2d/matmul in float16 with float32 accumulation (Relax's
ToMixedPrecision). Weights are stored in float16 (half the bytes); model inputs and
outputs stay float32. Meant for GPUs with fp16 tensor cores; the accuracy loss is
reported by tests/test_cuda.py and benchmarks/cuda_check.py against onnxruntime fp32.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from hwcompile.errors import PassError
from hwcompile.model import Model, TensorSpec
from hwcompile.pipeline import PassContext, register_pass


@register_pass("mixed-precision")
def mixed_precision(model: Model, ctx: PassContext, *, dtype: str = "float16") -> Model:
    """Compute conv2d/matmul in ``dtype`` (float16) accumulating in float32; float32
    weights are stored in float16."""
    if dtype != "float16":
        raise PassError(f"mixed-precision(dtype={dtype}): only float16 is supported "
                        "(Relax's ToMixedPrecision has no bfloat16 mode)")
    weights = [name for name, value in model.params.items() if value.dtype == np.float32]
    mod = relax.transform.ToMixedPrecision(out_dtype="float32", fp16_input_names=weights)(model.mod)
    params = {name: (value.astype(np.float16) if name in weights else value)
              for name, value in model.params.items()}
    outputs = _output_specs(mod, model.outputs)
    return model.replace(mod=mod, params=params, outputs=outputs,
                         annotations={**model.annotations,
                                      "mixed_precision": {"dtype": dtype, "accumulate": "float32",
                                                          "fp16_weights": len(weights)}})


def _output_specs(mod: tvm.IRModule, old: list[TensorSpec]) -> list[TensorSpec]:
    """Output dtypes after the rewrite (ToMixedPrecision keeps float32 outputs, but check)."""
    ret = mod["main"].ret_ty
    infos = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    return [TensorSpec(spec.name, spec.shape, str(info.dtype)) for spec, info in zip(old, infos)]
