"""Register only the tensorization intrinsics a target's family can use.

``import tvm.s_tir.tensor_intrin`` registers every family's intrinsics (CUDA, ARM, x86,
ROCm, Hexagon, RISC-V) and takes 30 s to minutes on a loaded 2-core machine; MetaSchedule
imports it in every TuneContext and builder process. The x86 set alone takes ~3 s.
We stand a package module (with the real ``__path__``) in for it and import just the
family module the target needs; a later real import finds the family already loaded.
"""

from __future__ import annotations

import importlib
import sys
import types

import tvm

_PACKAGE = "tvm.s_tir.tensor_intrin"


def cpu_has(target: tvm.target.Target, feature: str) -> bool:
    """Whether LLVM says ``target``'s CPU has ``feature`` (``"avx512vnni"``); False for a
    triple this LLVM has no backend for."""
    try:
        return bool(tvm.target.codegen.target_has_features(feature, target))
    except Exception:  # TVM raises assorted errors for an unknown triple or CPU
        return False


def family(target: tvm.target.Target) -> str:
    if target.kind.name == "cuda":
        return "cuda"
    triple = str(target.attrs.get("mtriple", "")) if "mtriple" in target.attrs else ""
    if triple.startswith(("aarch64", "arm")):
        return "arm_cpu"
    if triple.startswith("riscv"):
        return "riscv_cpu"
    return "x86"


def register_for(target_family: str) -> None:
    """Import ``tvm.s_tir.tensor_intrin.<family>`` without the package's other families."""
    if _PACKAGE not in sys.modules:
        from tvm import s_tir

        stand_in = types.ModuleType(_PACKAGE)
        stand_in.__path__ = [f"{s_tir.__path__[0]}/tensor_intrin"]
        sys.modules[_PACKAGE] = stand_in
    importlib.import_module(f"{_PACKAGE}.{target_family}")
