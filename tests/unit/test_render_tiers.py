"""The renderer with ClusterNetworkPolicy tiers: chains, sets, verdicts, hooks.

Every verdict is checked twice: the typed chains run by tests/unit/iptables_sim.py
(from STK-FORWARD, or from STK-INPUT for a local pod reaching its own node), and
the verdict engine (``NodeEvaluator.allows`` / ``allows_input``), which must agree.
The layout (docs/dataplane.md, "Tiers") is pinned by the data tests; the property
test at the end runs random clusters through the compiler, the renderer and both.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.agent import render as render_module
from stockade.agent.ipsets import IPFamily
from stockade.agent.iptables import (
    MAX_CHAIN_NAME,
    AddressMatch,
    ClearMark,
    Drop,
    Goto,
    Jump,
    MarkMatch,
    Reject,
    Return,
    Rule,
)
from stockade.agent.live import LiveTable, desired_table, jump_line
from stockade.agent.plan import cleanup_plan, make_plan
from stockade.agent.render import (
    DISPATCH_BITS,
    DISPATCH_FANOUT,
    FORWARD_JUMP,
    INPUT_CHAIN,
    INPUT_JUMP,
    SPLIT_MIN_PROTOCOL_RULES,
    SPLIT_MIN_RULES,
    MissingPeerSetsError,
    RenderedNode,
    RenderError,
    RenderOptions,
    RenderOptionsError,
    referenced_peer_sets,
    render,
)
from stockade.cluster import parse_documents
from stockade.compiler import compile_cluster
from stockade.ruleset import (
    ACCEPT,
    ADMIN_TIER,
    BASELINE_TIER,
    DENY,
    PASS,
    CompiledClusterPolicy,
    CompiledPolicy,
    CompiledRule,
    ContainerPortSpec,
    LocalPod,
    NamedPortRef,
    NodeClusterPolicy,
    NodePolicy,
    NodeRuleSet,
    PeerMatch,
    PeerMember,
    PeerSelector,
    PeerSet,
    PortMatch,
    SelectorRequirement,
    TierRule,
    stable_hash,
)
from stockade.verdict import NodeEvaluator, SetIndex
from tests.unit import test_conntrack_flows as cf
from tests.unit.iptables_sim import Dataplane, Packet
from tests.unit.strategies import (
    EXTERNAL,
    INLINE_CHOICES,
    NODE_IPS,
    PROBE_PORTS,
    PROTOCOLS,
    tiered_cluster_docs,
)

PeerSets = Mapping[str, Sequence[PeerSet]]
Raw = dict[str, Any]

# --- the node under test ---------------------------------------------------------------

A = "10.1.0.1"  # local pod "a" (the subject of the policies below)
B = "10.1.0.2"  # local pod "b" (selected by nothing unless a test says so)
A6 = "fd00:1::1"
REMOTE = "10.2.0.5"  # a pod on another node, in the PeerSet "remote"
OTHER = "10.2.0.6"  # a pod on another node, in no set
EXT = "203.0.113.7"
OWN_NODE = "192.168.0.1"
OTHER_NODE = "192.168.0.2"
OWN_NODE6 = "fd01::1"


def lpod(name: str, *ips: str, ports: Sequence[tuple[str, int, str]] = ()) -> LocalPod:
    return LocalPod(name, ips, tuple(ContainerPortSpec(n, p, proto) for n, p, proto in ports))


PODS = (lpod("a", A, A6, ports=[("http", 8080, "TCP")]), lpod("b", B, ports=[("http", 81, "TCP")]))


def pod_set(name: str, *ips: str, named_port: NamedPortRef | None = None) -> list[PeerSet]:
    sel = PeerSelector(
        pod_selector=(SelectorRequirement("app", "In", (name,)),), named_port=named_port
    )
    members = tuple(PeerMember(f"p{i}", (ip,)) for i, ip in enumerate(ips))
    return [PeerSet(f"{name}-0", name, sel, 0, 1, members)]


def node_set(name: str, nodes: Mapping[str, Sequence[str]]) -> list[PeerSet]:
    sel = PeerSelector(node_selector=(SelectorRequirement("role", "In", (name,)),))
    members = tuple(PeerMember(n, tuple(ips)) for n, ips in sorted(nodes.items()))
    return [PeerSet(f"{name}-0", name, sel, 0, 1, members)]


def named_set(name: str, members: Sequence[tuple[str, int]], proto: str = "TCP") -> list[PeerSet]:
    sel = PeerSelector(pod_selector=(), namespace_selector=(), named_port=NamedPortRef(name, proto))
    pms = tuple(PeerMember(f"p{i}", (ip,), port) for i, (ip, port) in enumerate(members))
    return [PeerSet(f"np-{name}-0", f"np-{name}", sel, 0, 1, pms)]


SETS: dict[str, list[PeerSet]] = {
    "remote": pod_set("remote", REMOTE),
    "local-a": pod_set("local-a", A, A6),
    "local-b": pod_set("local-b", B),
    "nodes": node_set("nodes", {"n1": [OWN_NODE, OWN_NODE6], "n2": [OTHER_NODE]}),
    "np-http": named_set("http", [(REMOTE, 9090), (B, 81)]),
}


def to(name: str) -> PeerMatch:
    return PeerMatch(peer_set=name)


def net(cidr: str, excepts: tuple[str, ...] = ()) -> PeerMatch:
    return PeerMatch(cidr=cidr, excepts=excepts)


def tcp(port: int, end: int | None = None) -> PortMatch:
    return PortMatch("TCP", port, end)


def tr(
    action: str,
    peers: Sequence[PeerMatch] = (),
    ports: Sequence[PortMatch] = (),
    *,
    index: int = 0,
    name: str = "",
    fail_closed: bool = False,
) -> TierRule:
    return TierRule(action, index, tuple(peers), tuple(ports), name, fail_closed)


def cnp(
    name: str,
    tier: str = ADMIN_TIER,
    priority: int = 10,
    *,
    ingress: Sequence[TierRule] = (),
    egress: Sequence[TierRule] = (),
    targets: Sequence[str] = ("a",),
) -> NodeClusterPolicy:
    ing = tuple(replace(r, index=i) for i, r in enumerate(ingress))
    eg = tuple(replace(r, index=i) for i, r in enumerate(egress))
    policy = CompiledClusterPolicy(
        name, stable_hash("ClusterNetworkPolicy/" + name, 12), tier, priority, ing, eg
    )
    return NodeClusterPolicy(policy, tuple(targets))


def np_(
    name: str,
    ingress: Sequence[CompiledRule] | None = None,
    egress: Sequence[CompiledRule] | None = None,
    targets: Sequence[str] = ("a",),
) -> NodePolicy:
    policy = CompiledPolicy(
        name,
        stable_hash(name, 12),
        None if ingress is None else tuple(ingress),
        None if egress is None else tuple(egress),
    )
    return NodePolicy(policy, tuple(targets))


ISOLATE_IN = np_("ns/deny-in", ingress=[])
ISOLATE_OUT = np_("ns/deny-out", egress=[])
ALLOW_IN_REMOTE = np_("ns/in-remote", ingress=[CompiledRule((to("remote"),))])
ALLOW_OUT_REMOTE = np_("ns/out-remote", egress=[CompiledRule((to("remote"),))])


def rule_set(
    *cluster: NodeClusterPolicy,
    policies: Sequence[NodePolicy] = (),
    pods: Sequence[LocalPod] = PODS,
) -> NodeRuleSet:
    names = sorted(
        set().union(*(p.policy.peer_sets() for p in policies), *(c.peer_sets() for c in cluster))
    )
    ordered = tuple(sorted(cluster, key=lambda c: c.policy.order))
    return NodeRuleSet("n1", tuple(pods), tuple(policies), tuple(names), cluster_policies=ordered)


def sets_for(rs: NodeRuleSet) -> dict[str, list[PeerSet]]:
    return {name: SETS[name] for name in referenced_peer_sets(rs)}


class Node:
    """A rendered rule set with the simulator and the engine side by side.

    Rendered twice: ``out`` with one chain per policy (what the structural tests
    read), and with short policies inlined into their groups' chains (the default
    layout); every verdict is checked on both.
    """

    def __init__(self, rs: NodeRuleSet, options: RenderOptions | None = None) -> None:
        self.rs = rs
        self.sets = sets_for(rs)
        options = options or RenderOptions()
        self.out = render(rs, self.sets, options=replace(options, inline_policies=False))
        self.inlined = render(rs, self.sets, options=replace(options, inline_policies=True))
        self.planes = {
            f: Dataplane(self.out.family(f).chains, self.out.family(f).ipsets) for f in (4, 6)
        }
        self.inlined_planes = {
            f: Dataplane(self.inlined.family(f).chains, self.inlined.family(f).ipsets)
            for f in (4, 6)
        }
        self.engine = NodeEvaluator(rs, SetIndex(s for g in self.sets.values() for s in g))

    def verdict(
        self, src: str, dst: str, port: int = 80, proto: str = "TCP", ct: str = "NEW"
    ) -> str:
        """The simulator's verdict from STK-FORWARD, checked against the engine."""
        family = 6 if ":" in src else 4
        got = self.planes[family].verdict(Packet(src, dst, proto, port, ct))
        inlined = self.inlined_planes[family].verdict(Packet(src, dst, proto, port, ct))
        assert got == inlined, (src, dst, port, "inlined policies")
        if ct == "NEW":
            assert (got == "RETURN") == self.engine.allows(src, dst, port, proto), (src, dst, port)
        return got

    def allowed(self, src: str, dst: str, port: int = 80, proto: str = "TCP") -> bool:
        return self.verdict(src, dst, port, proto) == "RETURN"

    def input_allowed(self, src: str, dst: str, port: int = 80, proto: str = "TCP") -> bool:
        """A local pod to its own node: STK-INPUT, checked against ``allows_input``."""
        family = 6 if ":" in src else 4
        got = self.planes[family].verdict(Packet(src, dst, proto, port), INPUT_CHAIN) == "RETURN"
        packet = Packet(src, dst, proto, port)
        inlined = self.inlined_planes[family].verdict(packet, INPUT_CHAIN) == "RETURN"
        assert got == inlined, (src, dst, port, "inlined policies")
        assert got == self.engine.allows_input(src, dst, port, proto), (src, dst, port)
        return got

    def chains(self, family: IPFamily = 4) -> dict[str, tuple[Rule, ...]]:
        """The chains of the layout with one chain per policy."""
        return {c.name: c.rules for c in self.out.family(family).chains}

    def inlined_chains(self, family: IPFamily = 4) -> dict[str, tuple[Rule, ...]]:
        """The chains of the default layout, short policies inlined."""
        return {c.name: c.rules for c in self.inlined.family(family).chains}


