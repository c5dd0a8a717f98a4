"""ClusterNetworkPolicies through the real controller (kopf, publisher) and the emulator.

The emulator serves manifests/cnp-crd.yaml (cluster-scoped, status subresource); the
controller watches the policies and Nodes, publishes NodeRuleSets with their
``clusterPolicies`` and PeerSets of Nodes, posts Events in ``default`` and writes the
``Accepted`` condition through the status subresource, once per change. Without the
CRD it runs without them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade_lab.emulator import EmulatorThread
from tests.integration.test_controller import (
    ControllerThread,
    events,
    options,
    peer_sets,
    pod,
    put,
    rule_sets,
)
from tests.integration.test_emulator import Api, Kubectl, needs_kubectl
from tests.integration.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies"
BASE = f"/apis/{GROUP}/{VERSION}/{PLURAL}"

pytestmark = [pytest.mark.timeout(120)]

Obj = dict[str, Any]


@pytest.fixture
def with_cnp_crd(emu: EmulatorThread) -> EmulatorThread:
    emu.emulator.put_object(yaml.safe_load((ROOT / "manifests" / "cnp-crd.yaml").read_text()))
    return emu


@pytest.fixture
def controller(with_cnp_crd: EmulatorThread, tmp_path: Path) -> Iterator[ControllerThread]:
    ctl = ControllerThread(options(tmp_path)).start()
    try:
        yield ctl
    finally:
        ctl.stop()


def cnp(name: str, spec: Mapping[str, Any]) -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def node(name: str, ip: str, labels: Mapping[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels or {"role": "worker"})},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


DENY_NODES = {
    "tier": "Admin",
    "priority": 10,
    "subject": {"namespaces": {}},
    "egress": [
        {"name": "no-kubelet", "action": "Deny", "to": [{"nodes": {}}]},
        {"action": "Accept", "to": [{"domainNames": ["example.com"]}]},
    ],
}


def cluster_policies_on(emu: EmulatorThread, node_name: str) -> list[str]:
    rs = rule_sets(emu).get(node_name)
    if rs is None:
        return []
    return [p["policy"]["name"] for p in rs["spec"].get("clusterPolicies") or ()]


def accepted(emu: EmulatorThread, name: str) -> Obj | None:
    obj = emu.emulator.get_object(GROUP, VERSION, PLURAL, name)
    if obj is None:
        return None
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Accepted":
            return dict(condition)
    return None


def on(emu: EmulatorThread, name: str, reason: str | None = None) -> list[Obj]:
    return [
        e
        for e in events(emu, reason)
        if e["involvedObject"].get("kind") == "ClusterNetworkPolicy"
        and e["involvedObject"]["name"] == name
    ]


def status_writes(ctl: ControllerThread) -> float:
    return ctl.writes("ClusterNetworkPolicy", "patch")


def patch_spec(emu: EmulatorThread, name: str, spec: Mapping[str, Any]) -> None:
    """An edit as kubectl makes it: the main resource, status untouched, generation + 1."""
    Api(emu.url).ok(
        "PATCH", f"{BASE}/{name}", {"spec": dict(spec)}, content_type="application/merge-patch+json"
    )


def test_a_policy_and_nodes_end_to_end(
    with_cnp_crd: EmulatorThread, controller: ControllerThread
) -> None:
    emu = with_cnp_crd
    put(emu, node("node-1", "192.168.0.1"))
    put(emu, node("node-2", "192.168.0.2"))
    put(emu, pod("web-1", "node-1", "10.0.1.1"))
    put(emu, pod("web-2", "node-2", "10.0.2.1"))
    put(emu, cnp("deny-nodes", DENY_NODES))
    wait_for(
        lambda: (
            cluster_policies_on(emu, "node-1")
            == cluster_policies_on(emu, "node-2")
            == ["deny-nodes"]
        ),
        message="enforced on both nodes",
    )
    wait_for(controller.settled)
    (rule,) = rule_sets(emu)["node-1"]["spec"]["clusterPolicies"][0]["policy"]["egress"]
    assert rule["action"] == "Deny"
    (node_set,) = peer_sets(emu).values()
    members = {m["pod"]: m["ips"] for m in node_set["spec"]["members"]}
    assert members == {"node-1": ["192.168.0.1"], "node-2": ["192.168.0.2"]}

    # Events, in "default" (where Events of cluster-scoped objects go).
    # (The pods may come in two flushes: then an earlier "1 of 2 nodes" came first.)
    final = "applied on 2 of 2 nodes selecting 2 pods"
    wait_for(
        lambda: [e for e in on(emu, "deny-nodes", "PolicyApplied") if e["message"] == final],
        message="PolicyApplied",
    )
    applied = next(e for e in on(emu, "deny-nodes", "PolicyApplied") if e["message"] == final)
    assert applied["metadata"]["namespace"] == "default"
    assert applied["involvedObject"]["apiVersion"] == f"{GROUP}/{VERSION}"
    wait_for(lambda: on(emu, "deny-nodes", "UnsupportedPeer"), message="UnsupportedPeer")
    (unsupported,) = on(emu, "deny-nodes", "UnsupportedPeer")
    assert unsupported["type"] == "Warning"
    assert "fails closed" in unsupported["message"]

    # The Accepted condition, through the status subresource.
    wait_for(lambda: accepted(emu, "deny-nodes") is not None, message="the condition")
    condition = accepted(emu, "deny-nodes")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "Accepted")
    assert condition["observedGeneration"] == 1
    assert "egress rule 1" in condition["message"]
    wait_for(controller.settled)
    time.sleep(0.5)
    assert status_writes(controller) == 1  # its own echo does not write it again

    # A node added: the node peer set follows.
    put(emu, node("node-3", "192.168.0.3"))
    wait_for(
        lambda: (
            {m["pod"] for ps in peer_sets(emu).values() for m in ps["spec"]["members"]}
            == {"node-1", "node-2", "node-3"}
        ),
        message="node-3 in the node set",
    )

    # Edited into an invalid policy: the last valid version stays, the condition says so.
    before = rule_sets(emu)["node-1"]["spec"]
    patch_spec(emu, "deny-nodes", {"priority": 5000})
    wait_for(
        lambda: (accepted(emu, "deny-nodes") or {}).get("status") == "False", message="Invalid"
    )
    condition = accepted(emu, "deny-nodes")
    assert condition is not None
    assert condition["reason"] == "Invalid"
    assert condition["observedGeneration"] == 2
    assert condition["message"].startswith("invalid, its last valid version stays in force: ")
    wait_for(lambda: on(emu, "deny-nodes", "PolicyRejected"), message="PolicyRejected")
    wait_for(controller.settled)
    assert rule_sets(emu)["node-1"]["spec"] == before

    # Fixed, then deleted: the rule sets lose it.
    patch_spec(emu, "deny-nodes", {"priority": 10})
    wait_for(lambda: (accepted(emu, "deny-nodes") or {}).get("observedGeneration") == 3)
    assert (accepted(emu, "deny-nodes") or {}).get("status") == "True"
    emu.emulator.delete_object(GROUP, VERSION, PLURAL, "deny-nodes")
    wait_for(lambda: cluster_policies_on(emu, "node-1") == [], message="removed")
    wait_for(lambda: not peer_sets(emu), message="node set removed")


def test_equal_priorities_are_warned(
    with_cnp_crd: EmulatorThread, controller: ControllerThread
) -> None:
    emu = with_cnp_crd
    put(emu, pod("web-1", "node-1", "10.0.1.1"))
    spec = {
        "tier": "Baseline",
        "priority": 3,
        "subject": {"namespaces": {}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}],
    }
    put(emu, cnp("b-second", spec))
    put(emu, cnp("a-first", spec))
    wait_for(
        lambda: on(emu, "a-first", "PriorityOverlap") and on(emu, "b-second", "PriorityOverlap")
    )
    (warning,) = on(emu, "a-first", "PriorityOverlap")
    assert warning["message"].startswith("ClusterNetworkPolicy b-second has the same tier")
    assert warning["message"].endswith("a-first before b-second")
    assert cluster_policies_on(emu, "node-1") == ["a-first", "b-second"]


def test_restart_writes_nothing(with_cnp_crd: EmulatorThread, tmp_path: Path) -> None:
    emu = with_cnp_crd
    put(emu, node("node-1", "192.168.0.1"))
    put(emu, pod("web-1", "node-1", "10.0.1.1"))
    put(emu, cnp("deny-nodes", DENY_NODES))
    first = ControllerThread(options(tmp_path)).start()
    try:
        wait_for(lambda: accepted(emu, "deny-nodes") is not None)
        wait_for(first.settled)
        posted = len(events(emu))
    finally:
        first.stop()
    second = ControllerThread(options(tmp_path)).start()
    try:
        wait_for(second.settled)
        time.sleep(0.5)
        assert second.writes() == 0
        assert status_writes(second) == 0
        assert len(events(emu)) == posted
    finally:
        second.stop()


@needs_kubectl
def test_kubectl_shows_the_columns_and_the_condition(
    with_cnp_crd: EmulatorThread, controller: ControllerThread, tmp_path: Path
) -> None:
    emu = with_cnp_crd
    kubectl = Kubectl(emu.write_kubeconfig(tmp_path / "kubeconfig-kubectl"), tmp_path)
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(cnp("deny-nodes", DENY_NODES)))
    wait_for(lambda: accepted(emu, "deny-nodes") is not None)
    table = [line.split() for line in kubectl("get", "cnp").splitlines()]
    assert table[0] == ["NAME", "TIER", "PRIORITY", "AGE"]
    assert table[1][:3] == ["deny-nodes", "Admin", "10"]
    status = kubectl(
        "get",
        "cnp",
        "deny-nodes",
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Accepted')].status}",
    )
    assert status.strip() == "True"
    # PolicyApplied waits until the policy's counts settle (one Event per burst).
    wait_for(lambda: on(emu, "deny-nodes", "PolicyApplied"))
    listed = kubectl("get", "events", "-n", "default", "--field-selector", "reason=PolicyApplied")
    assert "applied on" in listed
    wait_for(lambda: on(emu, "deny-nodes", "UnsupportedPeer"))
    described = kubectl("describe", "cnp", "deny-nodes")
    assert "PolicyApplied" in described
    assert "UnsupportedPeer" in described


def test_without_the_crd_it_runs_without_cluster_policies_until_installed(
    emu: EmulatorThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "stockade.controller"):
        ctl = ControllerThread(options(tmp_path, optional_recheck=0.2)).start()
        try:
            put(emu, pod("web-1", "node-1", "10.0.1.1"))
            wait_for(lambda: "node-1" in rule_sets(emu))
            wait_for(ctl.settled)
            assert not ctl.controller.publisher.cluster_policies_watched
            said = [r.getMessage() for r in caplog.records if "running without" in r.getMessage()]
            assert len(said) == 1
            assert "clusternetworkpolicies.policy.networking.k8s.io/v1alpha2" in said[0]
            time.sleep(0.5)
            assert ctl.thread.is_alive()  # still absent: it goes on, quietly
            assert len([r for r in caplog.records if "running without" in r.getMessage()]) == 1
            # Installed later: the controller stops by itself (its container restarts) ...
            emu.emulator.put_object(
                yaml.safe_load((ROOT / "manifests" / "cnp-crd.yaml").read_text())
            )
            ctl.thread.join(30)
            assert not ctl.thread.is_alive()
            assert any("served now" in r.getMessage() for r in caplog.records)
        finally:
            ctl.stop()
    # ... and, started again, enforces them.
    again = ControllerThread(options(tmp_path)).start()
    try:
        put(emu, cnp("deny-nodes", DENY_NODES))
        wait_for(lambda: cluster_policies_on(emu, "node-1") == ["deny-nodes"])
        assert again.controller.publisher.cluster_policies_watched
    finally:
        again.stop()
