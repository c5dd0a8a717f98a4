"""The NetworkPolicy semantics, as tables of cases run against every evaluator.

Each scenario is a small cluster written the way ``kubectl get -o yaml`` would show it,
and a list of probes: a source, a destination, a port and protocol, and the expected
verdict. Every probe runs against every evaluator in ``EVALUATORS`` (the reference
today; the compiled engine joins it), so the engine is held to the reference case by
case. ``docs/semantics.md`` explains each row.

Addresses: pods are 10.244.<node>.<n> (fd00:244::<n> for IPv6), nodes are 192.168.0.1
(node-a) and 192.168.0.2 (node-b); anything else is outside the cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from stockade.cluster import Cluster, parse_documents
from stockade_lab import reference
from stockade_lab.reference import Endpoint
from tests.unit.evaluators import EVALUATORS, Evaluator

Doc = dict[str, Any]

NODE_IPS = {"node-a": "192.168.0.1", "node-b": "192.168.0.2"}


# --- builders ----------------------------------------------------------------------


def ns(name: str, **labels: str) -> Doc:
    """A Namespace with ``labels``."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(
    key: str,
    ips: str | Sequence[str] = (),
    labels: dict[str, str] | None = None,
    *,
    node: str = "node-a",
    ports: Sequence[tuple[str, int, str]] = (),
    host_network: bool = False,
    phase: str | None = None,
) -> Doc:
    """A Pod ``ns/name``; a host-network pod gets its node's address as its IP."""
    namespace, name = key.split("/")
    addrs = [ips] if isinstance(ips, str) else list(ips)
    if host_network:
        addrs = [NODE_IPS[node]]
    status: Doc = {"hostIP": NODE_IPS[node]}
    if addrs:
        status["podIP"] = addrs[0]
        status["podIPs"] = [{"ip": a} for a in addrs]
    if phase is not None:
        status["phase"] = phase
    container: Doc = {"name": "main", "image": "registry.k8s.io/pause:3.9"}
    if ports:
        container["ports"] = [
            {"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "labels": labels or {}},
        "spec": {"nodeName": node, "hostNetwork": host_network, "containers": [container]},
        "status": status,
    }


def policy(key: str, spec: Doc) -> Doc:
    """A NetworkPolicy ``ns/name`` with ``spec``."""
    namespace, name = key.split("/")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


def labels(**kv: str) -> Doc:
    """A ``matchLabels`` selector."""
    return {"matchLabels": kv}


def build(docs: Sequence[Doc]) -> Cluster:
    """Parse ``docs``; every document of a scenario must be valid."""
    result = parse_documents(docs)
    assert not result.errors, [str(e) for e in result.errors]
    return result.cluster


def endpoint(cluster: Cluster, name: str) -> Endpoint:
    """``ns/name`` is a pod of the cluster; anything else is an IP address."""
    return cluster.pods[name] if "/" in name else name


# --- the table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One connection attempt and its expected verdict."""

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


@dataclass(frozen=True)
class Scenario:
    """A cluster and the probes that pin down one row of the semantics."""

    name: str
    docs: Sequence[Doc]
    probes: Sequence[Probe] = field(default_factory=tuple)


def allow(
    src: str, dst: str, port: int = 80, protocol: str = "TCP", family: int | None = None
) -> Probe:
    return Probe(src, dst, port, True, protocol, family)


def deny(
    src: str, dst: str, port: int = 80, protocol: str = "TCP", family: int | None = None
) -> Probe:
    return Probe(src, dst, port, False, protocol, family)


DENY_INGRESS: Doc = {"podSelector": {}, "policyTypes": ["Ingress"]}
DENY_EGRESS: Doc = {"podSelector": {}, "policyTypes": ["Egress"]}
DENY_ALL: Doc = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

# Three plain pods used by many scenarios.
A = pod("default/a", "10.244.1.1", {"app": "a"})
B = pod("default/b", "10.244.1.2", {"app": "b"})
C = pod("other/c", "10.244.2.1", {"app": "c"}, node="node-b")


def _expression_scenario(name: str, expr: Doc, isolated: set[str]) -> Scenario:
    """A deny-ingress policy selecting by one expression; probes every labelled pod."""
    pods = {
        "default/front": pod("default/front", "10.244.1.10", {"tier": "front"}),
        "default/back": pod("default/back", "10.244.1.11", {"tier": "back"}),
        "default/none": pod("default/none", "10.244.1.12", {}),
    }
    probes = [Probe("other/c", key, 80, key not in isolated) for key in pods]
    return Scenario(
        name,
        [C, *pods.values(), policy("default/sel", {"podSelector": {"matchExpressions": [expr]}})],
        probes,
    )


SCENARIOS: list[Scenario] = [
    # --- isolation and selection ---
    Scenario(
        "no-policy-allows-everything",
        [A, B, C],
        [
            allow("default/a", "default/b"),
            allow("other/c", "default/a", 443, "UDP"),
            allow("203.0.113.9", "default/a"),
            allow("default/a", "203.0.113.9"),
        ],
    ),
    Scenario(
        "empty-podselector-selects-all-in-namespace",
        [A, B, C, policy("default/deny", DENY_INGRESS)],
        [
            deny("other/c", "default/a"),
            deny("default/a", "default/b"),
            deny("203.0.113.9", "default/b"),
            allow("default/a", "other/c"),
            allow("default/b", "203.0.113.9"),
        ],
    ),
    Scenario(
        "matchlabels-selects-only-matching",
        [A, B, C, policy("default/deny-a", {"podSelector": labels(app="a")})],
        [deny("other/c", "default/a"), allow("other/c", "default/b")],
    ),
    Scenario(
        "policy-selects-only-its-own-namespace",
        [A, C, policy("default/deny-c", {"podSelector": labels(app="c")})],
        [allow("default/a", "other/c")],
    ),
    _expression_scenario(
        "matchexpressions-in",
        {"key": "tier", "operator": "In", "values": ["front", "x"]},
        {"default/front"},
    ),
    _expression_scenario(
        "matchexpressions-notin-matches-missing-key",
        {"key": "tier", "operator": "NotIn", "values": ["front"]},
        {"default/back", "default/none"},
    ),
    _expression_scenario(
        "matchexpressions-exists",
        {"key": "tier", "operator": "Exists"},
        {"default/front", "default/back"},
    ),
    _expression_scenario(
        "matchexpressions-doesnotexist",
        {"key": "tier", "operator": "DoesNotExist"},
        {"default/none"},
    ),
    Scenario(
        "matchlabels-and-matchexpressions-are-anded",
        [
            C,
            pod("default/web-prod", "10.244.1.20", {"app": "web", "env": "prod"}),
            pod("default/web-dev", "10.244.1.21", {"app": "web", "env": "dev"}),
            pod("default/db-prod", "10.244.1.22", {"app": "db", "env": "prod"}),
            policy(
                "default/sel",
                {
                    "podSelector": {
                        "matchLabels": {"app": "web"},
                        "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}],
                    }
                },
            ),
        ],
        [
            deny("other/c", "default/web-prod"),
            allow("other/c", "default/web-dev"),
            allow("other/c", "default/db-prod"),
        ],
    ),
    # --- policyTypes ---
    Scenario(
        "policytypes-default-is-ingress-only",
        [A, C, policy("default/p", {"podSelector": {}})],
        [
            deny("other/c", "default/a"),
            allow("default/a", "other/c"),
            allow("default/a", "8.8.8.8"),
        ],
    ),
    Scenario(
        "policytypes-default-adds-egress-when-egress-rules-present",
        [
            A,
            C,
            policy(
                "default/p",
                {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}]},
            ),
        ],
        [
            allow("default/a", "10.9.1.1"),
            deny("default/a", "8.8.8.8"),
            deny("default/a", "other/c"),
            deny("other/c", "default/a"),  # Ingress is always defaulted in
        ],
    ),
    Scenario(
        "policytypes-default-empty-egress-list-adds-no-egress",
        [A, C, policy("default/p", {"podSelector": {}, "egress": []})],
        [allow("default/a", "other/c"), deny("other/c", "default/a")],
    ),
    Scenario(
        "policytypes-explicit-egress-leaves-ingress-open",
        [A, C, policy("default/p", DENY_EGRESS)],
        [allow("other/c", "default/a"), deny("default/a", "other/c"), deny("default/a", "8.8.8.8")],
    ),
    Scenario(
        "policytypes-explicit-ingress-ignores-egress-rules",
        [
            A,
            C,
            policy(
                "default/p",
                {
                    "podSelector": {},
                    "policyTypes": ["Ingress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}],
                },
            ),
        ],
        [
            allow("default/a", "8.8.8.8"),
            allow("default/a", "other/c"),
            deny("other/c", "default/a"),
        ],
    ),
    Scenario(
        "policytypes-explicit-egress-ignores-ingress-rules",
        [
            A,
            C,
            policy(
                "default/p",
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "ingress": [{"from": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}],
                },
            ),
        ],
        [
            allow("other/c", "default/a"),
            allow("8.8.8.8", "default/a"),
            deny("default/a", "other/c"),
        ],
    ),
    # --- directions ---
    Scenario(
        "isolation-is-per-direction",
        [A, B, policy("default/deny-a", {"podSelector": labels(app="a")})],
        [deny("default/b", "default/a"), allow("default/a", "default/b")],
    ),
    Scenario(
        "both-ends-must-allow",
        [
            A,
            B,
            C,
            # a may send only to 10.244.2.0/24 (c); c accepts nothing.
            policy(
                "default/a-egress",
                {
                    "podSelector": labels(app="a"),
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.244.2.0/24"}}]}],
                },
            ),
            policy("other/deny", DENY_INGRESS),
        ],
        [
            deny("default/a", "other/c"),  # a's egress allows, c's ingress does not
            deny("default/a", "default/b"),  # b's ingress is open, a's egress does not allow
            allow("other/c", "default/a"),  # neither side is isolated in this direction
        ],
    ),
    Scenario(
        "both-ends-allow",
        [
            A,
            C,
            policy(
                "default/a-egress",
                {
                    "podSelector": labels(app="a"),
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.244.2.0/24"}}]}],
                },
            ),
            policy(
                "other/c-ingress",
                {
                    "podSelector": {},
                    "ingress": [
                        {"from": [{"namespaceSelector": {}, "podSelector": labels(app="a")}]}
                    ],
                },
            ),
        ],
        [allow("default/a", "other/c"), deny("default/a", "10.244.1.2")],
    ),
    # --- union ---
    Scenario(
        "policies-are-an-additive-union",
        [
            pod("default/srv", "10.244.1.30", {"app": "srv"}),
            pod("default/x", "10.244.1.31", {"app": "x"}),
            pod("default/y", "10.244.1.32", {"app": "y"}),
            pod("default/z", "10.244.1.33", {"app": "z"}),
            policy("default/deny", DENY_INGRESS),
            policy(
                "default/from-x",
                {
                    "podSelector": labels(app="srv"),
                    "ingress": [{"from": [{"podSelector": labels(app="x")}]}],
                },
            ),
            policy(
                "default/from-y",
                {
                    "podSelector": labels(app="srv"),
                    "ingress": [
                        {"from": [{"podSelector": labels(app="y")}], "ports": [{"port": 80}]}
                    ],
                },
            ),
        ],
        [
            allow("default/x", "default/srv", 9999),
            allow("default/y", "default/srv", 80),
            deny("default/y", "default/srv", 81),
            deny("default/z", "default/srv"),
        ],
    ),
    # --- rules: peers and ports ---
    Scenario(
        "empty-from-allows-all-sources",
        [
            A,
            B,
            C,
            policy(
                "default/p",
                {"podSelector": labels(app="a"), "ingress": [{"ports": [{"port": 80}]}]},
            ),
        ],
        [
            allow("default/b", "default/a", 80),
            allow("other/c", "default/a", 80),
            allow("203.0.113.9", "default/a", 80),
            deny("default/b", "default/a", 81),
        ],
    ),
    Scenario(
        "ingress-list-of-one-empty-rule-allows-all",
        [
            A,
            C,
            policy("default/deny", DENY_INGRESS),
            policy("default/p", {"podSelector": {}, "ingress": [{}]}),
        ],
        [
            allow("other/c", "default/a", 1),
            allow("other/c", "default/a", 65535, "SCTP"),
            allow("203.0.113.9", "default/a", 53, "UDP"),
        ],
    ),
    Scenario(
        "empty-ingress-list-denies-all",
        [A, B, C, policy("default/p", {"podSelector": labels(app="a"), "ingress": []})],
        [
            deny("default/b", "default/a"),
            deny("other/c", "default/a"),
            deny("203.0.113.9", "default/a"),
        ],
    ),
    Scenario(
        "missing-ports-means-all-ports-and-protocols",
        [
            A,
            C,
            policy(
                "default/p",
                {
                    "podSelector": labels(app="a"),
                    "ingress": [{"from": [{"namespaceSelector": {}}]}],
                },
            ),
        ],
        [
            allow("other/c", "default/a", 1),
            allow("other/c", "default/a", 65535, "UDP"),
            allow("other/c", "default/a", 9, "SCTP"),
        ],
    ),
    Scenario(
        "port-by-number-protocol-defaults-to-tcp",
        [A, C, policy("default/p", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})],
        [
            allow("other/c", "default/a", 80),
            deny("other/c", "default/a", 81),
            deny("other/c", "default/a", 79),
            deny("other/c", "default/a", 80, "UDP"),
        ],
    ),
    Scenario(
        "port-with-protocol-only-means-every-port-of-it",
        [
            A,
            C,
            policy("default/p", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]}),
        ],
        [
            allow("other/c", "default/a", 53, "UDP"),
            allow("other/c", "default/a", 65535, "UDP"),
            deny("other/c", "default/a", 53, "TCP"),
        ],
    ),
    Scenario(
        "named-port-resolves-per-destination-pod",
        [
            pod("default/s1", "10.244.1.40", {"app": "server"}, ports=[("http", 8080, "TCP")]),
            pod("default/s2", "10.244.1.41", {"app": "server"}, ports=[("http", 9090, "TCP")]),
            pod("default/s3", "10.244.1.42", {"app": "server"}, ports=[("admin", 8080, "TCP")]),
            C,
            policy(
                "default/p",
                {"podSelector": labels(app="server"), "ingress": [{"ports": [{"port": "http"}]}]},
            ),
        ],
        [
            allow("other/c", "default/s1", 8080),
            deny("other/c", "default/s1", 9090),
            allow("other/c", "default/s2", 9090),
            deny("other/c", "default/s2", 8080),
            deny("other/c", "default/s3", 8080),  # no port named http at all
            deny("other/c", "default/s1", 8080, "UDP"),
        ],
    ),
    Scenario(
        "named-port-protocol-must-match-declared",
        [
            pod(
                "default/dns",
                "10.244.1.50",
                {"app": "dns"},
                ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")],
            ),
            C,
            policy(
                "default/p",
                {
                    "podSelector": labels(app="dns"),
                    "ingress": [{"ports": [{"port": "dns", "protocol": "UDP"}, {"port": "dns"}]}],
                },
            ),
        ],
        [
            allow("other/c", "default/dns", 53, "UDP"),
            deny("other/c", "default/dns", 53, "TCP"),  # "dns" is declared for UDP only
        ],
    ),
    Scenario(
        "named-port-in-egress-resolves-on-destination-pod",
        [
            pod("default/client", "10.244.1.60", {"app": "client"}),
            pod(
                "other/s1",
                "10.244.2.40",
                {"app": "server"},
                node="node-b",
                ports=[("http", 8080, "TCP")],
            ),
            pod(
                "other/s2",
                "10.244.2.41",
                {"app": "server"},
                node="node-b",
                ports=[("http", 9090, "TCP")],
            ),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="client"),
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "http"}]}],
                },
            ),
        ],
        [
            allow("default/client", "other/s1", 8080),
            allow("default/client", "other/s2", 9090),
            deny("default/client", "other/s1", 9090),
            deny("default/client", "203.0.113.9", 8080),  # not a pod: a name never matches
        ],
    ),
    Scenario(
        "endport-range-is-inclusive",
        [
            A,
            C,
            policy(
                "default/p",
                {"podSelector": {}, "ingress": [{"ports": [{"port": 32000, "endPort": 32768}]}]},
            ),
        ],
        [
            deny("other/c", "default/a", 31999),
            allow("other/c", "default/a", 32000),
            allow("other/c", "default/a", 32500),
            allow("other/c", "default/a", 32768),
            deny("other/c", "default/a", 32769),
            deny("other/c", "default/a", 32500, "UDP"),
        ],
    ),
    Scenario(
        "protocol-must-match",
        [
            A,
            C,
            policy(
                "default/p",
                {
                    "podSelector": {},
                    "ingress": [
                        {
                            "ports": [
                                {"protocol": "TCP", "port": 80},
                                {"protocol": "UDP", "port": 53},
                                {"protocol": "SCTP", "port": 7777},
                            ]
                        }
                    ],
                },
            ),
        ],
        [
            allow("other/c", "default/a", 80, "TCP"),
            deny("other/c", "default/a", 80, "UDP"),
            deny("other/c", "default/a", 80, "SCTP"),
            allow("other/c", "default/a", 53, "UDP"),
            deny("other/c", "default/a", 53, "TCP"),
            allow("other/c", "default/a", 7777, "SCTP"),
            deny("other/c", "default/a", 7777, "TCP"),
            deny("other/c", "default/a", 7777, "UDP"),
        ],
    ),
    # --- address families ---
    Scenario(
        "dual-stack-judged-per-family",
        [
            pod("default/server", ["10.244.1.70", "fd00:244::70"], {"app": "server"}),
            pod("default/dual", ["10.244.1.71", "fd00:244::71"], {"app": "client"}),
            pod("default/v4", "10.244.1.72", {"app": "client"}),
            pod("default/v6", "fd00:244::73", {"app": "client"}),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="server"),
                    "ingress": [{"from": [{"ipBlock": {"cidr": "fd00:244::/64"}}]}],
                },
            ),
        ],
        [
            allow("default/dual", "default/server", family=6),
            deny("default/dual", "default/server", family=4),  # a v6 block never matches v4
            deny("default/dual", "default/server"),  # primary family of dual is v4
            deny("default/v4", "default/server"),
            allow("default/v6", "default/server"),
            allow("fd00:244::99", "default/server"),
            deny("10.244.1.99", "default/server"),
            # no common family, no path, policy or not
            deny("default/v4", "default/v6"),
            deny("default/v6", "default/v4"),
            deny("default/v4", "default/dual", family=6),
            allow("default/server", "default/v6", family=6),
        ],
    ),
    Scenario(
        "selector-peer-matches-both-families",
        [
            pod("default/server", ["10.244.1.70", "fd00:244::70"], {"app": "server"}),
            pod("default/dual", ["10.244.1.71", "fd00:244::71"], {"app": "client"}),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="server"),
                    "ingress": [{"from": [{"podSelector": labels(app="client")}]}],
                },
            ),
        ],
        [
            allow("default/dual", "default/server", family=4),
            allow("default/dual", "default/server", family=6),
        ],
    ),
    # --- ipBlock ---
    Scenario(
        "ipblock-with-except",
        [
            A,
            policy(
                "default/p",
                {
                    "podSelector": {},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "ipBlock": {
                                        "cidr": "10.1.0.0/16",
                                        "except": ["10.1.1.0/24", "10.1.2.128/25"],
                                    }
                                }
                            ]
                        }
                    ],
                },
            ),
        ],
        [
            allow("10.1.0.0", "default/a"),
            allow("10.1.0.5", "default/a"),
            deny("10.1.1.0", "default/a"),
            deny("10.1.1.255", "default/a"),
            allow("10.1.2.127", "default/a"),
            deny("10.1.2.128", "default/a"),
            allow("10.1.255.255", "default/a"),
            deny("10.2.0.1", "default/a"),
        ],
    ),
    Scenario(
        "ipblock-matches-pod-ips",
        [
            A,
            B,
            C,
            pod("default/d", "10.244.1.9", {"app": "d"}),
            policy(
                "default/to-a",
                {
                    "podSelector": labels(app="a"),
                    "ingress": [
                        {
                            "from": [
                                {"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.9/32"]}}
                            ]
                        }
                    ],
                },
            ),
            policy(
                "default/from-b",
                {
                    "podSelector": labels(app="b"),
                    "policyTypes": ["Egress"],
                    "egress": [
                        {
                            "to": [
                                {"ipBlock": {"cidr": "10.244.2.1/32"}},
                                {"ipBlock": {"cidr": "10.244.1.1/32"}},
                            ]
                        }
                    ],
                },
            ),
        ],
        [
            allow("default/b", "default/a"),
            allow("other/c", "default/a"),
            deny("default/d", "default/a"),  # excepted pod IP
            allow("default/b", "other/c"),
            deny("default/b", "default/d"),
        ],
    ),
    # --- namespaces ---
    Scenario(
        "namespaceselector-only-selects-every-pod-of-matching-namespaces",
        [
            ns("team-a", team="a"),
            ns("team-b", team="b"),
            A,
            B,
            pod("team-a/x", "10.244.2.10", {"any": "thing"}, node="node-b"),
            pod("team-b/y", "10.244.2.11", {}, node="node-b"),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="a"),
                    "ingress": [{"from": [{"namespaceSelector": labels(team="a")}]}],
                },
            ),
        ],
        [
            allow("team-a/x", "default/a"),
            deny("team-b/y", "default/a"),
            deny("default/b", "default/a"),  # own namespace is not implied
            deny("203.0.113.9", "default/a"),
        ],
    ),
    Scenario(
        "podselector-only-means-own-namespace",
        [
            A,
            pod("default/client", "10.244.1.80", {"role": "client"}),
            pod("other/client", "10.244.2.80", {"role": "client"}, node="node-b"),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="a"),
                    "ingress": [{"from": [{"podSelector": labels(role="client")}]}],
                },
            ),
        ],
        [allow("default/client", "default/a"), deny("other/client", "default/a")],
    ),
    Scenario(
        "namespace-and-pod-selector-in-one-peer-are-anded",
        [
            ns("alice-ns", user="alice"),
            ns("bob-ns", user="bob"),
            A,
            pod("alice-ns/client", "10.244.2.20", {"role": "client"}, node="node-b"),
            pod("alice-ns/other", "10.244.2.21", {"role": "other"}, node="node-b"),
            pod("default/client", "10.244.1.20", {"role": "client"}),
            pod("bob-ns/client", "10.244.2.22", {"role": "client"}, node="node-b"),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="a"),
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": labels(user="alice"),
                                    "podSelector": labels(role="client"),
                                }
                            ]
                        }
                    ],
                },
            ),
        ],
        [
            allow("alice-ns/client", "default/a"),
            deny("alice-ns/other", "default/a"),
            deny("default/client", "default/a"),
            deny("bob-ns/client", "default/a"),
        ],
    ),
    Scenario(
        "namespace-and-pod-selector-as-two-peers-are-ored",
        [
            ns("alice-ns", user="alice"),
            ns("bob-ns", user="bob"),
            A,
            pod("alice-ns/client", "10.244.2.20", {"role": "client"}, node="node-b"),
            pod("alice-ns/other", "10.244.2.21", {"role": "other"}, node="node-b"),
            pod("default/client", "10.244.1.20", {"role": "client"}),
            pod("bob-ns/client", "10.244.2.22", {"role": "client"}, node="node-b"),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="a"),
                    "ingress": [
                        {
                            "from": [
                                {"namespaceSelector": labels(user="alice")},
                                {"podSelector": labels(role="client")},
                            ]
                        }
                    ],
                },
            ),
        ],
        [
            allow("alice-ns/client", "default/a"),
            allow("alice-ns/other", "default/a"),
            allow("default/client", "default/a"),
            deny("bob-ns/client", "default/a"),
        ],
    ),
    Scenario(
        "namespaceselector-by-metadata-name-label",
        [
            ns("declared", team="x"),
            A,
            pod("declared/p", "10.244.2.30", node="node-b"),
            pod("undeclared/p", "10.244.2.31", node="node-b"),
            pod("other/p", "10.244.2.32", node="node-b"),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="a"),
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchExpressions": [
                                            {
                                                "key": "kubernetes.io/metadata.name",
                                                "operator": "In",
                                                "values": ["declared", "undeclared"],
                                            }
                                        ]
                                    }
                                }
                            ]
                        }
                    ],
                },
            ),
        ],
        [
            allow("declared/p", "default/a"),
            allow("undeclared/p", "default/a"),
            deny("other/p", "default/a"),
        ],
    ),
    Scenario(
        "undeclared-namespace-has-only-its-name-label",
        [
            A,
            pod("undeclared/p", "10.244.2.31", node="node-b"),
            policy(
                "default/labels",
                {
                    "podSelector": labels(app="a"),
                    "ingress": [{"from": [{"namespaceSelector": labels(team="x")}]}],
                },
            ),
            policy(
                "default/exists",
                {
                    "podSelector": labels(app="a"),
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchExpressions": [
                                            {"key": "team", "operator": "DoesNotExist"}
                                        ]
                                    }
                                }
                            ],
                            "ports": [{"port": 81}],
                        }
                    ],
                },
            ),
        ],
        [deny("undeclared/p", "default/a", 80), allow("undeclared/p", "default/a", 81)],
    ),
    Scenario(
        "empty-namespaceselector-selects-all-namespaces",
        [
            A,
            C,
            pod("undeclared/p", "10.244.2.31", {"app": "p"}, node="node-b"),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="a"),
                    "ingress": [
                        {"from": [{"namespaceSelector": {}, "podSelector": labels(app="c")}]}
                    ],
                },
            ),
        ],
        [
            allow("other/c", "default/a"),
            deny("undeclared/p", "default/a"),
            deny("203.0.113.9", "default/a"),
        ],
    ),
    # --- host-network pods and nodes ---
    Scenario(
        "host-network-pods-are-never-targets",
        [
            C,
            pod("default/agent", labels={"app": "agent"}, host_network=True),
            policy("default/deny-all", DENY_ALL),
        ],
        [allow("other/c", "default/agent"), allow("default/agent", "other/c")],
    ),
    Scenario(
        "host-network-pods-never-match-selectors",
        [
            ns("infra", role="infra"),
            A,
            pod("default/agent-b", labels={"app": "agent"}, node="node-b", host_network=True),
            pod("infra/agent-b", labels={"app": "agent"}, node="node-b", host_network=True),
            pod("default/agent-pod", "10.244.2.50", {"app": "agent"}, node="node-b"),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="a"),
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [
                        {
                            "from": [
                                {"podSelector": labels(app="agent")},
                                {"namespaceSelector": labels(role="infra")},
                            ]
                        }
                    ],
                    "egress": [{"to": [{"namespaceSelector": {}}]}],
                },
            ),
        ],
        [
            allow("default/agent-pod", "default/a"),
            deny("default/agent-b", "default/a"),
            deny("infra/agent-b", "default/a"),
            allow("default/a", "default/agent-pod"),
            deny("default/a", "default/agent-b"),
        ],
    ),
    Scenario(
        "host-network-pods-match-ipblock-of-node-address",
        [
            A,
            pod("default/agent-b", labels={"app": "agent"}, node="node-b", host_network=True),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="a"),
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.2/32"}}]}],
                    "egress": [
                        {
                            "to": [{"ipBlock": {"cidr": "192.168.0.0/24"}}],
                            "ports": [{"port": 10250}],
                        }
                    ],
                },
            ),
        ],
        [
            allow("default/agent-b", "default/a"),
            allow("192.168.0.2", "default/a"),
            allow("default/a", "default/agent-b", 10250),
            deny("default/a", "default/agent-b", 80),
        ],
    ),
    Scenario(
        "own-node-always-allowed-even-when-isolated",
        [
            A,
            pod("default/agent-a", labels={"app": "agent"}, node="node-a", host_network=True),
            pod("default/agent-b", labels={"app": "agent"}, node="node-b", host_network=True),
            policy("default/deny-all", DENY_ALL),
        ],
        [
            allow("default/agent-a", "default/a", 10250),
            allow("default/a", "default/agent-a", 53, "UDP"),
            allow("192.168.0.1", "default/a"),  # node-a's address itself
            allow("default/a", "192.168.0.1"),
            deny("default/agent-b", "default/a"),
            deny("192.168.0.2", "default/a"),
            deny("default/a", "default/agent-b"),
            allow("default/agent-a", "default/agent-b"),  # nothing isolates host-network pods
            allow("default/agent-b", "default/agent-a"),
        ],
    ),
    Scenario(
        "host-network-pod-named-ports-do-not-resolve",
        [
            A,
            pod(
                "default/exporter",
                labels={"app": "exporter"},
                node="node-b",
                host_network=True,
                ports=[("metrics", 9100, "TCP")],
            ),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="a"),
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "metrics"}]}],
                },
            ),
        ],
        [
            # Judged as traffic to the node's address, which declares no ports.
            deny("default/a", "default/exporter", 9100),
            deny("default/a", "192.168.0.2", 9100),
            deny("default/a", "default/exporter", 9101),
        ],
    ),
    # --- pods that take no part ---
    Scenario(
        "pods-without-ip-or-finished-take-no-part",
        [
            A,
            pod("default/pending", labels={"app": "a"}),
            pod("default/done", "10.244.1.90", {"app": "a"}, phase="Succeeded"),
            pod("default/failed", "10.244.1.91", {"app": "a"}, phase="Failed"),
        ],
        [
            deny("default/pending", "default/a"),
            deny("default/a", "default/pending"),
            deny("default/done", "default/a"),
            deny("default/a", "default/done"),
            deny("default/failed", "default/a"),
            deny("default/a", "default/failed"),
            deny("default/done", "default/done"),
        ],
    ),
    Scenario(
        "finished-pod-ip-reused-is-judged-as-the-new-pod",
        [
            A,
            pod("default/old", "10.244.1.95", {"role": "trusted"}, phase="Failed"),
            pod("default/new", "10.244.1.95", {"role": "untrusted"}),
            policy(
                "default/p",
                {
                    "podSelector": labels(app="a"),
                    "ingress": [{"from": [{"podSelector": labels(role="trusted")}]}],
                },
            ),
        ],
        [deny("default/new", "default/a")],
    ),
    Scenario(
        "a-pod-can-always-reach-itself",
        [A, policy("default/deny-all", DENY_ALL)],
        [
            allow("default/a", "default/a", 80),
            allow("default/a", "default/a", 5353, "UDP"),
            allow("default/a", "default/a", 9, "SCTP"),
        ],
    ),
    # --- the examples of kubernetes.io/docs/concepts/services-networking/network-policies ---
    Scenario(
        "docs-default-deny-ingress",
        [A, B, policy("default/default-deny-ingress", DENY_INGRESS)],
        [deny("default/a", "default/b"), allow("default/a", "203.0.113.9")],
    ),
    Scenario(
        "docs-allow-all-ingress",
        [
            A,
            B,
            policy("default/default-deny-ingress", DENY_INGRESS),
            policy(
                "default/allow-all-ingress",
                {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]},
            ),
        ],
        [allow("default/a", "default/b", 1234), allow("203.0.113.9", "default/a", 53, "UDP")],
    ),
    Scenario(
        "docs-default-deny-egress",
        [A, B, policy("default/default-deny-egress", DENY_EGRESS)],
        [
            deny("default/a", "default/b"),
            deny("default/a", "203.0.113.9"),
            allow("203.0.113.9", "default/a"),
        ],
    ),
    Scenario(
        "docs-allow-all-egress",
        [
            A,
            B,
            policy("default/default-deny-egress", DENY_EGRESS),
            policy(
                "default/allow-all-egress",
                {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]},
            ),
        ],
        [allow("default/a", "default/b"), allow("default/a", "203.0.113.9", 443)],
    ),
    Scenario(
        "docs-default-deny-all",
        [A, B, C, policy("default/default-deny-all", DENY_ALL)],
        [
            deny("default/a", "default/b"),
            deny("default/a", "other/c"),
            deny("other/c", "default/a"),
            deny("203.0.113.9", "default/a"),
            allow("other/c", "203.0.113.9"),
        ],
    ),
    Scenario(
        "docs-test-network-policy",
        [
            ns("default"),
            ns("myproject", project="myproject"),
            ns("elsewhere"),
            pod("default/db", "10.244.1.100", {"role": "db"}),
            pod("default/frontend", "10.244.1.101", {"role": "frontend"}),
            pod("default/other", "10.244.1.102", {"role": "other"}),
            pod("myproject/anything", "10.244.2.100", {"whatever": "x"}, node="node-b"),
            pod("elsewhere/frontend", "10.244.2.101", {"role": "frontend"}, node="node-b"),
            policy(
                "default/test-network-policy",
                {
                    "podSelector": labels(role="db"),
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [
                        {
                            "from": [
                                {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                                {"namespaceSelector": labels(project="myproject")},
                                {"podSelector": labels(role="frontend")},
                            ],
                            "ports": [{"protocol": "TCP", "port": 6379}],
                        }
                    ],
                    "egress": [
                        {
                            "to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                            "ports": [{"protocol": "TCP", "port": 5978}],
                        }
                    ],
                },
            ),
        ],
        [
            allow("default/frontend", "default/db", 6379),
            deny("default/frontend", "default/db", 6380),
            deny("default/frontend", "default/db", 6379, "UDP"),
            allow("myproject/anything", "default/db", 6379),
            deny("elsewhere/frontend", "default/db", 6379),
            deny("default/other", "default/db", 6379),
            allow("172.17.0.255", "default/db", 6379),
            deny("172.17.1.0", "default/db", 6379),
            deny("172.17.1.255", "default/db", 6379),
            allow("172.17.2.0", "default/db", 6379),
            allow("172.17.255.255", "default/db", 6379),
            deny("172.18.0.1", "default/db", 6379),
            allow("default/db", "10.0.0.7", 5978),
            deny("default/db", "10.0.0.7", 5979),
            deny("default/db", "10.0.1.7", 5978),
            deny("default/db", "default/frontend", 5978),  # db is isolated for egress
            allow("default/frontend", "default/other", 5978),  # others are untouched
        ],
    ),
]


