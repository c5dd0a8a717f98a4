"""The controller and ClusterNetworkPolicies: state, Events, the Accepted condition.

The pure parts (overlaps, conditions, event texts) in tables; the state and the
publisher against test_publisher's in-memory API, with a status subresource added.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from stockade.cnp import parse_cluster_network_policy
from stockade.controller.conditions import (
    ConditionSpec,
    accepted_condition,
    conditions_patch,
    observed_conditions,
)
from stockade.controller.discovery import CrdGate
from stockade.controller.publisher import STATUS_ECHO_WAIT, Publisher
from stockade.controller.reports import (
    REASON_PRIORITY_OVERLAP,
    REASON_UNSUPPORTED_PEER,
    EventSpec,
    Footprint,
    PolicyTracker,
    cluster_policy_events,
    overlap_events,
    seed_from_events,
    unsupported_peer_events,
)
from stockade.controller.state import (
    CLUSTER_NETWORK_POLICY,
    NODE,
    ControllerState,
    involved_cluster_policy,
    object_key,
)
from stockade.errors import InvalidObjectError
from stockade.kube import (
    CLUSTER_NETWORK_POLICIES,
    ISOLATION_POLICIES,
    JsonObject,
    NotFound,
    Resource,
)
from stockade.ruleset import CompiledClusterPolicy, NodeClusterPolicy, NodeRuleSet, TierRule
from stockade.tier_lint import Overlap, node_overlaps
from tests.unit.test_publisher import FakeApi, FakeClock, flush, make, namespace, pod

Obj = dict[str, Any]

# --------------------------------------------------------------------------- objects


def cnp(
    name: str,
    spec: Mapping[str, Any],
    generation: int = 1,
    status: Mapping[str, Any] | None = None,
) -> Obj:
    body: Obj = {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "generation": generation,
            "resourceVersion": str(generation),
        },
        "spec": dict(spec),
    }
    if status is not None:
        body["status"] = dict(status)
    return body


def node(name: str, labels: Mapping[str, str] | None = None, ip: str | None = None) -> Obj:
    body: Obj = {"kind": "Node", "metadata": {"name": name, "labels": dict(labels or {})}}
    if ip is not None:
        body["status"] = {"addresses": [{"type": "InternalIP", "address": ip}]}
    return body


WEB = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}
DENY_CLIENTS = {
    "tier": "Admin",
    "priority": 10,
    "subject": {"pods": WEB},
    "ingress": [
        {
            "name": "no-clients",
            "action": "Deny",
            "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {}}}}],
        }
    ],
}
DENY_NODES = {
    "tier": "Baseline",
    "priority": 5,
    "subject": {"namespaces": {}},
    "egress": [{"action": "Deny", "to": [{"nodes": {"matchLabels": {"role": "worker"}}}]}],
}
INVALID = {"tier": "Middle", "priority": 2000, "subject": {"namespaces": {}}}


class StatusApi(FakeApi):
    """test_publisher's FakeApi with the status subresource of ClusterNetworkPolicies."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: dict[str, Obj] = {}
        self.gone: set[str] = set()

    async def patch_status(
        self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        await super().patch_status(resource, name, status, namespace)
        assert resource == CLUSTER_NETWORK_POLICIES
        if name in self.gone:
            raise NotFound(404, "NotFound", name)
        self.statuses[name] = copy.deepcopy(dict(status))
        return {"status": copy.deepcopy(dict(status))}

    def status_writes(self) -> list[str]:
        return [n for verb, _, n in self.calls if verb == "patch_status"]

    def accepted(self, name: str) -> Obj:
        found: list[Obj] = self.statuses[name]["conditions"]
        (condition,) = [c for c in found if c["type"] == "Accepted"]
        return condition

    def on(self, name: str) -> list[Obj]:
        return [e for e in self.events if e["involvedObject"]["name"] == name]


def setup() -> tuple[Publisher, ControllerState, StatusApi]:
    api = StatusApi()
    pub, state = make(api)
    for obj in (
        namespace("default"),
        node("n1", {"role": "worker"}, "192.168.0.1"),
        node("n2", {"role": "worker"}, "192.168.0.2"),
        pod("web-1", "n1", "10.0.1.1"),
        pod("web-2", "n2", "10.0.2.1"),
        pod("client", "n2", "10.0.2.2", {"app": "client"}),
    ):
        state.observe(obj["kind"], None, obj)
    flush(pub)
    return pub, state, api


def cluster_policies_on(api: FakeApi, node_name: str) -> list[str]:
    spec = api.objects[("noderulesets", node_name)]["spec"]
    return [p["policy"]["name"] for p in spec.get("clusterPolicies") or ()]


def echo(state: ControllerState, api: StatusApi, body: Obj) -> None:
    """The watch brings the object back with the status written."""
    again = copy.deepcopy(body)
    again["status"] = copy.deepcopy(api.statuses[body["metadata"]["name"]])
    again["metadata"]["resourceVersion"] += "s"
    state.observe(CLUSTER_NETWORK_POLICY, "MODIFIED", again)


# --------------------------------------------------------------------------- state and publisher


def test_a_valid_policy_is_enforced_reported_and_accepted() -> None:
    pub, state, api = setup()
    body = cnp("deny-clients", DENY_CLIENTS)
    assert state.observe(CLUSTER_NETWORK_POLICY, "ADDED", body) is None
    flush(pub)
    assert cluster_policies_on(api, "n1") == ["deny-clients"]
    assert cluster_policies_on(api, "n2") == ["deny-clients"]
    (applied,) = api.on("deny-clients")
    assert applied["reason"] == "PolicyApplied"
    assert applied["type"] == "Normal"
    assert applied["message"] == "applied on 2 of 2 nodes selecting 2 pods"
    involved = applied["involvedObject"]
    assert involved["kind"] == "ClusterNetworkPolicy"
    assert involved["uid"] == "uid-deny-clients"
    assert "namespace" not in involved  # cluster-scoped: the Event goes to "default"
    condition = api.accepted("deny-clients")
    assert condition["status"] == "True"
    assert condition["reason"] == "Accepted"
    assert condition["message"] == "enforced by stockade"
    assert condition["observedGeneration"] == 1
    assert condition["lastTransitionTime"].endswith("Z")
    assert api.status_writes() == ["deny-clients"]


def test_involved_object_and_key() -> None:
    body = cnp("p", DENY_CLIENTS)
    assert object_key(CLUSTER_NETWORK_POLICY, body) == "p"
    ref = involved_cluster_policy(body)
    assert ref["apiVersion"] == "policy.networking.k8s.io/v1alpha2"
    assert ref["kind"] == "ClusterNetworkPolicy"
    assert ref["metadata"] == {"name": "p", "uid": "uid-p", "resourceVersion": "1"}


def test_a_new_invalid_policy_enforces_nothing() -> None:
    pub, state, api = setup()
    error = state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("bad", INVALID))
    assert isinstance(error, InvalidObjectError)
    assert len(error.errors) == 2
    flush(pub)
    assert cluster_policies_on(api, "n1") == []
    (rejected,) = api.on("bad")
    assert rejected["type"] == "Warning"
    assert rejected["reason"] == "PolicyRejected"
    assert rejected["message"].startswith("invalid, enforces nothing: ")
    assert "spec.tier" in rejected["message"]
    assert "spec.priority" in rejected["message"]
    condition = api.accepted("bad")
    assert (condition["status"], condition["reason"]) == ("False", "Invalid")
    assert condition["message"] == rejected["message"]


