"""The Relax lowering pipeline the CPU target builds with, shared with the tuner.

Tuning extracts its tasks from the module after ``tunable_passes``; compiling runs the
same passes, so every fused kernel is structurally identical to a tuned workload and a
database record applies to it. After them: tuned schedules from the database (if any),
heuristic defaults for the rest (``defaults.py``), weight re-layouts those schedules
asked for split out and folded into the constants (one LLVM build for all of them,
``batched_fold.py``), then TVM's stock lowering.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from . import fast_erf, fast_tanh  # noqa: F401  (register vectorizable erf (GELU) and tanh lowerings)
from .alternate_traversal import alternate_traversal
from .batch_matmul import ScheduleBatchMatmul
from .batched_fold import batched_fold_constant
from .broadcast_epilogue import expanding_broadcasts_apart
from .defaults import HeuristicCpuSchedule
from .depthwise import ScheduleDepthwise, legalize_ops
from .int8_dot import int8_dot_product
from .layout import cpu_layout
from .lookup_fusion import lookup_tables_elementwise
from .split_slices import split_to_slices
from .step_chains import merge_step_chains
from .tuple_items import tuple_items_in_place


def tunable_passes(target: tvm.target.Target, report: dict | None = None
                   ) -> list[tvm.transform.Pass]:
    """Layout choice, op legalization and fusion: what tuning tasks are cut from. Kernels
    learn which parameters are constant weights (``layout_free_buffers``): schedules,
    tuned or default, may then change those weights' layout for free. Int8 table lookups
    count as elementwise, so they fuse (``lookup_fusion.py``)."""
    legalize = []
    for p in cpu_generic.legalize_passes(target):
        legalize.append({"FoldConstant": batched_fold_constant(), "LegalizeOps": legalize_ops()
                         }.get(p.info.name, p))
        if p.info.name == "AnnotateTIROpPattern":
            legalize += [lookup_tables_elementwise, expanding_broadcasts_apart]
    return [cpu_layout(target, report), split_to_slices, *cpu_generic.library_dispatch_passes(target),
            *legalize, relax.transform.AttachAttrLayoutFreeBuffers()]


def tunable_module(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    with target:
        return tvm.transform.Sequential(tunable_passes(target))(mod)


def count_scheduled(into: dict[str, int]) -> tvm.transform.Pass:
    """Records in ``into["tuned_kernels"]`` how many kernels the database scheduled."""

    @tvm.transform.module_pass(opt_level=0, name="CountTunedKernels")
    def _count(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        into["tuned_kernels"] = sum(1 for _, f in mod.functions_items()
                                    if isinstance(f, tvm.tirx.PrimFunc)
                                    and f.attrs.get("tirx.is_scheduled") == 1)
        return mod

    return _count


def cpu_pipeline(target: tvm.target.Target, lanes: int, database: object | None = None,
                 stats: dict | None = None) -> tvm.transform.Pass:
    """The full pipeline; ``database`` is a MetaSchedule Database whose records win.
    ``stats`` receives what the artifact reports: how many kernels the database scheduled
    (``tuned_kernels``), how far the layout conversion went (``layout``) and the kernels
    whose heuristic schedule failed and that kept TVM's loops (``default_schedule_failed``)."""
    stats = {} if stats is None else stats

    @tvm.transform.module_pass(opt_level=0, name="HwcompileCpuPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        scheduling = [ScheduleDepthwise(lanes), ScheduleBatchMatmul(lanes),
                      HeuristicCpuSchedule(lanes, int8_dot_product(target), stats)]
        if database is not None:
            scheduling[:0] = [relax.transform.MetaScheduleApplyDatabase(),
                              count_scheduled(stats)]
        scheduling += [relax.transform.SplitLayoutRewritePreproc(), batched_fold_constant(),
                       tuple_items_in_place, alternate_traversal, merge_step_chains]
        passes = (tunable_passes(target, stats) + scheduling
                  + cpu_generic.dataflow_lower_passes(target) + cpu_generic.finalize_passes(target))
        with target:
            if database is None:
                return tvm.transform.Sequential(passes)(mod)
            with database:  # MetaScheduleApplyDatabase reads Database.current()
                return tvm.transform.Sequential(passes)(mod)

    return _pipeline
