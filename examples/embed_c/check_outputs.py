"""The ctest: run the C example on real digits images and compare its logits.

    check_outputs.py EXAMPLE_BINARY ARTIFACT_DIR MODEL.onnx

References: the Python runtime over the *same* library (must be bit-identical), the
artifact's Python-loadable model.so, and onnxruntime on the ONNX model (tolerance; labels).
Exits 0 when everything matches, 1 with the first difference otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

import hwcompile
from hwcompile.embed.pyload import CLibraryModel
from hwcompile.models.digits import load_split

IMAGES = 100  # test-split images; enough to cover every class several times


def main(binary: str, art_dir: str, onnx_path: str) -> int:
    images = load_split()[2][:IMAGES]
    library = CLibraryModel(art_dir)
    with tempfile.TemporaryDirectory() as tmp:
        images.astype(np.float32).tofile(Path(tmp) / "images.f32")
        argv = [binary, str(Path(tmp) / "images.f32"), str(Path(tmp) / "logits.f32")]
        if library.info["weights"] != "embedded":
            argv.append(str(Path(art_dir) / library.info["weights"]))
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"FAIL: {binary} exited {proc.returncode}: {proc.stderr.strip()}")
            return 1
        logits = np.fromfile(Path(tmp) / "logits.f32", dtype=np.float32).reshape(len(images), -1)
    printed = np.array([int(line) for line in proc.stdout.split()[-len(images):]])

    same_library = np.concatenate([library(x[None])[0] for x in images])
    python_runtime = hwcompile.load(art_dir)
    model_so = np.concatenate([python_runtime(x[None]) for x in images])
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    reference = session.run(None, {"input": images})[0]
    checks = [
        ("bit-identical to the Python runtime over the same library",
         np.array_equal(logits, same_library)),
        ("bit-identical to the artifact's model.so", np.array_equal(logits, model_so)),
        ("close to onnxruntime", np.allclose(logits, reference, rtol=1e-4, atol=1e-4)),
        ("printed labels are the logits' argmax", np.array_equal(printed, logits.argmax(1))),
        ("labels equal onnxruntime's", np.array_equal(logits.argmax(1), reference.argmax(1))),
    ]
    for what, ok in checks:
        print(f"{'ok' if ok else 'FAIL'}: {what}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
