"""ClusterNetworkPolicy and Node parsing (stockade.cnp).

The valid examples are the conformance suite's manifests of network-policy-api
v0.2.0 (``conformance/base/**``), rewritten as small dicts with the test's template
values filled in. Every validation case names the CRD schema keyword or CEL rule it
mirrors. Whatever the input, the parser answers with a value or an
:class:`InvalidObjectError`, never another exception.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.cnp import (
    ACCEPT,
    ADMIN,
    API_VERSION,
    BASELINE,
    DENY,
    KIND,
    PASS,
    ClusterNetworkPolicy,
    NodeInfo,
    ProtocolMatch,
    parse_cluster_network_policy,
    parse_node,
)
from stockade.errors import InvalidObjectError
from stockade.selectors import EVERYTHING, LabelSelector, Requirement

Doc = dict[str, Any]


def cnp(name: str, spec: Doc) -> Doc:
    """A ClusterNetworkPolicy object with ``spec``."""
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def eq(key: str, value: str) -> LabelSelector:
    """The canonical selector ``key=value``."""
    return LabelSelector((Requirement(key, "In", (value,)),))


def house(name: str) -> Doc:
    """``matchLabels: {conformance-house: name}``."""
    return {"matchLabels": {"conformance-house": name}}


def errors_of(obj: Any) -> list[tuple[str, str]]:
    """The (path, message) of every problem; fails if the object parses."""
    with pytest.raises(InvalidObjectError) as info:
        parse_cluster_network_policy(obj)
    return [(e.path, e.message) for e in info.value.errors]


# --- valid: the conformance manifests ----------------------------------------------

NODE_AND_CIDR = cnp(
    "node-and-cidr-as-peers-example",
    {
        "tier": "Admin",
        "priority": 75,
        "subject": {
            "pods": {"namespaceSelector": house("gryffindor"), "podSelector": house("gryffindor")}
        },
        "egress": [
            {
                "name": "allow-egress-to-34346-on-nodes",
                "action": "Accept",
                "to": [{"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}}],
                "protocols": [{"tcp": {"destinationPort": {"number": 34346}}}],
            },
            {
                "name": "pass-egress-to-34348-on-nodes",
                "action": "Pass",
                "to": [{"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}}],
                "protocols": [{"udp": {"destinationPort": {"number": 34348}}}],
            },
            {
                "name": "deny-egress-to-slytherin-and-nodes-and-internet",
                "action": "Deny",
                "to": [
                    {
                        "pods": {
                            "namespaceSelector": house("slytherin"),
                            "podSelector": house("slytherin"),
                        }
                    },
                    {"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}},
                    {"networks": ["0.0.0.0/0", "::/0"]},
                ],
            },
        ],
    },
)

PASS_EXAMPLE = cnp(
    "pass-example",
    {
        "tier": "Admin",
        "priority": 10,
        "subject": {"namespaces": house("gryffindor")},
        "ingress": [
            {
                "name": "deny-all-ingress-from-slytherin",
                "action": "Deny",
                "from": [{"namespaces": house("slytherin")}],
            }
        ],
        "egress": [
            {
                "name": "deny-all-egress-to-slytherin",
                "action": "Deny",
                "to": [{"namespaces": house("slytherin")}],
            }
        ],
    },
)

BASELINE_DEFAULT = cnp(
    "default",
    {
        "tier": "Baseline",
        "priority": 10,
        "subject": {"namespaces": house("gryffindor")},
        "ingress": [
            {
                "name": "deny-all-ingress-from-slytherin",
                "action": "Deny",
                "from": [{"namespaces": house("slytherin")}],
            }
        ],
    },
)

INGRESS_TCP = cnp(
    "ingress-tcp",
    {
        "tier": "Admin",
        "priority": 10,
        "subject": {"namespaces": house("ravenclaw")},
        "ingress": [
            {
                "name": "allow-from-slytherin-at-port-80",
                "action": "Accept",
                "from": [{"namespaces": house("slytherin")}],
                "protocols": [{"tcp": {"destinationPort": {"number": 80}}}],
            },
            {
                "name": "pass-from-hufflepuff-at-port-range",
                "action": "Pass",
                "from": [{"pods": {"namespaceSelector": house("hufflepuff"), "podSelector": {}}}],
                "protocols": [
                    {"tcp": {"destinationPort": {"range": {"start": 1, "end": 8080}}}},
                    {"sctp": {"destinationPort": {"number": 9003}}},
                ],
            },
            {
                "name": "deny-from-gryffindor-at-web",
                "action": "Deny",
                "from": [{"namespaces": house("gryffindor")}],
                "protocols": [{"destinationNamedPort": "web"}],
            },
        ],
    },
)

DOMAIN_NAMES = cnp(
    "allow-domains",
    {
        "tier": "Admin",
        "priority": 1,
        "subject": {"namespaces": {}},
        "egress": [
            {
                "action": "Accept",
                "to": [{"domainNames": ["kubernetes.io", "*.kubernetes.io", "example.com."]}],
                "protocols": [{"tcp": {"destinationPort": {"number": 443}}}],
            }
        ],
    },
)


def test_node_and_cidr_example() -> None:
    got = parse_cluster_network_policy(NODE_AND_CIDR)
    assert got.name == "node-and-cidr-as-peers-example"
    assert (got.tier, got.priority, got.ingress) == (ADMIN, 75, ())
    assert got.subject.namespaces is None
    assert got.subject.pods is not None
    assert got.subject.pods.namespace_selector == eq("conformance-house", "gryffindor")
    assert [r.action for r in got.egress] == [ACCEPT, PASS, DENY]
    assert [r.name for r in got.egress] == [
        "allow-egress-to-34346-on-nodes",
        "pass-egress-to-34348-on-nodes",
        "deny-egress-to-slytherin-and-nodes-and-internet",
    ]
    first = got.egress[0]
    assert first.peers[0].nodes == eq("kubernetes.io/os", "linux")
    assert first.peers[0].field == "nodes"
    assert first.protocols == (ProtocolMatch("TCP", 34346, 34346),)
    assert got.egress[1].protocols == (ProtocolMatch("UDP", 34348, 34348),)
    last = got.egress[2]
    assert [p.field for p in last.peers] == ["pods", "nodes", "networks"]
    assert last.peers[2].networks == (
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    )
    assert last.protocols == ()
    assert not any(r.unsupported for r in got.egress)


def test_pass_and_baseline_examples() -> None:
    admin = parse_cluster_network_policy(PASS_EXAMPLE)
    assert admin.subject.namespaces == eq("conformance-house", "gryffindor")
    assert admin.subject.pods is None
    assert admin.ingress[0].peers[0].namespaces == eq("conformance-house", "slytherin")
    assert admin.egress[0].action == DENY
    base = parse_cluster_network_policy(BASELINE_DEFAULT)
    assert (base.tier, base.priority, base.egress) == (BASELINE, 10, ())
    assert base.key == "default"


def test_ingress_ports_example() -> None:
    got = parse_cluster_network_policy(INGRESS_TCP)
    assert got.ingress[0].protocols == (ProtocolMatch("TCP", 80, 80),)
    assert got.ingress[1].protocols == (
        ProtocolMatch("TCP", 1, 8080),
        ProtocolMatch("SCTP", 9003, 9003),
    )
    pods = got.ingress[1].peers[0].pods
    assert pods is not None
    assert pods.pod_selector == EVERYTHING
    assert got.ingress[2].protocols == (ProtocolMatch(named_port="web"),)


def test_domain_names_are_accepted_and_marked_unsupported() -> None:
    got = parse_cluster_network_policy(DOMAIN_NAMES)
    rule = got.egress[0]
    assert rule.peers[0].domain_names == ("kubernetes.io", "*.kubernetes.io", "example.com.")
    assert rule.peers[0].field == "domainNames"
    assert rule.unsupported
    assert got.subject.namespaces == EVERYTHING


def test_minimal_policy_without_rules() -> None:
    got = parse_cluster_network_policy(
        {
            "metadata": {"name": "x"},
            "spec": {"tier": "Baseline", "priority": 0, "subject": {"namespaces": {}}},
        }
    )
    assert got == ClusterNetworkPolicy("x", BASELINE, 0, got.subject)
    assert got.ingress == got.egress == ()


def test_model_is_immutable() -> None:
    got = parse_cluster_network_policy(PASS_EXAMPLE)
    with pytest.raises(AttributeError):
        got.priority = 5  # type: ignore[misc]


def test_namespace_in_metadata_is_ignored() -> None:
    doc = copy.deepcopy(PASS_EXAMPLE)
    doc["metadata"]["namespace"] = "whatever"
    assert parse_cluster_network_policy(doc).name == "pass-example"


def test_bounds_are_inclusive() -> None:
    spec: Doc = {
        "tier": "Admin",
        "priority": 1000,
        "subject": {"namespaces": {}},
        "egress": [
            {
                "name": "n" * 100,
                "action": "Deny",
                "to": [{"networks": [f"10.0.{i}.0/24" for i in range(25)]}] * 25,
                "protocols": [
                    {"udp": {"destinationPort": {"range": {"start": 65534, "end": 65535}}}}
                ]
                * 25,
            }
        ]
        * 25,
    }
    got = parse_cluster_network_policy(cnp("max", spec))
    assert got.priority == 1000
    assert len(got.egress) == 25
    assert len(got.egress[0].peers) == 25
    assert len(got.egress[0].peers[0].networks) == 25
    assert got.egress[0].protocols[0] == ProtocolMatch("UDP", 65534, 65535)


def test_cidr_host_bits_are_masked_and_families_kept() -> None:
    doc = cnp(
        "cidrs",
        {
            "tier": "Admin",
            "priority": 1,
            "subject": {"namespaces": {}},
            "egress": [
                {
                    "action": "Deny",
                    "to": [
                        {
                            "networks": [
                                "10.1.2.3/8",
                                "fd00::1/64",
                                "192.0.2.7/32",
                                "::/0",
                                "0000:0000:0000:0000:0000:0000:0000:0001/128",
                            ]
                        }
                    ],
                }
            ],
        },
    )
    nets = parse_cluster_network_policy(doc).egress[0].peers[0].networks
    assert [str(n) for n in nets] == ["10.0.0.0/8", "fd00::/64", "192.0.2.7/32", "::/0", "::1/128"]


# --- invalid: one case per rule ----------------------------------------------------


def base() -> Doc:
    """A valid policy with one ingress and one egress rule, to be broken by a case."""
    return cnp(
        "base",
        {
            "tier": "Admin",
            "priority": 5,
            "subject": {"namespaces": {}},
            "ingress": [{"action": "Accept", "from": [{"namespaces": {}}]}],
            "egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}]}],
        },
    )


Mutation = Callable[[Doc], None]


def setter(path: str, value: Any) -> Mutation:
    """A mutation that sets the dotted ``path`` (list indexes as numbers) to ``value``."""

    def mutate(doc: Doc) -> None:
        parts = path.split(".")
        node: Any = doc
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def deleter(path: str) -> Mutation:
    """A mutation that removes the dotted ``path``."""

    def mutate(doc: Doc) -> None:
        parts = path.split(".")
        node: Any = doc
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[parts[-1]]

    return mutate


E0 = "spec.egress.0"
I0 = "spec.ingress.0"
CASES: list[tuple[str, Mutation, str, str]] = [
    # (case id, mutation, expected path, expected message fragment)
    (
        "apiVersion",
        setter("apiVersion", "policy.networking.k8s.io/v1alpha1"),
        "apiVersion",
        "expected policy.networking.k8s.io/v1alpha2",
    ),
    ("apiVersion-anp", setter("apiVersion", "networking.k8s.io/v1"), "apiVersion", "unsupported"),
    ("kind", setter("kind", "AdminNetworkPolicy"), "kind", "must be ClusterNetworkPolicy"),
    ("metadata", deleter("metadata"), "metadata", "required"),
    ("name-missing", setter("metadata", {}), "metadata.name", "required"),
    ("name-invalid", setter("metadata.name", "Bad_Name"), "metadata.name", "DNS-1123 subdomain"),
    ("spec-missing", deleter("spec"), "spec", "required"),
    ("spec-list", setter("spec", []), "spec", "required, an object"),
    ("spec-unknown", setter("spec.policyTypes", ["Ingress"]), "spec.policyTypes", "unknown field"),
    # tier: required, enum Admin | Baseline
    ("tier-missing", deleter("spec.tier"), "spec.tier", "required"),
    ("tier-enum", setter("spec.tier", "Developer"), "spec.tier", "must be Admin or Baseline"),
    ("tier-case", setter("spec.tier", "admin"), "spec.tier", "must be Admin or Baseline"),
    ("tier-yaml-bool", setter("spec.tier", True), "spec.tier", "YAML reads unquoted"),
    ("tier-number", setter("spec.tier", 1), "spec.tier", "must be a string"),
    # priority: required, int32 0..1000
    ("priority-missing", deleter("spec.priority"), "spec.priority", "required"),
    ("priority-low", setter("spec.priority", -1), "spec.priority", "between 0 and 1000"),
    ("priority-high", setter("spec.priority", 1001), "spec.priority", "between 0 and 1000"),
    ("priority-string", setter("spec.priority", "5"), "spec.priority", "must be an integer"),
    ("priority-bool", setter("spec.priority", True), "spec.priority", "must be an integer"),
    ("priority-float", setter("spec.priority", 5.5), "spec.priority", "must be an integer"),
    ("priority-huge", setter("spec.priority", 10**40), "spec.priority", "between 0 and 1000"),
    # subject: required, min/maxProperties 1
    ("subject-missing", deleter("spec.subject"), "spec.subject", "required"),
    ("subject-empty", setter("spec.subject", {}), "spec.subject", "exactly one"),
    (
        "subject-null-only",
        setter("spec.subject", {"namespaces": None}),
        "spec.subject",
        "exactly one",
    ),
    (
        "subject-both",
        setter("spec.subject", {"namespaces": {}, "pods": {"podSelector": {}}}),
        "spec.subject",
        "exactly one",
    ),
    ("subject-string", setter("spec.subject", "all"), "spec.subject", "must be an object"),
    ("subject-unknown", setter("spec.subject.nodes", {}), "spec.subject.nodes", "unknown field"),
    (
        "subject-ns-list",
        setter("spec.subject.namespaces", []),
        "spec.subject.namespaces",
        "label selector",
    ),
    (
        "subject-ns-bad-label",
        setter("spec.subject.namespaces", {"matchLabels": {"a": "b c"}}),
        "spec.subject.namespaces.matchLabels.a",
        "value",
    ),
    (
        "subject-pods-no-podselector",
        setter("spec.subject", {"pods": {"namespaceSelector": {}}}),
        "spec.subject.pods.podSelector",
        "required",
    ),
    (
        "subject-pods-null-podselector",
        setter("spec.subject", {"pods": {"podSelector": None}}),
        "spec.subject.pods.podSelector",
        "required",
    ),
    (
        "subject-pods-unknown",
        setter("spec.subject", {"pods": {"podSelector": {}, "nodeSelector": {}}}),
        "spec.subject.pods.nodeSelector",
        "unknown field",
    ),
    (
        "subject-pods-bad-op",
        setter(
            "spec.subject",
            {"pods": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}},
        ),
        "spec.subject.pods.podSelector.matchExpressions[0].operator",
        "unknown operator",
    ),
    # ingress / egress: lists of at most 25 rules
    ("ingress-map", setter("spec.ingress", {"action": "Deny"}), "spec.ingress", "must be a list"),
    (
        "egress-26",
        setter("spec.egress", [{"action": "Deny", "to": [{"namespaces": {}}]}] * 26),
        "spec.egress",
        "at most 25",
    ),
    (
        "ingress-26",
        setter("spec.ingress", [{"action": "Deny", "from": [{"namespaces": {}}]}] * 26),
        "spec.ingress",
        "at most 25",
    ),
    ("rule-string", setter("spec.ingress.0", "deny"), "spec.ingress[0]", "must be an object"),
    ("rule-null", setter("spec.ingress.0", None), "spec.ingress[0]", "must be an object"),
    # rule fields
    (
        "ingress-rule-to",
        setter(f"{I0}.to", [{"namespaces": {}}]),
        "spec.ingress[0].to",
        "unknown field",
    ),
    (
        "egress-rule-from",
        setter(f"{E0}.from", [{"namespaces": {}}]),
        "spec.egress[0].from",
        "unknown field",
    ),
    ("rule-ports", setter(f"{E0}.ports", [{"port": 80}]), "spec.egress[0].ports", "unknown field"),
    ("name-long", setter(f"{E0}.name", "n" * 101), "spec.egress[0].name", "at most 100"),
    ("name-number", setter(f"{E0}.name", 7), "spec.egress[0].name", "must be a string"),
    ("action-missing", deleter(f"{I0}.action"), "spec.ingress[0].action", "required"),
    (
        "action-allow",
        setter(f"{I0}.action", "Allow"),
        "spec.ingress[0].action",
        "Accept, Deny or Pass",
    ),
    (
        "action-case",
        setter(f"{I0}.action", "deny"),
        "spec.ingress[0].action",
        "Accept, Deny or Pass",
    ),
    (
        "action-yaml-bool",
        setter(f"{I0}.action", False),
        "spec.ingress[0].action",
        "YAML reads unquoted",
    ),
    ("from-missing", deleter(f"{I0}.from"), "spec.ingress[0].from", "required"),
    ("to-null", setter(f"{E0}.to", None), "spec.egress[0].to", "required"),
    ("to-empty", setter(f"{E0}.to", []), "spec.egress[0].to", "at least 1"),
    ("to-26", setter(f"{E0}.to", [{"namespaces": {}}] * 26), "spec.egress[0].to", "at most 25"),
    (
        "from-map",
        setter(f"{I0}.from", {"namespaces": {}}),
        "spec.ingress[0].from",
        "must be a list",
    ),
    ("protocols-empty", setter(f"{E0}.protocols", []), "spec.egress[0].protocols", "at least 1"),
    (
        "protocols-26",
        setter(f"{E0}.protocols", [{"tcp": {"destinationPort": {"number": 1}}}] * 26),
        "spec.egress[0].protocols",
        "at most 25",
    ),
    (
        "protocols-map",
        setter(f"{E0}.protocols", {"tcp": {}}),
        "spec.egress[0].protocols",
        "must be a list",
    ),
    # peers: exactly one field, per direction
    ("peer-empty", setter(f"{E0}.to.0", {}), "spec.egress[0].to[0]", "exactly one"),
    (
        "peer-null-fields",
        setter(f"{E0}.to.0", {"networks": None, "nodes": None}),
        "spec.egress[0].to[0]",
        "exactly one",
    ),
    (
        "peer-two",
        setter(f"{E0}.to.0", {"namespaces": {}, "networks": ["10.0.0.0/8"]}),
        "spec.egress[0].to[0]",
        "exactly one",
    ),
    (
        "peer-string",
        setter(f"{E0}.to.0", "10.0.0.0/8"),
        "spec.egress[0].to[0]",
        "must be an object",
    ),
    (
        "ingress-networks",
        setter(f"{I0}.from.0", {"networks": ["10.0.0.0/8"]}),
        "spec.ingress[0].from[0].networks",
        "not allowed in an ingress peer",
    ),
    (
        "ingress-nodes",
        setter(f"{I0}.from.0", {"nodes": {}}),
        "spec.ingress[0].from[0].nodes",
        "not allowed in an ingress peer",
    ),
    (
        "ingress-domains",
        setter(f"{I0}.from.0", {"domainNames": ["a.io"]}),
        "spec.ingress[0].from[0].domainNames",
        "not allowed in an ingress peer",
    ),
    (
        "peer-unknown",
        setter(f"{E0}.to.0", {"ipBlock": {"cidr": "10.0.0.0/8"}}),
        "spec.egress[0].to[0].ipBlock",
        "unknown field",
    ),
    (
        "peer-pods-no-podselector",
        setter(f"{E0}.to.0", {"pods": {"namespaceSelector": {}}}),
        "spec.egress[0].to[0].pods.podSelector",
        "required",
    ),
    (
        "peer-nodes-list",
        setter(f"{E0}.to.0", {"nodes": ["n1"]}),
        "spec.egress[0].to[0].nodes",
        "label selector",
    ),
    (
        "peer-nodes-bad-key",
        setter(f"{E0}.to.0", {"nodes": {"matchLabels": {"-bad": "x"}}}),
        "spec.egress[0].to[0].nodes.matchLabels.-bad",
        "key",
    ),
    # networks: 1..25 CIDRs, listType=set, maxLength 43, isCIDR
    (
        "networks-empty",
        setter(f"{E0}.to.0.networks", []),
        "spec.egress[0].to[0].networks",
        "at least 1",
    ),
    (
        "networks-26",
        setter(f"{E0}.to.0.networks", [f"10.0.{i}.0/24" for i in range(26)]),
        "spec.egress[0].to[0].networks",
        "at most 25",
    ),
    (
        "networks-string",
        setter(f"{E0}.to.0.networks", "10.0.0.0/8"),
        "spec.egress[0].to[0].networks",
        "must be a list",
    ),
    (
        "cidr-duplicate",
        setter(f"{E0}.to.0.networks", ["10.0.0.0/8", "10.0.0.0/8"]),
        "spec.egress[0].to[0].networks[1]",
        "duplicate",
    ),
    (
        "cidr-no-prefix",
        setter(f"{E0}.to.0.networks", ["10.0.0.1"]),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR format",
    ),
    (
        "cidr-garbage",
        setter(f"{E0}.to.0.networks", ["ten/8"]),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR format",
    ),
    (
        "cidr-prefix-too-long",
        setter(f"{E0}.to.0.networks", ["10.0.0.0/33"]),
        "spec.egress[0].to[0].networks[0]",
        "more than 32",
    ),
    (
        "cidr6-prefix-too-long",
        setter(f"{E0}.to.0.networks", ["fd00::/129"]),
        "spec.egress[0].to[0].networks[0]",
        "more than 128",
    ),
    (
        "cidr-leading-zero-prefix",
        setter(f"{E0}.to.0.networks", ["10.0.0.0/08"]),
        "spec.egress[0].to[0].networks[0]",
        "leading zeros",
    ),
    (
        "cidr-netmask",
        setter(f"{E0}.to.0.networks", ["10.0.0.0/255.0.0.0"]),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR format",
    ),
    (
        "cidr-signed-prefix",
        setter(f"{E0}.to.0.networks", ["10.0.0.0/+8"]),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR format",
    ),
    (
        "cidr-non-ascii-digit",
        setter(f"{E0}.to.0.networks", ["10.0.0.0/\u0668"]),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR format",
    ),
    (
        "cidr-leading-zero-octet",
        setter(f"{E0}.to.0.networks", ["010.0.0.0/8"]),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR format",
    ),
    (
        "cidr-zone",
        setter(f"{E0}.to.0.networks", ["fe80::1%eth0/64"]),
        "spec.egress[0].to[0].networks[0]",
        "zone",
    ),
    (
        "cidr-space",
        setter(f"{E0}.to.0.networks", [" 10.0.0.0/8"]),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR format",
    ),
    (
        "cidr-trailing-space",
        setter(f"{E0}.to.0.networks", ["10.0.0.0/8 "]),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR format",
    ),
    (
        "cidr-too-long",
        setter(f"{E0}.to.0.networks", ["0000:0000:0000:0000:0000:ffff:192.168.100.200/128"]),
        "spec.egress[0].to[0].networks[0]",
        "at most 43",
    ),
    (
        "cidr-number",
        setter(f"{E0}.to.0.networks", [10]),
        "spec.egress[0].to[0].networks[0]",
        "must be a CIDR string",
    ),
    (
        "cidr-null",
        setter(f"{E0}.to.0.networks", [None]),
        "spec.egress[0].to[0].networks[0]",
        "must be a CIDR string",
    ),
    # domainNames: 1..25, pattern, listType=set
    (
        "domains-empty",
        setter(f"{E0}.to.0", {"domainNames": []}),
        "spec.egress[0].to[0].domainNames",
        "at least 1",
    ),
    (
        "domains-26",
        setter(f"{E0}.to.0", {"domainNames": [f"d{i}.io" for i in range(26)]}),
        "spec.egress[0].to[0].domainNames",
        "at most 25",
    ),
    (
        "domain-single-label",
        setter(f"{E0}.to.0", {"domainNames": ["localhost"]}),
        "spec.egress[0].to[0].domainNames[0]",
        "not a domain name",
    ),
    (
        "domain-partial-wildcard",
        setter(f"{E0}.to.0", {"domainNames": ["*kubernetes.io"]}),
        "spec.egress[0].to[0].domainNames[0]",
        "not a domain name",
    ),
    (
        "domain-inner-wildcard",
        setter(f"{E0}.to.0", {"domainNames": ["www.*.io"]}),
        "spec.egress[0].to[0].domainNames[0]",
        "not a domain name",
    ),
    (
        "domain-url",
        setter(f"{E0}.to.0", {"domainNames": ["https://kubernetes.io"]}),
        "spec.egress[0].to[0].domainNames[0]",
        "not a domain name",
    ),
    (
        "domain-duplicate",
        setter(f"{E0}.to.0", {"domainNames": ["a.io", "a.io"]}),
        "spec.egress[0].to[0].domainNames[1]",
        "duplicate",
    ),
    (
        "domain-number",
        setter(f"{E0}.to.0", {"domainNames": [1]}),
        "spec.egress[0].to[0].domainNames[0]",
        "must be a string",
    ),
    # protocols: exactly one of tcp/udp/sctp/destinationNamedPort
    (
        "protocol-empty",
        setter(f"{E0}.protocols", [{}]),
        "spec.egress[0].protocols[0]",
        "exactly one",
    ),
    (
        "protocol-two",
        setter(
            f"{E0}.protocols",
            [
                {
                    "tcp": {"destinationPort": {"number": 1}},
                    "udp": {"destinationPort": {"number": 1}},
                }
            ],
        ),
        "spec.egress[0].protocols[0]",
        "exactly one",
    ),
    (
        "protocol-unknown",
        setter(f"{E0}.protocols", [{"icmp": {}}]),
        "spec.egress[0].protocols[0].icmp",
        "unknown field",
    ),
    (
        "protocol-upper",
        setter(f"{E0}.protocols", [{"TCP": {"destinationPort": {"number": 1}}}]),
        "spec.egress[0].protocols[0].TCP",
        "unknown field",
    ),
    (
        "protocol-string",
        setter(f"{E0}.protocols", ["TCP"]),
        "spec.egress[0].protocols[0]",
        "must be an object",
    ),
    (
        "tcp-empty",
        setter(f"{E0}.protocols", [{"tcp": {}}]),
        "spec.egress[0].protocols[0].tcp.destinationPort",
        "required",
    ),
    (
        "tcp-number",
        setter(f"{E0}.protocols", [{"tcp": 80}]),
        "spec.egress[0].protocols[0].tcp",
        "must be an object",
    ),
    (
        "tcp-unknown",
        setter(
            f"{E0}.protocols",
            [{"tcp": {"destinationPort": {"number": 1}, "sourcePort": {"number": 1}}}],
        ),
        "spec.egress[0].protocols[0].tcp.sourcePort",
        "unknown field",
    ),
    (
        "port-empty",
        setter(f"{E0}.protocols", [{"udp": {"destinationPort": {}}}]),
        "spec.egress[0].protocols[0].udp.destinationPort",
        "exactly one",
    ),
    (
        "port-both",
        setter(
            f"{E0}.protocols",
            [{"udp": {"destinationPort": {"number": 5, "range": {"start": 1, "end": 9}}}}],
        ),
        "spec.egress[0].protocols[0].udp.destinationPort",
        "exactly one",
    ),
    (
        "port-zero",
        setter(f"{E0}.protocols", [{"sctp": {"destinationPort": {"number": 0}}}]),
        "spec.egress[0].protocols[0].sctp.destinationPort.number",
        "between 1 and 65535",
    ),
    (
        "port-high",
        setter(f"{E0}.protocols", [{"sctp": {"destinationPort": {"number": 65536}}}]),
        "spec.egress[0].protocols[0].sctp.destinationPort.number",
        "between 1 and 65535",
    ),
    (
        "port-string",
        setter(f"{E0}.protocols", [{"tcp": {"destinationPort": {"number": "80"}}}]),
        "spec.egress[0].protocols[0].tcp.destinationPort.number",
        "must be an integer",
    ),
    (
        "port-bool",
        setter(f"{E0}.protocols", [{"tcp": {"destinationPort": {"number": True}}}]),
        "spec.egress[0].protocols[0].tcp.destinationPort.number",
        "must be an integer",
    ),
    (
        "port-named-in-number",
        setter(f"{E0}.protocols", [{"tcp": {"destinationPort": {"number": "http"}}}]),
        "spec.egress[0].protocols[0].tcp.destinationPort.number",
        "must be an integer",
    ),
    (
        "range-equal",
        setter(
            f"{E0}.protocols", [{"tcp": {"destinationPort": {"range": {"start": 80, "end": 80}}}}]
        ),
        "spec.egress[0].protocols[0].tcp.destinationPort.range",
        "Start port must be less than End port",
    ),
    (
        "range-reversed",
        setter(
            f"{E0}.protocols", [{"tcp": {"destinationPort": {"range": {"start": 90, "end": 80}}}}]
        ),
        "spec.egress[0].protocols[0].tcp.destinationPort.range",
        "Start port must be less than End port",
    ),
    (
        "range-no-end",
        setter(f"{E0}.protocols", [{"tcp": {"destinationPort": {"range": {"start": 80}}}}]),
        "spec.egress[0].protocols[0].tcp.destinationPort.range.end",
        "required",
    ),
    (
        "range-no-start",
        setter(f"{E0}.protocols", [{"tcp": {"destinationPort": {"range": {"end": 80}}}}]),
        "spec.egress[0].protocols[0].tcp.destinationPort.range.start",
        "required",
    ),
    (
        "range-start-zero",
        setter(
            f"{E0}.protocols", [{"tcp": {"destinationPort": {"range": {"start": 0, "end": 80}}}}]
        ),
        "spec.egress[0].protocols[0].tcp.destinationPort.range.start",
        "between 1 and 65535",
    ),
    (
        "range-end-high",
        setter(
            f"{E0}.protocols", [{"tcp": {"destinationPort": {"range": {"start": 1, "end": 70000}}}}]
        ),
        "spec.egress[0].protocols[0].tcp.destinationPort.range.end",
        "between 1 and 65535",
    ),
    (
        "range-unknown",
        setter(
            f"{E0}.protocols",
            [{"tcp": {"destinationPort": {"range": {"start": 1, "end": 5, "step": 2}}}}],
        ),
        "spec.egress[0].protocols[0].tcp.destinationPort.range.step",
        "unknown field",
    ),
    (
        "range-list",
        setter(f"{E0}.protocols", [{"tcp": {"destinationPort": {"range": [1, 5]}}}]),
        "spec.egress[0].protocols[0].tcp.destinationPort.range",
        "must be an object",
    ),
    (
        "named-port-empty",
        setter(f"{I0}.protocols", [{"destinationNamedPort": ""}]),
        "spec.ingress[0].protocols[0].destinationNamedPort",
        "must not be empty",
    ),
    (
        "named-port-number",
        setter(f"{I0}.protocols", [{"destinationNamedPort": 80}]),
        "spec.ingress[0].protocols[0].destinationNamedPort",
        "must be a string",
    ),
    # CEL on the egress rule: no named port with networks/nodes/domainNames peers
    (
        "cel-named-port-networks",
        setter(f"{E0}.protocols", [{"destinationNamedPort": "web"}]),
        "spec.egress[0]",
        "cannot be set with namedPorts",
    ),
]


@pytest.mark.parametrize(
    ("mutation", "path", "fragment"),
    [pytest.param(m, p, f, id=i) for i, m, p, f in CASES],
)
def test_invalid(mutation: Mutation, path: str, fragment: str) -> None:
    doc = base()
    mutation(doc)
    problems = errors_of(doc)
    assert any(p == path and fragment in m for p, m in problems), problems


@pytest.mark.parametrize(
    "peer",
    [
        {"nodes": {}},
        {"networks": ["0.0.0.0/0"]},
        {"domainNames": ["kubernetes.io"]},
    ],
)
def test_cel_named_port_with_any_address_peer(peer: Doc) -> None:
    doc = base()
    doc["spec"]["egress"][0] = {
        "action": "Accept",
        "to": [{"namespaces": {}}, peer],
        "protocols": [
            {"tcp": {"destinationPort": {"number": 80}}},
            {"destinationNamedPort": "web"},
        ],
    }
    assert any(p == "spec.egress[0]" for p, _ in errors_of(doc))


def test_named_port_with_pod_peers_is_valid() -> None:
    doc = base()
    doc["spec"]["egress"][0] = {
        "action": "Accept",
        "to": [{"namespaces": {}}, {"pods": {"podSelector": {}}}],
        "protocols": [{"destinationNamedPort": "web"}],
    }
    got = parse_cluster_network_policy(doc)
    assert got.egress[0].protocols == (ProtocolMatch(named_port="web"),)


def test_named_port_is_any_string() -> None:
    # The CRD does not check the name; one no container port can have matches nothing.
    doc = base()
    doc["spec"]["ingress"][0]["protocols"] = [{"destinationNamedPort": "Not A Port Name"}]
    assert parse_cluster_network_policy(doc).ingress[0].protocols[0].named_port == "Not A Port Name"


def test_every_problem_is_listed() -> None:
    doc = base()
    doc["spec"]["tier"] = "admin"
    doc["spec"]["priority"] = 2000
    doc["spec"]["ingress"][0]["action"] = "Allow"
    doc["spec"]["egress"][0]["to"][0]["networks"] = ["10.0.0.0/8", "bad", "fd00::/200"]
    paths = [p for p, _ in errors_of(doc)]
    assert paths == [
        "spec.tier",
        "spec.priority",
        "spec.ingress[0].action",
        "spec.egress[0].to[0].networks[1]",
        "spec.egress[0].to[0].networks[2]",
    ]


def test_error_names_the_object_and_source() -> None:
    doc = base()
    doc["spec"]["tier"] = "x"
    with pytest.raises(InvalidObjectError) as info:
        parse_cluster_network_policy(doc, source="cnp.yaml")
    assert info.value.lines() == [
        "cnp.yaml: ClusterNetworkPolicy base: spec.tier: must be Admin or Baseline, got 'x'"
    ]


def test_missing_kind_and_api_version_are_tolerated() -> None:
    doc = base()
    del doc["kind"]
    del doc["apiVersion"]
    assert parse_cluster_network_policy(doc).name == "base"


# --- hostile input -----------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        "ClusterNetworkPolicy",
        42,
        {},
        {"metadata": "x", "spec": "y"},
        {"metadata": {"name": ["x"]}, "spec": {"tier": ["Admin"], "priority": {}, "subject": []}},
        {"metadata": {"name": "x"}, "spec": {"tier": "Admin", "priority": 1, "subject": {1: 2}}},
        {"metadata": {"name": "x", "labels": {True: None}}, "spec": {1: 2, None: 3}},
        {"metadata": {"name": "x"}, "spec": {"egress": [[[]]], "ingress": [{"from": [[]]}]}},
        {
            "metadata": {"name": "x"},
            "spec": {"egress": [{"to": [{None: 1}], "protocols": [{7: 1}]}]},
        },
        {"metadata": {"name": "\x1b[31mred"}, "spec": {"tier": "\u202eAdmin"}},
    ],
)
def test_hostile_shapes_give_errors(obj: Any) -> None:
    with pytest.raises(InvalidObjectError) as info:
        parse_cluster_network_policy(obj)
    for line in info.value.lines():
        assert "\x1b" not in line
        assert "\u202e" not in line


def test_huge_lists_are_refused_in_one_error() -> None:
    doc = base()
    doc["spec"]["egress"] = [{"action": "Deny", "to": "x"}] * 100_000
    doc["spec"]["ingress"][0]["from"] = [{}] * 100_000
    problems = errors_of(doc)
    assert problems == [
        ("spec.ingress[0].from", "must have at most 25 items, got 100000"),
        ("spec.egress", "must have at most 25 items, got 100000"),
    ]


def test_huge_strings_are_cut_in_messages() -> None:
    doc = base()
    doc["spec"]["tier"] = "A" * 1_000_000
    doc["spec"]["egress"][0]["to"][0]["networks"] = ["1" * 1_000_000]
    for _, message in errors_of(doc):
        assert len(message) < 300


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.sampled_from(
        ["Admin", "Baseline", "Accept", "Deny", "Pass", "10.0.0.0/8", "::/0", "web", "a.io", "yes"]
    )
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "tier",
                    "priority",
                    "subject",
                    "ingress",
                    "egress",
                    "namespaces",
                    "pods",
                    "podSelector",
                    "namespaceSelector",
                    "action",
                    "from",
                    "to",
                    "name",
                    "protocols",
                    "networks",
                    "nodes",
                    "domainNames",
                    "tcp",
                    "udp",
                    "destinationPort",
                    "destinationNamedPort",
                    "number",
                    "range",
                    "start",
                    "end",
                    "matchLabels",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(spec=JSON)
def test_random_specs_never_raise_anything_else(spec: Any) -> None:
    try:
        got = parse_cluster_network_policy({"metadata": {"name": "fuzz"}, "spec": spec})
    except InvalidObjectError:
        return
    assert isinstance(got, ClusterNetworkPolicy)


# --- Node ----------------------------------------------------------------------------


def node_doc(addresses: Any, labels: Doc | None = None) -> Doc:
    """A Node named n1 with ``status.addresses``."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "labels": labels or {"kubernetes.io/os": "linux"}},
        "status": {"addresses": addresses},
    }


