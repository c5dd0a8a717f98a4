"""The real controller (kopf, the publisher, the Lease) against the emulated API server.

Each controller runs in a thread of its own with its own event loop, as
``stockade-controller`` would in a pod; the test writes cluster objects straight
into the emulator and waits for NodeRuleSets, PeerSets and Events to follow.
Writes are counted by the controller's own metrics.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from stockade.controller.main import Controller, Options, run
from stockade_lab.emulator import EmulatorThread
from tests.integration.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "stockade.dev", "v1alpha1"

pytestmark = [pytest.mark.timeout(120)]


# --------------------------------------------------------------------------- harness


class ControllerThread:
    """One controller replica in a thread; ``stop()`` ends it cleanly."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.stop_flag = threading.Event()
        self.started = threading.Event()
        self.parts: list[Controller] = []
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(run(self.options, self.stop_flag, self.started, on_start=self.parts))
        except BaseException as exc:  # reported by the test
            self.error.append(exc)
            self.started.set()

    def start(self) -> ControllerThread:
        self.thread.start()
        assert self.started.wait(10)
        assert not self.error, self.error
        return self

    @property
    def controller(self) -> Controller:
        return self.parts[0]

    def settled(self) -> bool:
        """Leading, adopted, nothing dirty and nothing pending."""
        pub = self.controller.publisher
        return (
            pub.ready
            and pub.leading
            and pub.published is not None
            and not pub.coalescer.dirty
            and not pub.pending
        )

    def writes(self, kind: str | None = None, verb: str | None = None) -> float:
        return self.controller.metrics.write_count(kind, verb)

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert not self.error, self.error


def options(tmp_path: Path, **kw: Any) -> Options:
    base: dict[str, Any] = {
        "kubeconfig": str(tmp_path / "kubeconfig"),
        "flush_interval": 0.1,
        "metrics_port": 0,
        "standalone": True,
    }
    base.update(kw)
    return Options(**base)


@pytest.fixture
def controller(emu: EmulatorThread, tmp_path: Path) -> Iterator[ControllerThread]:
    ctl = ControllerThread(options(tmp_path)).start()
    try:
        yield ctl
    finally:
        ctl.stop()


# --------------------------------------------------------------------------- objects


def put(emu: EmulatorThread, obj: Mapping[str, Any]) -> None:
    emu.emulator.put_object(dict(obj))


def pod(
    name: str,
    node: str,
    ip: str,
    labels: Mapping[str, str] | None = None,
    ns: str = "default",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {"app": "web"})},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def policy(name: str, spec: Mapping[str, Any], ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": dict(spec),
    }


ALLOW_CLIENT = {
    "podSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
}


def rule_sets(emu: EmulatorThread) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in emu.emulator.objects(GROUP, VERSION, "noderulesets")}


def peer_sets(emu: EmulatorThread) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in emu.emulator.objects(GROUP, VERSION, "peersets")}


def policies_on(emu: EmulatorThread, node: str) -> list[str]:
    rs = rule_sets(emu).get(node)
    return [] if rs is None else [p["policy"]["name"] for p in rs["spec"]["policies"]]


def members(emu: EmulatorThread) -> set[str]:
    return {m["pod"] for ps in peer_sets(emu).values() for m in ps["spec"]["members"]}


def events(emu: EmulatorThread, reason: str | None = None) -> list[dict[str, Any]]:
    found = emu.emulator.objects("", "v1", "events")
    return [e for e in found if reason is None or e.get("reason") == reason]


def seed(emu: EmulatorThread) -> None:
    put(emu, pod("web-1", "node-1", "10.0.1.1"))
    put(emu, pod("web-2", "node-2", "10.0.2.1"))
    put(emu, pod("client", "node-2", "10.0.2.2", {"app": "client"}))
    put(emu, policy("allow-client", ALLOW_CLIENT))


# --------------------------------------------------------------------------- tests


def test_policy_applied_changed_deleted(emu: EmulatorThread, controller: ControllerThread) -> None:
    seed(emu)
    wait_for(lambda: policies_on(emu, "node-2") == ["default/allow-client"], message="applied")
    assert policies_on(emu, "node-1") == ["default/allow-client"]
    assert members(emu) == {"default/client"}
    (ps,) = peer_sets(emu).values()
    assert ps["metadata"]["labels"]["stockade.dev/set"] == ps["spec"]["setName"]
    assert rule_sets(emu)["node-1"]["metadata"]["annotations"]["stockade.dev/hash"]
    wait_for(lambda: events(emu, "PolicyApplied"), message="the Applied event")
    assert events(emu, "PolicyApplied")[0]["message"] == "applied on 2 of 2 nodes selecting 2 pods"

    # Changed: an expression selector, and peers are the web pods instead.
    changed = {
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
    }
    put(emu, pod("web-2", "node-2", "10.0.2.1", {"app": "web", "tier": "x"}))
    put(emu, policy("allow-client", changed))
    wait_for(lambda: members(emu) == {"default/web-1", "default/web-2"}, message="new peers")

    # Deleted: the peer set goes, the rule sets stay (their pods are still there), empty.
    emu.emulator.delete_object(
        "networking.k8s.io", "v1", "networkpolicies", "allow-client", "default"
    )
    wait_for(lambda: not peer_sets(emu), message="peer sets removed")
    wait_for(lambda: policies_on(emu, "node-1") == [] and policies_on(emu, "node-2") == [])
    assert set(rule_sets(emu)) == {"node-1", "node-2"}


