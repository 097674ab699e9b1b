"""``--emit c-library``: header, static archive and shared library of one model.

The model is built as a TVM *system library* under a per-model symbol prefix, so several
models can live in one binary and nothing is loaded from disk at run time. The glue (see
templates/glue.cc.in) is compiled with the host or cross C++ compiler, then archived and
linked with the model objects. Files land in the artifact's staging directory:
``include/<name>.h``, ``lib/lib<name>.a``, ``lib/lib<name>.so``, ``src/<name>_glue.cc`` and,
with ``weights="file"``, ``lib/<name>.weights``.
"""

from __future__ import annotations

import re
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from tvm import relax

from hwcompile.errors import TargetError
from hwcompile.model import Model, TensorSpec

from . import codegen, memory, toolchain

WEIGHT_MODES = ("embedded", "file")
_ALIGN = 64  # each weight starts 64-byte aligned in the weights file
_C_KEYWORDS = {"auto", "char", "const", "double", "float", "int", "long", "main", "short",
               "signed", "static", "struct", "union", "unsigned", "void", "volatile"}


def c_name(name: str) -> str:
    """``name`` as a C identifier prefix (lower case, [a-z0-9_], not starting with a digit)."""
    ident = re.sub(r"[^0-9a-zA-Z_]", "_", name).lower()
    if not ident or ident[0].isdigit() or ident in _C_KEYWORDS:
        ident = f"model_{ident}"
    return ident


def check_static(model: Model, emitter: str = "c-library") -> None:
    """A C API needs static shapes: name the first symbolic one and how to fix it."""
    for spec in model.inputs + model.outputs:
        if not spec.is_static:
            raise TargetError(f"{emitter}: '{spec.name}' has symbolic shape "
                              f"{'x'.join(map(str, spec.shape))}; fix it with "
                              f"--input-shape {spec.name}=<dims> (e.g. batch 1)")


def _weights_blob(model: Model) -> tuple[bytes, list[codegen.Weight]]:
    """The weights in ``main``'s parameter order, each at a 64-byte aligned offset."""
    blob, weights = bytearray(), []
    for var in model.param_vars:
        array = np.ascontiguousarray(model.params[var.name])
        blob += b"\0" * (-len(blob) % _ALIGN)
        weights.append(codegen.Weight(TensorSpec(var.name, array.shape, str(array.dtype)),
                                      len(blob)))
        blob += array.tobytes()
    return bytes(blob), weights


def _anchor(tools: toolchain.Toolchain, obj: Path) -> str:
    """One strong global symbol the object defines (referenced by the glue; see there)."""
    for line in tools.run(tools.nm, "-g", "--defined-only", obj).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TDRB":
            return parts[2]
    raise TargetError(f"c-library: {obj.name} defines no global symbol to anchor")


def emit_c_library(model: Model, target: Any, stage: Path, name: str | None = None,
                   weights: str = "embedded", db: str | Path | None = None) -> dict[str, Any]:
    """Write the C library files into ``stage``; return what metadata.json records."""
    if target.name != "cpu":
        raise TargetError(f"c-library: target '{target.name}' is not supported; use a cpu target")
    if weights not in WEIGHT_MODES:
        raise TargetError(f"c-library: weights '{weights}' unknown; use {' or '.join(WEIGHT_MODES)}")
    check_static(model)
    name = c_name(name or model.name)
    # A prefix of at least 8 characters: TVM 0.27 cannot read back a shorter string attribute.
    prefix = f"hwcompile_{name}_"
    tools = toolchain.find_toolchain(target.triple, target.cross)
    embedded = weights == "embedded"
    mod = (model.bound_module() if embedded else model.mod).with_attr("system_lib_prefix", prefix)
    lowered = memory.lower(mod, target, db)
    plan = memory.plan(lowered)
    blob, table = (b"", []) if embedded else _weights_blob(model)

    for sub in ("include", "lib", "src"):
        (stage / sub).mkdir(exist_ok=True)
    header = stage / "include" / f"{name}.h"
    glue = stage / "src" / f"{name}_glue.cc"
    static_lib, shared_lib = stage / "lib" / f"lib{name}.a", stage / "lib" / f"lib{name}.so"
    weights_file = stage / "lib" / f"{name}.weights"
    if not embedded:
        weights_file.write_bytes(blob)

    def write_header(static_bytes: int, shared_bytes: int) -> None:
        figures = codegen.HeaderFigures(model.weight_bytes, plan.activation_bytes,
                                        static_bytes, shared_bytes, len(blob))
        facts = {"target": target.spec, "triple": target.triple or "host",
                 "weights": "embedded" if embedded else f"file {weights_file.name}",
                 "system library prefix": prefix}
        header.write_text(codegen.render_header(name, model.inputs, model.outputs, figures, facts))

    with tempfile.TemporaryDirectory(prefix="hwcompile-clib-") as tmp:
        work = Path(tmp)
        executable = relax.build(lowered, target.tvm_target, relax_pipeline=None, system_lib=True)
        executable.export_library(str(work / "model.tar"))  # objects only: no linker needed
        with tarfile.open(work / "model.tar") as tar:
            members = sorted(m.name for m in tar.getmembers() if m.name.endswith(".o"))
            tar.extractall(work / "objects", members=[tar.getmember(m) for m in members])
        objects = [work / "objects" / m for m in members]
        glue.write_text(codegen.render_glue(
            name, prefix, model.inputs, model.outputs, [_anchor(tools, o) for o in objects],
            table, len(blob), codegen.weights_digest(blob)))
        # The glue does not use the library sizes, so the final header leaves it unchanged.
        write_header(0, 0)
        glue_obj = work / f"{name}_glue.o"
        # -isystem: the tvm-ffi headers are not -Wextra clean; the glue itself is.
        includes = [f"-I{stage / 'include'}", *(f"-isystem{d}" for d in toolchain.include_dirs())]
        tools.run(tools.cxx, "-std=c++17", "-O2", "-fPIC", *includes, "-c", glue, "-o", glue_obj)
        tools.run(tools.ar, "rcsD", static_lib, glue_obj, *objects)
        runtime = toolchain.runtime_libraries()
        link_runtime = [] if tools.cross and not toolchain.runtime_dir_override() else [
            arg for lib, path in runtime.items() for arg in (f"-L{path.parent}", f"-l{lib}")]
        tools.run(tools.cxx, "-shared", f"-Wl,-soname,lib{name}.so", "-o", shared_lib,
                  glue_obj, *objects, *link_runtime)
    write_header(static_lib.stat().st_size, shared_lib.stat().st_size)

    def rel(path: Path) -> str:
        return path.relative_to(stage).as_posix()

    return {
        "c_library": {
            "name": name, "header": rel(header), "static_library": rel(static_lib),
            "shared_library": rel(shared_lib), "glue_source": rel(glue),
            "weights": "embedded" if embedded else rel(weights_file),
            "weights_table": [{"name": w.spec.name, "shape": list(w.spec.shape),
                               "dtype": w.spec.dtype, "offset": w.offset} for w in table],
            "system_lib_prefix": prefix, "triple": target.triple or "host",
            "compiler": tools.cxx, "runtime_libraries": list(runtime),
            "shared_library_links_runtime": bool(link_runtime),
        },
        "memory": {
            "activation_bytes": plan.activation_bytes,
            "planned_storage_bytes": list(plan.storage_bytes),
            "weights_file_bytes": len(blob),
            "static_library_bytes": static_lib.stat().st_size,
            "shared_library_bytes": shared_lib.stat().st_size,
        },
    }
