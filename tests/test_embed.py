"""--emit c-library: the header's figures, the C API against the Python runtime over the same
library, static linking without whole-archive flags, and the C API's error codes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import HWCOMPILE, ROOT, float_model, ort_run
from onnx import helper

import hwcompile
from hwcompile.embed.pyload import CLibraryModel
from hwcompile.embed.toolchain import runtime_libraries
from hwcompile.errors import ArtifactError, TargetError

EXAMPLE = ROOT / "examples" / "embed_c" / "main.c"


@pytest.fixture(scope="module")
def digits_clib(digits_onnx, tmp_path_factory) -> Path:
    return hwcompile.compile(digits_onnx, "cpu", tmp_path_factory.mktemp("clib") / "digits",
                             input_shapes={"input": (1, 1, 8, 8)}, emit=["c-library"],
                             emit_options={"name": "digits"})


@pytest.fixture(scope="module")
def conv_bn_file_clib(conv_bn_onnx, tmp_path_factory) -> Path:
    """Weights in a separate file; the C API named 'convbn'."""
    return hwcompile.compile(conv_bn_onnx, "cpu", tmp_path_factory.mktemp("clib") / "convbn",
                             input_shapes={"x": (1, 3, 8, 8)}, emit=["c-library"],
                             emit_options={"name": "convbn", "weights": "file"})


def macros(header: Path) -> dict[str, str]:
    return dict(re.findall(r"^#define (\w+) (.+?)\s*(?:/\*.*)?$", header.read_text(), re.MULTILINE))


def build_c(source: Path, art: Path, name: str, out: Path, shared: bool = False) -> Path:
    """Compile ``source`` against the artifact's library with plain flags (no whole-archive)."""
    runtime = runtime_libraries()
    library = art / "lib" / (f"lib{name}.so" if shared else f"lib{name}.a")
    rpath = ":".join(str(p.parent) for p in [*runtime.values(), library])
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", f"-I{art / 'include'}", str(source),
                    str(library), *[f"-L{p.parent}" for p in runtime.values()],
                    "-ltvm_runtime", "-ltvm_ffi", "-lstdc++",
                    "-Wl,--disable-new-dtags", f"-Wl,-rpath,{rpath}", "-o", str(out)],
                   check=True, capture_output=True, text=True)
    return out


def run_example(binary: Path, images: np.ndarray, tmp: Path, *extra: str
                ) -> subprocess.CompletedProcess:
    images.astype(np.float32).tofile(tmp / "images.f32")
    return subprocess.run([str(binary), str(tmp / "images.f32"), str(tmp / "logits.f32"), *extra],
                          capture_output=True, text=True, check=False)


def test_artifact_lists_c_library_and_memory(digits_clib):
    meta = hwcompile.load(digits_clib).metadata
    info, memory = meta["embed"]["c_library"], meta["memory"]
    for key in ("header", "static_library", "shared_library", "glue_source"):
        assert info[key] in meta["files"]  # checksummed like every artifact file
    assert info["system_lib_prefix"] == "hwcompile_digits_"
    assert memory["activation_bytes"] == sum(memory["planned_storage_bytes"]) > 0
    assert memory["static_library_bytes"] == (digits_clib / info["static_library"]).stat().st_size


