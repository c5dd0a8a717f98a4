"""Shadowed rules: left out of a chain without changing what any packet meets.

Tables of the cases the rule names (stockade.agent.shadowing), then a property:
random chains of every kind of rule the tier chains use, run by the iptables
simulator with and without the shadowed rules, give the same verdict, mark and
log lines for random packets.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.agent.ipsets import Member, make_set
from stockade.agent.iptables import (
    Action,
    AddressMatch,
    Chain,
    ClearMark,
    Drop,
    Goto,
    Jump,
    LimitMatch,
    Log,
    MarkMatch,
    Match,
    PortRange,
    ProtoMatch,
    Reject,
    Return,
    Rule,
    SetMark,
    SetMatch,
)
from stockade.agent.shadowing import unshadowed
from tests.unit.iptables_sim import Dataplane, Packet

PEER = SetMatch("stk-peer4-a", "dst")
OTHER = SetMatch("stk-peer4-b", "dst")
TCP = ProtoMatch("TCP")
P443 = PortRange("TCP", ((443, 443),))
BIT = MarkMatch(0x20000, 0x20000)


def r(*matches: Match, action: Action | None = None) -> Rule:
    return Rule(tuple(matches), action or Drop(), "t")


@pytest.mark.parametrize(
    ("rules", "kept"),
    [
        # the same deny twice: the second can never match
        ([r(PEER), r(PEER)], [0]),
        # a narrower copy (ports added) of an earlier deny
        ([r(PEER), r(TCP, P443, PEER)], [0]),
        # the wider rule second is still reached (by packets to other ports)
        ([r(TCP, P443, PEER), r(PEER)], [0, 1]),
        # a goto ends the scan too, whatever the later rule's action
        ([r(PEER, action=Goto("STK-PASS")), r(PEER, action=Goto("STK-ALLOW-EGRESS"))], [0]),
        ([r(PEER, action=Return()), r(TCP, PEER, action=Reject("icmp-port-unreachable"))], [0]),
        # a rule with no match ends the chain: nothing after it is reachable
        ([r(), r(PEER), r(OTHER)], [0]),
        # a jump comes back: it shadows nothing
        ([r(PEER, action=Jump("STK-CE-x")), r(PEER)], [0, 1]),
        # a log goes on: it shadows nothing, and a later log of a drop's copy goes
        ([r(PEER, action=Log("x: ")), r(PEER)], [0, 1]),
        ([r(PEER), r(PEER, LimitMatch("1/s"), action=Log("y: ")), r(PEER)], [0]),
        # a rate-limited rule may not match: it shadows nothing
        ([r(PEER, LimitMatch("1/s")), r(PEER)], [0, 1]),
        # a mark test shadows its copy only while nothing can change the mark
        ([r(BIT, action=Return()), r(BIT, action=Return())], [0]),
        (
            [
                r(BIT, action=Return()),
                r(action=Jump("STK-CE-x")),
                r(BIT, action=Return()),
            ],
            [0, 1, 2],
        ),
        ([r(BIT, action=Return()), r(action=SetMark(0x20000, 0x20000)), r(BIT)], [0, 1, 2]),
        # a rule without a mark test shadows across a jump
        ([r(PEER), r(action=Jump("STK-CE-x")), r(PEER)], [0, 1]),
        # different peers: both stay
        ([r(PEER), r(OTHER)], [0, 1]),
    ],
)
def test_which_rules_are_shadowed(rules: list[Rule], kept: list[int]) -> None:
    assert unshadowed(rules) == tuple(rules[i] for i in kept)


def test_a_long_chain_of_copies_keeps_one_of_each() -> None:
    template = [r(TCP, P443, PEER), r(OTHER, action=Goto("STK-PASS")), r(PEER)]
    assert unshadowed(template * 50) == tuple(template)


# ------------------------------------------------------------------ property

SETS = [
    make_set("stk-peer4-a", "hash:ip", 4, [Member("10.0.0.1"), Member("10.0.0.2")]),
    make_set("stk-peer4-b", "hash:ip", 4, [Member("10.0.0.2"), Member("10.0.0.3")]),
]
ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
BITS = (0x10000, 0x20000, 0x40000)
SUB = Chain(
    "STK-SUB",
    (
        Rule((SetMatch("stk-peer4-b", "dst"),), SetMark(0x20000, 0x20000), "t"),
        Rule((ProtoMatch("UDP"),), ClearMark(0x40000), "t"),
    ),
)
END = Chain("STK-END", (Rule((), SetMark(0x40000, 0x40000), "t"),))

MATCHES: list[Match] = [
    PEER,
    OTHER,
    SetMatch("stk-peer4-a", "dst", negate=True),
    AddressMatch("10.0.0.2/31", "dst"),
    LimitMatch("1/s"),
    *(MarkMatch(b, b) for b in BITS),
    *(MarkMatch(0, b) for b in BITS),
    MarkMatch(0, 0x60000, negate=True),
]
matches = st.sampled_from(MATCHES)
ACTIONS: list[Action] = [
    Drop(),
    Reject("icmp-port-unreachable"),
    Return(),
    Goto("STK-END"),
    Jump("STK-SUB"),
    Jump("STK-END"),
    Log("l: "),
    *(SetMark(b, b) for b in BITS),
    *(ClearMark(b) for b in BITS),
]
actions = st.sampled_from(ACTIONS)


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    # one protocol at most, before its ports, as iptables takes them
    head = draw(
        st.sampled_from(
            [(), (TCP,), (ProtoMatch("UDP"),), (TCP, P443), (TCP, PortRange("TCP", ((80, 90),)))]
        )
    )
    rest = draw(st.lists(matches, max_size=3, unique=True))
    return Rule((*head, *rest), draw(actions), "t")


packets = st.builds(
    Packet,
    src=st.just("10.0.0.9"),
    dst=st.sampled_from(ADDRESSES),
    protocol=st.sampled_from(["TCP", "UDP"]),
    dport=st.sampled_from([22, 85, 443]),
    mark=st.sampled_from([0, 0x20000, 0x60000]),
)


@settings(max_examples=400, deadline=None)
@given(
    # a few rules repeated, as templated policies repeat them
    base=st.lists(rules(), min_size=1, max_size=6),
    picks=st.lists(st.integers(0, 5), min_size=1, max_size=24),
    tested=st.lists(packets, min_size=1, max_size=8),
)
def test_shadowed_rules_never_change_what_a_packet_meets(
    base: list[Rule], picks: list[int], tested: list[Packet]
) -> None:
    chain = [base[i % len(base)] for i in picks]
    whole = Dataplane([Chain("STK-T", tuple(chain)), SUB, END], SETS)
    lean = Dataplane([Chain("STK-T", unshadowed(chain)), SUB, END], SETS)
    for packet in tested:
        a, b = whole.evaluate(packet, "STK-T"), lean.evaluate(packet, "STK-T")
        assert (a.verdict, a.mark, a.logs) == (b.verdict, b.mark, b.logs), packet
