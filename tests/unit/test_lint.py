"""Rules that can never match (stockade.lint): tables, and brute force over tiny universes."""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.errors import FieldError
from stockade.lint import (
    EmptyRule,
    empty_rules,
    ip_block_conflict,
    policy_warnings,
    selector_conflict,
)
from stockade.model import NAMESPACE_NAME_LABEL, IPBlock, IPNetwork, parse_policy
from stockade.selectors import LabelSelector, parse_selector

NS = NAMESPACE_NAME_LABEL


def sel(raw: dict[str, Any]) -> LabelSelector:
    errors: list[FieldError] = []
    out = parse_selector(raw, "s", errors)
    assert errors == []
    return out


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": op}
    if values:
        out["values"] = list(values)
    return out


def exprs(*items: dict[str, Any]) -> dict[str, Any]:
    return {"matchExpressions": list(items)}


# --------------------------------------------------------------------------- selectors


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        pytest.param(
            exprs(expr("app", "In", "a"), expr("app", "NotIn", "a")),
            "app In [a] and app NotIn [a]",
            id="in-notin-same",
        ),
        pytest.param(
            exprs(expr("app", "In", "a"), expr("app", "DoesNotExist")),
            "app In [a] and app DoesNotExist",
            id="in-doesnotexist",
        ),
        pytest.param(
            exprs(expr("app", "Exists"), expr("app", "DoesNotExist")),
            "app Exists and app DoesNotExist",
            id="exists-doesnotexist",
        ),
        pytest.param(
            {"matchLabels": {"app": "a"}, **exprs(expr("app", "In", "b"))},
            "app In [a] and app In [b]",
            id="matchlabels-in-other",
        ),
        pytest.param(
            exprs(expr("app", "In", "a", "b"), expr("app", "In", "c", "d")),
            "app In [a, b] and app In [c, d]",
            id="in-sets-disjoint",
        ),
        pytest.param(
            {"matchLabels": {"app": "a"}, **exprs(expr("app", "NotIn", "a"))},
            "app In [a] and app NotIn [a]",
            id="matchlabels-notin",
        ),
        pytest.param(
            exprs(expr("app", "In", "a", "b"), expr("app", "NotIn", "a", "b", "c")),
            "app In [a, b] and app NotIn [a, b, c]",
            id="in-covered-by-notin",
        ),
        pytest.param(
            exprs(
                expr("app", "In", "a", "b"),
                expr("app", "In", "b", "c"),
                expr("app", "NotIn", "b"),
                expr("app", "NotIn", "z"),
            ),
            "app In [a, b], app In [b, c] and app NotIn [b]",
            id="intersection-then-notin",
        ),
        pytest.param(
            exprs(expr("x", "In", "a", "b"), expr("x", "In", "b", "c"), expr("x", "In", "a", "c")),
            "x In [a, b], x In [a, c] and x In [b, c]",
            id="three-in-pairwise-overlapping",
        ),
        pytest.param(
            exprs(expr("ok", "Exists"), expr("z", "Exists"), expr("z", "DoesNotExist")),
            "z Exists and z DoesNotExist",
            id="other-keys-fine",
        ),
        pytest.param(
            exprs(expr("app", "In", ""), expr("app", "NotIn", "")),
            'app In [""] and app NotIn [""]',
            id="empty-value",
        ),
        # Satisfiable ones.
        pytest.param(exprs(expr("app", "NotIn", "a")), None, id="notin-alone"),
        pytest.param(exprs(expr("app", "Exists"), expr("app", "In", "a")), None, id="exists-in"),
        pytest.param(
            exprs(expr("app", "Exists"), expr("app", "NotIn", "a", "b")),
            None,
            id="exists-notin",
        ),
        pytest.param(
            exprs(expr("app", "NotIn", "a"), expr("app", "DoesNotExist")),
            None,
            id="notin-doesnotexist",
        ),
        pytest.param(
            exprs(expr("app", "In", "a", "b"), expr("app", "NotIn", "a")),
            None,
            id="in-partly-excluded",
        ),
        pytest.param(
            exprs(expr("app", "In", "a", "b"), expr("app", "In", "b", "c")),
            None,
            id="in-sets-overlap",
        ),
        pytest.param({"matchLabels": {"app": "a", "tier": "b"}}, None, id="two-keys"),
        pytest.param({}, None, id="empty"),
    ],
)
def test_selector_conflict(raw: dict[str, Any], why: str | None) -> None:
    assert selector_conflict(sel(raw)) == why


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        pytest.param(
            exprs(expr(NS, "DoesNotExist")),
            f"{NS} DoesNotExist, but every namespace has that label",
            id="name-doesnotexist",
        ),
        pytest.param(
            {"matchLabels": {NS: "a"}, **exprs(expr(NS, "In", "b"))},
            f"{NS} In [a] and {NS} In [b]",
            id="name-two-values",
        ),
        pytest.param(exprs(expr(NS, "NotIn", "a")), None, id="name-notin"),
        pytest.param(exprs(expr(NS, "Exists")), None, id="name-exists"),
        pytest.param(exprs(expr("team", "DoesNotExist")), None, id="other-doesnotexist"),
    ],
)
def test_namespace_name_label_is_always_there(raw: dict[str, Any], why: str | None) -> None:
    assert selector_conflict(sel(raw), frozenset({NS})) == why


