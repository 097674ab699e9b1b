"""The artifact: a directory with the compiled files and a ``metadata.json`` that says
everything needed to use them without the compiler. Written to a staging directory and
renamed into place, so a failed compile never leaves a half-written artifact behind."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from .errors import ArtifactError

SCHEMA_VERSION = 1
METADATA = "metadata.json"


def versions() -> dict[str, str]:
    """Versions that must match between the compiler that wrote and the runtime that loads."""
    import tvm

    return {
        "hwcompile": importlib_metadata.version("hwcompile"),
        "tvm": tvm.__version__,
        "tvm_ffi": importlib_metadata.version("apache-tvm-ffi"),
    }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def staging(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``out_dir`` atomically.

    An existing ``out_dir`` is replaced only if it is an artifact (has metadata.json) or empty.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / METADATA).exists())):
        raise ArtifactError(f"{out_dir}: exists and is not an hwcompile artifact; "
                            "choose another output path or remove it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        yield stage
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            stage.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_metadata(stage: Path, content: dict[str, Any]) -> dict[str, Any]:
    """Complete ``content`` with schema, versions, time and checksums; write metadata.json."""
    files = sorted(p for p in stage.rglob("*") if p.is_file() and p.name != METADATA)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "versions": versions(),
        # The only time stamp; compiled files themselves are byte-reproducible.
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **content,
        "files": {p.relative_to(stage).as_posix(): sha256(p) for p in files},
    }
    (stage / METADATA).write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
    return meta


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def read_metadata(art_dir: str | Path, check_files: bool = True) -> dict[str, Any]:
    """Load and validate an artifact's metadata; every problem is named precisely."""
    art_dir = Path(art_dir)
    meta_path = art_dir / METADATA
    if not art_dir.is_dir():
        raise ArtifactError(f"{art_dir}: no such artifact directory")
    if not meta_path.is_file():
        raise ArtifactError(f"{art_dir}: not an hwcompile artifact ({METADATA} is missing)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{meta_path}: corrupt metadata ({err})") from None
    schema = meta.get("schema_version") if isinstance(meta, dict) else None
    if schema != SCHEMA_VERSION:
        raise ArtifactError(f"{meta_path}: schema version {schema}, this hwcompile reads "
                            f"version {SCHEMA_VERSION}; recompile the model")
    for field in ("versions", "target", "inputs", "outputs", "library", "files"):
        if field not in meta:
            raise ArtifactError(f"{meta_path}: field '{field}' is missing; recompile the model")
    ours = versions()
    for key in ("tvm", "tvm_ffi"):
        if meta["versions"].get(key) != ours[key]:
            raise ArtifactError(f"{art_dir}: built with {key} {meta['versions'].get(key)}, this "
                                f"runtime has {ours[key]}; recompile the model")
    if check_files:
        for name, digest in meta["files"].items():
            path = art_dir / name
            if not path.is_file():
                raise ArtifactError(f"{art_dir}: file '{name}' listed in {METADATA} is missing")
            if sha256(path) != digest:
                raise ArtifactError(f"{art_dir}: file '{name}' was modified after compilation "
                                    "(checksum mismatch); recompile the model")
    return meta
