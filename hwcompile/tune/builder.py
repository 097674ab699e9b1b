"""A MetaSchedule builder with warm, long-lived workers and a per-candidate timeout.

MetaSchedule's LocalBuilder starts a fresh process pool for every batch and imports
``tvm.s_tir.tensor_intrin`` (30 s+ here) in each, under the same 30 s timeout as the
build: every candidate timed out. Our workers start once, do their imports outside any
timeout, and are reused; a candidate that overruns its timeout (LLVM can hang on one) is
killed with its worker, which restarts and warms up again for the next candidate.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from queue import Queue

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.support.popen_pool import PopenWorker


def _warm_up(intrinsics: str | None) -> None:
    """Worker initializer: pay the imports once per worker process."""
    import tvm.s_tir.transform  # noqa: F401

    from hwcompile.tune.intrinsics import register_for

    if intrinsics:
        register_for(intrinsics)


def _build_candidate(mod: object, target: object) -> str:
    """In the worker: compile one scheduled candidate, export it, return the file path."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support.tar import tar

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    library = tvm.compile(mod, target=target)
    path = os.path.join(tempfile.mkdtemp(prefix="hwcompile-cand-"), "cand." + tar.output_format)
    library.export_library(path, fcompile=tar)
    return path


@derived_object
class WarmBuilder(PyBuilder):
    """Build candidates on ``workers`` warm processes, each build limited to ``timeout_s``;
    ``intrinsics``: the tensor-intrinsic family the candidates may use (``register_for``)."""

    def __init__(self, workers: int = 2, timeout_s: float = 60.0, intrinsics: str | None = None):
        super().__init__()
        self.timeout_s = timeout_s
        self._idle: Queue[PopenWorker] = Queue()
        self._workers = [PopenWorker(initializer=_warm_up, initargs=(intrinsics,))
                         for _ in range(max(1, workers))]
        with ThreadPoolExecutor(len(self._workers)) as pool:  # warm all workers at once
            list(pool.map(self._warm, self._workers))
        for worker in self._workers:
            self._idle.put(worker)
        self._pool = ThreadPoolExecutor(len(self._workers))

    @staticmethod
    def _warm(worker: PopenWorker) -> None:
        worker.send(int, ("0",))  # starting a worker runs its initializer, untimed
        worker.recv()

    def _build_one(self, build_input: BuilderInput) -> BuilderResult:
        worker = self._idle.get()
        try:
            worker.send(_build_candidate, (build_input.mod, build_input.target),
                        timeout=self.timeout_s)
            return BuilderResult(worker.recv(), None)
        except TimeoutError:
            return BuilderResult(None, f"build timed out after {self.timeout_s:.0f} s (killed)")
        except Exception as err:
            return BuilderResult(None, f"build failed: {str(err).strip()[-2000:]}")
        finally:
            self._idle.put(worker)

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        return list(self._pool.map(self._build_one, build_inputs))

    def shutdown(self) -> None:
        self._pool.shutdown()
        for worker in self._workers:
            worker.kill()
