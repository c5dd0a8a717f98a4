"""The benchmarks' IsolationPolicy scenario (bench.synth, bench.engine, bench.agent), tiny."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from bench import agent, engine
from bench.synth import GROUP_LABEL, PROJECT_LABEL, EventMaker, Params, generate

from stockade.cluster import parse_input
from stockade.isolation import IsolationPolicy, SamePeer
from stockade.verdict import NodeEvaluator, SetIndex

PLAIN = Params(pods=600, namespaces=30, nodes=6, policies=80, cnps=10, node_objects=8)
TINY = dataclasses.replace(PLAIN, isolation_policies=12, group_values=40)


def _strip(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for obj in objects:
        copied = json.loads(json.dumps(obj))
        labels = copied["metadata"].get("labels", {})
        labels.pop(GROUP_LABEL, None)
        labels.pop(PROJECT_LABEL, None)
        out.append(copied)
    return out


def test_synth_isolation_policies_are_valid_and_mix_every_sameness() -> None:
    cluster = generate(TINY)
    assert len(cluster.isolation_policies) == 12
    policies = [parse_input(raw) for raw in cluster.isolation_policies]
    assert all(isinstance(p, IsolationPolicy) for p in policies)
    typed = [p for p in policies if isinstance(p, IsolationPolicy)]
    assert {p.tier for p in typed} == {"Admin", "Baseline"}
    rules = [r for p in typed for r in (*p.ingress, *p.egress)]
    assert {r.action for r in rules} == {"Accept", "Deny", "Pass"}
    same = [peer for r in rules for peer in r.peers if isinstance(peer, SamePeer)]
    forms = {(p.scope, p.keys, p.in_namespaces is None) for p in same}
    assert ("namespaces", (), True) in forms  # sameAs: Self
    assert ("namespaces", (PROJECT_LABEL,), True) in forms
    assert ("pods", (GROUP_LABEL,), False) in forms  # across the cluster
    assert ("pods", (GROUP_LABEL,), True) in forms  # in the subject's namespace
    assert any(len(p.keys) == 2 for p in same)
    assert any(p.also is not None for p in same)
    assert cluster.objects()[-12:] == cluster.isolation_policies


def test_synth_groups_spread_over_every_value_and_leave_the_rest_unchanged() -> None:
    cluster = generate(TINY)
    values = {p["metadata"]["labels"].get(GROUP_LABEL) for p in cluster.pods} - {None}
    assert len(values) == TINY.group_values
    tenants = [n for n in cluster.namespaces if n["metadata"]["labels"].get("tier") != "system"]
    assert all(PROJECT_LABEL in n["metadata"]["labels"] for n in tenants)
    plain = generate(PLAIN)
    assert plain.isolation_policies == []
    assert _strip(plain.pods) == _strip(cluster.pods)
    assert _strip(plain.namespaces) == _strip(cluster.namespaces)
    assert plain.policies == cluster.policies
    assert plain.cluster_policies == cluster.cluster_policies
    with pytest.raises(ValueError, match="group_values"):
        generate(dataclasses.replace(TINY, group_values=0))


def test_event_maker_regroups_a_pod_into_an_existing_group() -> None:
    cluster = generate(TINY)
    before = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in cluster.pods}
    values = {p["metadata"]["labels"].get(GROUP_LABEL) for p in cluster.pods} - {None}
    maker = EventMaker(cluster)
    for _ in range(5):
        pod = maker.pod_regrouped()
        old = before[f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"]
        new_labels, old_labels = pod["metadata"]["labels"], old["metadata"]["labels"]
        assert new_labels[GROUP_LABEL] != old_labels[GROUP_LABEL]
        assert new_labels[GROUP_LABEL] in values
        assert {k: v for k, v in new_labels.items() if k != GROUP_LABEL} == {
            k: v for k, v in old_labels.items() if k != GROUP_LABEL
        }
    with pytest.raises(RuntimeError, match="two groups"):
        EventMaker(generate(PLAIN)).pod_regrouped()


def test_engine_reports_isolation_beside_the_cluster_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "ROOT", tmp_path)
    monkeypatch.setattr(engine, "RESULTS", tmp_path)
    tiny = dataclasses.replace(PLAIN, cnps=0, group_values=40)
    monkeypatch.setitem(engine.SCALES, "tiny", tiny)
    monkeypatch.setitem(engine.MEMORY_TARGET_MB, "tiny", 600.0)
    monkeypatch.setitem(engine.CNPS_DEFAULT, "tiny", 10)
    monkeypatch.setitem(engine.ISOLATION_DEFAULT, "tiny", 0)
    argv = ["--scale", "tiny", "--events", "3", "--repeats", "1", "--no-memory"]
    # A tiny cluster may miss the targets: only the shape of the result.
    assert engine.main([*argv, "--isolation", "6", "--skip-policies-first"]) in (0, 1)
    result: dict[str, Any] = json.loads((tmp_path / "tiny.json").read_text())
    iso = result["isolation"]
    assert iso["objects_by_kind"]["isolation_policies"] == 6
    assert iso["objects_by_kind"]["cluster_network_policies"] == 10
    assert iso["params"]["group_values"] == 40
    assert engine.ISOLATION_EVENT in [ev["kind"] for ev in iso["events"]]
    assert engine.ISOLATION_EVENT not in [ev["kind"] for ev in result["tiers"]["events"]]
    for key in ("compile_over_parse", engine.ISOLATION_EVENT):
        assert f"isolation: {key}" in result["pass"]
    assert engine.scale_params("tiny", 10, 6).isolation_policies == 6
    assert engine.scale_params("tiny", 10, 0).group_values == 0


def test_packet_isolation_keeps_the_measured_verdicts() -> None:
    node, peer_sets, shape = agent.packet_ruleset(40, 8)
    assert shape["isolation_policies"] > 0
    assert shape["isolation_sameness_rules"] > 0
    policies = [ncp.policy for ncp in node.cluster_policies]
    assert [p.order for p in policies] == sorted(p.order for p in policies)
    local = {p.name for p in node.pods}
    assert all(set(ncp.targets) <= local for ncp in node.cluster_policies)
    assert set(node.peer_sets) == set(peer_sets)
    evaluator = NodeEvaluator(node, SetIndex(s for shards in peer_sets.values() for s in shards))
    assert evaluator.allows(agent.CLIENT_IP, agent.SERVER_IP, agent.SERVER_PORT, "TCP")
    assert not evaluator.allows(agent.OTHER_IP, agent.SERVER_IP, agent.SERVER_PORT, "TCP")


def test_isolation_node_relabels_remote_and_local_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    small = dataclasses.replace(TINY, nodes=3, isolation_policies=8)
    monkeypatch.setattr(agent, "ISO_PARAMS", small)
    state = agent.isolation_node(8)
    assert state.node.cluster_policies
    for local in (False, True):
        key, old, new = agent._mover(state, local=local)
        assert old != new
        assert (state.pods[key]["spec"]["nodeName"] == state.name) == local
        before = state.node
        raw = agent._relabelled(state.pods[key], new)
        state.pods[key] = raw
        _, changes = state.update(raw)
        assert changes.peer_sets  # the pod left one group's sets for another's
        assert (state.node != before) == local  # a subject's guard changes, a peer's not
        assert set(state.peer_sets()) == set(state.node.peer_sets)


def test_the_kept_mover_takes_a_sibling_s_labels_and_leaves_a_twin() -> None:
    state = agent.isolation_node(20)  # the bench's own cluster: its node has such pods
    found = agent._kept_mover(state)
    assert found is not None
    key, old, new = found
    pod = state.pods[key]
    assert pod["spec"]["nodeName"] == state.name
    assert pod["metadata"]["labels"] == old
    ns = pod["metadata"]["namespace"]
    local = [
        p
        for k, p in state.pods.items()
        if k != key and p["spec"]["nodeName"] == state.name and p["metadata"]["namespace"] == ns
    ]
    assert any(p["metadata"]["labels"] == old for p in local)  # its group stays
    assert any(p["metadata"]["labels"] == new for p in local)  # the other one exists
    assert old[GROUP_LABEL] != new[GROUP_LABEL]