# --- each action in each tier ------------------------------------------------------------

# (tier, action, NetworkPolicy isolation of the pod's egress or None, allowed?)
EGRESS_TABLE = [
    # Admin: Accept and Deny are final, over any NetworkPolicy; Pass hands to NP.
    (ADMIN_TIER, ACCEPT, None, True),
    (ADMIN_TIER, ACCEPT, ISOLATE_OUT, True),
    (ADMIN_TIER, DENY, None, False),
    (ADMIN_TIER, DENY, ALLOW_OUT_REMOTE, False),
    (ADMIN_TIER, PASS, None, True),
    (ADMIN_TIER, PASS, ISOLATE_OUT, False),
    (ADMIN_TIER, PASS, ALLOW_OUT_REMOTE, True),
    # Baseline: reached only when no NetworkPolicy isolates the pod that way.
    (BASELINE_TIER, ACCEPT, None, True),
    (BASELINE_TIER, ACCEPT, ISOLATE_OUT, False),
    (BASELINE_TIER, DENY, None, False),
    (BASELINE_TIER, DENY, ALLOW_OUT_REMOTE, True),
    (BASELINE_TIER, PASS, None, True),
    (BASELINE_TIER, PASS, ISOLATE_OUT, False),
]


@pytest.mark.parametrize(("tier", "action", "np", "allowed"), EGRESS_TABLE)
def test_each_egress_action_in_each_tier(
    tier: str, action: str, np: NodePolicy | None, allowed: bool
) -> None:
    rs = rule_set(
        cnp("c", tier, egress=[tr(action, [to("remote")])]),
        policies=[np] if np else [],
    )
    node = Node(rs)
    assert node.allowed(A, REMOTE) is allowed
    # A peer the rule does not name: the tier does nothing for it (only NP decides).
    assert node.allowed(A, OTHER) is (np is None)
    # Another pod, not a subject: never affected.
    assert node.allowed(B, REMOTE)


