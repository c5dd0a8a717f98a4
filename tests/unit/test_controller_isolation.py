"""The controller with IsolationPolicies: watched like ClusterNetworkPolicies, keyed
apart from a CNP of the same name, compiled into the nodes' rule sets, with the same
Events and the Accepted condition on their own status subresource."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from stockade.controller.state import (
    CLUSTER_NETWORK_POLICY,
    ISOLATION_POLICY,
    involved_cluster_policy,
    object_key,
)
from stockade.kube import ISOLATION_POLICIES, JsonObject, Resource
from tests.unit.test_controller_cnp import DENY_CLIENTS, cnp, node
from tests.unit.test_publisher import FakeApi, flush, make, namespace, pod

Obj = dict[str, Any]


class StatusApi(FakeApi):
    """test_publisher's FakeApi with the status subresources, by (plural, name)."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: dict[tuple[str, str], Obj] = {}

    async def patch_status(
        self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        await super().patch_status(resource, name, status, namespace)
        self.statuses[(resource.plural, name)] = copy.deepcopy(dict(status))
        return {"status": copy.deepcopy(dict(status))}

    def accepted(self, plural: str, name: str) -> Obj:
        found: list[Obj] = self.statuses[(plural, name)]["conditions"]
        (condition,) = [c for c in found if c["type"] == "Accepted"]
        return condition


def isop(name: str, spec: Mapping[str, Any], generation: int = 1) -> Obj:
    body = cnp(name, spec, generation)
    body["apiVersion"], body["kind"] = "stockade.dev/v1alpha1", "IsolationPolicy"
    body["metadata"]["uid"] = f"uid-iso-{name}"
    return body


SAME_APP = {
    "tier": "Admin",
    "priority": 10,
    "subject": {"namespaces": {}},
    "ingress": [
        {"action": "Accept", "from": [{"pods": {"sameLabels": ["app"], "namespaceSelector": {}}}]},
        {"action": "Deny", "from": [{"namespaces": {}}]},
    ],
}


def setup() -> tuple[Any, Any, StatusApi]:
    api = StatusApi()
    pub, state = make(api)
    pub.watch_cluster_policies()
    pub.watch_isolation_policies()
    for obj in (
        namespace("default"),
        node("n1"),
        node("n2"),
        pod("web-1", "n1", "10.0.1.1"),
        pod("web-2", "n2", "10.0.2.1"),
        pod("client", "n2", "10.0.2.2", {"app": "client"}),
    ):
        state.observe(obj["kind"], None, obj)
    flush(pub)
    return pub, state, api


def rule_set(api: FakeApi, node_name: str) -> Obj:
    spec: Obj = api.objects[("noderulesets", node_name)]["spec"]
    return spec


def test_keys_and_involved_object() -> None:
    body = isop("p", SAME_APP)
    assert object_key(ISOLATION_POLICY, body) == "IsolationPolicy/p"
    ref = involved_cluster_policy(body, ISOLATION_POLICY)
    assert (ref["apiVersion"], ref["kind"]) == ("stockade.dev/v1alpha1", "IsolationPolicy")
    assert ref["metadata"]["name"] == "p"


def test_watched_when_served_only() -> None:
    pub, _ = make(StatusApi())
    assert ISOLATION_POLICY not in pub.watched_kinds
    pub.watch_isolation_policies()
    assert pub.isolation_policies_watched
    assert not pub.cluster_policies_watched
    pub.watch_cluster_policies()
    assert pub.watched_kinds[-2:] == (CLUSTER_NETWORK_POLICY, ISOLATION_POLICY)


def test_enforced_reported_and_accepted_beside_a_cnp_of_the_same_name() -> None:
    pub, state, api = setup()
    assert state.observe(ISOLATION_POLICY, "ADDED", isop("same", SAME_APP)) is None
    assert state.observe(CLUSTER_NETWORK_POLICY, "ADDED", cnp("same", DENY_CLIENTS)) is None
    flush(pub)
    names = [p["policy"]["name"] for p in rule_set(api, "n2")["clusterPolicies"]]
    assert names == ["same", "IsolationPolicy/same"]  # equal priority and name: CNP first
    iso = rule_set(api, "n2")["clusterPolicies"][1]
    # n2's subjects: web-2 (app=web) and client (app=client): one variant each.
    assert iso["targets"] == ["default/client", "default/web-2"]
    seen = [iso["variants"][i]["ingress"] for i in iso["variantOf"]]
    assert [[(r["index"], r["same"][0]["reason"]) for r in rules] for rules in seen] == [
        [(0, "same value of app (client)")],
        [(0, "same value of app (web)")],
    ]
    events = [e for e in api.events if e["involvedObject"]["uid"] == "uid-iso-same"]
    (applied,) = events
    assert applied["reason"] == "PolicyApplied"
    assert applied["involvedObject"]["kind"] == "IsolationPolicy"
    assert applied["message"] == "applied on 2 of 2 nodes selecting 3 pods"
    condition = api.accepted(ISOLATION_POLICIES.plural, "same")
    assert (condition["status"], condition["reason"]) == ("True", "Accepted")
    assert api.accepted("clusternetworkpolicies", "same")["status"] == "True"


def test_invalid_rejected_then_deleted() -> None:
    pub, state, api = setup()
    bad = isop(
        "bad",
        {
            **SAME_APP,
            "ingress": [{"action": "Accept", "from": [{"namespaces": {"sameAs": "Other"}}]}],
        },
    )
    error = state.observe(ISOLATION_POLICY, "ADDED", bad)
    assert error is not None
    assert "sameAs: must be Self" in error.lines()[0]
    flush(pub)
    assert rule_set(api, "n1").get("clusterPolicies") in (None, [])
    (rejected,) = [e for e in api.events if e["involvedObject"]["uid"] == "uid-iso-bad"]
    assert rejected["reason"] == "PolicyRejected"
    assert api.accepted(ISOLATION_POLICIES.plural, "bad")["status"] == "False"
    good = isop("good", SAME_APP)
    state.observe(ISOLATION_POLICY, "ADDED", good)
    flush(pub)
    assert rule_set(api, "n1")["clusterPolicies"][0]["policy"]["name"] == "IsolationPolicy/good"
    state.observe(ISOLATION_POLICY, "DELETED", good)
    flush(pub)
    assert rule_set(api, "n1").get("clusterPolicies") in (None, [])
