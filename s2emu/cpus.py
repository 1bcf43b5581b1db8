"""How many CPUs this process may use: where the engine and the feature pipeline decide how many threads to run."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (Linux; it also reflects
    taskset and container limits), else the machine's count (macOS, Windows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
