"""What the target CPU has: LLVM feature checks, the float32 vector width, and which
family of TVM tensor intrinsics its kernels can use."""

from __future__ import annotations

import tvm


def cpu_has(target: tvm.target.Target, feature: str) -> bool:
    """Whether LLVM says ``target``'s CPU has ``feature`` (``"avx512vnni"``); False for a
    triple this LLVM has no backend for."""
    try:
        return bool(tvm.target.codegen.target_has_features(feature, target))
    except Exception:  # TVM raises assorted errors for an unknown triple or CPU
        return False


def simd_floats(target: tvm.target.Target) -> int:
    """float32 lanes of the target CPU's widest vector unit (16 for AVX-512, 8 for AVX/AVX2,
    4 for SSE, NEON and anything LLVM cannot tell about)."""
    return 16 if cpu_has(target, "avx512f") else 8 if cpu_has(target, "avx") else 4


def intrinsics_family(target: tvm.target.Target) -> str:
    """The ``tvm.s_tir.tensor_intrin`` module for the target's architecture."""
    triple = str(target.attrs.get("mtriple", "")) if "mtriple" in target.attrs else ""
    if triple.startswith(("aarch64", "arm")):
        return "arm_cpu"
    if triple.startswith("riscv"):
        return "riscv_cpu"
    return "x86"
