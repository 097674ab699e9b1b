"""Register only the tensorization intrinsics a target's family can use.

``import tvm.s_tir.tensor_intrin`` registers every family's intrinsics (CUDA, ARM, x86,
ROCm, Hexagon, RISC-V) and takes 30 s to minutes on a loaded 2-core machine; MetaSchedule
imports it in every TuneContext and builder process. One family alone takes a few seconds.
We stand a package module (with the real ``__path__``) in for it and import just the
family module the target names (``Target.tensor_intrinsics``); a later real import finds
the family already loaded.
"""

from __future__ import annotations

import importlib
import sys
import types

_PACKAGE = "tvm.s_tir.tensor_intrin"


def register_for(target_family: str) -> None:
    """Import ``tvm.s_tir.tensor_intrin.<family>`` without the package's other families."""
    if _PACKAGE not in sys.modules:
        from tvm import s_tir

        stand_in = types.ModuleType(_PACKAGE)
        stand_in.__path__ = [f"{s_tir.__path__[0]}/tensor_intrin"]
        sys.modules[_PACKAGE] = stand_in
    importlib.import_module(f"{_PACKAGE}.{target_family}")
