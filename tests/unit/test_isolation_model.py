"""IsolationPolicy: the model, the strict parser and the CRD schema.

The parser is the ClusterNetworkPolicy one plus the sameness peers: the tables below
check each sameness peer form, each mistake with every problem listed, and (by
property) that on ClusterNetworkPolicy specs both parsers agree exactly.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.cluster import Cluster, parse_documents
from stockade.cnp import ClusterNetworkPolicy, parse_cluster_network_policy
from stockade.crd_isolation import isolation_policy_crd
from stockade.errors import InvalidObjectError
from stockade.isolation import (
    API_VERSION,
    KIND,
    IsolationPolicy,
    SamePeer,
    parse_isolation_policy,
)
from stockade.model import Namespace, Pod
from stockade.selectors import EVERYTHING, LabelSelector, Requirement
from tests.unit.strategies import cluster_network_policy
from tests.unit.test_cnp_model import CASES, base
from tests.unit.test_crd_cnp import structural_problems
from tests.unit.test_manifests import _json_schema

Doc = dict[str, Any]


def isop(spec: Doc, name: str = "iso") -> Doc:
    """An IsolationPolicy object with ``spec``."""
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def with_peer(peer: Any, egress: bool = False) -> Doc:
    """A valid IsolationPolicy whose one rule has ``peer`` (ingress, or egress)."""
    rule = {"action": "Accept", ("to" if egress else "from"): [peer]}
    spec: Doc = {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}}}
    spec["egress" if egress else "ingress"] = [rule]
    return isop(spec)


def errors_of(obj: Any) -> list[tuple[str, str]]:
    """The (path, message) of every problem; fails if the object parses."""
    with pytest.raises(InvalidObjectError) as info:
        parse_isolation_policy(obj)
    return [(e.path, e.message) for e in info.value.errors]


def eq(key: str, value: str) -> LabelSelector:
    """The canonical selector ``key=value``."""
    return LabelSelector((Requirement(key, "In", (value,)),))


# --- valid sameness peers ----------------------------------------------------------

VALID: list[tuple[str, Doc, SamePeer]] = [
    ("same-as-self", {"namespaces": {"sameAs": "Self"}}, SamePeer(scope="namespaces")),
    ("match-self", {"namespaces": {"match": "Self"}}, SamePeer(scope="namespaces")),
    (
        "same-namespace-labels",
        {"namespaces": {"sameLabels": ["tenant", "field.cattle.io/projectId"]}},
        SamePeer(scope="namespaces", keys=("tenant", "field.cattle.io/projectId")),
    ),
    (
        "same-pod-labels-own-namespace",
        {"pods": {"sameLabels": ["app"]}},
        SamePeer(scope="pods", keys=("app",)),
    ),
    (
        "same-pod-labels-all-namespaces",
        {"pods": {"sameLabels": ["com.rancher.department"], "namespaceSelector": {}}},
        SamePeer(scope="pods", keys=("com.rancher.department",), in_namespaces=EVERYTHING),
    ),
    (
        "same-pod-labels-and-selectors",
        {
            "pods": {
                "sameLabels": ["app"],
                "namespaceSelector": {"matchLabels": {"env": "prod"}},
                "podSelector": {"matchLabels": {"tier": "db"}},
            }
        },
        SamePeer(
            scope="pods", keys=("app",), in_namespaces=eq("env", "prod"), also=eq("tier", "db")
        ),
    ),
]


@pytest.mark.parametrize(
    ("peer", "want"), [(p, w) for _, p, w in VALID], ids=[i for i, _, _ in VALID]
)
@pytest.mark.parametrize("egress", [False, True], ids=["ingress", "egress"])
def test_sameness_peers(peer: Doc, want: SamePeer, egress: bool) -> None:
    policy = parse_isolation_policy(with_peer(peer, egress))
    rules = policy.egress if egress else policy.ingress
    assert rules[0].peers == (want,)
    assert rules[0].peers[0].field == next(iter(peer))
    assert not rules[0].unsupported


def test_plain_peers_are_the_cnp_peers() -> None:
    policy = parse_isolation_policy(
        with_peer({"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}}})
    )
    (peer,) = policy.ingress[0].peers
    assert not isinstance(peer, SamePeer)
    assert peer.pods is not None
    assert peer.pods.pod_selector == eq("a", "b")


# --- invalid: every problem listed ---------------------------------------------------

P = "spec.ingress[0].from[0]"
INVALID: list[tuple[str, Any, list[tuple[str, str]]]] = [
    (
        "mixed-with-match-labels",
        {"namespaces": {"sameLabels": ["tenant"], "matchLabels": {"a": "b"}}},
        [
            (
                f"{P}.namespaces",
                "sameAs, match, sameLabels and matchLabels/matchExpressions are exclusive, "
                "got matchLabels, sameLabels",
            )
        ],
    ),
    (
        "same-as-and-same-labels",
        {"namespaces": {"sameAs": "Self", "sameLabels": ["t"]}},
        [
            (
                f"{P}.namespaces",
                "sameAs, match, sameLabels and matchLabels/matchExpressions are exclusive, "
                "got sameAs, sameLabels",
            )
        ],
    ),
    (
        "same-as-other",
        {"namespaces": {"sameAs": "Other"}},
        [(f"{P}.namespaces.sameAs", "must be Self, got 'Other'")],
    ),
    (
        "match-not-a-string",
        {"namespaces": {"match": 1}},
        [(f"{P}.namespaces.match", "must be a string, got 1")],
    ),
    (
        "same-labels-empty",
        {"pods": {"sameLabels": []}},
        [(f"{P}.pods.sameLabels", "must have at least 1 item, got none")],
    ),
    (
        "same-labels-not-a-list",
        {"namespaces": {"sameLabels": "tenant"}},
        [(f"{P}.namespaces.sameLabels", "must be a list, got 'tenant'")],
    ),
    (
        "same-labels-duplicate-and-invalid",
        {"namespaces": {"sameLabels": ["t", "t", "-x"]}},
        [
            (f"{P}.namespaces.sameLabels[1]", "duplicate value 't'"),
            (
                f"{P}.namespaces.sameLabels[2]",
                "'-x': name part must consist of alphanumerics, '-', '_' or '.', starting and "
                "ending with an alphanumeric",
            ),
        ],
    ),
    (
        "same-labels-too-many",
        {"pods": {"sameLabels": [f"k{i}" for i in range(26)]}},
        [(f"{P}.pods.sameLabels", "must have at most 25 items, got 26")],
    ),
    (
        "unknown-field-in-pods",
        {"pods": {"sameLabels": ["app"], "sameAs": "Self"}},
        [(f"{P}.pods.sameAs", "unknown field")],
    ),
    (
        "two-fields-and-both-wrong",
        {"namespaces": {"sameAs": "X"}, "pods": {"sameLabels": []}},
        [
            (P, "exactly one of namespaces, pods may be set, got namespaces, pods"),
            (f"{P}.namespaces.sameAs", "must be Self, got 'X'"),
            (f"{P}.pods.sameLabels", "must have at least 1 item, got none"),
        ],
    ),
    (
        "egress-field-in-ingress",
        {"namespaces": {"sameAs": "Self"}, "networks": ["10.0.0.0/8"]},
        [(f"{P}.networks", "not allowed in an ingress peer")],
    ),
    (
        "pods-without-same-labels-is-the-cnp-peer",
        {"pods": {"namespaceSelector": {}}},
        [(f"{P}.pods.podSelector", "required (use {} to select all pods)")],
    ),
]


@pytest.mark.parametrize(
    ("peer", "want"), [(p, w) for _, p, w in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_invalid_sameness_peers(peer: Any, want: list[tuple[str, str]]) -> None:
    assert errors_of(with_peer(peer)) == want


def test_problems_of_every_rule_and_field_are_listed() -> None:
    doc = isop(
        {
            "tier": "Top",
            "priority": 1001,
            "subject": {"namespaces": {}},
            "ingress": [
                {"action": "Accept", "from": [{"namespaces": {"sameAs": "Other"}}]},
                {"action": "Maybe", "from": [{"pods": {"sameLabels": ["ok", "ok"]}}]},
            ],
        }
    )
    assert [p for p, _ in errors_of(doc)] == [
        "spec.tier",
        "spec.priority",
        "spec.ingress[0].from[0].namespaces.sameAs",
        "spec.ingress[1].action",
        "spec.ingress[1].from[0].pods.sameLabels[1]",
    ]


def test_errors_name_the_kind() -> None:
    with pytest.raises(InvalidObjectError) as info:
        parse_isolation_policy(with_peer({"namespaces": {"sameAs": "x"}}), "f.yaml")
    assert info.value.lines() == [
        "f.yaml: IsolationPolicy iso: spec.ingress[0].from[0].namespaces.sameAs: "
        "must be Self, got 'x'"
    ]
    doc = with_peer({"namespaces": {}})
    doc["apiVersion"] = "policy.networking.k8s.io/v1alpha2"
    assert errors_of(doc) == [
        (
            "apiVersion",
            "unsupported 'policy.networking.k8s.io/v1alpha2' for IsolationPolicy; "
            "expected stockade.dev/v1alpha1",
        )
    ]


# --- the ClusterNetworkPolicy contract, by construction and by property --------------


def _as_isolation(doc: Doc) -> Doc:
    out = copy.deepcopy(doc)
    out["apiVersion"], out["kind"] = API_VERSION, KIND
    return out


# Every mistake of the ClusterNetworkPolicy table but those of its own kind and apiVersion.
SPEC_CASES = [(m, p) for _, m, p, _ in CASES if p not in ("kind", "apiVersion")]


@pytest.mark.parametrize(("case", "path"), SPEC_CASES)
def test_every_cnp_mistake_is_refused_the_same_way(case: Any, path: str) -> None:
    doc = base()
    case(doc)
    with pytest.raises(InvalidObjectError) as cnp_info:
        parse_cluster_network_policy(doc)
    assert errors_of(_as_isolation(doc)) == [(e.path, e.message) for e in cnp_info.value.errors]


@settings(max_examples=200, deadline=None)
@given(doc=st.integers(0, 9).flatmap(cluster_network_policy))
def test_cnp_specs_parse_to_the_same_fields(doc: Doc) -> None:
    cnp = parse_cluster_network_policy(doc)
    iso = parse_isolation_policy(_as_isolation(doc))
    assert isinstance(iso, IsolationPolicy)
    fields = ("name", "tier", "priority", "subject", "ingress", "egress")
    assert [getattr(iso, f) for f in fields] == [getattr(cnp, f) for f in fields]
    assert iso != cnp  # a different kind: never equal, never the same key
    assert iso.key == f"IsolationPolicy/{cnp.key}"


SAMENESS_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["Self", "a", "", "x/y"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "namespaces",
                    "pods",
                    "sameAs",
                    "match",
                    "sameLabels",
                    "matchLabels",
                    "podSelector",
                    "namespaceSelector",
                    "networks",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(peer=SAMENESS_JSON)
def test_random_peers_never_raise_anything_else(peer: Any) -> None:
    problems = errors_of_or_none(with_peer(peer))
    if not problems:
        assert isinstance(parse_isolation_policy(with_peer(peer)), IsolationPolicy)


# --- the model ---------------------------------------------------------------------


def test_an_isolation_policy_and_a_cnp_may_share_a_name() -> None:
    docs = [
        {**with_peer({"namespaces": {"sameAs": "Self"}}), "metadata": {"name": "same"}},
        {
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "same"},
            "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}}},
        },
    ]
    result = parse_documents(docs)
    assert not result.errors
    cluster = result.cluster
    assert sorted(cluster.cluster_policies) == ["IsolationPolicy/same", "same"]
    iso, cnp = cluster.cluster_policies["IsolationPolicy/same"], cluster.cluster_policies["same"]
    assert isinstance(iso, IsolationPolicy)
    assert type(cnp) is ClusterNetworkPolicy
    # Equal tier, priority and name: the ClusterNetworkPolicy first.
    assert cnp.order < iso.order
    assert Cluster.of(result.objects).cluster_policies == cluster.cluster_policies


VALUES: list[tuple[SamePeer, Doc, Doc, tuple[str, ...] | None, str]] = [
    (SamePeer(scope="namespaces"), {}, {}, ("ns1",), "same namespace (ns1)"),
    (
        SamePeer(scope="namespaces", keys=("tenant",)),
        {"tenant": "acme"},
        {},
        ("acme",),
        "same namespace labels tenant=acme",
    ),
    (SamePeer(scope="namespaces", keys=("tenant",)), {}, {"tenant": "acme"}, None, ""),
    (
        SamePeer(scope="pods", keys=("com.rancher.department",)),
        {},
        {"com.rancher.department": "qa"},
        ("qa",),
        "same value of com.rancher.department (qa)",
    ),
    (
        SamePeer(scope="pods", keys=("a", "b")),
        {"a": "x"},
        {"a": "1", "b": ""},
        ("1", ""),
        "same values of a, b (1, )",
    ),
    (SamePeer(scope="pods", keys=("a", "b")), {}, {"a": "1"}, None, ""),
]


@pytest.mark.parametrize(("peer", "ns_labels", "pod_labels", "values", "why"), VALUES)
def test_subject_values_and_reasons(
    peer: SamePeer, ns_labels: Doc, pod_labels: Doc, values: tuple[str, ...] | None, why: str
) -> None:
    ns = Namespace("ns1", ns_labels)
    pod = Pod("ns1", "p", pod_labels, "n1", ("10.0.0.1",))
    assert peer.values(ns.labels, pod) == values
    if values is not None:
        assert peer.describe(values) == why


# --- the CRD -------------------------------------------------------------------------

CRD = isolation_policy_crd()
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def crd_problems(obj: Doc) -> list[str]:
    """What the CRD's OpenAPI schema (not its CEL rules) says about ``obj``."""
    jsonschema = importlib.import_module("jsonschema")
    validator = jsonschema.Draft202012Validator(_json_schema(SCHEMA))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


