"""CPU target through LLVM: the host (detected CPU and cores), explicit JSON, tags, and
cross-compilation to another triple (an object archive when no cross linker exists)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import Schedule

from hwcompile import parallel_build
from hwcompile.errors import TargetError
from hwcompile.model import Model
from hwcompile.sparse_weights import SPARSE_FILE, compact_worthy
from hwcompile.sparse_weights import write as write_sparse
from hwcompile.target import BuildResult, Constraints, Target, register_target
from hwcompile.tune.database import open_database
from hwcompile.tune.kernels import reduction_blocks

from .batch_matmul import batch_matmul_shape
from .defaults import heuristic_schedule
from .depthwise import holds_depthwise
from .features import intrinsics_family, simd_floats
from .int8_dot import block_dot, int8_dot_product
from .pipeline import cpu_pipeline, tunable_module
from .schedule_softmax import softmax_shape

# Short names for common cross triples; anything else is taken as a full LLVM triple.
_TRIPLES = {
    "aarch64": "aarch64-linux-gnu",
    "arm64": "aarch64-linux-gnu",
    "armv7": "armv7a-linux-gnueabihf",
    "riscv64": "riscv64-linux-gnu",
    "x86_64": "x86_64-linux-gnu",
}
# Cross compilers Debian packages, by triple; used to link a shared library when present.
_CROSS_GCC = {
    "aarch64-linux-gnu": "aarch64-linux-gnu-gcc",
    "armv7a-linux-gnueabihf": "arm-linux-gnueabihf-gcc",
    "riscv64-linux-gnu": "riscv64-linux-gnu-gcc",
}


def host_target(num_cores: int | None = None) -> tvm.target.Target:
    cpu = tvm.target.codegen.llvm_get_system_cpu()
    cores = num_cores or len(os.sched_getaffinity(0))
    return tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": cores})


# LLVM -O3 builds a training graph (hundreds of kernels) in 2.4x the time of -O1, and its
# code runs 2x faster: on ppocr_mobile_v2_cls at batch 8, 146 s vs 60 s to build, 0.074 vs
# 0.141 s per sample. -O3 pays from about this many samples run through the build.
O3_FROM_SAMPLES = 1200


def host_build_target(samples: int | None) -> tvm.target.Target:
    """The host target for a build this process runs ``samples`` samples through (training,
    calibration and report probes): at -O1 below ``O3_FROM_SAMPLES`` (``None``: unknown, -O3)."""
    target = host_target()
    if samples is None or samples >= O3_FROM_SAMPLES:
        return target
    return tvm.target.Target({**target.export(), "opt-level": 1})


class CpuTarget(Target):
    name = "cpu"
    device = "cpu"

    def __init__(self, tvm_target: tvm.target.Target, spec: str):
        self.tvm_target = tvm_target
        self.spec = spec
        self.triple = str(tvm_target.attrs["mtriple"]) if "mtriple" in tvm_target.attrs else ""
        self.cross = bool(self.triple) and not self.triple.startswith(os.uname().machine)
        # Channel counts that fill whole vector registers of float32 (NEON/RVV: 4 lanes).
        self.constraints = Constraints(channel_multiple=simd_floats(tvm_target))

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(spec=self.spec, tvm_target=json.loads(str(self.tvm_target)),
                    triple=self.triple or f"{os.uname().machine}-linux-gnu (host)")
        return info

    @property
    def default_schedule_lanes(self) -> int:
        """SIMD lanes the heuristic default schedules use."""
        return self.constraints.channel_multiple

    @property
    def tensor_intrinsics(self) -> str:
        return intrinsics_family(self.tvm_target)

    def relax_pipeline(self, db: str | Path | None = None,
                       stats: dict[str, int] | None = None) -> tvm.transform.Pass:
        """Heuristic default schedules everywhere; tuned schedules from ``db`` where recorded
        (``stats["tuned_kernels"]``: how many). See pipeline.py."""
        database = open_database(db, self.tvm_target, create=False) if db else None
        return cpu_pipeline(self.tvm_target, self.default_schedule_lanes, database, stats)

    def tunable_module(self, mod: tvm.IRModule) -> tvm.IRModule:
        """The fused, legalized module tuning tasks are extracted from (see pipeline.py)."""
        return tunable_module(mod, self.tvm_target)

    def default_schedule(self, kernel: tvm.IRModule) -> Schedule | None:
        return heuristic_schedule(kernel, self.default_schedule_lanes,
                                  int8_dot_product(self.tvm_target))

    def keeps_default(self, kernel: tvm.IRModule) -> bool:
        """int8 convs the default schedule runs on the CPU's integer dot product: the
        tuner's search space has no schedule with that instruction, only slower ones; and
        softmax, written by hand (``schedule_softmax.py``), which a tuned record would
        replace with a scheduled one; and depthwise convs, scheduled by ``depthwise.py``
        (the tuner's baseline, the general heuristic, is slower on them); and the batch
        matmuls ``batch_matmul.py`` writes (likewise)."""
        if (softmax_shape(kernel["main"]) is not None or holds_depthwise(kernel)
                or batch_matmul_shape(kernel["main"], self.default_schedule_lanes) is not None):
            return True
        dot = int8_dot_product(self.tvm_target)
        if dot is None:
            return False
        sch = Schedule(kernel)
        return any(block_dot(sch, block, dot) for block in reduction_blocks(sch))

    def build(self, model: Model, out_dir: Path, db: str | Path | None = None) -> BuildResult:
        # Mostly-zero weights (after sparsify) go into a compact file, not the library.
        sparse = [] if self.cross else compact_worthy(model.params)
        executable, lowering = self._compile(model.bound_module(keep=sparse), db)
        extra = {"tuning_db": str(db), "tuned_kernels": lowering.pop("tuned_kernels", 0)
                  } if db else {}
        extra["lowering"] = lowering
        if not self.cross:
            parallel_build.export_library(executable, str(out_dir / "model.so"))
            runtime_weights = {"file": SPARSE_FILE, "format": "csr",
                               "weights": write_sparse(out_dir / SPARSE_FILE, model.params, sparse)
                               } if sparse else {}
            return BuildResult(library="model.so", loadable=True, extra=extra,
                               runtime_weights=runtime_weights)
        gcc = shutil.which(_CROSS_GCC.get(self.triple, f"{self.triple}-gcc"))
        if gcc:
            from tvm.support import cc

            executable.export_library(str(out_dir / "model.so"), fcompile=cc.cross_compiler(gcc))
            return BuildResult(library="model.so", loadable=False, extra={"linker": gcc, **extra})
        # No cross linker here: ship the objects; the user's toolchain links them.
        executable.export_library(str(out_dir / "model.tar"))
        return BuildResult(library="model.tar", loadable=False, extra={"linker": None, **extra})


    def _compile(self, mod: tvm.IRModule, db: str | Path | None) -> tuple[Any, dict]:
        """The module built with the CPU pipeline, or, should TVM fail inside it, with TVM's
        stock CPU lowering (correct, untuned); the second value says which, for the report."""
        report: dict = {"pipeline": "hwcompile-cpu"}
        try:
            return parallel_build.compile(mod, self.tvm_target,
                                          self.relax_pipeline(db, report)), report
        except RuntimeError as err:  # TVM's InternalError: a failed check in some pass
            reason = _last_line(err)
        try:
            executable = tvm.compile(mod, self.tvm_target,
                                     relax_pipeline=cpu_generic.get_default_pipeline(self.tvm_target))
        except RuntimeError as err:
            raise TargetError(f"TVM cannot build this model for the CPU: {_last_line(err)} "
                              f"(the CPU pipeline failed first: {reason})") from None
        return executable, {"pipeline": "tvm-stock", "fallback_reason": reason}


def _last_line(err: BaseException) -> str:
    """The message of a TVM error without its C++ backtrace."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    checks = [line for line in lines if "Check failed" in line or "Error" in line]
    return (checks or lines or [type(err).__name__])[-1][:300]


@register_target("cpu")
def cpu_target(argument: str | None) -> CpuTarget:
    """``cpu`` (this host), ``cpu:aarch64``/``cpu:<triple>``, a JSON llvm target, or a tag."""
    try:
        if argument is None:
            return CpuTarget(host_target(), "cpu")
        if argument.startswith("{"):
            return CpuTarget(tvm.target.Target(json.loads(argument)), argument)
        if argument in tvm.target.list_tags():
            return CpuTarget(tvm.target.Target(argument), argument)
        triple = _TRIPLES.get(argument, argument)
        if "-" not in triple:
            raise TargetError(f"target 'cpu:{argument}': unknown architecture; use one of "
                              f"{', '.join(_TRIPLES)} or a full triple like aarch64-linux-gnu")
        config: dict = {"kind": "llvm", "mtriple": triple}
        if triple.endswith("gnueabihf"):  # hard-float ABI, or Debian's armhf linker refuses it
            config.update({"mfloat-abi": "hard", "mattr": ["+neon"]})
        return CpuTarget(tvm.target.Target(config), f"cpu:{argument}")
    except TargetError:
        raise
    except Exception as err:  # TVM rejects a bad target with assorted error types
        raise TargetError(f"target '{argument}': {str(err).strip().splitlines()[0]}") from None
