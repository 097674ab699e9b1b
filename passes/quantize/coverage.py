"""How much of the model the integer rewrite covered: the fraction of multiply-accumulates in
integer kernels, and every op left in float with the reason (for the pass report)."""

from __future__ import annotations

from typing import Any

from hwcompile.graph import MAC_OPS, macs
from hwcompile.rewrite import call_name, dataflow_bindings

from .rewrite import INT_OPS, IntegerEmitter, gating_product

# Ops that compute nothing worth reporting when they stay float.
_QUIET = ("relax.reshape", "relax.flatten", "relax.squeeze", "relax.expand_dims",
          "relax.permute_dims", "relax.astype")

_NO_INTEGER_FORM = {
    "relax.nn.softmax": "no integer form (normalizes over an axis)",
    "relax.nn.log_softmax": "no integer form (normalizes over an axis)",
    "relax.nn.layer_norm": "no integer form (normalizes over an axis)",
    "relax.image.resize2d": "interpolation makes new values (only nearest resize is integer)",
    "relax.nn.conv2d_transpose": "no integer kernel for transposed convolutions",
}


def coverage(emitter: IntegerEmitter, left_float: dict[str, str]) -> dict[str, Any]:
    """``integer_mac_fraction`` and ``float_ops`` (op → count, reason, a few bindings)."""
    plan, bindings = emitter.plan, dataflow_bindings(emitter.model.main)
    integer = emitter.quantized
    int_macs = total_macs = 0
    float_ops: dict[tuple[str, str], list[str]] = {}
    layer_of_core = {layer.core: layer for layer in plan.layers.values()}
    for i, b in enumerate(bindings):
        op = call_name(b.value)
        runs_integer = plan.owner.get(i, i) in integer
        if op in MAC_OPS:
            count = macs(b.value)
            total_macs += count
            int_macs += count if runs_integer else 0
        if runs_integer or op is None or op in _QUIET or "float" not in str(
                getattr(b.var.ty, "dtype", "")):
            continue
        float_ops.setdefault((op, _reason(op, i, emitter, layer_of_core, left_float)),
                             []).append(b.var.name)
    report = [{"op": op.removeprefix("relax."), "count": len(names), "reason": reason,
               "bindings": names[:4]} for (op, reason), names in sorted(float_ops.items())]
    fraction = int_macs / total_macs if total_macs else 1.0
    return {"integer_mac_fraction": round(fraction, 4), "macs": total_macs,
            "float_ops": report}


def _reason(op, position, emitter, layer_of_core, left_float) -> str:
    plan, group = emitter.plan, emitter.plan.owner.get(position, position)
    if group in emitter.coarse_lookups:
        return emitter.coarse_lookups[group]
    if group in emitter.read_by_float_only:
        return "only float code reads its result (int8 would add error, save nothing)"
    layer = layer_of_core.get(position)
    if layer is not None:
        if layer.name in left_float:
            return f"layer left in float: {left_float[layer.name]}"
        if layer.name in emitter.keep_float:
            return "kept float (keep_float or accuracy control)"
        return "its input is float (no integer producer before it)"
    if op in MAC_OPS:
        return "not a layer with a constant weight (a product of two activations, or a " \
               "weight the rewrite does not recognize)"
    if op in _NO_INTEGER_FORM:
        return _NO_INTEGER_FORM[op]
    if gating_product(emitter.bindings[position].value):
        return "a product of two same-shaped activations (recurrent gating: int8 at every " \
            "step would compound over the sequence)"
    if op in INT_OPS or position in plan.lookups or position in plan.int_ops:
        return "its input is float (no integer producer before it)"
    if op in ("relax.add", "relax.multiply", "relax.subtract", "relax.divide"):
        return "an operand is a constant tensor or the shapes do not broadcast to one of them"
    return "no integer form"
