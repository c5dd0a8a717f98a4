"""The split of a chain on its most tested set: one lookup, verdicts unchanged.

Tables of the cases (stockade.agent.setsplit), then a property: random chains of
every kind of rule the tier chains use, run by the iptables simulator whole and
split, give the same verdict, mark and log lines for random packets.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.agent.iptables import (
    Chain,
    Drop,
    Goto,
    Jump,
    LimitMatch,
    Log,
    Match,
    PortRange,
    ProtoMatch,
    Return,
    Rule,
    SetMatch,
)
from stockade.agent.setsplit import SET_SPLIT_MIN_RULES, most_tested_set, split_by_set
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

NOT_PEER = SetMatch("stk-peer4-a", "dst", negate=True)


def r(*matches: Match, action: Drop | Goto | Return | Jump | None = None, note: str = "t") -> Rule:
    return Rule(tuple(matches), action or Drop(), note)


def test_a_set_tested_by_fewer_rules_leaves_the_chain_whole() -> None:
    chain = Chain("STK-T", tuple(r(TCP, PEER) for _ in range(SET_SPLIT_MIN_RULES - 1)))
    assert most_tested_set(chain.rules) is None
    assert split_by_set(chain, "s") == [chain]


def test_a_set_looked_up_after_a_port_test_does_not_count() -> None:
    # Each rule looks the set up only for packets to its port: one lookup up front
    # would tax every other packet.
    chain = Chain(
        "STK-T", tuple(r(TCP, PortRange("TCP", ((80 + i, 80 + i),)), PEER) for i in range(6))
    )
    assert most_tested_set(chain.rules) is None
    assert split_by_set(chain, "s") == [chain]


def test_the_set_tested_most_is_looked_up_once() -> None:
    pass_ = Goto("STK-PASS")
    rules_ = (
        r(TCP, P443, OTHER, note="before"),  # before the first test: stays in front
        *(r(TCP, PEER, action=pass_, note=f"p{i}") for i in range(4)),
        r(TCP, OTHER, note="other"),
        r(NOT_PEER, action=Return(), note="not-peer"),
        r(PEER, OTHER, action=Jump("STK-CE-x"), note="both"),
    )
    head, members = split_by_set(Chain("STK-T", rules_), "members")
    lookup = Rule((PEER,), Goto("STK-T-M"), "members")
    # not in the set: the rules testing it are gone, "! set" needs no lookup
    assert head == Chain(
        "STK-T",
        (rules_[0], lookup, r(TCP, OTHER, note="other"), r(action=Return(), note="not-peer")),
    )
    # in the set: every rule but "! set", with its test of the set left out (then
    # p0 ends every TCP packet's scan: its copies and "other" are shadowed)
    assert members == Chain(
        "STK-T-M",
        (
            r(TCP, action=pass_, note="p0"),
            r(OTHER, action=Jump("STK-CE-x"), note="both"),
        ),
    )


def test_a_rate_limited_rule_both_halves_would_hold_leaves_the_chain_whole() -> None:
    log = Rule((LimitMatch("10/second"),), Log("denied: "), "log")
    tested = tuple(r(TCP, PEER, note=f"p{i}") for i in range(4))
    whole = Chain("STK-T", (*tested, log, r()))
    assert split_by_set(whole, "s") == [whole]
    # Before the first test of the set it is not copied; with the set, in one half.
    ahead = Chain("STK-T", (log, *tested, r()))
    assert len(split_by_set(ahead, "s")) == 2
    limited = Rule((PEER, LimitMatch("10/second")), Log("peer: "), "log")
    assert len(split_by_set(Chain("STK-T", (*tested, limited, r())), "s")) == 2


def test_sets_are_told_apart_by_their_directions() -> None:
    src = SetMatch("stk-peer4-a", "src")
    chain = tuple(r(ProtoMatch("UDP"), m) for m in (PEER, src, PEER, src, PEER, src, PEER))
    assert most_tested_set(chain) == ("stk-peer4-a", "dst")


# ------------------------------------------------------------------ property


@settings(max_examples=400, deadline=None)
@given(chain=templated_chains(), tested=st.lists(packets, min_size=1, max_size=8))
def test_the_split_never_changes_what_a_packet_meets(
    chain: tuple[Rule, ...], tested: list[Packet]
) -> None:
    whole = Chain("STK-T", chain)
    assert_same_for_every_packet([whole], split_by_set(whole, "s", min_rules=1), tested)
