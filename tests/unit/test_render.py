"""The renderer: rule sets into typed chains and sets, then text.

Each case is checked three ways, in this order: data (chain and rule counts, names,
limits), verdicts (the typed model run by tests/unit/iptables_sim.py), and text
(golden files under tests/unit/golden/, regenerated with STOCKADE_UPDATE_GOLDEN=1;
review the diff before committing it).
"""

from __future__ import annotations

import os
import random
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from unittest.mock import patch

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.agent import render as render_module
from stockade.agent.ipsets import (
    IPFamily,
    IPSet,
    IPSetModelError,
    Member,
    make_set,
    render_swap,
)
from stockade.agent.iptables import (
    AddressMatch,
    Chain,
    Drop,
    Goto,
    IptablesModelError,
    Jump,
    PortRange,
    ProtoMatch,
    Return,
    Rule,
    SameAddress,
    SetMatch,
    canonical_cidr,
    quote,
    render_rule,
    rule_argv,
    split_multiport,
)
from stockade.agent.render import (
    DISPATCH_BITS,
    DISPATCH_FANOUT,
    MissingPeerSetsError,
    RenderedNode,
    RenderError,
    RenderOptions,
    RenderOptionsError,
    contested_set_name,
    pending_set_name,
    render,
)
from stockade.cluster import parse_documents
from stockade.compiler import compile_cluster
from stockade.ruleset import (
    CompiledPolicy,
    CompiledRule,
    ContainerPortSpec,
    LocalPod,
    NamedPortRef,
    NodePolicy,
    NodeRuleSet,
    PeerMatch,
    PeerMember,
    PeerSelector,
    PeerSet,
    PortMatch,
    SelectorRequirement,
    stable_hash,
)
from stockade.verdict import Dataplane as Engine
from stockade.verdict import NodeEvaluator, SetIndex
from tests.unit.iptables_sim import Dataplane, Packet, Verdict
from tests.unit.strategies import EXTERNAL, INLINE_CHOICES, PROBE_PORTS, PROTOCOLS, cluster_docs

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("STOCKADE_UPDATE_GOLDEN") == "1"
PeerSets = Mapping[str, Sequence[PeerSet]]


# --- input builders ------------------------------------------------------------------


def lpod(name: str, *ips: str, ports: Sequence[tuple[str, int, str]] = ()) -> LocalPod:
    """A local pod with named container ports (name, number, protocol)."""
    return LocalPod(name, ips, tuple(ContainerPortSpec(n, p, proto) for n, p, proto in ports))


def policy(
    name: str,
    ingress: Sequence[CompiledRule] | None = None,
    egress: Sequence[CompiledRule] | None = None,
) -> CompiledPolicy:
    """A compiled policy whose id is derived from its name, as the compiler does."""
    return CompiledPolicy(
        name=name,
        id=stable_hash(name, 12),
        ingress=None if ingress is None else tuple(ingress),
        egress=None if egress is None else tuple(egress),
    )


def rule(peers: Sequence[PeerMatch] = (), ports: Sequence[PortMatch] = ()) -> CompiledRule:
    """An allow rule."""
    return CompiledRule(tuple(peers), tuple(ports))


def tcp(port: int, end: int | None = None) -> PortMatch:
    """A numeric TCP port (or range)."""
    return PortMatch("TCP", port, end)


def peers(name: str) -> PeerMatch:
    """A PeerSet peer."""
    return PeerMatch(peer_set=name)


def cidr(net: str, *excepts: str) -> PeerMatch:
    """An ipBlock peer."""
    return PeerMatch(cidr=net, excepts=excepts)


def node(pods: Sequence[LocalPod], *policies: tuple[CompiledPolicy, Sequence[str]]) -> NodeRuleSet:
    """A node rule set; targets are given by pod name."""
    nps = tuple(NodePolicy(p, tuple(t)) for p, t in policies)
    names = sorted(set().union(*(np.policy.peer_sets() for np in nps)))
    return NodeRuleSet("node-a", tuple(pods), nps, tuple(names))


def peer_set(
    name: str,
    members: Sequence[tuple[str, Sequence[str], int | None]],
    *,
    named_port: NamedPortRef | None = None,
    shards: int = 1,
) -> list[PeerSet]:
    """A PeerSet of (pod, ips, port) members, split round-robin into ``shards``."""
    selector = PeerSelector(
        pod_selector=(SelectorRequirement("app", "In", (name,)),), named_port=named_port
    )
    pm = [PeerMember(pod, tuple(ips), port) for pod, ips, port in members]
    return [
        PeerSet(f"{name}-{i}", name, selector, i, shards, tuple(pm[i::shards]))
        for i in range(shards)
    ]


def sets_of(*groups: list[PeerSet]) -> dict[str, list[PeerSet]]:
    """set_name -> shards, as the agent's cache hands them over."""
    return {g[0].set_name: g for g in groups}


# --- the cases -----------------------------------------------------------------------

Check = tuple[IPFamily, Packet, Verdict]


@dataclass(frozen=True)
class Case:
    """One golden case: input, options, and verdicts to check in the simulator."""

    node: NodeRuleSet
    peer_sets: PeerSets = field(default_factory=dict)
    options: RenderOptions = field(default_factory=RenderOptions)
    checks: tuple[Check, ...] = ()


def _v4(src: str, dst: str, proto: str = "TCP", dport: int = 80, ct: str = "NEW") -> Packet:
    return Packet(src, dst, proto, dport, ct)


FRONTEND = peer_set("frontend", [("fe-1", ["10.0.2.5", "fd00:2::5"], None)])
WEB = lpod("web", "10.0.1.10")
WEB_POLICY = policy("default/web", ingress=[rule([peers("frontend")], [tcp(80)])])


