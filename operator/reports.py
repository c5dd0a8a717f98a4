"""What to tell users about their policies, as Events: pure translation.

Purely computational. :class:`PolicyTracker` follows the compiler's output (which
nodes enforce a policy, how many pods it selects, which named ports those pods
declare, how large each peer set is; for ClusterNetworkPolicies also which pairs of
equal priority share a subject pod); :func:`policy_events` and
:func:`cluster_policy_events` turn that into the Events a policy should carry;
:func:`new_events` keeps only what was not reported before. The publisher posts the
result (and only the leader does).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from stockade.cnp import ClusterNetworkPolicy
from stockade.errors import InvalidObjectError
from stockade.lint import EmptyRule
from stockade.ownership import IPClaim
from stockade.ruleset import CompiledPolicy, NodeClusterPolicy, NodeRuleSet, PeerSet
from stockade.tier_lint import Overlap, fail_closed_rules, node_overlaps

NORMAL = "Normal"
WARNING = "Warning"
REASON_APPLIED = "PolicyApplied"
REASON_NAMED_PORT = "NamedPortNotFound"
REASON_INVALID = "PolicyRejected"
REASON_EMPTY_RULE = "RuleMatchesNothing"
# ClusterNetworkPolicies only.
REASON_UNSUPPORTED_PEER = "UnsupportedPeer"
REASON_PRIORITY_OVERLAP = "PriorityOverlap"
REASONS = (
    REASON_APPLIED,
    REASON_NAMED_PORT,
    REASON_INVALID,
    REASON_EMPTY_RULE,
    REASON_UNSUPPORTED_PEER,
    REASON_PRIORITY_OVERLAP,
)
# The kinds whose Events are read back at adoption (seed_from_events).
REPORTED_KINDS = ("NetworkPolicy", "ClusterNetworkPolicy")
# Events on Pods (not seeded from the API on adoption: a repeat after a restart is
# rare and harmless, where a missed one would hide a denied address).
REASON_POD_IP_CONFLICT = "PodIPConflict"
REASON_POD_REJECTED = "PodRejected"

PortName = tuple[str, str]  # (name, protocol)


@dataclass(frozen=True, slots=True)
class EventSpec:
    """An Event to post on a policy (or one already posted)."""

    type: str
    reason: str
    message: str


def pod_events(
    conflicts: Iterable[IPClaim], error: InvalidObjectError | None
) -> tuple[EventSpec, ...]:
    """Warnings for a pod: an address another pod claims too, or an object unread."""
    out = [EventSpec(WARNING, REASON_POD_IP_CONFLICT, c.message()) for c in conflicts]
    if error is not None:
        problems = "; ".join(str(e) for e in error.errors[:3])
        out.append(
            EventSpec(
                WARNING,
                REASON_POD_REJECTED,
                f"stockade cannot read this pod ({problems}); all traffic from and to its "
                "addresses is denied until it is fixed",
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Share:
    targets: int
    ports: frozenset[PortName]


@dataclass(frozen=True, slots=True)
class Footprint:
    """Where a policy is enforced: nodes, selected pods, their declared named ports."""

    nodes: int = 0
    pods: int = 0
    ports: frozenset[PortName] = frozenset()
    cluster_nodes: int = 0  # nodes with a rule set (every node the controller knows)


class PolicyTracker:
    """Per policy, its share of every node's rule set; per peer set, its size.

    Fed with the compiler's changes (:meth:`node`, :meth:`peer_set`); each call
    returns the policies (or sets) whose numbers may have moved.
    """

    def __init__(self) -> None:
        self._by_node: dict[str, dict[str, _Share]] = {}
        self._nodes: set[str] = set()
        self._by_policy: dict[str, dict[str, _Share]] = {}
        self._shards: dict[str, tuple[str, int]] = {}  # shard -> (set, members)
        self._set_sizes: dict[str, int] = {}
        # ClusterNetworkPolicies: subjects per node, and per policy; the overlaps
        # each node shows, and on how many nodes each overlap is seen.
        self._cluster_by_node: dict[str, dict[str, int]] = {}
        self._by_cluster_policy: dict[str, dict[str, int]] = {}
        self._overlaps_by_node: dict[str, frozenset[Overlap]] = {}
        self._overlap_nodes: dict[Overlap, int] = {}
        # ClusterNetworkPolicies whose footprint or overlaps moved, for the caller to
        # take (:meth:`take_cluster_touched`).
        self.cluster_touched: set[str] = set()

    def node(self, name: str, rs: NodeRuleSet | None) -> set[str]:
        """Node ``name`` now has rule set ``rs`` (None: gone); the policies touched."""
        before = self._by_node.pop(name, {})
        after: dict[str, _Share] = {}
        if rs is None:
            self._nodes.discard(name)
        else:
            self._nodes.add(name)
            pods = {p.name: p for p in rs.pods}
            for np in rs.policies:
                ports: set[PortName] = set()
                for target in np.targets:
                    pod = pods.get(target)
                    if pod is not None:
                        ports.update((p.name, p.protocol) for p in pod.ports)
                after[np.policy.name] = _Share(len(np.targets), frozenset(ports))
        if after:
            self._by_node[name] = after
        touched = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        for key in touched:
            shares = self._by_policy.setdefault(key, {})
            if key in after:
                shares[name] = after[key]
            else:
                shares.pop(name, None)
            if not shares:
                del self._by_policy[key]
        self._cluster_node(name, () if rs is None else rs.cluster_policies)
        return touched

    def _cluster_node(self, name: str, policies: tuple[NodeClusterPolicy, ...]) -> None:
        before = self._cluster_by_node.pop(name, {})
        after = {cp.policy.name: len(cp.targets) for cp in policies}
        if after:
            self._cluster_by_node[name] = after
        for key in before.keys() | after.keys():
            if before.get(key) == after.get(key):
                continue
            self.cluster_touched.add(key)
            shares = self._by_cluster_policy.setdefault(key, {})
            if key in after:
                shares[name] = after[key]
            else:
                shares.pop(name, None)
            if not shares:
                del self._by_cluster_policy[key]
        old = self._overlaps_by_node.pop(name, frozenset())
        new = node_overlaps(policies)
        if new:
            self._overlaps_by_node[name] = new
        for overlap in old - new:
            self._overlap_nodes[overlap] -= 1
            if not self._overlap_nodes[overlap]:
                del self._overlap_nodes[overlap]
                self.cluster_touched |= {overlap.first, overlap.second}
        for overlap in new - old:
            self._overlap_nodes[overlap] = self._overlap_nodes.get(overlap, 0) + 1
            if self._overlap_nodes[overlap] == 1:
                self.cluster_touched |= {overlap.first, overlap.second}

    def take_cluster_touched(self) -> set[str]:
        """The ClusterNetworkPolicies whose numbers or overlaps moved since the last call."""
        touched, self.cluster_touched = self.cluster_touched, set()
        return touched

    def cluster_footprint(self, name: str) -> Footprint:
        """Nodes and selected pods of the ClusterNetworkPolicy ``name``."""
        shares = self._by_cluster_policy.get(name, {})
        return Footprint(
            len(shares), sum(shares.values()), frozenset(), max(len(self._nodes), len(shares))
        )

    def overlaps_of(self, name: str) -> tuple[Overlap, ...]:
        """The overlaps (anywhere in the cluster) ``name`` takes part in, sorted."""
        return tuple(sorted(o for o in self._overlap_nodes if name in (o.first, o.second)))

    def peer_set(self, shard: str, ps: PeerSet | None) -> str | None:
        """Shard ``shard`` now is ``ps`` (None: gone); the set whose size changed."""
        old = self._shards.pop(shard, None)
        if old is not None:
            self._set_sizes[old[0]] -= old[1]
            if not self._set_sizes[old[0]]:
                del self._set_sizes[old[0]]
        if ps is not None:
            self._shards[shard] = (ps.set_name, len(ps.members))
            self._set_sizes[ps.set_name] = self._set_sizes.get(ps.set_name, 0) + len(ps.members)
        new_size = None if ps is None else len(ps.members)
        old_size = None if old is None else old[1]
        if new_size == old_size:
            return None
        return ps.set_name if ps is not None else old[0] if old is not None else None

    def footprint(self, policy: str) -> Footprint:
        """Nodes, selected pods and their named ports, for ``namespace/name``."""
        shares = self._by_policy.get(policy, {})
        ports: set[PortName] = set()
        for share in shares.values():
            ports |= share.ports
        return Footprint(
            len(shares),
            sum(s.targets for s in shares.values()),
            frozenset(ports),
            max(len(self._nodes), len(shares)),
        )

    def set_size(self, set_name: str) -> int:
        """How many pods the peer set has, over all its shards."""
        return self._set_sizes.get(set_name, 0)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def applied_message(fp: Footprint) -> str:
    """``applied on N of M nodes selecting K pods``: M counts every node of the cluster."""
    nodes = f"{fp.nodes} of {_plural(fp.cluster_nodes, 'node')}"
    return f"applied on {nodes} selecting {_plural(fp.pods, 'pod')}"


_APPLIED = re.compile(r"^applied on (\d+)(?: of \d+)? nodes? selecting (\d+) pods?$")


def _news_key(event: EventSpec) -> EventSpec:
    """What makes an Event news: a PolicyApplied's N and K, not the cluster's size M.

    A node added to the cluster changes every policy's M; an Event on every policy
    for that would be noise. (Also reads the older ``applied on N nodes ...``.)
    """
    m = _APPLIED.match(event.message) if event.reason == REASON_APPLIED else None
    if m is None:
        return event
    return EventSpec(event.type, event.reason, f"{m[1]} nodes, {m[2]} pods")


class NamedPortRef(NamedTuple):
    """A named port in a policy's rules, and the PeerSet resolving it (egress only)."""

    direction: str
    rule_index: int
    name: str
    protocol: str
    peer_set: str | None


