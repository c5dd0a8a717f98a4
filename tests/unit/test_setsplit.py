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
    Match,
    ProtoMatch,
    Return,
    Rule,
    SetMatch,
)
from stockade.agent.setsplit import SET_SPLIT_MIN_RULES, most_tested_set, split_by_set
from tests.unit.chain_strategies import END, OTHER, P443, PEER, SETS, SUB, TCP, packets, rules
from tests.unit.iptables_sim import Dataplane, Packet

NOT_PEER = SetMatch("stk-peer4-a", "dst", negate=True)


def r(*matches: Match, action: Drop | Goto | Return | Jump | None = None, note: str = "t") -> Rule:
    return Rule(tuple(matches), action or Drop(), note)


def test_a_set_tested_by_fewer_rules_leaves_the_chain_whole() -> None:
    chain = Chain("STK-T", tuple(r(TCP, P443, PEER) for _ in range(SET_SPLIT_MIN_RULES - 1)))
    assert most_tested_set(chain.rules) is None
    assert split_by_set(chain, "s") == [chain]


def test_the_set_tested_most_is_looked_up_once() -> None:
    pass_ = Goto("STK-PASS")
    rules_ = (
        r(TCP, P443, OTHER, note="before"),  # before the first test: stays in front
        *(r(TCP, P443, PEER, action=pass_, note=f"p{i}") for i in range(4)),
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
    # in the set: every rule but "! set", with its test of the set left out
    assert members == Chain(
        "STK-T-M",
        (
            r(TCP, P443, action=pass_, note="p0"),  # its copies p1..p3 are shadowed
            r(TCP, OTHER, note="other"),
            r(OTHER, action=Jump("STK-CE-x"), note="both"),
        ),
    )


def test_sets_are_told_apart_by_their_directions() -> None:
    src = SetMatch("stk-peer4-a", "src")
    chain = tuple(r(ProtoMatch("UDP"), m) for m in (PEER, src, PEER, src, PEER, src, PEER))
    assert most_tested_set(chain) == ("stk-peer4-a", "dst")


# ------------------------------------------------------------------ property


@settings(max_examples=400, deadline=None)
@given(
    base=st.lists(rules(), min_size=1, max_size=6),
    picks=st.lists(st.integers(0, 5), min_size=1, max_size=24),
    tested=st.lists(packets, min_size=1, max_size=8),
)
def test_the_split_never_changes_what_a_packet_meets(
    base: list[Rule], picks: list[int], tested: list[Packet]
) -> None:
    chain = Chain("STK-T", tuple(base[i % len(base)] for i in picks))
    whole = Dataplane([chain, SUB, END], SETS)
    split = Dataplane([*split_by_set(chain, "s", min_rules=1), SUB, END], SETS)
    for packet in tested:
        a, b = whole.evaluate(packet, "STK-T"), split.evaluate(packet, "STK-T")
        assert (a.verdict, a.mark, a.logs) == (b.verdict, b.mark, b.logs), packet
