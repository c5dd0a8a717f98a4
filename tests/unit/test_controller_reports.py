"""Event translation and the controller state's handling of watch events (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from stockade.compiler import compile_policy
from stockade.controller.reports import (
    REASON_APPLIED,
    REASON_EMPTY_RULE,
    REASON_INVALID,
    REASONS,
    EventSpec,
    Footprint,
    PolicyTracker,
    applied_message,
    invalid_events,
    new_events,
    policy_events,
    seed_from_events,
)
from stockade.controller.state import ControllerState, involved_object, object_key
from stockade.errors import InvalidObjectError
from stockade.model import parse_policy
from stockade.ruleset import (
    CompiledPolicy,
    ContainerPortSpec,
    LocalPod,
    NodePolicy,
    NodeRuleSet,
    PeerMember,
    PeerSelector,
    PeerSet,
)


def compiled(spec: dict[str, Any], name: str = "p") -> CompiledPolicy:
    body = {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": "ns"}, "spec": spec}
    return compile_policy(parse_policy(body))[0]


@pytest.mark.parametrize(
    ("fp", "want"),
    [
        pytest.param(Footprint(0, 0), "applied on 0 of 0 nodes selecting 0 pods", id="none"),
        pytest.param(
            Footprint(1, 1, cluster_nodes=1), "applied on 1 of 1 node selecting 1 pod", id="one"
        ),
        pytest.param(
            Footprint(3, 12, cluster_nodes=50),
            "applied on 3 of 50 nodes selecting 12 pods",
            id="many",
        ),
    ],
)
def test_applied_message(fp: Footprint, want: str) -> None:
    assert applied_message(fp) == want


NAMED = {
    "podSelector": {},
    "ingress": [{"ports": [{"port": "http"}]}],
    "egress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}],
}


@pytest.mark.parametrize(
    ("fp", "set_size", "warnings"),
    [
        pytest.param(Footprint(1, 2, frozenset({("http", "TCP")})), 1, [], id="all-resolve"),
        pytest.param(
            Footprint(1, 2, frozenset({("http", "UDP")})),
            1,
            ["ingress rule 0: no selected pod declares port http/TCP"],
            id="ingress-wrong-protocol",
        ),
        pytest.param(Footprint(0, 0), 1, [], id="no-targets-no-ingress-warning"),
        pytest.param(
            Footprint(1, 1, frozenset({("http", "TCP")})),
            0,
            ["egress rule 0: no pod declares port dns/UDP"],
            id="egress-set-empty",
        ),
    ],
)
def test_named_port_warnings(fp: Footprint, set_size: int, warnings: list[str]) -> None:
    events = policy_events(compiled(NAMED), fp, lambda _name: set_size)
    assert events[0] == EventSpec("Normal", REASON_APPLIED, applied_message(fp))
    got = [e.message.split(";")[0] for e in events[1:]]
    assert got == warnings
    assert all(e.type == "Warning" for e in events[1:])


IMPOSSIBLE = {
    "podSelector": {
        "matchExpressions": [
            {"key": "app", "operator": "In", "values": ["a"]},
            {"key": "app", "operator": "NotIn", "values": ["a"]},
        ]
    }
}


def test_rule_matching_nothing_is_a_warning() -> None:
    state = ControllerState()
    body = {
        "metadata": {"name": "np", "namespace": "ns", "uid": "u"},
        "spec": {"podSelector": {}, "ingress": [{"from": [IMPOSSIBLE]}, {}]},
    }
    assert state.observe("NetworkPolicy", None, body) is None
    record = state.policies["ns/np"]
    assert record.compiled is not None
    events = policy_events(record.compiled, Footprint(1, 1), lambda _name: 1, record.empty_rules)
    warning = EventSpec(
        "Warning",
        REASON_EMPTY_RULE,
        "ingress rule 0: every peer is impossible: peer 0 podSelector requires app In [a]"
        " and app NotIn [a]; this rule allows nothing",
    )
    assert events == (
        EventSpec("Normal", REASON_APPLIED, applied_message(Footprint(1, 1))),
        warning,
    )
    # A restarted controller knows it was posted.
    assert REASON_EMPTY_RULE in REASONS
    listed = [
        {
            "involvedObject": {"kind": "NetworkPolicy", "uid": "u"},
            "reason": warning.reason,
            "type": warning.type,
            "message": warning.message,
        }
    ]
    assert seed_from_events(listed) == {"u": {warning}}
    # The same compiled form with a different finding (a duplicate peer) is re-reported.
    state.touched_policies.clear()
    twice = {
        **body,
        "spec": {"podSelector": {}, "ingress": [{"from": [IMPOSSIBLE, IMPOSSIBLE]}, {}]},
    }
    state.observe("NetworkPolicy", "MODIFIED", twice)
    assert state.policies["ns/np"].compiled == record.compiled
    assert state.touched_policies == {"ns/np"}
    kept = state.policies["ns/np"].empty_rules
    assert len(kept[0].peers) == 2
    # An invalid edit keeps the last valid version, and its findings.
    bad = {**body, "spec": {"podSelector": {}, "ingress": [{"from": [{}]}]}}
    assert state.observe("NetworkPolicy", "MODIFIED", bad) is not None
    assert state.policies["ns/np"].empty_rules == kept


def test_invalid_event_is_one_line_with_every_error() -> None:
    body = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "bad", "namespace": "ns"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Sideways"],
            "ingress": [{"ports": [{"port": 0}]}],
        },
    }
    with pytest.raises(InvalidObjectError) as info:
        parse_policy(body)
    (event,) = invalid_events(info.value)
    assert event.type == "Warning"
    assert event.reason == REASON_INVALID
    assert "\n" not in event.message
    assert "spec.policyTypes[0]" in event.message
    assert "spec.ingress[0].ports[0].port" in event.message


def test_new_events_and_seed() -> None:
    a = EventSpec("Normal", REASON_APPLIED, "applied on 1 of 3 nodes selecting 1 pod")
    w = EventSpec("Warning", "NamedPortNotFound", "x")
    assert new_events([a], [a, w]) == [w]
    assert new_events([a, w], [a, w]) == []
    # The cluster's size alone is no news (a node added would touch every policy),
    # and the format before "of M" reads the same; N or K moving is news.
    grown = EventSpec("Normal", REASON_APPLIED, "applied on 1 of 4 nodes selecting 1 pod")
    older = EventSpec("Normal", REASON_APPLIED, "applied on 1 node selecting 1 pod")
    assert new_events([a], [grown]) == []
    assert new_events([older], [grown]) == []
    more = EventSpec("Normal", REASON_APPLIED, "applied on 2 of 4 nodes selecting 1 pod")
    assert new_events([a], [more]) == [more]
    listed = [
        {
            "involvedObject": {"kind": "NetworkPolicy", "uid": "u1"},
            "reason": REASON_APPLIED,
            "type": "Normal",
            "message": "old",
            "lastTimestamp": "2024-01-01T00:00:00Z",
        },
        {
            "involvedObject": {"kind": "NetworkPolicy", "uid": "u1"},
            "reason": REASON_APPLIED,
            "type": "Normal",
            "message": a.message,
            "lastTimestamp": "2024-01-01T00:00:05Z",
        },
        {
            "involvedObject": {"kind": "NetworkPolicy", "uid": "u1"},
            "reason": "NamedPortNotFound",
            "type": "Warning",
            "message": "x",
        },
        {"involvedObject": {"kind": "Pod", "uid": "u2"}, "reason": REASON_APPLIED, "message": "y"},
        {
            "involvedObject": {"kind": "NetworkPolicy", "uid": "u3"},
            "reason": "Other",
            "message": "z",
        },
    ]
    assert seed_from_events(listed) == {"u1": {a, w}}


def _rs(node: str, targets: dict[str, tuple[str, ...]], ports: dict[str, list[str]]) -> NodeRuleSet:
    pol = compiled({"podSelector": {}}, "p")
    pods = tuple(
        LocalPod(pod, ("10.0.0.1",), tuple(ContainerPortSpec(n, 1, "TCP") for n in names))
        for pod, names in sorted(ports.items())
    )
    policies = tuple(
        NodePolicy(CompiledPolicy(key, "id", pol.ingress, None), t) for key, t in targets.items()
    )
    return NodeRuleSet(node, pods, policies, ())


def test_tracker_follows_nodes_and_sets() -> None:
    t = PolicyTracker()
    assert t.node("n1", _rs("n1", {"ns/a": ("ns/x",)}, {"ns/x": ["http"]})) == {"ns/a"}
    assert t.node("n2", _rs("n2", {"ns/a": ("ns/y", "ns/z")}, {})) == {"ns/a"}
    assert t.footprint("ns/a") == Footprint(2, 3, frozenset({("http", "TCP")}), 2)
    assert t.node("n2", _rs("n2", {"ns/a": ("ns/y", "ns/z")}, {})) == set()  # unchanged
    # A node without policies counts for the cluster's size, touching no policy.
    assert t.node("n3", _rs("n3", {}, {})) == set()
    assert t.footprint("ns/a") == Footprint(2, 3, frozenset({("http", "TCP")}), 3)
    assert t.node("n1", None) == {"ns/a"}
    assert t.footprint("ns/a") == Footprint(1, 2, frozenset(), 2)
    assert t.footprint("ns/none") == Footprint(cluster_nodes=2)
    sel = PeerSelector()
    shard = PeerSet("s-0", "s", sel, 0, 1, (PeerMember("ns/x", ("10.0.0.1",)),))
    assert t.peer_set("s-0", shard) == "s"
    assert t.set_size("s") == 1
    assert t.peer_set("s-0", shard) is None
    assert t.peer_set("s-0", None) == "s"
    assert t.set_size("s") == 0


def test_state_translates_events() -> None:
    marks: list[int] = []
    state = ControllerState(on_change=lambda: marks.append(1))
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
        "spec": {"nodeName": "n1"},
        "status": {"podIP": "10.0.0.1"},
    }
    pol = {
        "metadata": {"name": "np", "namespace": "ns", "uid": "u"},
        "spec": {"podSelector": {}},
    }
    assert state.observe("Pod", None, pod) is None
    assert state.observe("NetworkPolicy", "ADDED", pol) is None
    assert state.touched_policies == {"ns/np"}
    assert state.policies["ns/np"].uid == "u"
    result = state.compiler.result()
    assert [p.policy.name for p in result.node_rule_sets["n1"].policies] == ["ns/np"]
    # A broken pod takes no part rather than stopping anything.
    broken = {**pod, "status": {"podIP": "not-an-ip"}}
    assert state.observe("Pod", "MODIFIED", broken) is not None
    assert state.compiler.result().node_rule_sets == {}
    assert state.observe("NetworkPolicy", "DELETED", pol) is None
    assert "ns/np" not in state.policies
    assert len(marks) == 4
    assert state.missing({("Pod", "ns/p"), ("Pod", "ns/q")}) == {("Pod", "ns/q")}
    state.end_warmup()
    assert state.missing({("Pod", "ns/q")}) == set()
    with pytest.raises(ValueError, match="unknown kind"):
        state.observe("Service", None, pod)


def test_keys_and_involved_object() -> None:
    assert object_key("Namespace", {"metadata": {"name": "team"}}) == "team"
    assert object_key("Pod", {"metadata": {"name": "p"}}) == "default/p"
    ref = involved_object({"metadata": {"name": "np", "namespace": "ns", "uid": "u"}})
    assert ref["kind"] == "NetworkPolicy"
    assert ref["apiVersion"] == "networking.k8s.io/v1"
    assert ref["metadata"]["uid"] == "u"


def test_a_policy_valid_again_is_reported_again() -> None:
    """Invalid, then back to the version kept in force: touched, so re-reported."""
    state = ControllerState(on_change=lambda: None)
    pol = {"metadata": {"name": "np", "namespace": "ns", "uid": "u"}, "spec": {"podSelector": {}}}
    bad = {**pol, "spec": {"podSelector": {}, "policyTypes": ["Sideways"]}}
    assert state.observe("NetworkPolicy", "ADDED", pol) is None
    state.touched_policies.clear()
    assert state.observe("NetworkPolicy", "MODIFIED", bad) is not None
    assert state.touched_policies == {"ns/np"}
    state.touched_policies.clear()
    assert state.observe("NetworkPolicy", "MODIFIED", pol) is None
    assert state.touched_policies == {"ns/np"}
    assert state.policies["ns/np"].error is None
