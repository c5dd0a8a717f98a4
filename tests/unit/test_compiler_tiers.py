"""The compiler with ClusterNetworkPolicies and Nodes: incremental equals full, rule
order and actions kept, node sets follow Nodes, and a CNP event touches only what
its subjects and peers touch."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.cnp import ClusterNetworkPolicy, NodeInfo, parse_cluster_network_policy
from stockade.compiler import Compiler, compile_cluster_policy
from stockade.model import Namespace, Pod, parse_object
from stockade.ruleset import PeerMatch, PortMatch, TierRule
from tests.unit.strategies import (
    NAMESPACES,
    NODES,
    cluster_network_policy,
    namespace,
    node,
    pod,
    policy,
)
from tests.unit.test_compiler import replay_and_compare

Raw = dict[str, Any]


@st.composite
def tier_events(draw: st.DrawFn) -> list[tuple[str, Raw | tuple[str, str]]]:
    """Upserts and deletes of every kind, CNPs and Nodes included, with flushes."""
    events: list[tuple[str, Raw | tuple[str, str]]] = []
    for _ in range(draw(st.integers(1, 30))):
        what = draw(
            st.sampled_from(("pod", "pod", "ns", "np", "cnp", "cnp", "node", "del", "flush"))
        )
        if what == "pod":
            events.append(("upsert", draw(pod(draw(st.integers(0, 4))))))
        elif what == "ns":
            events.append(("upsert", draw(namespace(draw(st.sampled_from(NAMESPACES))))))
        elif what == "np":
            events.append(("upsert", draw(policy(draw(st.integers(0, 2))))))
        elif what == "cnp":
            events.append(("upsert", draw(cluster_network_policy(draw(st.integers(0, 2))))))
        elif what == "node":
            events.append(("upsert", draw(node(draw(st.sampled_from(NODES))))))
        elif what == "del":
            kind = draw(st.sampled_from(("Pod", "Namespace", "ClusterNetworkPolicy", "Node")))
            if kind == "Pod":
                key = f"{draw(st.sampled_from(NAMESPACES))}/p{draw(st.integers(0, 4))}"
            elif kind == "Namespace":
                key = draw(st.sampled_from(NAMESPACES))
            elif kind == "Node":
                key = draw(st.sampled_from(NODES))
            else:
                key = f"cnp{draw(st.integers(0, 2))}"
            events.append(("delete", (kind, key)))
        else:
            events.append(("flush", ("", "")))
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=tier_events(), shard_size=st.sampled_from((1, 1000)))
def test_any_tier_event_sequence_gives_the_full_compile_of_the_final_state(
    events: list[tuple[str, Raw | tuple[str, str]]], shard_size: int
) -> None:
    replay_and_compare(events, shard_size)


def _cnp(spec: Raw, name: str = "c") -> ClusterNetworkPolicy:
    return parse_cluster_network_policy({"metadata": {"name": name}, "spec": spec})


def _pod(name: str, ns: str, node_name: str, ip: str, **labels: str) -> Pod:
    obj = parse_object(
        {
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "nodeName": node_name,
                "containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}],
            },
            "status": {"podIP": ip, "phase": "Running"},
        }
    )
    assert isinstance(obj, Pod)
    return obj


ALL: Raw = {"namespaces": {}}


def test_rules_keep_order_index_action_and_name() -> None:
    compiled, _ = compile_cluster_policy(
        _cnp(
            {
                "tier": "Admin",
                "priority": 3,
                "subject": ALL,
                "egress": [
                    {"name": "dns", "action": "Accept", "to": [{"namespaces": {}}]},
                    {"action": "Accept", "to": [{"domainNames": ["example.com"]}]},
                    {"action": "Pass", "to": [{"networks": ["10.0.0.0/8", "fd00::/8"]}]},
                    {"action": "Pass", "to": [{"domainNames": ["example.com"]}]},
                ],
            }
        )
    )
    assert (compiled.tier, compiled.priority) == ("Admin", 3)
    assert [(r.index, r.action, r.name, r.fail_closed) for r in compiled.egress] == [
        (0, "Accept", "dns", False),
        # rule 1 (Accept with domainNames) fails closed: it matches nothing, left out
        (2, "Pass", "", False),
        (3, "Deny", "", True),  # a Pass that fails closed denies all
    ]
    assert compiled.egress[1].peers == (PeerMatch(cidr="10.0.0.0/8"), PeerMatch(cidr="fd00::/8"))
    assert compiled.egress[2] == TierRule("Deny", 3, fail_closed=True)


def test_ports_ranges_and_named_ports() -> None:
    compiled, sets = compile_cluster_policy(
        _cnp(
            {
                "tier": "Baseline",
                "priority": 0,
                "subject": ALL,
                "ingress": [
                    {
                        "action": "Deny",
                        "from": [{"namespaces": {}}],
                        "protocols": [
                            {"tcp": {"destinationPort": {"number": 80}}},
                            {"udp": {"destinationPort": {"range": {"start": 53, "end": 60}}}},
                            {"destinationNamedPort": "web"},
                        ],
                    }
                ],
                "egress": [
                    {
                        "action": "Deny",
                        "to": [{"pods": {"podSelector": {}}}],
                        "protocols": [{"destinationNamedPort": "web"}],
                    }
                ],
            }
        )
    )
    assert compiled.ingress[0].ports == (
        PortMatch("TCP", 80),
        PortMatch("UDP", 53, 60),
        PortMatch("TCP", name="web"),
        PortMatch("UDP", name="web"),
        PortMatch("SCTP", name="web"),
    )
    egress_ports = compiled.egress[0].ports
    assert [(p.protocol, p.name) for p in egress_ports] == [
        ("TCP", "web"),
        ("UDP", "web"),
        ("SCTP", "web"),
    ]
    assert all(p.named_port_set in sets for p in egress_ports)


def test_rule_sets_carry_subjects_in_evaluation_order_and_node_sets_follow_nodes() -> None:
    compiler = Compiler()
    compiler.upsert(Namespace("a", {"kubernetes.io/metadata.name": "a"}))
    compiler.upsert(_pod("w", "a", "n1", "10.0.1.2", app="web"))
    compiler.upsert(_pod("x", "a", "n2", "10.0.2.2", app="db"))
    nodes_peer = {"nodes": {"matchLabels": {"role": "infra"}}}
    for name, tier, prio in (
        ("z", "Admin", 1),
        ("b", "Baseline", 0),
        ("a", "Admin", 1),
        ("m", "Admin", 0),
    ):
        compiler.upsert(
            _cnp(
                {
                    "tier": tier,
                    "priority": prio,
                    "subject": ALL,
                    "egress": [{"action": "Deny", "to": [nodes_peer]}],
                },
                name,
            )
        )
    rs = compiler.result().node_rule_sets["n1"]
    assert [ncp.policy.name for ncp in rs.cluster_policies] == ["m", "a", "z", "b"]
    assert all(ncp.targets == ("a/w",) for ncp in rs.cluster_policies)
    assert [p.name for p in rs.pods] == ["a/w"]
    (set_name,) = {p.peer_set for ncp in rs.cluster_policies for p in ncp.policy.egress[0].peers}
    assert set_name in rs.peer_sets

    def members() -> list[tuple[str, tuple[str, ...]]]:
        shards = compiler.result().shards(set_name or "")
        return [(m.pod, m.ips) for ps in shards for m in ps.members]

    assert members() == []
    compiler.upsert(NodeInfo("n2", {"role": "infra"}, ("192.168.0.2",)))
    assert members() == [("n2", ("192.168.0.2",))]
    compiler.upsert(NodeInfo("n2", {"role": "worker"}, ("192.168.0.2",)))
    assert members() == []
    changes = compiler.flush()
    assert not changes.nodes, "a Node's labels change a node set, never a rule set"


def test_a_namespace_relabel_moves_its_pods_in_and_out_of_a_subject() -> None:
    compiler = Compiler()
    compiler.upsert(_pod("w", "a", "n1", "10.0.1.2"))
    compiler.upsert(
        _cnp(
            {
                "tier": "Admin",
                "priority": 0,
                "subject": {"namespaces": {"matchLabels": {"t": "1"}}},
                "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}],
            }
        )
    )
    assert compiler.result().node_rule_sets["n1"].cluster_policies == ()
    compiler.upsert(Namespace("a", {"kubernetes.io/metadata.name": "a", "t": "1"}))
    assert [n.targets for n in compiler.result().node_rule_sets["n1"].cluster_policies] == [
        ("a/w",)
    ]
    compiler.upsert(Namespace("a", {"kubernetes.io/metadata.name": "a"}))
    assert compiler.result().node_rule_sets["n1"].cluster_policies == ()


def test_a_cnp_event_rebuilds_only_the_nodes_of_its_subjects() -> None:
    compiler = Compiler()
    compiler.upsert(_pod("w", "a", "n1", "10.0.1.2", app="web"))
    compiler.upsert(_pod("x", "b", "n2", "10.0.2.2", app="db"))
    compiler.flush()
    subject = {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}}
    compiler.upsert(
        _cnp(
            {
                "tier": "Admin",
                "priority": 0,
                "subject": subject,
                "egress": [{"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}],
            }
        )
    )
    changes = compiler.flush()
    assert set(changes.nodes) == {"n1"}
    compiler.delete("ClusterNetworkPolicy", "c")
    changes = compiler.flush()
    assert set(changes.nodes) == {"n1"}
    rule_set = changes.nodes["n1"]
    assert rule_set is not None
    assert rule_set.cluster_policies == ()


def test_host_network_pods_are_never_subjects() -> None:
    compiler = Compiler()
    host = parse_object(
        {
            "kind": "Pod",
            "metadata": {"name": "h", "namespace": "a"},
            "spec": {"nodeName": "n1", "hostNetwork": True},
            "status": {"podIP": "192.168.0.1", "phase": "Running"},
        }
    )
    compiler.upsert(host)
    compiler.upsert(
        _cnp(
            {
                "tier": "Admin",
                "priority": 0,
                "subject": ALL,
                "egress": [{"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}],
            }
        )
    )
    rs = compiler.result().node_rule_sets["n1"]
    assert rs.cluster_policies == ()
