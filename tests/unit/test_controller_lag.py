"""Nodes and sync lag in the controller: the pure tracker with a fake clock, node
events in the state, and the publisher's bookkeeping against an in-memory API."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from stockade.controller.lag import OTHER, POLICY, SyncLagTracker
from stockade.controller.metrics import OLDEST_UNAPPLIED, ControllerMetrics
from stockade.controller.publisher import Publisher
from stockade.controller.state import NODE, ControllerState
from stockade.controller.writes import HASH_ANNOTATION
from stockade.kube import JsonObject, Resource
from stockade.model import parse_policy
from tests.unit.test_publisher import FakeApi, FakeClock, feed, namespace, pod, policy

# --------------------------------------------------------------------------- tracker


def test_change_applied_when_agent_reports_its_generation() -> None:
    t = SyncLagTracker()
    t.changed("n1", "h1", at=10.0, policies=("default/p",))
    assert t.oldest(12.0) == {"n1": 2.0}
    assert t.published("n1", "h1", "u1", 3, now=12.5) == []
    # The agent still enforces generation 2.
    assert t.status("n1", "u1", 3, "h1", 2, now=13.0) == []
    (done,) = t.status("n1", "u1", 3, "h1", 3, now=14.0)
    assert (done.node, done.lag, done.cause, done.policies) == ("n1", 4.0, POLICY, ("default/p",))
    assert t.oldest(20.0) == {}
    assert len(t) == 0


def test_later_generation_settles_earlier_changes() -> None:
    t = SyncLagTracker()
    t.changed("n1", "h1", at=1.0)
    t.published("n1", "h1", "u1", 1, now=1.5)
    t.changed("n1", "h2", at=2.0, policies=("a/p",))
    t.published("n1", "h2", "u1", 2, now=2.5)
    assert t.oldest(3.0) == {"n1": 2.0}
    done = t.status("n1", "u1", 2, "h2", 2, now=5.0)
    assert sorted((d.lag, d.cause) for d in done) == [(3.0, POLICY), (4.0, OTHER)]


def test_unwritten_change_is_carried_by_the_next_write() -> None:
    t = SyncLagTracker()
    t.changed("n1", "h1", at=1.0)  # its write failed
    t.changed("n1", "h2", at=2.0)
    t.published("n1", "h2", "u1", 5, now=3.0)
    assert [c.generation for c in t.pending("n1")] == [5, 5]
    assert len(t.status("n1", "u1", 5, "h2", 5, now=4.0)) == 2


def test_status_seen_before_write_answer() -> None:
    # The watch may deliver the agent's status before the write's answer is read.
    t = SyncLagTracker()
    t.changed("n1", "h1", at=1.0)
    (done,) = t.status("n1", "u1", 4, "h1", 4, now=2.0)
    assert done.lag == 1.0
    assert t.published("n1", "h1", "u1", 4, now=2.1) == []


def test_old_generation_from_the_watch_does_not_settle_newer_content() -> None:
    t = SyncLagTracker()
    t.status("n1", "u1", 3, "h0", 3, now=0.0)
    t.changed("n1", "h1", at=1.0)
    # A status-only event of the object as it was (h0, generation 3).
    assert t.status("n1", "u1", 3, "h0", 3, now=1.5) == []
    assert t.pending("n1")[0].generation is None
    t.published("n1", "h1", "u1", 4, now=2.0)
    (done,) = t.status("n1", "u1", 4, "h1", 4, now=3.0)
    assert done.lag == 2.0


def test_unchanged_content_uses_the_known_generation() -> None:
    t = SyncLagTracker()
    t.status("n1", "u1", 7, "h0", 7, now=0.0)  # adopted: known object, applied
    t.changed("n1", "h1", at=1.0)
    t.changed("n1", "h0", at=2.0)  # reverted before any write
    (first, second) = t.unchanged("n1", "h0", now=2.5)
    assert {first.lag, second.lag} == {1.5, 0.5}
    assert t.oldest(3.0) == {}


def test_recreated_object_restarts_generations() -> None:
    t = SyncLagTracker()
    t.changed("n1", "h1", at=1.0)
    t.published("n1", "h1", "u1", 9, now=1.0)
    t.status("n1", "u1", 9, "h1", 8, now=1.5)
    # Deleted and made again (uid u2, generation 1): the old applied 8 means nothing.
    t.published("n1", "h1", "u2", 1, now=2.0)
    assert t.status("n1", "u1", 9, "h1", 8, now=2.5) == []  # a late event of the old one
    (done,) = t.status("n1", "u2", 1, "h1", 1, now=3.0)
    assert done.lag == 2.0


def test_removed_node_forgets_its_changes() -> None:
    t = SyncLagTracker()
    t.changed("n1", "h1", at=1.0)
    t.changed("n2", "h2", at=4.0)
    t.removed("n1")
    assert t.oldest(5.0) == {"n2": 1.0}
    t.clear()
    assert t.oldest(5.0) == {}


# --------------------------------------------------------------------------- nodes in the state


def node(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name, "labels": dict(labels or {})}}


def test_node_added_and_removed() -> None:
    changes: list[int] = []
    state = ControllerState(on_change=lambda: changes.append(1))
    state.observe(NODE, None, node("n1"))
    assert state.compiler.flush().nodes["n1"] is not None  # an empty rule set
    heartbeat = {**node("n1"), "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    state.observe(NODE, "MODIFIED", heartbeat)  # status, not addresses: no change
    assert len(changes) == 1
    assert not state.compiler.flush()
    # Labels matter to ClusterNetworkPolicy nodes peers: a change, but no rule set
    # changes while no policy has a nodes peer.
    state.observe(NODE, "MODIFIED", node("n1", {"x": "y"}))
    assert len(changes) == 2
    assert not state.compiler.flush().nodes
    state.observe(NODE, "DELETED", node("n1"))
    assert state.compiler.flush().nodes == {"n1": None}
    assert len(changes) == 3


def test_removed_node_keeps_its_rule_set_while_pods_remain() -> None:
    state = ControllerState()
    state.observe(NODE, None, node("n1"))
    state.observe("Pod", None, pod("web-1", "n1", "10.0.1.1"))
    state.compiler.flush()
    state.observe(NODE, "DELETED", node("n1"))
    assert not state.compiler.flush().nodes  # the pod still refers to n1
    state.observe("Pod", "DELETED", pod("web-1", "n1", "10.0.1.1"))
    assert state.compiler.flush().nodes == {"n1": None}


def test_policy_changes_are_stamped_once_per_flush() -> None:
    clock = FakeClock()
    state = ControllerState(clock=clock)
    feed(state, namespace("default"), policy("p"))
    clock.now += 1
    feed(state, policy("p"))  # the same again: not a change
    p2 = policy("p", {"podSelector": {}, "ingress": []})
    feed(state, p2)  # a real change; the first stamp stays
    assert state.take_policy_changes() == {"default/p": 100.0}
    assert state.take_policy_changes() == {}
    clock.now += 1
    feed(state, p2, event="DELETED")
    assert state.take_policy_changes() == {"default/p": 102.0}


# --------------------------------------------------------------------------- publisher


class VersionedApi(FakeApi):
    """The in-memory API, with the uid and generation a real server sets."""

    def __init__(self) -> None:
        super().__init__()
        self._uids = itertools.count(1)

    async def create(
        self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        await super().create(resource, body, namespace)
        obj = self.objects[(resource.plural, body["metadata"]["name"])]
        obj["metadata"].update({"uid": f"uid-{next(self._uids)}", "generation": 1})
        return copy.deepcopy(obj)

    async def patch_merge(
        self, resource: Resource, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        obj = await super().patch_merge(resource, name, patch, namespace)
        obj["metadata"]["generation"] += 1
        return copy.deepcopy(obj)

    def agent_applies(self, name: str) -> JsonObject:
        """What the agent on ``name`` does: report the current generation applied."""
        obj = self.objects[("noderulesets", name)]
        obj["status"] = {"applied": True, "appliedGeneration": obj["metadata"]["generation"]}
        return copy.deepcopy(obj)


def setup() -> tuple[Publisher, ControllerState, VersionedApi, FakeClock]:
    api = VersionedApi()
    clock = FakeClock()
    state = ControllerState(clock=clock)
    pub = Publisher(api, state, ControllerMetrics(), interval=0.2, clock=clock)
    state.on_change = pub.mark
    pub.ready = True
    state.end_warmup()
    pub.set_leader(True)
    return pub, state, api, clock


def lag_samples(pub: Publisher, cause: str) -> tuple[float, float]:
    count = total = 0.0
    for metric in pub.metrics.sync_lag.collect():
        for s in metric.samples:
            if s.labels.get("cause") != cause:
                continue
            if s.name.endswith("_count"):
                count = s.value
            elif s.name.endswith("_sum"):
                total = s.value
    return count, total


def oldest_gauge(pub: Publisher) -> dict[str, float]:
    text = pub.metrics.render().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(OLDEST_UNAPPLIED + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('"')[1]] = float(value)
    return out


def test_publisher_measures_policy_change_to_applied() -> None:
    pub, state, api, clock = setup()
    feed(state, namespace("default"), pod("web-1", "n1", "10.0.1.1"), node("n2"))
    asyncio.run(pub.flush_once())
    for name in ("n1", "n2"):
        pub.observe_rule_set("MODIFIED", api.agent_applies(name))
    assert oldest_gauge(pub) == {}
    assert lag_samples(pub, OTHER)[0] == 2

    clock.now = 200.0
    feed(state, policy("allow-client"))  # selects web-1 on n1 only
    clock.now = 200.5
    asyncio.run(pub.flush_once())
    assert [c.policies for c in pub.lag.pending("n1")] == [("default/allow-client",)]
    assert pub.lag.pending("n2") == ()
    clock.now = 203.0
    assert oldest_gauge(pub) == {"n1": pytest.approx(3.0)}
    pub.observe_rule_set("MODIFIED", api.objects[("noderulesets", "n1")])  # not yet applied
    assert lag_samples(pub, POLICY) == (0.0, 0.0)
    clock.now = 204.0
    pub.observe_rule_set("MODIFIED", api.agent_applies("n1"))
    count, total = lag_samples(pub, POLICY)
    assert count == 1.0
    assert total == pytest.approx(4.0)
    assert oldest_gauge(pub) == {}


def test_publisher_forgets_deleted_node_and_standby_tracks_nothing() -> None:
    pub, state, api, _ = setup()
    feed(state, namespace("default"), node("n1"))
    asyncio.run(pub.flush_once())
    assert ("noderulesets", "n1") in api.objects
    assert len(pub.lag.pending("n1")) == 1
    feed(state, node("n1"), event="DELETED")
    asyncio.run(pub.flush_once())
    assert ("noderulesets", "n1") not in api.objects
    assert pub.lag.oldest(1e9) == {}
    pub.set_leader(False)
    feed(state, node("n3"))
    asyncio.run(pub.flush_once())
    assert pub.lag.oldest(1e9) == {}


def test_adopted_rule_set_settles_a_reverted_change() -> None:
    pub, state, api, clock = setup()
    feed(state, namespace("default"), node("n1"))
    asyncio.run(pub.flush_once())
    pub.observe_rule_set(None, api.agent_applies("n1"))
    spec_hash = api.objects[("noderulesets", "n1")]["metadata"]["annotations"][HASH_ANNOTATION]
    # A pod comes and goes within one flush: the content is the published one again.
    feed(state, pod("web-1", "n1", "10.0.1.1"), policy("p", {"podSelector": {}}))
    feed(state, policy("p", {"podSelector": {}}), event="DELETED")
    feed(state, pod("web-1", "n1", "10.0.1.1"), event="DELETED")
    clock.now += 1
    asyncio.run(pub.flush_once())
    assert api.objects[("noderulesets", "n1")]["metadata"]["annotations"][HASH_ANNOTATION] == (
        spec_hash
    )
    assert pub.lag.oldest(clock.now) == {}


def test_each_policy_event_compiles_the_policy_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller's record keeps what the compiler compiled: one compile per event."""
    import stockade.compiler as compiler_module  # noqa: PLC0415 - patched below

    calls: list[str] = []
    real = compiler_module.compile_policy

    def counting(p: Any) -> Any:
        calls.append(p.key)
        return real(p)

    monkeypatch.setattr(compiler_module, "compile_policy", counting)
    state = ControllerState()
    state.observe("Namespace", None, namespace("default"))
    state.observe("NetworkPolicy", None, policy("a"))
    assert calls == ["default/a"]
    changed = copy.deepcopy(policy("a"))
    changed["spec"]["ingress"] = []
    state.observe("NetworkPolicy", "MODIFIED", changed)
    assert calls == ["default/a", "default/a"]
    record = state.policies["default/a"]
    # The very object the compiler holds, not an equal one compiled beside it.
    assert record.compiled is state.compiler.compiled_policy("default/a")
    assert record.compiled is not None
    assert record.compiled == real(parse_policy(changed))[0]
