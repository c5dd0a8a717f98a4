"""Run one command under a memory limit and report its own wall time and peak RSS.

Used by ``test_hostile.py`` as ``python -I launcher.py RESULT LIMIT -- CMD...``: it
caps the address space (``RLIMIT_AS``, inherited by the command) so that a runaway
dies instead of taking the machine, starts the command with this process's stdin,
stdout and stderr, reaps it with ``wait4`` and writes ``{"status", "seconds",
"maxrss_kb"}`` as JSON to RESULT.

Why a launcher rather than ``getrusage(RUSAGE_CHILDREN)`` in pytest: Linux counts a
process's peak RSS across ``exec`` from the memory of the process it was forked
from, so a child of a big pytest process would report pytest's own size. Forked
from this small interpreter, the command's ``ru_maxrss`` is its own.

Standard library only; run with ``-I`` so that nothing from the environment loads.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    """``RESULT LIMIT -- CMD...``; returns 0 once the result is written."""
    result, limit, separator, *command = argv
    if separator != "--" or not command:
        print("usage: launcher.py RESULT LIMIT_BYTES -- CMD...", file=sys.stderr)
        return 125
    cap = int(limit)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    start = time.monotonic()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    # Reaped here, so tell Popen: it must not wait for (or warn about) the child.
    proc.returncode = os.waitstatus_to_exitcode(status)
    report = {"status": proc.returncode, "seconds": seconds, "maxrss_kb": usage.ru_maxrss}
    Path(result).write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
