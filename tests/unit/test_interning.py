"""Parsing what repeats once: shared values are the values a fresh parse gives."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockade import model, selectors
from stockade.errors import FieldError, InvalidObjectError
from stockade.interning import MAX_DEPTH, InternTable, freeze
from stockade.model import parse_ip, parse_object

from .strategies import cluster_docs, policy

TABLES: tuple[InternTable[Any], ...] = (model._LABELS, model._POLICY_SPECS, selectors._PARSED)


def _forget() -> None:
    for table in TABLES:
        table.clear()


def _outcome(raw: dict[str, Any]) -> object:
    """The parsed object, or the lines of the error it raised."""
    try:
        return parse_object(raw)
    except InvalidObjectError as exc:
        return exc.lines()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"a": "1"}, {"a": 1}),  # a string and a number
        ({"a": 1}, {"a": True}),  # 1 == True in Python, not in JSON
        ({"a": 1}, {"a": 1.0}),
        ({"a": ["x"]}, {"a": {"x": None}}),  # a list and a map of the same items
        ([], {}),
        ({"a": None}, {"a": "None"}),
    ],
)
def test_different_content_never_freezes_equal(first: Any, second: Any) -> None:
    a, b = freeze(first), freeze(second)
    assert a is None or b is None or a != b


@pytest.mark.parametrize(
    "raw",
    [
        {"a": True},
        {"a": 1.5},
        {1: "a"},
        {"a": ("tuple",)},
        {"a": {"b": object()}},
    ],
)
def test_content_other_than_json_is_not_frozen(raw: Any) -> None:
    assert freeze(raw) is None


def test_deep_content_is_not_frozen() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    assert freeze(deep) is None
    assert freeze(deep[0][0]) is not None


json_like: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=12,
)


json_maps = st.dictionaries(st.text(max_size=2), json_like, max_size=3)


@given(json_maps, json_maps)
def test_frozen_equality_is_content_equality(a: Any, b: Any) -> None:
    fa, fb = freeze(a), freeze(b)
    assert fa is not None
    assert fb is not None
    assert freeze(copy.deepcopy(a)) == fa
    if fa == fb:
        assert a == b


def test_a_full_table_starts_again() -> None:
    table: InternTable[int] = InternTable(size=2)
    for i in range(3):
        table.put(("k", i), i)
    assert len(table) == 1
    assert table.get(("k", 2)) == 2
    assert table.get(None) is None


@given(st.lists(policy(0), min_size=1, max_size=4))
def test_remembered_policies_parse_as_fresh_ones(raws: list[dict[str, Any]]) -> None:
    first = [_outcome(raw) for raw in raws]
    again = [_outcome(raw) for raw in raws]
    _forget()
    fresh = [_outcome(raw) for raw in raws]
    assert first == again == fresh


@given(cluster_docs())
def test_remembered_clusters_parse_as_fresh_ones(docs: list[dict[str, Any]]) -> None:
    again = [_outcome(copy.deepcopy(d)) for d in docs for _ in range(2)]
    _forget()
    assert again[::2] == again[1::2] == [_outcome(d) for d in docs]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda spec: spec["podSelector"]["matchLabels"].update(app=True),
        lambda spec: spec["ingress"][0]["ports"][0].update(port=True),
        lambda spec: spec["ingress"][0]["ports"][0].update(port=80.0),
        lambda spec: spec["ingress"][0].update({"from": [{"podSelector": {"bad": 1}}]}),
    ],
)
def test_an_invalid_spec_is_refused_after_its_valid_twin(
    mutate: Callable[[dict[str, Any]], None],
) -> None:
    good: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "a"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "1"}},
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 1}]}],
        },
    }
    bad = copy.deepcopy(good)
    mutate(bad["spec"])
    assert isinstance(_outcome(good), model.NetworkPolicy)
    assert isinstance(_outcome(bad), list)


def test_an_invalid_label_map_is_refused_after_its_valid_twin() -> None:
    pod: dict[str, Any] = {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "a", "labels": {"app": "1"}},
        "status": {"podIP": "10.0.0.1"},
    }
    assert isinstance(_outcome(pod), model.Pod)
    pod["metadata"]["labels"] = {"app": 1}
    assert isinstance(_outcome(pod), list)


def _reference_ip(raw: str) -> str | None:
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        return None
    return str(addr)


octets = st.one_of(
    st.integers(0, 300).map(str), st.sampled_from(["00", "01", "007", "", "-1", "1e1", "٣"])
)


@given(
    st.one_of(
        st.lists(octets, min_size=3, max_size=5).map(".".join),
        st.ip_addresses().map(str),
        st.text(alphabet="0123456789.:abcdef%", max_size=20),
    )
)
def test_an_address_parses_as_ipaddress_reads_it(raw: str) -> None:
    errors: list[FieldError] = []
    assert parse_ip(raw, "ip", errors) == _reference_ip(raw)
    assert bool(errors) == (_reference_ip(raw) is None)
    assert parse_ip(raw + "\n", "ip", []) is None
