"""--emit c-standalone: runtime-free C99 built with plain gcc on the host and, bare metal, for
Cortex-M3 and Cortex-M4F under QEMU; outputs against the CPU artifact (int8: bit-identical,
float: within 1e-5) and onnxruntime; the header's memory figures against the linker map;
the arena plan; the argument checks; bad inputs.

The QEMU tests need Debian's gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm
(.ci/run installs them); without them they skip, saying which is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HWCOMPILE, ROOT, ort_run

import hwcompile
from hwcompile.embed.standalone import emit_c_standalone
from hwcompile.embed.standalone.arena import Interval, pack
from hwcompile.errors import TargetError
from hwcompile.frontend import import_onnx
from hwcompile.pipeline import PassContext, parse_spec, run_pipeline

sys.path.insert(0, str(ROOT / "examples" / "embed_c" / "mcu"))
import mcu  # the example's build-and-run helper

N_IMAGES = 100
MCU_REASON = mcu.missing_tools()
needs_qemu = pytest.mark.skipif(MCU_REASON is not None, reason=f"bare-metal runs: {MCU_REASON}")
# What the generated objects may leave undefined: C99 <math.h> and <string.h> routines.
LIBC = {"memcpy", "memset", "memmove"}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return mcu.digits_images(N_IMAGES)


@pytest.fixture(scope="module")
def float_art(digits_onnx, tmp_path_factory) -> Path:
    return hwcompile.compile(digits_onnx, "cpu", tmp_path_factory.mktemp("sa") / "digits",
                             input_shapes={"input": (1, 1, 8, 8)}, emit=["c-standalone"],
                             emit_options={"name": "digits"})


@pytest.fixture(scope="module")
def int8_art(digits_onnx, digits_data, tmp_path_factory) -> Path:
    x_train = digits_data[0]
    return hwcompile.compile(
        digits_onnx, "cpu", tmp_path_factory.mktemp("sa") / "digits_int8",
        input_shapes={"input": (1, 1, 8, 8)}, passes="fold-constants,fold-batchnorm,quantize",
        calibration={"input": x_train[:256].reshape(256, 1, 1, 8, 8)},
        emit=["c-standalone"], emit_options={"name": "digits_int8"})


def cpu_outputs(art: Path, images: np.ndarray) -> np.ndarray:
    """The CPU artifact (model.so through the Relax VM) on each batch-1 sample."""
    model = hwcompile.load(art)
    return np.stack([np.asarray(model(x)).reshape(-1) for x in images])


def c_outputs(result: mcu.Run, dtype: str = "float32") -> np.ndarray:
    return np.stack([np.frombuffer(o, dtype) for o in result.outputs])


def compile_objects(model: mcu.Model, out: Path, *flags: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    objects = []
    for source in model.sources:
        obj = out / f"{source.stem}.o"
        subprocess.run(["gcc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2",
                        *flags, f"-I{model.header.parent}", "-c", str(source), "-o", str(obj)],
                       check=True, capture_output=True, text=True)
        objects.append(obj)
    return objects


def nm(obj: Path, *flags: str) -> set[str]:
    out = subprocess.run(["nm", *flags, str(obj)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


# ---- artifact, header, plan ------------------------------------------------------------

def test_artifact_records_the_standalone_sources_and_memory(float_art):
    meta = json.loads((float_art / "metadata.json").read_text())
    info, memory = meta["embed"]["c_standalone"], meta["memory"]
    for rel in [info["header"], *info["sources"]]:
        assert rel in meta["files"]  # checksummed like every artifact file
    model = mcu.Model.from_artifact(float_art)
    assert model.macro("ARENA_BYTES") == info["arena_bytes"] == memory["standalone_arena_bytes"]
    assert model.macro("WEIGHT_BYTES") == info["weight_bytes"] == meta["memory"]["weight_bytes"]
    assert model.macros["DIGITS_INPUT0_SHAPE"] == "{1, 1, 8, 8}"
    assert model.macro("INPUT0_BYTES") == 256 and model.macro("OUTPUT0_BYTES") == 40
    assert info["checks"] is False and info["steps"] >= len(info["kernels"]) > 0


def test_arena_layout_never_overlaps_live_blocks(float_art, int8_art):
    for art in (float_art, int8_art):
        info = json.loads((art / "metadata.json").read_text())["embed"]["c_standalone"]
        layout = info["arena_layout"]
        assert max(b["offset"] + b["bytes"] for b in layout) == info["arena_bytes"]
        for i, a in enumerate(layout):
            assert a["offset"] % 16 == 0
            for b in layout[i + 1:]:
                live_together = a["steps"][0] <= b["steps"][1] and b["steps"][0] <= a["steps"][1]
                apart = a["offset"] + a["bytes"] <= b["offset"] or b["offset"] + b["bytes"] <= a["offset"]
                assert apart or not live_together, (a, b)
        # Packed by lifetime: never more than every block side by side, nor Relax's
        # storages; here as small as it can be, the most bytes live at one step.
        assert info["arena_bytes"] <= sum(b["bytes"] for b in layout)
        assert info["arena_bytes"] <= info["relax_storage_bytes"]
        assert info["arena_bytes"] == info["live_peak_bytes"]


def test_packing_reuses_memory_of_dead_blocks_and_is_tight():
    blocks = [Interval(("block", 0), 64, 0, 1), Interval(("block", 1), 32, 1, 2),
              Interval(("block", 2), 64, 2, 3), Interval(("workspace", 3), 16, 3, 3)]
    arena = pack(blocks)
    peak = max(sum(b.nbytes for b in blocks if b.first <= t <= b.last) for t in range(4))
    assert arena.size == peak == 96  # blocks 0 and 2 share memory, so do 1 and the workspace
    assert arena.offsets[("block", 0)] == arena.offsets[("block", 2)]
    assert arena.offsets[("block", 1)] == arena.offsets[("workspace", 3)]


# ---- plain C on the host ---------------------------------------------------------------

def test_sources_are_plain_c99_that_need_only_libc_and_libm(float_art, int8_art, tmp_path):
    from hwcompile.embed.standalone.kernels import _MATH

    for art in (float_art, int8_art):
        model = mcu.Model.from_artifact(art)
        objects = compile_objects(model, tmp_path / model.name)
        defined = set().union(*(nm(o, "-g", "--defined-only") for o in objects))
        undefined = set().union(*(nm(o, "-u") for o in objects)) - defined
        assert undefined <= _MATH | LIBC, undefined - _MATH - LIBC
        weights = {d for d in defined if re.fullmatch(rf"{model.name}_weight\d+", d)}
        assert defined - weights == {f"{model.name}_run", f"{model.name}_arena"}
        text = "".join(s.read_text() for s in model.sources)
        assert "#include \"tvm/" not in text and "malloc" not in text and "FILE" not in text


def test_host_float_outputs_match_the_cpu_artifact_and_onnxruntime(float_art, images,
                                                                   digits_onnx, tmp_path):
    model = mcu.Model.from_artifact(float_art)
    result = mcu.run(mcu.build(model, images, tmp_path, "host", opt="-O2"), "host")
    got = c_outputs(result)
    np.testing.assert_allclose(got, cpu_outputs(float_art, images), rtol=0, atol=1e-5)
    ref = ort_run(digits_onnx, {"input": images.reshape(-1, 1, 8, 8)})[0]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_host_int8_outputs_are_bit_identical_to_the_cpu_artifact(int8_art, images, tmp_path):
    model = mcu.Model.from_artifact(int8_art)
    result = mcu.run(mcu.build(model, images, tmp_path, "host", opt="-O2"), "host")
    got, ref = c_outputs(result), cpu_outputs(int8_art, images)
    assert got.tobytes() == ref.astype(np.float32).tobytes()


CHECKS_MAIN = r"""
#include <stdio.h>
#include "digits.h"
int main(void) {
  static float image[64], logits[10];
  const void* inputs[] = {image};
  void* outputs[] = {logits};
  int status = digits_run(inputs, 1, outputs, 1);
  printf("%d %s\n", status, status ? digits_last_error() : "");
  return 0;
}
"""


@pytest.fixture(scope="module")
def digits_model(digits_onnx):
    """The folded digits Model (batch 1), for emitting without building the CPU artifact."""
    source = import_onnx(digits_onnx, input_shapes={"input": (1, 1, 8, 8)})
    return run_pipeline(source, parse_spec("fold-constants,fold-batchnorm,dce"), PassContext())[0]


def test_argument_checks_report_a_mismatched_tensor(digits_model, tmp_path):
    """--c-checks keeps TVM's checks: a tensor table that disagrees with a kernel (corrupted
    here on purpose) fails the run with HWC_ERR_RUNTIME and the kernel's message."""
    emit_c_standalone(digits_model, None, tmp_path, name="digits", checks=True)
    (tmp_path / "main.c").write_text(CHECKS_MAIN)
    glue = tmp_path / "standalone" / "src" / "digits.c"
    model = mcu.Model(tmp_path, "digits", tmp_path / "standalone/include/digits.h",
                      (glue, glue.with_name("digits_weights.c")), {})

    def run() -> str:
        objects = compile_objects(model, tmp_path / "obj")
        subprocess.run(["gcc", "-I", str(model.header.parent), str(tmp_path / "main.c"),
                        *map(str, objects), "-lm", "-o", str(tmp_path / "prog")], check=True)
        return subprocess.run([str(tmp_path / "prog")], capture_output=True, text=True,
                              check=True).stdout.strip()

    assert run() == "0"
    text = glue.read_text()
    first_shape = re.search(r"hwc_shape0\[4\] = \{1, 1, 8, 8\}", text)
    assert first_shape is not None
    glue.write_text(text.replace(first_shape.group(0), "hwc_shape0[4] = {1, 1, 8, 9}"))
    status, _, message = run().partition(" ")
    assert status == "5"  # HWC_ERR_RUNTIME
    assert "ValueError:" in message and "shape" in message


