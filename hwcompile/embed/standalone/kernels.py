"""The ``c`` target's kernel source, made self-contained, and what each kernel needs.

TVM writes one C function per kernel, ``int32_t __tvm_ffi_<name>(void* self, void* args,
int32_t num_args, void* result)``, and includes TVM headers for the argument types and the
few runtime functions it calls. Here the includes are dropped (the glue's template,
templates/standalone.c.in, declares those types and defines the functions, all ``static``
in one translation unit), every call is
checked against that short list, and each kernel's workspace and stack arrays are read off
the source so the arena and the stack estimate are known before anything is compiled. The
kernels are renamed ``hwc_kernel_<name>`` (``__`` names are reserved to the C
implementation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hwcompile.errors import TargetError

KERNEL_PREFIX = "__tvm_ffi_"
# What the kernels are called in the emitted C: names with "__" are reserved to the C
# implementation, and "hwc_" is the generated code's own prefix.
SYMBOL_PREFIX = "hwc_kernel_"
# What the generated code may call besides other kernels: the workspace and error hooks
# the glue defines, and the C99 <math.h> functions TVM's intrinsics lower to.
_RUNTIME_CALLS = {"TVMBackendAllocWorkspace", "TVMBackendFreeWorkspace",
                  "TVMFFIErrorSetRaisedFromCStrParts"}
_MATH = {f"{base}{suffix}" for suffix in ("", "f") for base in (
    "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "cbrt", "ceil", "copysign",
    "cos", "cosh", "erf", "erfc", "exp", "exp2", "expm1", "fabs", "fdim", "floor", "fma",
    "fmax", "fmin", "fmod", "hypot", "ldexp", "lgamma", "log", "log10", "log1p", "log2",
    "nearbyint", "pow", "remainder", "rint", "round", "sin", "sinh", "sqrt", "tan", "tanh",
    "tgamma", "trunc")} | {"isnan", "isinf", "isfinite", "signbit"}
_C_WORDS = {"if", "for", "while", "switch", "return", "sizeof", "else", "do"}
_CTYPE_BYTES = {"bool": 1, "int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2,
                "int32_t": 4, "uint32_t": 4, "float": 4, "int64_t": 8, "uint64_t": 8,
                "double": 8}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_DEFINITION = re.compile(rf"^TVM_DLL int32_t {KERNEL_PREFIX}(\w+)\(void\* self_handle, "
                         r"void\* args, int32_t num_args, void\* result\) \{$", re.MULTILINE)
_WORKSPACE = re.compile(r"TVMBackendAllocWorkspace\(((?:[^()]|\([^()]*\))*)\)")
_WORKSPACE_BYTES = re.compile(r"^\d+, \w+, \(uint64_t\)(\d+)ULL, \d+, \d+$")
_STACK_ARRAY = re.compile(r"^\s+(" + "|".join(_CTYPE_BYTES) + r") \w+\[(\d+)\];$", re.MULTILINE)
_DROPPED_LINES = re.compile(r'^(#define TVM_EXPORTS|#include "tvm/.*"|void\* __tvm_ffi__library_ctx'
                            r' = NULL;|#ifdef __cplusplus|extern "C"|#endif)\n', re.MULTILINE)
# TVM's own prototypes of the math functions it calls (<math.h> declares them).
_EXTERN_PROTOTYPE = re.compile(r"^TVM_DLL [\w ]+?\b(?!" + KERNEL_PREFIX + r")\w+\([^)]*\);\n",
                               re.MULTILINE)


@dataclass(frozen=True)
class Kernel:
    name: str
    workspace: tuple[int, ...]  # bytes of each TVMBackendAllocWorkspace call, in order
    stack_array_bytes: int      # the kernel's local arrays (intermediates under 1 KiB)


@dataclass(frozen=True)
class KernelSource:
    text: str                   # C, to follow abi.py's declarations in one translation unit
    kernels: dict[str, Kernel]

    def symbol(self, name: str) -> str:
        return f"{SYMBOL_PREFIX}{name}"


def _bodies(source: str) -> dict[str, str]:
    starts = list(_DEFINITION.finditer(source))
    bodies = {}
    for match in starts:
        end = source.find("\n}\n", match.end())
        bodies[match.group(1)] = source[match.end():end]
    return bodies


def _check_calls(name: str, body: str, kernels: set[str]) -> None:
    code = _STRING.sub('""', body)
    for callee in re.findall(r"\b([A-Za-z_]\w*)\s*\(", code):
        known = callee in _RUNTIME_CALLS or callee in _MATH or callee in _C_WORDS \
            or callee in _CTYPE_BYTES or callee.removeprefix(KERNEL_PREFIX) in kernels
        if not known and callee.startswith("TVM"):
            raise TargetError(f"c-standalone: kernel '{name}' makes a packed call ({callee}), "
                              "which needs the TVM runtime; use --emit c-library")
        if not known:
            raise TargetError(f"c-standalone: kernel '{name}' calls external function "
                              f"'{callee}', which is not part of the model; use --emit c-library")


def _workspace(name: str, body: str) -> tuple[int, ...]:
    sizes = []
    for args in _WORKSPACE.findall(body):
        match = _WORKSPACE_BYTES.match(args)
        if match is None:
            raise TargetError(f"c-standalone: kernel '{name}' allocates a workspace of "
                              f"non-constant size ({args}); fix every input shape with "
                              "--input-shape")
        sizes.append(int(match.group(1)))
    return tuple(sizes)


def parse(source: str, expected: list[str]) -> KernelSource:
    """Split TVM's C source into kernels (``expected``: the names main calls), check what
    they call, and strip the TVM includes."""
    bodies = _bodies(source)
    missing = [k for k in expected if k not in bodies]
    if missing:
        raise TargetError(f"c-standalone: TVM's C source lacks kernel '{missing[0]}'")
    kernels = {}
    for name, body in bodies.items():
        _check_calls(name, body, set(bodies))
        stack = sum(_CTYPE_BYTES[t] * int(n) for t, n in _STACK_ARRAY.findall(body))
        kernels[name] = Kernel(name, _workspace(name, body), stack)
    if source.count("__tvm_ffi__library_ctx") > 1:
        raise TargetError("c-standalone: the kernels use TVM's library context (packed calls); "
                          "use --emit c-library")
    text = _DROPPED_LINES.sub("", source.split("\n", 1)[1])  # line 1: "// tvm target: ..."
    text = _EXTERN_PROTOTYPE.sub("", text)
    text = re.sub(rf"\b{KERNEL_PREFIX}(\w+)\b",
                  lambda m: SYMBOL_PREFIX + m.group(1) if m.group(1) in bodies else m.group(0),
                  text)
    return KernelSource(text.strip() + "\n", kernels)
