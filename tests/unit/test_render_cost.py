"""What keeps the rendered dataplane cheap, without changing a verdict.

- Named-port sets of ingress rules (``tport``) are one per (port name, protocol)
  for the whole node, shared by NetworkPolicies and ClusterNetworkPolicies; one that
  would be empty is not rendered, and a rule needing it is left out (it matches
  nothing: never "any port").
- A ClusterNetworkPolicy's rules test protocol and port numbers before any set, and
  the group chain jumps to a policy's chain only for the protocols (and ports) its
  rules can match (docs/dataplane.md, "Tiers").

Every verdict goes through ``Node`` of test_render_tiers, which checks the simulator
against the verdict engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.agent import render as render_module
from stockade.agent.iptables import (
    Goto,
    Jump,
    MarkMatch,
    Match,
    PortRange,
    ProtoMatch,
    Return,
    Rule,
    SetMatch,
)
from stockade.agent.render import RenderOptions, render
from stockade.agent.setsplit import SUFFIX
from stockade.ruleset import (
    ACCEPT,
    BASELINE_TIER,
    DENY,
    PASS,
    CompiledRule,
    NodeClusterPolicy,
    PortMatch,
    stable_hash,
)
from tests.unit.iptables_sim import Dataplane, Packet, Trace
from tests.unit.test_render_tiers import (
    A6,
    ISOLATE_IN,
    OTHER_NODE,
    REMOTE,
    SETS,
    A,
    B,
    Node,
    cnp,
    lpod,
    np_,
    rule_set,
    tcp,
    to,
    tr,
)

HTTP = PortMatch("TCP", name="http")
GRPC = PortMatch("TCP", name="grpc")  # declared by no pod of the node
C = "10.1.0.3"
PODS = (
    lpod("a", A, A6, ports=[("http", 8080, "TCP")]),
    lpod("b", B, ports=[("http", 81, "TCP"), ("dns", 53, "UDP")]),
    lpod("c", C),
)


def chain_of(name: str, direction: str = "I") -> str:
    return f"STK-C{direction}-{stable_hash('ClusterNetworkPolicy/' + name, 12)}"


def set_names(rules: Sequence[Rule]) -> list[str]:
    return [m.set_name for r in rules for m in r.matches if isinstance(m, SetMatch)]


# --- named-port sets -------------------------------------------------------------------


def test_tport_sets_are_shared_by_every_policy_naming_the_port() -> None:
    policies = [np_("ns/web", ingress=[CompiledRule((to("remote"),), (HTTP,))], targets=("a",))]
    cluster = [
        cnp("x", priority=1, ingress=[tr(DENY, [to("remote")], [HTTP])], targets=("a", "b")),
        cnp("y", priority=2, ingress=[tr(PASS, [to("remote")], [HTTP])], targets=("b",)),
        cnp(
            "z",
            BASELINE_TIER,
            ingress=[tr(ACCEPT, [to("local-b")], [HTTP])],
            targets=("a", "b", "c"),
        ),
    ]
    node = Node(rule_set(*cluster, policies=policies, pods=PODS))
    tports = [s for s in node.out.v4.ipsets if s.name.startswith("stk-tport4-")]
    assert len(tports) == 1  # (http, TCP) for the node: not one per policy
    (tport,) = tports
    assert [m.value for m in tport.members] == [f"{A},tcp:8080", f"{B},tcp:81"]
    chains = node.chains()
    using = [
        name
        for name, rules in chains.items()
        if any(n.startswith("stk-tport4-") for n in set_names(rules))
    ]
    assert len(using) == 4  # the NetworkPolicy and the three CNPs
    assert all(set_names(chains[n])[0] == tport.name for n in using if n.startswith("STK-C"))
    (tport6,) = (s for s in node.out.v6.ipsets if s.name.startswith("stk-tport6-"))
    assert [m.value for m in tport6.members] == [f"{A6},tcp:8080"]
    # Verdicts: each pod's own number, whoever else declares the name.
    assert not node.allowed(REMOTE, A, 8080)  # x denies a's http
    assert not node.allowed(REMOTE, A, 81)  # b's number is not a's http: ns/web isolates a
    assert not node.allowed(REMOTE, B, 81)
    assert node.allowed(REMOTE, B, 8080)
    assert node.allowed(REMOTE, C, 8080)  # c declares no http: z matches nothing


def test_tport_set_name_is_stable_while_its_members_change() -> None:
    rule = tr(DENY, [to("remote")], [HTTP])
    one = Node(rule_set(cnp("x", ingress=[rule], targets=("a",)), pods=PODS[:1]))
    both = Node(rule_set(cnp("x", ingress=[rule], targets=("a", "b")), pods=PODS[:2]))
    names = [
        [s.name for s in n.out.v4.ipsets if s.name.startswith("stk-tport4-")] for n in (one, both)
    ]
    assert names[0] == names[1]
    assert len(names[0]) == 1


def test_an_empty_named_port_set_leaves_the_rule_out_and_never_widens() -> None:
    # Admin Accept on a port no pod declares, then an NP isolation: nothing is allowed.
    accept = cnp("acc", ingress=[tr(ACCEPT, [to("remote")], [GRPC])], targets=("a",))
    node = Node(rule_set(accept, policies=[ISOLATE_IN], pods=PODS))
    assert not any(
        s.name.startswith("stk-tport") for f in (4, 6) for s in node.out.family(f).ipsets
    )
    assert node.chains()[chain_of("acc")] == ()
    for port in (80, 8080, 50051):
        assert not node.allowed(REMOTE, A, port)  # still denied by the NetworkPolicy
    # The same for a NetworkPolicy rule: its chain is empty, the pod stays isolated.
    grpc_np = np_("ns/grpc", ingress=[CompiledRule((to("remote"),), (GRPC,))], targets=("a",))
    node = Node(rule_set(policies=[grpc_np], pods=PODS))
    policy_chain = next(n for n in node.chains() if n.startswith("STK-I-"))
    assert node.chains()[policy_chain] == ()
    for port in (80, 8080, 50051):
        assert not node.allowed(REMOTE, A, port)
    # A Deny on such a port denies nothing; a named port of another protocol
    # (b declares "dns" for UDP only) is left out for TCP and kept for UDP.
    deny = cnp(
        "deny",
        ingress=[tr(DENY, [to("remote")], [GRPC, PortMatch("TCP", name="dns")])],
        targets=("a", "b"),
    )
    node = Node(rule_set(deny, pods=PODS))
    assert node.allowed(REMOTE, A, 50051)
    assert node.allowed(REMOTE, B, 53)
    dns_rule = tr(DENY, [to("remote")], [PortMatch("UDP", name="dns")])
    node = Node(rule_set(cnp("dns", ingress=[dns_rule], targets=("a", "b")), pods=PODS))
    assert not node.allowed(REMOTE, B, 53, "UDP")
    assert node.allowed(REMOTE, B, 53)
    assert node.allowed(REMOTE, A, 53, "UDP")


def test_a_policy_with_every_rule_left_out_gets_no_jump() -> None:
    empty = cnp("empty", priority=1, ingress=[tr(ACCEPT, [to("remote")], [GRPC])])
    deny = cnp("deny", priority=2, ingress=[tr(DENY, [to("remote")])])
    node = Node(rule_set(empty, deny, pods=PODS))
    group = next(rules for n, rules in node.chains().items() if n.startswith("STK-AIG-"))
    assert [r.action for r in group] == [Jump(chain_of("deny"))]
    assert not node.allowed(REMOTE, A, 50051)


# --- rule order and gated jumps --------------------------------------------------------


def test_cnp_rules_test_protocol_and_ports_before_sets() -> None:
    rule = tr(
        ACCEPT,
        [to("remote"), to("local-b")],
        [tcp(80), tcp(8000, 8100), PortMatch("UDP", 53), HTTP],
    )
    node = Node(rule_set(cnp("o", ingress=[rule]), pods=PODS))
    rules = node.chains()[chain_of("o")]
    assert len(rules) == 6  # (TCP numbers, UDP 53, http) x (remote, local-b)
    for r in rules:
        kinds = [type(m) for m in r.matches]
        assert kinds[0] is ProtoMatch
        sets = [i for i, m in enumerate(r.matches) if isinstance(m, SetMatch)]
        assert all(not isinstance(m, SetMatch) for m in r.matches[: sets[0]])
        peer = r.matches[-1]
        assert isinstance(peer, SetMatch)
        assert peer.dirs == "src"
        if len(sets) == 2:  # the named port set comes before the peer set
            named = r.matches[sets[0]]
            assert isinstance(named, SetMatch)
            assert named.dirs == "dst,dst"
    assert isinstance(rules[0].matches[1], PortRange)


class CountingPlane(Dataplane):
    """The simulator, counting set lookups (matches are tried in order, as the kernel)."""

    lookups = 0

    def _matches(self, match: Match, packet: Packet, trace: Trace) -> bool:
        if isinstance(match, SetMatch):
            self.lookups += 1
        return super()._matches(match, packet, trace)


def test_jumps_are_gated_by_protocol_and_ports() -> None:
    pg = cnp("pg", priority=1, ingress=[tr(DENY, [to("remote")], [tcp(5432)])])
    mixed = cnp(
        "mixed",
        priority=2,
        ingress=[
            tr(DENY, [to("remote")], [tcp(22), tcp(2379, 2380)]),
            tr(ACCEPT, [to("local-b")], [PortMatch("UDP", 53)]),
            tr(PASS, [to("remote")], [PortMatch("SCTP")]),
        ],
    )
    named = cnp("named", priority=3, ingress=[tr(DENY, [to("remote")], [HTTP, tcp(9)])])
    anything = cnp("any", priority=4, ingress=[tr(DENY, [to("remote")], [tcp(1)]), tr(PASS)])
    node = Node(rule_set(pg, mixed, named, anything, pods=PODS))
    group = next(rules for n, rules in node.chains().items() if n.startswith("STK-AIG-"))
    opts = RenderOptions()
    stop = MarkMatch(0, opts.ingress_bit | opts.pass_bit, negate=True)
    assert [(r.matches, r.action) for r in group] == [
        ((ProtoMatch("TCP"), PortRange("TCP", ((5432, 5432),))), Jump(chain_of("pg"))),
        ((stop,), Return()),  # one mark test: accepted or passed
        ((), Jump(chain_of("mixed"))),  # several protocols: always (its rules test -p first)
        ((stop,), Return()),
        ((ProtoMatch("TCP"),), Jump(chain_of("named"))),  # a named port: the protocol only
        ((stop,), Return()),
        ((), Jump(chain_of("any"))),  # a rule of every protocol: always
    ]
    # Verdicts through the gates (checked against the engine by Node).
    assert not node.allowed(REMOTE, A, 5432)
    assert not node.allowed(REMOTE, A, 2380)
    assert node.allowed(REMOTE, A, 53, "UDP")  # not mixed's UDP peer; "any" passes it
    assert node.allowed(B, A, 53, "UDP")  # mixed accepts
    assert not node.allowed(REMOTE, A, 8080)  # named: a's http
    assert node.allowed(REMOTE, A, 99, "SCTP")  # passed, nothing else isolates
    # A TCP packet on a port none of pg's and mixed's rules names skips pg's chain and
    # makes no set lookup in mixed's; "named" tests its tport set (a's http is 8080:
    # no), "any" passes it without a set (its Pass has no peer).
    plane = CountingPlane(node.out.v4.chains, node.out.v4.ipsets)
    trace = plane.evaluate(Packet(REMOTE, A, "TCP", 4000))
    assert chain_of("pg") not in trace.chains
    assert chain_of("mixed") in trace.chains
    dispatch = 2  # "not a subject" and the group's set
    assert plane.lookups == dispatch + 1
    assert trace.verdict == "RETURN"


Proto = Literal["TCP", "UDP", "SCTP"]
PROTO: st.SearchStrategy[Proto] = st.sampled_from(("TCP", "UDP", "SCTP"))
RANGE = st.tuples(st.integers(1, 200), st.integers(0, 30)).map(lambda t: (t[0], t[0] + t[1]))


@st.composite
def rule_matches(draw: st.DrawFn) -> tuple[Match, ...]:
    kind = draw(st.sampled_from(("any", "proto", "ports", "named")))
    peer: tuple[Match, ...] = (SetMatch("stk-peer4-0000000000000000", "src"),)
    if kind == "any":
        return peer
    proto = draw(PROTO)
    if kind == "proto":
        return (ProtoMatch(proto), *peer)
    if kind == "named":
        return (ProtoMatch(proto), SetMatch("stk-tport4-0000000000000000", "dst,dst"), *peer)
    ranges = draw(st.lists(RANGE, min_size=1, max_size=7))
    return (ProtoMatch(proto), PortRange(proto, tuple(sorted(ranges))), *peer)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(rule_matches(), max_size=12),
    st.lists(st.tuples(PROTO, st.integers(1, 240)), min_size=1, max_size=20),
)
def test_gates_never_exclude_a_packet_a_rule_could_match(
    matches: list[tuple[Match, ...]], packets: list[tuple[str, int]]
) -> None:
    rules = [Rule(m, Goto("STK-PASS"), "stockade:t") for m in matches]
    gates = render_module._gates(rules)
    if not rules:
        assert gates == []
        return
    for proto, port in packets:

        def cheap(ms: Sequence[Match], proto: str = proto, port: int = port) -> bool:
            for m in ms:
                if isinstance(m, ProtoMatch) and m.protocol != proto:
                    return False
                if isinstance(m, PortRange) and not any(a <= port <= b for a, b in m.ranges):
                    return False
            return True

        could = any(cheap(r.matches) for r in rules)
        assert len(gates) == 1  # one jump per policy
        gated = [g for g in gates if cheap(g)]
        if could:
            assert gated, (proto, port, gates)


# --- policies inlined into group chains --------------------------------------------------


def _np_chain(pid_name: str) -> str:
    return f"STK-I-{stable_hash(pid_name, 12)}"


def _ports_rules(count: int) -> list[CompiledRule]:
    """``count`` rules of one peer and one port each: ``count`` iptables rules."""
    return [CompiledRule((to("remote"),), (tcp(1000 + i),)) for i in range(count)]


def _group_chain(node: Node, prefix: str = "STK-IG-") -> tuple[Rule, ...]:
    """The group chain itself: not the chain of its rules for the members of a set
    many of them test (stockade.agent.setsplit), which its packets reach from it."""
    (rules,) = [
        r
        for n, r in node.inlined_chains().items()
        if n.startswith(prefix) and not n.endswith(SUFFIX)
    ]
    return rules


# (rules in the policy, groups using it, inlined?): a jump costs two rules in each
# group chain, so up to two rules are always inlined; then up to INLINE_MAX_RULES
# rules, while the copies stay within INLINE_MAX_COPIES.
INLINE_TABLE = [
    (0, 1, True),
    (1, 1, True),
    (2, 300, True),
    (render_module.INLINE_MAX_RULES, 1, True),
    (render_module.INLINE_MAX_RULES + 1, 1, False),
    (4, render_module.INLINE_MAX_COPIES // 4, True),
    (4, render_module.INLINE_MAX_COPIES // 4 + 1, False),
]


@pytest.mark.parametrize(("rules", "groups", "inlined"), INLINE_TABLE)
def test_when_a_networkpolicy_is_inlined(rules: int, groups: int, inlined: bool) -> None:
    pods = [lpod(f"p{i}", f"10.1.{i // 250}.{i % 250 + 1}") for i in range(groups)]
    # Each pod is its own group: the shared policy plus one policy of its own.
    shared = np_("ns/shared", ingress=_ports_rules(rules), targets=[p.name for p in pods])
    own = [np_(f"ns/own-{i}", ingress=[], targets=[p.name]) for i, p in enumerate(pods)]
    rs = rule_set(policies=[shared, *own], pods=pods)
    out = render(rs, {"remote": SETS["remote"]}, options=RenderOptions())
    chains = {c.name: c.rules for c in out.v4.chains}
    jumps = [
        r
        for n, rs in chains.items()
        if n.startswith("STK-IG-")
        for r in rs
        if isinstance(r.action, Jump) and r.action.chain == _np_chain("ns/shared")
    ]
    assert (_np_chain("ns/shared") not in chains) == inlined
    assert len(jumps) == (0 if inlined else groups)
    if not inlined:
        assert len(chains[_np_chain("ns/shared")]) == rules


def test_an_inlined_networkpolicy_allows_and_denies_as_its_chain() -> None:
    allow = np_("ns/allow", ingress=[CompiledRule((to("remote"),), (tcp(8080),))])
    node = Node(rule_set(policies=[ISOLATE_IN, allow], pods=PODS))
    group = _group_chain(node)
    # No jump and no "allowed?" check: the rule itself goes to the allow chain.
    assert not any(isinstance(r.action, Jump) for r in group)
    assert any(isinstance(r.action, Goto) and r.action.chain == "STK-ALLOW-INGRESS" for r in group)
    assert not any(n.startswith("STK-I-") for n in node.inlined_chains())
    assert node.allowed(REMOTE, A, 8080)  # checked on both layouts and the engine
    assert not node.allowed(REMOTE, A, 8081)
    assert not node.allowed("10.2.0.99", A, 8080)


def test_a_gated_cluster_policy_keeps_its_chain_and_a_short_one_is_inlined() -> None:
    # Four rules on TCP 80-83 only: the gate skips them all for one rule visit.
    gated = cnp("gated", ingress=[tr(DENY, [to("remote")], [tcp(80 + i)]) for i in range(4)])
    # Two rules: no more than the gated jump and the check after it.
    short = cnp(
        "short", priority=20, ingress=[tr(ACCEPT, [to("remote")], [tcp(90 + i)]) for i in range(2)]
    )
    # Rules of two protocols: no gate to lose.
    mixed = cnp(
        "mixed",
        priority=30,
        ingress=[
            tr(DENY, [to("remote")], [tcp(100)]),
            tr(DENY, [to("remote")], [PortMatch("UDP", 100)]),
            tr(PASS, [to("remote")]),
        ],
    )
    node = Node(rule_set(gated, short, mixed, pods=PODS))
    chains = node.inlined_chains()
    assert chain_of("gated") in chains
    assert chain_of("short") not in chains
    assert chain_of("mixed") not in chains
    group = _group_chain(node, "STK-AIG-")
    jumps = [r for r in group if isinstance(r.action, Jump)]
    assert [j.action.chain for j in jumps] == [chain_of("gated")]  # type: ignore[union-attr]
    # After the jumped policy, one check stops the tier if it decided; none after inlined ones.
    checks = [r for r in group if isinstance(r.action, Return)]
    assert len(checks) == 1
    assert group.index(checks[0]) == group.index(jumps[0]) + 1
    for port, allowed in ((80, False), (90, True), (91, True), (100, False), (5000, True)):
        assert node.allowed(REMOTE, A, port) == allowed, port


def test_inlining_shortens_the_walk_of_a_new_connection() -> None:
    # Ten short policies, none allows the packet: jumped, it enters each policy's
    # chain (a jump, the chain's end, the check after it); inlined, none.
    pols = [
        np_(f"ns/p{i}", ingress=[CompiledRule((to("remote"),), (tcp(9000 + i),))])
        for i in range(10)
    ]
    rs = rule_set(policies=pols, pods=PODS)
    walks = {}
    for inline in (False, True):
        out = render(rs, {"remote": SETS["remote"]}, options=RenderOptions(inline_policies=inline))
        plane = Dataplane(out.v4.chains, out.v4.ipsets)
        trace = plane.evaluate(Packet(REMOTE, A, "TCP", 7000))
        assert trace.verdict == "DROP"
        walks[inline] = len(trace.chains)
    assert walks[True] < walks[False] - 8


# --- tier group chains split by protocol --------------------------------------------------


def _mixed_policies() -> list[NodeClusterPolicy]:
    """Two short (inlined) policies, ten rules over TCP, UDP, SCTP and no protocol."""
    rules = [
        tr(DENY, [to("remote")], [tcp(22)]),
        tr(DENY, [to("remote")], [PortMatch("UDP", 53)]),
        tr(DENY, [to("remote")], [PortMatch("SCTP", 9)]),
        tr(ACCEPT, [to("remote")], [tcp(8080)]),
        tr(PASS, [to("remote")], [PortMatch("UDP", 5353)]),
        tr(DENY, [to("local-b")]),
        tr(ACCEPT, [to("remote")], [tcp(443)]),
        tr(DENY, [to("remote")], [PortMatch("UDP", 123)]),
        tr(ACCEPT, [to("remote")], [PortMatch("SCTP", 38412)]),
        tr(DENY, [to("remote")], [tcp(25)]),
    ]
    return [
        cnp("mixed-1", priority=10, ingress=rules[:5]),
        cnp("mixed-2", priority=20, ingress=rules[5:]),
    ]


def _without_set_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render tier group chains without their split on a set many rules test (these
    tests' rules all name one peer): what they check is the protocol split and the
    shadowed copies, the chains as written."""
    monkeypatch.setattr(render_module, "split_by_set", lambda chain, *_: [chain])


