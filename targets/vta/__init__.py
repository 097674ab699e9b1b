"""VTA-compatible int8 accelerator: configuration, ISA, bit-exact simulator, cycle model and
the program builder compilers target. See README.md in this directory."""

from .config import VTAConfig, load_config
from .cycle_model import CycleParams, CycleReport, estimate
from .program import Buffer, Program, ProgramBuilder, SimResult
from .simulator import Simulator, Stats

__all__ = ["Buffer", "CycleParams", "CycleReport", "Program", "ProgramBuilder", "SimResult",
           "Simulator", "Stats", "VTAConfig", "estimate", "load_config"]