INGRESS_TABLE = [
    (ADMIN_TIER, ACCEPT, None, True),
    (ADMIN_TIER, ACCEPT, ISOLATE_IN, True),
    (ADMIN_TIER, DENY, None, False),
    (ADMIN_TIER, DENY, ALLOW_IN_REMOTE, False),
    (ADMIN_TIER, PASS, ISOLATE_IN, False),
    (ADMIN_TIER, PASS, ALLOW_IN_REMOTE, True),
    (BASELINE_TIER, ACCEPT, ISOLATE_IN, False),
    (BASELINE_TIER, DENY, None, False),
    (BASELINE_TIER, DENY, ALLOW_IN_REMOTE, True),
    (BASELINE_TIER, PASS, None, True),
]


@pytest.mark.parametrize(("tier", "action", "np", "allowed"), INGRESS_TABLE)
def test_each_ingress_action_in_each_tier(
    tier: str, action: str, np: NodePolicy | None, allowed: bool
) -> None:
    rs = rule_set(
        cnp("c", tier, ingress=[tr(action, [to("remote")])]),
        policies=[np] if np else [],
    )
    node = Node(rs)
    assert node.allowed(REMOTE, A) is allowed
    assert node.allowed(REMOTE, B)


def test_pass_skips_the_rest_of_its_tier_only() -> None:
    admin_pass = cnp("a-pass", egress=[tr(PASS, [to("remote")])], priority=1)
    admin_deny = cnp("a-deny", egress=[tr(DENY, [to("remote")])], priority=2)
    base_deny = cnp("b-deny", BASELINE_TIER, egress=[tr(DENY, [to("remote")])])
    # Admin Pass skips the later Admin Deny; no NP; the Baseline Deny still applies.
    assert not Node(rule_set(admin_pass, admin_deny, base_deny)).allowed(A, REMOTE)
    assert Node(rule_set(admin_pass, admin_deny)).allowed(A, REMOTE)
    # Baseline Pass skips the later Baseline Deny.
    base_pass = cnp("b-pass", BASELINE_TIER, 1, egress=[tr(PASS, [to("remote")])])
    assert Node(rule_set(admin_pass, admin_deny, base_pass, base_deny)).allowed(A, REMOTE)
    # Pass within a policy skips its own later rules too.
    one = cnp("one", egress=[tr(PASS, [to("remote")]), tr(DENY, [to("remote")])])
    assert Node(rule_set(one)).allowed(A, REMOTE)
    # The pass bit does not leak into the ingress tiers of the same packet.
    ingress_deny = cnp("in-deny", ingress=[tr(DENY)], targets=("b",))
    node = Node(rule_set(cnp("out-pass", egress=[tr(PASS)]), ingress_deny))
    assert not node.allowed(A, B)


def test_rules_in_order_and_policies_by_priority_then_name() -> None:
    accept = [tr(ACCEPT, [to("remote")])]
    deny = [tr(DENY, [net("10.0.0.0/8")])]
    # priority decides
    assert Node(
        rule_set(cnp("x", priority=1, egress=accept), cnp("y", priority=2, egress=deny))
    ).allowed(A, REMOTE)
    assert not Node(
        rule_set(cnp("x", priority=3, egress=accept), cnp("y", priority=2, egress=deny))
    ).allowed(A, REMOTE)
    # equal priorities: by name
    assert Node(rule_set(cnp("a1", egress=accept), cnp("b1", egress=deny))).allowed(A, REMOTE)
    assert not Node(rule_set(cnp("b1", egress=accept), cnp("a1", egress=deny))).allowed(A, REMOTE)
    # within a policy, the order written
    both = cnp("both", egress=[*deny, *accept])
    assert not Node(rule_set(both)).allowed(A, REMOTE)
    # Admin before Baseline whatever the priorities
    base_accept = cnp("base", BASELINE_TIER, 0, egress=accept)
    assert not Node(rule_set(base_accept, cnp("adm", priority=1000, egress=deny))).allowed(
        A, REMOTE
    )


