"""Tuning databases: a directory with MetaSchedule's JSON files plus the target it is for.

``DIR/hwcompile-db.json`` records the target the records were measured on. Opening a
database for another target is refused: schedules tuned for one CPU (or GPU) are valid
code elsewhere but their speed is not, and silently applying them would mislead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tvm

from hwcompile.errors import TuningError

MANIFEST = "hwcompile-db.json"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
# Run time MetaSchedule records for a failed build or run (it keeps those records too).
FAILED_RUN_SECS = 1e9

# The target attributes that decide what code runs well; cores are left out on purpose
# (a schedule tuned on 2 cores is a fine start on 4).
_IDENTITY_ATTRS = ("mtriple", "mcpu", "mattr", "arch")


def target_identity(target: tvm.target.Target) -> dict[str, Any]:
    identity: dict[str, Any] = {"kind": target.kind.name}
    for attr in _IDENTITY_ATTRS:
        if attr in target.attrs:
            value = target.attrs[attr]
            identity[attr] = [str(v) for v in value] if not isinstance(value, str) else str(value)
    return identity


def _describe(identity: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in identity.items())


def check_target(db_dir: Path, target: tvm.target.Target) -> None:
    """Raise TuningError if ``db_dir`` was tuned for a different target."""
    manifest = db_dir / MANIFEST
    if not manifest.exists():
        return
    try:
        recorded = json.loads(manifest.read_text())["target"]
    except (OSError, ValueError, KeyError):
        raise TuningError(f"{manifest}: unreadable tuning-database manifest; delete the "
                          "directory and tune again") from None
    wanted = target_identity(target)
    if recorded != wanted:
        raise TuningError(f"tuning database {db_dir} was tuned for target {_describe(recorded)}, "
                          f"not for {_describe(wanted)}; tune again for this target with "
                          "another --db directory")


def open_database(db_dir: str | Path, target: tvm.target.Target, create: bool) -> Any:
    """The MetaSchedule JSONDatabase in ``db_dir`` after the target check.

    ``create`` (tuning) makes the directory; compiling needs an existing database.
    """
    from tvm.s_tir import meta_schedule as ms

    db_dir = Path(db_dir)
    if not create and not (db_dir / RECORDS).exists():
        raise TuningError(f"{db_dir}: no tuning database here ({RECORDS} missing); "
                          "create one with `hwcompile tune MODEL --db DIR`")
    check_target(db_dir, target)
    db_dir.mkdir(parents=True, exist_ok=True)  # JSONDatabase needs its directory
    manifest = db_dir / MANIFEST
    if not manifest.exists():
        manifest.write_text(json.dumps({"target": target_identity(target),
                                        "tvm_target": json.loads(str(target))}, indent=2) + "\n")
    return ms.database.JSONDatabase(path_workload=str(db_dir / WORKLOADS),
                                    path_tuning_record=str(db_dir / RECORDS))


def record_latencies(db_dir: str | Path) -> list[float]:
    """Mean measured seconds of every record in the database (failed ones are ≥ 1e9)."""
    path = Path(db_dir) / RECORDS
    if not path.exists():
        return []
    latencies = []
    for line in path.read_text().splitlines():
        if line.strip():
            run_secs = json.loads(line)[1][1]
            latencies.append(sum(run_secs) / len(run_secs) if run_secs else float("inf"))
    return latencies