def test_an_invalid_update_keeps_the_last_valid_version() -> None:
    pub, state, api = setup()
    good = cnp("deny-clients", DENY_CLIENTS)
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", good)
    flush(pub)
    echo(state, api, good)
    flush(pub)
    first = api.accepted("deny-clients")
    before = copy.deepcopy(api.objects[("noderulesets", "n1")]["spec"])
    bad = cnp(
        "deny-clients",
        {**DENY_CLIENTS, "priority": -1},
        generation=2,
        status=api.statuses["deny-clients"],
    )
    assert state.observe(CLUSTER_NETWORK_POLICY, "MODIFIED", bad) is not None
    flush(pub)
    assert api.objects[("noderulesets", "n1")]["spec"] == before
    last = api.on("deny-clients")[-1]
    assert last["reason"] == "PolicyRejected"
    assert last["message"].startswith("invalid, its last valid version stays in force: ")
    condition = api.accepted("deny-clients")
    assert (condition["status"], condition["observedGeneration"]) == ("False", 2)
    assert condition["message"] == last["message"]
    echo(state, api, bad)
    flush(pub)
    # Fixed: accepted again, reported again (the Applied event is news after a rejection).
    fixed = cnp("deny-clients", DENY_CLIENTS, generation=3, status=api.statuses["deny-clients"])
    state.observe(CLUSTER_NETWORK_POLICY, "MODIFIED", fixed)
    flush(pub)
    condition = api.accepted("deny-clients")
    assert (condition["status"], condition["observedGeneration"]) == ("True", 3)
    assert condition["lastTransitionTime"] >= first["lastTransitionTime"]
    assert api.on("deny-clients")[-1]["reason"] == "PolicyApplied"
    assert api.objects[("noderulesets", "n1")]["spec"] == before


