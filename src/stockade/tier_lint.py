"""What to warn about in ClusterNetworkPolicies: one wording for the CLI and the controller.

Purely computational. Two findings, both choices the API leaves to implementations
(docs/tiers.md, choices 1 and 2):

- :func:`overlaps`: two policies of one tier with equal priority that select a
  common pod and both have rules of one direction; the API leaves their order
  undefined, stockade orders them by name;
- :func:`fail_closed_rules`: rules with a ``domainNames`` peer, which stockade does
  not enforce; they fail closed (an Accept matches nothing, a Deny or Pass denies all).

The controller finds overlaps on each node's compiled rule set
(:func:`node_overlaps`); ``stockade matrix``/``explain`` on the subjects of the
policies in their input. Both go through :func:`overlaps`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from stockade.cnp import ACCEPT, DENY, ClusterNetworkPolicy
from stockade.ruleset import NodeClusterPolicy

DIRECTIONS = ("ingress", "egress")


class _Tiered(Protocol):
    """What an overlap needs of a policy: a parsed or a compiled ClusterNetworkPolicy."""

    @property
    def name(self) -> str: ...
    @property
    def tier(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def ingress(self) -> tuple[object, ...]: ...
    @property
    def egress(self) -> tuple[object, ...]: ...


@dataclass(frozen=True, slots=True, order=True)
class Overlap:
    """Two ClusterNetworkPolicies of one tier with equal priority that select a common
    pod and both have rules of ``direction`` (``ingress``/``egress``) for it.

    The API leaves their order undefined; stockade orders them by name, so
    ``first`` < ``second``. An IsolationPolicy is named by its key,
    ``IsolationPolicy/<name>``, and ordered by its name (:func:`evaluation_name`);
    one never overlaps the ClusterNetworkPolicy of its own name, which goes first.
    """

    first: str
    second: str
    direction: str
    tier: str
    priority: int


def overlaps(subjects: Iterable[tuple[_Tiered, Collection[str]]]) -> frozenset[Overlap]:
    """The equal-priority overlaps among policies, each given with the pods it selects.

    Two policies overlap in a direction when they have the same tier and priority,
    their pods meet, and both have rules of that direction (a policy with none does
    nothing there, so no order between them can matter).
    """
    groups: dict[tuple[str, int], list[tuple[_Tiered, Collection[str]]]] = {}
    for policy, pods in subjects:
        groups.setdefault((policy.tier, policy.priority), []).append((policy, pods))
    found: set[Overlap] = set()
    for (tier, priority), group in groups.items():
        if len(group) < 2:
            continue
        group.sort(key=lambda entry: evaluation_name(entry[0].name))
        for i, (a, a_pods) in enumerate(group):
            mine = set(a_pods)
            for b, b_pods in group[i + 1 :]:
                if evaluation_name(a.name)[0] == evaluation_name(b.name)[0]:
                    continue  # the same name: the ClusterNetworkPolicy first, documented
                if mine.isdisjoint(b_pods):
                    continue
                for direction in DIRECTIONS:
                    if getattr(a, direction) and getattr(b, direction):
                        found.add(Overlap(a.name, b.name, direction, tier, priority))
    return frozenset(found)


def evaluation_name(key: str) -> tuple[str, bool]:
    """How a policy's key orders among equal priorities: by name, then the
    ClusterNetworkPolicy before the IsolationPolicy (whose key is ``IsolationPolicy/<name>``)."""
    _, slash, name = key.rpartition("/")
    return (name, bool(slash))


def node_overlaps(policies: Iterable[NodeClusterPolicy]) -> frozenset[Overlap]:
    """The overlaps among one node's ClusterNetworkPolicies (their local subjects meet)."""
    return overlaps((cp.policy, cp.targets) for cp in policies)


@dataclass(frozen=True, slots=True)
class FailClosedRule:
    """A rule with a ``domainNames`` peer: its direction, index, name and action."""

    direction: str
    index: int
    name: str
    action: str

    @property
    def message(self) -> str:
        """What the rule does instead, as the CLI and the controller's Event say it."""
        if self.action == ACCEPT:
            effect = "this Accept rule matches no traffic, its other peers included"
        else:
            effect = (
                f"this {self.action} rule denies all {self.direction} traffic of the selected "
                "pods that reaches it, whatever its other peers and protocols"
                + (" (it does not pass)" if self.action != DENY else "")
            )
        label = f"{self.direction} rule {self.index}" + (f" ({self.name})" if self.name else "")
        return (
            f"{label}: stockade does not support domainNames peers; the rule fails closed: {effect}"
        )


def fail_closed_rules(policy: ClusterNetworkPolicy) -> tuple[FailClosedRule, ...]:
    """The rules of ``policy`` that fail closed, in order (ingress first)."""
    return tuple(
        FailClosedRule(direction, index, rule.name, rule.action)
        for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress))
        for index, rule in enumerate(rules)
        if rule.unsupported
    )