def test_pods_created_relabelled_deleted(emu: EmulatorThread, controller: ControllerThread) -> None:
    seed(emu)
    wait_for(lambda: members(emu) == {"default/client"})
    put(emu, pod("client-2", "node-3", "10.0.3.2", {"app": "client"}))
    wait_for(lambda: members(emu) == {"default/client", "default/client-2"}, message="created")
    # node-3 has a pod but no policy selects it: an empty rule set.
    wait_for(lambda: "node-3" in rule_sets(emu))
    assert policies_on(emu, "node-3") == []
    put(emu, pod("client-2", "node-3", "10.0.3.2", {"app": "web"}))
    wait_for(lambda: policies_on(emu, "node-3") == ["default/allow-client"], message="relabelled")
    assert members(emu) == {"default/client"}
    emu.emulator.delete_object("", "v1", "pods", "client-2", "default")
    wait_for(lambda: "node-3" not in rule_sets(emu), message="deleted")
    # An unscheduled pod makes no rule set for node "".
    pending = pod("pending", "", "10.0.9.9")
    put(emu, pending)
    time.sleep(0.5)
    assert "" not in rule_sets(emu)


def test_namespace_relabelled(emu: EmulatorThread, controller: ControllerThread) -> None:
    put(emu, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    put(emu, pod("web-1", "node-1", "10.0.1.1"))
    put(emu, pod("other", "node-2", "10.0.2.5", {"app": "x"}, ns="team"))
    from_trusted = {
        "podSelector": {},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"trust": "yes"}}}]}],
    }
    put(emu, policy("from-trusted", from_trusted))
    wait_for(lambda: policies_on(emu, "node-1") == ["default/from-trusted"])
    wait_for(lambda: peer_sets(emu))
    assert members(emu) == set()
    put(
        emu,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "team", "labels": {"trust": "yes"}},
        },
    )
    wait_for(lambda: members(emu) == {"team/other"}, message="namespace relabelled")


def test_invalid_policy_reported_while_valid_ones_apply(
    emu: EmulatorThread, controller: ControllerThread
) -> None:
    seed(emu)
    bad = {
        "podSelector": {},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/99"}}]}],
    }
    put(emu, policy("broken", bad))
    wait_for(lambda: events(emu, "PolicyRejected"), message="a PolicyRejected event")
    (event,) = events(emu, "PolicyRejected")
    assert event["type"] == "Warning"
    assert event["involvedObject"]["name"] == "broken"
    assert "spec.ingress[0].from[0].ipBlock.cidr" in event["message"]
    wait_for(lambda: policies_on(emu, "node-2") == ["default/allow-client"])
    time.sleep(0.3)
    assert policies_on(emu, "node-1") == ["default/allow-client"]  # "broken" enforces nothing


def test_rule_matching_nothing_warned_once(emu: EmulatorThread, tmp_path: Path) -> None:
    seed(emu)
    never = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {"key": "kubernetes.io/metadata.name", "operator": "DoesNotExist"}
                            ]
                        }
                    }
                ]
            }
        ],
    }
    put(emu, policy("never", never))
    first = ControllerThread(options(tmp_path)).start()
    try:
        wait_for(lambda: events(emu, "RuleMatchesNothing"), message="a RuleMatchesNothing event")
        (event,) = events(emu, "RuleMatchesNothing")
        assert event["type"] == "Warning"
        assert event["involvedObject"]["name"] == "never"
        assert event["message"] == (
            "ingress rule 0: every peer is impossible: peer 0 namespaceSelector requires "
            "kubernetes.io/metadata.name DoesNotExist, but every namespace has that label; "
            "this rule allows nothing"
        )
        # The policy is enforced all the same (it isolates its targets).
        wait_for(lambda: "default/never" in policies_on(emu, "node-1"))
        wait_for(first.settled)
    finally:
        first.stop()
    before = len(events(emu))
    second = ControllerThread(options(tmp_path)).start()
    try:
        wait_for(second.settled, message="the second controller to settle")
        time.sleep(0.5)
        assert len(events(emu)) == before  # seeded from the Events: nothing posted twice
    finally:
        second.stop()