def test_group_chain_order_is_the_evaluation_order() -> None:
    node = Node(
        rule_set(
            cnp("zeta", priority=1, egress=[tr(DENY, [to("remote")])]),
            cnp("alpha", priority=5, egress=[tr(ACCEPT, [to("remote")])]),
            cnp("beta", priority=5, egress=[tr(ACCEPT, [to("remote")])]),
        )
    )
    groups = [name for name in node.chains() if name.startswith("STK-AEG-")]
    assert len(groups) == 1
    jumps = [r.comment for r in node.chains()[groups[0]] if isinstance(r.action, Jump)]
    assert jumps == ["stockade:zeta egress", "stockade:alpha egress", "stockade:beta egress"]


def test_egress_accept_does_not_override_the_destination_ingress() -> None:
    node = Node(
        rule_set(
            cnp("out", egress=[tr(ACCEPT)]),
            cnp("in", ingress=[tr(DENY, [to("local-a")])], targets=("b",)),
        )
    )
    assert not node.allowed(A, B)
    assert node.allowed(A, REMOTE)
    # an ingress Accept does not override the source's egress Deny either
    node = Node(
        rule_set(
            cnp("out", egress=[tr(DENY, [to("local-b")])]),
            cnp("in", ingress=[tr(ACCEPT)], targets=("b",)),
        )
    )
    assert not node.allowed(A, B)


def test_fail_closed_rule_denies_every_peer_and_port() -> None:
    rs = rule_set(
        cnp(
            "fc",
            egress=[tr(ACCEPT, [to("remote")], [tcp(80)]), tr(DENY, fail_closed=True, name="dn")],
        )
    )
    node = Node(rs)
    assert node.allowed(A, REMOTE, 80)
    for dst, port, proto in [
        (REMOTE, 81, "TCP"),
        (EXT, 53, "UDP"),
        (OTHER, 1, "SCTP"),
        (B, 80, "TCP"),
    ]:
        assert not node.allowed(A, dst, port, proto)
    assert not node.allowed(A6, "2001:db8::7")
    comments = [
        r.comment for r in node.chains()[next(n for n in node.chains() if n.startswith("STK-CE-"))]
    ]
    assert "stockade:fc egress rule 1 (dn) Deny fails closed" in comments


def test_ports_numbers_ranges_and_protocols() -> None:
    node = Node(
        rule_set(
            cnp(
                "p",
                egress=[
                    tr(DENY, [to("remote")], [tcp(80), tcp(8080, 9090), PortMatch("UDP", 53)]),
                ],
            )
        )
    )
    assert not node.allowed(A, REMOTE, 80)
    assert not node.allowed(A, REMOTE, 8500)
    assert not node.allowed(A, REMOTE, 53, "UDP")
    assert node.allowed(A, REMOTE, 53)
    assert node.allowed(A, REMOTE, 81)
    assert node.allowed(A, REMOTE, 80, "SCTP")


def test_named_ports_ingress_from_the_subject_and_egress_from_the_named_port_set() -> None:
    named = [PortMatch(p, name="http") for p in ("TCP", "UDP", "SCTP")]
    ingress = cnp("in", ingress=[tr(DENY, [to("remote")], named)], targets=("a", "b"))
    node = Node(rule_set(ingress))
    assert not node.allowed(REMOTE, A, 8080)  # a's "http"
    assert node.allowed(REMOTE, A, 81)
    assert not node.allowed(REMOTE, B, 81)  # b's "http"
    assert node.allowed(REMOTE, B, 8080)
    egress_named = [
        PortMatch("TCP", name="http", named_port_set="np-http"),
    ]
    node = Node(rule_set(cnp("out", egress=[tr(DENY, [to("remote")], egress_named)])))
    assert not node.allowed(A, REMOTE, 9090)
    assert node.allowed(A, REMOTE, 8080)


def test_networks_peers_including_everything() -> None:
    node = Node(
        rule_set(
            cnp(
                "n",
                egress=[
                    tr(ACCEPT, [net("203.0.113.0/24")]),
                    tr(DENY, [net("0.0.0.0/0"), net("::/0")]),
                ],
            )
        )
    )
    assert node.allowed(A, EXT)
    assert not node.allowed(A, REMOTE)
    assert not node.allowed(A, "198.51.100.9")
    assert not node.allowed(A6, "2001:db8::7")
    # A CIDR without exceptions is compared in the rule (no set); a /0 is no match.
    assert not [s for s in node.out.v4.ipsets if s.name.startswith("stk-cidr4-")]
    rules = [r for c in node.out.v4.chains if c.name.startswith("STK-CE-") for r in c.rules]
    assert [[m for m in r.matches if isinstance(m, AddressMatch)] for r in rules] == [
        [AddressMatch("203.0.113.0/24", "dst")],
        [],
    ]


def test_networks_peer_with_exceptions_is_a_set() -> None:
    node = Node(rule_set(cnp("n", egress=[tr(DENY, [net("0.0.0.0/0", ("203.0.113.0/24",))])])))
    assert node.allowed(A, EXT)
    assert not node.allowed(A, REMOTE)
    cidr_sets = [s for s in node.out.v4.ipsets if s.name.startswith("stk-cidr4-")]
    assert sorted((m.value, m.nomatch) for s in cidr_sets for m in s.members) == [
        ("0.0.0.0/1", False),
        ("128.0.0.0/1", False),
        ("203.0.113.0/24", True),
    ]