def test_the_crd_is_structural_and_named() -> None:
    assert structural_problems(SCHEMA) == []
    assert CRD["metadata"]["name"] == "isolationpolicies.stockade.dev"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "IsolationPolicy",
        "isolationpolicies",
        ["isop"],
    )
    assert CRD["spec"]["scope"] == "Cluster"


@pytest.mark.parametrize(
    ("peer", "_want"), [(p, w) for _, p, w in VALID], ids=[i for i, _, _ in VALID]
)
def test_the_crd_admits_every_valid_peer(peer: Doc, _want: SamePeer) -> None:
    assert crd_problems(with_peer(peer)) == []
    assert crd_problems(with_peer(peer, egress=True)) == []


@pytest.mark.parametrize(
    "peer",
    [
        {"namespaces": {"sameAs": "Other"}},
        {"namespaces": {"sameLabels": []}},
        {"namespaces": {"sameLabels": [f"k{i}" for i in range(26)]}},
        {"pods": {"sameLabels": "app"}},
        {"pods": {"sameLabels": ["app"], "sameAs": "Self"}},
    ],
)
def test_the_crd_refuses_malformed_peers(peer: Doc) -> None:
    assert crd_problems(with_peer(peer))
    assert errors_of(with_peer(peer))


def test_the_crd_cel_rules_say_what_the_parser_says() -> None:
    """No CEL evaluator here: each rule, transcribed, against the parser's verdicts."""
    ns_rule = CRD_RULES["namespaces"]
    pods_rule = CRD_RULES["pods"]
    assert "filter(x, x).size() <= 1" in ns_rule
    assert "has(self.sameLabels)" in ns_rule
    assert pods_rule == "has(self.sameLabels) || has(self.podSelector)"

    def namespaces_ok(value: Doc) -> bool:  # the namespaces rule, transcribed
        selector = "matchLabels" in value or "matchExpressions" in value
        flags = ["sameAs" in value, "match" in value, "sameLabels" in value, selector]
        return sum(flags) <= 1

    ns_values: list[Doc] = [
        {"sameAs": "Self"},
        {"sameLabels": ["a"]},
        {"matchLabels": {"a": "b"}},
        {"sameAs": "Self", "match": "Self"},
        {"sameLabels": ["a"], "matchExpressions": [{"key": "a", "operator": "Exists"}]},
    ]
    for value in ns_values:
        parsed = not errors_of_or_none(with_peer({"namespaces": value}))
        assert namespaces_ok(value) == parsed, value
    pod_values: list[Doc] = [{"sameLabels": ["a"]}, {"podSelector": {}}, {"namespaceSelector": {}}]
    for value in pod_values:
        parsed = not errors_of_or_none(with_peer({"pods": value}))
        assert ("sameLabels" in value or "podSelector" in value) == parsed, value


def errors_of_or_none(obj: Doc) -> list[tuple[str, str]]:
    """The problems of ``obj``, [] when it parses."""
    try:
        parse_isolation_policy(obj)
    except InvalidObjectError as exc:
        return [(e.path, e.message) for e in exc.errors]
    return []


def _rules_by_peer() -> dict[str, str]:
    peer = SCHEMA["properties"]["spec"]["properties"]["ingress"]["items"]["properties"]["from"][
        "items"
    ]["properties"]
    return {k: peer[k]["x-kubernetes-validations"][0]["rule"] for k in ("namespaces", "pods")}


CRD_RULES = _rules_by_peer()
