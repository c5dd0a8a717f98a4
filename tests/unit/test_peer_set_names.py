"""Peer-set names: the text put together from parts is the canonical JSON of the whole."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from stockade.compiler import peer_set_name
from stockade.ruleset import NamedPortRef, PeerSelector, SelectorRequirement, stable_hash


def _reqs(reqs: tuple[SelectorRequirement, ...]) -> list[list[Any]]:
    return [[r.key, r.operator, list(r.values)] for r in reqs]


def reference_name(selector: PeerSelector) -> str:
    """The name as first defined: the stable hash of the selector's payload."""
    payload: dict[str, Any] = {
        "p": _reqs(selector.pod_selector),
        "n": selector.namespace,
        "ns": None if selector.namespace_selector is None else _reqs(selector.namespace_selector),
        "port": None
        if selector.named_port is None
        else [selector.named_port.name, selector.named_port.protocol],
    }
    if selector.node_selector is not None:
        payload["nodes"] = _reqs(selector.node_selector)
    return "ps-" + stable_hash(payload)


# Any text, quotes, backslashes and non-ASCII included: JSON escapes them.
words = st.text(max_size=6)
requirement = st.builds(
    SelectorRequirement,
    words,
    st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")),
    st.lists(words, max_size=3).map(tuple),
)
requirements = st.lists(requirement, max_size=3).map(tuple)
selectors = st.builds(
    PeerSelector,
    pod_selector=requirements,
    namespace=st.none() | words,
    namespace_selector=st.none() | requirements,
    named_port=st.none() | st.builds(NamedPortRef, words, st.sampled_from(("TCP", "UDP"))),
    node_selector=st.none() | requirements,
)


@given(selectors)
def test_a_name_is_the_hash_of_the_selectors_canonical_json(selector: PeerSelector) -> None:
    assert peer_set_name(selector) == reference_name(selector)


def test_names_of_known_sets_are_kept() -> None:
    same_namespace = PeerSelector((SelectorRequirement("app", "In", ("web",)),), namespace="a")
    every_pod = PeerSelector(namespace_selector=())
    assert peer_set_name(same_namespace) == reference_name(same_namespace)
    assert peer_set_name(every_pod) == reference_name(every_pod)
    assert peer_set_name(same_namespace) != peer_set_name(every_pod)
