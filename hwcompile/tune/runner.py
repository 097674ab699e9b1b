"""Where and how candidates are measured: locally, or on an RPC device."""

from __future__ import annotations

from typing import Any

from .rpc import RpcDevice


def make_runner(rpc: RpcDevice | None, timeout_s: float = 30.0) -> Any:
    """A MetaSchedule runner; 3 repeats of ≥ 40 ms each keep noise low on a shared machine
    while one candidate still costs well under a second."""
    from tvm.s_tir.meta_schedule import runner

    evaluator = runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=40,
                                       enable_cpu_cache_flush=False)
    if rpc is None:
        return runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=evaluator)
    return runner.RPCRunner(rpc_config=rpc.ms_config(), evaluator_config=evaluator, max_workers=1)
