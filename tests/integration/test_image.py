"""The shipped image, run as the manifests run it (root; needs the image that
``bash scripts/image.sh`` builds, which the test command does first as root).

- every entry point the manifests use starts; the wheels left no trace in a layer;
- the controller's security context (manifests/controller.yaml): user and group
  65532 with names, read-only root, every capability dropped;
- the agent's (manifests/agent.yaml): NET_ADMIN and NET_RAW only, read-only root,
  in a network namespace the test made (never the host's): apply, verify and
  cleanup work, and with either capability missing it fails with a clear error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade_lab.sandbox.containers import podman_env, read_manifest, security_args

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("STOCKADE_IMAGE", "localhost/stockade:dev")
ENV = podman_env()
REQUIRED = os.environ.get("CI") == "true" or os.environ.get("STOCKADE_REQUIRE_ROOT") == "1"

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


def _image_ready() -> str | None:
    """Why the image cannot be tested here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("podman") is None:
        return "podman is not installed (bash scripts/image.sh installs it)"
    found = subprocess.run(["podman", "image", "exists", IMAGE], env=ENV, check=False)
    if found.returncode != 0:
        return f"image {IMAGE} not built (bash scripts/image.sh)"
    return None


_MISSING = _image_ready()
if _MISSING is not None:
    if REQUIRED:
        pytest.fail(f"the image tests cannot run: {_MISSING}", pytrace=False)
    pytest.skip(_MISSING, allow_module_level=True)


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    """``podman run --rm`` of the image, output captured."""
    return subprocess.run(
        ["podman", "run", "--rm", *args], env=ENV, capture_output=True, text=True, check=False
    )


def _container(manifest: str) -> dict[str, Any]:
    """The workload's container as the sandbox's image mode reads it."""
    return read_manifest(manifest)


def _security_args(container: dict[str, Any]) -> list[str]:
    """podman flags for the container's securityContext (the sandbox's translation)."""
    return security_args(container["securityContext"])


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"stk-img-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_entry_points_start_and_no_wheels_remain() -> None:
    done = podman(
        "--network=none",
        IMAGE,
        "sh",
        "-c",
        "stockade --version && stockade-agent --help >/dev/null && "
        "stockade-controller --help >/dev/null && ! test -e /wheels",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("stockade ")


def test_the_controller_runs_as_the_manifest_says() -> None:
    container = _container("controller.yaml")
    args = _security_args(container)
    assert "--cap-drop=ALL" in args
    assert "--read-only" in args
    done = podman("--network=none", *args, IMAGE, "sh", "-c", "id && touch /x")
    assert done.stdout.startswith("uid=65532(stockade) gid=65532(stockade)"), done.stdout
    assert "Read-only file system" in done.stderr
    assert podman("--network=none", *args, IMAGE, *container["command"], "--help").returncode == 0


def _agent(netns: str, args: list[str], *command: str) -> subprocess.CompletedProcess[str]:
    return podman(
        f"--network=ns:/run/netns/{netns}",
        *args,
        "-v",
        f"{ROOT / 'examples'}:/examples:ro",
        IMAGE,
        "stockade-agent",
        *command,
    )


def _rules(netns: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "iptables-save", "-t", "filter"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_agent_enforces_with_its_two_capabilities_only(netns: str) -> None:
    args = _security_args(_container("agent.yaml"))
    assert sorted(a for a in args if a.startswith("--cap-add")) == [
        "--cap-add=NET_ADMIN",
        "--cap-add=NET_RAW",
    ]
    cluster = ["--cluster", "/examples/three-tier.yaml", "--node", "node-1"]
    applied = _agent(netns, args, "apply", *cluster)
    assert applied.returncode == 0, applied.stderr
    assert "STK-FORWARD" in _rules(netns)
    verified = _agent(netns, args, "verify", *cluster)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Least privilege: each of the two is needed.
    for kept in ("NET_ADMIN", "NET_RAW"):
        fewer = [a for a in args if not (a.startswith("--cap-add") and kept not in a)]
        failed = _agent(netns, fewer, "verify", *cluster)
        assert failed.returncode != 0, kept
        assert "error:" in failed.stderr
        assert "Traceback" not in failed.stderr
    cleaned = _agent(netns, args, "cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "STK-" not in _rules(netns)
