"""Rendering IsolationPolicy rules by sameness: the policy as one variant per value
group of the node's subjects (its rules by sameness unguarded, the peers the shared
sets per value), each subject dispatched to its own variant by the tier groups; a
relabel into a value group the node already has changes set members only; and, on
random clusters, the rendered chains give the engine's verdict for every packet."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.agent.iptables import AddressMatch, Jump, SetMatch
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


def _variants(family: Any) -> dict[frozenset[str], Any]:
    """The policy's variant chains, by the subjects dispatched to each.

    A tier group chain jumps to its variant (policies are not inlined here); the
    paths that lead to the group hold its subjects.
    """
    chains = {c.name: c for c in family.chains}
    out: dict[frozenset[str], Any] = {}
    for chain in family.chains:
        if not chain.name.startswith("STK-AIG-"):
            continue
        (target,) = [r.action.chain for r in chain.rules if isinstance(r.action, Jump)]
        out[frozenset(_group_pods(family, chain.name))] = chains[target]
    return out


def _group_pods(family: Any, group_chain: str) -> set[str]:
    """The pods of a tier group: those of the paths (``STK-TIG-``) that jump to it."""
    pods: set[str] = set()
    for chain in family.chains:
        if chain.name.startswith("STK-TIG-") and any(
            isinstance(r.action, Jump) and r.action.chain == group_chain for r in chain.rules
        ):
            pods |= _members(family, "stk-tig4-" + chain.name.removeprefix("STK-TIG-"))
    return pods


def _peer_sets(rule: Any) -> list[str]:
    return [m.set_name for m in rule.matches if isinstance(m, SetMatch) and m.dirs == "src"]


def test_a_variant_per_value_group_and_a_set_per_value() -> None:
    family = _rendered_node("n1")
    variants = _variants(family)
    # qa (two subjects), eng (one) and the pod without the key (none): each gets its
    # own variant of the policy, and no rule tests which subject it is for.
    assert set(variants) == {
        frozenset({"10.0.1.1", "10.0.1.2"}),
        frozenset({"10.0.1.3"}),
        frozenset({"10.0.1.4"}),
    }
    for chain in variants.values():
        for rule in chain.rules:
            assert not any(
                isinstance(m, AddressMatch) and m.direction == "dst" for m in rule.matches
            )
            assert not any(isinstance(m, SetMatch) and m.dirs == "dst" for m in rule.matches)
    assert not [s for s in family.ipsets if s.name.startswith("stk-subj")]
    qa, eng, bare = (
        variants[frozenset({"10.0.1.1", "10.0.1.2"})],
        variants[frozenset({"10.0.1.3"})],
        variants[frozenset({"10.0.1.4"})],
    )
    # The Accept of the value group, then the Deny of rule 1 (no log by default).
    assert len(qa.rules) == len(eng.rules) == 2
    assert len(bare.rules) == 1
    assert bare.rules[0] == qa.rules[1] == eng.rules[1]
    # The peers: a set per value, all pods of the cluster with that value.
    (qa_peer,) = _peer_sets(qa.rules[0])
    assert _members(family, qa_peer) == {"10.0.1.1", "10.0.1.2", "10.0.2.1"}
    (eng_peer,) = _peer_sets(eng.rules[0])
    assert _members(family, eng_peer) == {"10.0.1.3"}


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


def test_a_relabel_into_a_group_the_node_has_changes_set_members_only() -> None:
    """qa2 moves to eng: qa keeps qa1 on n1, eng already has eng1, so the chains are
    the same text and only the dispatch sets' (and the value sets') members differ:
    the agent applies it by set membership, with no iptables call."""
    before = _rendered_node("n1")
    after = _rendered_node("n1", relabelled(DOCS, "a/qa2", dept="eng"))
    assert after.chains == before.chains
    assert {s.name for s in after.ipsets} == {s.name for s in before.ipsets}
    assert set(_variants(after)) == {
        frozenset({"10.0.1.1"}),
        frozenset({"10.0.1.2", "10.0.1.3"}),
        frozenset({"10.0.1.4"}),
    }
    # A remote pod's relabel changes the value sets only, on every node.
    remote = _rendered_node("n1", relabelled(DOCS, "b/ops", dept="qa"))
    assert remote.chains == before.chains


def test_a_value_new_to_the_node_adds_a_variant_and_a_group() -> None:
    before = _rendered_node("n1")
    after = _rendered_node("n1", relabelled(DOCS, "a/bare", dept="ops"))
    assert frozenset({"10.0.1.4"}) in _variants(after)
    (ops_peer,) = _peer_sets(_variants(after)[frozenset({"10.0.1.4"})].rules[0])
    assert _members(after, ops_peer) == {"10.0.1.4", "10.0.2.2"}
    assert len(_variants(after)) == len(_variants(before))
    assert after.chains != before.chains


def test_the_set_of_a_value_is_the_same_on_every_node() -> None:
    def qa_peer_sets(node: str) -> set[str]:
        family = _rendered_node(node)
        return {
            name
            for chain in _variants(family).values()
            for r in chain.rules
            for name in _peer_sets(r)
            if _members(family, name) == {"10.0.1.1", "10.0.1.2", "10.0.2.1"}
        }

    assert qa_peer_sets("n1") == qa_peer_sets("n2")
    assert len(qa_peer_sets("n1")) == 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=isolation_cluster_docs(), binary=st.booleans(), inline=INLINE_CHOICES)
def test_rendered_isolation_agrees_with_the_engine(
    docs: list[Raw], binary: bool, inline: int
) -> None:
    assert_rendered_agree_with_the_engine(docs, binary, inline, split=False)
