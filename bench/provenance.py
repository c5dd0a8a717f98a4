"""Where a benchmark's figures come from: the commit, the software and the machine.

Every benchmark stores :func:`provenance` in its result and prints
:func:`describe` before its table, so a figure can be reproduced (or told apart
from one measured elsewhere): the commit (and whether the tree had uncommitted
changes), Python and the libraries the measured code runs on, the CPU model and
count, the kernel, and the load average when the run started and when it ended.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("kopf", "aiohttp", "pydantic", "kubernetes", "pyroute2", "prometheus-client")


def commit() -> str | None:
    """The short commit of the checkout, with ``+dirty`` for uncommitted changes."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return f"{head}+dirty" if status else head


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine() -> dict[str, Any]:
    """The machine now: CPUs, their model, the kernel, the load average."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "load": list(os.getloadavg()),
    }


def provenance() -> dict[str, Any]:
    """``date``, ``commit``, ``machine`` and ``libraries``, for a benchmark's result."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }


def finish(result: dict[str, Any]) -> None:
    """Record the load average at the end of the run (``machine.load_end``)."""
    result.setdefault("machine", {})["load_end"] = list(os.getloadavg())


def describe(result: dict[str, Any]) -> str:
    """One line: commit, Python, libraries, CPUs and model, load at start (and end)."""
    m = result.get("machine") or {}
    libs = ", ".join(f"{k} {v}" for k, v in (result.get("libraries") or {}).items() if v)
    load = " ".join(f"{x:.2f}" for x in m.get("load") or [])
    end = m.get("load_end")
    tail = f"; at the end {' '.join(f'{x:.2f}' for x in end)}" if end else ""
    return (
        f"commit {result.get('commit') or 'unknown'}; Python {m.get('python')}; {libs}; "
        f"{m.get('cpus')} CPUs ({m.get('cpu_model') or 'unknown model'}), kernel "
        f"{m.get('kernel')}; load average {load}{tail}"
    )
