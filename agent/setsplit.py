"""One set tested by many rules of a chain: looked up once, verdicts unchanged.

Policies written from one template repeat their peers and named ports: ten Admin
policies that each pass the ``http`` named port test the same ``pport`` set, and
every rule by sameness of a group names the same group set. Inlined into a group
chain, a new connection's first packet looks the set up once per rule, with the
same answer each time. A compiler would compute such a common subexpression once;
so does stockade, for the group chains of every tier and of NetworkPolicies
(docs/dataplane.md, "Tiers"):

    STK-AEG-<h>-T   <the rules before the first that tests S>
                    -m set --match-set S dst,dst -g STK-AEG-<h>-T-M
                    <the rules after, but those that test S>
    STK-AEG-<h>-T-M <the rules after, with their tests of S left out>

A packet in S goes to the second chain, where the rules' tests of S are known to
hold (and a rule testing ``! S`` can never match, so it is left out); a packet
not in S stays in the first, where a rule testing S could never match (and a
rule testing ``! S`` has that test left out). Both chains keep the original order,
and a goto'd chain ends where the first would (back in its caller), so every
packet meets the same rules in the same order with the same outcome. The set
cannot change between the lookup and the rules (a chain never changes a set). A
chain is left whole when a rate-limited rule (a denial's log line) would be in
both halves: each copy would count its own rate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TypeGuard

from stockade.agent.iptables import (
    Chain,
    Goto,
    LimitMatch,
    Match,
    PortRange,
    Rule,
    SetDirs,
    SetMatch,
)
from stockade.agent.shadowing import unshadowed

# A set is looked up once instead of once per rule only when at least this many
# rules look it up before any port test: below that the copied rules cost more
# than the lookups saved.
SET_SPLIT_MIN_RULES = 4
SUFFIX = "-M"


def _key(match: SetMatch) -> tuple[str, SetDirs]:
    return match.set_name, match.dirs


def _eager_sets(rule: Rule) -> list[tuple[str, SetDirs]]:
    """The sets ``rule`` looks up before it tests a port: whatever the port, a
    packet of its protocol pays for them (a set after a port test is looked up only
    for the packets to that port, which a lookup up front would tax)."""
    found: dict[tuple[str, SetDirs], None] = {}  # in match order: ties go to the first
    for m in rule.matches:
        if isinstance(m, PortRange):
            break
        if isinstance(m, SetMatch):
            found[_key(m)] = None
    return list(found)


def most_tested_set(
    rules: Sequence[Rule], min_rules: int = SET_SPLIT_MIN_RULES
) -> tuple[str, SetDirs] | None:
    """The (set, directions) the most ``rules`` look up before any port test, if at
    least ``min_rules`` do; the first such in rule order on a tie."""
    counts: Counter[tuple[str, SetDirs]] = Counter()
    for rule in rules:
        counts.update(_eager_sets(rule))
    best = max(counts.items(), key=lambda kv: kv[1], default=None)
    if best is None or best[1] < min_rules:
        return None
    return best[0]


def _is_test_of(match: Match, key: tuple[str, SetDirs]) -> TypeGuard[SetMatch]:
    return isinstance(match, SetMatch) and _key(match) == key


def _tests(rule: Rule, key: tuple[str, SetDirs]) -> bool:
    return any(_is_test_of(m, key) for m in rule.matches)


def _given(rule: Rule, key: tuple[str, SetDirs], member: bool) -> Rule | None:
    """``rule`` for a packet whose membership of ``key`` is ``member``: its tests of
    the set left out, or None when one of them must fail."""
    kept = []
    for m in rule.matches:
        if _is_test_of(m, key):
            if m.negate == member:
                return None
            continue
        kept.append(m)
    if len(kept) == len(rule.matches):
        return rule
    return Rule(tuple(kept), rule.action, rule.comment)


def split_by_set(
    chain: Chain, head_comment: str, min_rules: int = SET_SPLIT_MIN_RULES
) -> list[Chain]:
    """``chain`` as one lookup of its most tested set and two chains (see the module
    docstring), or ``[chain]`` unchanged when no set is tested often enough. The
    chain of members is ``chain.name`` plus :data:`SUFFIX`."""
    key = most_tested_set(chain.rules, min_rules)
    if key is None:
        return [chain]
    # The rules before the first test of the set stay in front of the lookup: a
    # packet meets them first whatever its membership, and they are not copied.
    first = next(i for i, rule in enumerate(chain.rules) if _tests(rule, key))
    before, after = chain.rules[:first], chain.rules[first:]
    if any(
        isinstance(m, LimitMatch) for rule in after if not _tests(rule, key) for m in rule.matches
    ):
        # A rate-limited rule (a denial's log line) would be in both chains, each
        # copy with a bucket of its own: twice the rate. Left whole.
        return [chain]
    inside = unshadowed([r for rule in after if (r := _given(rule, key, True))])
    outside = unshadowed([r for rule in after if (r := _given(rule, key, False))])
    members = Chain(chain.name + SUFFIX, inside)
    head = Rule((SetMatch(key[0], key[1]),), Goto(members.name), head_comment)
    return [Chain(chain.name, (*before, head, *outside)), members]