def named_port_refs(policy: CompiledPolicy) -> tuple[NamedPortRef, ...]:
    """Every named port in the rules, in rule order, each once."""
    out: list[NamedPortRef] = []
    for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress)):
        for index, rule in enumerate(rules or ()):
            for port in rule.ports:
                if port.name is not None:
                    ref = NamedPortRef(
                        direction, index, port.name, port.protocol, port.named_port_set
                    )
                    if ref not in out:
                        out.append(ref)
    return tuple(out)


def policy_events(
    policy: CompiledPolicy,
    fp: Footprint,
    set_size: Callable[[str], int],
    empty_rules: Iterable[EmptyRule] = (),
) -> tuple[EventSpec, ...]:
    """The Events a valid policy should carry now.

    A Normal ``PolicyApplied`` with where it is enforced, and a Warning per named
    port that cannot resolve: in an ingress rule, one that no selected pod declares
    (reported only when the policy selects pods); in an egress rule, one that no
    pod in the cluster declares. Then a Warning ``RuleMatchesNothing`` per rule in
    ``empty_rules`` (:func:`stockade.lint.empty_rules` of the parsed policy): rules
    whose every peer is impossible by the spec alone.
    """
    events = [EventSpec(NORMAL, REASON_APPLIED, applied_message(fp))]
    for direction, index, name, protocol, set_name in named_port_refs(policy):
        if direction == "ingress":
            if fp.pods and (name, protocol) not in fp.ports:
                events.append(
                    EventSpec(
                        WARNING,
                        REASON_NAMED_PORT,
                        f"ingress rule {index}: no selected pod declares port {name}/{protocol};"
                        " the rule allows nothing on it",
                    )
                )
        elif set_name is not None and set_size(set_name) == 0:
            events.append(
                EventSpec(
                    WARNING,
                    REASON_NAMED_PORT,
                    f"egress rule {index}: no pod declares port {name}/{protocol};"
                    " the rule allows nothing on it",
                )
            )
    events.extend(EventSpec(WARNING, REASON_EMPTY_RULE, e.message) for e in empty_rules)
    return tuple(events)