def test_restart_without_churn(emu: EmulatorThread, tmp_path: Path) -> None:
    seed(emu)
    first = ControllerThread(options(tmp_path)).start()
    try:
        wait_for(lambda: policies_on(emu, "node-2") == ["default/allow-client"])
        wait_for(first.settled)
        wait_for(lambda: events(emu, "PolicyApplied"))
        assert first.writes() == 3  # one PeerSet, two NodeRuleSets
    finally:
        first.stop()
    versions = {n: o["metadata"]["resourceVersion"] for n, o in rule_sets(emu).items()}
    before_events = len(events(emu))
    second = ControllerThread(options(tmp_path)).start()
    try:
        wait_for(second.settled, message="the second controller to settle")
        time.sleep(0.5)
        assert second.writes() == 0
        assert len(events(emu)) == before_events
        assert {n: o["metadata"]["resourceVersion"] for n, o in rule_sets(emu).items()} == versions
        # A change while it runs is still published.
        put(emu, pod("client-2", "node-1", "10.0.1.2", {"app": "client"}))
        wait_for(lambda: members(emu) == {"default/client", "default/client-2"})
        wait_for(second.settled)
        # The PeerSet, and node-1's rule set (its list of known pods).
        assert second.writes() == 2
    finally:
        second.stop()


def test_burst_of_1000_pods_is_coalesced(emu: EmulatorThread, tmp_path: Path) -> None:
    seed(emu)
    ctl = ControllerThread(options(tmp_path, flush_interval=0.5)).start()
    try:
        wait_for(lambda: members(emu) == {"default/client"})
        wait_for(ctl.settled)
        before = ctl.writes()
        rule_sets_before = ctl.writes("NodeRuleSet")
        for i in range(1000):
            put(
                emu,
                pod(
                    f"c-{i}",
                    f"node-{1 + i % 2}",
                    f"10.1.{i // 200}.{i % 200 + 1}",
                    {"app": "client"},
                ),
            )
        wait_for(lambda: len(members(emu)) == 1001, timeout=60, message="1,001 members")
        wait_for(ctl.settled)
        writes = ctl.writes() - before
        flushes = ctl.controller.metrics.flushes._value.get()
        # Peer-set shards and each node's rule set (its known pods), a handful of
        # flushes at most: not a write per pod.
        rule_set_writes = ctl.writes("NodeRuleSet") - rule_sets_before
        assert 2 <= rule_set_writes <= 6, f"{rule_set_writes} rule set writes"
        assert writes <= 30, f"{writes} writes in {flushes} flushes"
    finally:
        ctl.stop()


def test_metrics_and_health(emu: EmulatorThread, tmp_path: Path) -> None:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seed(emu)
    ctl = ControllerThread(options(tmp_path, metrics_port=port, metrics_host="127.0.0.1")).start()
    try:
        wait_for(ctl.settled)
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
            assert resp.status == 200  # the CRDs are served (test_controller_crds.py)
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'stockade_controller_writes_total{kind="NodeRuleSet",verb="create"} 2.0' in text
        assert "stockade_controller_dirty_backlog 0.0" in text
        assert "stockade_controller_flush_duration_seconds_count" in text
    finally:
        ctl.stop()


def test_failover_between_two_replicas(emu: EmulatorThread, tmp_path: Path) -> None:
    seed(emu)
    common = {"standalone": False, "lease_duration": 2.0, "lease_namespace": "default"}
    a = ControllerThread(options(tmp_path, identity="replica-a", **common)).start()
    wait_for(lambda: a.controller.publisher.leading, message="replica-a leading")
    b = ControllerThread(options(tmp_path, identity="replica-b", **common)).start()
    stopped_b = False
    try:
        wait_for(lambda: policies_on(emu, "node-2") == ["default/allow-client"])
        wait_for(a.settled)
        time.sleep(1.0)
        assert not b.controller.publisher.leading
        assert b.writes() == 0
        lease = emu.emulator.get_object(
            "coordination.k8s.io", "v1", "leases", "stockade-controller", "default"
        )
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "replica-a"

        # replica-a dies without releasing the Lease: b takes over after expiry.
        elector = a.controller.elector
        assert elector is not None

        async def no_release() -> None:
            return None

        elector.release = no_release  # type: ignore[method-assign]
        a.stop()
        wait_for(lambda: b.controller.publisher.leading, timeout=15, message="replica-b leading")
        wait_for(b.settled)
        assert b.writes() == 0  # it adopted what a published
        put(emu, pod("client-2", "node-1", "10.0.1.2", {"app": "client"}))
        wait_for(lambda: members(emu) == {"default/client", "default/client-2"})
        lease = emu.emulator.get_object(
            "coordination.k8s.io", "v1", "leases", "stockade-controller", "default"
        )
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "replica-b"
        b.stop()
        stopped_b = True
        # A clean stop releases the Lease.
        lease = emu.emulator.get_object(
            "coordination.k8s.io", "v1", "leases", "stockade-controller", "default"
        )
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == ""
    finally:
        if a.thread.is_alive():
            a.stop()
        if not stopped_b:
            b.stop()
