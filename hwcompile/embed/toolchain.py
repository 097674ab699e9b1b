"""Where the TVM runtime lives, and the C++ toolchain that builds the embedding libraries.

Only ``libtvm_runtime`` and ``libtvm_ffi`` are needed to run a compiled model (a few MB),
never ``libtvm_compiler``. Both ship in the Python wheels, for the host architecture only;
``HWCOMPILE_TVM_RUNTIME_DIR`` points elsewhere (e.g. at a runtime built for the device).
Packages are located without importing them: importing tvm loads the 260 MB compiler.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hwcompile.errors import TargetError

RUNTIME_LIBS = ("tvm_runtime", "tvm_ffi")
# Debian's cross toolchains, by the triples targets/cpu/target.py produces.
_CROSS_PREFIX = {
    "aarch64-linux-gnu": "aarch64-linux-gnu-",
    "armv7a-linux-gnueabihf": "arm-linux-gnueabihf-",
    "riscv64-linux-gnu": "riscv64-linux-gnu-",
}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise TargetError(f"Python package '{name}' is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def include_dirs() -> list[Path]:
    """tvm-ffi's headers (complete in the wheel, unlike tvm's own) and DLPack's."""
    ffi = _package_dir("tvm_ffi") / "include"
    return [ffi]


def runtime_libraries() -> dict[str, Path]:
    """``{"tvm_runtime": path, "tvm_ffi": path}``; the paths may not exist (callers check)."""
    override = runtime_dir_override()
    if override:
        return {lib: override / f"lib{lib}.so" for lib in RUNTIME_LIBS}
    return {"tvm_runtime": _package_dir("tvm") / "lib" / "libtvm_runtime.so",
            "tvm_ffi": _package_dir("tvm_ffi") / "lib" / "libtvm_ffi.so"}


@dataclass(frozen=True)
class Toolchain:
    cxx: str
    ar: str
    nm: str
    cross: bool

    def run(self, *argv: str | Path) -> str:
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise TargetError(f"{Path(str(argv[0])).name} failed: "
                              f"{(proc.stderr or proc.stdout).strip()[:2000]}")
        return proc.stdout


def find_toolchain(triple: str, cross: bool) -> Toolchain:
    """The host's g++/ar/nm, the triple's Debian cross tools, or HWCOMPILE_CXX/_AR/_NM."""
    prefix = _CROSS_PREFIX.get(triple, f"{triple}-") if cross else ""
    tools = {}
    for tool, default in (("cxx", "g++"), ("ar", "ar"), ("nm", "nm")):
        chosen = os.environ.get(f"HWCOMPILE_{tool.upper()}") or f"{prefix}{default}"
        found = shutil.which(chosen)
        if found is None:
            hint = (f"install the {triple} cross compiler (Debian: g++-{prefix[:-1]}) or "
                    "set HWCOMPILE_CXX/HWCOMPILE_AR/HWCOMPILE_NM" if cross
                    else "install a C++ compiler or set HWCOMPILE_CXX/HWCOMPILE_AR/HWCOMPILE_NM")
            raise TargetError(f"c-library: '{chosen}' not found; {hint}")
        tools[tool] = found
    return Toolchain(cross=cross, **tools)


def runtime_dir_override() -> Path | None:
    """HWCOMPILE_TVM_RUNTIME_DIR: a TVM runtime built for the device, when cross compiling."""
    value = os.environ.get("HWCOMPILE_TVM_RUNTIME_DIR")
    return Path(value) if value else None
