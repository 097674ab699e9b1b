"""``--emit c-standalone``: the model as plain C99, needing no TVM library at all.

The kernels come from TVM's ``c`` target (lower.py, kernels.py); the graph glue is generated
from the memory-planned Relax ``main`` (schedule.py), its tensors packed into one static
arena (arena.py); the weights become ``const`` arrays (weights.py). The few symbols the
kernels call are defined by the glue (csource.py): a bump allocator for their workspaces
inside the arena and, with ``checks``, an error hook. Files, in the artifact:
``standalone/include/<name>.h``, ``standalone/src/<name>.c``, ``standalone/src/<name>_weights.c``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hwcompile.errors import TargetError
from hwcompile.model import Model

from ..clibrary import c_name, check_static
from . import csource, lower
from . import kernels as ckernels
from . import weights as cweights
from .arena import Arena, live_peak, plan_arena
from .schedule import Schedule, read_schedule

# A 32-bit core's frames (bytes): DLTensor + TVMFFIAny per kernel argument in the glue's
# frame, the glue's own locals and saved registers, a kernel's frame around its arrays,
# and a margin for library calls (soft-float, memcpy, math).
_ARG_BYTES, _GLUE_FRAME, _KERNEL_FRAME, _LIBRARY_MARGIN = 48, 64, 128, 256


def check_name(name: str, explicit: bool) -> str:
    """The C prefix of the API; an explicit name that is not one is refused, not mangled."""
    ident = c_name(name)
    if explicit and ident != name:
        raise TargetError(f"c-standalone: --c-name '{name}' is not a C identifier prefix "
                          f"(lower-case letters, digits and '_', not starting with a digit); "
                          f"e.g. '{ident}'")
    if re.match(r"hwc(_|$)", ident):
        raise TargetError(f"c-standalone: name '{ident}' clashes with the generated code's "
                          "own identifiers (hwc_*, HWC_*); choose another --c-name")
    return ident


def stack_estimate(schedule: Schedule, source: ckernels.KernelSource) -> int:
    max_args = max(len(step.args) for step in schedule.steps)
    arrays = max(source.kernels[k].stack_array_bytes for k in schedule.kernels)
    return max_args * _ARG_BYTES + _GLUE_FRAME + arrays + _KERNEL_FRAME + _LIBRARY_MARGIN


def build_sources(model: Model, name: str, checks: bool = False
                  ) -> tuple[dict[str, str], Schedule, Arena, ckernels.KernelSource]:
    """The C sources (file name → text) and what they were made from."""
    check_static(model, "c-standalone")
    lowered = lower.lower(model.bound_module())
    schedule = read_schedule(lowered["main"], len(model.inputs), len(model.outputs))
    if not schedule.steps:
        raise TargetError("c-standalone: the model calls no kernel (its outputs are its inputs "
                          "or constants); there is nothing to compile")
    source = ckernels.parse(lower.kernel_source(lowered, schedule.kernels, checks),
                            schedule.kernels)
    arena = plan_arena(schedule, source.kernels)
    files = {f"src/{name}.c": csource.render_glue(name, schedule, arena, source, checks),
             f"src/{name}_weights.c": cweights.render_weights(name, schedule.weights)}
    return files, schedule, arena, source


def emit_c_standalone(model: Model, target: Any, stage: Path, name: str | None = None,
                      checks: bool = False, weights: str = "embedded",
                      emitted: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write the standalone C files into ``stage/standalone``; return metadata's sections."""
    name = check_name(name or model.name, explicit=name is not None)
    if weights != "embedded" and "c-library" not in emitted:
        raise TargetError(f"c-standalone: the weights are const arrays (flash); --weights "
                          f"{weights} applies to --emit c-library only")
    if "c-library" in emitted:
        raise TargetError(f"c-standalone: --emit c-library also defines {name}_run (another "
                          "API); emit them into separate artifacts")
    files, schedule, arena, source = build_sources(model, name, checks)
    figures = csource.Figures(
        weight_bytes=sum(int(w.nbytes) for w in schedule.weights), arena_bytes=arena.size,
        stack_bytes=stack_estimate(schedule, source),
        checks=checks)
    facts = {"model": model.name, "kernels": f"{len(schedule.kernels)} ({len(schedule.steps)} "
             "calls), TVM's c target", "argument checks": "on" if checks else "off",
             "arena": f"{arena.size} bytes: tensors and kernel workspaces packed by lifetime "
                      f"(live peak {live_peak(list(arena.intervals))} bytes; Relax's storages "
                      f"{sum(schedule.storages)} bytes)"}
    files[f"include/{name}.h"] = csource.render_header(name, model.inputs, model.outputs,
                                                       figures, facts)
    root = stage / "standalone"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return {
        "c_standalone": {
            "name": name, "directory": "standalone",
            "header": f"standalone/include/{name}.h",
            "sources": [f"standalone/{rel}" for rel in sorted(files) if rel.startswith("src/")],
            "checks": checks, "kernels": schedule.kernels, "steps": len(schedule.steps),
            "arena_bytes": arena.size, "live_peak_bytes": live_peak(list(arena.intervals)),
            "relax_storage_bytes": sum(schedule.storages), "weight_bytes": figures.weight_bytes,
            "stack_estimate_bytes": figures.stack_bytes,
            "arena_layout": [{"what": f"{i.key[0]} {i.key[1]}", "offset": arena.offsets[i.key],
                              "bytes": i.nbytes, "steps": [i.first, i.last]}
                             for i in sorted(arena.intervals, key=lambda i: arena.offsets[i.key])],
        },
        "memory": {"standalone_arena_bytes": arena.size,
                   "standalone_weight_bytes": figures.weight_bytes},
    }
