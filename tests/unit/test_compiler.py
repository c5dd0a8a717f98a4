"""The compiler: incremental equals full, determinism, change reports, sharding."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.cluster import Cluster, parse_documents, parse_input
from stockade.cnp import ClusterInput, ClusterNetworkPolicy, NodeInfo
from stockade.compiler import CompiledCluster, Compiler, compile_cluster
from stockade.model import Namespace, NetworkPolicy, Pod, parse_object
from stockade.ruleset import (
    canonical_json,
    node_rule_set_from_dict,
    node_rule_set_to_dict,
    peer_set_from_dict,
    peer_set_to_dict,
)
from tests.unit.strategies import NAMESPACES, cluster_docs, namespace, pod, policy

Raw = dict[str, Any]


def _objects(docs: list[Raw]) -> list[ClusterInput]:
    result = parse_documents(docs)
    assert not result.errors
    return list(result.objects)


def _key(obj: ClusterInput) -> tuple[str, str]:
    """The (kind, key) that Compiler.delete takes for ``obj``."""
    if isinstance(obj, Pod):
        return ("Pod", obj.key)
    if isinstance(obj, Namespace):
        return ("Namespace", obj.name)
    if isinstance(obj, ClusterNetworkPolicy):
        return (obj.kind, obj.name)
    if isinstance(obj, NodeInfo):
        return ("Node", obj.name)
    return ("NetworkPolicy", obj.key)


def _serialise(compiled: CompiledCluster) -> str:
    return canonical_json(
        {
            "nodes": {n: node_rule_set_to_dict(rs) for n, rs in compiled.node_rule_sets.items()},
            "sets": {n: peer_set_to_dict(ps) for n, ps in compiled.peer_sets.items()},
        }
    )


@st.composite
def event_sequences(draw: st.DrawFn) -> list[tuple[str, Raw | tuple[str, str]]]:
    """Upserts (often of an object seen before, changed) and deletes, with flushes."""
    events: list[tuple[str, Raw | tuple[str, str]]] = []
    for _ in range(draw(st.integers(1, 30))):
        what = draw(
            st.sampled_from(("pod", "pod", "pod", "ns", "policy", "policy", "del", "flush"))
        )
        if what == "pod":
            events.append(("upsert", draw(pod(draw(st.integers(0, 5))))))
        elif what == "ns":
            events.append(("upsert", draw(namespace(draw(st.sampled_from(NAMESPACES))))))
        elif what == "policy":
            events.append(("upsert", draw(policy(draw(st.integers(0, 3))))))
        elif what == "del":
            kind = draw(st.sampled_from(("Pod", "Namespace", "NetworkPolicy")))
            ns = draw(st.sampled_from(NAMESPACES))
            if kind == "Namespace":
                events.append(("delete", (kind, ns)))
            else:
                name = ("p" if kind == "Pod" else "np") + str(draw(st.integers(0, 5)))
                events.append(("delete", (kind, f"{ns}/{name}")))
        else:
            events.append(("flush", ("", "")))
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_sequences(), shard_size=st.sampled_from((1, 2, 1000)))
def test_any_event_sequence_gives_the_full_compile_of_the_final_state(
    events: list[tuple[str, Raw | tuple[str, str]]], shard_size: int
) -> None:
    replay_and_compare(events, shard_size)


def replay_and_compare(events: list[tuple[str, Raw | tuple[str, str]]], shard_size: int) -> None:
    """Feed ``events`` to one Compiler, flushing where asked; every reported change
    must be a change, and what was published must equal a full compile of the end."""
    compiler = Compiler(shard_size)
    state: dict[tuple[str, str], ClusterInput] = {}
    published_nodes: dict[str, Any] = {}
    published_sets: dict[str, Any] = {}

    def publish() -> None:
        changes = compiler.flush()
        for name, rs in changes.nodes.items():
            assert published_nodes.get(name) != rs, "a reported change must be a change"
            if rs is None:
                published_nodes.pop(name)
            else:
                published_nodes[name] = rs
        for name, ps in changes.peer_sets.items():
            assert published_sets.get(name) != ps, "a reported change must be a change"
            if ps is None:
                published_sets.pop(name)
            else:
                published_sets[name] = ps

    for op, payload in events:
        if op == "upsert":
            assert isinstance(payload, dict)
            obj = parse_input(payload)
            state[_key(obj)] = obj
            compiler.upsert(obj)
        elif op == "delete":
            assert isinstance(payload, tuple)
            state.pop(payload, None)
            compiler.delete(*payload)
        else:
            publish()
    publish()
    full = compile_cluster(state.values(), shard_size)
    assert _serialise(compiler.result()) == _serialise(full)
    assert published_nodes == dict(full.node_rule_sets)
    assert published_sets == dict(full.peer_sets)


@settings(max_examples=100, deadline=None)
@given(docs=cluster_docs(), seed=st.integers(0, 2**32))
def test_output_is_byte_identical_whatever_the_arrival_order(docs: list[Raw], seed: int) -> None:
    objects = _objects(docs)
    shuffled = list(objects)
    random.Random(seed).shuffle(shuffled)
    assert _serialise(compile_cluster(objects)) == _serialise(compile_cluster(shuffled))


@settings(max_examples=100, deadline=None)
@given(docs=cluster_docs())
def test_rule_sets_round_trip_through_their_json_form(docs: list[Raw]) -> None:
    compiled = compile_cluster(_objects(docs))
    for rs in compiled.node_rule_sets.values():
        assert node_rule_set_from_dict(json.loads(json.dumps(node_rule_set_to_dict(rs)))) == rs
    for ps in compiled.peer_sets.values():
        assert peer_set_from_dict(json.loads(json.dumps(peer_set_to_dict(ps)))) == ps


def _pod(name: str, ns: str, node: str, ip: str, **labels: str) -> Pod:
    return parse_object(
        {
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node},
            "status": {"podIP": ip, "phase": "Running"},
        }
    )  # type: ignore[return-value]


def _policy(ns: str, name: str, spec: Raw) -> NetworkPolicy:
    obj = parse_object(
        {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec}
    )
    assert isinstance(obj, NetworkPolicy)
    return obj


DB_POLICY = {
    "podSelector": {"matchLabels": {"app": "db"}},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
}


def test_a_peer_pod_event_changes_the_peer_set_and_no_rule_set() -> None:
    compiler = Compiler()
    compiler.upsert(_pod("db", "prod", "n1", "10.0.1.2", app="db"))
    compiler.upsert(_policy("prod", "db", DB_POLICY))
    compiler.flush()
    changes = compiler.flush()
    assert not changes, "a flush with no event reports nothing"
    compiler.upsert(_pod("web", "prod", "n2", "10.0.2.2", app="web"))
    changes = compiler.flush()
    assert list(changes.nodes) == ["n2"]  # n2 appears (empty), n1 is untouched
    rs = changes.nodes["n2"]
    assert rs is not None
    assert rs.policies == ()
    (shard,) = changes.peer_sets.values()
    assert shard is not None
    assert [m.pod for m in shard.members] == ["prod/web"]


def test_a_target_pod_event_changes_only_its_node() -> None:
    compiler = Compiler()
    compiler.upsert(_policy("prod", "db", DB_POLICY))
    compiler.upsert(_pod("db1", "prod", "n1", "10.0.1.2", app="db"))
    compiler.upsert(_pod("db2", "prod", "n2", "10.0.2.2", app="db"))
    compiler.flush()
    compiler.upsert(_pod("db3", "prod", "n2", "10.0.2.3", app="db"))
    changes = compiler.flush()
    assert list(changes.nodes) == ["n2"]
    assert not changes.peer_sets
    rs = changes.nodes["n2"]
    assert rs is not None
    assert rs.policies[0].targets == ("prod/db2", "prod/db3")


def test_a_relabelled_namespace_moves_its_pods_in_and_out_of_namespace_selected_sets() -> None:
    compiler = Compiler()
    compiler.upsert(
        _policy(
            "prod",
            "db",
            {
                "podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}]}],
            },
        )
    )
    compiler.upsert(_pod("api", "other", "n1", "10.0.1.9", app="api"))
    compiler.flush()
    compiler.upsert(Namespace("other", {"team": "x", "kubernetes.io/metadata.name": "other"}))
    (shard,) = compiler.flush().peer_sets.values()
    assert shard is not None
    assert [m.pod for m in shard.members] == ["other/api"]
    compiler.delete("Namespace", "other")
    (shard,) = compiler.flush().peer_sets.values()
    assert shard is not None
    assert shard.members == ()


def test_shards_are_bounded_and_cover_every_member() -> None:
    pods = [
        _pod(f"p{i}", "ns", "n1", f"10.0.{i // 250}.{i % 250 + 1}", app="web") for i in range(700)
    ]
    policy_obj = _policy(
        "ns",
        "np",
        {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
        },
    )
    compiled = compile_cluster(Cluster.of([*pods, policy_obj]), shard_size=100)
    (set_name,) = compiled.by_set()
    shards = compiled.shards(set_name)
    assert len(shards) >= 8
    assert all(len(s.members) <= 100 for s in shards)
    assert {s.shards for s in shards} == {len(shards)}
    assert sorted(m.pod for s in shards for m in s.members) == sorted(p.key for p in pods)


def test_a_deleted_policy_takes_its_peer_sets_with_it() -> None:
    compiler = Compiler()
    compiler.upsert(_pod("db", "prod", "n1", "10.0.1.2", app="db"))
    compiler.upsert(_policy("prod", "db", DB_POLICY))
    first = compiler.flush()
    assert len(first.peer_sets) == 1
    compiler.delete("NetworkPolicy", "prod/db")
    changes = compiler.flush()
    assert list(changes.peer_sets.values()) == [None]
    rs = changes.nodes["n1"]
    assert rs is not None
    assert rs.policies == ()
    assert rs.pods == ()


def test_equal_selectors_share_one_peer_set() -> None:
    spec_a = {
        "podSelector": {},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
    }
    spec_b = {
        "podSelector": {},
        "ingress": [
            {
                "from": [
                    {
                        "podSelector": {
                            "matchExpressions": [
                                {"key": "app", "operator": "In", "values": ["web"]}
                            ]
                        }
                    }
                ]
            }
        ],
    }
    compiled = compile_cluster([_policy("ns", "a", spec_a), _policy("ns", "b", spec_b)])
    assert len(compiled.by_set()) == 1