def test_nodes_peer_in_forward_and_input() -> None:
    node = Node(rule_set(cnp("no-nodes", egress=[tr(DENY, [to("nodes")])])))
    assert not node.allowed(A, OTHER_NODE)  # another node: FORWARD
    assert node.allowed(A, EXT)
    assert not node.input_allowed(A, OWN_NODE)  # its own node: INPUT
    assert not node.input_allowed(A6, OWN_NODE6)
    assert node.input_allowed(B, OWN_NODE)  # not a subject
    # the node reaching the pod never goes through STK-INPUT; its replies pass by state
    plane = node.planes[4]
    assert plane.verdict(Packet(A, OWN_NODE, ct_state="ESTABLISHED"), INPUT_CHAIN) == "RETURN"
    assert plane.verdict(Packet(OWN_NODE, A), INPUT_CHAIN) == "RETURN"


def test_input_tiers_with_network_policy_isolation() -> None:
    deny_nodes = cnp("base-deny-nodes", BASELINE_TIER, egress=[tr(DENY, [to("nodes")])])
    # Baseline Deny reaches a pod no NetworkPolicy isolates for egress...
    assert not Node(rule_set(deny_nodes)).input_allowed(A, OWN_NODE)
    # ...not one that NetworkPolicies isolate for egress (its own node is allowed there)
    assert Node(rule_set(deny_nodes, policies=[ISOLATE_OUT])).input_allowed(A, OWN_NODE)
    # ingress isolation does not matter for its egress
    assert not Node(rule_set(deny_nodes, policies=[ISOLATE_IN])).input_allowed(A, OWN_NODE)
    # an Admin Deny reaches it even when NetworkPolicies isolate it
    admin_deny = cnp("admin-deny", egress=[tr(DENY, [net("192.168.0.0/24")], [tcp(10250)])])
    node = Node(rule_set(admin_deny, policies=[ISOLATE_OUT]))
    assert not node.input_allowed(A, OWN_NODE, 10250)
    assert node.input_allowed(A, OWN_NODE, 80)
    # Admin Accept then Baseline Deny: accepted
    accept = cnp("admin-accept", egress=[tr(ACCEPT, [to("nodes")], [tcp(53)])])
    node = Node(rule_set(accept, deny_nodes))
    assert node.input_allowed(A, OWN_NODE, 53)
    assert not node.input_allowed(A, OWN_NODE, 54)
    # Admin Pass hands to NP (isolated: allowed), skipping the Admin Deny
    pas = cnp("admin-pass", priority=1, egress=[tr(PASS, [to("nodes")])])
    deny = cnp("admin-deny-all", priority=2, egress=[tr(DENY)])
    assert Node(rule_set(pas, deny, deny_nodes, policies=[ISOLATE_OUT])).input_allowed(A, OWN_NODE)
    assert not Node(rule_set(pas, deny, deny_nodes)).input_allowed(A, OWN_NODE)


def test_input_leaves_ipv6_link_local_and_multicast_alone() -> None:
    node = Node(rule_set(cnp("deny-all", egress=[tr(DENY, fail_closed=True)])))
    plane = node.planes[6]
    assert plane.verdict(Packet(A6, "ff02::1:ff00:1", "UDP", 1), INPUT_CHAIN) == "RETURN"
    assert plane.verdict(Packet(A6, "fe80::1", "TCP", 80), INPUT_CHAIN) == "RETURN"
    assert plane.verdict(Packet(A6, OWN_NODE6, "TCP", 80), INPUT_CHAIN) == "DROP"


def test_forward_layout_with_tiers() -> None:
    node = Node(rule_set(cnp("c", egress=[tr(DENY, [to("remote")])]), policies=[ISOLATE_IN]))
    opts = RenderOptions()
    i, p = opts.ingress_bit, opts.pass_bit
    rules = node.out.v4.chains[0].rules
    tail = [
        (
            r.action.mask if isinstance(r.action, ClearMark) else r.action.chain,
            r.matches,
        )
        for r in rules[-4:]
        if isinstance(r.action, ClearMark | Jump)
    ]
    # one dispatch per direction, to the pod's path through the tiers
    assert tail == [
        (opts.mark_mask, ()),
        ("STK-T-EGRESS", ()),
        ("STK-T-INGRESS", ()),
        (opts.mark_mask, ()),
    ]
    assert node.out.input_jump == INPUT_JUMP
    chains = node.chains()
    assert chains["STK-PASS"]
    assert all(len(name) <= MAX_CHAIN_NAME for name in chains)
    # the NetworkPolicy and tier groups have no dispatch of their own any more
    assert not {"STK-EGRESS", "STK-INGRESS", "STK-A-EGRESS", "STK-B-INGRESS"} & set(chains)
    # A's egress path: its Admin group, then the pass bit cleared (no NetworkPolicy
    # isolates it that way, and no Baseline policy selects it)
    group = next(n for n in chains if n.startswith("STK-AEG-"))
    (egress_path,) = [n for n in chains if n.startswith("STK-TEG-")]
    assert [(r.matches, r.action) for r in chains[egress_path]] == [
        ((), Jump(group)),
        ((), ClearMark(p)),
    ]
    # every pod's ingress path goes to its NetworkPolicy group (all are isolated)
    ingress_paths = [n for n in chains if n.startswith("STK-TIG-")]
    assert ingress_paths
    for path in ingress_paths:
        ((matches, action),) = [(r.matches, r.action) for r in chains[path]]
        assert matches == (MarkMatch(0, i),)
        assert isinstance(action, Goto)
        assert action.chain.startswith("STK-IG-")
    # the Admin group: first the policy, nothing after the last one
    assert [type(r.action) for r in chains[group]] == [Jump]
    policy_chain = next(n for n in chains if n.startswith("STK-CE-"))
    assert [type(r.action) for r in chains[policy_chain]] == [Drop]