def test_header_macros_equal_what_the_runtime_reports(digits_clib, digits_onnx):
    header = macros(digits_clib / "include" / "digits.h")
    library = CLibraryModel(digits_clib)
    onnx_model = onnx.load(digits_onnx)
    checked: set[str] = set()

    def check(macro: str, value: object) -> None:
        assert header[macro] == str(value), macro
        checked.add(macro)

    # Inputs/outputs: the ONNX signature (batch fixed to 1) and the tensors the runtime returns.
    storages: list[int] = []

    def record(func, name, before, ret, *args) -> None:
        if before and name == "vm.builtin.alloc_storage":  # args: allocator, (bytes,), ...
            storages.append(int(args[1][0]))

    library.set_instrument(record)
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    outputs = library(x)
    check("DIGITS_NUM_INPUTS", len(onnx_model.graph.input))
    check("DIGITS_NUM_OUTPUTS", len(outputs))
    check("DIGITS_INPUT0_NAME", f'"{onnx_model.graph.input[0].name}"')
    check("DIGITS_INPUT0_DTYPE", f'"{x.dtype}"')
    check("DIGITS_INPUT0_NDIM", x.ndim)
    check("DIGITS_INPUT0_SHAPE", "{" + ", ".join(map(str, x.shape)) + "}")
    check("DIGITS_INPUT0_BYTES", x.nbytes)
    check("DIGITS_OUTPUT0_NAME", f'"{onnx_model.graph.output[0].name}"')
    check("DIGITS_OUTPUT0_DTYPE", f'"{outputs[0].dtype}"')
    check("DIGITS_OUTPUT0_NDIM", outputs[0].ndim)
    check("DIGITS_OUTPUT0_SHAPE", "{" + ", ".join(map(str, outputs[0].shape)) + "}")
    check("DIGITS_OUTPUT0_BYTES", outputs[0].nbytes)
    check("DIGITS_IO_BYTES", x.nbytes + outputs[0].nbytes)
    with pytest.raises(Exception, match="shape"):  # the runtime itself enforces that shape
        library(np.zeros((2, 1, 8, 8), np.float32))
    # Memory: storages the VM allocated during the run; weights in the executable's constant
    # pool (tensor shapes, all float32 in this model).
    check("DIGITS_ACTIVATION_BYTES", sum(storages))
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in onnx_model.graph.initializer)
    pool = library.stats().split("Constant pool")[1].split("\n")[0]
    shapes = re.findall(r"(?<!shapetuple)\[([\d, ]+)\]", pool)
    check("DIGITS_WEIGHT_BYTES", sum(4 * int(np.prod([int(d) for d in s.split(",")])) for s in shapes))
    check("DIGITS_WEIGHTS_FILE_BYTES", 0)
    check("DIGITS_STATIC_LIBRARY_BYTES", (digits_clib / "lib" / "libdigits.a").stat().st_size)
    check("DIGITS_SHARED_LIBRARY_BYTES", (digits_clib / "lib" / "libdigits.so").stat().st_size)
    model_macros = {m for m in header if m.startswith("DIGITS_")}
    assert checked == model_macros - {"HWCOMPILE_MODEL_DIGITS_H_"}


@pytest.mark.parametrize("shared", [False, True], ids=["static-no-whole-archive", "shared"])
def test_c_example_matches_python_runtime_bit_for_bit(digits_clib, digits_onnx, digits_data,
                                                      tmp_path, shared):
    binary = build_c(EXAMPLE, digits_clib, "digits", tmp_path / "example", shared=shared)
    images = digits_data[2][:30]
    proc = run_example(binary, images, tmp_path)
    assert proc.returncode == 0, proc.stderr
    logits = np.fromfile(tmp_path / "logits.f32", np.float32).reshape(len(images), 10)
    reference = np.concatenate([CLibraryModel(digits_clib)(x[None])[0] for x in images])
    assert np.array_equal(logits, reference)
    np.testing.assert_allclose(logits, ort_run(digits_onnx, {"input": images})[0],
                               rtol=1e-4, atol=1e-4)
    assert [int(v) for v in proc.stdout.split()[-len(images):]] == list(logits.argmax(1))


ERRORS_C = r"""
#include <stdio.h>
#include "digits.h"
static void show(const char* what, int status) {
  printf("%s %d %s | %s\n", what, status, digits_status_string(status), digits_last_error());
}
int main(void) {
  digits_model* model = NULL;
  show("create_with_path", digits_create("unused.weights", &model));
  show("create_null_out", digits_create(NULL, NULL));
  int status = digits_create(NULL, &model);
  show("create", status);
  if (status != HWC_OK) return 1;
  static float x[DIGITS_INPUT0_BYTES / 4], y[DIGITS_OUTPUT0_BYTES / 4];
  const void* in[2] = {x, x};
  void* out[1] = {y};
  show("two_inputs", digits_run(model, in, 2, out, 1));
  show("zero_inputs", digits_run(model, in, 0, out, 1));
  show("two_outputs", digits_run(model, in, 1, out, 2));
  show("null_output", digits_run(model, in, 1, NULL, 1));
  show("ok", digits_run(model, in, 1, out, 1));
  digits_destroy(model);
  return 0;
}
"""


