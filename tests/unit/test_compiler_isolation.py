"""The compiler with IsolationPolicies: incremental equals full, rules by sameness are
compiled per node for its subjects (one rule per distinct value, never per pod of the
cluster), sets per value are shared and named by content, a relabel moves members."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stockade.cluster import parse_input
from stockade.compiler import Compiler, compile_cluster
from stockade.isolation import IsolationPolicy
from stockade.model import Namespace, Pod
from stockade.ruleset import (
    NodeRuleSet,
    PeerMatch,
    TierRule,
    node_rule_set_from_dict,
    node_rule_set_to_dict,
)
from tests.unit.strategies import (
    NAMESPACES,
    NODES,
    cluster_network_policy,
    isolation_policy,
    namespace,
    node,
    pod,
    policy,
)
from tests.unit.test_compiler import replay_and_compare

Raw = dict[str, Any]


@st.composite
def isolation_events(draw: st.DrawFn) -> list[tuple[str, Raw | tuple[str, str]]]:
    """Upserts and deletes of every kind, IsolationPolicies and relabels included."""
    events: list[tuple[str, Raw | tuple[str, str]]] = []
    for _ in range(draw(st.integers(1, 30))):
        what = draw(
            st.sampled_from(("pod", "pod", "pod", "ns", "ns", "np", "cnp", "iso", "iso", "node"))
            | st.sampled_from(("del", "flush"))
        )
        if what == "pod":
            events.append(("upsert", draw(pod(draw(st.integers(0, 4))))))
        elif what == "ns":
            events.append(("upsert", draw(namespace(draw(st.sampled_from(NAMESPACES))))))
        elif what == "np":
            events.append(("upsert", draw(policy(draw(st.integers(0, 1))))))
        elif what == "cnp":
            events.append(("upsert", draw(cluster_network_policy(draw(st.integers(0, 1))))))
        elif what == "iso":
            events.append(("upsert", draw(isolation_policy(draw(st.integers(0, 1))))))
        elif what == "node":
            events.append(("upsert", draw(node(draw(st.sampled_from(NODES))))))
        elif what == "del":
            kind = draw(
                st.sampled_from(("Pod", "Namespace", "ClusterNetworkPolicy", "IsolationPolicy"))
            )
            if kind == "Pod":
                key = f"{draw(st.sampled_from(NAMESPACES))}/p{draw(st.integers(0, 4))}"
            elif kind == "Namespace":
                key = draw(st.sampled_from(NAMESPACES))
            else:
                key = draw(st.sampled_from(("cnp0", "cnp1", "iso0", "iso1")))
            events.append(("delete", (kind, key)))
        else:
            events.append(("flush", ("", "")))
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=isolation_events(), shard_size=st.sampled_from((1, 1000)))
def test_any_isolation_event_sequence_gives_the_full_compile_of_the_final_state(
    events: list[tuple[str, Raw | tuple[str, str]]], shard_size: int
) -> None:
    replay_and_compare(events, shard_size)


# --- rule count and sets -------------------------------------------------------------


def _ns(name: str, **labels: str) -> Namespace:
    return Namespace(name, {"kubernetes.io/metadata.name": name, **labels})


def _pod(key: str, node_name: str, ip: str, **labels: str) -> Pod:
    ns, name = key.split("/")
    return Pod(ns, name, labels, node_name, (ip,))


def _iso(peers: list[Raw], name: str = "iso") -> IsolationPolicy:
    return isolation_policy_with(
        [
            {"name": "same", "action": "Accept", "from": peers},
            {"name": "rest", "action": "Deny", "from": [{"namespaces": {}}]},
        ],
        name,
    )


def isolation_policy_with(ingress: list[Raw], name: str = "iso") -> IsolationPolicy:
    """An Admin IsolationPolicy over every namespace with these ingress rules."""
    obj = parse_input(
        {
            "apiVersion": "stockade.dev/v1alpha1",
            "kind": "IsolationPolicy",
            "metadata": {"name": name},
            "spec": {
                "tier": "Admin",
                "priority": 1,
                "subject": {"namespaces": {}},
                "ingress": ingress,
            },
        }
    )
    assert isinstance(obj, IsolationPolicy)
    return obj


def _rules(rs: NodeRuleSet, pod: str) -> tuple[TierRule, ...]:
    """The ingress rules of the node's one cluster policy as the subject ``pod`` sees them."""
    (ncp,) = rs.cluster_policies
    return ncp.for_subject(pod).ingress