USER_ARENA_MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include "digits.h"
int main(void) {
  static float image[64], logits[10];
  const void* inputs[] = {image};
  void* outputs[] = {logits};
  printf("%d %d %d\n", digits_run(inputs, 1, outputs, 1), digits_run(inputs, 0, outputs, 1),
         digits_run(NULL, 1, outputs, 1));
  return 0;
}
"""


def test_a_user_supplied_arena_and_status_codes(float_art, tmp_path):
    model = mcu.Model.from_artifact(float_art)
    user = tmp_path / "arena.c"
    user.write_text('#include <stdint.h>\n#include "digits.h"\n'
                    "__attribute__((aligned(16))) uint8_t digits_arena[DIGITS_ARENA_BYTES];\n")
    (tmp_path / "main.c").write_text(USER_ARENA_MAIN)
    objects = compile_objects(model, tmp_path / "obj", "-DDIGITS_ARENA_USER")
    assert "digits_arena" not in nm(objects[0], "-g", "--defined-only")
    subprocess.run(["gcc", f"-I{model.header.parent}", str(tmp_path / "main.c"), str(user),
                    *map(str, objects), "-lm", "-o", str(tmp_path / "prog")], check=True)
    out = subprocess.run([str(tmp_path / "prog")], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "2", "1"]  # ok, input count, NULL argument


def test_the_same_model_gives_byte_identical_sources(digits_model, tmp_path):
    for run in ("a", "b"):
        emit_c_standalone(digits_model, None, tmp_path / run, name="digits")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.[ch]"))
    assert len(files) == 3
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


# ---- bad inputs: one clear line --------------------------------------------------------

def test_symbolic_shape_is_refused_in_one_line(digits_onnx, tmp_path):
    proc = subprocess.run([HWCOMPILE, "compile", str(digits_onnx), "-o", str(tmp_path / "a"),
                           "--emit", "c-standalone"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [("error: c-standalone: 'input' has symbolic shape Nx1x8x8; fix it with "
                       "--input-shape input=<dims> (e.g. batch 1)")]
    assert "Traceback" not in proc.stderr and not (tmp_path / "a").exists()


def extern_model(call: str):
    from tvm.script import ir as I
    from tvm.script import relax as R
    from tvm.script import tirx as T

    from hwcompile.model import Model, TensorSpec

    @I.ir_module
    class Mod:
        @T.prim_func
        def dsp_scale(x: T.Buffer((4,), "float32"), y: T.Buffer((4,), "float32")):
            for i in range(4):
                if call == "extern":
                    y[i] = T.call_extern("float32", "arm_scale_f32", x[i])
                else:
                    T.evaluate(T.call_packed("my.packed", x.data))

        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            cls = Mod
            y = R.call_tir(cls.dsp_scale, (x,), out_ty=R.Tensor((4,), "float32"))
            return y

    return Model(Mod, {}, [TensorSpec("x", (4,), "float32")], [TensorSpec("y", (4,), "float32")])


@pytest.mark.parametrize("call, message", [
    ("extern", ("kernel 'dsp_scale' calls external function 'arm_scale_f32', which is not "
                "part of the model; use --emit c-library")),
    ("packed", ("kernel 'dsp_scale' makes a packed call (TVMFFIEnvModLookupFromImports), "
                "which needs the TVM runtime; use --emit c-library")),
])
def test_a_kernel_with_external_calls_is_refused_naming_it(call, message, tmp_path):
    with pytest.raises(TargetError) as err:
        emit_c_standalone(extern_model(call), None, tmp_path, name="ext")
    assert str(err.value) == f"c-standalone: {message}"


@pytest.mark.parametrize("name, emitted, message", [
    ("hwc", (), ("name 'hwc' clashes with the generated code's own identifiers (hwc_*, "
                 "HWC_*); choose another --c-name")),
    ("Digits", (), ("--c-name 'Digits' is not a C identifier prefix (lower-case letters, "
                    "digits and '_', not starting with a digit); e.g. 'digits'")),
    ("digits", ("c-library", "c-standalone"),
     "--emit c-library also defines digits_run (another API); emit them into separate artifacts"),
])
def test_name_clashes_are_refused(name, emitted, message, digits_model, tmp_path):
    with pytest.raises(TargetError) as err:
        emit_c_standalone(digits_model, None, tmp_path, name=name, emitted=emitted)
    assert str(err.value) == f"c-standalone: {message}"


# ---- bare metal: Cortex-M3 and Cortex-M4F under QEMU -----------------------------------

# Float on the Cortex-M3 is soft-float, ~40 M instructions an image: 100 images take ~15 s
# under QEMU, so the default suite runs 25 and the slow suite all 100.
QEMU_CASES = [("int8", "cortex-m3", N_IMAGES), ("int8", "cortex-m4f", N_IMAGES),
              ("float", "cortex-m4f", N_IMAGES), ("float", "cortex-m3", 25),
              pytest.param("float", "cortex-m3", N_IMAGES, marks=pytest.mark.slow)]


@needs_qemu
@pytest.mark.parametrize("which, core, count", QEMU_CASES)
def test_digits_on_cortex_m_under_qemu(which, core, count, float_art, int8_art, images,
                                       tmp_path):
    art = int8_art if which == "int8" else float_art
    model = mcu.Model.from_artifact(art)
    program = mcu.build(model, images[:count], tmp_path, core)
    result = mcu.run(program, core)
    got, ref = c_outputs(result), cpu_outputs(art, images[:count])
    assert got.shape == (count, 10)
    if which == "int8":
        assert got.tobytes() == ref.astype(np.float32).tobytes()
    else:
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    # The header's figures against the linker map and the run.
    fig = mcu.map_figures(tmp_path / "program.map", model)
    assert fig.symbols[f"{model.name}_arena"] == model.macro("ARENA_BYTES")
    assert fig.get("flash", "weights") == model.macro("WEIGHT_BYTES")
    assert fig.get("ram", "glue") - model.macro("ARENA_BYTES") <= 16  # the allocator's state
    assert fig.get("ram", "weights") == fig.get("ram", "library") == 0
    assert 0 < result.stack_bytes <= model.macro("STACK_BYTES")
    overhead = fig.get("flash", "glue") + fig.get("flash", "library")
    assert overhead <= 4096, overhead
    if which == "int8":  # below TFLite Micro's framework (~10 KB on a Cortex-M3) + weights
        total = overhead + fig.get("flash", "kernels") + fig.get("flash", "weights")
        assert total < 10 * 1024 + model.macro("WEIGHT_BYTES"), total


# ---- CMake: a plain static library a bare-metal toolchain builds -----------------------

@needs_qemu
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake_builds_a_bare_metal_program_that_runs_under_qemu(digits_onnx, tmp_path):
    from hwcompile.embed.standalone.kernels import _MATH

    build = tmp_path / "build"
    configure = subprocess.run(
        ["cmake", "-S", str(ROOT / "examples/embed_c/mcu"), "-B", str(build),
         f"-Dhwcompile_DIR={ROOT / 'cmake'}", f"-DHWCOMPILE_PYTHON={sys.executable}",
         f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'cmake/toolchains/arm-none-eabi.cmake'}",
         "-DHWCOMPILE_CORTEX_M=cortex-m4f", f"-DHWCOMPILE_DIGITS_ONNX={digits_onnx}"],
        capture_output=True, text=True, check=False)
    assert configure.returncode == 0, configure.stderr[-3000:]
    assert "bare-metal build (arm): EMIT c-standalone models only" in configure.stdout
    done = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    library = build / "libdigits.a"
    listing = subprocess.run(["arm-none-eabi-nm", "-g", str(library)], capture_output=True,
                             text=True, check=True).stdout
    symbols = [line.split() for line in listing.splitlines() if " " in line.strip()]
    undefined = {s[-1] for s in symbols if s[0] == "U"}
    defined = {s[-1] for s in symbols if len(s) == 3}
    assert undefined - defined <= _MATH | LIBC
    assert {"digits_run", "digits_arena"} <= defined
    ctest = subprocess.run(["ctest", "--test-dir", str(build), "--output-on-failure"],
                           capture_output=True, text=True, check=False)
    assert ctest.returncode == 0 and "100% tests passed" in ctest.stdout, ctest.stdout[-3000:]


# ---- a real exported CNN from the corpus -----------------------------------------------

CORPUS_CNN = ROOT / "tests" / "corpus" / "models" / "mobilenetv3_small.onnx"


@pytest.fixture(scope="module")
def corpus_art(tmp_path_factory) -> Path:
    """timm's MobileNetV3-small (width 0.5; depthwise convs, hard-swish, squeeze-excite),
    exported by PyTorch, at 64x64 instead of its 128x128: an 80 KB arena (at 128x128 it
    needs 320 KB, more RAM than most microcontrollers have)."""
    if not CORPUS_CNN.is_file():
        pytest.skip(f"{CORPUS_CNN} is not in this checkout")
    return hwcompile.compile(CORPUS_CNN, "cpu", tmp_path_factory.mktemp("sa") / "mnv3",
                             input_shapes={"image": (1, 3, 64, 64)}, emit=["c-standalone"],
                             emit_options={"name": "mobilenet"})


@pytest.mark.slow
@needs_qemu
@pytest.mark.parametrize("core", ["cortex-m3", "cortex-m4f"])
def test_corpus_mobilenet_on_cortex_m_under_qemu(core, corpus_art, tmp_path):
    model = mcu.Model.from_artifact(corpus_art)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 1, 3, 64, 64)).astype(np.float32)
    result = mcu.run(mcu.build(model, images, tmp_path, core), core)
    np.testing.assert_allclose(c_outputs(result), cpu_outputs(corpus_art, images), rtol=0,
                               atol=1e-5)
    fig = mcu.map_figures(tmp_path / "program.map", model)
    assert fig.symbols["mobilenet_arena"] == model.macro("ARENA_BYTES") <= 256 * 1024
    assert fig.get("flash", "weights") == model.macro("WEIGHT_BYTES")
    assert 0 < result.stack_bytes <= model.macro("STACK_BYTES")
