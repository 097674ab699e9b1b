"""How many worker threads TVM's runtime should use on this machine.

TVM halves the logical CPU count on x86 on the assumption that every core has two SMT
threads; on a 2-vCPU virtual machine without SMT that leaves half the machine idle. We
count real cores from the kernel's topology (within this process's CPU affinity) instead,
and hand the number to TVM through TVM_NUM_THREADS before its thread pool starts.

TVM also pins its workers to cores by default. Measured here (digits CNN, batch 1, five
processes each): pinned, some processes ran at 0.018 ms and others at 0.031–0.039 ms per
call, depending on where the pinned workers landed relative to the calling thread;
unpinned (TVM_BIND_THREADS=0), every process ran at 0.018–0.019 ms, and ResNet-18 was
unchanged (6.1–6.3 ms either way). So we leave placement to the OS unless the user set it.
"""

from __future__ import annotations

import os
from pathlib import Path


def physical_cores() -> int:
    """Cores available to this process, counting SMT siblings once."""
    cpus = sorted(os.sched_getaffinity(0))
    cores = set()
    for cpu in cpus:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def configure_default_threads() -> None:
    """Set TVM_NUM_THREADS to the physical core count, and turn off TVM's thread pinning,
    unless the user chose values."""
    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))
    os.environ.setdefault("TVM_BIND_THREADS", "0")
