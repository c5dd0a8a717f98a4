"""Random chains of every kind of rule the tier chains use, for properties that
transform a chain (shadowed rules, the split on a set) and check, with the
iptables simulator, that no packet meets anything different."""

from __future__ import annotations

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
from tests.unit.iptables_sim import Packet

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