def test_accept_and_pass_goto_the_bit_chains_and_groups_stop_on_either() -> None:
    node = Node(
        rule_set(
            cnp(
                "x", priority=1, egress=[tr(ACCEPT, [to("remote")]), tr(PASS, [net("10.0.0.0/8")])]
            ),
            cnp("y", priority=2, egress=[tr(DENY)]),
        )
    )
    chains = node.chains()
    group = next(n for n in chains if n.startswith("STK-AEG-"))
    opts = RenderOptions()
    stop = MarkMatch(0, opts.egress_bit | opts.pass_bit, negate=True)
    assert [(r.matches, type(r.action)) for r in chains[group]] == [
        ((), Jump),
        ((stop,), Return),
        ((), Jump),
    ]
    x = chains[f"STK-CE-{stable_hash('ClusterNetworkPolicy/x', 12)}"]
    assert [r.action for r in x] == [Goto("STK-ALLOW-EGRESS"), Goto("STK-PASS")]


def test_reject_and_logging_of_tier_denials() -> None:
    rs = rule_set(cnp("c", egress=[tr(DENY, [to("remote")])]))
    node = Node(rs, RenderOptions(drop_action="REJECT", log_denied=True))
    trace = node.planes[4].evaluate(Packet(A, REMOTE))
    assert trace.verdict == "REJECT"
    assert trace.logs == [f"stk deny egress A{stable_hash('ClusterNetworkPolicy/c', 12)[:8]}: "]
    chain = next(c for c in node.out.v6.chains if c.name.startswith("STK-CE-"))
    assert isinstance(chain.rules[-1].action, Reject)
    assert chain.rules[-1].action.with_ == "icmp6-port-unreachable"
    node = Node(rs, RenderOptions(log_denied=True, log_mode="LOG"))
    assert node.planes[4].evaluate(Packet(A, REMOTE)).logs[0].startswith("stk deny egress A")


def test_subject_groups_by_identical_ordered_policy_lists() -> None:
    pods = [lpod(f"p{k}", f"10.1.1.{k}") for k in range(1, 41)]
    x = cnp("x", egress=[tr(DENY, [to("remote")])], targets=[p.name for p in pods[:20]])
    y = cnp("y", egress=[tr(ACCEPT, [to("remote")])], targets=[p.name for p in pods[10:]])
    node = Node(rule_set(x, y, pods=pods))
    groups = sorted(n for n in node.chains() if n.startswith("STK-AEG-"))
    assert len(groups) == 3  # x only, x then y, y only
    # each group is one path here (no other tier): its pods in the path's set
    sizes = sorted(len(s.members) for s in node.out.v4.ipsets if s.name.startswith("stk-teg4-"))
    assert sizes == [10, 10, 20]
    assert not node.allowed("10.1.1.5", REMOTE)
    assert not node.allowed("10.1.1.15", REMOTE)
    assert node.allowed("10.1.1.25", REMOTE)
    # rules grow with policies, not pods
    more = [lpod(f"q{k}", f"10.1.{2 + k // 200}.{k % 200 + 1}") for k in range(200)]
    x2 = replace(x, targets=(*x.targets, *(p.name for p in more)))
    bigger = Node(rule_set(x2, y, pods=[*pods, *more]))
    count = sum(len(c.rules) for c in node.out.v4.chains)
    assert sum(len(c.rules) for c in bigger.out.v4.chains) == count


def test_many_groups_use_the_dispatch_tree() -> None:
    pols = [cnp(f"c{i}", egress=[tr(DENY, [to("remote")], [tcp(1000 + i)])]) for i in range(5)]
    pods = [lpod(f"p{k}", f"10.1.3.{k + 1}") for k in range(32)]
    rng = random.Random(7)
    targeted = [
        replace(p, targets=tuple(pod.name for pod in pods if rng.random() < 0.5)) for p in pols
    ]
    node = Node(rule_set(*targeted, pods=pods))
    assert any(n.startswith("STK-TET-") for n in node.chains())
    for k, pod in enumerate(pods):
        for i, p in enumerate(targeted):
            want = pod.name not in p.targets
            assert node.allowed(pod.ips[0], REMOTE, 1000 + i) is want, (k, i)


# --- no ClusterNetworkPolicy: nothing changes ----------------------------------------------


def test_without_cluster_policies_the_output_is_unchanged() -> None:
    base = rule_set(policies=[ALLOW_IN_REMOTE, ISOLATE_OUT])
    plain = Node(base)
    assert plain.out.input_jump is None
    assert not any(n in plain.chains() for n in (INPUT_CHAIN, "STK-PASS", "STK-A-EGRESS"))
    with_cnp = Node(rule_set(cnp("c", egress=[tr(DENY)]), policies=[ALLOW_IN_REMOTE, ISOLATE_OUT]))
    # the NetworkPolicy chains themselves are the same with or without tiers, but
    # for their dispatch (with tiers, the paths' dispatch finds their groups)
    for name, rules in plain.chains().items():
        if name not in ("STK-FORWARD", "STK-EGRESS", "STK-INGRESS"):
            assert with_cnp.chains()[name] == rules
    # and a CNP that goes away leaves exactly the old rendering
    without = replace(with_cnp.rs, cluster_policies=())
    again = render(without, with_cnp.sets, options=RenderOptions(inline_policies=False))
    assert again == plain.out
    assert render(without, with_cnp.sets, options=RenderOptions()) == plain.inlined