# Brute force: requirements over a tiny universe of keys and values. A label map
# over those keys, each absent or one of the values or a value no requirement
# names ("other"), stands for every label map: keys outside the universe do not
# matter, and values no requirement names all behave alike.
KEYS = ("k1", "k2")
VALUES = ("a", "b", "c")
STATES = (None, *VALUES, "other")


@st.composite
def requirements(draw: st.DrawFn) -> dict[str, Any]:
    items = []
    for _ in range(draw(st.integers(0, 5))):
        key = draw(st.sampled_from(KEYS))
        op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
        values = (
            draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=3, unique=True))
            if op in ("In", "NotIn")
            else []
        )
        items.append(expr(key, op, *values))
    raw: dict[str, Any] = exprs(*items) if items else {}
    if draw(st.booleans()):
        raw["matchLabels"] = {draw(st.sampled_from(KEYS)): draw(st.sampled_from(VALUES))}
    return raw


def satisfiable(selector: LabelSelector, present: frozenset[str]) -> bool:
    for states in itertools.product(STATES, repeat=len(KEYS)):
        labels = {k: v for k, v in zip(KEYS, states, strict=True) if v is not None}
        if present - set(labels):
            continue
        if selector.matches(labels):
            return True
    return False


@settings(max_examples=500, deadline=None)
@given(raw=requirements(), namespace=st.booleans())
def test_selector_conflict_agrees_with_brute_force(raw: dict[str, Any], namespace: bool) -> None:
    present = frozenset({"k1"}) if namespace else frozenset()
    selector = sel(raw)
    why = selector_conflict(selector, present)
    assert (why is None) == satisfiable(selector, present), why


# --------------------------------------------------------------------------- ipBlock


def block(cidr: str, *excepts: str) -> IPBlock:
    return IPBlock(ipaddress.ip_network(cidr), tuple(ipaddress.ip_network(e) for e in excepts))


@pytest.mark.parametrize(
    ("b", "empty"),
    [
        pytest.param(block("10.0.0.0/24"), False, id="no-except"),
        pytest.param(block("10.0.0.0/24", "10.0.0.0/25"), False, id="half"),
        pytest.param(block("10.0.0.0/24", "10.0.0.0/25", "10.0.0.128/25"), True, id="halves"),
        pytest.param(
            block("10.0.0.0/24", "10.0.0.0/25", "10.0.0.128/26", "10.0.0.192/26"),
            True,
            id="quarters",
        ),
        pytest.param(
            block("10.0.0.0/24", "10.0.0.0/25", "10.0.0.0/26", "10.0.0.128/26"),
            False,
            id="nested-not-covering",
        ),
        pytest.param(
            block("10.0.0.0/24", "10.0.0.0/25", "10.0.0.64/26", "10.0.0.128/25"),
            True,
            id="nested-covering",
        ),
        pytest.param(block("0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1"), True, id="everything"),
        pytest.param(block("fd00::/64", "fd00::/65", "fd00:0:0:0:8000::/65"), True, id="ipv6"),
        pytest.param(block("fd00::/64", "fd00::/65", "fd00:0:0:0:c000::/66"), False, id="ipv6-gap"),
    ],
)
def test_ip_block_conflict(b: IPBlock, empty: bool) -> None:
    why = ip_block_conflict(b)
    assert (why is not None) == empty
    if why is not None:
        assert str(b.cidr) in why


