"""``python -m hwcompile.embed cmake-info``: CMake ``set()`` lines locating the TVM runtime.

cmake/hwcompileConfig.cmake includes the output; it must not import tvm (slow, and the
configure step only needs paths).
"""

from __future__ import annotations

import sys

from .toolchain import include_dirs, runtime_libraries


def _cmake_quote(value: object) -> str:
    return '"' + str(value).replace("\\", "/").replace('"', '\\"') + '"'


def cmake_info() -> str:
    runtime = runtime_libraries()
    lines = [f"set(HWCOMPILE_TVM_RUNTIME_LIBRARY {_cmake_quote(runtime['tvm_runtime'])})",
             f"set(HWCOMPILE_TVM_FFI_LIBRARY {_cmake_quote(runtime['tvm_ffi'])})",
             "set(HWCOMPILE_TVM_INCLUDE_DIRS "
             + " ".join(_cmake_quote(d) for d in include_dirs()) + ")"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv != ["cmake-info"]:
        print("usage: python -m hwcompile.embed cmake-info", file=sys.stderr)
        return 2
    sys.stdout.write(cmake_info())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
