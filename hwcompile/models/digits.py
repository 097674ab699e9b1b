"""The reference example model: a small CNN trained on scikit-learn's 8×8 digits.

Everything is reproducible: the split is a fixed stratified one, the network is defined once
as a :class:`~hwcompile.models.graph.Graph`, trained by :func:`hwcompile.models.nn.fit` with a
fixed seed, and exported with real BatchNormalization nodes (for the fold-batchnorm pass).

    python -m hwcompile.models.digits OUT.onnx
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from hwcompile.models.graph import Graph, save
from hwcompile.models.nn import Network, fit

EPOCHS = 30
SEED = 0
MIN_ACCURACY = 0.97
INPUT, OUTPUT = "input", "logits"
DOC = "hwcompile digits CNN: sklearn load_digits, 8x8 grey images scaled to [0,1], NCHW"


def load_split(seed: int = SEED, test_size: float = 0.2
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): float32 (N,1,8,8) in [0,1] and int64 labels.

    A stratified split (``test_size`` held out) that depends only on ``seed``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed)
    return x_train, y_train, x_test, y_test


def digits_graph(seed: int = SEED, width: int = 16) -> Graph:
    """The untrained network (``width`` = channels of the first stage).

    stem conv3x3 → residual block (two conv3x3, Add) → two branches (conv1x1 | conv3x3)
    concatenated along channels → conv3x3 stride 2 → GlobalAveragePool → Flatten → Gemm(10).
    Every conv is Conv(no bias) + BatchNormalization (+ Relu).
    """
    g = Graph("digits_cnn", seed=seed)
    x = g.input(INPUT, ("N", 1, 8, 8))
    stem = g.conv_bn_relu(x, "stem", width, 3)
    r = g.conv_bn_relu(stem, "res.conv1", width, 3)
    r = g.conv_bn_relu(r, "res.conv2", width, 3, relu=False)
    r = g.relu(g.add(r, stem, "res.add"), "res.relu")
    a = g.conv_bn_relu(r, "branch_a", width, 1)
    b = g.conv_bn_relu(r, "branch_b", width, 3)
    cat = g.concat([a, b], axis=1, name="concat")
    d = g.conv_bn_relu(cat, "down", 2 * width, 3, stride=2)
    pooled = g.flatten(g.global_avg_pool(d, "pool"), "flatten")
    g.output(g.gemm(pooled, "fc", 10, gain=1.0, output=OUTPUT))
    return g


def shift_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Translate each image by -1, 0 or +1 pixels in each direction (zero fill)."""
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dy, dx = rng.integers(0, 3, size=(2, n))
    rows = dy[:, None] + np.arange(h)[None, :]  # (n, h)
    cols = dx[:, None] + np.arange(w)[None, :]  # (n, w)
    return padded[np.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]


def train_digits(epochs: int = EPOCHS, seed: int = SEED, width: int = 16,
                 verbose: bool = False) -> Graph:
    """Train the digits network on the training split; returns the trained Graph."""
    x_train, y_train, _, _ = load_split()
    graph = digits_graph(seed, width)
    fit(Network(graph), x_train, y_train, epochs=epochs, batch_size=64, lr=3e-3,
        weight_decay=1e-4, seed=seed, augment=shift_augment,
        log=(lambda s: print(s, file=sys.stderr)) if verbose else None)
    return graph


def export(graph: Graph) -> onnx.ModelProto:
    """The trained graph as a checked opset-17 ModelProto (byte-deterministic)."""
    return graph.to_onnx(doc=DOC)


def onnx_accuracy(model: onnx.ModelProto | str | Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX digits model evaluated by onnxruntime."""
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    logits = sess.run([OUTPUT], {INPUT: x})[0]
    return float((logits.argmax(axis=1) == y).mean())


def build_digits_model(path: str | Path, epochs: int = EPOCHS, seed: int = SEED,
                       min_accuracy: float = MIN_ACCURACY, verbose: bool = False) -> Path:
    """Train, export and verify (onnxruntime, held-out split) the digits model at ``path``.

    Raises RuntimeError if held-out accuracy is below ``min_accuracy``; nothing is written
    then. ``verbose`` reports each epoch on stderr.
    """
    model = export(train_digits(epochs, seed, verbose=verbose))
    _, _, x_test, y_test = load_split()
    acc = onnx_accuracy(model, x_test, y_test)
    if acc < min_accuracy:
        raise RuntimeError(f"digits model reached held-out accuracy {acc:.4f} < "
                           f"{min_accuracy} (epochs={epochs}, seed={seed}); not written")
    return save(model, path)


def ensure_digits_model(path: str | Path) -> Path:
    """Path to the digits model, building it first only if the file does not exist."""
    path = Path(path)
    return path if path.exists() else build_digits_model(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwcompile.models.digits",
                                     description="Train and export the digits example model.")
    parser.add_argument("output", type=Path, help="where to write the .onnx file")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        path = build_digits_model(args.output, args.epochs, args.seed, verbose=True)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _, _, x_test, y_test = load_split()
    acc = onnx_accuracy(path, x_test, y_test)
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s; "
          f"held-out accuracy (onnxruntime, {len(y_test)} images): {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