def _same_rules(rs: NodeRuleSet) -> list[TierRule]:
    """The rules by sameness of every variant of the node's one cluster policy."""
    (ncp,) = rs.cluster_policies
    return [r for v in ncp.variants for r in v.ingress]


DEPT = {"pods": {"sameLabels": ["dept"], "namespaceSelector": {}}}


def test_one_rule_per_distinct_value_of_the_local_subjects() -> None:
    """n1 has 40 pods over 3 departments (and 2 without the key); the cluster has 400
    more pods elsewhere: n1 gets 3 rules for rule 0, whatever the cluster size."""
    compiler = Compiler()
    compiler.upsert(_ns("a"))
    for i in range(40):
        dept = ("qa", "eng", "ops")[i % 3]
        compiler.upsert(_pod(f"a/p{i}", "n1", f"10.0.1.{i + 1}", dept=dept))
    compiler.upsert(_pod("a/nodept1", "n1", "10.0.1.200"))
    compiler.upsert(_pod("a/nodept2", "n1", "10.0.1.201"))
    for i in range(400):
        dept = f"d{i % 50}"
        compiler.upsert(_pod(f"a/far{i}", "n2", f"10.0.{2 + i // 200}.{i % 200 + 1}", dept=dept))
    compiler.upsert(_iso([DEPT]))
    result = compiler.result()
    n1 = result.node_rule_sets["n1"]
    same = _same_rules(n1)
    assert [r.index for r in same] == [0, 0, 0]
    (ncp,) = n1.cluster_policies
    assert [r.index for r in ncp.policy.ingress] == [1]
    assert len(ncp.variants) == 4  # three departments, and none for the pods without one
    by_reason = {r.same[0].reason: r for r in same}
    assert sorted(by_reason) == [
        "same value of dept (eng)",
        "same value of dept (ops)",
        "same value of dept (qa)",
    ]
    qa = by_reason["same value of dept (qa)"]
    assert [p for p in ncp.targets if qa in ncp.for_subject(p).ingress] == sorted(
        f"a/p{i}" for i in range(40) if i % 3 == 0
    )
    assert [r.index for r in _rules(n1, "a/p0")] == [0, 1]
    assert [r.index for r in _rules(n1, "a/nodept1")] == [1]
    (peer,) = qa.peers
    assert peer.peer_set is not None
    members = {m.pod for ps in result.shards(peer.peer_set) for m in ps.members}
    assert members == {f"a/p{i}" for i in range(40) if i % 3 == 0}
    # n2: 50 values among its 400 subjects; the rule count is the values', not the pods'.
    assert len(_same_rules(result.node_rule_sets["n2"])) == 50


def test_sets_per_value_are_shared_between_rules_policies_and_nodes() -> None:
    compiler = Compiler()
    compiler.upsert(_ns("a"))
    compiler.upsert(_pod("a/x", "n1", "10.0.1.1", dept="qa"))
    compiler.upsert(_pod("a/y", "n2", "10.0.2.1", dept="qa"))
    compiler.upsert(_iso([DEPT], "one"))
    compiler.upsert(_iso([DEPT, {"namespaces": {"sameAs": "Self"}}], "two"))
    result = compiler.result()
    names = set()
    for node_name in ("n1", "n2"):
        for ncp in result.node_rule_sets[node_name].cluster_policies:
            names.add(ncp.variants[0].ingress[0].peers[0])
    assert len(names) == 1  # one set for dept=qa, used by both policies on both nodes
    (match,) = names
    assert match.peer_set in result.node_rule_sets["n1"].peer_sets


def test_a_relabel_moves_a_pod_between_value_sets_and_groups() -> None:
    compiler = Compiler()
    compiler.upsert(_ns("a"))
    compiler.upsert(_pod("a/x", "n1", "10.0.1.1", dept="qa"))
    compiler.upsert(_pod("a/y", "n1", "10.0.1.2", dept="eng"))
    compiler.upsert(_iso([DEPT]))
    before = compiler.result()
    sets_before = {r.same[0].reason: r.peers[0] for r in _same_rules(before.node_rule_sets["n1"])}
    compiler.upsert(_pod("a/y", "n1", "10.0.1.2", dept="qa"))
    changes = compiler.flush()
    after = compiler.result()
    (ncp,) = after.node_rule_sets["n1"].cluster_policies
    assert len(ncp.variants) == 1  # both in one group again
    rules = _rules(after.node_rule_sets["n1"], "a/y")
    assert [r.index for r in rules] == [0, 1]
    assert rules[0].peers == (sets_before["same value of dept (qa)"],)
    qa = sets_before["same value of dept (qa)"].peer_set
    eng = sets_before["same value of dept (eng)"].peer_set
    assert qa is not None
    assert eng is not None
    assert {m.pod for ps in after.shards(qa) for m in ps.members} == {"a/x", "a/y"}
    assert after.shards(eng) == ()  # no subject with dept=eng is left: the set goes
    assert changes.peer_sets[f"{eng}-0"] is None


