"""Without root, a root-only test skips; with STOCKADE_REQUIRE_ROOT=1 it fails.

CI sets STOCKADE_REQUIRE_ROOT=1 so that a machine missing a capability cannot pass
quietly. Run in a child pytest whose euid reads as non-root (a tiny plugin replaces
``os.geteuid``), on one root-only test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests/integration/test_netlab.py::test_pod_to_pod_on_one_node"


def _run(tmp_path: Path, required: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pretend_not_root.py").write_text("import os\nos.geteuid = lambda: 1000\n")
    env = {k: v for k, v in os.environ.items() if k != "STOCKADE_REQUIRE_ROOT"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    if required:
        env["STOCKADE_REQUIRE_ROOT"] = "1"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    argv += ["-p", "pretend_not_root", TARGET]
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
def test_a_missing_root_skips_by_default(tmp_path: Path) -> None:
    proc = _run(tmp_path, required=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout


@pytest.mark.slow
def test_a_missing_root_fails_when_required(tmp_path: Path) -> None:
    proc = _run(tmp_path, required=True)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "forbids skipping" in proc.stdout
    assert "xfailed" not in proc.stdout
    assert "skipped" not in proc.stdout
