"""NVIDIA GPUs through TVM's CUDA codegen: ``cuda`` (this machine's GPU, else sm_80),
``cuda:sm_86``, a JSON target of kind cuda, or an NVIDIA tag (``nvidia/nvidia-a100``).

Untuned kernels get dlight's default GPU schedules (matmul, GEMV, reductions, fallback);
a tuning database (``--db``) takes precedence where it has a record. Compiling needs nvcc,
not a GPU: the artifact carries the host library (kernels embedded) and the PTX/CUDA
source for inspection. Running it needs a GPU (runtime.load says so otherwise).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import tvm
from tvm import relax
from tvm.relax.backend.cuda import pipeline as cuda_pipeline

from hwcompile.errors import TargetError
from hwcompile.model import Model
from hwcompile.target import BuildResult, Constraints, Target, register_target
from hwcompile.tune.database import open_database

# Used when no GPU is present to ask: Ampere, supported by every nvcc from 11 to 13.
DEFAULT_ARCH = "sm_80"


def _dlight_rules() -> tvm.transform.Pass:
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                   dl.gpu.GeneralReduction(), dl.gpu.Fallback())


def _tunable_passes() -> list[tvm.transform.Pass]:
    """CUDA legalization and fusion without dlight: what tuning tasks are cut from."""
    return [*cuda_pipeline.library_dispatch_passes(None),
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]


class CudaTarget(Target):
    name = "cuda"
    device = "cuda"
    tensor_intrinsics = "cuda"

    def __init__(self, tvm_target: tvm.target.Target, spec: str):
        # A generic x86-64/host-triple CPU for the host side (VM glue, kernel launches): the
        # artifact often runs on another machine than the one that compiled it.
        self.tvm_target = tvm.target.Target(tvm_target, host=tvm.target.Target({"kind": "llvm"}))
        self.spec = spec
        self.arch = str(tvm_target.attrs.get("arch", DEFAULT_ARCH))
        # Tensor-core tiles are 16 wide for fp16; channel counts that fill them run best.
        self.constraints = Constraints(channel_multiple=16)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        # The TVM target includes its host (the CPU that runs the VM and launches kernels).
        info.update(spec=self.spec, arch=self.arch, tvm_target=json.loads(str(self.tvm_target)))
        return info

    def tunable_module(self, mod: tvm.IRModule) -> tvm.IRModule:
        with self.tvm_target:
            return tvm.transform.Sequential(_tunable_passes())(mod)

    def relax_pipeline(self, db: str | Path | None = None) -> tvm.transform.Pass:
        """dlight's default GPU schedules; tuned schedules from ``db`` where recorded."""
        database = open_database(db, self.tvm_target, create=False) if db else None

        @tvm.transform.module_pass(opt_level=0, name="HwcompileCudaPipeline")
        def _run(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
            scheduling = [_dlight_rules()]
            if database is not None:
                scheduling.insert(0, relax.transform.MetaScheduleApplyDatabase())
            passes = (_tunable_passes() + scheduling
                      + cuda_pipeline.dataflow_lower_passes(self.tvm_target)
                      + cuda_pipeline.finalize_passes(self.tvm_target))
            with self.tvm_target:
                if database is None:
                    return tvm.transform.Sequential(passes)(mod)
                with database:
                    return tvm.transform.Sequential(passes)(mod)

        return _run

    def build(self, model: Model, out_dir: Path, db: str | Path | None = None) -> BuildResult:
        pipeline = self.relax_pipeline(db)
        try:
            executable = tvm.compile(model.bound_module(), self.tvm_target,
                                     relax_pipeline=pipeline)
        except Exception as err:  # nvcc missing or rejecting the arch: say which
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TargetError(f"CUDA build for {self.arch} failed: {first}") from None
        executable.export_library(str(out_dir / "model.so"))
        sources = _device_sources(executable, self.arch)
        for name, text in sources.items():
            (out_dir / name).write_text(text)
        extra = {"arch": self.arch, "device_code": sorted(sources),
                 "kernels": _kernel_count(sources)}
        if db:
            extra["tuning_db"] = str(db)
        return BuildResult(library="model.so", loadable=True, extra=extra)


def _device_sources(executable: Any, arch: str) -> dict[str, str]:
    """The kernels' CUDA C, and their PTX compiled by nvcc (the .so embeds TVM's own
    NVRTC binary; the PTX shows what runs and proves the code compiles with nvcc)."""
    stack, code = [executable.mod], ""
    while stack and not code:
        module = stack.pop()
        stack.extend(module.imports)
        if module.kind == "cuda":
            code = module.inspect_source("cuda")
    if not code:
        return {}
    return {"kernels.cu": code, "kernels.ptx": _nvcc_ptx(code, arch)}


def _nvcc_ptx(code: str, arch: str) -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise TargetError("nvcc not found on PATH; install the CUDA toolkit to build for cuda")
    with tempfile.TemporaryDirectory() as tmp:
        source, ptx = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.ptx"
        source.write_text(code)
        done = subprocess.run([nvcc, "--ptx", f"-arch={arch}", "-o", str(ptx), str(source)],
                              capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TargetError(f"nvcc could not compile the kernels for {arch}: {message}")
        return ptx.read_text()


def _kernel_count(sources: dict[str, str]) -> int:
    if "kernels.ptx" in sources:
        return len(re.findall(r"^\.visible \.entry ", sources["kernels.ptx"], re.MULTILINE))
    return len(re.findall(r'extern "C" __global__', sources.get("kernels.cu", "")))


@register_target("cuda")
def cuda_target(argument: str | None) -> CudaTarget:
    """``cuda``, ``cuda:sm_XY``, a JSON target of kind cuda, or an NVIDIA tag."""
    try:
        if argument is None:
            gpu = tvm.cuda(0)
            arch = f"sm_{gpu.compute_version.replace('.', '')}" if gpu.exist else DEFAULT_ARCH
            return CudaTarget(tvm.target.Target({"kind": "cuda", "arch": arch}), "cuda")
        if argument.startswith("{"):
            return CudaTarget(tvm.target.Target(json.loads(argument)), argument)
        if argument in tvm.target.list_tags():
            return CudaTarget(tvm.target.Target(argument), argument)
        if not re.fullmatch(r"sm_\d{2,3}[a-z]?", argument):
            raise TargetError(f"target 'cuda:{argument}': expected a GPU architecture like "
                              "sm_80, sm_86, sm_90")
        return CudaTarget(tvm.target.Target({"kind": "cuda", "arch": argument}), f"cuda:{argument}")
    except TargetError:
        raise
    except Exception as err:  # TVM rejects a bad target with assorted error types
        raise TargetError(f"target '{argument}': {str(err).strip().splitlines()[0]}") from None
