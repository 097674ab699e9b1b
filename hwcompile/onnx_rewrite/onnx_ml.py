"""The ai.onnx.ml operators scikit-learn exports put around a network, in standard ops.

skl2onnx wraps a classifier's network in ``Scaler`` (a StandardScaler) and maps the arg-max
back to class labels with ``ArrayFeatureExtractor``; TVM's importer has neither.

* ``Scaler``: ``Y = (float(X) - offset) * scale``, ``offset``/``scale`` one value or one per
  element of the last axis (the ONNX-ML definition).
* ``ArrayFeatureExtractor(X, indices)``: the elements of ``X``'s last axis at the
  (flattened) indices: ``Gather(X, reshape(indices, [-1]), axis=-1)``, with onnxruntime's
  shape for a 1-D ``X``: ``[1, count]``.

Other ai.onnx.ml operators keep the frontend's one-line error.
"""

from __future__ import annotations

import numpy as np
import onnx

from .graph import Emitter, Info, rewrite_nodes

_ML = "ai.onnx.ml"
_FLOAT = onnx.TensorProto.FLOAT


def rewrite_ml_ops(model: onnx.ModelProto) -> int:
    """Rewrite every ``Scaler`` and ``ArrayFeatureExtractor``; returns how many."""
    rewrites = {"Scaler": _scaler, "ArrayFeatureExtractor": _array_feature_extractor}
    return rewrite_nodes(model, lambda n: n.domain == _ML and n.op_type in rewrites,
                         lambda node, info: rewrites[node.op_type](node, info))


def _floats(node: onnx.NodeProto, name: str, default: float) -> np.ndarray:
    values = next((list(a.floats) for a in node.attribute if a.name == name), [])
    return np.asarray(values or [default], np.float32)


def _scaler(node: onnx.NodeProto, info: Info) -> list[onnx.NodeProto]:
    em = Emitter(info, node.name or "scaler")
    x = em.op("Cast", [node.input[0]], to=_FLOAT)
    shifted = em.op("Sub", [x, em.const(_floats(node, "offset", 0.0), "offset")])
    em.op("Mul", [shifted, em.const(_floats(node, "scale", 1.0), "scale")], [node.output[0]])
    return em.nodes


def _array_feature_extractor(node: onnx.NodeProto, info: Info) -> list[onnx.NodeProto] | None:
    data, indices = node.input
    rank = len(info.shapes[data]) if data in info.shapes else None
    if rank is None:
        return None  # unknown rank: the frontend reports the op as unsupported
    em = Emitter(info, node.name or "array_feature_extractor")
    flat = em.op("Reshape", [indices, em.const(np.array([-1], np.int64), "flat")])
    if rank == 1:
        em.unsqueeze(em.op("Gather", [data, flat], axis=0), [0], out=node.output[0])
    else:
        em.op("Gather", [data, flat], [node.output[0]], axis=-1)
    return em.nodes