def test_deleted_policy_leaves_the_rule_sets() -> None:
    pub, state, api = setup()
    body = cnp("deny-clients", DENY_CLIENTS)
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", body)
    flush(pub)
    assert cluster_policies_on(api, "n1") == ["deny-clients"]
    state.observe(CLUSTER_NETWORK_POLICY, "DELETED", body)
    flush(pub)
    assert cluster_policies_on(api, "n1") == []
    assert "deny-clients" not in state.cluster_policies
    assert "deny-clients" not in pub.status_sent
    assert api.status_writes() == ["deny-clients"]  # nothing written to a deleted object


def test_status_is_written_only_when_it_changes() -> None:
    pub, state, api = setup()
    body = cnp("deny-clients", DENY_CLIENTS)
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", body)
    flush(pub)
    assert len(api.status_writes()) == 1
    # Before the watch brings the write back, another event: not written twice.
    state.observe(CLUSTER_NETWORK_POLICY, "MODIFIED", body)
    flush(pub)
    assert len(api.status_writes()) == 1
    echo(state, api, body)
    state.observe("Pod", None, pod("web-3", "n1", "10.0.1.3"))
    flush(pub)
    assert len(api.status_writes()) == 1
    # Another controller's condition is kept; a wiped status is written again.
    status = {"conditions": [*api.statuses["deny-clients"]["conditions"]]}
    status["conditions"].insert(
        0,
        {
            "type": "example.com/Audited",
            "status": "True",
            "reason": "Seen",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        },
    )
    state.observe(
        CLUSTER_NETWORK_POLICY, "MODIFIED", cnp("deny-clients", DENY_CLIENTS, status=status)
    )
    flush(pub)
    assert len(api.status_writes()) == 1
    state.observe(CLUSTER_NETWORK_POLICY, "MODIFIED", cnp("deny-clients", DENY_CLIENTS, status={}))
    clock = pub.clock
    assert isinstance(clock, FakeClock)
    clock.now += STATUS_ECHO_WAIT  # the earlier write is long done
    flush(pub)
    assert len(api.status_writes()) == 2


def test_events_are_posted_once_per_change() -> None:
    pub, state, api = setup()
    body = cnp("deny-clients", DENY_CLIENTS)
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", body)
    flush(pub)
    flush(pub)
    echo(state, api, body)
    flush(pub)
    assert [e["message"] for e in api.on("deny-clients")] == [
        "applied on 2 of 2 nodes selecting 2 pods"
    ]
    state.observe("Pod", None, pod("web-3", "n1", "10.0.1.3"))
    flush(pub)
    assert api.on("deny-clients")[-1]["message"] == "applied on 2 of 2 nodes selecting 3 pods"
    # A node joining changes M only: no Event.
    state.observe(NODE, None, node("n3"))
    flush(pub)
    assert len(api.on("deny-clients")) == 2


