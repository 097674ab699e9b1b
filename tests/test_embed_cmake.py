"""The CMake package: configure, build and ctest the embedding example through
hwcompile_add_model; a missing runtime at configure time; cross builds.

Cross tests need Debian's cross compilers (g++-aarch64-linux-gnu, g++-arm-linux-gnueabihf);
they skip only when the compiler is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

CMAKE = shutil.which("cmake")
pytestmark = pytest.mark.skipif(CMAKE is None or shutil.which("ctest") is None,
                                reason="cmake/ctest not installed")


def configure(build: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([CMAKE, "-S", str(ROOT), "-B", str(build),
                           f"-DHWCOMPILE_PYTHON={sys.executable}", *options],
                          capture_output=True, text=True, check=False)


def build(build_dir: Path) -> None:
    proc = subprocess.run([CMAKE, "--build", str(build_dir), "-j2"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_ctest_builds_and_checks_the_example(digits_onnx, tmp_path):
    proc = configure(tmp_path, f"-DHWCOMPILE_DIGITS_ONNX={digits_onnx}")
    assert proc.returncode == 0, proc.stderr
    build(tmp_path)
    link = (tmp_path / "examples/embed_c/CMakeFiles/embed_c_example.dir/link.txt").read_text()
    assert "--whole-archive" in link  # applied by hwcompile_add_model, not by the example
    ctest = subprocess.run(["ctest", "--test-dir", str(tmp_path), "--output-on-failure", "-V"],
                           capture_output=True, text=True, check=False)
    assert ctest.returncode == 0, ctest.stdout[-4000:]
    assert "ok: bit-identical to the Python runtime over the same library" in ctest.stdout
    assert "100% tests passed" in ctest.stdout
    # Rebuilding without changes does not recompile the model.
    again = subprocess.run([CMAKE, "--build", str(tmp_path)], capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "hwcompile: compiling" not in again.stdout


def test_missing_runtime_library_fails_at_configure(tmp_path):
    proc = configure(tmp_path / "build", f"-DHWCOMPILE_TVM_RUNTIME_DIR={tmp_path / 'nowhere'}")
    assert proc.returncode != 0
    assert "hwcompile: TVM runtime library not found:" in proc.stderr
    assert str(tmp_path / "nowhere" / "libtvm_runtime.so") in proc.stderr.replace("\n", "")


def cross_build(toolchain: str, compiler: str, digits_onnx: Path, build_dir: Path) -> dict:
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed (Debian: apt-get install g++-{compiler[:-4]})")
    proc = configure(build_dir, f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'cmake/toolchains' / toolchain}",
                     f"-DHWCOMPILE_DIGITS_ONNX={digits_onnx}")
    assert proc.returncode == 0, proc.stderr
    assert "building the model library only" in proc.stdout
    build(build_dir)
    art = build_dir / "examples/embed_c/digits.hwc"
    return json.loads((art / "metadata.json").read_text()) | {"_art": art}


def elf_machine(path: Path) -> str:
    out = subprocess.run(["readelf", "-h", str(path)], capture_output=True, text=True, check=True)
    return next(line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
                if "Machine:" in line)


def test_cross_build_aarch64(digits_onnx, tmp_path):
    meta = cross_build("aarch64-linux-gnu.cmake", "aarch64-linux-gnu-g++", digits_onnx, tmp_path)
    assert meta["target"]["triple"] == meta["embed"]["c_library"]["triple"] == "aarch64-linux-gnu"
    assert elf_machine(meta["_art"] / "lib/libdigits.so") == "AArch64"
    members = subprocess.run(["ar", "t", str(meta["_art"] / "lib/libdigits.a")],
                             capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["ar", "x", str(meta["_art"] / "lib/libdigits.a")], cwd=tmp_path, check=True)
    assert {elf_machine(tmp_path / m) for m in members} == {"AArch64"}


@pytest.mark.slow
def test_cross_build_armv7(digits_onnx, tmp_path):
    meta = cross_build("armv7-linux-gnueabihf.cmake", "arm-linux-gnueabihf-g++", digits_onnx,
                       tmp_path)
    assert meta["embed"]["c_library"]["triple"] == "armv7a-linux-gnueabihf"
    assert elf_machine(meta["_art"] / "lib/libdigits.so") == "ARM"
