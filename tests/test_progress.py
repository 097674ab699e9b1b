"""Progress of a TVM build: its phases announced in order while it runs."""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import relax

from hwcompile.progress import BuildProgress
from hwcompile.targets.cpu import cpu_target


def _matmul_module() -> tvm.IRModule:
    x = relax.Var("x", relax.TensorType((8, 64), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(np.ones((64, 32), "float32"))))
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    return bb.get()


def test_build_phases_are_announced_in_order_and_the_build_is_unchanged():
    target = cpu_target(None)
    lines: list[str] = []
    with BuildProgress(lines.append, "building", every=0.02):
        executable = tvm.compile(_matmul_module(), target.tvm_target,
                                 relax_pipeline=target.relax_pipeline())
        vm = relax.VirtualMachine(executable, tvm.cpu())
    phases = [re.match(r"building: (.+) \(\d+ s\)$", line).group(1) for line in lines]
    order = ["Relax passes", "TIR lowering", "LLVM code generation"]
    firsts = [phase for i, phase in enumerate(phases) if phase not in phases[:i]]
    assert firsts == [p for p in order if p in firsts]  # announced in build order
    assert {"Relax passes", "LLVM code generation"} <= set(firsts)
    x = np.random.default_rng(0).standard_normal((8, 64)).astype("float32")
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(),
                               np.maximum(x @ np.ones((64, 32), "float32"), 0), rtol=1e-5)


def test_build_progress_keeps_the_callers_pass_config():
    with tvm.transform.PassContext(opt_level=3, config={"tirx.disable_assert": True}):
        with BuildProgress(lambda line: None, "building"):
            inner = tvm.transform.PassContext.current()
            assert inner.opt_level == 3 and bool(inner.config["tirx.disable_assert"])
        assert not tvm.transform.PassContext.current().instruments
