"""Random chains of every kind of rule the tier chains use, for properties that
transform a chain (shadowed rules, the split on a set) and check, with the
iptables simulator, that no packet meets anything different."""

from __future__ import annotations

from collections.abc import Sequence

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
from tests.unit.iptables_sim import Dataplane, Packet

PEER = SetMatch("stk-peer4-a", "dst")
OTHER = SetMatch("stk-peer4-b", "dst")
TCP = ProtoMatch("TCP")
P443 = PortRange("TCP", ((443, 443),))

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


@st.composite
def templated_chains(draw: st.DrawFn) -> tuple[Rule, ...]:
    """A few rules repeated, as templated policies repeat them."""
    base = draw(st.lists(rules(), min_size=1, max_size=6))
    picks = draw(st.lists(st.integers(0, 5), min_size=1, max_size=24))
    return tuple(base[i % len(base)] for i in picks)


def assert_same_for_every_packet(
    whole: Sequence[Chain], changed: Sequence[Chain], tested: Sequence[Packet]
) -> None:
    """Each packet, run from ``STK-T`` through both sets of chains (with ``SUB`` and
    ``END``), gets the same verdict, mark and log lines."""
    before = Dataplane([*whole, SUB, END], SETS)
    after = Dataplane([*changed, SUB, END], SETS)
    for packet in tested:
        a, b = before.evaluate(packet, "STK-T"), after.evaluate(packet, "STK-T")
        assert (a.verdict, a.mark, a.logs) == (b.verdict, b.mark, b.logs), packet
