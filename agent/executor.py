"""Running the kernel tools: the one narrow seam between the agent and subprocesses.

Everything that shells out (``iptables-save``, ``iptables-restore``, ``ipset``) goes
through an :class:`Executor`, so tests can count writes and the sandbox can point the
agent at a node's network namespace (``ip netns exec``) instead of the host's.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class CommandError(RuntimeError):
    """A tool failed; the message carries the command and its stderr."""

    def __init__(self, argv: Sequence[str], code: int, stderr: str) -> None:
        self.argv = list(argv)
        self.code = code
        self.stderr = stderr.strip()
        super().__init__(f"{' '.join(argv)} exited {code}: {self.stderr}")


class Executor(Protocol):
    """Runs a command and returns its stdout; raises :class:`CommandError` on failure."""

    def run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        """Run ``argv`` with ``stdin``; return stdout."""
        ...


def is_read(argv: Sequence[str]) -> bool:
    """Whether ``argv`` only reads kernel state (for write accounting)."""
    tool = argv[0].rsplit("/", 1)[-1]
    if tool.endswith("-save"):
        return True
    if tool == "conntrack":
        return len(argv) > 1 and argv[1] in ("-L", "--dump", "-C", "--count")
    return tool == "ipset" and len(argv) > 1 and argv[1] in ("list", "save", "-n", "-L")


@dataclass
class SubprocessExecutor:
    """Runs tools as subprocesses, inside network namespace ``netns`` when given.

    Counts reads and writes so callers (and tests) can check that an unchanged
    state costs no write.
    """

    netns: str | None = None
    timeout: float = 60.0
    reads: int = 0
    writes: int = 0
    log: list[list[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        """Run ``argv`` (in ``netns``); return stdout or raise :class:`CommandError`."""
        full = ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)
        if is_read(argv):
            self.reads += 1
        else:
            self.writes += 1
        self.log.append(list(argv))
        proc = subprocess.run(
            full, input=stdin, capture_output=True, text=True, timeout=self.timeout, check=False
        )
        if proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stderr)
        return proc.stdout
