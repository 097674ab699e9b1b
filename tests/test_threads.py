"""Thread-pool defaults hwcompile hands TVM before its pool starts (hwcompile/threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from hwcompile.threads import physical_cores

_PRINT = ("import os, hwcompile; "
          "print(os.environ['TVM_NUM_THREADS'], os.environ['TVM_BIND_THREADS'])")


def _environment_after_import(**preset: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "TVM_BIND_THREADS")}
    env.update(preset)
    done = subprocess.run([sys.executable, "-c", _PRINT], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.split()


def test_defaults_are_physical_cores_and_no_pinning():
    assert _environment_after_import() == [str(physical_cores()), "0"]


def test_the_users_choice_wins():
    assert _environment_after_import(TVM_NUM_THREADS="1", TVM_BIND_THREADS="1") == ["1", "1"]
