"""The reference evaluator with IsolationPolicies: sameness peers and ordering, as tables.

Expected verdicts are written by hand from the peer table of docs/tiers.md
("IsolationPolicy"), not by running the code. The cluster::

    stack-one    tenant=acme, field.cattle.io/projectId=p-1
      qa1    n1  dept=qa, app=web        eng1   n1  dept=engineering, app=web
      bare   n2  (no labels)
    stack-two    tenant=acme, field.cattle.io/projectId=p-2
      qa2    n2  dept=qa, app=db
    stack-three  tenant=globex
      eng3   n2  dept=engineering, app=web
    loose        (no labels but its name)
      qa4    n1  dept=qa
    kube-system
      hostnet n2 host network, dept=qa
"""

from __future__ import annotations

from typing import Any

import pytest

from stockade.cluster import Cluster, parse_documents
from stockade.cnp import ClusterNetworkPolicy
from stockade.model import Pod
from stockade_lab.reference import explain_with_tiers

Doc = dict[str, Any]

NAMESPACES: dict[str, dict[str, str]] = {
    "stack-one": {"tenant": "acme", "field.cattle.io/projectId": "p-1"},
    "stack-two": {"tenant": "acme", "field.cattle.io/projectId": "p-2"},
    "stack-three": {"tenant": "globex"},
    "loose": {},
    "kube-system": {},
}
PODS: dict[str, tuple[str, str, dict[str, str]]] = {
    "stack-one/qa1": ("n1", "10.0.1.1", {"dept": "qa", "app": "web"}),
    "stack-one/eng1": ("n1", "10.0.1.2", {"dept": "engineering", "app": "web"}),
    "stack-one/bare": ("n2", "10.0.2.1", {}),
    "stack-two/qa2": ("n2", "10.0.2.2", {"dept": "qa", "app": "db"}),
    "stack-three/eng3": ("n2", "10.0.2.3", {"dept": "engineering", "app": "web"}),
    "loose/qa4": ("n1", "10.0.1.4", {"dept": "qa"}),
}
HOST_IPS = {"n1": "192.168.0.1", "n2": "192.168.0.2"}


def _docs() -> list[Doc]:
    docs: list[Doc] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}}
        for n, labels in NAMESPACES.items()
    ]
    for key, (node, ip, labels) in PODS.items():
        ns, name = key.split("/")
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"namespace": ns, "name": name, "labels": labels},
                "spec": {"nodeName": node},
                "status": {"podIP": ip, "hostIP": HOST_IPS[node]},
            }
        )
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": "kube-system", "name": "hostnet", "labels": {"dept": "qa"}},
            "spec": {"nodeName": "n2", "hostNetwork": True},
            "status": {"podIP": HOST_IPS["n2"], "hostIP": HOST_IPS["n2"]},
        }
    )
    return docs


def isolation(peer: Doc, *, egress: bool = False, name: str = "iso", priority: int = 10) -> Doc:
    """Every pod a subject; rule 0 Accepts ``peer``, rule 1 Denies every pod."""
    far = "to" if egress else "from"
    rules = [
        {"name": "same", "action": "Accept", far: [peer]},
        {"name": "rest", "action": "Deny", far: [{"namespaces": {}}]},
    ]
    return {
        "apiVersion": "stockade.dev/v1alpha1",
        "kind": "IsolationPolicy",
        "metadata": {"name": name},
        "spec": {
            "tier": "Admin",
            "priority": priority,
            "subject": {"pods": {"namespaceSelector": {}, "podSelector": {}}},
            ("egress" if egress else "ingress"): rules,
        },
    }


def cluster_with(*policies: Doc) -> Cluster:
    """The cluster above with ``policies``."""
    result = parse_documents([*_docs(), *policies])
    assert not result.errors, [e.lines() for e in result.errors]
    return result.cluster


PEERS: dict[str, Doc] = {
    "A": {"namespaces": {"sameAs": "Self"}},
    "B": {"namespaces": {"sameLabels": ["tenant"]}},
    "C": {"namespaces": {"sameLabels": ["tenant", "field.cattle.io/projectId"]}},
    "D": {"pods": {"sameLabels": ["dept"]}},
    "E": {"pods": {"sameLabels": ["dept"], "namespaceSelector": {}}},
    "F": {
        "pods": {
            "sameLabels": ["dept"],
            "namespaceSelector": {"matchLabels": {"tenant": "acme"}},
            "podSelector": {"matchLabels": {"app": "web"}},
        }
    },
    "G": {"pods": {"sameLabels": ["dept", "app"], "namespaceSelector": {}}},
}

# (subject pod, far-end pod, the peers that match it): written from the table.
MATCHES: list[tuple[str, str, str]] = [
    ("stack-one/qa1", "stack-one/eng1", "ABC"),
    ("stack-one/qa1", "stack-two/qa2", "BE"),
    ("stack-one/qa1", "stack-three/eng3", ""),
    ("stack-one/qa1", "loose/qa4", "E"),
    ("stack-one/bare", "stack-one/qa1", "ABC"),
    ("stack-three/eng3", "stack-one/eng1", "EFG"),
    ("loose/qa4", "stack-one/qa1", "EF"),
    ("stack-two/qa2", "stack-one/qa1", "BEF"),
    ("stack-one/eng1", "stack-three/eng3", "EG"),
]


