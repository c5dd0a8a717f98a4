"""Rules that can never match: a static check of a NetworkPolicy's spec.

Purely computational and cheap (linear in the size of the policy). A rule can never
allow anything when every peer in its ``from``/``to`` is impossible, whatever the
cluster holds now or later:

- a ``podSelector`` or ``namespaceSelector`` whose requirements contradict each
  other on one key (requirements are ANDed; ``matchLabels`` ``k: a`` is ``k In [a]``):
  ``In``/``Exists`` with ``DoesNotExist``, ``In`` sets with no common value, or every
  common value excluded by ``NotIn``;
- a ``namespaceSelector`` with ``kubernetes.io/metadata.name DoesNotExist`` (the
  API server sets that label on every namespace, immutably), or requiring that label
  to be two different values;
- an ``ipBlock`` whose ``except`` entries together cover its whole ``cidr``.

A rule with no ``from``/``to`` matches every peer, so it is never empty on peers.
Ports cannot make a valid rule empty: ``endPort`` below ``port`` is rejected when
the policy is parsed. A selector that merely selects no pod *now* is not reported:
that changes as pods come and go.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stockade.model import NAMESPACE_NAME_LABEL, IPBlock, NetworkPolicy, Peer, Rule
from stockade.selectors import LabelSelector, Requirement

# Every namespace carries this label, so a namespace selector can count on it.
_NAMESPACE_LABELS = frozenset({NAMESPACE_NAME_LABEL})


@dataclass(frozen=True, slots=True)
class EmptyRule:
    """A rule that allows nothing: its direction, index and why each peer is impossible.

    ``index`` is the rule's index in ``spec.ingress``/``spec.egress``; ``peers`` has
    one reason per item of its ``from``/``to``, in order.
    """

    direction: str
    index: int
    peers: tuple[str, ...]

    @property
    def message(self) -> str:
        """One line: ``ingress rule 1: every peer is impossible: peer 0 ...; ...``."""
        return (
            f"{self.direction} rule {self.index}: every peer is impossible: "
            f"{'; '.join(self.peers)}; this rule allows nothing"
        )


def _values(values: Iterable[str]) -> str:
    return "[" + ", ".join(v if v else '""' for v in values) + "]"


def _show(req: Requirement) -> str:
    if req.operator in ("In", "NotIn"):
        return f"{req.key} {req.operator} {_values(req.values)}"
    return f"{req.key} {req.operator}"


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def _key_conflict(key: str, reqs: list[Requirement], always_present: bool) -> str | None:
    """Why no value (or absence) of label ``key`` satisfies all of ``reqs``; None if one does."""
    ins = [r for r in reqs if r.operator == "In"]
    not_ins = [r for r in reqs if r.operator == "NotIn"]
    exists = [r for r in reqs if r.operator == "Exists"]
    absent = [r for r in reqs if r.operator == "DoesNotExist"]
    if absent:
        if always_present:
            return f"{_show(absent[0])}, but every namespace has that label"
        if exists:
            return _and([_show(exists[0]), _show(absent[0])])
        if ins:
            return _and([_show(ins[0]), _show(absent[0])])
        return None  # absent satisfies NotIn too
    if not ins:
        # Absent (when allowed) satisfies NotIn; present, a value outside the finite
        # NotIn lists does.
        return None
    common = set(ins[0].values)
    for r in ins[1:]:
        common &= set(r.values)
    if not common:
        for i, a in enumerate(ins):
            for b in ins[i + 1 :]:
                if not set(a.values) & set(b.values):
                    return _and([_show(a), _show(b)])
        return _and([_show(r) for r in ins])
    excluded = [r for r in not_ins if common & set(r.values)]
    left = common.difference(*(r.values for r in excluded))
    if left:
        return None
    return _and([_show(r) for r in ins + excluded])


def selector_conflict(
    selector: LabelSelector, always_present: frozenset[str] = frozenset()
) -> str | None:
    """Why no label map can satisfy ``selector``, or None when some can.

    ``always_present``: label keys every candidate object carries (for namespaces,
    ``kubernetes.io/metadata.name``). The first contradictory key is named.
    """
    by_key: dict[str, list[Requirement]] = {}
    for req in selector.requirements:
        by_key.setdefault(req.key, []).append(req)
    for key in sorted(by_key):
        why = _key_conflict(key, by_key[key], key in always_present)
        if why is not None:
            return why
    return None


def ip_block_conflict(block: IPBlock) -> str | None:
    """Why ``block`` contains no address (its excepts cover its cidr), or None."""
    # Parsing guarantees every except is of the cidr's family and inside it, so the
    # union covers the cidr exactly when it has as many addresses.
    covered = 0
    end = -1
    for lo, hi in sorted((int(e.network_address), int(e.broadcast_address)) for e in block.excepts):
        if hi > end:
            covered += hi - max(lo, end + 1) + 1
            end = hi
    if covered < block.cidr.num_addresses:
        return None
    return f"ipBlock {block.cidr} is covered entirely by its except entries"


def peer_conflict(peer: Peer) -> str | None:
    """Why ``peer`` can never match anything, or None when it can."""
    if peer.ip_block is not None:
        return ip_block_conflict(peer.ip_block)
    reasons: list[str] = []
    if peer.pod_selector is not None:
        why = selector_conflict(peer.pod_selector)
        if why is not None:
            reasons.append(f"podSelector requires {why}")
    if peer.namespace_selector is not None:
        why = selector_conflict(peer.namespace_selector, _NAMESPACE_LABELS)
        if why is not None:
            reasons.append(f"namespaceSelector requires {why}")
    return ", and its ".join(reasons) or None


def rule_conflict(direction: str, index: int, rule: Rule) -> EmptyRule | None:
    """The finding for ``rule`` when every one of its peers is impossible, else None."""
    if not rule.peers:
        return None  # no from/to: every peer
    reasons: list[str] = []
    for i, peer in enumerate(rule.peers):
        why = peer_conflict(peer)
        if why is None:
            return None
        reasons.append(f"peer {i} {why}")
    return EmptyRule(direction, index, tuple(reasons))


def empty_rules(policy: NetworkPolicy) -> tuple[EmptyRule, ...]:
    """Every enforced rule of ``policy`` that can never allow anything, ingress first.

    Rules of a direction the policy does not isolate are ignored (as Kubernetes
    ignores them), so they are not reported.
    """
    out: list[EmptyRule] = []
    for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress)):
        for index, rule in enumerate(rules or ()):
            found = rule_conflict(direction, index, rule)
            if found is not None:
                out.append(found)
    return tuple(out)


def policy_warnings(policies: Iterable[NetworkPolicy]) -> list[str]:
    """One line per rule that can never match, ``NetworkPolicy ns/name: ...``, sorted."""
    return [
        f"NetworkPolicy {policy.key}: {found.message}"
        for policy in sorted(policies, key=lambda p: p.key)
        for found in empty_rules(policy)
    ]
