"""The reference evaluator of the Admin / NetworkPolicy / Baseline tiers, as tables.

Each scenario is a set of ClusterNetworkPolicies and NetworkPolicies over one fixed
cluster, and probes whose expected verdicts were written by hand from the
network-policy-api v0.2.0 spec (and ``docs/tiers.md`` for the choices it leaves
open), not by running the code.

The cluster (addresses are pod IPs unless said otherwise)::

    node-a  192.168.0.1 fd01::1  (kubernetes.io/os=linux, role=control)
      gryffindor/harry    10.244.1.1 fd00:244::1:1  app=web  web 80/TCP, dns 53/UDP, dns-tcp 53/TCP
      slytherin/draco     10.244.1.2 fd00:244::1:2  app=web  web 8080/TCP
      kube-system/agent-a host network (192.168.0.1, fd01::1)
    node-b  192.168.0.2 fd01::2  (kubernetes.io/os=linux, role=worker)
      gryffindor/hermione 10.244.2.1 fd00:244::2:1  app=db
      hufflepuff/cedric   10.244.2.2 fd00:244::2:2  app=web  web 80/TCP
      ravenclaw/luna      10.244.2.3 (IPv4 only)
      kube-system/agent-b host network (192.168.0.2, fd01::2)
    node-w  192.168.0.9 (kubernetes.io/os=windows), no pods
    gryffindor/ghost: Pending, no IP
    outside: 203.0.113.7, 2001:db8::7

Namespaces carry ``house=<name>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pytest

from stockade.cluster import Cluster, parse_documents
from stockade.cnp import ClusterNetworkPolicy, NodeInfo, parse_cluster_network_policy
from stockade_lab import reference
from stockade_lab.reference import (
    Endpoint,
    allowed_with_tiers,
    explain_with_tiers,
    ordered_tier,
)

Doc = dict[str, Any]

G1 = "gryffindor/harry"
G2 = "gryffindor/hermione"
S1 = "slytherin/draco"
H1 = "hufflepuff/cedric"
R1 = "ravenclaw/luna"
HA = "kube-system/agent-a"
HB = "kube-system/agent-b"
GHOST = "gryffindor/ghost"
NODE_A = "192.168.0.1"
NODE_B = "192.168.0.2"
NODE_A6 = "fd01::1"
NODE_B6 = "fd01::2"
NODE_W = "192.168.0.9"
EXT = "203.0.113.7"
EXT6 = "2001:db8::7"

NODE_ADDRS = {"node-a": ("192.168.0.1", "fd01::1"), "node-b": ("192.168.0.2", "fd01::2")}
NODES = (
    NodeInfo(
        "node-a",
        MappingProxyType({"kubernetes.io/os": "linux", "role": "control"}),
        NODE_ADDRS["node-a"],
    ),
    NodeInfo(
        "node-b",
        MappingProxyType({"kubernetes.io/os": "linux", "role": "worker"}),
        NODE_ADDRS["node-b"],
    ),
    NodeInfo("node-w", MappingProxyType({"kubernetes.io/os": "windows"}), (NODE_W,)),
)


# --- the cluster -------------------------------------------------------------------


def _ns(name: str) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"house": name}},
    }


def _pod(
    key: str,
    ips: Sequence[str],
    node: str,
    labels: dict[str, str] | None = None,
    ports: Sequence[tuple[str, int, str]] = (),
    *,
    host_network: bool = False,
) -> Doc:
    namespace, name = key.split("/")
    addrs = list(NODE_ADDRS[node]) if host_network else list(ips)
    status: Doc = {"hostIP": NODE_ADDRS[node][0], "hostIPs": [{"ip": a} for a in NODE_ADDRS[node]]}
    if addrs:
        status["podIP"] = addrs[0]
        status["podIPs"] = [{"ip": a} for a in addrs]
    else:
        status["phase"] = "Pending"
    container: Doc = {"name": "main"}
    if ports:
        container["ports"] = [{"name": n, "containerPort": p, "protocol": pr} for n, p, pr in ports]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "labels": labels or {}},
        "spec": {"nodeName": node, "hostNetwork": host_network, "containers": [container]},
        "status": status,
    }


BASE_DOCS: tuple[Doc, ...] = (
    *(_ns(n) for n in ("gryffindor", "slytherin", "hufflepuff", "ravenclaw", "kube-system")),
    _pod(
        G1,
        ["10.244.1.1", "fd00:244::1:1"],
        "node-a",
        {"app": "web"},
        [("web", 80, "TCP"), ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")],
    ),
    _pod(S1, ["10.244.1.2", "fd00:244::1:2"], "node-a", {"app": "web"}, [("web", 8080, "TCP")]),
    _pod(HA, [], "node-a", host_network=True),
    _pod(G2, ["10.244.2.1", "fd00:244::2:1"], "node-b", {"app": "db"}),
    _pod(H1, ["10.244.2.2", "fd00:244::2:2"], "node-b", {"app": "web"}, [("web", 80, "TCP")]),
    _pod(R1, ["10.244.2.3"], "node-b"),
    _pod(HB, [], "node-b", host_network=True),
    _pod(GHOST, [], "node-a"),
)


def build(extra: Sequence[Doc] = ()) -> Cluster:
    """The cluster above plus ``extra`` (NetworkPolicies, more pods)."""
    result = parse_documents([*BASE_DOCS, *extra])
    assert not result.errors, [str(e) for e in result.errors]
    return result.cluster


def endpoint(cluster: Cluster, name: str) -> Endpoint:
    """``ns/name`` is a pod; anything else an IP address."""
    return cluster.pods[name] if "/" in name else name


# --- policy builders ---------------------------------------------------------------


def house(name: str) -> Doc:
    return {"matchLabels": {"house": name}}


def cnp(
    name: str,
    tier: str,
    priority: int,
    subject: Doc,
    *,
    ingress: Sequence[Doc] = (),
    egress: Sequence[Doc] = (),
) -> ClusterNetworkPolicy:
    spec: Doc = {"tier": tier, "priority": priority, "subject": subject}
    if ingress:
        spec["ingress"] = list(ingress)
    if egress:
        spec["egress"] = list(egress)
    return parse_cluster_network_policy(
        {
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def eg(action: str, *peers: Doc, protocols: Sequence[Doc] = (), name: str = "") -> Doc:
    """An egress rule."""
    rule: Doc = {"action": action, "to": list(peers)}
    if protocols:
        rule["protocols"] = list(protocols)
    if name:
        rule["name"] = name
    return rule


def ing(action: str, *peers: Doc, protocols: Sequence[Doc] = (), name: str = "") -> Doc:
    """An ingress rule."""
    rule: Doc = {"action": action, "from": list(peers)}
    if protocols:
        rule["protocols"] = list(protocols)
    if name:
        rule["name"] = name
    return rule


def NS(name: str) -> Doc:
    return {"namespaces": house(name)}


ALL_NS: Doc = {"namespaces": {}}


def PODS(namespace: str, **labels: str) -> Doc:
    return {"pods": {"namespaceSelector": house(namespace), "podSelector": {"matchLabels": labels}}}


def NETS(*cidrs: str) -> Doc:
    return {"networks": list(cidrs)}


def NODES_PEER(**labels: str) -> Doc:
    return {"nodes": {"matchLabels": labels}}


def DOMAINS(*names: str) -> Doc:
    return {"domainNames": list(names)}


def TCP(port: int) -> Doc:
    return {"tcp": {"destinationPort": {"number": port}}}


def UDP(port: int) -> Doc:
    return {"udp": {"destinationPort": {"number": port}}}


def SCTP(port: int) -> Doc:
    return {"sctp": {"destinationPort": {"number": port}}}


def TCP_RANGE(start: int, end: int) -> Doc:
    return {"tcp": {"destinationPort": {"range": {"start": start, "end": end}}}}


def NAMED(name: str) -> Doc:
    return {"destinationNamedPort": name}


SUBJ_G: Doc = {"namespaces": house("gryffindor")}
SUBJ_S: Doc = {"namespaces": house("slytherin")}
SUBJ_ALL: Doc = {"namespaces": {}}


def np(key: str, spec: Doc) -> Doc:
    namespace, name = key.split("/")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


NP_G_EGRESS_DENY_ALL = np("gryffindor/deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
NP_G_EGRESS_TO_S = np(
    "gryffindor/egress-to-slytherin",
    {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": house("slytherin")}]}],
    },
)
NP_G_EGRESS_TO_H = np(
    "gryffindor/egress-to-hufflepuff",
    {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": house("hufflepuff")}]}],
    },
)
NP_G_INGRESS_DENY_ALL = np(
    "gryffindor/deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}
)
NP_S_INGRESS_DENY_ALL = np(
    "slytherin/deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}
)
NP_S_INGRESS_FROM_G = np(
    "slytherin/from-gryffindor",
    {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": house("gryffindor")}]}]},
)


# --- the table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    src: str
    dst: str
    port: int
    expected: bool
    protocol: str = "TCP"
    family: int | None = None

    @property
    def id(self) -> str:
        fam = f"/v{self.family}" if self.family else ""
        verdict = "allow" if self.expected else "deny"
        return f"{self.src}->{self.dst}:{self.protocol}/{self.port}{fam}={verdict}"


def allow(
    src: str, dst: str, port: int = 80, protocol: str = "TCP", family: int | None = None
) -> Probe:
    return Probe(src, dst, port, True, protocol, family)


def deny(
    src: str, dst: str, port: int = 80, protocol: str = "TCP", family: int | None = None
) -> Probe:
    return Probe(src, dst, port, False, protocol, family)


@dataclass(frozen=True)
class Scenario:
    name: str
    cnps: Sequence[ClusterNetworkPolicy]
    probes: Sequence[Probe]
    nps: Sequence[Doc] = field(default_factory=tuple)


SCENARIOS: list[Scenario] = [
    # --- nothing: everything is allowed ---------------------------------------------
    Scenario(
        "no-policies",
        [],
        [allow(G1, S1), allow(S1, G1), allow(G1, EXT), allow(EXT, H1), allow(G1, NODE_B)],
    ),
    # --- each action in the Admin tier -------------------------------------------------
    Scenario(
        "admin-egress-deny",
        [cnp("deny-g-to-s", "Admin", 10, SUBJ_G, egress=[eg("Deny", NS("slytherin"))])],
        # Only gryffindor's egress to slytherin; the other direction is untouched.
        [deny(G1, S1), deny(G2, S1), allow(S1, G1), allow(G1, H1), allow(H1, S1)],
    ),
    Scenario(
        "admin-ingress-deny",
        [cnp("deny-s-into-g", "Admin", 10, SUBJ_G, ingress=[ing("Deny", NS("slytherin"))])],
        [deny(S1, G1), deny(S1, G2), allow(G1, S1), allow(H1, G1)],
    ),
    Scenario(
        "admin-egress-accept-over-np-deny",
        [cnp("accept-g-to-s", "Admin", 10, SUBJ_G, egress=[eg("Accept", NS("slytherin"))])],
        [allow(G1, S1), deny(G1, H1), deny(G1, EXT)],
        nps=[NP_G_EGRESS_DENY_ALL],
    ),
    Scenario(
        "admin-ingress-accept-over-np-deny",
        [cnp("accept-g-into-s", "Admin", 10, SUBJ_S, ingress=[ing("Accept", NS("gryffindor"))])],
        [allow(G1, S1), allow(G2, S1), deny(H1, S1), deny(EXT, S1)],
        nps=[NP_S_INGRESS_DENY_ALL],
    ),
    Scenario(
        "admin-deny-over-np-allow",
        [cnp("deny-g-to-s", "Admin", 10, SUBJ_G, egress=[eg("Deny", NS("slytherin"))])],
        # The NP allows gryffindor -> slytherin only; Admin takes that away too.
        [deny(G1, S1), deny(G1, H1)],
        nps=[NP_G_EGRESS_TO_S],
    ),
    Scenario(
        "admin-pass-without-np-goes-to-baseline-then-allow",
        [
            cnp("pass-g-to-s", "Admin", 1, SUBJ_G, egress=[eg("Pass", NS("slytherin"))]),
            cnp("deny-g-to-s", "Admin", 2, SUBJ_G, egress=[eg("Deny", NS("slytherin"))]),
        ],
        # Pass skips the later Admin Deny; no NP isolates; no Baseline: allowed.
        [allow(G1, S1), allow(G2, S1)],
    ),
    Scenario(
        "admin-pass-to-np",
        [
            cnp("pass-g-to-s", "Admin", 1, SUBJ_G, egress=[eg("Pass", NS("slytherin"))]),
            cnp("accept-g-to-s", "Admin", 2, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
        ],
        # The NP only allows hufflepuff: after Pass it decides, and denies slytherin.
        [deny(G1, S1), allow(G1, H1)],
        nps=[NP_G_EGRESS_TO_H],
    ),
    Scenario(
        "admin-pass-to-baseline",
        [
            cnp("pass-g-to-s", "Admin", 1, SUBJ_G, egress=[eg("Pass", NS("slytherin"))]),
            cnp("accept-g-to-s", "Admin", 2, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
            cnp("base-deny-g-to-s", "Baseline", 1, SUBJ_G, egress=[eg("Deny", NS("slytherin"))]),
        ],
        [deny(G1, S1), allow(G1, H1)],
    ),
    Scenario(
        "admin-accept-skips-baseline",
        [
            cnp("accept-g-to-s", "Admin", 5, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
            cnp("base-deny-g", "Baseline", 1, SUBJ_G, egress=[eg("Deny", ALL_NS)]),
        ],
        [allow(G1, S1), deny(G1, H1)],
    ),
    # --- Baseline tier ------------------------------------------------------------------
    Scenario(
        "baseline-deny-applies-without-np",
        [cnp("base-deny-g-to-s", "Baseline", 1, SUBJ_G, egress=[eg("Deny", NS("slytherin"))])],
        [deny(G1, S1), allow(G1, H1), allow(S1, G1)],
    ),
    Scenario(
        "baseline-deny-opened-by-np",
        [cnp("base-deny-g-to-s", "Baseline", 1, SUBJ_G, egress=[eg("Deny", NS("slytherin"))])],
        # The NP isolates gryffindor's egress and allows slytherin: final.
        [allow(G1, S1), deny(G1, H1)],
        nps=[NP_G_EGRESS_TO_S],
    ),
    Scenario(
        "np-isolating-the-other-direction-does-not-decide",
        [cnp("base-deny-g-to-s", "Baseline", 1, SUBJ_G, egress=[eg("Deny", NS("slytherin"))])],
        # An Ingress-only NP selects gryffindor's pods, but not for egress.
        [deny(G1, S1), deny(S1, G1)],
        nps=[NP_G_INGRESS_DENY_ALL],
    ),
    Scenario(
        "baseline-accept-irrelevant-when-np-isolates",
        [
            cnp(
                "base-accept-g-into-s",
                "Baseline",
                1,
                SUBJ_S,
                ingress=[ing("Accept", NS("gryffindor"))],
            )
        ],
        [deny(G1, S1), deny(H1, S1)],
        nps=[NP_S_INGRESS_DENY_ALL],
    ),
    Scenario(
        "baseline-accept-before-later-deny",
        [
            cnp(
                "b1-accept-80",
                "Baseline",
                1,
                SUBJ_G,
                egress=[eg("Accept", NS("slytherin"), protocols=[TCP(80)])],
            ),
            cnp("b2-deny", "Baseline", 2, SUBJ_G, egress=[eg("Deny", NS("slytherin"))]),
        ],
        [allow(G1, S1, 80), deny(G1, S1, 81), deny(G1, S1, 80, "UDP")],
    ),
    Scenario(
        "baseline-pass-falls-to-allow",
        [
            cnp("b1-pass", "Baseline", 1, SUBJ_G, egress=[eg("Pass", NS("slytherin"))]),
            cnp("b2-deny", "Baseline", 2, SUBJ_G, egress=[eg("Deny", ALL_NS)]),
        ],
        [allow(G1, S1), deny(G1, H1)],
    ),
    # --- both directions ------------------------------------------------------------------
    Scenario(
        "egress-accept-then-destination-admin-ingress-deny",
        [
            cnp("accept-g-to-s", "Admin", 1, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
            cnp("s-deny-from-g", "Admin", 2, SUBJ_S, ingress=[ing("Deny", NS("gryffindor"))]),
        ],
        [deny(G1, S1)],
    ),
    Scenario(
        "egress-accept-then-destination-np-deny",
        [cnp("accept-g-to-s", "Admin", 1, SUBJ_G, egress=[eg("Accept", NS("slytherin"))])],
        [deny(G1, S1)],
        nps=[NP_S_INGRESS_DENY_ALL],
    ),
    Scenario(
        "egress-accept-then-destination-baseline-deny",
        [
            cnp("accept-g-to-s", "Admin", 1, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
            cnp("base-s-deny-all", "Baseline", 1, SUBJ_S, ingress=[ing("Deny", ALL_NS)]),
        ],
        [deny(G1, S1), deny(H1, S1), allow(EXT, S1)],
    ),
    Scenario(
        "ingress-accept-does-not-override-source-egress",
        [
            cnp("s-accept-from-g", "Admin", 1, SUBJ_S, ingress=[ing("Accept", NS("gryffindor"))]),
            cnp("base-g-deny", "Baseline", 1, SUBJ_G, egress=[eg("Deny", NS("slytherin"))]),
        ],
        [deny(G1, S1), allow(H1, S1)],
    ),
    Scenario(
        "both-sides-accept",
        [
            cnp("accept-g-to-s", "Admin", 1, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
            cnp("s-accept-from-g", "Admin", 1, SUBJ_S, ingress=[ing("Accept", NS("gryffindor"))]),
        ],
        [allow(G1, S1)],
        nps=[NP_G_EGRESS_DENY_ALL, NP_S_INGRESS_DENY_ALL],
    ),
    # --- order: priority, name, rule order ------------------------------------------------
    Scenario(
        "lower-priority-value-first",
        [
            cnp("a-deny", "Admin", 20, SUBJ_G, egress=[eg("Deny", NS("slytherin"))]),
            cnp("b-accept", "Admin", 10, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
        ],
        [allow(G1, S1)],
        nps=[NP_G_EGRESS_DENY_ALL],
    ),
    Scenario(
        "lower-priority-value-first-swapped",
        [
            cnp("a-deny", "Admin", 10, SUBJ_G, egress=[eg("Deny", NS("slytherin"))]),
            cnp("b-accept", "Admin", 20, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
        ],
        [deny(G1, S1)],
    ),
    Scenario(
        "priority-0-and-1000",
        [
            cnp("last", "Admin", 1000, SUBJ_G, egress=[eg("Deny", NS("slytherin"))]),
            cnp("first", "Admin", 0, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
        ],
        [allow(G1, S1)],
    ),
    Scenario(
        "equal-priority-by-name-accept-first",
        [
            cnp("b-deny", "Admin", 5, SUBJ_G, egress=[eg("Deny", NS("slytherin"))]),
            cnp("a-accept", "Admin", 5, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
        ],
        [allow(G1, S1)],
    ),
    Scenario(
        "equal-priority-by-name-deny-first",
        [
            cnp("b-accept", "Admin", 5, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
            cnp("a-deny", "Admin", 5, SUBJ_G, egress=[eg("Deny", NS("slytherin"))]),
        ],
        [deny(G1, S1)],
    ),
    Scenario(
        "rules-in-order",
        [
            cnp(
                "ordered",
                "Admin",
                5,
                SUBJ_G,
                egress=[
                    eg("Deny", NS("slytherin"), protocols=[TCP(80)]),
                    eg("Accept", NS("slytherin")),
                ],
            )
        ],
        [deny(G1, S1, 80), allow(G1, S1, 81)],
        nps=[NP_G_EGRESS_DENY_ALL],
    ),
    Scenario(
        "rules-in-order-reversed",
        [
            cnp(
                "ordered",
                "Admin",
                5,
                SUBJ_G,
                egress=[
                    eg("Accept", NS("slytherin")),
                    eg("Deny", NS("slytherin"), protocols=[TCP(80)]),
                ],
            )
        ],
        [allow(G1, S1, 80), allow(G1, S1, 81)],
        nps=[NP_G_EGRESS_DENY_ALL],
    ),
    Scenario(
        "admin-before-baseline-whatever-the-priority",
        [
            cnp("base-accept", "Baseline", 0, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
            cnp("admin-deny", "Admin", 1000, SUBJ_G, egress=[eg("Deny", NS("slytherin"))]),
        ],
        [deny(G1, S1)],
    ),
    Scenario(
        "pass-chain-through-all-tiers",
        [
            cnp(
                "a1",
                "Admin",
                1,
                SUBJ_G,
                egress=[
                    eg("Pass", NS("slytherin"), protocols=[TCP(80)]),
                    eg("Deny", NS("slytherin")),
                ],
            ),
            cnp("a2", "Admin", 2, SUBJ_G, egress=[eg("Deny", ALL_NS)]),
            cnp(
                "b1",
                "Baseline",
                1,
                SUBJ_G,
                egress=[eg("Pass", NS("slytherin"), protocols=[TCP(80)])],
            ),
            cnp("b2", "Baseline", 2, SUBJ_G, egress=[eg("Deny", NS("slytherin"))]),
        ],
        # 80: Admin Pass (a1 rule 0), no NP, Baseline Pass (b1): default allow.
        # 81: a1 rule 1 denies. H1 on 80: a1 does not match, a2 denies.
        [allow(G1, S1, 80), deny(G1, S1, 81), deny(G1, H1, 80)],
    ),
    Scenario(
        "pass-rule-that-does-not-match-is-skipped",
        [
            cnp(
                "a1",
                "Admin",
                1,
                SUBJ_G,
                egress=[eg("Pass", NS("hufflepuff")), eg("Deny", NS("slytherin"))],
            ),
        ],
        [deny(G1, S1), allow(G1, H1)],
    ),
    Scenario(
        "subject-not-selected",
        [
            cnp(
                "ravenclaw-only",
                "Admin",
                1,
                {"namespaces": house("ravenclaw")},
                egress=[eg("Deny", ALL_NS)],
            )
        ],
        [allow(G1, S1), deny(R1, G1), deny(R1, S1)],
    ),
    Scenario(
        "subject-pods",
        [
            cnp(
                "web-in-g",
                "Admin",
                1,
                {
                    "pods": {
                        "namespaceSelector": house("gryffindor"),
                        "podSelector": {"matchLabels": {"app": "web"}},
                    }
                },
                egress=[eg("Deny", ALL_NS)],
            )
        ],
        [deny(G1, S1), allow(G2, S1)],
    ),
    Scenario(
        "pods-peer",
        [
            cnp(
                "deny-web-in-s-and-h",
                "Admin",
                1,
                SUBJ_G,
                egress=[eg("Deny", PODS("slytherin", app="web"), PODS("hufflepuff", app="db"))],
            )
        ],
        [deny(G1, S1), allow(G1, H1)],
    ),
    # --- ports and protocols --------------------------------------------------------------
    Scenario(
        "port-number-and-protocol",
        [
            cnp(
                "p",
                "Admin",
                1,
                SUBJ_G,
                egress=[eg("Deny", ALL_NS, protocols=[TCP(80), UDP(53), SCTP(9000)])],
            )
        ],
        [
            deny(G1, S1, 80),
            allow(G1, S1, 81),
            allow(G1, S1, 80, "UDP"),
            deny(G1, S1, 53, "UDP"),
            allow(G1, S1, 53, "TCP"),
            deny(G1, S1, 9000, "SCTP"),
            allow(G1, S1, 9000, "TCP"),
        ],
    ),
    Scenario(
        "port-range-inclusive",
        [
            cnp(
                "r",
                "Admin",
                1,
                SUBJ_G,
                egress=[eg("Deny", ALL_NS, protocols=[TCP_RANGE(8000, 8080)])],
            )
        ],
        [
            allow(G1, S1, 7999),
            deny(G1, S1, 8000),
            deny(G1, S1, 8040),
            deny(G1, S1, 8080),
            allow(G1, S1, 8081),
            allow(G1, S1, 8000, "UDP"),
        ],
    ),
    Scenario(
        "no-protocols-is-all-traffic",
        [cnp("all", "Admin", 1, SUBJ_G, egress=[eg("Deny", NS("slytherin"))])],
        [deny(G1, S1, 1), deny(G1, S1, 65535, "UDP"), deny(G1, S1, 7, "SCTP")],
    ),
    Scenario(
        "egress-named-port-on-destination",
        [cnp("web", "Admin", 1, SUBJ_G, egress=[eg("Deny", ALL_NS, protocols=[NAMED("web")])])],
        # cedric's web is 80/TCP, draco's is 8080/TCP; a UDP 80 is not "web".
        [
            deny(G1, H1, 80),
            allow(G1, H1, 8080),
            allow(G1, H1, 80, "UDP"),
            deny(G1, S1, 8080),
            allow(G1, S1, 80),
            allow(G2, R1, 80),
        ],
    ),
    Scenario(
        "ingress-named-port-on-subject",
        [cnp("dns", "Admin", 1, SUBJ_G, ingress=[ing("Deny", ALL_NS, protocols=[NAMED("dns")])])],
        # harry's dns is 53/UDP (53/TCP is named dns-tcp); hermione declares no ports.
        [deny(S1, G1, 53, "UDP"), allow(S1, G1, 53, "TCP"), allow(S1, G2, 53, "UDP")],
    ),
    Scenario(
        "named-port-never-matches-a-host-network-destination",
        [cnp("web", "Admin", 1, SUBJ_G, egress=[eg("Deny", ALL_NS, protocols=[NAMED("web")])])],
        [allow(G1, HB, 80)],
    ),
    # --- networks ------------------------------------------------------------------------
    Scenario(
        "networks-match-pod-ips",
        [cnp("n", "Admin", 1, SUBJ_G, egress=[eg("Deny", NETS("10.244.1.0/24"))])],
        [deny(G2, S1), allow(G2, H1), allow(G1, EXT)],
    ),
    Scenario(
        "networks-match-external-and-nodes",
        [
            cnp(
                "n",
                "Admin",
                1,
                SUBJ_G,
                egress=[eg("Deny", NETS("203.0.113.0/24", "192.168.0.0/24"))],
            )
        ],
        [deny(G1, EXT), deny(G2, NODE_A), deny(G2, HA), allow(G1, "198.51.100.1"), allow(G1, S1)],
    ),
    Scenario(
        "networks-per-family",
        [cnp("v4-only", "Admin", 1, SUBJ_G, egress=[eg("Deny", NETS("0.0.0.0/0"))])],
        [deny(G1, H1, family=4), allow(G1, H1, family=6), deny(G1, EXT), allow(G1, EXT6, family=6)],
    ),
    Scenario(
        "networks-v6",
        [cnp("v6", "Admin", 1, SUBJ_G, egress=[eg("Deny", NETS("fd00:244::/32"))])],
        [allow(G1, H1, family=4), deny(G1, H1, family=6), allow(G1, EXT6, family=6)],
    ),
    Scenario(
        "networks-rule-passes-pod-traffic-first",
        [
            cnp(
                "internet",
                "Admin",
                1,
                SUBJ_G,
                egress=[eg("Pass", ALL_NS), eg("Deny", NETS("0.0.0.0/0", "::/0"))],
            )
        ],
        # The spec's advice: Pass pod traffic before a 0.0.0.0/0 rule.
        [
            allow(G1, S1),
            allow(G1, H1, family=6),
            deny(G1, EXT),
            deny(G1, EXT6, family=6),
            deny(G1, HB),
        ],
    ),
    # --- nodes peers, own node, host-network pods ----------------------------------------
    Scenario(
        "nodes-peer",
        [
            cnp(
                "deny-linux-nodes",
                "Admin",
                1,
                SUBJ_G,
                egress=[eg("Deny", NODES_PEER(**{"kubernetes.io/os": "linux"}))],
            )
        ],
        [
            deny(G2, NODE_A),
            deny(G1, NODE_B),
            deny(G1, HB),
            deny(G1, NODE_B6, family=6),
            deny(G1, HB, family=6),
            allow(G1, NODE_W),
            allow(G1, EXT),
            allow(G1, S1),
        ],
    ),
    Scenario(
        "nodes-peer-by-label",
        [cnp("deny-workers", "Admin", 1, SUBJ_G, egress=[eg("Deny", NODES_PEER(role="worker"))])],
        [deny(G1, NODE_B), allow(G2, NODE_A), allow(G1, NODE_W)],
    ),
    Scenario(
        "nodes-peer-all-nodes-with-empty-selector",
        [cnp("deny-nodes", "Admin", 1, SUBJ_G, egress=[eg("Deny", {"nodes": {}})])],
        [deny(G1, NODE_W), deny(G1, NODE_B), allow(G1, EXT)],
    ),
    Scenario(
        "own-node-egress-is-judged-by-admin",
        [cnp("deny-nodes", "Admin", 1, SUBJ_ALL, egress=[eg("Deny", {"nodes": {}})])],
        # harry runs on node-a: the Admin Deny reaches his own node too (address or
        # host-network pod), while the kubelet (node-a -> harry) still gets in.
        [
            deny(G1, NODE_A),
            deny(G1, HA),
            deny(G1, NODE_A6, family=6),
            allow(NODE_A, G1),
            allow(HA, G1),
            allow(HA, G1, 53, "UDP", family=6),
        ],
    ),
    Scenario(
        "kubelet-is-never-matched-by-ingress-peers",
        [cnp("deny-all-in", "Admin", 1, SUBJ_ALL, ingress=[ing("Deny", ALL_NS)])],
        # Ingress peers select pods only: no node, host-network pod or address.
        [allow(HA, G1), allow(HB, G1), allow(NODE_B, G1), allow(EXT, G1), deny(S1, G1)],
    ),
    Scenario(
        "own-node-baseline-deny-without-np",
        [cnp("base-deny-nodes", "Baseline", 1, SUBJ_G, egress=[eg("Deny", {"nodes": {}})])],
        [deny(G1, NODE_A), deny(G1, HA), allow(HA, G1)],
    ),
    Scenario(
        "own-node-np-allows-it-over-baseline",
        [cnp("base-deny-nodes", "Baseline", 1, SUBJ_G, egress=[eg("Deny", {"nodes": {}})])],
        # An NP isolating harry's egress keeps its rule "own node always allowed".
        [allow(G1, NODE_A), allow(G1, HA), deny(G1, NODE_B), deny(G1, HB)],
        nps=[NP_G_EGRESS_DENY_ALL],
    ),
    Scenario(
        "own-node-admin-deny-beats-np",
        [cnp("deny-nodes", "Admin", 1, SUBJ_G, egress=[eg("Deny", {"nodes": {}})])],
        [deny(G1, NODE_A), deny(G1, HA)],
        nps=[NP_G_EGRESS_DENY_ALL],
    ),
    Scenario(
        "host-network-pods-are-never-subjects",
        [
            cnp(
                "deny-out",
                "Admin",
                1,
                SUBJ_ALL,
                egress=[eg("Deny", ALL_NS), eg("Deny", NETS("0.0.0.0/0"))],
            ),
            cnp(
                "deny-in",
                "Admin",
                2,
                {"namespaces": house("kube-system")},
                ingress=[ing("Deny", ALL_NS)],
            ),
        ],
        [allow(HA, S1), allow(HB, G1), deny(G1, HB), deny(G1, S1)],
    ),
    Scenario(
        "host-network-pods-are-never-pods-peers",
        [
            cnp(
                "deny-kube-system",
                "Admin",
                1,
                SUBJ_G,
                egress=[eg("Deny", NS("kube-system"), PODS("kube-system"))],
                ingress=[ing("Deny", NS("kube-system"), PODS("kube-system"))],
            )
        ],
        [allow(G1, HB), allow(HB, G1), allow(G2, HA)],
    ),
    Scenario(
        "ingress-from-outside-is-not-matched-by-pod-peers",
        [cnp("deny-all-in", "Admin", 1, SUBJ_G, ingress=[ing("Deny", ALL_NS)])],
        [allow(EXT, G1), allow(EXT6, G1, family=6), deny(H1, G1, family=6)],
    ),
    # --- self and missing addresses ----------------------------------------------------
    Scenario(
        "self-traffic-is-never-subject",
        [
            cnp(
                "deny-everything-out",
                "Admin",
                1,
                SUBJ_ALL,
                egress=[eg("Deny", NETS("0.0.0.0/0", "::/0")), eg("Deny", ALL_NS)],
            ),
            cnp("deny-everything-in", "Admin", 1, SUBJ_ALL, ingress=[ing("Deny", ALL_NS)]),
        ],
        [allow(G1, G1), allow(G1, G1, family=6), allow(R1, R1, 53, "UDP"), deny(G1, G2)],
    ),
    Scenario(
        "pods-without-ip-have-no-path",
        [
            cnp(
                "accept-all",
                "Admin",
                1,
                SUBJ_ALL,
                egress=[eg("Accept", ALL_NS)],
                ingress=[ing("Accept", ALL_NS)],
            )
        ],
        [deny(GHOST, G1), deny(G1, GHOST), deny(R1, G1, family=6)],
    ),
    # --- fail closed on domainNames -----------------------------------------------------
    Scenario(
        "fail-closed-accept-matches-nothing",
        [
            cnp(
                "allow-domains",
                "Admin",
                1,
                SUBJ_G,
                egress=[eg("Accept", DOMAINS("kubernetes.io"), NS("slytherin"))],
            ),
            cnp(
                "base-deny",
                "Baseline",
                1,
                SUBJ_G,
                egress=[eg("Deny", ALL_NS), eg("Deny", NETS("0.0.0.0/0"))],
            ),
        ],
        # The whole Accept rule matches no traffic, its namespaces peer included.
        [deny(G1, S1), deny(G1, EXT)],
    ),
    Scenario(
        "fail-closed-accept-then-later-rules",
        [
            cnp(
                "allow-domains",
                "Admin",
                1,
                SUBJ_G,
                egress=[eg("Accept", DOMAINS("kubernetes.io")), eg("Accept", NS("slytherin"))],
            ),
        ],
        [allow(G1, S1), deny(G1, EXT)],
        nps=[NP_G_EGRESS_DENY_ALL],
    ),
    Scenario(
        "fail-closed-deny-is-deny-all",
        [
            cnp(
                "deny-domains",
                "Admin",
                5,
                SUBJ_G,
                egress=[
                    eg("Deny", DOMAINS("*.example.com"), NS("slytherin"), protocols=[TCP(443)])
                ],
            ),
        ],
        # Every egress connection of gryffindor's pods, whatever port or peer; not
        # their ingress, and not other namespaces' pods.
        [
            deny(G1, H1, 53, "UDP"),
            deny(G1, EXT, 80),
            deny(G2, S1, 443),
            allow(S1, G1),
            allow(H1, S1),
        ],
        nps=[NP_G_EGRESS_TO_H],
    ),
    Scenario(
        "fail-closed-pass-is-deny-all",
        [
            cnp("pass-domains", "Admin", 5, SUBJ_G, egress=[eg("Pass", DOMAINS("example.com"))]),
        ],
        # Not a Pass: a Deny, which no NP can open.
        [deny(G1, H1), deny(G1, EXT)],
        nps=[NP_G_EGRESS_TO_H],
    ),
    Scenario(
        "fail-closed-after-an-earlier-decision",
        [
            cnp("accept-s", "Admin", 1, SUBJ_G, egress=[eg("Accept", NS("slytherin"))]),
            cnp("deny-domains", "Admin", 2, SUBJ_G, egress=[eg("Deny", DOMAINS("example.com"))]),
        ],
        # Order still rules: the earlier Accept decides first.
        [allow(G1, S1), deny(G1, H1)],
    ),
    Scenario(
        "fail-closed-in-baseline-opened-by-np",
        [
            cnp(
                "base-deny-domains",
                "Baseline",
                1,
                SUBJ_G,
                egress=[eg("Deny", DOMAINS("example.com"))],
            )
        ],
        [allow(G1, H1), deny(G1, S1)],
        nps=[NP_G_EGRESS_TO_H],
    ),
    Scenario(
        "fail-closed-unselected-subject",
        [cnp("deny-domains", "Admin", 1, SUBJ_S, egress=[eg("Deny", DOMAINS("example.com"))])],
        [allow(G1, H1), deny(S1, G1)],
    ),
]


PROBES = [
    pytest.param(scenario, probe, id=f"{scenario.name}:{probe.id}")
    for scenario in SCENARIOS
    for probe in scenario.probes
]


@pytest.mark.parametrize(("scenario", "probe"), PROBES)
def test_tiers(scenario: Scenario, probe: Probe) -> None:
    cluster = build(scenario.nps)
    got = allowed_with_tiers(
        cluster,
        scenario.cnps,
        NODES,
        endpoint(cluster, probe.src),
        endpoint(cluster, probe.dst),
        probe.port,
        probe.protocol,
        probe.family,
    )
    assert got is probe.expected


# --- contested addresses --------------------------------------------------------------


def test_contested_address_is_denied_even_against_admin_accept() -> None:
    twin = _pod("slytherin/twin", ["10.244.1.2"], "node-a")  # draco's address, no times
    cluster = build([twin])
    accept = [
        cnp(
            "accept-all-out",
            "Admin",
            0,
            SUBJ_ALL,
            egress=[eg("Accept", ALL_NS), eg("Accept", NETS("0.0.0.0/0"))],
        ),
        cnp("accept-all-in", "Admin", 0, SUBJ_ALL, ingress=[ing("Accept", ALL_NS)]),
    ]

    def check(src: str, dst: str) -> bool:
        return allowed_with_tiers(
            cluster, accept, NODES, endpoint(cluster, src), endpoint(cluster, dst), 80, "TCP", 4
        )

    assert check(G1, S1) is False
    assert check(S1, G1) is False
    assert check(G1, "10.244.1.2") is False
    # Loopback and the node stay: draco to itself, node-a to draco.
    assert check(S1, S1) is True
    assert check(NODE_A, S1) is True


# --- with no ClusterNetworkPolicy it is exactly allowed() ------------------------------


def test_without_cnps_it_is_the_networkpolicy_reference() -> None:
    nps = [NP_G_EGRESS_TO_S, NP_S_INGRESS_FROM_G, NP_G_INGRESS_DENY_ALL]
    cluster = build(nps)
    names = [*sorted(cluster.pods), NODE_A, NODE_B, EXT, EXT6, NODE_A6]
    for src in names:
        for dst in names:
            if "/" not in src and "/" not in dst:
                continue
            for port, proto in ((80, "TCP"), (53, "UDP"), (8080, "TCP")):
                for fam in (4, 6):
                    s, d = endpoint(cluster, src), endpoint(cluster, dst)
                    if isinstance(s, str) and ":" in s and fam == 4:
                        continue
                    expected = reference.allowed(cluster, s, d, port, proto, fam)
                    assert (
                        allowed_with_tiers(cluster, [], NODES, s, d, port, proto, fam) is expected
                    ), (
                        src,
                        dst,
                        port,
                        proto,
                        fam,
                    )


# --- explanations -------------------------------------------------------------------


def test_explanation_names_the_deciding_rule() -> None:
    cluster = build()
    cnps = [
        cnp(
            "a1",
            "Admin",
            1,
            SUBJ_G,
            egress=[eg("Pass", NS("hufflepuff")), eg("Pass", NS("slytherin"), name="to-s")],
        ),
        cnp("b1", "Baseline", 3, SUBJ_G, egress=[eg("Deny", NS("slytherin"), name="no-s")]),
    ]
    got = explain_with_tiers(cluster, cnps, NODES, cluster.pods[G1], cluster.pods[S1], 80, "TCP")
    assert got.allowed is False
    assert got.egress is not None
    assert got.ingress is not None
    step = got.egress.decided_by
    assert (step.tier, step.action, step.policy, step.rule, step.rule_name) == (
        "Baseline",
        "Deny",
        "b1",
        0,
        "no-s",
    )
    assert [(p.tier, p.policy, p.rule, p.rule_name) for p in got.egress.passed] == [
        ("Admin", "a1", 1, "to-s")
    ]
    assert got.ingress.allowed
    assert got.ingress.decided_by.tier == "Default"
    assert got.reason == "denied at egress by the Baseline tier b1 rule 0"


def test_explanation_of_the_networkpolicy_tier() -> None:
    cluster = build([NP_G_EGRESS_TO_H])
    got = explain_with_tiers(cluster, [], NODES, cluster.pods[G1], cluster.pods[S1], 80, "TCP")
    assert got.egress is not None
    step = got.egress.decided_by
    assert (step.tier, step.action, step.policy, step.rule) == (
        "NetworkPolicy",
        "Deny",
        "gryffindor/egress-to-hufflepuff",
        None,
    )
    own = explain_with_tiers(cluster, [], NODES, cluster.pods[G1], NODE_A, 10250, "TCP")
    assert own.allowed
    assert own.egress is not None
    assert (own.egress.decided_by.action, own.egress.decided_by.note) == ("Accept", "own node")


def test_explanation_of_fail_closed_and_special_cases() -> None:
    cluster = build()
    cnps = [cnp("pass-domains", "Admin", 5, SUBJ_G, egress=[eg("Pass", DOMAINS("example.com"))])]
    got = explain_with_tiers(cluster, cnps, NODES, cluster.pods[G1], EXT, 443, "TCP")
    assert got.egress is not None
    assert (got.egress.decided_by.action, got.egress.decided_by.note) == (
        "Deny",
        "fail closed: unsupported peer",
    )
    same = explain_with_tiers(cluster, cnps, NODES, cluster.pods[G1], cluster.pods[G1], 80, "TCP")
    assert (same.allowed, same.egress, same.reason) == (
        True,
        None,
        "same pod: not subject to any policy",
    )
    kubelet = explain_with_tiers(cluster, cnps, NODES, NODE_A, cluster.pods[G1], 8080, "TCP")
    assert kubelet.allowed
    assert kubelet.reason == "from the destination pod's own node: always allowed"
    ghost = explain_with_tiers(
        cluster, cnps, NODES, cluster.pods[GHOST], cluster.pods[G1], 80, "TCP"
    )
    assert ghost.allowed is False
    assert ghost.egress is None


def test_tier_order_is_priority_then_name() -> None:
    policies = [
        cnp("c", "Admin", 5, SUBJ_G),
        cnp("b", "Admin", 5, SUBJ_G),
        cnp("z", "Admin", 1, SUBJ_G),
        cnp("a", "Baseline", 0, SUBJ_G),
        cnp("a", "Admin", 900, SUBJ_G),
    ]
    assert [p.name for p in ordered_tier(policies, "Admin")] == ["z", "b", "c", "a"]
    assert [p.name for p in ordered_tier(policies, "Baseline")] == ["a"]
