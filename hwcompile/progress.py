"""Progress lines of the command line: timestamped, on stderr (results go to stdout).

``BuildProgress`` covers a TVM build, which runs for up to a minute inside one call: a line
when it enters each phase (Relax passes, TIR lowering, LLVM code generation — which also
covers writing or loading the library, when LLVM emits machine code) and a line every few
seconds while a phase lasts, from a thread (TVM's calls release the GIL).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Self

import tvm
from tvm.ir.instrument import pass_instrument


def say(message: str) -> None:
    print(f"[hwcompile {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


_PHASES = ("Relax passes", "TIR lowering", "LLVM code generation")


@pass_instrument
class _PhaseTracker:
    """Which phase of a build runs now. A top-level pass whose passes are TIR passes is TIR
    lowering; once it ends, LLVM runs (outside any pass). TIR passes deeper down, e.g. of a
    weight kernel evaluated while folding constants, belong to the Relax passes."""

    def __init__(self) -> None:
        self.nesting = threading.local()  # kernels may be built on several threads
        self.phase = -1  # nothing yet

    def run_before_pass(self, _mod, info) -> None:
        depth = self.nesting.depth = getattr(self.nesting, "depth", 0) + 1
        if depth == 1 and self.phase < 0:
            self.phase = 0
        elif depth == 2 and info.name.startswith(("tirx.", "s_tir.")):
            self.phase = 1

    def run_after_pass(self, _mod, _info) -> None:
        if self.nesting.depth == 1 and self.phase == 1:
            self.phase = 2
        self.nesting.depth -= 1


class BuildProgress:
    """``with BuildProgress(say, "building for cpu"):`` around a TVM build."""

    def __init__(self, progress: Callable[[str], None], what: str, every: float = 10.0):
        self.progress, self.what, self.every = progress, what, every
        self.tracker = _PhaseTracker()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report, daemon=True)

    def _report(self) -> None:
        start = last = time.perf_counter()
        announced = -1
        while not self._stop.wait(min(0.5, self.every / 4)):
            phase, now = self.tracker.phase, time.perf_counter()
            if phase > announced:
                announced = phase
                self.progress(f"{self.what}: {_PHASES[phase]} ({now - start:.0f} s)")
                last = now
            elif phase >= 0 and now - last >= self.every:
                self.progress(f"{self.what}: {_PHASES[phase]} ({now - start:.0f} s)")
                last = now

    def __enter__(self) -> Self:
        current = tvm.transform.PassContext.current()
        self._context = tvm.transform.PassContext(
            opt_level=current.opt_level, required_pass=list(current.required_pass),
            disabled_pass=list(current.disabled_pass),
            instruments=[*current.instruments, self.tracker], config=dict(current.config))
        self._context.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._context.__exit__(*exc)