def test_a_restart_posts_nothing_twice() -> None:
    pub, state, api = setup()
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("deny-clients", DENY_CLIENTS))
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("bad", INVALID))
    flush(pub)
    posted = len(api.events)
    assert posted == 2
    seeded = seed_from_events(api.events)
    assert set(seeded) == {"uid-deny-clients", "uid-bad"}
    pub.set_leader(False)
    pub.set_leader(True)
    flush(pub)
    assert len(api.events) == posted


def test_unsupported_peer_is_warned_and_named_in_the_condition() -> None:
    pub, state, api = setup()
    spec = {
        "tier": "Admin",
        "priority": 1,
        "subject": {"namespaces": {}},
        "egress": [
            {"action": "Accept", "to": [{"domainNames": ["example.com"]}]},
            {"name": "block", "action": "Pass", "to": [{"domainNames": ["*.example.org"]}]},
        ],
    }
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("dns", spec))
    flush(pub)
    warnings = [e["message"] for e in api.on("dns") if e["reason"] == REASON_UNSUPPORTED_PEER]
    assert warnings == [
        "egress rule 0: stockade does not support domainNames peers; the rule fails "
        "closed: this Accept rule matches no traffic, its other peers included",
        "egress rule 1 (block): stockade does not support domainNames peers; the rule "
        "fails closed: this Pass rule denies all egress traffic of the selected pods that "
        "reaches it, whatever its other peers and protocols (it does not pass)",
    ]
    condition = api.accepted("dns")
    assert condition["status"] == "True"
    assert "egress rule 0, egress rule 1 (block)" in condition["message"]
    assert "fail closed" in condition["message"]


def test_equal_priorities_selecting_common_pods_are_warned() -> None:
    pub, state, api = setup()
    other = {**DENY_CLIENTS, "subject": {"namespaces": {}}}
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("b-all", other))
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("a-web", DENY_CLIENTS))
    flush(pub)
    on_a = [e["message"] for e in api.on("a-web") if e["reason"] == REASON_PRIORITY_OVERLAP]
    on_b = [e["message"] for e in api.on("b-all") if e["reason"] == REASON_PRIORITY_OVERLAP]
    tail = "API leaves their order undefined; stockade orders them by name, a-web before b-all"
    assert on_a == [
        "ClusterNetworkPolicy b-all has the same tier (Admin) and priority (10) and selects "
        f"some of the same pods, with ingress rules: the {tail}"
    ]
    assert on_b == [on_a[0].replace("Policy b-all", "Policy a-web")]
    # Evaluated in name order on every node.
    assert cluster_policies_on(api, "n1") == ["a-web", "b-all"]
    # Another priority: no overlap any more, nothing new posted; back again: posted again.
    state.observe(CLUSTER_NETWORK_POLICY, "MODIFIED", cnp("b-all", {**other, "priority": 11}, 2))
    flush(pub)
    count = len(api.events)
    state.observe(CLUSTER_NETWORK_POLICY, "MODIFIED", cnp("b-all", other, 3))
    flush(pub)
    reasons = [e["reason"] for e in api.events[count:]]
    assert reasons.count(REASON_PRIORITY_OVERLAP) == 2


def test_equal_priorities_without_common_pods_or_direction_are_not_warned() -> None:
    pub, state, api = setup()
    clients = {
        **DENY_CLIENTS,
        "subject": {"pods": {"podSelector": {"matchLabels": {"app": "client"}}}},
    }
    egress_only = {
        "tier": "Admin",
        "priority": 10,
        "subject": {"pods": WEB},
        "egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}]}],
    }
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("web", DENY_CLIENTS))
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("clients", clients))
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("web-egress", egress_only))
    state.observe(
        CLUSTER_NETWORK_POLICY, "ADDED", cnp("baseline", {**DENY_CLIENTS, "tier": "Baseline"})
    )
    flush(pub)
    assert not [e for e in api.events if e["reason"] == REASON_PRIORITY_OVERLAP]