def test_parse_node_keeps_ip_addresses() -> None:
    got = parse_node(
        node_doc(
            [
                {"type": "InternalIP", "address": "192.168.0.1"},
                {"type": "InternalIP", "address": "fd01::1"},
                {"type": "ExternalIP", "address": "203.0.113.1"},
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalDNS", "address": "n1.cluster.internal"},
                {"type": "Hostname", "address": "10.9.9.9"},
                {"type": "ExternalIP", "address": "192.168.0.1"},
            ]
        )
    )
    assert got == NodeInfo("n1", got.labels, ("192.168.0.1", "fd01::1", "203.0.113.1", "10.9.9.9"))
    assert dict(got.labels) == {"kubernetes.io/os": "linux"}


def test_parse_node_without_status() -> None:
    got = parse_node({"kind": "Node", "metadata": {"name": "n2"}})
    assert (got.name, got.addresses, dict(got.labels)) == ("n2", (), {})


def test_parse_node_canonicalises_ipv6() -> None:
    got = parse_node(node_doc([{"type": "InternalIP", "address": "FD01:0::1"}]))
    assert got.addresses == ("fd01::1",)


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (
            node_doc([{"type": "InternalIP", "address": "192.168.0.300"}]),
            "status.addresses[0].address",
        ),
        (
            node_doc([{"type": "ExternalIP", "address": "fe80::1%eth0"}]),
            "status.addresses[0].address",
        ),
        (node_doc([{"type": "InternalIP", "address": 7}]), "status.addresses[0].address"),
        (node_doc([{"type": True, "address": "1.2.3.4"}]), "status.addresses[0].type"),
        (node_doc(["1.2.3.4"]), "status.addresses[0]"),
        (node_doc({"InternalIP": "1.2.3.4"}), "status.addresses"),
        (node_doc([], labels={"a": "b c"}), "metadata.labels.a"),
        ({"kind": "Node", "metadata": {"name": "N1"}}, "metadata.name"),
        ({"kind": "Pod", "metadata": {"name": "n1"}}, "kind"),
        ({"apiVersion": "v2", "kind": "Node", "metadata": {"name": "n1"}}, "apiVersion"),
        ({"kind": "Node", "metadata": {"name": "n1"}, "status": []}, "status"),
        ([], "<object>"),
    ],
)
def test_parse_node_invalid(doc: Any, path: str) -> None:
    with pytest.raises(InvalidObjectError) as info:
        parse_node(doc)
    assert path in [e.path for e in info.value.errors]
