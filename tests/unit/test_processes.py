"""Process records tell a live process from a reused pid, and a zombie counts as gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from stockade_lab.processes import process_start


def test_a_live_process_has_a_stable_start() -> None:
    start = process_start(os.getpid())
    assert isinstance(start, int)
    assert process_start(os.getpid()) == start


def test_a_missing_process_has_none() -> None:
    with open("/proc/sys/kernel/pid_max") as f:
        beyond = int(f.read()) + 1  # no process can have this pid
    assert process_start(beyond) is None


def test_a_zombie_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        # Not reaped yet (no wait()): once it has exited it is a zombie.
        while process_start(child.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process_start(child.pid) is None
    finally:
        child.wait()