def test_a_namespace_relabel_regroups_its_subjects() -> None:
    tenant = {"namespaces": {"sameLabels": ["tenant"]}}
    compiler = Compiler()
    compiler.upsert(_ns("a", tenant="acme"))
    compiler.upsert(_ns("b", tenant="acme"))
    compiler.upsert(_pod("a/x", "n1", "10.0.1.1"))
    compiler.upsert(_pod("b/y", "n2", "10.0.2.1"))
    compiler.upsert(_iso([tenant]))
    first = compiler.result()
    assert (
        _rules(first.node_rule_sets["n1"], "a/x")[0].same[0].reason
        == "same namespace labels tenant=acme"
    )
    compiler.upsert(_ns("a", tenant="globex"))
    compiler.flush()
    after = compiler.result()
    rule = _rules(after.node_rule_sets["n1"], "a/x")[0]
    assert rule.same[0].reason == "same namespace labels tenant=globex"
    assert rule.peers[0].peer_set is not None
    assert {m.pod for ps in after.shards(rule.peers[0].peer_set) for m in ps.members} == {"a/x"}
    assert after == compile_cluster(
        [
            _ns("a", tenant="globex"),
            _ns("b", tenant="acme"),
            _pod("a/x", "n1", "10.0.1.1"),
            _pod("b/y", "n2", "10.0.2.1"),
            _iso([tenant]),
        ]
    )


def test_a_subject_without_the_key_gets_no_rule_by_sameness() -> None:
    compiler = Compiler()
    compiler.upsert(_ns("a"))
    compiler.upsert(_pod("a/x", "n1", "10.0.1.1", dept="qa"))
    compiler.upsert(_pod("a/bare", "n1", "10.0.1.2"))
    compiler.upsert(_iso([DEPT]))
    n1 = compiler.result().node_rule_sets["n1"]
    assert [r.index for r in _rules(n1, "a/x")] == [0, 1]
    assert [r.index for r in _rules(n1, "a/bare")] == [1]


def test_ordinary_and_sameness_peers_keep_their_order() -> None:
    ordinary = {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "x"}}}}
    compiler = Compiler()
    compiler.upsert(_ns("a"))
    compiler.upsert(_pod("a/x", "n1", "10.0.1.1", dept="qa"))
    compiler.upsert(_pod("a/bare", "n1", "10.0.1.2"))
    compiler.upsert(_iso([ordinary, DEPT]))
    n1 = compiler.result().node_rule_sets["n1"]
    bare, x = _rules(n1, "a/bare")[0], _rules(n1, "a/x")[0]
    assert [(len(r.peers), len(r.same)) for r in (bare, x)] == [(1, 0), (2, 1)]
    assert x.peers[0] == bare.peers[0]
    assert isinstance(x.peers[1], PeerMatch)
    assert x.same[0].peer_set == x.peers[1].peer_set


def test_a_deleted_isolation_policy_releases_its_sets() -> None:
    compiler = Compiler()
    compiler.upsert(_ns("a"))
    compiler.upsert(_pod("a/x", "n1", "10.0.1.1", dept="qa"))
    compiler.upsert(_iso([DEPT]))
    assert compiler.result().peer_sets
    compiler.delete("IsolationPolicy", "iso")
    assert not compiler.result().peer_sets
    assert compiler.result().node_rule_sets["n1"].cluster_policies == ()


def test_a_variant_is_one_object_for_every_node_that_has_it() -> None:
    """Subjects of one value on two nodes see the very same rules: the compiler builds
    each distinct variant once for the cluster, not once per node."""
    compiler = Compiler()
    compiler.upsert(_ns("a"))
    for i in range(4):
        compiler.upsert(_pod(f"a/q{i}", f"n{i % 2 + 1}", f"10.0.{i % 2 + 1}.{i + 1}", dept="qa"))
    compiler.upsert(_iso([DEPT]))
    result = compiler.result()
    (one,) = result.node_rule_sets["n1"].cluster_policies
    (two,) = result.node_rule_sets["n2"].cluster_policies
    assert one.variant_of == two.variant_of == (0, 0)
    assert one.variants[0] is two.variants[0]


