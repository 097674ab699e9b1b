"""Remote devices over TVM RPC: a tracker and a server on 127.0.0.1, started and stopped
here; benchmarking (and, in the slow suite, tuning) through them; unreachable trackers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import conv_bn_model, ort_run

import hwcompile
from hwcompile import cli
from hwcompile.errors import TuningError
from hwcompile.tune.rpc import RpcDevice, bench_remote, check_tracker

KEY = "hwcompile-test"
WAIT_S = 60.0  # bound on the server registering with the tracker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session, with the workers it spawned (the RPC
    server runs each session in a popen worker that outlives a plain terminate)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    try:  # workers left in the group after the leader exited
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def rpc_device() -> Iterator[RpcDevice]:
    port = _free_port()
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                "--port", str(port), "--port-end", str(port + 1), "--silent"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    server = None
    try:
        device = RpcDevice("127.0.0.1", port, KEY)
        deadline = time.monotonic() + WAIT_S
        while True:  # the tracker first, then the server can register
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("RPC tracker did not start")
                time.sleep(0.2)
        server_port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                   "--port", str(server_port), "--port-end", str(server_port + 1),
                                   "--tracker", f"127.0.0.1:{port}", "--key", KEY],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        while True:
            try:
                check_tracker(device, wait_s=2)
                break
            except TuningError:
                if time.monotonic() > deadline:
                    pytest.fail(f"RPC server did not register with the tracker in {WAIT_S:.0f} s")
                time.sleep(0.5)
        yield device
    finally:
        if server is not None:
            _stop(server)
        _stop(tracker)


def test_bench_through_rpc_matches_onnxruntime(rpc_device, tmp_path):
    proto = conv_bn_model(batch=1)
    art = hwcompile.compile(proto, "cpu", tmp_path / "art")
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    result = bench_remote(art, rpc_device, {"x": x}, repeat=5, number=2)
    assert result["median_ms"] > 0 and result["repeat"] == 5
    np.testing.assert_allclose(result["output"], ort_run(proto, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_bench_cli_through_rpc(rpc_device, tmp_path, capfd):
    art = hwcompile.compile(conv_bn_model(batch=1), "cpu", tmp_path / "art")
    code = cli.main(["bench", str(art), "--repeat", "3", "--rpc-tracker",
                     f"{rpc_device.host}:{rpc_device.port}", "--rpc-key", rpc_device.key])
    out = capfd.readouterr().out
    assert code == 0 and f"on {KEY} via 127.0.0.1" in out and "median" in out


def test_unknown_key_is_a_clear_error(rpc_device):
    with pytest.raises(TuningError, match="no device with key 'nope'"):
        check_tracker(RpcDevice(rpc_device.host, rpc_device.port, "nope"))


def test_unreachable_tracker_fails_within_bound(tmp_path, capfd):
    art = hwcompile.compile(conv_bn_model(batch=1), "cpu", tmp_path / "art")
    start = time.monotonic()
    code = cli.main(["bench", str(art), "--rpc-tracker", f"127.0.0.1:{_free_port()}",
                     "--rpc-key", KEY])
    err = capfd.readouterr().err
    assert code != 0 and time.monotonic() - start < 10
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach the RPC tracker" in errors[0], err


@pytest.mark.slow
def test_tune_through_rpc(rpc_device, tmp_path):
    """Candidates measured on the RPC server; the database then applies as usual."""
    from hwcompile.frontend import import_onnx
    from hwcompile.target import resolve_target
    from hwcompile.tune.budget import Budget
    from hwcompile.tune.tuner import tune_model

    proto = conv_bn_model(batch=1)
    report = tune_model(import_onnx(proto), resolve_target("cpu"), tmp_path / "db",
                        Budget(trials=6, trials_per_task=2), rpc=rpc_device)
    assert report.valid == report.trials >= 3
    art = hwcompile.compile(proto, "cpu", tmp_path / "tuned", db=tmp_path / "db")
    assert json.loads((art / "metadata.json").read_text())["target_extra"]["tuned_kernels"] >= 1