def test_a_long_tier_group_chain_is_split_by_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_set_split(monkeypatch)
    node = Node(rule_set(*_mixed_policies(), pods=PODS))
    chains = node.inlined_chains()
    (group,) = [n for n in chains if n.startswith("STK-AIG-") and len(n) == 24]
    head = chains[group]
    # A goto for TCP, then every other rule (UDP, SCTP, no protocol) in order.
    assert head[0].matches == (ProtoMatch("TCP"),)
    assert head[0].action == Goto(f"{group}-T")
    assert len(head) == 1 + 6
    # The TCP chain: its own rules and the protocol-less one, in order.
    assert len(chains[f"{group}-T"]) == 5
    assert not any(n.endswith(("-U", "-S")) for n in chains)
    # Same verdicts as the unsplit layout and the engine, every protocol.
    for port, proto in ((22, "TCP"), (8080, "TCP"), (80, "TCP"), (53, "UDP"), (5353, "UDP")):
        node.verdict(REMOTE, A, port, proto)
    for port, proto in ((9, "SCTP"), (38412, "SCTP"), (1, "ICMP")):
        node.verdict(REMOTE, A, port, proto)
    assert node.allowed(B, A, 80, "ICMP") is False  # the protocol-less deny, in "others"


HTTP_OUT = PortMatch("TCP", name="http", named_port_set="np-http")
# Four peers, so that no rule is a copy of another.
PEERS = ("remote", "local-a", "local-b", "nodes")


