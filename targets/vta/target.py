"""The ``vta`` target: quantized Relax -> host library + static VTA programs.

Specs: ``vta`` (the ``sim`` config), ``vta:pynq`` / ``vta:ultra96`` / any shipped config,
``vta:<path to vta_config.json>``, each optionally followed by ``,tune`` (search tilings
against the cycle model) and ``,db=<file>`` (tuning database to reuse and extend), e.g.
``vta:pynq,tune,db=vta_tuning.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hwcompile.errors import TargetError, VTAError
from hwcompile.graph import MAC_OPS, macs
from hwcompile.model import Model
from hwcompile.rewrite import call_name, dataflow_bindings
from hwcompile.target import BuildResult, Constraints, QuantScheme, Target, register_target

from . import cli  # noqa: F401  (registers `hwcompile vta`)
from .config import VTAConfig, load_config
from .cycle_model import estimate
from .lower import default_plan, lower
from .partition import apply, find_segments, float_layers_only
from .runtime import CONFIG_FILE, write_program
from .tune import TuneResult, TuningDatabase, tune

# What the accelerator executes (read by passes; partitioning decides per binding).
OFFLOAD_OPS = ("relax.nn.conv2d", "relax.matmul", "relax.add", "relax.subtract",
               "relax.right_shift", "relax.left_shift", "relax.clip", "relax.maximum",
               "relax.minimum", "relax.nn.relu", "relax.astype")


class VtaTarget(Target):
    name = "vta"
    device = "cpu"  # the host module runs on the CPU and calls the accelerator
    runtime_hook = "hwcompile.targets.vta.runtime:attach"  # checks config, registers the call
    constraints = Constraints(
        channel_multiple=16,
        quant_scheme=QuantScheme(weight_granularity="per-tensor", activation_symmetric=True,
                                 power_of_two_scales=True),
        offload_ops=OFFLOAD_OPS)

    def __init__(self, cfg: VTAConfig, spec: str, search: bool = False,
                 database: str | Path | None = None):
        self.cfg, self.spec, self.search = cfg, spec, search
        self.database = Path(database) if database else None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(spec=self.spec, vta_target=self.cfg.target, bitstream=self.cfg.bitstream,
                    hw_ver=self.cfg.hw_ver)
        return info

    def _plan(self, spec, db: TuningDatabase | None) -> TuneResult | None:
        if db is not None:
            return db.best(spec, self.cfg, self.search)
        return tune(spec, self.cfg) if self.search else None

    def build(self, model: Model, out_dir: Path) -> BuildResult:
        from hwcompile.targets.cpu import CpuTarget, host_target

        if float_layers_only(model):
            raise TargetError("target vta executes int8 layers only and this model is float; "
                              "quantize it first (add the 'quantize' pass, e.g. --passes "
                              "fold-constants,fold-batchnorm,quantize,dce, with calibration "
                              "data)")
        part = find_segments(model, self.cfg)
        db = TuningDatabase(self.database) if self.database else None
        programs, keys = [], []
        for i, seg in enumerate(part.segments):
            tuned = self._plan(seg.spec, db)
            plan = tuned.plan if tuned else default_plan(seg.spec, self.cfg)
            lowered = lower(seg.spec, plan, self.cfg)
            report = estimate(lowered.program.instructions, self.cfg)
            entry = write_program(lowered, f"p{i:02d}_{re.sub(r'[^A-Za-z0-9_]', '_', seg.spec.name)}",
                                  out_dir)
            entry.update(layer=seg.spec.name, op=seg.kind, plan=plan.to_json(),
                         tuned=tuned is not None, cycles=report.total_cycles,
                         gemm_utilization=round(report.gemm_utilization, 4),
                         gemm_cycles=report.gemm_cycles,
                         macs=seg.spec.macs, note=seg.note)
            programs.append(entry)
            keys.append(entry["key"])
        if db is not None:
            db.save()
        host = apply(model, part.segments, keys)
        built = CpuTarget(host_target(), "cpu").build(host, out_dir)
        (out_dir / CONFIG_FILE).write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        cycles = sum(p["cycles"] for p in programs)
        # whole network, VTA programs only: useful GEMM cycles over all their cycles
        utilization = sum(p["gemm_cycles"] for p in programs) / cycles if cycles else 0.0
        return BuildResult(built.library, built.loadable, {
            "accelerator": "vta", "config": CONFIG_FILE, "bitstream": self.cfg.bitstream,
            "hw_ver": self.cfg.hw_ver, "clock_mhz": self.cfg.clock_mhz,
            "cycles_per_sample": cycles,
            "gemm_utilization": round(utilization, 4),
            "vta_mac_fraction": _vta_mac_fraction(model, part),
            "latency_ms_per_sample": cycles / (self.cfg.clock_mhz * 1e3),
            "partition": [d.to_json() for d in part.decisions],
            "programs": programs,
        }, runtime_weights=built.runtime_weights)


def _vta_mac_fraction(model: Model, part) -> float:
    """Share of the network's conv/matmul multiply-accumulates that run on VTA."""
    total = sum(macs(b.value) for b in dataflow_bindings(model.main)
                if call_name(b.value) in MAC_OPS)
    on_vta = sum(seg.spec.macs for seg in part.segments)
    return round(on_vta / total, 4) if total else 0.0


def parse(argument: str | None) -> VtaTarget:
    parts = [p.strip() for p in (argument or "").split(",") if p.strip()]
    config, search, database = "sim", False, None
    for i, part in enumerate(parts):
        if part == "tune":
            search = True
        elif part.startswith("db="):
            database = part[3:]
        elif i == 0:
            config = part
        else:
            raise TargetError(f"target 'vta:{argument}': unknown option '{part}'; use "
                              f"vta:<config>[,tune][,db=<file>]")
    try:
        cfg = load_config(config)
    except VTAError as err:
        raise TargetError(f"target 'vta:{argument}': {err}") from None
    return VtaTarget(cfg, f"vta:{argument}" if argument else "vta", search, database)


@register_target("vta")
def vta_target(argument: str | None) -> VtaTarget:
    """``vta`` (simulator config), ``vta:pynq``, ``vta:<vta_config.json>``[,tune][,db=FILE]."""
    return parse(argument)
