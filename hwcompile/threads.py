"""How many worker threads TVM's runtime should use on this machine.

TVM halves the logical CPU count on x86 on the assumption that every core has two SMT
threads; on a 2-vCPU virtual machine without SMT that leaves half the machine idle. We
count real cores from the kernel's topology (within this process's CPU affinity) instead,
and hand the number to TVM through TVM_NUM_THREADS before its thread pool starts.
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
    """Set TVM_NUM_THREADS to the physical core count unless the user chose a value."""
    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))
