"""Rules no packet can reach: left out of a chain, verdicts unchanged.

ClusterNetworkPolicies are often written from one template: every team's Admin
policy denies the control plane's ports, every Baseline policy denies the same
documentation network. Inlined into a group chain, the copies follow one another,
and a new connection's first packet tests each of them although only the first
can ever match: if a packet matched a later copy it matched the first, which
ended the chain. A firewall compiler calls such a rule *shadowed* and leaves it
out; so does stockade, for the group chains of the tiers and of NetworkPolicies
(docs/dataplane.md, "Tiers").

Rule R2 is shadowed by an earlier rule R1 of the same chain when

- R1 ends the chain's scan for every packet it matches: DROP, REJECT, RETURN or a
  goto (a goto'd chain ends where this one would; a jump comes back);
- every match of R1 is also a match of R2 (so whatever matches R2 matches R1);
- R1 has no rate limit (a limit may fail to match a packet R2 would match);
- R1 tests no mark, or nothing between them can change the mark (a jump into
  another chain, a mark set or cleared): the other matches depend only on the
  packet and its connection, which a chain never changes.

R2's own action does not matter: it is never reached by a packet it matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

from stockade.agent.iptables import (
    TERMINAL_ACTIONS,
    ClearMark,
    Jump,
    LimitMatch,
    MarkMatch,
    Match,
    Rule,
    SetMark,
)

_CHANGES_MARK = (Jump, SetMark, ClearMark)
# A rule with more matches than this is only checked for an exact shadow (its
# subsets are not enumerated); stockade's tier rules have at most five.
_MAX_SUBSET_MATCHES = 6


def unshadowed(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    """``rules`` without those an earlier rule always ends the scan before.

    Linear in the rules (each rule's subsets of matches, at most 2^6, are looked
    up in a set of the earlier ending rules' match sets).
    """
    shadows: set[frozenset[Match]] = set()
    marked: set[frozenset[Match]] = set()  # shadows that test a mark
    kept: list[Rule] = []
    for rule in rules:
        matches = frozenset(rule.matches)
        if _shadowed(matches, shadows):
            continue
        kept.append(rule)
        if isinstance(rule.action, _CHANGES_MARK) and marked:
            shadows.difference_update(marked)
            marked.clear()
        if isinstance(rule.action, TERMINAL_ACTIONS) and not any(
            isinstance(m, LimitMatch) for m in matches
        ):
            shadows.add(matches)
            if any(isinstance(m, MarkMatch) for m in matches):
                marked.add(matches)
    return tuple(kept)


def _shadowed(matches: frozenset[Match], shadows: set[frozenset[Match]]) -> bool:
    if not shadows:
        return False
    if matches in shadows:
        return True
    if len(matches) > _MAX_SUBSET_MATCHES:
        return False
    items = tuple(matches)
    return any(
        frozenset(subset) in shadows
        for size in range(len(items))
        for subset in combinations(items, size)
    )