def test_c_api_error_codes(digits_clib, tmp_path):
    (tmp_path / "errors.c").write_text(ERRORS_C)
    proc = subprocess.run([str(build_c(tmp_path / "errors.c", digits_clib, "digits",
                                       tmp_path / "errors"))], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    codes = {k: int(v.split()[1]) for k, v in lines.items()}
    header = macros(digits_clib / "include" / "digits.h")
    assert codes["create_with_path"] == int(header["HWC_ERR_WEIGHTS"])
    assert "embedded" in lines["create_with_path"]
    assert codes["create_null_out"] == int(header["HWC_ERR_ARGUMENT"])
    assert codes["create"] == codes["ok"] == int(header["HWC_OK"])
    assert codes["two_inputs"] == codes["zero_inputs"] == int(header["HWC_ERR_INPUT_COUNT"])
    assert "2 inputs given, the model takes 1" in lines["two_inputs"]
    assert codes["two_outputs"] == int(header["HWC_ERR_OUTPUT_COUNT"])
    assert codes["null_output"] == int(header["HWC_ERR_ARGUMENT"])


CONVBN_C = r"""
#include <stdio.h>
#include "convbn.h"
int main(int argc, char** argv) {
  static float x[CONVBN_INPUT0_BYTES / 4], y[CONVBN_OUTPUT0_BYTES / 4];
  if (fread(x, 1, sizeof(x), stdin) != sizeof(x)) return 3;
  convbn_model* model = NULL;
  int status = convbn_create(argc > 1 ? argv[1] : NULL, &model);
  if (status != HWC_OK) {
    fprintf(stderr, "%d %s\n", status, convbn_last_error());
    return 1;
  }
  const void* in[1] = {x};
  void* out[1] = {y};
  status = convbn_run(model, in, 1, out, 1);
  convbn_destroy(model);
  fwrite(y, 1, sizeof(y), stdout);
  return status;
}
"""


def test_weights_in_a_separate_file(conv_bn_file_clib, conv_bn_onnx, tmp_path):
    art = conv_bn_file_clib
    header = macros(art / "include" / "convbn.h")
    weights_file = art / "lib" / "convbn.weights"
    library = CLibraryModel(art)
    weights = library.weights()
    assert int(header["CONVBN_WEIGHT_BYTES"]) == sum(w.nbytes for w in weights) > 0
    assert int(header["CONVBN_WEIGHTS_FILE_BYTES"]) == weights_file.stat().st_size
    (tmp_path / "convbn.c").write_text(CONVBN_C)
    binary = build_c(tmp_path / "convbn.c", art, "convbn", tmp_path / "convbn")
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(binary), *args], input=x.tobytes(), capture_output=True, check=False)

    proc = run(str(weights_file))
    assert proc.returncode == 0, proc.stderr
    y = np.frombuffer(proc.stdout, np.float32).reshape(1, 10)
    assert np.array_equal(y, library(x)[0])
    np.testing.assert_allclose(y, ort_run(conv_bn_onnx, {"x": x})[0], rtol=1e-4, atol=1e-4)

    # The model changed after the library was built: its weights no longer match.
    changed = bytearray(weights_file.read_bytes())
    changed[-1] ^= 0x55
    (tmp_path / "changed.weights").write_bytes(bytes(changed))
    (tmp_path / "short.weights").write_bytes(bytes(changed[:-4]))
    for path in ("changed.weights", "short.weights"):
        proc = run(str(tmp_path / path))
        assert proc.returncode == 1
        assert proc.stderr.decode().startswith(f"{header['HWC_ERR_WEIGHTS']} ")
        assert b"the model changed after it was built" in proc.stderr
    proc = run()
    assert proc.returncode == 1 and b"convbn.weights" in proc.stderr
    proc = run(str(tmp_path / "missing.weights"))
    assert proc.returncode == 1 and b"cannot open weights file" in proc.stderr


def test_changed_library_is_refused(conv_bn_file_clib, tmp_path):
    import shutil

    copy = shutil.copytree(conv_bn_file_clib, tmp_path / "art")
    with open(copy / "lib" / "libconvbn.a", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="modified after compilation"):
        CLibraryModel(copy)


def test_symbolic_shapes_need_input_shape(conv_bn_onnx, tmp_path):
    proc = subprocess.run([HWCOMPILE, "compile", str(conv_bn_onnx), "-o", str(tmp_path / "a"),
                           "--emit", "c-library"], capture_output=True, text=True, check=False)
    assert proc.returncode == TargetError.exit_code
    error = proc.stderr.splitlines()[-1]
    assert error.startswith("error: c-library: 'x' has symbolic shape Nx3x8x8")
    assert "--input-shape x=" in error
    assert not (tmp_path / "a").exists()


def test_written_kernels_with_flat_views_in_a_c_library(tmp_path):
    """Attention scores and softmax: the CPU target's written kernels read their tensors
    through flat buffer views (batch_matmul.py, schedule_softmax.py), which TVM's symbol
    prefixing of a system library cannot rename; the library must still build and compute
    what onnxruntime computes."""
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Softmax", ["s"], ["y"], axis=-1)]
    model = float_model("attention", nodes, [], {"q": [1, 2, 13, 8], "kt": [1, 2, 8, 37]},
                        {"y": [1, 2, 13, 37]})
    art = hwcompile.compile(model, "cpu", tmp_path / "attention", emit=["c-library"],
                            emit_options={"name": "attention"})
    rng = np.random.default_rng(3)
    q = rng.standard_normal((1, 2, 13, 8)).astype(np.float32)
    kt = rng.standard_normal((1, 2, 8, 37)).astype(np.float32)
    got = CLibraryModel(art)(q, kt)[0]
    np.testing.assert_allclose(got, ort_run(model, {"q": q, "kt": kt})[0], rtol=1e-5, atol=1e-6)