def test_a_named_port_many_rules_of_a_group_chain_test_is_looked_up_once() -> None:
    """Four Admin policies from one template pass their own peer on the named port
    "http": each rule looks the named-port set up before its peer, whatever the
    port. In a's group chain the set is looked up once, and every verdict, to
    every port and protocol, is the engine's."""
    policies = [
        cnp(f"team-{k}", priority=k, egress=[tr(PASS, [to(peer)], [HTTP_OUT])])
        for k, peer in enumerate(PEERS)
    ]
    policies.append(cnp("deny-rest", priority=9, egress=[tr(DENY, [to("remote")])]))
    node = Node(rule_set(*policies))
    chains = node.inlined_chains()
    (group,) = [n for n in chains if n.startswith("STK-AEG-") and not n.endswith(SUFFIX)]
    head, members = chains[group], chains[f"{group}{SUFFIX}"]
    lookup = [r for r in head if r.action == Goto(f"{group}{SUFFIX}")]
    assert len(lookup) == 1
    (named,) = lookup[0].matches
    # Not in the set: no rule of the named port is left to walk.
    assert not any(named in r.matches for r in head if r is not lookup[0])
    # In the set: no rule tests it again.
    assert not any(named in r.matches for r in members)
    for dst in (REMOTE, B, OTHER_NODE, "10.9.9.9"):
        for port, proto in ((9090, "TCP"), (81, "TCP"), (8080, "TCP"), (9090, "UDP")):
            node.verdict(A, dst, port, proto)