def test_nodes_feed_node_peers_and_unreadable_nodes_stay_declared(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pub, state, api = setup()
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("deny-nodes", DENY_NODES))
    flush(pub)
    (node_set,) = [ps for (plural, _), ps in api.objects.items() if plural == "peersets"]
    assert {m["pod"] for m in node_set["spec"]["members"]} == {"n1", "n2"}
    # Relabelled out of the peer: its addresses leave the set.
    state.observe(NODE, "MODIFIED", node("n2", {"role": "infra"}, "192.168.0.2"))
    flush(pub)
    (node_set,) = [ps for (plural, _), ps in api.objects.items() if plural == "peersets"]
    assert [m["pod"] for m in node_set["spec"]["members"]] == ["n1"]
    # Unreadable: reported once, kept with what was last read (n1 stays in the set).
    broken = node("n1", {"role": "worker"})
    broken["status"] = {"addresses": [{"type": "InternalIP", "address": "not-an-ip"}]}
    assert state.observe(NODE, "MODIFIED", broken) is not None
    assert state.observe(NODE, "MODIFIED", broken) is None  # the same problem: once
    flush(pub)
    (node_set,) = [ps for (plural, _), ps in api.objects.items() if plural == "peersets"]
    assert [m["ips"] for m in node_set["spec"]["members"]] == [["192.168.0.1"]]
    # A new Node that cannot be read is still declared: it gets a rule set.
    assert state.observe(NODE, None, {**broken, "metadata": {"name": "n9"}}) is not None
    flush(pub)
    assert ("noderulesets", "n9") in api.objects
    state.observe(NODE, "DELETED", node("n9"))
    flush(pub)
    assert ("noderulesets", "n9") not in api.objects


def test_status_write_failure_is_retried() -> None:
    pub, state, api = setup()
    api.gone.add("deny-clients")
    state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("deny-clients", DENY_CLIENTS))
    assert flush(pub)  # NotFound: deleted meanwhile, nothing to retry
    assert "deny-clients" not in api.statuses


# --------------------------------------------------------------------------- pure parts


def _ncp(
    name: str,
    targets: tuple[str, ...],
    tier: str = "Admin",
    priority: int = 1,
    ingress: bool = True,
    egress: bool = False,
) -> NodeClusterPolicy:
    rule = (TierRule("Deny", 0),)
    policy = CompiledClusterPolicy(
        name, name, tier, priority, rule if ingress else (), rule if egress else ()
    )
    return NodeClusterPolicy(policy, targets)


@pytest.mark.parametrize(
    ("policies", "want"),
    [
        pytest.param([_ncp("a", ("p",)), _ncp("b", ("p",))], {("a", "b", "ingress")}, id="same"),
        pytest.param(
            [_ncp("b", ("p", "q"), egress=True), _ncp("a", ("q",), egress=True)],
            {("a", "b", "ingress"), ("a", "b", "egress")},
            id="both-directions-sorted",
        ),
        pytest.param([_ncp("a", ("p",)), _ncp("b", ("q",))], set(), id="no-common-pod"),
        pytest.param([_ncp("a", ("p",)), _ncp("b", ("p",), priority=2)], set(), id="priority"),
        pytest.param([_ncp("a", ("p",)), _ncp("b", ("p",), tier="Baseline")], set(), id="tier"),
        pytest.param(
            [_ncp("a", ("p",)), _ncp("b", ("p",), ingress=False, egress=True)],
            set(),
            id="other-direction",
        ),
        pytest.param(
            [_ncp("a", ("p",)), _ncp("b", ("p",)), _ncp("c", ("p",))],
            {("a", "b", "ingress"), ("a", "c", "ingress"), ("b", "c", "ingress")},
            id="three",
        ),
    ],
)
def test_node_overlaps(policies: list[NodeClusterPolicy], want: set[tuple[str, str, str]]) -> None:
    assert {(o.first, o.second, o.direction) for o in node_overlaps(policies)} == want