def _case_ingress_peer_port() -> Case:
    return Case(
        node(
            [WEB, lpod("other", "10.0.1.11")],
            (WEB_POLICY, ["web"]),
        ),
        sets_of(FRONTEND),
        checks=(
            (4, _v4("10.0.2.5", "10.0.1.10"), "RETURN"),
            (4, _v4("10.0.2.5", "10.0.1.10", dport=81), "DROP"),
            (4, _v4("10.0.2.5", "10.0.1.10", "UDP"), "DROP"),
            (4, _v4("10.0.2.6", "10.0.1.10"), "DROP"),
            (4, _v4("10.0.2.6", "10.0.1.10", ct="ESTABLISHED"), "RETURN"),
            (4, _v4("10.0.2.5", "10.0.1.10", ct="INVALID"), "DROP"),
            # not isolated for egress, and "other" is not selected at all
            (4, _v4("10.0.1.10", "8.8.8.8"), "RETURN"),
            (4, _v4("10.0.2.6", "10.0.1.11"), "RETURN"),
            (4, _v4("10.0.2.6", "10.0.1.11", ct="INVALID"), "RETURN"),
        ),
    )


def _case_egress_ipblock_except() -> Case:
    pol = policy(
        "default/app",
        egress=[
            rule([cidr("0.0.0.0/0", "10.0.0.0/8")]),
            rule([cidr("10.1.0.0/16", "10.1.2.0/24", "10.1.3.4/32")], [tcp(443)]),
        ],
    )
    app = "10.0.1.20"
    return Case(
        node([lpod("app", app)], (pol, ["app"])),
        checks=(
            (4, _v4(app, "8.8.8.8", "UDP", 53), "RETURN"),
            (4, _v4(app, "200.1.1.1"), "RETURN"),
            (4, _v4(app, "10.2.3.4"), "DROP"),
            (4, _v4(app, "10.1.5.5", dport=443), "RETURN"),
            (4, _v4(app, "10.1.5.5"), "DROP"),
            (4, _v4(app, "10.1.2.3", dport=443), "DROP"),
            (4, _v4(app, "10.1.3.4", dport=443), "DROP"),
            (4, _v4(app, "10.1.3.5", dport=443), "RETURN"),
            (4, _v4("10.9.9.9", app), "RETURN"),  # ingress not isolated
        ),
    )


def _case_named_port_ingress() -> Case:
    pol = policy("default/http", ingress=[rule(ports=[PortMatch("TCP", name="http")])])
    return Case(
        node(
            [
                lpod("a", "10.0.1.1", ports=[("http", 8080, "TCP")]),
                lpod("b", "10.0.1.2", ports=[("http", 9090, "TCP"), ("http", 9091, "UDP")]),
                lpod("c", "10.0.1.3"),
            ],
            (pol, ["a", "b", "c"]),
        ),
        checks=(
            (4, _v4("10.9.0.1", "10.0.1.1", dport=8080), "RETURN"),
            (4, _v4("10.9.0.1", "10.0.1.1", dport=9090), "DROP"),
            (4, _v4("10.9.0.1", "10.0.1.2", dport=9090), "RETURN"),
            (4, _v4("10.9.0.1", "10.0.1.2", "UDP", 9091), "DROP"),
            (4, _v4("10.9.0.1", "10.0.1.3", dport=8080), "DROP"),
            (4, _v4("10.9.0.1", "10.0.1.1", "UDP", 8080), "DROP"),
        ),
    )


def _case_named_port_egress() -> Case:
    dns = peer_set("dns", [("dns-1", ["10.0.3.1"], None), ("dns-2", ["10.0.3.2"], None)])
    dns_np = peer_set(
        "dns-np",
        [
            ("dns-1", ["10.0.3.1"], 5353),
            ("dns-2", ["10.0.3.2"], 53),
            ("cache", ["10.0.4.4"], 5353),
        ],
        named_port=NamedPortRef("dns", "UDP"),
    )
    pol = policy(
        "default/client",
        egress=[rule([peers("dns")], [PortMatch("UDP", name="dns", named_port_set="dns-np")])],
    )
    c = "10.0.1.5"
    return Case(
        node([lpod("client", c)], (pol, ["client"])),
        sets_of(dns, dns_np),
        checks=(
            (4, _v4(c, "10.0.3.1", "UDP", 5353), "RETURN"),
            (4, _v4(c, "10.0.3.1", "UDP", 53), "DROP"),
            (4, _v4(c, "10.0.3.2", "UDP", 53), "RETURN"),
            (4, _v4(c, "10.0.4.4", "UDP", 5353), "DROP"),  # declares it, not a peer
            (4, _v4(c, "10.0.3.1", "TCP", 5353), "DROP"),
        ),
    )


def _case_end_port_range() -> Case:
    pol = policy("default/range", ingress=[rule(ports=[tcp(8000, 9000), tcp(443)])])
    dst = "10.0.1.10"
    return Case(
        node([WEB], (pol, ["web"])),
        checks=tuple((4, _v4("10.9.0.1", dst, dport=p), "RETURN") for p in (8000, 8500, 9000, 443))
        + tuple((4, _v4("10.9.0.1", dst, dport=p), "DROP") for p in (7999, 9001, 80)),
    )


MANY_PORTS = [*range(1000, 1020), 2000, 3000]


def _case_many_ports() -> Case:
    pol = policy(
        "default/many",
        ingress=[rule(ports=[*(tcp(p) for p in MANY_PORTS), tcp(5000, 5010), tcp(6000, 6010)])],
    )
    dst = "10.0.1.10"
    allowed = [*MANY_PORTS, 5000, 5005, 5010, 6000, 6010]
    return Case(
        node([WEB], (pol, ["web"])),
        checks=tuple((4, _v4("10.9.0.1", dst, dport=p), "RETURN") for p in allowed)
        + tuple((4, _v4("10.9.0.1", dst, dport=p), "DROP") for p in (999, 1020, 5011, 2001)),
    )


