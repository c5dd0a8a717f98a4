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

from stockade.agent.iptables import (
    Action,
    Chain,
    Drop,
    Goto,
    Jump,
    LimitMatch,
    Log,
    MarkMatch,
    Match,
    Reject,
    Return,
    Rule,
    SetMark,
)
from stockade.agent.shadowing import unshadowed
from tests.unit.chain_strategies import (
    OTHER,
    P443,
    PEER,
    TCP,
    assert_same_for_every_packet,
    packets,
    templated_chains,
)
from tests.unit.iptables_sim import Packet

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


@settings(max_examples=400, deadline=None)
@given(chain=templated_chains(), tested=st.lists(packets, min_size=1, max_size=8))
def test_shadowed_rules_never_change_what_a_packet_meets(
    chain: tuple[Rule, ...], tested: list[Packet]
) -> None:
    lean = Chain("STK-T", unshadowed(chain))
    assert_same_for_every_packet([Chain("STK-T", chain)], [lean], tested)
