"""Shared by the corpus export scripts: seeds, the output folder, a manifest summary.

The export scripts run in their own virtual environment, never the project's (torch and
friends are not hwcompile dependencies); see tools/corpus/README.md for the versions.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = ROOT / "tests" / "corpus" / "models"
MAX_COMMITTED_BYTES = 2 * 1024 * 1024
SEED = 0


def seed_everything(seed: int = SEED) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def output_path(name: str) -> Path:
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    return MODELS_DIR / f"{name}.onnx"


def summarize(path: Path) -> None:
    """Print what the manifest records: producer, opset, size, sha256, inputs and ops."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    size = path.stat().st_size
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    ops = sorted({n.op_type for n in model.graph.node})
    inits = {i.name for i in model.graph.initializer}
    print(f"{path.relative_to(ROOT)}")
    print(f"  producer: {model.producer_name} {model.producer_version}; opsets: {opsets}")
    print(f"  size: {size} bytes; sha256: {digest}")
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims = [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]
        print(f"  input {value.name}: {onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)} {dims}")
    print(f"  ops: {', '.join(ops)}")
    if size > MAX_COMMITTED_BYTES:
        print(f"  TOO LARGE to commit ({size} > {MAX_COMMITTED_BYTES} bytes)", file=sys.stderr)
        sys.exit(1)


def check_with_onnxruntime(path: Path, feeds: dict, expected: list, rtol: float = 1e-4) -> None:
    """The export matches the framework's own outputs (onnxruntime, when installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("  (onnxruntime not installed here: export not cross-checked)")
        return
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    for name, a, b in zip([o.name for o in session.get_outputs()], got, expected):
        err = float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-6)
        print(f"  onnxruntime vs framework, {name}: rel_err {err:.2e}")
        if err > rtol:
            sys.exit(f"export of {path.name} does not reproduce the framework's output")