def _case_sctp() -> Case:
    pol = policy("default/sctp", ingress=[rule(ports=[PortMatch("SCTP", 5000)])])
    dst = "10.0.1.10"
    return Case(
        node([WEB], (pol, ["web"])),
        checks=(
            (4, _v4("10.9.0.1", dst, "SCTP", 5000), "RETURN"),
            (4, _v4("10.9.0.1", dst, "SCTP", 5001), "DROP"),
            (4, _v4("10.9.0.1", dst, "TCP", 5000), "DROP"),
        ),
    )


def _case_dual_stack() -> Case:
    pol = policy(
        "default/web",
        ingress=[rule([peers("frontend")], [tcp(80)]), rule([cidr("fd00:99::/64")])],
    )
    return Case(
        node([lpod("web", "10.0.1.10", "fd00:1::10")], (pol, ["web"])),
        sets_of(FRONTEND),
        checks=(
            (4, _v4("10.0.2.5", "10.0.1.10"), "RETURN"),
            # the v6-only ipBlock must not become "any peer" in the v4 table
            (4, _v4("10.0.99.1", "10.0.1.10", dport=22), "DROP"),
            (6, _v4("fd00:2::5", "fd00:1::10"), "RETURN"),
            (6, _v4("fd00:2::5", "fd00:1::10", dport=22), "DROP"),
            (6, _v4("fd00:99::1", "fd00:1::10", dport=22), "RETURN"),
            (6, _v4("fd00:3::1", "fd00:1::10"), "DROP"),
        ),
    )


def _case_reject_nflog() -> Case:
    base = _case_ingress_peer_port()
    opts = RenderOptions(drop_action="REJECT", log_denied=True, log_mode="NFLOG", nflog_group=7)
    return Case(
        base.node,
        base.peer_sets,
        opts,
        checks=(
            (4, _v4("10.0.2.5", "10.0.1.10"), "RETURN"),
            (4, _v4("10.0.2.6", "10.0.1.10"), "REJECT"),
            # INVALID is dropped silently, never rejected
            (4, _v4("10.0.2.6", "10.0.1.10", ct="INVALID"), "DROP"),
        ),
    )


def _case_no_policies() -> Case:
    return Case(
        node([WEB]),
        checks=(
            (4, _v4("10.9.0.1", "10.0.1.10"), "RETURN"),
            (4, _v4("10.0.1.10", "10.9.0.1", ct="INVALID"), "RETURN"),
            (6, _v4("fd00::1", "fd00::2"), "RETURN"),
        ),
    )


def _case_two_groups() -> Case:
    a = policy("default/a", ingress=[rule([peers("frontend")], [tcp(80)])])
    b = policy("default/b", ingress=[rule(ports=[tcp(8080)])])
    p1, p2 = "10.0.1.1", "10.0.1.2"
    return Case(
        node([lpod("p1", p1), lpod("p2", p2)], (a, ["p1", "p2"]), (b, ["p2"])),
        sets_of(FRONTEND),
        checks=(
            (4, _v4("10.9.9.9", p2, dport=8080), "RETURN"),
            (4, _v4("10.9.9.9", p1, dport=8080), "DROP"),
            (4, _v4("10.0.2.5", p1), "RETURN"),
            (4, _v4("10.0.2.5", p2), "RETURN"),
            (4, _v4("10.9.9.9", p2), "DROP"),
        ),
    )


CASES: dict[str, Callable[[], Case]] = {
    "ingress_peer_port": _case_ingress_peer_port,
    "egress_ipblock_except": _case_egress_ipblock_except,
    "named_port_ingress": _case_named_port_ingress,
    "named_port_egress": _case_named_port_egress,
    "end_port_range": _case_end_port_range,
    "many_ports": _case_many_ports,
    "sctp": _case_sctp,
    "dual_stack": _case_dual_stack,
    "reject_nflog": _case_reject_nflog,
    "no_policies": _case_no_policies,
    "two_groups": _case_two_groups,
}


def _render(case: Case, *, jumped: bool = False) -> RenderedNode:
    """``jumped``: one chain per policy, never inlined (for tests that read them)."""
    options = replace(case.options, inline_policies=False) if jumped else case.options
    return render(case.node, case.peer_sets, options=options)


def _dataplane(out: RenderedNode, family: IPFamily) -> Dataplane:
    fam = out.family(family)
    return Dataplane(fam.chains, fam.ipsets)


def _rules_text(out: RenderedNode) -> str:
    jump = render_rule("FORWARD", out.forward_jump, insert_at=1)
    return (
        f"# forward jump (the applier inserts it once): {jump}\n"
        f"# IPv4\n{out.restore_text(4)}# IPv6\n{out.restore_text(6)}"
    )


def _sets_text(out: RenderedNode) -> str:
    return f"# IPv4\n{out.ipset_text(4)}# IPv6\n{out.ipset_text(6)}"


# --- data first ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES), ids=sorted(CASES))
def test_names_limits_and_comments(name: str) -> None:
    out = _render(CASES[name]())
    for fam in (out.v4, out.v6):
        chain_names = [c.name for c in fam.chains]
        assert len(set(chain_names)) == len(chain_names)
        assert all(n.startswith("STK-") and len(n) <= 28 for n in chain_names)
        assert all(len(s.name) <= 27 and s.name.startswith("stk-") for s in fam.ipsets)
        assert [s.name for s in fam.ipsets] == sorted(s.name for s in fam.ipsets)
        for chain in fam.chains:
            for r in chain.rules:
                assert r.comment.startswith("stockade:")
                assert len(r.comment) <= 255
                assert not any(isinstance(m, PortRange) and len(m.ranges) > 15 for m in r.matches)
        # Both families always have the same chains: pod IP families never change rules.
        assert chain_names == [c.name for c in out.v4.chains]


