"""The sandbox in image mode: the shipped image, run with the manifests' security
contexts, enforces the three-tier demo exactly as the engine predicts (root; the
image comes from ``bash scripts/image.sh``, which the test command runs first)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from stockade_lab.sandbox import Sandbox, differences
from stockade_lab.sandbox.containers import NAME_PREFIX, podman_env

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("STOCKADE_IMAGE", "localhost/stockade:dev")
REQUIRED = os.environ.get("CI") == "true" or os.environ.get("STOCKADE_REQUIRE_ROOT") == "1"

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("podman") is None:
        return "podman is not installed (bash scripts/image.sh installs it)"
    exists = subprocess.run(["podman", "image", "exists", IMAGE], env=podman_env(), check=False)
    return None if exists.returncode == 0 else f"image {IMAGE} not built (bash scripts/image.sh)"


_WHY = _missing()
if _WHY is not None:
    if REQUIRED:
        pytest.fail(f"image mode cannot be tested: {_WHY}", pytrace=False)
    pytest.skip(_WHY, allow_module_level=True)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox("image-test", agent_mode="api", image=IMAGE)
    sb.cleanup()
    sb.up()
    try:
        yield sb
    finally:
        sb.down()


def _inspect(name: str) -> dict[str, object]:
    out = subprocess.run(
        ["podman", "inspect", name], env=podman_env(), capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out)[0])


def test_the_three_tier_demo_holds_through_the_image(sandbox: Sandbox) -> None:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "three-tier.yaml").read_text()))
    sandbox.apply([d for d in docs if d])
    sandbox.wait_converged()
    for port in (80, 8080, 5432):
        real = sandbox.probe_matrix(port)
        assert differences(real, sandbox.expected_matrix(port)) == [], port
        assert any(v is False for row in real.values() for v in row.values()), port


def test_the_containers_run_as_the_manifests_say(sandbox: Sandbox) -> None:
    names = subprocess.run(
        ["podman", "ps", "--format", "{{.Names}}"],
        env=podman_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ours = [n for n in names if n.startswith(NAME_PREFIX)]
    controller = next(n for n in ours if n.endswith("-controller"))
    agents = [n for n in ours if "-agent-" in n]
    assert len(agents) == 2
    c = _inspect(controller)
    assert c["Config"]["User"] == "65532:65532"  # type: ignore[index]
    assert c["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
    assert not c["EffectiveCaps"]
    for name in agents:
        a = _inspect(name)
        assert sorted(a["EffectiveCaps"]) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]  # type: ignore[call-overload]
        assert a["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
        # In a node's namespace the sandbox made, never a network of the engine's.
        assert str(a["HostConfig"]["NetworkMode"]).startswith("ns:/run/netns/stk-")  # type: ignore[index]
    host_rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True)
    assert "CNI-" not in host_rules.stdout
    assert "NETAVARK" not in host_rules.stdout
