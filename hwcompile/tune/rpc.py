"""Remote devices through a TVM RPC tracker: reachability checks and remote benchmarks.

Boards run ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key NAME``; the tracker
hands out sessions by key. TVM's own client retries a dead tracker for about a minute, so
we probe the socket first with a short timeout and fail with one clear line.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwcompile.errors import TuningError


@dataclass(frozen=True)
class RpcDevice:
    host: str
    port: int
    key: str
    session_timeout_s: int = 60

    @classmethod
    def parse(cls, tracker: str, key: str | None) -> RpcDevice:
        host, _, port = tracker.rpartition(":")
        if not host or not port.isdigit():
            raise TuningError(f"--rpc-tracker '{tracker}': expected HOST:PORT, e.g. 127.0.0.1:9190")
        if not key:
            raise TuningError("--rpc-tracker needs --rpc-key (the key the device's server registered)")
        return cls(host, int(port), key)

    def ms_config(self) -> Any:
        from tvm.s_tir.meta_schedule.runner import RPCConfig

        return RPCConfig(tracker_host=self.host, tracker_port=self.port, tracker_key=self.key,
                         session_priority=1, session_timeout_sec=self.session_timeout_s)


def check_tracker(device: RpcDevice, wait_s: float = 5.0) -> None:
    """Raise TuningError unless the tracker answers within ``wait_s`` and has the key."""
    try:
        with socket.create_connection((device.host, device.port), timeout=wait_s):
            pass
    except OSError as err:
        raise TuningError(f"cannot reach the RPC tracker at {device.host}:{device.port} within "
                          f"{wait_s:.0f} s ({err.strerror or err}); start it with `python -m "
                          "tvm.exec.rpc_tracker` or fix --rpc-tracker") from None
    from tvm import rpc

    summary = rpc.connect_tracker(device.host, device.port).summary()
    keys = {key.split(":")[0] for key in summary.get("queue_info", {})}
    if device.key not in keys:
        raise TuningError(f"RPC tracker {device.host}:{device.port} has no device with key "
                          f"'{device.key}' (registered: {', '.join(sorted(keys)) or 'none'})")


def bench_remote(art_dir: str | Path, device: RpcDevice, feeds: dict[str, np.ndarray],
                 repeat: int = 20, number: int = 5) -> dict[str, Any]:
    """Upload an artifact's library to the remote device, time ``main`` there."""
    from tvm import relax, rpc

    from hwcompile.artifact import read_metadata

    check_tracker(device)
    meta = read_metadata(Path(art_dir))
    session = rpc.connect_tracker(device.host, device.port).request(
        device.key, priority=1, session_timeout=device.session_timeout_s)
    library = Path(art_dir) / meta["library"]
    session.upload(str(library))
    remote_dev = session.device(meta["target"].get("device", "cpu"), 0)
    vm = relax.VirtualMachine(session.load_module(library.name), remote_dev)
    import tvm

    args = [tvm.runtime.tensor(feeds[spec["name"]], remote_dev) for spec in meta["inputs"]]
    outputs = vm["main"](*args)
    first = outputs if not isinstance(outputs, (list, tuple)) else outputs[0]
    timer = vm.time_evaluator("main", remote_dev, number=number, repeat=repeat)
    times = np.array(timer(*args).results)
    return {"median_ms": float(np.median(times) * 1e3), "min_ms": float(times.min() * 1e3),
            "repeat": repeat, "number": number, "output": first.numpy()}
