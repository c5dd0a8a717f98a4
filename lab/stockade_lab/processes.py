"""Which process is which: start times that tell a live process from a reused pid.

Test equipment (the sandbox and the network lab) records the processes it starts
as (pid, start time); a pid alone may have been reused by the time it is read back.
"""

from __future__ import annotations

from pathlib import Path


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None when it is gone.

    A zombie is as good as gone: it has exited and only waits to be reaped, so a
    record naming it must not keep anything alive (a sandbox left running, a lab's
    namespaces kept).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat.rsplit(")", 1)[1].split()
    if fields and fields[0] == "Z":
        return None
    return int(fields[19])