def invalid_events(error: InvalidObjectError, kept: bool = False) -> tuple[EventSpec, ...]:
    """The Warning for a policy rejected whole, with every problem on one line.

    ``kept``: the policy's last valid version stays in force (it was valid before).
    """
    problems = "; ".join(str(e) for e in error.errors)
    effect = "its last valid version stays in force" if kept else "enforces nothing"
    return (EventSpec(WARNING, REASON_INVALID, f"invalid, {effect}: {problems}"),)


def new_events(previous: Iterable[EventSpec], current: Iterable[EventSpec]) -> list[EventSpec]:
    """What to post: the current Events not already reported (in order)."""
    seen = {_news_key(e) for e in previous}
    return [e for e in current if _news_key(e) not in seen]


def seed_from_events(events: Iterable[Mapping[str, object]]) -> dict[str, set[EventSpec]]:
    """What earlier controllers reported, by policy uid, from listed core v1 Events.

    Events on NetworkPolicies and ClusterNetworkPolicies (:data:`REPORTED_KINDS`).

    Only the latest PolicyApplied message per policy counts (older ones are out of
    date); every Warning counts.
    """
    reported: dict[str, set[EventSpec]] = {}
    latest: dict[str, tuple[str, str]] = {}
    for ev in events:
        involved = ev.get("involvedObject")
        if not isinstance(involved, Mapping) or involved.get("kind") not in REPORTED_KINDS:
            continue
        reason = str(ev.get("reason") or "")
        if reason not in REASONS:
            continue
        uid = str(involved.get("uid") or "")
        spec = EventSpec(str(ev.get("type") or ""), reason, str(ev.get("message") or ""))
        if reason == REASON_APPLIED:
            stamp = str(ev.get("lastTimestamp") or ev.get("eventTime") or "")
            if uid not in latest or stamp >= latest[uid][0]:
                latest[uid] = (stamp, spec.message)
            continue
        reported.setdefault(uid, set()).add(spec)
    for uid, (_, message) in latest.items():
        reported.setdefault(uid, set()).add(EventSpec(NORMAL, REASON_APPLIED, message))
    return reported


# --------------------------------------------------------------------------- ClusterNetworkPolicy


