"""The sandbox end to end: real namespaces, the emulated API server, the real
controller and agents, the kubelet stand-in, real packets; and that ``down`` (also
after a crash) leaves nothing behind.

Every namespace is ``stk-<runid>-*``; nothing touches the host's network namespace.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade_lab.netlab import NETNS_DIR
from stockade_lab.sandbox import Sandbox, SandboxError, differences
from stockade_lab.sandbox.common import is_alive, recorded_processes

ROOT = Path(__file__).resolve().parents[2]
THREE_TIER = ROOT / "examples" / "three-tier.yaml"

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.skip("the sandbox needs root (network namespaces)", allow_module_level=True)


def _three_tier() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    docs = [d for d in yaml.safe_load_all(THREE_TIER.read_text()) if d]
    return (
        [d for d in docs if d["kind"] != "NetworkPolicy"],
        [d for d in docs if d["kind"] == "NetworkPolicy"],
    )


def _pod(name: str, ns: str = "extra", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def _namespaces_of(run_id: str) -> list[str]:
    return sorted(p.name for p in NETNS_DIR.glob(f"stk-{run_id}-*")) if NETNS_DIR.is_dir() else []


def _kubectl(sandbox: Sandbox, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(sandbox.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _assert_matches_engine(sandbox: Sandbox, port: int, protocol: str = "TCP") -> None:
    real = sandbox.probe_matrix(port, protocol)
    expected = sandbox.expected_matrix(port, protocol)
    assert differences(real, expected) == []


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(f"t{os.getpid()}", nodes=2)
    sb.up()
    try:
        yield sb
    finally:
        sb.down()


def test_three_tier_before_and_after_policies(sandbox: Sandbox) -> None:
    pods, policies = _three_tier()
    sandbox.apply(pods)
    status = sandbox.status()
    # The manifest's nodes and IPs are honoured.
    assert status["pods"]["shop/web"]["ips"] == ["10.244.1.10"]
    assert status["pods"]["shop/web"]["node"] == "node-1"
    assert status["pods"]["shop/db"]["ips"] == ["10.244.2.30"]
    api_pod = sandbox.api.get("Pod", "db", "shop")
    assert api_pod is not None
    assert api_pod["status"]["podIP"] == "10.244.2.30"
    assert api_pod["status"]["hostIP"] == status["nodes"]["node-2"]["ip4"]
    # No policy: every pod reaches whatever listens.
    before = sandbox.probe_matrix(5432)
    assert all(row["shop/db"] for row in before.values())
    for port in (80, 8080, 5432):
        _assert_matches_engine(sandbox, port)
    sandbox.apply(policies)
    after = sandbox.probe_matrix(5432)
    assert after["shop/backend"]["shop/db"] is True
    assert after["shop/web"]["shop/db"] is False
    assert sandbox.probe_matrix(8080)["shop/web"]["shop/backend"] is True
    assert sandbox.probe_matrix(8080)["shop/db"]["shop/backend"] is False
    for port in (80, 81, 8080, 5432):
        _assert_matches_engine(sandbox, port)
    _assert_matches_engine(sandbox, 80, "UDP")


def _run_json(argv: list[str]) -> Any:
    proc = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    return yaml.safe_load(proc.stdout)


def test_kubectl_plugin_against_the_live_sandbox(sandbox: Sandbox) -> None:
    """`kubectl stockade` on the live cluster agrees with the offline CLI on its YAML."""
    pods, policies = _three_tier()
    sandbox.apply(pods + policies)
    plugin = str(ROOT / ".venv" / "bin" / "kubectl-stockade")
    offline = str(ROOT / ".venv" / "bin" / "stockade")
    for port in ("80", "8080", "5432"):
        live = _run_json(
            [
                plugin,
                "--kubeconfig",
                str(sandbox.kubeconfig),
                "matrix",
                "-n",
                "shop",
                "--port",
                port,
                "-o",
                "json",
            ]
        )
        from_yaml = _run_json(
            [offline, "matrix", "-f", str(THREE_TIER), "--port", port, "-o", "json"]
        )
        assert live == from_yaml
    status = subprocess.run(
        [plugin, "--kubeconfig", str(sandbox.kubeconfig), "status"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for node in ("node-1", "node-2"):
        assert node in status


def test_kubectl_works_against_the_sandbox(sandbox: Sandbox) -> None:
    pod = _pod("probe-client", ns="shop", app="client")
    _kubectl(sandbox, "apply", "-f", "-", stdin=yaml.safe_dump(pod))
    sandbox.wait_converged()
    wide = _kubectl(sandbox, "get", "pods", "-n", "shop", "-o", "wide")
    assert "probe-client" in wide
    assert "Running" in wide
    real = sandbox.probe_matrix(8080)
    assert real["shop/probe-client"]["shop/backend"] is False
    _kubectl(sandbox, "label", "pod", "-n", "shop", "probe-client", "app=web", "--overwrite")
    sandbox.wait_converged()
    assert sandbox.probe_matrix(8080)["shop/probe-client"]["shop/backend"] is True
    rulesets = _kubectl(sandbox, "get", "noderulesets")
    assert "node-1" in rulesets
    assert "true" in rulesets
    assert "db-allow-backend" in _kubectl(sandbox, "get", "networkpolicies", "-A")
    assert "node-2" in _kubectl(sandbox, "describe", "noderuleset", "node-2")
    _kubectl(sandbox, "delete", "pod", "-n", "shop", "probe-client")
    sandbox.wait_converged()


def test_nine_pods_full_matrix_is_fast_and_ip_reuse_is_real(sandbox: Sandbox) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "extra"}}
    extra = [_pod(f"p{i}") for i in range(6)]
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "only-p0", "namespace": "extra"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "p1"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "p0"}}}]}],
        },
    }
    sandbox.apply([ns, *extra, deny])
    start = time.monotonic()
    real = sandbox.probe_matrix(80)
    elapsed = time.monotonic() - start
    assert len(real) == 9
    assert elapsed < 3.0, f"9x9 matrix took {elapsed:.2f} s"
    assert differences(real, sandbox.expected_matrix(80)) == []
    assert real["extra/p0"]["extra/p1"] is True
    assert real["extra/p2"]["extra/p1"] is False
    # Unscheduled pods were spread over both nodes.
    nodes = {sandbox.status()["pods"][f"extra/p{i}"]["node"] for i in range(6)}
    assert nodes == {"node-1", "node-2"}
    # Delete p0; a new pod on the same node gets its address, and p0's old
    # permission must not follow the address.
    old = sandbox.status()["pods"]["extra/p0"]
    sandbox.delete([extra[0]])
    newcomer = _pod("newcomer")
    newcomer["spec"]["nodeName"] = old["node"]
    sandbox.apply([newcomer])
    assert sandbox.status()["pods"]["extra/newcomer"]["ips"] == old["ips"]
    real = sandbox.probe_matrix(80)
    assert real["extra/newcomer"]["extra/p1"] is False
    assert differences(real, sandbox.expected_matrix(80)) == []
    sandbox.delete([ns], timeout=30)


def test_restarts_and_added_node(sandbox: Sandbox) -> None:
    pods, _ = _three_tier()
    sandbox.restart_agent("node-2")
    sandbox.restart_controller()
    sandbox.wait_converged(30)
    _assert_matches_engine(sandbox, 5432)
    info = sandbox.add_node()
    assert info["node"] == "node-3"
    assert info["cidr4"] == "10.244.3.0/24"
    pod = _pod("late", ns="shop", app="backend")
    pod["spec"]["nodeName"] = "node-3"
    sandbox.apply([pod])
    assert sandbox.status()["pods"]["shop/late"]["ips"][0].startswith("10.244.3.")
    real = sandbox.probe_matrix(5432)
    assert real["shop/late"]["shop/db"] is True
    assert real["shop/web"]["shop/db"] is False
    _assert_matches_engine(sandbox, 5432)
    assert copy.deepcopy(pods)  # the example itself is untouched


def test_unmeasurable_probes_are_unknown_not_denied(sandbox: Sandbox) -> None:
    """A probe that cannot be made is None with a reason, never False; the probe
    command exits 3 and says why, failing fast for a protocol the kernel lacks."""
    pods, _ = _three_tier()
    sandbox.apply(pods)
    results, reasons = sandbox.probe_explained(
        # A pod to itself answers whatever policy says.
        [("shop/web", "10.244.1.10", 80, "TCP"), ("shop/no-such-pod", "10.244.1.10", 80, "TCP")]
    )
    assert results == [True, None]
    assert reasons[0] is None
    assert "shop/no-such-pod" in str(reasons[1])
    stockade = str(ROOT / ".venv" / "bin" / "stockade")
    if sandbox.status().get("has_sctp"):
        pytest.skip("this kernel has SCTP sockets; the rest is about one without")
    assert sandbox.unmeasurable("SCTP") == "this kernel has no SCTP sockets"
    real = sandbox.probe_matrix(80, "SCTP")
    assert len(real) >= 3
    assert all(ok is None for row in real.values() for ok in row.values())
    diff = differences(real, sandbox.expected_matrix(80, "SCTP"))
    assert len(diff) == len(real) ** 2
    assert all("real packets unknown (not measured)" in line for line in diff)
    for extra in ([], ["-o", "json"], ["--expect"]):
        start = time.monotonic()
        proc = subprocess.run(
            [stockade, "sandbox", "--name", sandbox.name, "probe", "--protocol", "sctp", *extra],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert proc.returncode == 3, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr == "error: SCTP cannot be measured: this kernel has no SCTP sockets\n"
        assert time.monotonic() - start < 10


def test_uninstall_leaves_the_nodes_as_they_were(sandbox: Sandbox) -> None:
    """Stop the agents, run the node cleanup: no stockade chain, rule or set is left,
    and traffic flows as if stockade had never been there. (Runs last of the
    module's sandbox tests: it removes enforcement.)"""
    pods, policies = _three_tier()
    sandbox.apply(pods + policies)
    assert sandbox.probe_matrix(5432)["shop/web"]["shop/db"] is False
    cleaned = sandbox.uninstall()
    assert sorted(cleaned) == sorted(sandbox.status()["nodes"])
    for node in sandbox.status()["nodes"].values():
        ns = node["ns"]
        for tool in ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save"):
            saved = subprocess.run(
                ["ip", "netns", "exec", ns, tool], capture_output=True, text=True, check=False
            ).stdout
            assert "STK-" not in saved, (ns, tool, saved)
            assert "stockade" not in saved
        sets = subprocess.run(
            ["ip", "netns", "exec", ns, "ipset", "list", "-n"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert not [s for s in sets.split() if s.startswith("stk-")]
    # With no enforcement left, the pods reach whatever listens again.
    after = sandbox.probe_matrix(5432)
    assert after["shop/web"]["shop/db"] is True


def test_down_leaves_nothing_and_crash_recovery() -> None:
    sb = Sandbox(f"c{os.getpid()}", nodes=1)
    sb.up()
    sb.apply([_pod("solo", ns="default")])
    state = sb.layout.read_state()
    assert state is not None
    run_id = state["run_id"]
    children = recorded_processes(sb.layout)
    assert {"emulator", "controller", "agent-node-1", "supervisor"} <= set(children)
    assert _namespaces_of(run_id)
    # A crash: the supervisor dies without cleaning up; its children die with it.
    os.kill(int(state["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(is_alive(*p) for p in children.values()):
        time.sleep(0.05)
    assert not any(is_alive(*p) for p in children.values())
    assert _namespaces_of(run_id)  # left behind, until the next up or down
    with pytest.raises(SandboxError):
        sb.status()
    # The next `up` cleans the leftovers and starts afresh.
    sb.up()
    new_state = sb.layout.read_state()
    assert new_state is not None
    assert _namespaces_of(run_id) == []
    new_children = recorded_processes(sb.layout)
    sb.down()
    assert _namespaces_of(new_state["run_id"]) == []
    assert not any(is_alive(*p) for p in new_children.values())
    assert not sb.layout.dir.exists()
    assert not Path(f"/run/stockade-netlab/{new_state['run_id']}.json").exists()
    # And `down` after a crash cleans too.
    sb.up()
    crashed = sb.layout.read_state()
    assert crashed is not None
    os.kill(int(crashed["pid"]), signal.SIGKILL)
    sb.down()
    assert _namespaces_of(crashed["run_id"]) == []
    assert not sb.layout.dir.exists()