def test_two_bit_mask_refused_only_with_cluster_policies() -> None:
    opts = RenderOptions(mark_mask=0x30000)
    render(rule_set(policies=[ISOLATE_IN]), {}, options=opts)
    with pytest.raises(RenderOptionsError, match="3 bits"):
        render(rule_set(cnp("c", egress=[tr(DENY)])), {}, options=opts)
    assert RenderOptions().pass_bit == 0x40000


def test_deterministic_whatever_the_input_order() -> None:
    cps = [
        cnp("c1", egress=[tr(DENY, [to("remote")])], targets=("a", "b")),
        cnp("c2", BASELINE_TIER, ingress=[tr(ACCEPT, [to("local-b")])], targets=("b", "a")),
        cnp("c3", priority=3, egress=[tr(PASS, [to("nodes")])], targets=("a",)),
    ]
    rs = rule_set(*cps, policies=[ISOLATE_IN])
    first = render(rs, sets_for(rs), options=RenderOptions())
    for seed in range(5):
        rng = random.Random(seed)
        shuffled = list(rs.cluster_policies)
        rng.shuffle(shuffled)
        pods = list(rs.pods)
        rng.shuffle(pods)
        other = replace(rs, cluster_policies=tuple(shuffled), pods=tuple(pods))
        out = render(other, sets_for(other), options=RenderOptions())
        for f in (4, 6):
            assert out.restore_text(f) == first.restore_text(f)
            assert out.ipset_text(f) == first.ipset_text(f)


def test_inconsistent_cluster_policies_are_refused() -> None:
    c = cnp("c", egress=[tr(DENY)])
    with pytest.raises(RenderError, match="appears twice"):
        render(rule_set(c, c), {}, options=RenderOptions())
    with pytest.raises(RenderError, match="not a local pod"):
        render(rule_set(replace(c, targets=("ghost",))), {}, options=RenderOptions())
    bad = replace(c, policy=replace(c.policy, egress=(tr("Allow"),)))
    with pytest.raises(RenderError, match="unknown action"):
        render(rule_set(bad), {}, options=RenderOptions())
    bad = replace(c, policy=replace(c.policy, tier="Developer"))
    with pytest.raises(RenderError, match="unknown tier"):
        render(rule_set(bad), {}, options=RenderOptions())
    long_id = replace(c, policy=replace(c.policy, id="x" * 40))
    out = render(rule_set(long_id), {}, options=RenderOptions())
    assert all(len(ch.name) <= MAX_CHAIN_NAME for ch in out.v4.chains)


def test_missing_node_peer_set_is_reported() -> None:
    rs = rule_set(cnp("c", egress=[tr(DENY, [to("nodes")])]))
    with pytest.raises(MissingPeerSetsError):
        render(rs, {}, options=RenderOptions())


# --- the hooks: INPUT next to FORWARD ------------------------------------------------------


def _live(
    rendered: RenderedNode, family: int, *, forward: list[str], input_: list[str]
) -> LiveTable:
    return LiveTable(dict(desired_table(rendered.family(family))), forward, input_)  # type: ignore[arg-type]


def test_plan_inserts_moves_and_removes_the_input_jump() -> None:
    with_cnp = Node(rule_set(cnp("c", egress=[tr(DENY)]))).out
    fwd = [jump_line(FORWARD_JUMP)]
    in_line = jump_line(INPUT_JUMP, "INPUT")
    # missing: inserted at the top
    plan = make_plan(
        with_cnp, {4: _live(with_cnp, 4, forward=fwd, input_=["-A INPUT -j KUBE-FIREWALL"])}, {}
    )
    text = plan.iptables[4]
    assert "-I INPUT 1 -m comment --comment" in text
    assert "-j STK-INPUT" in text
    # in place: nothing to do for it
    plan = make_plan(with_cnp, {4: _live(with_cnp, 4, forward=fwd, input_=[in_line])}, {})
    assert 4 not in plan.iptables
    # pushed down by someone: moved back to the top
    live = _live(with_cnp, 4, forward=fwd, input_=["-A INPUT -j KUBE-FIREWALL", in_line])
    text = make_plan(with_cnp, {4: live}, {}).iptables[4]
    assert text.index("-D INPUT ") < text.index("-I INPUT 1 ")
    # no cluster policies any more: the jump goes before its chain
    without = Node(rule_set(policies=[ISOLATE_IN])).out
    live = _live(with_cnp, 4, forward=fwd, input_=[in_line])
    text = make_plan(without, {4: live}, {}).iptables[4]
    assert text.index("-D INPUT ") < text.index(f"-X {INPUT_CHAIN}")
    assert "-I INPUT" not in text


def test_cleanup_removes_the_input_jump() -> None:
    with_cnp = Node(rule_set(cnp("c", egress=[tr(DENY)]))).out
    live = _live(
        with_cnp, 4, forward=[jump_line(FORWARD_JUMP)], input_=[jump_line(INPUT_JUMP, "INPUT")]
    )
    text = cleanup_plan({4: live}, {}, FORWARD_JUMP).iptables[4]
    assert "-D INPUT -m comment" in text
    assert "-D FORWARD -m comment" in text
    assert text.index("-D INPUT") < text.index(f"-X {INPUT_CHAIN}")
    # only the INPUT jump left (a crash between two writes): still removed
    only = LiveTable({}, [], [jump_line(INPUT_JUMP, "INPUT")])
    assert "-D INPUT" in cleanup_plan({4: only}, {}, FORWARD_JUMP).iptables[4]