def test_rule_count_depends_on_policies_not_pods() -> None:
    def build(n: int) -> RenderedNode:
        pods = [lpod(f"web-{i}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(n)]
        return render(
            node(pods, (WEB_POLICY, [p.name for p in pods])),
            sets_of(FRONTEND),
            options=RenderOptions(),
        )

    one, many = build(1), build(500)
    for f1, f500 in ((one.v4, many.v4), (one.v6, many.v6)):
        assert [(c.name, len(c.rules)) for c in f1.chains] == [
            (c.name, len(c.rules)) for c in f500.chains
        ]
    assert one.restore_text(4) == many.restore_text(4)  # only set members differ
    group_set = next(s for s in many.v4.ipsets if s.name.startswith("stk-ig4-"))
    assert len(group_set.members) == 500


def test_two_groups_dispatch_only_their_policies() -> None:
    case = _case_two_groups()
    out = _render(case, jumped=True)
    a, b = (np.policy for np in case.node.policies)
    ingress = next(c for c in out.v4.chains if c.name == "STK-INGRESS")
    assert len(ingress.rules) == 3  # "not isolated", then one lookup per group, not per policy
    groups = [c for c in out.v4.chains if c.name.startswith("STK-IG-")]
    jumps = sorted(
        tuple(r.action.chain for r in g.rules if isinstance(r.action, Jump)) for g in groups
    )
    assert jumps == sorted([(f"STK-I-{a.id}",), tuple(sorted([f"STK-I-{a.id}", f"STK-I-{b.id}"]))])
    # the policy chain is shared by both groups
    assert sum(c.name == f"STK-I-{a.id}" for c in out.v4.chains) == 1


def test_multiport_split() -> None:
    case = _case_many_ports()
    out = _render(case, jumped=True)
    chain = next(c for c in out.v4.chains if c.name.startswith("STK-I-"))
    slots = [
        sum(1 if a == b else 2 for a, b in m.ranges)
        for r in chain.rules
        for m in r.matches
        if isinstance(m, PortRange)
    ]
    # 22 single ports + 2 ranges = 26 slots: 15 + 11
    assert slots == [15, 11]
    assert split_multiport([(p, p) for p in range(1, 16)]) == [tuple((p, p) for p in range(1, 16))]
    assert len(split_multiport([(p, p) for p in range(1, 17)])) == 2
    assert [len(c) for c in split_multiport([(1, 2)] * 8)] == [7, 1]


def test_both_directions_must_allow() -> None:
    a_pol = policy("default/a", egress=[rule([peers("b")])])
    b_pol = policy("default/b", ingress=[rule([peers("c")])])
    b_set = peer_set("b", [("b", ["10.0.1.2"], None)])
    c_set = peer_set("c", [("c", ["10.0.1.3"], None)])
    n = node(
        [lpod("a", "10.0.1.1"), lpod("b", "10.0.1.2"), lpod("c", "10.0.1.3")],
        (a_pol, ["a"]),
        (b_pol, ["b"]),
    )
    out = render(n, sets_of(b_set, c_set), options=RenderOptions(log_denied=True, log_mode="LOG"))
    dp = _dataplane(out, 4)
    denied = dp.evaluate(_v4("10.0.1.1", "10.0.1.2"))
    assert denied.verdict == "DROP"
    assert denied.logs
    assert denied.logs[0].startswith("stk deny ingress ")
    assert dp.verdict(_v4("10.0.1.3", "10.0.1.2")) == "RETURN"
    egress_denied = dp.evaluate(_v4("10.0.1.1", "10.0.1.3"))
    assert egress_denied.verdict == "DROP"
    assert egress_denied.logs[0].startswith("stk deny egress ")
    # an allowed packet leaves with none of stockade's mark bits set
    assert dp.evaluate(_v4("10.0.1.3", "10.0.1.2", ct="NEW")).mark == 0
    assert dp.evaluate(Packet("10.0.1.3", "10.0.1.2", mark=0x4000)).mark == 0x4000


def test_deterministic_whatever_the_input_order() -> None:
    case = _case_two_groups()
    base = _render(case)
    rng = random.Random(7)
    for _ in range(5):
        pods = list(case.node.pods)
        pols = list(case.node.policies)
        rng.shuffle(pods)
        rng.shuffle(pols)
        shuffled = replace(case.node, pods=tuple(pods), policies=tuple(pols))
        shards = peer_set(
            "frontend",
            [("fe-1", ["10.0.2.5", "fd00:2::5"], None), ("fe-2", ["10.0.2.9"], None)],
            shards=2,
        )
        rng.shuffle(shards)
        out = render(shuffled, {"frontend": shards}, options=RenderOptions())
        assert out.restore_text(4) == base.restore_text(4)
        assert out.restore_text(6) == base.restore_text(6)
        assert "10.0.2.9" in out.ipset_text(4)


def test_missing_or_incomplete_peer_sets() -> None:
    case = _case_ingress_peer_port()
    with pytest.raises(MissingPeerSetsError, match="frontend") as err:
        render(case.node, {}, options=RenderOptions())
    assert err.value.names == ("frontend",)
    two = peer_set("frontend", [("a", ["10.0.0.1"], None), ("b", ["10.0.0.2"], None)], shards=2)
    with pytest.raises(MissingPeerSetsError):
        render(case.node, {"frontend": two[:1]}, options=RenderOptions())


def test_inconsistent_rule_sets_are_refused() -> None:
    with pytest.raises(RenderError, match="not a local pod"):
        render(node([WEB], (WEB_POLICY, ["ghost"])), sets_of(FRONTEND), options=RenderOptions())
    no_set = policy("default/x", egress=[rule(ports=[PortMatch("TCP", name="http")])])
    with pytest.raises(RenderError, match="named port"):
        render(node([WEB], (no_set, ["web"])), {}, options=RenderOptions())
    bad_proto = policy("default/y", ingress=[rule(ports=[PortMatch("ICMP", 1)])])
    with pytest.raises(RenderError, match="unknown protocol"):
        render(node([WEB], (bad_proto, ["web"])), {}, options=RenderOptions())
    bad_range = policy("default/z", ingress=[rule(ports=[tcp(90, 80)])])
    with pytest.raises(RenderError, match="invalid port range"):
        render(node([WEB], (bad_range, ["web"])), {}, options=RenderOptions())
    twice = node([WEB], (WEB_POLICY, ["web"]), (WEB_POLICY, ["web"]))
    with pytest.raises(RenderError, match="appears twice"):
        render(twice, sets_of(FRONTEND), options=RenderOptions())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"mark_mask": 0x4000}, "kube-proxy", id="kube-proxy-masq"),
        pytest.param({"mark_mask": 0x18000}, "kube-proxy", id="kube-proxy-drop"),
        pytest.param({"mark_mask": 0x10000}, "at least 2 bits", id="one-bit"),
        pytest.param({"mark_mask": 0}, "non-zero", id="zero"),
        pytest.param({"mark_mask": 1 << 32}, "32-bit", id="too-wide"),
        pytest.param({"log_rate": "fast"}, "log_rate", id="rate"),
        pytest.param({"drop_action": "ACCEPT"}, "drop_action", id="accept"),
        pytest.param({"nflog_group": 70000}, "nflog_group", id="group"),
    ],
)
def test_invalid_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RenderOptionsError, match=message):
        RenderOptions(**kwargs)  # type: ignore[arg-type]