def test_a_networkpolicy_group_chain_splits_on_a_named_port_its_policies_share() -> None:
    """The same with NetworkPolicies: four policies of pod a let it reach its own
    peer on the named port "http" (egress)."""
    pols = [
        np_(f"ns/out-{k}", egress=[CompiledRule((to(peer),), (HTTP_OUT,))])
        for k, peer in enumerate(PEERS)
    ]
    node = Node(rule_set(policies=pols, pods=PODS))
    chains = node.inlined_chains()
    (group,) = [n for n in chains if n.startswith("STK-EG-") and not n.endswith(SUFFIX)]
    assert f"{group}{SUFFIX}" in chains
    for dst in (REMOTE, B, OTHER_NODE, "10.9.9.9"):
        for port, proto in ((9090, "TCP"), (81, "TCP"), (8080, "TCP"), (9090, "UDP")):
            node.verdict(A, dst, port, proto)


def test_a_peer_looked_up_after_its_port_does_not_split_a_group_chain() -> None:
    """Five policies let the remote peers in, each on a port of its own: each rule
    looks the peer set up only for a packet to its port, so the chain stays whole
    (a lookup up front would tax every other packet)."""
    pols = [
        np_(f"ns/mon-{i}", ingress=[CompiledRule((to("remote"),), (tcp(9100 + i),))])
        for i in range(5)
    ]
    node = Node(rule_set(policies=pols, pods=PODS))
    assert not any(n.endswith(SUFFIX) for n in node.inlined_chains())
    for port in (9099, 9100, 9104):
        node.verdict(REMOTE, A, port)


