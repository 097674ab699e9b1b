"""One static arena for a run: the activations and the kernels' workspaces, packed by
lifetime.

Each arena *block* (a tensor with its views, see schedule.py) lives from the first to the
last kernel step that touches it, and each step's workspace (what its kernel asks
``TVMBackendAllocWorkspace`` for, freed before it returns) lives during that step only.
Blocks whose lifetimes overlap must not overlap in memory; the rest may. The packing is
greedy (each block at the lowest aligned offset that fits), tried in a few orders; the
live peak (most bytes live at one step) is the bound it is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass

from .kernels import Kernel
from .schedule import ARENA, Schedule

ALIGN = 16  # every block and workspace allocation starts at a multiple of this


def _round(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


@dataclass(frozen=True)
class Interval:
    key: tuple[str, int]       # ("block", n) or ("workspace", step)
    nbytes: int
    first: int                 # first and last step using it (len(steps): the output copies)
    last: int


@dataclass(frozen=True)
class Arena:
    size: int
    offsets: dict[tuple[str, int], int]
    intervals: tuple[Interval, ...]

    def block(self, index: int) -> int:
        return self.offsets[("block", index)]

    def workspace(self, step: int) -> tuple[int, int]:
        """(offset, bytes) of a step's workspace; (0, 0) when its kernel needs none."""
        for interval in self.intervals:
            if interval.key == ("workspace", step):
                return self.offsets[interval.key], interval.nbytes
        return 0, 0



def workspace_bytes(kernel: Kernel) -> int:
    """A kernel's workspace: every allocation at once (TVM frees them in reverse order, so
    the sum is an upper bound on what is live), each rounded to ALIGN."""
    return sum(_round(n) for n in kernel.workspace)


def intervals(schedule: Schedule, kernels: dict[str, Kernel]) -> list[Interval]:
    uses: dict[int, list[int]] = {}
    for step_number, step in enumerate(schedule.steps):
        for arg in step.args:
            tensor = schedule.tensors[arg]
            if tensor.where == ARENA:
                uses.setdefault(tensor.index, []).append(step_number)
    for copy in schedule.copies:
        tensor = schedule.tensors[copy.source]
        if tensor.where == ARENA:
            uses.setdefault(tensor.index, []).append(len(schedule.steps))
    found = [Interval(("block", block), _round(schedule.blocks[block]), min(steps), max(steps))
             for block, steps in sorted(uses.items())]
    for step_number, step in enumerate(schedule.steps):
        nbytes = workspace_bytes(kernels[step.kernel])
        if nbytes:
            found.append(Interval(("workspace", step_number), nbytes, step_number, step_number))
    return found


# Orders the greedy placement tries; the smallest arena wins (ties: the first order).
_ORDERS = (
    lambda i: (-i.nbytes, i.first, i.key),                       # largest first
    lambda i: (i.first, -i.nbytes, i.key),                       # in program order
    lambda i: (-(i.last - i.first), -i.nbytes, i.key),           # longest-lived first
    lambda i: (-i.nbytes * (i.last - i.first + 1), i.first, i.key),  # biggest area first
)


def _place(items: list[Interval], order) -> dict[tuple[str, int], int]:
    placed: list[tuple[int, Interval]] = []
    for item in sorted(items, key=order):
        busy = sorted((offset, other.nbytes) for offset, other in placed
                      if other.first <= item.last and item.first <= other.last)
        offset = 0
        for start, nbytes in busy:
            if offset + item.nbytes <= start:
                break
            offset = max(offset, start + nbytes)
        placed.append((offset, item))
    return {item.key: offset for offset, item in placed}


def pack(items: list[Interval]) -> Arena:
    """Offsets for ``items`` (each order of _ORDERS, greedy: lowest aligned offset that
    fits); the smallest arena."""
    best: Arena | None = None
    for order in _ORDERS:
        offsets = _place(items, order)
        size = max((offsets[i.key] + i.nbytes for i in items), default=0)
        if best is None or size < best.size:
            best = Arena(size, offsets, tuple(items))
    return best


def live_peak(items: list[Interval]) -> int:
    """The most bytes live at one step: no packing can do with less."""
    steps = {i.first for i in items}
    return max((sum(i.nbytes for i in items if i.first <= t <= i.last) for t in steps),
               default=0)


def plan_arena(schedule: Schedule, kernels: dict[str, Kernel]) -> Arena:
    return pack(intervals(schedule, kernels))
