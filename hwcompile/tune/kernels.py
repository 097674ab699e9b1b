"""What a kernel's blocks compute, read from its schedule: spatial or reduction loops.

Tuning tasks are the kernels with a reduction (conv, matmul, pooling); targets' default
schedules use the same reading to pick the block they tile.
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule


def iter_kinds(sch: Schedule, block: Any) -> list[str]:
    """Per block iterator: "S" spatial, "R" reduction, "O" anything else."""
    return ["S" if iv.iter_type == 0 else "R" if iv.iter_type == 2 else "O"
            for iv in sch.get(block).iter_vars]


def reduction_blocks(sch: Schedule) -> list[Any]:
    """The top-level blocks of ``sch``'s function that reduce over some iterator."""
    return [block for block in sch.get_child_blocks(sch.get_sblock("root"))
            if "R" in iter_kinds(sch, block)]
