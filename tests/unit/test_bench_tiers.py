"""The benchmarks' ClusterNetworkPolicy scenario (bench.synth, bench.engine), tiny and fast."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from bench import agent, engine
from bench.synth import EventMaker, Params, generate
from rich.console import Console

from stockade.agent.render import DISPATCH_FANOUT, RenderOptions, render
from stockade.cluster import parse_input
from stockade.cnp import ClusterNetworkPolicy, NodeInfo
from stockade.compiler import compile_cluster
from stockade.verdict import NodeEvaluator, SetIndex

TINY = Params(pods=300, namespaces=20, nodes=6, policies=60, cnps=24, node_objects=9)


def _peer_kinds(cnp: ClusterNetworkPolicy) -> set[str]:
    return {peer.field for rule in (*cnp.ingress, *cnp.egress) for peer in rule.peers}


def test_synth_cluster_policies_are_valid_and_mix_everything() -> None:
    cluster = generate(TINY)
    assert len(cluster.cluster_policies) == 24
    assert len(cluster.nodes) == 9  # node_objects: more Nodes than nodes with pods
    cnps = [parse_input(raw) for raw in cluster.cluster_policies]
    assert all(isinstance(c, ClusterNetworkPolicy) for c in cnps)
    typed = [c for c in cnps if isinstance(c, ClusterNetworkPolicy)]
    assert {c.tier for c in typed} == {"Admin", "Baseline"}
    assert all(len(c.ingress) + len(c.egress) == 5 for c in typed)
    assert all(0 <= c.priority <= 1000 for c in typed)
    assert set().union(*(_peer_kinds(c) for c in typed)) == {
        "namespaces",
        "pods",
        "networks",
        "nodes",
    }
    rules = [r for c in typed for r in (*c.ingress, *c.egress)]
    assert {r.action for r in rules} == {"Accept", "Deny", "Pass"}
    protocols = [p for r in rules for p in r.protocols]
    assert {p.protocol for p in protocols if p.protocol} == {"TCP", "UDP", "SCTP"}
    assert any(p.named_port for p in protocols)
    assert any(p.end_port != p.port for p in protocols if p.protocol)
    assert any(not r.protocols for r in rules)  # all traffic
    nets = {str(n) for r in rules for p in r.peers for n in p.networks}
    assert any(":" in n for n in nets)
    assert any("." in n for n in nets)
    nodes = [parse_input(raw) for raw in cluster.nodes]
    assert all(isinstance(n, NodeInfo) and n.addresses and n.labels for n in nodes)


def test_synth_network_policy_part_is_unchanged_by_cnps() -> None:
    plain = generate(Params(pods=300, namespaces=20, nodes=6, policies=60))
    tiered = generate(TINY)
    assert plain.nodes == []
    assert plain.cluster_policies == []
    assert plain.namespaces == tiered.namespaces
    assert plain.pods == tiered.pods
    assert plain.policies == tiered.policies


def test_cluster_policies_reach_the_node_rule_sets() -> None:
    compiled = compile_cluster(engine.parse_all(generate(TINY).objects()))
    assert any(n.cluster_policies for n in compiled.node_rule_sets.values())
    assert any(ps.selector.node_selector for ps in compiled.peer_sets.values())


def test_event_maker_cluster_policy_and_node_events_are_valid() -> None:
    cluster = generate(TINY)
    maker = EventMaker(cluster)
    before = {c["metadata"]["name"]: c for c in cluster.cluster_policies}
    for _ in range(12):  # every kind of edit, three times
        raw = maker.cluster_policy_changed()
        assert isinstance(parse_input(raw), ClusterNetworkPolicy)
        assert raw != before[raw["metadata"]["name"]]
        node = maker.node_relabelled()
        assert isinstance(parse_input(node), NodeInfo)


def test_engine_reports_tiers_beside_network_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "ROOT", tmp_path)
    monkeypatch.setattr(engine, "RESULTS", tmp_path)
    monkeypatch.setitem(engine.SCALES, "tiny", dataclasses.replace(TINY, cnps=0))
    monkeypatch.setitem(engine.MEMORY_TARGET_MB, "tiny", 600.0)
    monkeypatch.setitem(engine.CNPS_DEFAULT, "tiny", 24)
    argv = ["--scale", "tiny", "--events", "3", "--repeats", "1", "--no-memory"]
    # The tiny cluster may miss the event targets (as "small" does): only the shape.
    assert engine.main(argv) in (0, 1)
    result: dict[str, Any] = json.loads((tmp_path / "tiny.json").read_text())
    tiers = result["tiers"]
    assert result["objects_by_kind"]["cluster_network_policies"] == 0
    assert tiers["objects_by_kind"]["cluster_network_policies"] == 24
    assert tiers["objects_by_kind"]["nodes"] == 9
    kinds = [ev["kind"] for ev in tiers["events"]]
    assert "cluster policy changed" in kinds
    assert "node relabelled" in kinds
    assert "cluster policy changed" not in [ev["kind"] for ev in result["events"]]
    for key in ("compile_over_parse", "pod added", "cluster policy changed"):
        assert f"tiers: {key}" in result["pass"]
    assert tiers["outputs"]["cluster_policies_per_node_max"] > 0


def test_engine_cnps_zero_measures_network_policies_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "ROOT", tmp_path)
    monkeypatch.setattr(engine, "RESULTS", tmp_path)
    monkeypatch.setitem(engine.SCALES, "tiny", dataclasses.replace(TINY, cnps=0))
    monkeypatch.setitem(engine.MEMORY_TARGET_MB, "tiny", 600.0)
    argv = ["--scale", "tiny", "--cnps", "0", "--events", "2", "--repeats", "1", "--no-memory"]
    engine.main([*argv, "--skip-policies-first"])
    result = json.loads((tmp_path / "tiny.json").read_text())
    assert result["tiers"] is None
    assert not any(k.startswith("tiers") for k in result["pass"])


def test_memory_child_with_cnps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(engine.SCALES, "tiny", dataclasses.replace(TINY, cnps=0))
    out = engine.memory_child("tiny", 24)
    assert out["objects"] == len(generate(TINY).objects())
    assert out["node_rule_sets"] == TINY.node_objects  # every Node is declared


# ----------------------------------------------------------------------- bench.agent


def test_packet_tiers_mix_everything_and_keep_the_measured_verdicts() -> None:
    node, peer_sets, shape = agent.packet_ruleset(60)
    assert shape["cnps"] == 60
    assert shape["cnp_rules"] == 5 * 60
    assert shape["admin"] > 0
    assert shape["baseline"] > 0
    assert shape["cnp_node_sets"] > 0
    policies = [ncp.policy for ncp in node.cluster_policies]
    assert [p.order for p in policies] == sorted(p.order for p in policies)
    rules = [r for p in policies for r in (*p.ingress, *p.egress)]
    assert {r.action for r in rules} == {"Accept", "Deny", "Pass"}
    assert any(m.cidr for r in rules for m in r.peers)
    assert any(m.named_port_set for r in rules for m in r.ports)
    assert set(node.peer_sets) == set(peer_sets)
    local = {p.name for p in node.pods}
    assert all(set(ncp.targets) <= local for ncp in node.cluster_policies)
    evaluator = NodeEvaluator(node, SetIndex(s for shards in peer_sets.values() for s in shards))
    # What the packet-path checks verify in the kernel, on the pure model.
    assert evaluator.allows(agent.CLIENT_IP, agent.SERVER_IP, agent.SERVER_PORT, "TCP")
    assert evaluator.allows(agent.CLIENT_IP, agent.SERVER_IP, agent.IPERF_PORT, "TCP")
    assert not evaluator.allows(agent.OTHER_IP, agent.SERVER_IP, agent.SERVER_PORT, "TCP")
    assert not evaluator.allows(agent.CLIENT_IP, agent.OTHER_IP, agent.SERVER_PORT, "TCP")
    plain, plain_sets, _ = agent.packet_ruleset()
    plain_eval = NodeEvaluator(plain, SetIndex(s for ss in plain_sets.values() for s in ss))
    assert plain_eval.allows(agent.CLIENT_IP, agent.OTHER_IP, agent.SERVER_PORT, "TCP")


def test_packet_tiers_render_with_tier_chains() -> None:
    node, peer_sets, _ = agent.packet_ruleset(40)
    rendered = render(node, peer_sets, options=RenderOptions())
    shape = agent._dispatch_shape(rendered)
    # One walk down one tree per direction: the client's path, the server's.
    assert 1 < shape["syn_egress_lookups"] <= 1 + 3 * DISPATCH_FANOUT
    assert 1 < shape["syn_ingress_lookups"] <= 1 + 3 * DISPATCH_FANOUT
    tiers = agent._tier_shape(rendered)
    # Short policies are inlined into their groups' chains: few chains, every rule.
    assert tiers["v4_tier_chains"] >= 4
    assert tiers["v4_tier_rules"] > 5 * 40


def test_packet_tiers_need_room_for_the_measured_policies() -> None:
    with pytest.raises(ValueError, match="at least"):
        agent.packet_tiers(10, [("bench/dep000-0", "bench/dep000-1")])


def test_big_node_with_cluster_policies() -> None:
    params = Params(pods=300, namespaces=20, nodes=1, policies=60, cnps=20, node_objects=5)
    state = agent.big_node(RenderOptions(), params=params)
    shape = state.shape()
    assert shape["cluster_policies"] > 0
    assert shape["policies"] > 0
    assert agent.full_params(0) == agent.FULL_PARAMS
    assert agent.full_params(200).cnps == 200
    assert agent.full_params(200).node_objects == agent.FULL_NODE_OBJECTS


def test_agent_report_and_checks_show_the_tiered_figures() -> None:
    full = {
        "backend": "nft",
        "apply_s": 6.0,
        "baseline_s": 4.0,
        "reconcile_s": 4.4,
        "apply_over_baseline": 1.5,
        "reconcile_over_baseline": 1.1,
    }
    packet = {
        "backend": "nft",
        "shape": {"policies": 1000, "cnps": 200},
        "conn_per_s": {"policies": 8_000.0, "none": 10_000.0},
        "throughput_bps": {"policies": 1e10, "none": 1e10},
        "conn_ratio": 0.8,
        "throughput_ratio": 1.0,
        "bulk_tool": "iperf3",
    }
    result: dict[str, Any] = {
        "cnps": 200,
        "full_apply": [full],
        "full_apply_tiers": [{**full, "apply_over_baseline": 1.6}],
        "render": {"render_s": 1.0},
        "render_tiers": {"render_s": 1.2},
        "node_tiers": {"cluster_policies": 180},
        "packet_path": [{**packet, "shape": {"policies": 1000}, "conn_ratio": 0.95}],
        "packet_path_tiers": [packet],
    }
    out = agent.checks(result)
    assert out["full_apply_nft"] is True
    assert out["full_apply_tiers_nft"] is False
    assert out["conn_rate_nft"] is True
    assert out["conn_rate_tiers_nft"] is False
    assert out["throughput_tiers_nft"] is True
    console = Console(width=200, record=True)
    console.print(agent.report_table(result))
    text = console.export_text()
    assert "full apply, + 200 CNPs, 180 on the node (nft)" in text
    assert "1000 policies + 200 CNPs (nft)" in text


def test_antrea_targets_are_judged_against_antreas_own_figures() -> None:
    """At or below Antrea's faster run, under a third of its smaller memory."""
    fast = engine.antrea_checks(engine.ANTREA_SECONDS[0] - 0.01, {"peak_mb": 400.0})
    assert fast == {engine.ANTREA_TIME_CHECK: True, engine.ANTREA_MEMORY_CHECK: True}
    slow = engine.antrea_checks(engine.ANTREA_SECONDS[0] + 0.01, {"peak_mb": 600.0})
    assert slow == {engine.ANTREA_TIME_CHECK: False, engine.ANTREA_MEMORY_CHECK: False}
    assert engine.antrea_checks(1.0, None) == {engine.ANTREA_TIME_CHECK: True}
