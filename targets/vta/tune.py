"""Tile tuning: search tilings of a layer against the cycle model, remember the best.

The space (SRAM-feasible plans only, see ``lower.check_plan``): output-channel and
input-channel chunk sizes (divisors of the block counts), tile widths (whole row, half,
quarter), the most rows that fit (and half of that), 1 or 2 virtual threads, and whether
spatial or channel tiles are innermost. Each candidate is lowered to its real program and
scored by ``cycle_model.estimate``. Results are cached per (config, workload) in a JSON
database file, so a second compile reuses them without searching.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from hwcompile.errors import VTAError

from .config import VTAConfig
from .cycle_model import CycleParams, estimate
from .lower import LayerSpec, TilePlan, blocks, check_plan, default_plan, divisors, lower


@dataclass
class TuneResult:
    plan: TilePlan
    cycles: int
    default_cycles: int
    tried: int
    cached: bool = False


def candidates(spec: LayerSpec, cfg: VTAConfig) -> list[TilePlan]:
    icb, ocb = blocks(spec, cfg)
    _, oh, ow = spec.out_shape
    widths = sorted({ow, -(-ow // 2), -(-ow // 4)}, reverse=True)
    plans = []
    for v, order, toc, tic, tw in itertools.product((2, 1), ("spatial", "channel"),
                                                   divisors(ocb), divisors(icb), widths):
        fits = [th for th in range(oh, 0, -1)
                if check_plan(spec, TilePlan(th, tw, toc, tic, v, order), cfg) is None]
        if not fits:
            continue
        # the most rows, and half of them (smaller tiles pipeline better at the edges)
        for th in sorted({fits[0], max(1, fits[0] // 2)}, reverse=True):
            plans.append(TilePlan(th, tw, toc, tic, v, order))
    return plans


def cycles_of(spec: LayerSpec, plan: TilePlan, cfg: VTAConfig,
              params: CycleParams | None = None) -> int:
    return estimate(lower(spec, plan, cfg).program.instructions, cfg, params).total_cycles


def tune(spec: LayerSpec, cfg: VTAConfig, params: CycleParams | None = None,
         limit: int | None = None) -> TuneResult:
    """The candidate with the fewest estimated cycles (the default plan always competes).
    ``limit`` caps how many candidates are scored (evenly spread over the space)."""
    base = default_plan(spec, cfg)
    default_cycles = cycles_of(spec, base, cfg, params)
    pool = candidates(spec, cfg)
    if limit is not None and len(pool) > limit:
        pool = pool[::-(-len(pool) // limit)]
    best, best_cycles = base, default_cycles
    for plan in pool:
        if plan == base:
            continue
        cycles = cycles_of(spec, plan, cfg, params)
        if cycles < best_cycles:
            best, best_cycles = plan, cycles
    return TuneResult(best, best_cycles, default_cycles, len(pool))


class TuningDatabase:
    """``{"<target>/<bitstream>|<workload key>": {"plan": ..., "cycles": ...}}`` in a file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except json.JSONDecodeError as err:
                raise VTAError(f"{self.path}: corrupt VTA tuning database ({err}); delete it "
                               f"to re-tune") from None

    @staticmethod
    def key(spec: LayerSpec, cfg: VTAConfig) -> str:
        return f"{cfg.target}/{cfg.bitstream}|{spec.key()}"

    def lookup(self, spec: LayerSpec, cfg: VTAConfig) -> TilePlan | None:
        entry = self.entries.get(self.key(spec, cfg))
        if entry is None:
            return None
        plan = TilePlan(**entry["plan"])
        return plan if check_plan(spec, plan, cfg) is None else None

    def best(self, spec: LayerSpec, cfg: VTAConfig, search: bool,
             limit: int | None = None) -> TuneResult | None:
        """The cached plan, else (when ``search``) a tuned and recorded one, else None."""
        cached = self.lookup(spec, cfg)
        if cached is not None:
            entry = self.entries[self.key(spec, cfg)]
            return TuneResult(cached, entry["cycles"], entry["default_cycles"], 0, cached=True)
        if not search:
            return None
        result = tune(spec, cfg, limit=limit)
        self.entries[self.key(spec, cfg)] = {"plan": result.plan.to_json(),
                                             "cycles": result.cycles,
                                             "default_cycles": result.default_cycles}
        return result

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.entries, indent=1, sort_keys=True) + "\n")
