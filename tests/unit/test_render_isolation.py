"""Rendering IsolationPolicy rules by sameness: one rule per value group, guarded by its
subjects (a lone subject's address, or a set named by the rule, not by its members),
peers the shared sets per value; a relabel between groups that keep two subjects or
more on the node changes set members only; and, on random clusters, the rendered chains
give the engine's verdict for every packet."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.agent.iptables import AddressMatch, SetMatch
from stockade.agent.render import RenderOptions, render
from stockade.cluster import parse_documents
from stockade.compiler import compile_cluster
from tests.unit.strategies import INLINE_CHOICES, isolation_cluster_docs
from tests.unit.test_render_tiers import assert_rendered_agree_with_the_engine

Raw = dict[str, Any]


def _pod(key: str, node: str, ip: str, **labels: str) -> Raw:
    ns, name = key.split("/")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": node},
        "status": {"podIP": ip},
    }


ISO: Raw = {
    "apiVersion": "stockade.dev/v1alpha1",
    "kind": "IsolationPolicy",
    "metadata": {"name": "departments"},
    "spec": {
        "tier": "Admin",
        "priority": 1,
        "subject": {"namespaces": {}},
        "ingress": [
            {
                "name": "same-department",
                "action": "Accept",
                "from": [{"pods": {"sameLabels": ["dept"], "namespaceSelector": {}}}],
            },
            {"name": "rest", "action": "Deny", "from": [{"namespaces": {}}]},
        ],
    },
}
DOCS = [
    _pod("a/qa1", "n1", "10.0.1.1", dept="qa"),
    _pod("a/qa2", "n1", "10.0.1.2", dept="qa"),
    _pod("a/eng1", "n1", "10.0.1.3", dept="eng"),
    _pod("a/bare", "n1", "10.0.1.4"),
    _pod("b/qa3", "n2", "10.0.2.1", dept="qa"),
    _pod("b/ops", "n2", "10.0.2.2", dept="ops"),
    ISO,
]


def _rendered_node(name: str, docs: list[Raw] = DOCS) -> Any:
    compiled = compile_cluster(parse_documents(docs).cluster)
    rules = compiled.node_rule_sets[name]
    by_set = compiled.by_set()
    return render(
        rules,
        {n: by_set[n] for n in rules.peer_sets},
        options=RenderOptions(inline_policies=False),
    ).family(4)


def _members(family: Any, set_name: str) -> set[str]:
    (found,) = [s for s in family.ipsets if s.name == set_name]
    return {m.value for m in found.members}


def _policy_chain(family: Any) -> Any:
    (chain,) = [c for c in family.chains if c.name.startswith("STK-CI-")]
    return chain


def _guard(rule: Any) -> frozenset[str] | None:
    """The subjects a rule is guarded by (a set's members, or one address)."""
    for m in rule.matches:
        if isinstance(m, AddressMatch) and m.direction == "dst":
            return frozenset({m.cidr.split("/")[0]})
    return None


def _guarded_groups(family: Any) -> dict[frozenset[str], Any]:
    """The rules of value groups, by the subjects they are guarded by."""
    out = {}
    for rule in _policy_chain(family).rules[:-1]:
        sets = [m for m in rule.matches if isinstance(m, SetMatch) and m.dirs == "dst"]
        if sets:
            assert sets[0].set_name.startswith("stk-subj4-")
            out[frozenset(_members(family, sets[0].set_name))] = rule
        else:
            guard = _guard(rule)
            assert guard is not None
            out[guard] = rule
    return out


def test_one_guarded_rule_per_value_and_a_set_per_value() -> None:
    family = _rendered_node("n1")
    rules = _policy_chain(family).rules
    # A rule per value group among n1's subjects (eng: one subject, guarded by its
    # address; qa: two, by a set); then the Deny of rule 1 (no log by default).
    assert len(rules) == 3
    groups = _guarded_groups(family)
    assert set(groups) == {frozenset({"10.0.1.1", "10.0.1.2"}), frozenset({"10.0.1.3"})}
    assert AddressMatch("10.0.1.3/32", "dst") in groups[frozenset({"10.0.1.3"})].matches
    rest = rules[-1]
    assert not any(isinstance(m, SetMatch) and m.dirs == "dst" for m in rest.matches)
    # The peers: a set per value, all pods of the cluster with that value.
    qa = groups[frozenset({"10.0.1.1", "10.0.1.2"})]
    (qa_peer,) = [m for m in qa.matches if isinstance(m, SetMatch) and m.dirs == "src"]
    assert _members(family, qa_peer.set_name) == {"10.0.1.1", "10.0.1.2", "10.0.2.1"}


def relabelled(docs: list[Raw], key: str, **labels: str) -> list[Raw]:
    """``docs`` with pod ``key``'s labels replaced."""
    out = []
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] == "Pod" and f"{meta['namespace']}/{meta['name']}" == key:
            out.append({**doc, "metadata": {**meta, "labels": labels}})
        else:
            out.append(doc)
    return out


# Two groups of two subjects or more on n1 (qa: three, eng: two).
BIGGER = [
    *DOCS,
    _pod("a/qa4", "n1", "10.0.1.5", dept="qa"),
    _pod("a/eng2", "n1", "10.0.1.6", dept="eng"),
]


def test_a_relabel_between_groups_kept_on_the_node_changes_set_members_only() -> None:
    """qa2 moves to eng: both groups keep two subjects or more on n1, so the chains
    are the same text and only the guards' (and the value sets') members differ: the
    agent applies it by set membership, with no iptables call."""
    before = _rendered_node("n1", BIGGER)
    after = _rendered_node("n1", relabelled(BIGGER, "a/qa2", dept="eng"))
    assert after.chains == before.chains
    assert {s.name for s in after.ipsets} == {s.name for s in before.ipsets}
    assert set(_guarded_groups(after)) == {
        frozenset({"10.0.1.1", "10.0.1.5"}),
        frozenset({"10.0.1.2", "10.0.1.3", "10.0.1.6"}),
    }
    # A remote pod's relabel changes the value sets only, on every node.
    remote = _rendered_node("n1", relabelled(BIGGER, "b/ops", dept="qa"))
    assert remote.chains == before.chains


def test_the_set_of_a_value_is_the_same_on_every_node() -> None:
    def qa_peer_sets(node: str) -> set[str]:
        family = _rendered_node(node)
        return {
            m.set_name
            for r in _policy_chain(family).rules
            for m in r.matches
            if isinstance(m, SetMatch) and m.dirs == "src"
            if _members(family, m.set_name) == {"10.0.1.1", "10.0.1.2", "10.0.2.1"}
        }

    assert qa_peer_sets("n1") == qa_peer_sets("n2")
    assert len(qa_peer_sets("n1")) == 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=isolation_cluster_docs(), binary=st.booleans(), inline=INLINE_CHOICES)
def test_rendered_isolation_agrees_with_the_engine(
    docs: list[Raw], binary: bool, inline: int
) -> None:
    assert_rendered_agree_with_the_engine(docs, binary, inline, split=False)