@st.composite
def small_blocks(draw: st.DrawFn) -> IPBlock:
    v6 = draw(st.booleans())
    base = ipaddress.ip_network("fd00::/120" if v6 else "10.1.2.0/24")
    subnets: list[IPNetwork] = list(
        base.subnets(new_prefix=base.prefixlen + draw(st.integers(0, 3)))
    )
    cidr = draw(st.sampled_from(subnets))
    inner = [
        n
        for extra in range(1, 4)
        if cidr.prefixlen + extra <= cidr.max_prefixlen
        for n in cidr.subnets(new_prefix=cidr.prefixlen + extra)
    ]
    excepts = draw(st.lists(st.sampled_from(inner), max_size=6, unique=True))
    return IPBlock(cidr, tuple(excepts))


@settings(max_examples=300, deadline=None)
@given(b=small_blocks())
def test_ip_block_conflict_agrees_with_brute_force(b: IPBlock) -> None:
    empty = not any(b.contains(ip) for ip in b.cidr)
    assert (ip_block_conflict(b) is not None) == empty


# --------------------------------------------------------------------------- rules


def policy(spec: dict[str, Any], name: str = "p") -> Any:
    body = {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": "ns"}, "spec": spec}
    return parse_policy(body)


IMPOSSIBLE_POD = {"podSelector": exprs(expr("app", "In", "a"), expr("app", "NotIn", "a"))}
IMPOSSIBLE_NS = {"namespaceSelector": exprs(expr(NS, "DoesNotExist"))}
COVERED = {"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.0/25", "10.0.0.128/25"]}}
FINE_POD = {"podSelector": {"matchLabels": {"app": "a"}}}


def test_a_rule_is_empty_only_when_every_peer_is_impossible() -> None:
    spec = {
        "podSelector": {},
        "ingress": [
            {},  # no from: every peer
            {"from": [IMPOSSIBLE_POD, COVERED]},
            {"from": [IMPOSSIBLE_POD, FINE_POD]},
            {"from": [IMPOSSIBLE_NS], "ports": [{"port": 80}]},
        ],
        "egress": [{"to": [COVERED]}, {"to": []}],
    }
    found = empty_rules(policy(spec))
    assert [(f.direction, f.index) for f in found] == [
        ("ingress", 1),
        ("ingress", 3),
        ("egress", 0),
    ]
    assert found[0].message == (
        "ingress rule 1: every peer is impossible: "
        "peer 0 podSelector requires app In [a] and app NotIn [a]; "
        "peer 1 ipBlock 10.0.0.0/24 is covered entirely by its except entries; "
        "this rule allows nothing"
    )
    assert found[1].peers == (
        f"peer 0 namespaceSelector requires {NS} DoesNotExist, but every namespace has that label",
    )


def test_both_selectors_of_a_peer_are_named() -> None:
    peer = {
        "podSelector": {"matchLabels": {"app": "a"}, **exprs(expr("app", "In", "b"))},
        "namespaceSelector": {"matchLabels": {NS: "x"}, **exprs(expr(NS, "In", "y"))},
    }
    (found,) = empty_rules(policy({"podSelector": {}, "ingress": [{"from": [peer]}]}))
    assert found == EmptyRule(
        "ingress",
        0,
        (
            f"peer 0 podSelector requires app In [a] and app In [b], "
            f"and its namespaceSelector requires {NS} In [x] and {NS} In [y]",
        ),
    )


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"podSelector": {}, "ingress": [{"from": [FINE_POD]}]}, id="fine"),
        pytest.param(
            {
                "podSelector": {},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"x": "y"}}}]}],
            },
            id="selects-no-pod-now",
        ),
        pytest.param(
            {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]},
            id="all-namespaces",
        ),
        pytest.param(
            {
                "podSelector": {},
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.0/25"]}}]}
                ],
            },
            id="except-not-covering",
        ),
        pytest.param(
            {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{"from": [IMPOSSIBLE_POD]}]},
            id="ignored-direction",
        ),
        pytest.param(
            {
                "podSelector": {},
                "egress": [{"to": [FINE_POD], "ports": [{"port": 80, "endPort": 80}]}],
            },
            id="one-port-range",
        ),
    ],
)
def test_not_empty(spec: dict[str, Any]) -> None:
    assert empty_rules(policy(spec)) == ()


def test_policy_warnings_name_the_policy() -> None:
    bad = policy({"podSelector": {}, "egress": [{"to": [COVERED]}]}, "b")
    good = policy({"podSelector": {}}, "a")
    assert policy_warnings([bad, good]) == [
        "NetworkPolicy ns/b: egress rule 0: every peer is impossible: peer 0 ipBlock "
        "10.0.0.0/24 is covered entirely by its except entries; this rule allows nothing"
    ]
