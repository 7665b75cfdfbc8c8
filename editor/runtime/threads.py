"""How many CPU threads torch uses, chosen for the machine as it is now.

torch starts one thread per core. On a machine that other processes keep busy, those threads wait for each other
(oversubscription): one demo-model edit on 2 busy cores took about 4 minutes with torch's default and about 10 s
with one thread. So, unless the user chose (`--threads N`, or OMP_NUM_THREADS in the environment), the entry points
take the cores this process may run on minus the ones the load average says are busy, at least one.
"""

from __future__ import annotations

import os

import torch


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_cores() -> int:
    """Cores other processes keep busy: the 1-minute load average, rounded down."""
    return int(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0


def choose_threads(requested: int | None = None) -> int:
    """`requested` if given, torch's own count when OMP_NUM_THREADS is set, else the free cores (at least 1)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be at least 1, got {requested}")
        return requested
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return max(1, min(usable_cores(), usable_cores() - busy_cores()))


def set_threads(requested: int | None = None) -> int:
    """Applies `choose_threads(requested)` to torch and returns it."""
    threads = choose_threads(requested)
    torch.set_num_threads(threads)
    return threads