@pytest.mark.parametrize("peer", sorted(PEERS))
@pytest.mark.parametrize(("subject", "other", "matching"), MATCHES)
@pytest.mark.parametrize("egress", [False, True], ids=["ingress", "egress"])
def test_sameness_peers(peer: str, subject: str, other: str, matching: str, egress: bool) -> None:
    cluster = cluster_with(isolation(PEERS[peer], egress=egress))
    src, dst = (cluster.pods[subject], cluster.pods[other])
    if not egress:
        src, dst = dst, src  # the ingress subject is the destination
    verdict = explain_with_tiers(
        cluster, cluster.cluster_policies.values(), (), src, dst, 80, "TCP"
    )
    side = verdict.egress if egress else verdict.ingress
    assert side is not None
    want_rule = 0 if peer in matching else 1
    assert (side.decided_by.policy, side.decided_by.rule) == ("IsolationPolicy/iso", want_rule)
    assert verdict.allowed == (peer in matching)


NOTES: list[tuple[str, str, str, str]] = [
    ("A", "stack-one/qa1", "stack-one/eng1", "same namespace (stack-one)"),
    ("B", "stack-one/qa1", "stack-two/qa2", "same namespace labels tenant=acme"),
    (
        "C",
        "stack-one/bare",
        "stack-one/qa1",
        "same namespace labels tenant=acme, field.cattle.io/projectId=p-1",
    ),
    ("E", "stack-one/qa1", "loose/qa4", "same value of dept (qa)"),
    ("G", "stack-three/eng3", "stack-one/eng1", "same values of dept, app (engineering, web)"),
]


@pytest.mark.parametrize(("peer", "subject", "other", "note"), NOTES)
def test_explain_says_which_sameness_matched(
    peer: str, subject: str, other: str, note: str
) -> None:
    cluster = cluster_with(isolation(PEERS[peer]))
    verdict = explain_with_tiers(
        cluster,
        cluster.cluster_policies.values(),
        (),
        cluster.pods[other],
        cluster.pods[subject],
        80,
        "TCP",
    )
    assert verdict.ingress is not None
    assert verdict.ingress.decided_by.note == note


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_host_network_pods_are_never_peers(peer: str) -> None:
    """hostnet (dept=qa) on n2 reaching qa1 on n1: judged as node n2's address, which
    neither rule matches (both are pod peers): the default allows."""
    cluster = cluster_with(isolation(PEERS[peer]))
    src, dst = cluster.pods["kube-system/hostnet"], cluster.pods["stack-one/qa1"]
    verdict = explain_with_tiers(
        cluster, cluster.cluster_policies.values(), (), src, dst, 80, "TCP"
    )
    assert verdict.ingress is not None
    assert verdict.ingress.decided_by.tier == "Default"


def _cnp(name: str, priority: int, action: str) -> Doc:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "tier": "Admin",
            "priority": priority,
            "subject": {"namespaces": {}},
            "ingress": [{"action": action, "from": [{"namespaces": {}}]}],
        },
    }


# (IsolationPolicy name and priority, CNP name and priority, the key that decides)
ORDER: list[tuple[str, int, str, int, str]] = [
    ("x", 5, "x", 5, "x"),  # all equal: the ClusterNetworkPolicy first
    ("a", 5, "b", 5, "IsolationPolicy/a"),  # equal priorities: by name
    ("z", 4, "a", 5, "IsolationPolicy/z"),  # priority first
    ("a", 6, "z", 5, "z"),
]


@pytest.mark.parametrize(("iso_name", "iso_priority", "cnp_name", "cnp_priority", "first"), ORDER)
def test_ordered_with_cnps(
    iso_name: str, iso_priority: int, cnp_name: str, cnp_priority: int, first: str
) -> None:
    cluster = cluster_with(
        isolation(PEERS["A"], name=iso_name, priority=iso_priority),
        _cnp(cnp_name, cnp_priority, "Deny"),
    )
    src, dst = cluster.pods["stack-one/eng1"], cluster.pods["stack-one/qa1"]
    verdict = explain_with_tiers(
        cluster, cluster.cluster_policies.values(), (), src, dst, 80, "TCP"
    )
    assert verdict.ingress is not None
    steps = [*verdict.ingress.passed, verdict.ingress.decided_by]
    assert steps[0].policy == first
    # The CNP denies every pod; the IsolationPolicy accepts (same namespace).
    assert verdict.allowed == (first != cnp_name)


def test_an_isolation_policy_is_never_a_plain_cnp() -> None:
    cluster = cluster_with(isolation(PEERS["A"]))
    (policy,) = cluster.cluster_policies.values()
    assert isinstance(policy, ClusterNetworkPolicy)
    assert type(policy) is not ClusterNetworkPolicy
    assert all(isinstance(p, Pod) for p in cluster.pods.values())