def test_tracker_counts_overlaps_over_nodes() -> None:
    t = PolicyTracker()
    both = (_ncp("a", ("ns/p",)), _ncp("b", ("ns/p",)))
    t.node("n1", NodeRuleSet("n1", (), (), (), cluster_policies=both))
    t.node("n2", NodeRuleSet("n2", (), (), (), cluster_policies=both))
    assert t.take_cluster_touched() == {"a", "b"}
    assert [o.second for o in t.overlaps_of("a")] == ["b"]
    assert t.cluster_footprint("a") == Footprint(2, 2, frozenset(), 2)
    t.node("n1", NodeRuleSet("n1", (), (), ()))
    assert t.overlaps_of("a")  # still seen on n2
    assert t.take_cluster_touched() == {"a", "b"}  # their footprints moved
    t.node("n2", None)
    assert t.overlaps_of("a") == ()
    assert t.cluster_footprint("a") == Footprint(0, 0, frozenset(), 1)


def test_overlap_events_name_the_other_policy_once() -> None:
    overlaps = [
        Overlap("a", "b", "egress", "Baseline", 3),
        Overlap("a", "b", "ingress", "Baseline", 3),
        Overlap("b", "c", "ingress", "Baseline", 3),
    ]
    (event,) = overlap_events("a", overlaps)
    assert event.message == (
        "ClusterNetworkPolicy b has the same tier (Baseline) and priority (3) and selects "
        "some of the same pods, with ingress and egress rules: the API leaves their order "
        "undefined; stockade orders them by name, a before b"
    )
    assert [e.message.split()[1] for e in overlap_events("b", overlaps)] == ["a", "c"]


def test_cluster_policy_events_and_unsupported_deny() -> None:
    body = cnp(
        "p",
        {
            "tier": "Baseline",
            "priority": 1,
            "subject": {"namespaces": {}},
            "egress": [{"action": "Deny", "to": [{"domainNames": ["example.com"]}]}],
        },
    )
    policy = parse_cluster_network_policy(body)
    (warning,) = unsupported_peer_events(policy)
    assert warning.message.endswith(
        "this Deny rule denies all egress traffic of the selected pods that reaches it, "
        "whatever its other peers and protocols"
    )
    events = cluster_policy_events(policy, Footprint(1, 2, cluster_nodes=3))
    assert events[0] == EventSpec(
        "Normal", "PolicyApplied", "applied on 1 of 3 nodes selecting 2 pods"
    )
    assert events[1] == warning


def test_conditions() -> None:
    policy = parse_cluster_network_policy(cnp("p", DENY_CLIENTS))
    want = accepted_condition(policy, None, 4)
    assert want == ConditionSpec("True", "Accepted", "enforced by stockade", 4)
    now = "2026-12-04T10:00:00Z"
    (written,) = conditions_patch((), want, now) or []
    assert written == {
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "enforced by stockade",
        "lastTransitionTime": now,
        "observedGeneration": 4,
    }
    assert conditions_patch((written,), want, "later") is None
    # A new generation, same status: the transition time stays.
    (newer,) = conditions_patch((written,), accepted_condition(policy, None, 5), "later") or []
    assert (newer["observedGeneration"], newer["lastTransitionTime"]) == (5, now)
    # Refused: the status flips, the time moves; other types are kept in place.
    try:
        parse_cluster_network_policy(cnp("p", INVALID))
    except InvalidObjectError as exc:
        error = exc
    refused = accepted_condition(policy, error, 6)
    assert refused.status == "False"
    assert refused.reason == "Invalid"
    assert refused.message.startswith("invalid, its last valid version stays in force: spec.")
    other = {
        "type": "x.example/Y",
        "status": "True",
        "reason": "R",
        "message": "",
        "lastTransitionTime": now,
    }
    out = conditions_patch((other, written), refused, "later") or []
    assert [c["type"] for c in out] == ["x.example/Y", "Accepted"]
    assert out[1]["lastTransitionTime"] == "later"
    assert accepted_condition(None, error, None).message.startswith("invalid, enforces nothing")
    assert (
        "observedGeneration"
        not in (conditions_patch((), accepted_condition(None, error, None), now) or [{}])[0]
    )
    assert observed_conditions({"status": {"conditions": [other, "junk", {"type": 3}]}}) == (other,)
    assert observed_conditions({"status": "junk"}) == ()


