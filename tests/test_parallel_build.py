"""Kernels built on several threads: one executable, the same results as tvm.compile's,
in process and after export."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from hwcompile import parallel_build
from hwcompile.targets.cpu import cpu_target


def _module() -> tuple[tvm.IRModule, np.ndarray]:
    """A small CNN-like chain: a few distinct fused kernels."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype("float32")
    w2 = rng.standard_normal((16, 8)).astype("float32")
    x = relax.Var("x", relax.TensorType((1, 3, 12, 12), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(w1), padding=1)))
            y = bb.emit(relax.op.mean(y, axis=[2, 3]))
            y = bb.emit(relax.op.sigmoid(relax.op.matmul(y, relax.const(w2.T.copy()))))
            out = bb.emit_output(relax.op.nn.softmax(y))
        bb.emit_func_output(out)
    return bb.get(), rng.standard_normal((1, 3, 12, 12)).astype("float32")


def _run(executable, x: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_split_build_matches_one_module_in_process_and_exported(tmp_path):
    mod, x = _module()
    target = cpu_target(None)
    whole = tvm.compile(mod, target.tvm_target, relax_pipeline=target.relax_pipeline())
    split = parallel_build.compile(mod, target.tvm_target, target.relax_pipeline(), jobs=3)
    (library,) = split.mod.imports
    assert len(library.imports) == 2  # three LLVM modules: the root and the two it imports
    expected = _run(whole, x)
    np.testing.assert_array_equal(_run(split, x), expected)
    jitted = parallel_build.compile(mod, target.tvm_target, target.relax_pipeline(), jobs=2,
                                    jit=True)
    np.testing.assert_array_equal(_run(jitted, x), expected)
    split.export_library(str(tmp_path / "m.so"))
    np.testing.assert_array_equal(_run(tvm.runtime.load_module(str(tmp_path / "m.so")), x),
                                  expected)


def test_export_on_threads_writes_the_library_tvm_writes(tmp_path):
    """The objects emitted on threads, linked as export_library links them: the same bytes,
    and the library runs."""
    mod, x = _module()
    target = cpu_target(None)
    split = parallel_build.compile(mod, target.tvm_target, target.relax_pipeline(), jobs=3)
    split.export_library(str(tmp_path / "tvm.so"))
    parallel_build.export_library(split, str(tmp_path / "threads.so"))
    assert (tmp_path / "threads.so").read_bytes() == (tmp_path / "tvm.so").read_bytes()
    np.testing.assert_array_equal(
        _run(tvm.runtime.load_module(str(tmp_path / "threads.so")), x), _run(split, x))