def test_mark_bits() -> None:
    opts = RenderOptions(mark_mask=0x00070000)
    assert (opts.ingress_bit, opts.egress_bit) == (0x10000, 0x20000)
    out = render(_case_ingress_peer_port().node, sets_of(FRONTEND), options=opts)
    assert "--set-xmark 0x10000/0x10000" in out.restore_text(4)
    assert "--set-xmark 0x0/0x70000" in out.restore_text(4)


def test_reject_uses_family_icmp_type() -> None:
    case = _case_dual_stack()
    out = render(case.node, case.peer_sets, options=RenderOptions(drop_action="REJECT"))
    assert "--reject-with icmp-port-unreachable" in out.restore_text(4)
    assert "--reject-with icmp6-port-unreachable" in out.restore_text(6)


def test_forward_jump_is_data() -> None:
    out = _render(_case_no_policies())
    assert rule_argv(out.forward_jump) == [
        "-m", "comment", "--comment", "stockade:enforce network policy", "-j", "STK-FORWARD",
    ]  # fmt: skip
    assert render_rule("FORWARD", out.forward_jump, insert_at=1) == (
        '-I FORWARD 1 -m comment --comment "stockade:enforce network policy" -j STK-FORWARD'
    )


# --- the model's own guards ------------------------------------------------------------


def test_quote_like_iptables_save() -> None:
    assert quote("plain-word_1") == "plain-word_1"
    assert quote("two words") == '"two words"'
    assert quote('say "hi" \\ it\'s') == '"say \\"hi\\" \\\\ it\\\'s"'
    with pytest.raises(IptablesModelError):
        quote("two\nlines")


def test_address_matches_like_iptables_save() -> None:
    assert canonical_cidr("10.0.2.77/24") == "10.0.2.0/24"
    assert canonical_cidr("::ffff:10.0.2.10/128") == "::ffff:10.0.2.10/128"
    assert canonical_cidr("FD00:0:0::1/64") == "fd00::/64"
    rule = Rule(
        (
            PortRange("TCP", ((80, 80),)),
            AddressMatch("10.0.2.0/24", "dst"),
            ProtoMatch("TCP"),
            AddressMatch("10.0.1.0/24", "src"),
        ),
        Drop(),
        "stockade:x",
    )
    # -s, -d and -p first (the entry's IP header part), as iptables-save prints them
    assert render_rule("STK-X", rule) == (
        "-A STK-X -s 10.0.1.0/24 -d 10.0.2.0/24 -p tcp -m tcp --dport 80 "
        '-m comment --comment "stockade:x" -j DROP'
    )
    with pytest.raises(IptablesModelError, match="not a canonical network"):
        AddressMatch("10.0.2.77/24", "dst")
    with pytest.raises(IptablesModelError, match="invalid network"):
        AddressMatch("10.0.2.0/33", "dst")
    with pytest.raises(IptablesModelError, match="one -s and one -d"):
        Rule((AddressMatch("10.0.0.0/8", "dst"), AddressMatch("10.0.0.0/9", "dst")), Drop(), "x")


def test_iptables_model_refuses_invalid_rules() -> None:
    with pytest.raises(IptablesModelError, match="without -p"):
        Rule((PortRange("TCP", ((80, 80),)),), Drop(), "stockade:x")
    with pytest.raises(IptablesModelError, match="without -p"):
        Rule((ProtoMatch("UDP"), PortRange("TCP", ((80, 80),))), Drop(), "stockade:x")
    with pytest.raises(IptablesModelError, match="multiport"):
        PortRange("TCP", tuple((p, p) for p in range(1, 17)))
    with pytest.raises(IptablesModelError, match="not stockade's"):
        Chain("KUBE-SERVICES", ())
    with pytest.raises(IptablesModelError, match="invalid chain name"):
        Chain("STK-" + "X" * 25, ())
    with pytest.raises(IptablesModelError, match="comment"):
        Rule((), Drop(), "x" * 256)