def test_a_chain_without_tcp_rules_stays_whole() -> None:
    udp = [tr(DENY, [to("remote")], [PortMatch("UDP", 1000 + k)]) for k in range(8)]
    node = Node(rule_set(cnp("udp-only", ingress=udp), pods=PODS))
    assert not any(n.endswith("-T") for n in node.inlined_chains())
    assert not node.allowed(REMOTE, A, 1003, "UDP")


def test_a_short_tier_group_chain_stays_whole() -> None:
    short = cnp("short", ingress=[tr(DENY, [to("remote")], [tcp(22)]), tr(PASS, [to("remote")])])
    node = Node(rule_set(short, pods=PODS))
    assert not any(n.endswith(("-T", "-U", "-S")) for n in node.inlined_chains())


def test_a_templated_rule_is_written_once_in_a_group_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three Admin policies from one template: each denies the remote set on 6443,
    then accepts its own port. In the pod's group chain the deny is written once
    (its later copies can never match first), and every verdict is unchanged."""
    _without_set_split(monkeypatch)
    template = [
        cnp(
            f"team-{k}",
            priority=k,
            egress=[
                tr(DENY, [to("remote")], [tcp(6443)]),
                tr(ACCEPT, [to("remote")], [tcp(7000 + k)]),
            ],
        )
        for k in range(3)
    ]
    node = Node(rule_set(*template))
    chains = {c.name: c.rules for c in node.inlined.v4.chains}
    (group,) = [n for n in chains if n.startswith("STK-AEG-")]
    denies = [r for r in chains[group] if PortRange("TCP", ((6443, 6443),)) in r.matches]
    assert len(denies) == 1
    assert len(chains[group]) == 4  # one deny, three accepts
    assert not node.allowed(A, REMOTE, 6443)
    for k in range(3):
        assert node.allowed(A, REMOTE, 7000 + k)
