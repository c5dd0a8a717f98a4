"""One set tested by many rules of a chain: looked up once, verdicts unchanged.

Policies written from one template repeat their peers and named ports: ten Admin
policies that each pass the ``http`` named port test the same ``pport`` set, and
every rule by sameness of a group names the same group set. Inlined into a group
chain, a new connection's first packet looks the set up once per rule, with the
same answer each time. A compiler would compute such a common subexpression once;
so does stockade, for the tier chains (docs/dataplane.md, "Tiers"):

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
cannot change between the lookup and the rules (a chain never changes a set).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from stockade.agent.iptables import Chain, Goto, Rule, SetDirs, SetMatch
from stockade.agent.shadowing import unshadowed

# A set is looked up once instead of once per rule only when at least this many
# rules test it: below that the copied rules cost more than the lookups saved.
SET_SPLIT_MIN_RULES = 4
SUFFIX = "-M"


def _key(match: SetMatch) -> tuple[str, SetDirs]:
    return match.set_name, match.dirs


def most_tested_set(
    rules: Sequence[Rule], min_rules: int = SET_SPLIT_MIN_RULES
) -> tuple[str, SetDirs] | None:
    """The (set, directions) the most ``rules`` test, if at least ``min_rules`` do;
    the first such in rule order on a tie."""
    counts: Counter[tuple[str, SetDirs]] = Counter()
    for rule in rules:
        counts.update({_key(m) for m in rule.matches if isinstance(m, SetMatch)})
    best = max(counts.items(), key=lambda kv: kv[1], default=None)
    if best is None or best[1] < min_rules:
        return None
    return best[0]


def _given(rule: Rule, key: tuple[str, SetDirs], member: bool) -> Rule | None:
    """``rule`` for a packet whose membership of ``key`` is ``member``: its tests of
    the set left out, or None when one of them must fail."""
    kept = []
    for m in rule.matches:
        if isinstance(m, SetMatch) and _key(m) == key:
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
    first = next(
        i
        for i, rule in enumerate(chain.rules)
        if any(isinstance(m, SetMatch) and _key(m) == key for m in rule.matches)
    )
    before, after = chain.rules[:first], chain.rules[first:]
    inside = unshadowed([r for rule in after if (r := _given(rule, key, True))])
    outside = unshadowed([r for rule in after if (r := _given(rule, key, False))])
    members = Chain(chain.name + SUFFIX, inside)
    head = Rule((SetMatch(key[0], key[1]),), Goto(members.name), head_comment)
    return [Chain(chain.name, (*before, head, *outside)), members]
