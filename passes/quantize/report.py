"""The quantization report (``ctx.details``) and the annotations the VTA compiler reads."""

from __future__ import annotations

import math
from typing import Any

from .rewrite import LayerRecord
from .scheme import Scheme


def _number(x: float, digits: int = 3) -> float | str:
    return round(x, digits) if math.isfinite(x) else "inf"


def _summary(scale) -> Any:
    """A per-channel scale as min/max (the full list is in the annotations)."""
    values = scale.reshape(-1)
    if values.size == 1:
        return float(values[0])
    return {"per_channel": int(values.size), "min": float(values.min()), "max": float(values.max())}


def annotations(scheme: Scheme, records: list[LayerRecord], inputs: dict, kept: list[str]
                ) -> dict[str, Any]:
    """``model.annotations["quantization"]``: every scale, zero point and shift, by layer."""
    return {"scheme": scheme.to_json(),
            "inputs": {name: qp.to_json() for name, qp in inputs.items()},
            "layers": {r.name: r.to_json() for r in records},
            "kept_float": kept}


def details(scheme: Scheme, records: list[LayerRecord], errors: dict[int, tuple[float, float]],
            kept: list[str], bytes_before: int, bytes_after: int,
            extra: dict[str, Any]) -> dict[str, Any]:
    """The pass's report entry: per layer scale, zero point, range method, error vs float."""
    layers = []
    for r in records:
        sqnr, cos = errors.get(r.position, (float("nan"), float("nan")))
        entry: dict[str, Any] = {
            "layer": r.name, "op": r.op,
            "input_scale": _summary(r.input[0].scale),
            "input_zero_point": int(r.input[0].zero_point),
            "output_scale": _summary(r.output.scale) if r.output else "float32",
            "output_zero_point": int(r.output.zero_point) if r.output else None,
            "range_method": r.range_method, "sqnr_db": _number(sqnr), "cosine": _number(cos, 6)}
        if r.weight is not None:
            entry["weight_scale"] = _summary(r.weight.scale)
        if r.requant is not None:
            entry["requant"] = r.requant.to_json()["kind"]
        layers.append(entry)
    return {"scheme": scheme.to_json(), "layers": layers, "kept_float": kept,
            "weight_bytes_before": bytes_before, "weight_bytes_after": bytes_after,
            "weight_bytes_ratio": round(bytes_after / max(bytes_before, 1), 4), **extra}