def test_ipset_model() -> None:
    with pytest.raises(IPSetModelError, match="prefix >= 1"):
        make_set("stk-cidr4-x", "hash:net", 4, [Member("0.0.0.0/0")])
    with pytest.raises(IPSetModelError, match="nomatch"):
        make_set("stk-peer4-x", "hash:ip", 4, [Member("10.0.0.1", nomatch=True)])
    with pytest.raises(IPSetModelError, match="canonical"):
        make_set("stk-peer6-x", "hash:ip", 6, [Member("fd00:0::1")])
    with pytest.raises(IPSetModelError, match="invalid set name"):
        make_set("kube-x", "hash:ip", 4, [])
    s = make_set(
        "stk-cidr4-x",
        "hash:net",
        4,
        [Member("10.0.0.0/8"), Member("10.1.0.0/16", nomatch=True), Member("10.0.0.0/8")],
    )
    assert s == IPSet(
        "stk-cidr4-x",
        "hash:net",
        "inet",
        (Member("10.0.0.0/8"), Member("10.1.0.0/16", nomatch=True)),
    )
    assert render_swap([s]).splitlines() == [
        "create stk-cidr4-x-tmp hash:net family inet maxelem 65536 -exist",
        "flush stk-cidr4-x-tmp",
        "add stk-cidr4-x-tmp 10.0.0.0/8",
        "add stk-cidr4-x-tmp 10.1.0.0/16 nomatch",
        "create stk-cidr4-x hash:net family inet maxelem 65536 -exist",
        "swap stk-cidr4-x-tmp stk-cidr4-x",
        "destroy stk-cidr4-x-tmp",
    ]


# --- verdicts, then text ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES), ids=sorted(CASES))
def test_verdicts(name: str) -> None:
    case = CASES[name]()
    out = _render(case)
    failures = []
    for family, packet, expected in case.checks:
        got = _dataplane(out, family).verdict(packet)
        if got != expected:
            failures.append(f"IPv{family} {packet}: expected {expected}, got {got}")
    assert not failures, "\n".join(failures) + "\n" + _rules_text(out)


@pytest.mark.parametrize("name", sorted(CASES), ids=sorted(CASES))
def test_golden(name: str) -> None:
    out = _render(CASES[name]())
    for suffix, text in ((".rules", _rules_text(out)), (".sets", _sets_text(out))):
        path = GOLDEN / f"{name}{suffix}"
        if UPDATE:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"{path} missing; run with STOCKADE_UPDATE_GOLDEN=1"
        assert text == path.read_text(), f"{path} differs; rendered:\n{text}"


# --- the dispatch tree ----------------------------------------------------------------


def _many_groups(groups: int, pods_per_group: int) -> NodeRuleSet:
    """``groups`` policies, each selecting its own ``pods_per_group`` pods: one group each."""
    pods, policies = [], []
    for g in range(groups):
        names = [f"g{g}-{k}" for k in range(pods_per_group)]
        n = g * pods_per_group
        pods += [
            lpod(name, f"10.{(n + k) // 250 + 1}.0.{(n + k) % 250 + 1}")
            for k, name in enumerate(names)
        ]
        policies.append((policy(f"ns/p{g}", ingress=[rule(ports=[tcp(80)])]), names))
    return node(pods, *policies)


def _dispatch_walk(plane: Dataplane, chain: str, ip: str) -> tuple[int, str]:
    """Set lookups a NEW packet to ``ip`` makes in the ingress dispatch, and where it lands."""
    lookups = 0
    while True:
        for r in plane.chains[chain].rules:
            (match,) = r.matches
            assert isinstance(match, SetMatch)
            lookups += 1
            members = {m.value for m in plane.sets[match.set_name].members}
            if (ip in members) != match.negate:
                if isinstance(r.action, Return):
                    return lookups, "RETURN"
                assert isinstance(r.action, Goto)
                chain = r.action.chain
                break
        else:
            return lookups, "fell off " + chain
        if not chain.startswith("STK-IT-"):
            return lookups, chain


def test_dispatch_is_a_tree_of_bounded_fanout() -> None:
    out = render(_many_groups(300, 1), {}, options=RenderOptions())
    fam = out.v4
    chains = {c.name: c for c in fam.chains}
    tree = [c for c in fam.chains if c.name == "STK-INGRESS" or c.name.startswith("STK-IT-")]
    assert len(tree) > 1
    width = max(DISPATCH_FANOUT, 2**DISPATCH_BITS)
    assert all(len(c.rules) <= width + (c.name == "STK-INGRESS") for c in tree)
    # every group is reached from exactly one tree rule
    targets = [r.action.chain for c in tree for r in c.rules if isinstance(r.action, Goto)]
    groups = sorted(n for n in chains if n.startswith("STK-IG-"))
    assert sorted(t for t in targets if t.startswith("STK-IG-")) == groups
    assert len(groups) == 300
    plane = _dataplane(out, 4)
    worst = 0
    for g in range(300):
        ip = f"10.{g // 250 + 1}.0.{g % 250 + 1}"
        lookups, landed = _dispatch_walk(plane, "STK-INGRESS", ip)
        group_set = next(
            s.name
            for s in fam.ipsets
            if s.name.startswith("stk-ig4-") and s.members == (Member(ip),)
        )
        assert landed == "STK-IG-" + group_set.rsplit("-", 1)[1]
        worst = max(worst, lookups)
    assert worst <= 1 + 4 * width  # not 300
    # a pod no policy isolates costs one lookup
    assert _dispatch_walk(plane, "STK-INGRESS", "10.9.9.9") == (1, "RETURN")
    assert plane.verdict(Packet("10.200.0.1", "10.9.9.9")) == "RETURN"
    assert plane.verdict(Packet("10.200.0.1", "10.1.0.7", dport=80)) == "RETURN"
    assert plane.verdict(Packet("10.200.0.1", "10.1.0.7", dport=81)) == "DROP"