# --------------------------------------------------------------------------- discovery


CNP_DOCUMENT = {
    "resources": [{"name": "clusternetworkpolicies"}, {"name": "clusternetworkpolicies/status"}]
}


class Discovery:
    def __init__(self, cnp_after: int | None, isolation: bool = True) -> None:
        self.cnp_after = cnp_after  # served from this look on (None: never)
        self.cnp_looks = 0
        self.isolation = isolation  # stockade.dev serves isolationpolicies too

    async def __call__(self, gv: str) -> Mapping[str, object] | None:
        if gv == "policy.networking.k8s.io/v1alpha2":
            self.cnp_looks += 1
            if self.cnp_after is not None and self.cnp_looks >= self.cnp_after:
                return CNP_DOCUMENT
            return None
        names = ["noderulesets", "peersets"] + (["isolationpolicies"] if self.isolation else [])
        return {"resources": [{"name": n} for n in names]}


def _look(fetch: Discovery, checks: int) -> tuple[tuple[Resource, ...], list[float]]:
    slept: list[float] = []
    now = [0.0]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    gate = CrdGate(fetch, sleep=sleep, clock=lambda: now[0])

    async def go() -> tuple[Resource, ...]:
        await gate.wait()
        gate.checks = checks
        return await gate.optional_served()

    return asyncio.run(go()), slept


def test_optional_crd_served(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "stockade.controller"):
        served, slept = _look(Discovery(1), checks=1)
    assert served == (CLUSTER_NETWORK_POLICIES, ISOLATION_POLICIES)
    assert slept == []
    assert not caplog.records


def test_an_install_without_the_isolation_policy_crd_runs_without_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "stockade.controller"):
        served, _ = _look(Discovery(1, isolation=False), checks=1)
    assert served == (CLUSTER_NETWORK_POLICIES,)
    (record,) = caplog.records
    assert "running without isolationpolicies (install manifests/crds.yaml" in (record.getMessage())


def test_optional_crd_absent_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    fetch = Discovery(None)
    with caplog.at_level(logging.WARNING, "stockade.controller"):
        served, slept = _look(fetch, checks=1)
    assert served == (ISOLATION_POLICIES,)
    assert slept == []  # the install was not in progress: no wait
    assert fetch.cnp_looks == 1
    (record,) = caplog.records
    assert "clusternetworkpolicies.policy.networking.k8s.io/v1alpha2" in record.getMessage()
    assert "running without clusternetworkpolicies" in record.getMessage()


def test_optional_crd_being_installed_is_waited_for_a_little() -> None:
    served, slept = _look(Discovery(3), checks=4)  # the gate had waited: an install
    assert served == (CLUSTER_NETWORK_POLICIES, ISOLATION_POLICIES)
    assert slept == [0.5, 1.0]
    served, slept = _look(Discovery(None), checks=4)
    assert served == (ISOLATION_POLICIES,)
    assert 5.0 <= sum(slept) < 10


def test_an_absent_crd_is_looked_for_until_served() -> None:
    fetch = Discovery(4)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    gate = CrdGate(fetch, sleep=sleep)
    found = asyncio.run(gate.until_served((CLUSTER_NETWORK_POLICIES,), every=30.0))
    assert found == CLUSTER_NETWORK_POLICIES
    assert slept == [30.0, 30.0, 30.0, 30.0]
