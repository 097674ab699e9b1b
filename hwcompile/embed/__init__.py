"""Embedding compiled models into C/C++ applications (``compile(..., emit=[...])``).

An emitter adds files to an artifact's staging directory and returns the sections it adds
to metadata.json. ``c-library``: a header, a static archive and a shared library over the
TVM runtime (see clibrary.py); ``c-standalone``: plain C99 sources needing no TVM library,
for microcontrollers (see standalone/). ``python -m hwcompile.embed cmake-info`` tells CMake
where the runtime lives (see cmake/hwcompileConfig.cmake).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hwcompile.errors import TargetError
from hwcompile.model import Model

from .clibrary import emit_c_library
from .standalone import emit_c_standalone

EMITTERS = {"c-library": emit_c_library, "c-standalone": emit_c_standalone}


def emit(kinds: Sequence[str], model: Model, target: Any, stage: Path,
         options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run each emitter in ``kinds``; return ``{"embed": {...}, "memory": {...}}``."""
    sections: dict[str, Any] = {"embed": {}, "memory": {}}
    for kind in kinds:
        emitter = EMITTERS.get(kind)
        if emitter is None:
            raise TargetError(f"--emit '{kind}' is unknown; available: {', '.join(EMITTERS)}")
        # Each emitter takes the options it names (the CLI's are shared), and the list of
        # what else is emitted (names that would clash).
        accepted = inspect.signature(emitter).parameters
        given = {**(options or {}), "emitted": tuple(kinds)}
        result = emitter(model, target, stage, **{k: v for k, v in given.items() if k in accepted})
        sections["embed"].update({k: v for k, v in result.items() if k != "memory"})
        sections["memory"].update(result.get("memory", {}))
    return sections


__all__ = ["EMITTERS", "emit", "emit_c_library", "emit_c_standalone"]