def test_dispatch_tree_rules_depend_on_groups_not_pods() -> None:
    one = render(_many_groups(40, 1), {}, options=RenderOptions())
    three = render(_many_groups(40, 3), {}, options=RenderOptions())
    assert one.restore_text(4) == three.restore_text(4)
    assert [s.name for s in one.v4.ipsets] == [s.name for s in three.v4.ipsets]
    root = next(s for s in three.v4.ipsets if s.name.startswith("stk-it4-"))
    sizes = {s.name: len(s.members) for s in three.v4.ipsets}
    assert max(sizes[n] for n in sizes if n.startswith("stk-it4-")) == 120  # the root: all pods
    assert root.type == "hash:ip"


def test_a_new_group_changes_only_its_path_in_the_tree() -> None:
    before = render(_many_groups(60, 1), {}, options=RenderOptions())
    after = render(_many_groups(61, 1), {}, options=RenderOptions())

    def tree_sets(out: RenderedNode) -> dict[str, frozenset[str]]:
        return {
            s.name: frozenset(m.value for m in s.members)
            for s in out.v4.ipsets
            if s.name.startswith("stk-it4-")
        }

    old, new = tree_sets(before), tree_sets(after)
    changed = {n for n in new if old.get(n) != new[n]}
    assert 1 <= len(changed) <= 3  # the root and the nodes on the new group's path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=cluster_docs(max_pods=8, max_policies=6), binary=st.booleans(), inline=INLINE_CHOICES)
def test_rendered_rules_agree_with_the_engine(
    docs: list[dict[str, object]], binary: bool, inline: int
) -> None:
    """The simulator on the rendered rules gives the verdict engine's verdicts.

    ``binary``: a dispatch tree that splits every node of two or more groups in
    two, so that small random clusters get deep trees too.

    ``inline``: policies inlined up to that many rules (0: every policy jumped to).
    """
    parsed = parse_documents(docs)
    assert not parsed.errors
    compiled = compile_cluster(parsed.cluster)
    by_set = compiled.by_set()
    ips = sorted({ip for p in parsed.cluster.pods.values() for ip in p.ips} | set(EXTERNAL))
    with (
        patch.object(render_module, "DISPATCH_FANOUT", 1 if binary else DISPATCH_FANOUT),
        patch.object(render_module, "DISPATCH_BITS", 1 if binary else DISPATCH_BITS),
        patch.object(render_module, "INLINE_MAX_RULES", inline),
    ):
        for rules in compiled.node_rule_sets.values():
            peer_sets = {name: by_set[name] for name in rules.peer_sets}
            out = render(rules, peer_sets, options=RenderOptions(inline_policies=inline > 0))
            planes = {4: _dataplane(out, 4), 6: _dataplane(out, 6)}
            engine = NodeEvaluator(rules, SetIndex(s for g in peer_sets.values() for s in g))
            for src in ips:
                for dst in ips:
                    family = 6 if ":" in src else 4
                    if src == dst or (":" in dst) != (family == 6):
                        continue
                    for protocol in PROTOCOLS:
                        for port in PROBE_PORTS:
                            packet = Packet(src, dst, protocol, port)
                            got = planes[family].verdict(packet) == "RETURN"
                            want = engine.allows(src, dst, port, protocol)
                            assert got == want, (rules.node, packet, want)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), binary=st.booleans())
def test_deep_dispatch_trees_agree_with_the_engine(data: st.DataObject, binary: bool) -> None:
    """Many policy groups (random policy subsets per pod): deep trees, same verdicts."""
    count = data.draw(st.integers(1, 6), label="policies")
    pols = [
        policy(
            f"ns/q{i}",
            ingress=[rule(ports=[tcp(80 + i)])],
            egress=[rule(ports=[tcp(90 + i)])] if i % 2 else None,
        )
        for i in range(count)
    ]
    pods = [lpod(f"p{k}", f"10.1.0.{k + 1}") for k in range(data.draw(st.integers(1, 30)))]
    targets: list[list[str]] = [[] for _ in pols]
    for pod in pods:
        for i in data.draw(st.sets(st.integers(0, count - 1)), label=pod.name):
            targets[i].append(pod.name)
    rules = node(pods, *zip(pols, targets, strict=True))
    with (
        patch.object(render_module, "DISPATCH_FANOUT", 1 if binary else DISPATCH_FANOUT),
        patch.object(render_module, "DISPATCH_BITS", 1 if binary else DISPATCH_BITS),
    ):
        out = render(rules, {}, options=RenderOptions())
    plane = _dataplane(out, 4)
    engine = NodeEvaluator(rules, SetIndex([]))
    ips = [*(p.ips[0] for p in pods), "10.9.9.9"]
    for src in ips:
        for dst in ips:
            for port in range(79, 97):
                got = plane.verdict(Packet(src, dst, "TCP", port)) == "RETURN"
                assert got == engine.allows(src, dst, port, "TCP"), (src, dst, port)


# --- a pod reaching itself through its own Service (hairpin) ---------------------------

SELF_COMMENT = "stockade:a pod reaching itself (hairpin through a Service)"


def _hairpin_node(*, contested: tuple[str, ...] = ()) -> NodeRuleSet:
    """Two pods isolated both ways by a policy that allows nothing (default deny)."""
    deny = policy("shop/deny", ingress=[], egress=[])
    pods = [lpod("web", "10.0.1.10", "fd00::10"), lpod("cli", "10.0.1.11", "fd00::11")]
    return replace(node(pods, (deny, ["web", "cli"])), contested_ips=contested)


def _forward_chain(out: RenderedNode, family: IPFamily) -> Chain:
    return next(c for c in out.family(family).chains if c.name == "STK-FORWARD")


