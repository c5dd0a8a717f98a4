"""Validation of NetworkPolicies: every problem reported, at its field path, specifically.

A policy with any problem is rejected whole (it enforces nothing, so it can never
widen what the valid policies allow); these tests pin the path and the wording of
each problem, and that all of them are reported at once.
"""

from __future__ import annotations

from typing import Any

import pytest

from stockade.cluster import parse_documents
from stockade.errors import FieldError, InvalidObjectError
from stockade.model import NetworkPolicy, Pod, parse_object, parse_policy

Doc = dict[str, Any]


def np(spec: Any) -> Doc:
    """A NetworkPolicy default/np with ``spec``."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": "default", "name": "np"},
        "spec": spec,
    }


def ingress_from(*peers: Doc) -> Doc:
    """A spec selecting all pods with one ingress rule from ``peers``."""
    return {"podSelector": {}, "ingress": [{"from": list(peers)}]}


def ingress_ports(*ports: Doc) -> Doc:
    """A spec selecting all pods with one ingress rule on ``ports``."""
    return {"podSelector": {}, "ingress": [{"ports": list(ports)}]}


def selecting(*exprs: Doc) -> Doc:
    """A spec whose podSelector has ``exprs`` as matchExpressions."""
    return {"podSelector": {"matchExpressions": list(exprs)}}


def problems(spec: Any) -> tuple[FieldError, ...]:
    """The errors that parsing a policy with ``spec`` raises (it must raise)."""
    with pytest.raises(InvalidObjectError) as info:
        parse_policy(np(spec))
    return info.value.errors


BLOCK = "spec.ingress[0].from[0].ipBlock"
PORT = "spec.ingress[0].ports[0]"
EXPR = "spec.podSelector.matchExpressions[0]"

INVALID = [
    pytest.param(
        ingress_from({"ipBlock": {"cidr": "10.0.0.0/33"}}),
        f"{BLOCK}.cidr",
        "invalid CIDR '10.0.0.0/33'",
        id="cidr-bad-prefix",
    ),
    pytest.param(
        ingress_from({"ipBlock": {"cidr": "10.0.0.1"}}),
        f"{BLOCK}.cidr",
        "must be a CIDR such as 10.0.0.0/8, got '10.0.0.1'",
        id="cidr-without-prefix",
    ),
    pytest.param(
        ingress_from({"ipBlock": {"cidr": "ten/8"}}),
        f"{BLOCK}.cidr",
        "invalid CIDR 'ten/8'",
        id="cidr-garbage",
    ),
    pytest.param(
        ingress_from({"ipBlock": {}}),
        f"{BLOCK}.cidr",
        "must be a CIDR such as 10.0.0.0/8, got null",
        id="cidr-missing",
    ),
    pytest.param(
        ingress_from({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}),
        f"{BLOCK}.except[0]",
        "10.1.0.0/24 must be a strict subset of cidr 10.0.0.0/16",
        id="except-outside-cidr",
    ),
    pytest.param(
        ingress_from({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}),
        f"{BLOCK}.except[0]",
        "10.0.0.0/16 must be a strict subset of cidr 10.0.0.0/16",
        id="except-equal-to-cidr",
    ),
    pytest.param(
        ingress_from({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["fd00::/64"]}}),
        f"{BLOCK}.except[0]",
        "fd00::/64 is not of the same IP family as cidr 10.0.0.0/16",
        id="except-other-family",
    ),
    pytest.param(
        selecting({"key": "app", "operator": "Equals", "values": ["x"]}),
        f"{EXPR}.operator",
        "unknown operator 'Equals'; expected one of In, NotIn, Exists, DoesNotExist",
        id="unknown-operator",
    ),
    pytest.param(
        selecting({"key": "app", "operator": "In"}),
        f"{EXPR}.values",
        "must be non-empty when operator is In",
        id="in-without-values",
    ),
    pytest.param(
        selecting({"key": "app", "operator": "NotIn", "values": []}),
        f"{EXPR}.values",
        "must be non-empty when operator is NotIn",
        id="notin-with-empty-values",
    ),
    pytest.param(
        selecting({"key": "app", "operator": "Exists", "values": ["x"]}),
        f"{EXPR}.values",
        "must be empty when operator is Exists",
        id="exists-with-values",
    ),
    pytest.param(
        selecting({"key": "app", "operator": "DoesNotExist", "values": ["x"]}),
        f"{EXPR}.values",
        "must be empty when operator is DoesNotExist",
        id="doesnotexist-with-values",
    ),
    pytest.param(
        ingress_ports({"port": 0}),
        f"{PORT}.port",
        "must be between 1 and 65535, got 0",
        id="port-0",
    ),
    pytest.param(
        ingress_ports({"port": 70000}),
        f"{PORT}.port",
        "must be between 1 and 65535, got 70000",
        id="port-70000",
    ),
    pytest.param(
        ingress_ports({"port": "80"}),
        f"{PORT}.port",
        "'80' is not a valid port name",
        id="port-number-as-string",
    ),
    pytest.param(
        ingress_ports({"port": "HTTP"}),
        f"{PORT}.port",
        "'HTTP' is not a valid port name",
        id="port-name-uppercase",
    ),
    pytest.param(
        ingress_ports({"endPort": 90}),
        f"{PORT}.endPort",
        "may only be set with a numeric port",
        id="endport-without-port",
    ),
    pytest.param(
        ingress_ports({"port": "http", "endPort": 90}),
        f"{PORT}.endPort",
        "may only be set with a numeric port",
        id="endport-with-named-port",
    ),
    pytest.param(
        ingress_ports({"port": 80, "endPort": 79}),
        f"{PORT}.endPort",
        "must be between port (80) and 65535, got 79",
        id="endport-below-port",
    ),
    pytest.param(
        ingress_ports({"port": 80, "endPort": 65536}),
        f"{PORT}.endPort",
        "must be between port (80) and 65535, got 65536",
        id="endport-above-65535",
    ),
    pytest.param(
        ingress_ports({"protocol": "ICMP", "port": 80}),
        f"{PORT}.protocol",
        "unknown protocol 'ICMP'; expected TCP, UDP or SCTP",
        id="unknown-protocol",
    ),
    pytest.param(
        ingress_ports({"protocol": "tcp", "port": 80}),
        f"{PORT}.protocol",
        "unknown protocol 'tcp'",
        id="protocol-is-case-sensitive",
    ),
    pytest.param(
        ingress_from({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        "spec.ingress[0].from[0]",
        "ipBlock cannot be combined with podSelector or namespaceSelector",
        id="peer-ipblock-and-podselector",
    ),
    pytest.param(
        ingress_from({"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}),
        "spec.ingress[0].from[0]",
        "ipBlock cannot be combined with podSelector or namespaceSelector",
        id="peer-ipblock-and-namespaceselector",
    ),
    pytest.param(
        ingress_from({}),
        "spec.ingress[0].from[0]",
        "must specify podSelector, namespaceSelector or ipBlock",
        id="empty-peer",
    ),
    pytest.param(
        {"podSelector": {}, "egress": [{"to": [{}]}]},
        "spec.egress[0].to[0]",
        "must specify podSelector, namespaceSelector or ipBlock",
        id="empty-egress-peer",
    ),
    pytest.param(
        {"podSelector": {}, "policyTypes": ["Ingress", "Both"]},
        "spec.policyTypes[1]",
        "must be Ingress or Egress, got 'Both'",
        id="unknown-policy-type",
    ),
    pytest.param(
        {"ingress": [{}]},
        "spec.podSelector",
        "required (use {} to select all pods)",
        id="podselector-missing",
    ),
    pytest.param(
        {"podSelector": {}, "ingres": []},
        "spec.ingres",
        "unknown field",
        id="misspelt-field",
    ),
]


@pytest.mark.parametrize(("spec", "path", "message"), INVALID)
def test_invalid_policy_reports_path_and_specific_message(
    spec: Doc, path: str, message: str
) -> None:
    errors = problems(spec)
    assert [e.path for e in errors] == [path]
    assert message in errors[0].message


def test_error_text_names_object_field_and_problem() -> None:
    with pytest.raises(InvalidObjectError) as info:
        parse_policy(np(ingress_ports({"port": 0})), source="policies.yaml")
    assert str(info.value) == (
        "policies.yaml: NetworkPolicy default/np: spec.ingress[0].ports[0].port: "
        "must be between 1 and 65535, got 0"
    )


def test_every_problem_of_one_policy_is_reported() -> None:
    spec = {
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "Equals"}]},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {"ipBlock": {"cidr": "10.0.0.0/33"}},
                    {},
                    {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["fd00::/64"]}},
                ],
                "ports": [{"port": 0}, {"protocol": "ICMP"}],
            }
        ],
        "egress": [{"ports": [{"port": 80, "endPort": 79}]}],
    }
    paths = {e.path for e in problems(spec)}
    assert paths == {
        "spec.podSelector.matchExpressions[0].operator",
        "spec.ingress[0].from[0].ipBlock.cidr",
        "spec.ingress[0].from[1]",
        "spec.ingress[0].from[2].ipBlock.except[0]",
        "spec.ingress[0].ports[0].port",
        "spec.ingress[0].ports[1].protocol",
        "spec.egress[0].ports[0].endPort",
    }


def test_invalid_policy_is_rejected_whole_on_load() -> None:
    good = np({"podSelector": {}, "policyTypes": ["Ingress"]})
    bad = np(ingress_ports({"port": 0}))
    bad["metadata"] = {"namespace": "default", "name": "bad"}
    result = parse_documents([good, bad])
    assert [p.name for p in result.cluster.policies.values()] == ["np"]
    assert [str(e.ref) for e in result.errors] == ["NetworkPolicy default/bad"]


# --- what a valid policy means -------------------------------------------------------


def parse(spec: Doc) -> NetworkPolicy:
    return parse_policy(np(spec))


def test_policy_types_default_to_ingress_only() -> None:
    policy = parse({"podSelector": {}})
    assert policy.ingress == ()
    assert policy.egress is None


def test_policy_types_default_add_egress_with_egress_rules() -> None:
    policy = parse({"podSelector": {}, "egress": [{}]})
    assert policy.ingress == ()
    assert policy.egress is not None
    assert len(policy.egress) == 1


def test_policy_types_empty_egress_list_adds_no_egress() -> None:
    assert parse({"podSelector": {}, "egress": []}).egress is None


def test_explicit_policy_types_drop_the_other_direction() -> None:
    policy = parse({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]})
    assert policy.ingress is None
    assert policy.egress == ()


def test_peer_with_pod_selector_only_means_own_namespace() -> None:
    policy = parse(ingress_from({"podSelector": {"matchLabels": {"a": "b"}}}))
    assert policy.ingress is not None
    peer = policy.ingress[0].peers[0]
    assert peer.namespace_selector is None
    assert peer.pod_selector is not None
    assert not peer.pod_selector.is_empty


def test_peer_with_namespace_selector_only_selects_every_pod() -> None:
    policy = parse(ingress_from({"namespaceSelector": {}}))
    assert policy.ingress is not None
    peer = policy.ingress[0].peers[0]
    assert peer.namespace_selector is not None
    assert peer.namespace_selector.is_empty
    assert peer.pod_selector is not None
    assert peer.pod_selector.is_empty


def test_ports_default_protocol_is_tcp_and_endport_kept() -> None:
    policy = parse(ingress_ports({"port": 32000, "endPort": 32768}, {"port": "http"}, {}))
    assert policy.ingress is not None
    ports = policy.ingress[0].ports
    assert [(p.protocol, p.port, p.end_port, p.name) for p in ports] == [
        ("TCP", 32000, 32768, None),
        ("TCP", None, None, "http"),
        ("TCP", None, None, None),
    ]


def test_pod_host_ips_keep_host_ip_first_and_add_host_ips() -> None:
    pod = parse_object(
        {
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d"},
            "spec": {"nodeName": "n1"},
            "status": {
                "podIP": "10.0.1.2",
                "hostIP": "192.168.0.1",
                "hostIPs": [{"ip": "192.168.0.1"}, {"ip": "fd01::1"}],
            },
        }
    )
    assert isinstance(pod, Pod)
    assert pod.host_ips == ("192.168.0.1", "fd01::1")
    assert pod.host_ip == "192.168.0.1"