# --- the property: random clusters, simulator == engine ------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=tiered_cluster_docs(), binary=st.booleans(), inline=INLINE_CHOICES, split=st.booleans())
def test_rendered_tiers_agree_with_the_engine(
    docs: list[dict[str, object]], binary: bool, inline: int, split: bool
) -> None:
    """Random clusters mixing NetworkPolicies and ClusterNetworkPolicies: every packet
    between pods, nodes and outside hosts gets the engine's verdict from the rendered
    chains, from STK-FORWARD, and from STK-INPUT for a pod reaching its own node.

    ``binary``: dispatch trees that split every node of two or more groups, so the
    tier groups of small clusters go through deep trees too.

    ``inline``: policies inlined up to that many rules (0: every policy jumped to).
    ``split``: every tier group chain with a protocol rule split by protocol.
    """
    assert_rendered_agree_with_the_engine(docs, binary, inline, split)


def assert_rendered_agree_with_the_engine(
    docs: Sequence[Mapping[str, object]], binary: bool, inline: int, split: bool
) -> None:
    """Every packet of the cluster of ``docs``: the rendered chains of each node (in
    the layout ``binary``, ``inline`` and ``split`` choose) give the engine's verdict."""
    parsed = parse_documents(docs)
    compiled = compile_cluster(parsed.cluster)
    by_set = compiled.by_set()
    node_ips = {ip for ips in NODE_IPS.values() for ip in ips}
    ips = sorted(
        {ip for p in parsed.cluster.pods.values() for ip in p.ips} | set(EXTERNAL) | node_ips
    )
    for rules in compiled.node_rule_sets.values():
        peer_sets = {name: by_set[name] for name in rules.peer_sets}
        with (
            patch.object(render_module, "DISPATCH_FANOUT", 1 if binary else DISPATCH_FANOUT),
            patch.object(render_module, "DISPATCH_BITS", 1 if binary else DISPATCH_BITS),
            patch.object(render_module, "INLINE_MAX_RULES", inline),
            patch.object(render_module, "SPLIT_MIN_RULES", 1 if split else SPLIT_MIN_RULES),
            patch.object(
                render_module, "SPLIT_MIN_PROTOCOL_RULES", 1 if split else SPLIT_MIN_PROTOCOL_RULES
            ),
        ):
            out = render(rules, peer_sets, options=RenderOptions(inline_policies=inline > 0))
        assert (out.input_jump is not None) == bool(rules.cluster_policies)
        planes = {f: Dataplane(out.family(f).chains, out.family(f).ipsets) for f in (4, 6)}
        engine = NodeEvaluator(rules, SetIndex(s for g in peer_sets.values() for s in g))
        own = set(NODE_IPS.get(rules.node, ()))
        for src in ips:
            for dst in ips:
                family: IPFamily = 6 if ":" in src else 4
                if src == dst or (":" in dst) != (family == 6):
                    continue
                for protocol in PROTOCOLS:
                    for port in PROBE_PORTS:
                        packet = Packet(src, dst, protocol, port)
                        if dst in own:
                            got = (
                                planes[family].verdict(packet, INPUT_CHAIN) == "RETURN"
                                if rules.cluster_policies
                                else True
                            )
                            want = engine.allows_input(src, dst, port, protocol)
                        else:
                            got = planes[family].verdict(packet) == "RETURN"
                            want = engine.allows(src, dst, port, protocol)
                        assert got == want, (rules.node, packet, want)


# --- the conntrack cut: flows to the node itself -------------------------------------------


def _client_cnp(action: str, networks: Sequence[str], port: int | None = None) -> Raw:
    rule: Raw = {"action": action, "to": [{"networks": list(networks)}]}
    if port is not None:
        rule["protocols"] = [{"tcp": {"destinationPort": {"number": port}}}]
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": f"client-{action.lower()}"},
        "spec": {
            "tier": "Admin",
            "priority": 1,
            "subject": {
                "pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}}
            },
            "egress": [rule],
        },
    }


def test_the_cut_judges_a_pods_flows_to_its_own_node() -> None:
    """A pod's connection through a Service to a host-network endpoint (n1 itself: it
    went to INPUT) is judged by ``allows_input`` once the node has ClusterNetworkPolicies."""
    node_nets = ["192.168.0.0/24", "fd01::/64"]
    host_flows = [(cf.CLIENT4, cf.HOST_VIP4, 80), (cf.CLIENT6, "fd96::12", 80)]
    cut = cf._cut([*cf.BASE, _client_cnp("Deny", node_nets)])
    assert sorted(host_flows) == cut  # only those: nothing else goes to the nodes
    # the rule's port is the one INPUT saw (the endpoint's 7070), not the Service's 80
    assert cf._cut([*cf.BASE, _client_cnp("Deny", node_nets, 80)]) == []
    assert cf._cut([*cf.BASE, _client_cnp("Deny", node_nets, 7070)]) == cut
    assert cf._cut([*cf.BASE, _client_cnp("Accept", node_nets)]) == []
    # `involving` applies to them too
    assert cf._cut([*cf.BASE, _client_cnp("Deny", node_nets)], involving={cf.NODE4}) == [
        host_flows[0]
    ]