def test_a_pod_reaching_itself_passes_after_the_drops_and_before_the_dispatch() -> None:
    out = render(
        _hairpin_node(contested=("10.0.1.99",)),
        {},
        options=RenderOptions(isolate_new_pods=True),
        pending=("10.0.1.98",),
    )
    for family in (4, 6):
        rules = _forward_chain(out, family).rules
        own = [i for i, r in enumerate(rules) if r.comment == SELF_COMMENT]
        assert len(own) == 1
        hairpin = rules[own[0]]
        assert hairpin.matches == (SameAddress(family),)
        assert isinstance(hairpin.action, Return)
        # after the established return and the pending and contested drops...
        drops = {m.set_name for r in rules[: own[0]] for m in r.matches if isinstance(m, SetMatch)}
        assert drops == {pending_set_name(family), contested_set_name(family)}
        # ...and before any mark or policy dispatch
        assert [r.comment for r in rules[own[0] + 1 :]] == [
            "stockade:clear stockade mark bits",
            "stockade:egress policy",
            "stockade:ingress policy",
            "stockade:clear stockade mark bits",
        ]
    # one rule, spelled as iptables-save prints it back (checked against the kernel
    # by tests/integration/test_hairpin.py); no set: the BPF program compares addresses
    v4 = render_rule("STK-FORWARD", _forward_chain(out, 4).rules[own[0]])
    assert v4 == (
        '-A STK-FORWARD -m bpf --bytecode "6,32 0 0 12,7 0 0 0,32 0 0 16,29 0 1 0,6 0 0 1,'
        f'6 0 0 0" -m comment --comment "{SELF_COMMENT}" -j RETURN'
    )
    v6 = render_rule("STK-FORWARD", _forward_chain(out, 6).rules[own[0]])
    assert '--bytecode "18,32 0 0 8,7 0 0 0,32 0 0 24,29 0 13 0,' in v6
    assert v6.count("29 0 ") == 4  # all four words of the addresses are compared


def test_the_hairpin_rule_is_there_without_pods_or_policies_and_never_grows() -> None:
    empty = render(NodeRuleSet("node-a", (), (), ()), {}, options=RenderOptions())
    many = render(_many_groups(40, 3), {}, options=RenderOptions())
    for family in (4, 6):
        for out in (empty, many):
            rules = _forward_chain(out, family).rules
            assert [r.comment for r in rules].count(SELF_COMMENT) == 1
    assert not empty.v4.ipsets  # no set behind it either
    assert not empty.v6.ipsets


@pytest.mark.parametrize("family", [4, 6])
def test_hairpin_verdicts_in_the_simulator_and_the_engine(family: IPFamily) -> None:
    web, cli = ("10.0.1.10", "10.0.1.11") if family == 4 else ("fd00::10", "fd00::11")
    rules = _hairpin_node()
    plane = _dataplane(render(rules, {}, options=RenderOptions()), family)
    engine = NodeEvaluator(rules, SetIndex([]))
    for proto in ("TCP", "UDP"):
        # after kube-proxy's DNAT: pod -> itself, whichever port the Service maps
        assert plane.verdict(Packet(web, web, proto, 80)) == "RETURN"
        assert engine.allows(web, web, 80, proto)
        # another pod through the same Service is still judged by policy
        assert plane.verdict(Packet(cli, web, proto, 80)) == "DROP"
        assert not engine.allows(cli, web, 80, proto)
    # the hairpin rule does not leak into other traffic: only src == dst matches
    trace = plane.evaluate(Packet(cli, web))
    assert trace.verdict == "DROP"
    assert trace.chains[1] == "STK-EGRESS"  # it went on to the policy dispatch


def test_a_contested_or_pending_address_does_not_reach_itself() -> None:
    """A contested address keeps only loopback; a pending pod gets nothing yet."""
    rules = _hairpin_node(contested=("10.0.1.10",))
    rules = replace(rules, pods=(lpod("web", "fd00::10"), rules.pods[1]))
    out = render(rules, {}, options=RenderOptions(isolate_new_pods=True), pending=("10.0.1.11",))
    plane = _dataplane(out, 4)
    engine = NodeEvaluator(rules, SetIndex([]))
    assert plane.verdict(Packet("10.0.1.10", "10.0.1.10")) == "DROP"
    assert not engine.allows("10.0.1.10", "10.0.1.10", 80, "TCP")
    assert plane.verdict(Packet("10.0.1.11", "10.0.1.11")) == "DROP"  # pending: agent-side only
    # the same pod's uncontested IPv6 address still reaches itself
    assert _dataplane(out, 6).verdict(Packet("fd00::10", "fd00::10")) == "RETURN"
    assert engine.allows("fd00::10", "fd00::10", 80, "TCP")


def test_the_engine_agrees_with_itself_on_a_pod_and_its_own_address() -> None:
    """Dataplane.verdict (same pod) and NodeEvaluator.allows (hairpin) say the same."""
    docs = yaml.safe_load_all(
        textwrap.dedent(
            """
        apiVersion: v1
        kind: Pod
        metadata: {name: web, namespace: shop, labels: {app: web}}
        spec: {nodeName: n1, containers: [{name: c}]}
        status: {phase: Running, podIP: 10.0.1.10, podIPs: [{ip: 10.0.1.10}, {ip: fd00::10}]}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny, namespace: shop}
        spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
        """
        )
    )
    parsed = parse_documents([d for d in docs if d])
    assert not parsed.errors
    compiled = compile_cluster(parsed.cluster)
    engine = Engine(parsed.cluster, compiled)
    pod = parsed.cluster.pods["shop/web"]
    node_engine = NodeEvaluator(compiled.node_rule_sets["n1"], SetIndex([]))
    for family, ip in ((4, "10.0.1.10"), (6, "fd00::10")):
        assert engine.verdict(pod, pod, 80, "TCP", family).allowed
        assert engine.verdict(ip, ip, 80, "TCP", family).allowed
        assert node_engine.allows(ip, ip, 80, "TCP")