def unsupported_peer_events(policy: ClusterNetworkPolicy) -> tuple[EventSpec, ...]:
    """A Warning per rule with a ``domainNames`` peer: stockade does not enforce it,
    and the rule fails closed, as the API asks of a peer an implementation does not
    support (an Accept rule matches nothing; a Deny or Pass rule denies all)."""
    return tuple(
        EventSpec(WARNING, REASON_UNSUPPORTED_PEER, rule.message)
        for rule in fail_closed_rules(policy)
    )


def overlap_events(name: str, overlaps: Iterable[Overlap]) -> tuple[EventSpec, ...]:
    """A Warning per other policy of the same tier and priority sharing a subject pod
    with ``name`` in a direction both have rules for."""
    directions: dict[str, list[str]] = {}
    found: dict[str, Overlap] = {}
    for overlap in sorted(overlaps):
        if name not in (overlap.first, overlap.second):
            continue
        other = overlap.second if overlap.first == name else overlap.first
        directions.setdefault(other, []).append(overlap.direction)
        found[other] = overlap
    out: list[EventSpec] = []
    for other in sorted(found):
        o = found[other]
        where = " and ".join(sorted(set(directions[other]), key=("ingress", "egress").index))
        out.append(
            EventSpec(
                WARNING,
                REASON_PRIORITY_OVERLAP,
                f"{_tiered_label(other)} has the same tier ({o.tier}) and priority "
                f"({o.priority}) and selects some of the same pods, with {where} rules: the "
                "API leaves their order undefined; stockade orders them by name, "
                f"{_bare(o.first)} before {_bare(o.second)}",
            )
        )
    return tuple(out)


def _tiered_label(key: str) -> str:
    """``ClusterNetworkPolicy x`` or ``IsolationPolicy x``, from a compiled policy's key."""
    kind, slash, name = key.partition("/")
    return f"{kind} {name}" if slash else f"ClusterNetworkPolicy {key}"


def _bare(key: str) -> str:
    """A CNP's name as it is; an IsolationPolicy's key as ``IsolationPolicy x``."""
    return _tiered_label(key) if "/" in key else key


def cluster_policy_events(
    policy: ClusterNetworkPolicy, fp: Footprint, overlaps: Iterable[Overlap] = ()
) -> tuple[EventSpec, ...]:
    """The Events a valid ClusterNetworkPolicy should carry now: ``PolicyApplied``
    (where it is enforced), ``UnsupportedPeer`` per rule that fails closed,
    ``PriorityOverlap`` per policy it shares a priority and pods with."""
    return (
        EventSpec(NORMAL, REASON_APPLIED, applied_message(fp)),
        *unsupported_peer_events(policy),
        *overlap_events(policy.name, overlaps),
    )


class AppliedSettler:
    """Holds each policy's ``PolicyApplied`` Event until its counts stop changing.

    Kubernetes' event recorder aggregates repeated Events rather than posting each;
    here a burst that moves a policy's footprint through many intermediate counts
    (nodes, pods) posts one Event, with the counts it settled at: the Event is let
    through once the same counts (:func:`_news_key`) have been offered for
    ``settle`` seconds. Other Events (warnings, rejections) are never held. Pure:
    the caller gives the clock reading, and asks :meth:`due_in` when to look again.
    """

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self._seen: dict[str, tuple[EventSpec, float]] = {}  # uid -> (news key, since)
        self._held: set[str] = set()

    def hold(self, uid: str, events: Iterable[EventSpec], now: float) -> tuple[EventSpec, ...]:
        """``events`` without a PolicyApplied whose counts have not settled yet."""
        events = tuple(events)
        applied = [e for e in events if e.reason == REASON_APPLIED]
        if not applied or self.settle <= 0:
            self._seen.pop(uid, None)
            self._held.discard(uid)
            return events
        key = _news_key(applied[-1])
        seen = self._seen.get(uid)
        if seen is None or seen[0] != key:
            seen = self._seen[uid] = (key, now)
        if now - seen[1] >= self.settle:
            self._held.discard(uid)
            return events
        self._held.add(uid)
        return tuple(e for e in events if e.reason != REASON_APPLIED)

    def take_due(self, now: float) -> set[str]:
        """The uids whose held Event may go now: report them again (no longer held)."""
        due = {uid for uid in self._held if now - self._seen[uid][1] >= self.settle}
        self._held -= due
        return due

    def due_in(self, now: float) -> float | None:
        """Seconds until the first held Event may go (None: nothing held)."""
        if not self._held:
            return None
        return max(0.0, min(self._seen[uid][1] for uid in self._held) + self.settle - now)

    def retain(self, uids: Iterable[str]) -> None:
        """Forget every policy but these (the others are gone)."""
        keep = set(uids)
        self._seen = {uid: v for uid, v in self._seen.items() if uid in keep}
        self._held &= keep
