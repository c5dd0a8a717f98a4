"""iptables-restore and the xtables lock, with the legacy backend and a real kernel.

The lock is held by the test, like kube-proxy would hold it, on a lock file of the
test's own: libxtables takes ``$XTABLES_LOCKFILE`` instead of ``/run/xtables.lock``
when set, so the host's lock (and whatever on the host uses it) is never touched.
The tables written are those of a throwaway ``stk-`` network namespace.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from stockade.agent.applier import Applier
from stockade.agent.backend import Tools
from stockade.agent.cli import compile_bundle
from stockade.agent.executor import CommandError, SubprocessExecutor

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = str(ROOT / "tests/unit/data/conformance.yaml")


class LockFileExecutor:
    """A :class:`SubprocessExecutor` whose tools use ``lock`` as the xtables lock."""

    def __init__(self, netns: str, lock: Path) -> None:
        self.inner = SubprocessExecutor(netns=netns)
        self.lock = lock

    def run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        return self.inner.run(["env", f"XTABLES_LOCKFILE={self.lock}", *argv], stdin)

    @property
    def log(self) -> list[list[str]]:
        return self.inner.log


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"stk-{uuid.uuid4().hex[:8]}-lock"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _hold(lock: Path, seconds: float) -> tuple[threading.Thread, threading.Event]:
    """Hold ``lock`` (flock, as iptables does) for ``seconds`` in a thread."""
    taken = threading.Event()

    def hold() -> None:
        fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            taken.set()
            time.sleep(seconds)
        finally:
            os.close(fd)  # releases the lock

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(5)
    return thread, taken


def test_restore_waits_for_a_held_lock_and_gives_up_after_the_wait(
    netns: str, tmp_path: Path
) -> None:
    lock = tmp_path / "xtables.lock"
    bundle = compile_bundle([CLUSTER], "n1")
    ex = LockFileExecutor(netns, lock)
    applier = Applier(ex, netns=netns, tools=Tools("legacy"), cut_conntrack=False, xtables_wait=5)
    try:
        # Held for 1.5 s (a kube-proxy sync): the restore waits, then succeeds.
        holder, _ = _hold(lock, 1.5)
        start = time.monotonic()
        report = applier.apply(bundle.node, bundle.peer_sets)
        took = time.monotonic() - start
        holder.join(5)
        assert report.iptables_restores >= 1
        assert took >= 1.0, f"did not wait for the lock ({took:.2f} s)"
        assert applier.verify() == []
        restores = [argv for argv in ex.log if argv[2].endswith("-restore")]
        assert all(argv[3:7] == ["-w", "5", "-W", "100000"] for argv in restores), restores

        # Drift (a chain flushed), then the lock held for longer than the wait: the
        # repair gives up after about that long, a kernel error the watcher retries.
        ex.run(["iptables-legacy", "-w", "5", "-F", "STK-FORWARD"])
        assert applier.verify() != []
        applier.xtables_wait = 1
        holder, _ = _hold(lock, 6)
        start = time.monotonic()
        with pytest.raises(CommandError, match="xtables lock"):
            applier.resync()
        took = time.monotonic() - start
        assert took < 5, f"waited {took:.2f} s, not about 1"
        holder.join(10)
        # Once the lock is free the next resync repairs it.
        assert applier.resync().changed
        assert applier.verify() == []
    finally:
        applier.cleanup()
