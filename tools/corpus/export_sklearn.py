"""Export a scikit-learn pipeline trained on real digits with skl2onnx.

    CORPUS_VENV/bin/python tools/corpus/export_sklearn.py

Writes tests/corpus/models/sklearn_mlp_digits.onnx: StandardScaler + MLPClassifier (64 →
64 → 32 → 10, ReLU, trained 200 epochs with random_state 0) on scikit-learn's load_digits
(1,797 real 8×8 handwritten digits, the project's accuracy set), converted by skl2onnx
(target opset 17 for ai.onnx; the converter adds its ai.onnx.ml operators) with ZipMap
disabled, so the outputs are the predicted label (int64) and the class probabilities.
"""

from __future__ import annotations

import warnings

import numpy as np
from _common import output_path, summarize
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main() -> None:
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    clf = make_pipeline(StandardScaler(), MLPClassifier((64, 32), max_iter=200, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(x[:1400], y[:1400])
    print(f"  held-out accuracy: {clf.score(x[1400:], y[1400:]):.3f}")
    onx = to_onnx(clf, x[:1], target_opset={"": 17, "ai.onnx.ml": 3},
                  options={"zipmap": False}, naming="digits_")
    path = output_path("sklearn_mlp_digits")
    path.write_bytes(onx.SerializeToString())
    summarize(path)
    try:
        import onnxruntime as ort
    except ImportError:
        return
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    label, proba = session.run(None, {session.get_inputs()[0].name: x[1400:]})
    assert np.array_equal(label, clf.predict(x[1400:]))
    err = np.max(np.abs(proba - clf.predict_proba(x[1400:])))
    print(f"  onnxruntime vs scikit-learn: labels equal, max |Δproba| {err:.1e}")


if __name__ == "__main__":
    main()