def _cases() -> list[Any]:
    return [pytest.param(s, p, id=f"{s.name}:{p.id}") for s in SCENARIOS for p in s.probes]


@pytest.fixture(params=[e for _, e in EVALUATORS], ids=[n for n, _ in EVALUATORS])
def evaluator(request: pytest.FixtureRequest) -> Evaluator:
    """Each evaluator under test in turn."""
    return cast(Evaluator, request.param)


@pytest.mark.parametrize(("scenario", "probe"), _cases())
def test_semantics(evaluator: Evaluator, scenario: Scenario, probe: Probe) -> None:
    cluster = build(scenario.docs)
    src = endpoint(cluster, probe.src)
    dst = endpoint(cluster, probe.dst)
    verdict = evaluator(cluster, src, dst, probe.port, probe.protocol, family=probe.family)
    assert verdict is probe.expected


def test_scenario_names_are_unique() -> None:
    names = [s.name for s in SCENARIOS]
    assert len(names) == len(set(names))


def test_every_probe_names_a_pod_of_its_cluster() -> None:
    for scenario in SCENARIOS:
        cluster = build(scenario.docs)
        for probe in scenario.probes:
            for name in (probe.src, probe.dst):
                assert "/" not in name or name in cluster.pods, (scenario.name, name)


# --- the matrix --------------------------------------------------------------------


def test_matrix_covers_active_pods_including_host_network() -> None:
    cluster = build(
        [
            A,
            B,
            pod("default/agent", labels={"app": "agent"}, host_network=True),
            pod("default/pending", labels={"app": "p"}),
            pod("default/done", "10.244.1.90", phase="Succeeded"),
            policy("default/p", {"podSelector": labels(app="a")}),
        ]
    )
    got = reference.matrix(cluster, 80, "TCP")
    keys = ["default/a", "default/agent", "default/b"]
    assert sorted(got) == keys
    assert all(sorted(row) == keys for row in got.values())
    assert got["default/b"]["default/a"] is False
    assert got["default/agent"]["default/a"] is True  # own node
    assert got["default/a"]["default/b"] is True
    assert got["default/a"]["default/a"] is True


def test_matrix_agrees_with_allowed() -> None:
    for scenario in SCENARIOS:
        cluster = build(scenario.docs)
        got = reference.matrix(cluster, 80, "TCP")
        for src in cluster.active_pods():
            for dst in cluster.active_pods():
                assert got[src.key][dst.key] is reference.allowed(cluster, src, dst, 80, "TCP")