def test_policies_with_the_same_rules_share_their_variants_and_part_cleanly() -> None:
    """Two IsolationPolicies with equal rules by sameness are expanded once for both
    (one memo); editing one, then deleting the other, compiles as from scratch."""
    same_ns = {"namespaces": {"sameAs": "Self"}}
    docs: list[Any] = [_ns("a"), _ns("b")]
    for i in range(6):
        ns = "ab"[i % 2]
        docs.append(_pod(f"{ns}/p{i}", f"n{i % 2}", f"10.0.{i % 2}.{i + 1}", dept=f"d{i % 3}"))
    compiler = Compiler()
    for doc in [*docs, _iso([DEPT], "one"), _iso([DEPT], "two")]:
        compiler.upsert(doc)
    (one, two) = compiler.result().node_rule_sets["n0"].cluster_policies
    assert one.variants == two.variants
    assert all(a is b for a, b in zip(one.variants, two.variants, strict=True))
    compiler.upsert(_iso([DEPT, same_ns], "two"))
    assert compiler.result() == compile_cluster(
        [*docs, _iso([DEPT], "one"), _iso([DEPT, same_ns], "two")]
    )
    compiler.delete("IsolationPolicy", "one")
    compiler.upsert(_iso([DEPT], "two"))
    assert compiler.result() == compile_cluster([*docs, _iso([DEPT], "two")])


def test_a_small_memo_forgets_and_compiles_the_same(monkeypatch: Any) -> None:
    """Past its bound the memo is forgotten between nodes: the output is unchanged."""
    docs: list[Any] = [_ns("a"), _ns("b", tenant="t")]
    for i in range(30):
        ns = "ab"[i % 2]
        docs.append(_pod(f"{ns}/p{i}", f"n{i % 3}", f"10.0.{i % 3}.{i + 1}", dept=f"d{i % 7}"))
    same_ns = {"namespaces": {"sameAs": "Self"}}
    docs.append(_iso([DEPT, same_ns]))
    expected = compile_cluster(docs)
    monkeypatch.setattr("stockade.compiler.MEMO_LIMIT", 2)
    assert compile_cluster(docs) == expected


def test_a_rule_set_whose_variants_do_not_fit_its_targets_is_refused() -> None:
    """A NodeRuleSet from the API is checked: a variant index per target, in range."""
    compiler = Compiler()
    compiler.upsert(_ns("a"))
    compiler.upsert(_pod("a/x", "n1", "10.0.1.1", dept="qa"))
    compiler.upsert(_pod("a/y", "n1", "10.0.1.2", dept="eng"))
    compiler.upsert(_iso([DEPT]))
    good = node_rule_set_to_dict(compiler.result().node_rule_sets["n1"])
    assert node_rule_set_from_dict(good).cluster_policies[0].variant_of == (0, 1)
    for bad in ([0], [0, 2], [0, -1]):
        raw = copy.deepcopy(good)
        raw["clusterPolicies"][0]["variantOf"] = bad
        with pytest.raises(ValidationError, match="variant"):
            node_rule_set_from_dict(raw)


def test_for_subject_merges_the_variant_in_the_order_written() -> None:
    ordinary = {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "x"}}}}
    policy = isolation_policy_with(
        [
            {"action": "Deny", "from": [ordinary]},
            {"action": "Accept", "from": [DEPT]},
            {"action": "Pass", "from": [{"namespaces": {"sameAs": "Self"}}]},
            {"action": "Deny", "from": [{"namespaces": {}}]},
        ]
    )
    compiler = Compiler()
    compiler.upsert(_ns("a"))
    compiler.upsert(_pod("a/x", "n1", "10.0.1.1", dept="qa"))
    compiler.upsert(_pod("a/bare", "n1", "10.0.1.2"))
    compiler.upsert(policy)
    (ncp,) = compiler.result().node_rule_sets["n1"].cluster_policies
    assert [r.index for r in ncp.policy.ingress] == [0, 3]
    assert [r.index for r in ncp.for_subject("a/x").ingress] == [0, 1, 2, 3]
    assert [r.index for r in ncp.for_subject("a/bare").ingress] == [0, 2, 3]
    assert [(v is None, m) for v, m in ncp.subjects_by_variant()] == [
        (False, ("a/bare",)),
        (False, ("a/x",)),
    ]
