"""The ``sparsify`` pass: unstructured pruning, zeroing the least important weights.

Only conv/dense kernels are sparsified (biases and normalization parameters are tiny and
sensitive). Shapes do not change; the report gives the real sparsity reached and how many
bytes a compact (CSR: float values, int32 column indices and row pointers) encoding of the
sparsified kernels would take, so the artifact writer can store them that way when smaller.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from hwcompile.model import Model
from hwcompile.pipeline import PassContext, register_pass
from hwcompile.rewrite import call_name, dataflow_bindings
from hwcompile.sparse_weights import csr_bytes

from . import data, importance
from .structured import check_ratio

SPARSIFY_CRITERIA = ("magnitude", "grad_l1", "taylor")


def kernel_names(model: Model) -> list[str]:
    """Weights used as conv2d/matmul kernels, in graph order."""
    names: dict[str, None] = {}
    params = {v: v.name for v in model.param_vars}
    for binding in dataflow_bindings(model.main):
        if call_name(binding.value) in ("relax.nn.conv2d", "relax.matmul"):
            weight = params.get(binding.value.args[1]) if len(binding.value.args) > 1 else None
            if weight is not None:
                names[weight] = None
    return list(names)


def sparsity_figures(model: Model, names: list[str]) -> dict[str, object]:
    total = sum(model.params[n].size for n in names)
    zeros = sum(int((model.params[n] == 0).sum()) for n in names)
    dense = sum(model.params[n].nbytes for n in names)
    compact = sum(min(csr_bytes(model.params[n]), model.params[n].nbytes) for n in names)
    return {"kernel_sparsity": round(zeros / total, 4) if total else 0.0,
            "model_sparsity": round(sum(int((a == 0).sum()) for a in model.params.values())
                                    / max(1, model.num_params), 4),
            "kernel_bytes_dense": int(dense), "kernel_bytes_compact": int(compact)}


@register_pass("sparsify")
def sparsify(model: Model, ctx: PassContext, *, ratio: float = 0.5,
             criterion: Literal["magnitude", "grad_l1", "taylor"] = "magnitude",
             scope: Literal["global", "local"] = "global") -> Model:
    """Unstructured pruning: zero the ``ratio`` least important conv/dense kernel weights,
    ranked over all kernels (global, scores normalized by each kernel's mean) or per kernel
    (local). Gradient criteria (grad_l1 = |dL/dw|, taylor = |w*dL/dw|) need calibration data."""
    from hwcompile.errors import PassError

    check_ratio(ratio)
    if criterion not in SPARSIFY_CRITERIA:
        raise PassError(f"sparsify: unknown criterion '{criterion}'; use one of "
                        f"{', '.join(SPARSIFY_CRITERIA)}")
    if scope not in ("global", "local"):
        raise PassError(f"sparsify: scope '{scope}' is not global or local")
    from hwcompile.passes.fold import fold_constants

    model = fold_constants(model, ctx)  # a Gemm's transposed weight becomes a named kernel
    names = kernel_names(model)
    if not names:
        raise PassError("sparsify: the model has no conv2d/matmul weights to sparsify")
    grads = None
    if criterion != "magnitude":
        grads = importance.gradients(model, *data.load(ctx.calibration, model,
                                                       f"sparsify(criterion={criterion})"))
    scores = {}
    for n in names:
        s = importance.weight_scores(model.params[n], None if grads is None else grads[n], criterion)
        scores[n] = s / s.mean() if scope == "global" and s.mean() > 0 else s
    params = dict(model.params)
    if scope == "global":
        flat = np.concatenate([scores[n].ravel() for n in names])
        count = round(ratio * flat.size)
        order = np.argsort(flat, kind="stable")[:count]
        mask = np.ones(flat.size, dtype=bool)
        mask[order] = False
        start = 0
        for n in names:
            size = params[n].size
            params[n] = np.where(mask[start:start + size].reshape(params[n].shape), params[n], 0)
            start += size
    else:
        for n in names:
            flat = scores[n].ravel()
            drop = np.argsort(flat, kind="stable")[:round(ratio * flat.size)]
            value = params[n].copy().ravel()
            value[drop] = 0
            params[n] = value.reshape(params[n].shape)
    result = model.replace(params={k: v.astype(model.params[k].dtype) for k, v in params.items()})
    ctx.details.update(sparsity_figures(result, names))
    return result
