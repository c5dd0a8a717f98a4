"""The compiler: cluster state in, the rule sets of every node and the peer sets out.

Purely computational: no I/O, no clock, no globals. The controller feeds it events
(:meth:`Compiler.upsert`, :meth:`Compiler.delete`) and publishes what
:meth:`Compiler.flush` reports as changed; :func:`compile_cluster` is the same
machinery run once over a whole snapshot, so an incremental run and a full compile
agree by construction of the outputs (and a property test checks it).

Cost model: a pod event touches the policies of its namespace and the peer sets
whose namespace scope includes it; a namespace event touches the peer sets with a
namespace selector; a policy event touches its own targets and peer sets. Outputs
are rebuilt only for the nodes and peer-set shards marked dirty.
"""

from __future__ import annotations

import functools
import itertools
import operator
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from stockade.cluster import Cluster
from stockade.cnp import (
    ACCEPT,
    ClusterInput,
    ClusterNetworkPolicy,
    ClusterPeer,
    ClusterRule,
    NodeInfo,
    Subject,
)
from stockade.gcpause import collector_paused
from stockade.index import LabelIndex
from stockade.isolation import IsolationPolicy, SamePeer
from stockade.model import (
    ContainerPort,
    Namespace,
    NetworkPolicy,
    Peer,
    Pod,
    PolicyPort,
    Rule,
    named_ports_of,
)
from stockade.ownership import IPClaim, OwnershipTracker
from stockade.ruleset import (
    DENY,
    CompiledClusterPolicy,
    CompiledPolicy,
    CompiledRule,
    ContainerPortSpec,
    KnownPod,
    LocalPod,
    NamedPortRef,
    NodeClusterPolicy,
    NodePolicy,
    NodeRuleSet,
    PeerMatch,
    PeerMember,
    PeerSelector,
    PeerSet,
    PortMatch,
    SameMatch,
    SameRules,
    SelectorRequirement,
    TierRule,
    canonical_json,
    stable_hash,
    text_hash,
)
from stockade.selectors import EVERYTHING, LabelSelector, Requirement

DEFAULT_SHARD_SIZE = 1000
# Members are hashed into this many buckets; a shard is a fixed group of buckets,
# so a membership change rebuilds one shard, and resharding happens only when the
# shard count doubles or halves.
_BUCKETS = 1024


# --------------------------------------------------------------------------- policies


@functools.lru_cache(maxsize=8192)
def _reqs(sel: LabelSelector) -> tuple[SelectorRequirement, ...]:
    # Cached: the same selectors recur across namespaces and policies (Antrea's
    # scenario builds 125,000 of them from a few hundred distinct ones), and frozen
    # dataclasses are slow to build. Both types are immutable, so sharing is safe.
    return tuple(SelectorRequirement(r.key, r.operator, r.values) for r in sel.requirements)


# Cached like _reqs, its inverse: every set of a policy template asks for the same one.
@functools.lru_cache(maxsize=8192)
def _selector(reqs: tuple[SelectorRequirement, ...]) -> LabelSelector:
    return LabelSelector(tuple(Requirement(r.key, r.operator, r.values) for r in reqs))


@functools.lru_cache(maxsize=8192)
def _reqs_json(reqs: tuple[SelectorRequirement, ...]) -> str:
    return canonical_json([[r.key, r.operator, list(r.values)] for r in reqs])


def peer_set_name(selector: PeerSelector) -> str:
    """The content-addressed name of the set ``selector`` selects.

    The hash of the canonical JSON of ``{"n": namespace, "nodes": node selector (node
    sets only, so the names of pod sets stay as they were), "ns": namespace selector,
    "p": pod selector, "port": [name, protocol]}``, each selector a list of ``[key,
    operator, values]``. The text is put together from the JSON of its parts, in
    the sorted order of the keys: the selectors' parts recur from set to set.
    """
    ns_sel, nodes, port = selector.namespace_selector, selector.node_selector, selector.named_port
    text = "".join(
        (
            '{"n":',
            canonical_json(selector.namespace),
            "" if nodes is None else ',"nodes":' + _reqs_json(nodes),
            ',"ns":',
            "null" if ns_sel is None else _reqs_json(ns_sel),
            ',"p":',
            _reqs_json(selector.pod_selector),
            ',"port":',
            "null" if port is None else canonical_json([port.name, port.protocol]),
            "}",
        )
    )
    return "ps-" + text_hash(text)


def policy_id(key: str) -> str:
    """A short stable id for ``namespace/name``, used in chain and set names."""
    return stable_hash(key, 12)


def _peer_selector(peer: Peer, namespace: str) -> PeerSelector:
    pod_reqs = _reqs(peer.pod_selector or EVERYTHING)
    if peer.namespace_selector is None:
        return PeerSelector(pod_selector=pod_reqs, namespace=namespace)
    return PeerSelector(pod_selector=pod_reqs, namespace_selector=_reqs(peer.namespace_selector))


def _compile_peers(
    peers: tuple[Peer, ...], namespace: str, sets: dict[str, PeerSelector]
) -> tuple[PeerMatch, ...]:
    out: list[PeerMatch] = []
    for peer in peers:
        if peer.ip_block is not None:
            match = PeerMatch(
                cidr=str(peer.ip_block.cidr),
                excepts=tuple(str(e) for e in peer.ip_block.excepts),
            )
        else:
            selector = _peer_selector(peer, namespace)
            name = peer_set_name(selector)
            sets[name] = selector
            match = PeerMatch(peer_set=name)
        if match not in out:
            out.append(match)
    return tuple(out)


def _named_port_match(
    name: str, protocol: str, egress: bool, sets: dict[str, PeerSelector]
) -> PortMatch:
    if not egress:
        # Ingress: the destination is the local target, whose ports the node knows.
        return PortMatch(protocol=protocol, name=name)
    # Egress: the destination may be any pod in the cluster; the set of every pod
    # declaring the port gives its number per pod.
    selector = PeerSelector(
        pod_selector=(), namespace_selector=(), named_port=NamedPortRef(name, protocol)
    )
    set_name = peer_set_name(selector)
    sets[set_name] = selector
    return PortMatch(protocol=protocol, name=name, named_port_set=set_name)


def _compile_port(port: PolicyPort, egress: bool, sets: dict[str, PeerSelector]) -> PortMatch:
    if port.name is None:
        return PortMatch(protocol=port.protocol, port=port.port, end_port=port.end_port)
    return _named_port_match(port.name, port.protocol, egress, sets)


def _compile_rules(
    rules: tuple[Rule, ...] | None, namespace: str, egress: bool, sets: dict[str, PeerSelector]
) -> tuple[CompiledRule, ...] | None:
    if rules is None:
        return None
    out = []
    for rule in rules:
        ports: list[PortMatch] = []
        for p in rule.ports:
            match = _compile_port(p, egress, sets)
            if match not in ports:
                ports.append(match)
        out.append(CompiledRule(_compile_peers(rule.peers, namespace, sets), tuple(ports)))
    return tuple(out)


def compile_policy(policy: NetworkPolicy) -> tuple[CompiledPolicy, dict[str, PeerSelector]]:
    """Compile one policy, independently of any node.

    Returns the compiled policy and the selector of every PeerSet it refers to.
    Rule order is kept, so a rule's index is the index in the policy's spec.
    """
    sets: dict[str, PeerSelector] = {}
    compiled = CompiledPolicy(
        name=policy.key,
        id=policy_id(policy.key),
        ingress=_compile_rules(policy.ingress, policy.namespace, False, sets),
        egress=_compile_rules(policy.egress, policy.namespace, True, sets),
    )
    return compiled, sets


# --------------------------------------------------------------------------- cluster policies

# A destinationNamedPort has no protocol of its own: it matches a connection of
# any of these whose port is the destination pod's port of that name and protocol.
_NAMED_PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")


def cluster_policy_id(name: str) -> str:
    """A short stable id for a ClusterNetworkPolicy, used in chain and set names.

    Hashed with a prefix, so it never equals the id of a NetworkPolicy (whose key
    has a namespace) whatever the names. An IsolationPolicy's id is the hash of its
    key, ``IsolationPolicy/<name>``: never a ClusterNetworkPolicy's.
    """
    if name.startswith(ISOLATION_PREFIX):
        return stable_hash(name, 12)
    return stable_hash("ClusterNetworkPolicy/" + name, 12)


ISOLATION_PREFIX = IsolationPolicy.kind + "/"
# The set user of the nodes' rules by sameness (a policy's name has no "@").
_SAME_USER = ISOLATION_PREFIX + "@nodes"


def _cluster_peer(peer: ClusterPeer, sets: dict[str, PeerSelector]) -> tuple[PeerMatch, ...]:
    if isinstance(peer, SamePeer):
        return ()  # by sameness: per subject, on each node (see expand_isolation)
    if peer.networks:
        return tuple(PeerMatch(cidr=str(net)) for net in peer.networks)
    if peer.namespaces is not None:
        selector = PeerSelector(pod_selector=(), namespace_selector=_reqs(peer.namespaces))
    elif peer.pods is not None:
        selector = PeerSelector(
            pod_selector=_reqs(peer.pods.pod_selector),
            namespace_selector=_reqs(peer.pods.namespace_selector),
        )
    elif peer.nodes is not None:
        selector = PeerSelector(node_selector=_reqs(peer.nodes))
    else:  # domainNames: the rule fails closed as a whole (see _compile_tier_rules)
        return ()
    name = peer_set_name(selector)
    sets[name] = selector
    return (PeerMatch(peer_set=name),)


def _compile_tier_rules(
    rules: Iterable[ClusterRule], egress: bool, sets: dict[str, PeerSelector]
) -> tuple[TierRule, ...]:
    out: list[TierRule] = []
    for index, rule in enumerate(rules):
        if rule.unsupported:
            # The spec's "fail closed": an Accept rule matches no traffic (left out);
            # a Deny or Pass rule is a "Deny all" rule.
            if rule.action != ACCEPT:
                out.append(TierRule(DENY, index, name=rule.name, fail_closed=True))
            continue
        if _by_sameness(rule):
            continue  # compiled per node, for its subjects (expand_isolation)
        peers: list[PeerMatch] = []
        for peer in rule.peers:
            for match in _cluster_peer(peer, sets):
                if match not in peers:
                    peers.append(match)
        ports = _tier_ports(rule, egress, sets)
        out.append(TierRule(rule.action, index, tuple(peers), ports, rule.name))
    return tuple(out)


def _by_sameness(rule: ClusterRule) -> bool:
    """The rule has a peer by sameness (an IsolationPolicy's)."""
    return any(isinstance(p, SamePeer) for p in rule.peers)


def _tier_ports(
    rule: ClusterRule, egress: bool, sets: dict[str, PeerSelector]
) -> tuple[PortMatch, ...]:
    ports: list[PortMatch] = []
    for pm in rule.protocols:
        if pm.named_port is not None:
            found = [
                _named_port_match(pm.named_port, proto, egress, sets)
                for proto in _NAMED_PORT_PROTOCOLS
            ]
        else:
            assert pm.protocol is not None
            end = pm.end_port if pm.end_port != pm.port else None
            found = [PortMatch(protocol=pm.protocol, port=pm.port, end_port=end)]
        ports.extend(p for p in found if p not in ports)
    return tuple(ports)


def compile_cluster_policy(
    policy: ClusterNetworkPolicy,
) -> tuple[CompiledClusterPolicy, dict[str, PeerSelector]]:
    """Compile one ClusterNetworkPolicy, independently of any node.

    Returns the compiled policy and the selector of every PeerSet it refers to.
    Rule order and indexes are kept (an Accept rule that fails closed is left out,
    so indexes may skip; so is an IsolationPolicy rule with peers by sameness,
    which each node gets for its own subjects from :func:`expand_isolation`).
    """
    sets: dict[str, PeerSelector] = {}
    compiled = CompiledClusterPolicy(
        name=policy.key,
        id=cluster_policy_id(policy.key),
        tier=policy.tier,
        priority=policy.priority,
        ingress=_compile_tier_rules(policy.ingress, False, sets),
        egress=_compile_tier_rules(policy.egress, True, sets),
    )
    return compiled, sets


def _same_selector(peer: SamePeer, namespace: str | None, values: tuple[str, ...]) -> PeerSelector:
    """The set of the far ends ``peer`` matches for a subject with ``values`` (in
    ``namespace``: given when the set depends on it, see :meth:`SameSets.resolver`).

    Requirements are sorted, so rules comparing the same keys share one set per value.
    """
    if peer.scope == "namespaces" and not peer.keys:
        return PeerSelector(pod_selector=(), namespace=namespace)
    same = [SelectorRequirement(k, "In", (v,)) for k, v in zip(peer.keys, values, strict=True)]
    if peer.scope == "namespaces":
        return PeerSelector(pod_selector=(), namespace_selector=_sorted_reqs(same))
    reqs = _sorted_reqs([*same, *(_reqs(peer.also) if peer.also is not None else ())])
    if peer.in_namespaces is None:
        return PeerSelector(pod_selector=reqs, namespace=namespace)
    return PeerSelector(pod_selector=reqs, namespace_selector=_reqs(peer.in_namespaces))


def _sorted_reqs(reqs: Iterable[SelectorRequirement]) -> tuple[SelectorRequirement, ...]:
    return tuple(sorted(set(reqs), key=lambda r: (r.key, r.operator, r.values)))


def _same_set(
    peer: SamePeer, namespace: str | None, values: tuple[str, ...]
) -> tuple[str, PeerSelector, str]:
    """The name, selector and reason of the set ``peer`` matches for a subject with
    ``values`` (in ``namespace``, when the set depends on it): the same for every
    such subject of every node."""
    selector = _same_selector(peer, namespace, values)
    return peer_set_name(selector), selector, peer.describe(values)


MEMO_LIMIT = 100_000  # signatures kept per IsolationPolicy, then forgotten at once


@dataclass(slots=True, eq=False)
class SameSubject:
    """What a subject's rules by sameness may depend on: its namespace, its labels
    and its namespace's labels. One object for the subjects alike (a Deployment's
    pods in one namespace, whose label maps are one, see stockade.interning), so
    each IsolationPolicy finds their rules once for them all, by identity."""

    namespace: str
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str]


class SameSubjects:
    """One :class:`SameSubject` per namespace and pair of label maps, found by the
    maps' identities (the maps are kept, so an id is never reused). A pure cache,
    forgotten at once past :data:`MEMO_LIMIT`."""

    def __init__(self) -> None:
        self._by_maps: dict[tuple[str, int, int], SameSubject] = {}

    def of(self, pod: Pod, namespace_labels: Mapping[str, str]) -> SameSubject:
        """The subject ``pod`` is, in a namespace labelled ``namespace_labels``."""
        labels = pod.labels
        key = (pod.namespace, id(labels), id(namespace_labels))
        found = self._by_maps.get(key)
        if (
            found is None
            or found.labels is not labels
            or found.namespace_labels is not namespace_labels
        ):
            if len(self._by_maps) >= MEMO_LIMIT:
                self._by_maps.clear()
            found = self._by_maps[key] = SameSubject(pod.namespace, labels, namespace_labels)
        return found


SignaturePart = Callable[[SameSubject], object]


def _signature_part(peer: SamePeer) -> SignaturePart:
    """What ``peer``'s set depends on for one subject: the values compared (None for
    a missing key) and the namespace where it matters. Subjects equal in every part
    of a rule get the same peers."""
    keys = peer.keys
    if peer.scope == "namespaces":
        if not keys:
            return lambda s: s.namespace
        if len(keys) == 1:
            (key,) = keys
            return lambda s: s.namespace_labels.get(key)
        return lambda s: tuple([s.namespace_labels.get(k) for k in keys])
    local = peer.in_namespaces is None
    if len(keys) == 1:
        (key,) = keys
        if local:
            return lambda s: (s.namespace, s.labels.get(key))
        return lambda s: s.labels.get(key)
    if local:
        return lambda s: (s.namespace, *[s.labels.get(k) for k in keys])
    return lambda s: tuple([s.labels.get(k) for k in keys])


@dataclass(slots=True, eq=False)
class SameVariant:
    """One :class:`SameRules` of an IsolationPolicy and the names of the sets its
    rules use (their selectors are the memo's). Not frozen: made by the hundred
    thousand, and never changed. Compared and hashed by identity: a node lists
    each one once."""

    rules: SameRules
    names: frozenset[str]


# One rule by sameness as a subject sees it (None: no peer left for it), and the
# names of the sets it uses.
_RuleEntry = tuple[TierRule | None, frozenset[str]]
_NO_RULE: _RuleEntry = (None, frozenset())


# A set by sameness: its name, selector, the match a rule holds and its reason.
_SameSet = tuple[str, PeerSelector, PeerMatch, SameMatch]
# A peer by sameness resolved for one subject: its set, or None when the subject
# lacks one of the keys.
_Resolver = Callable[[SameSubject], "_SameSet | None"]


class SameSets:
    """The sets of peers by sameness, shared by every IsolationPolicy of a compiler:
    equal peers (``sameLabels: [dept]`` in two policies) with equal values are one
    set, worked out once. A pure cache, forgotten at once past :data:`MEMO_LIMIT`."""

    def __init__(self) -> None:
        self._peers: dict[SamePeer, SamePeer] = {}
        self._sets: dict[tuple[int, str | None, tuple[str, ...]], _SameSet] = {}

    def canonical(self, peer: SamePeer) -> SamePeer:
        """The one object of the peers equal to ``peer`` (kept: sets are keyed by it)."""
        return self._peers.setdefault(peer, peer)

    def set_of(self, peer: SamePeer, namespace: str | None, values: tuple[str, ...]) -> _SameSet:
        """The set a canonical ``peer`` matches for a subject with ``values`` (in
        ``namespace`` when it matters): its selector, its match and why."""
        key = (id(peer), namespace, values)
        found = self._sets.get(key)
        if found is None:
            if len(self._sets) >= MEMO_LIMIT:
                self._sets.clear()
            name, selector, reason = _same_set(peer, namespace, values)
            found = self._sets[key] = (
                name,
                selector,
                PeerMatch(peer_set=name),
                SameMatch(name, reason),
            )
        return found

    def resolver(self, peer: SamePeer) -> _Resolver:
        """The set a canonical ``peer`` matches for a subject, None when the subject
        lacks a key (:meth:`SamePeer.values`). The subject's namespace is part of the
        set only where it matters: ``sameAs: Self``, and pods with no namespaceSelector."""
        set_of, keys = self.set_of, peer.keys
        if peer.scope == "namespaces" and not keys:
            return lambda s: set_of(peer, s.namespace, (s.namespace,))
        on_namespace = peer.scope == "namespaces"
        local = not on_namespace and peer.in_namespaces is None

        def resolve(s: SameSubject) -> _SameSet | None:
            labels = s.namespace_labels if on_namespace else s.labels
            values = tuple([labels.get(k) for k in keys])
            if None in values:
                return None
            return set_of(peer, s.namespace if local else None, cast(tuple[str, ...], values))

        return resolve


@dataclass(slots=True)
class _SameRule:
    """One rule by sameness of an IsolationPolicy, ready to expand for a subject."""

    egress: bool
    index: int
    rule: ClusterRule
    ports: tuple[PortMatch, ...]
    # Its peers in the order written: an ordinary one's matches (no resolver), or a
    # peer by sameness (no matches) and its resolver.
    peers: tuple[tuple[tuple[PeerMatch, ...], _Resolver | None], ...]
    # The sets it uses whatever the subject: its ordinary peers' and its ports'.
    fixed: frozenset[str]
    # The rule as each part of a signature that is its own sees it.
    by_part: dict[object, _RuleEntry] = field(default_factory=dict)


# An IsolationPolicy's rules by sameness as written: (egress, index, rule) each.
SamenessRules = tuple[tuple[bool, int, ClusterRule], ...]


def sameness_rules(policy: ClusterNetworkPolicy) -> SamenessRules:
    """The rules by sameness of ``policy`` (none for a ClusterNetworkPolicy): all
    that its variants depend on besides its subjects."""
    return tuple(
        (egress, index, rule)
        for egress, rules in ((False, policy.ingress), (True, policy.egress))
        for index, rule in enumerate(rules)
        if not rule.unsupported and _by_sameness(rule)
    )


class SamenessMemo:
    """Rules by sameness, as each signature of a subject sees them: worked out once
    for every node, and equal results shared.

    A subject's signature is what its rules by sameness depend on: per rule, the
    values compared and the namespace where it matters (:func:`_signature_part`).
    Each rule is expanded once per signature of its own, and each combination of
    expanded rules is one :class:`SameVariant`. One memo serves every
    IsolationPolicy with these rules (the same rules in two tiers, or for two sets
    of subjects); forgotten at once past :data:`MEMO_LIMIT` signatures.
    """

    def __init__(self, written: SamenessRules, same_sets: SameSets) -> None:
        self.written = written
        # The policies that use it (the compiler drops it when none is left).
        self.users: set[str] = set()
        self._signature = _combined(
            [
                _combined([_signature_part(p) for p in rule.peers if isinstance(p, SamePeer)])
                for _, _, rule in written
            ]
        )
        # The selectors of the sets every subject's rules use: kept through a trim.
        self._fixed: dict[str, PeerSelector] = {}
        self._rules = [self._prepare(*item, same_sets) for item in written]
        self._ingress = [i for i, r in enumerate(self._rules) if not r.egress]
        self._egress = [i for i, r in enumerate(self._rules) if r.egress]
        self._by_signature: dict[object, SameVariant] = {}
        self._by_subject: dict[SameSubject, SameVariant] = {}
        self._by_entries: dict[tuple[int, ...], SameVariant] = {}
        self.selectors: dict[str, PeerSelector] = dict(self._fixed)

    def _prepare(
        self, egress: bool, index: int, rule: ClusterRule, same_sets: SameSets
    ) -> _SameRule:
        """A rule by sameness with what does not depend on the subject worked out:
        its ports and ordinary peers (and their sets), its peers by sameness' resolvers."""
        selectors: dict[str, PeerSelector] = {}
        ports = _tier_ports(rule, egress, selectors)
        peers: list[tuple[tuple[PeerMatch, ...], _Resolver | None]] = []
        for peer in rule.peers:
            if isinstance(peer, SamePeer):
                peers.append(((), same_sets.resolver(same_sets.canonical(peer))))
            else:
                peers.append((_cluster_peer(peer, selectors), None))
        self._fixed.update(selectors)
        return _SameRule(egress, index, rule, ports, tuple(peers), frozenset(selectors))

    def trim(self) -> None:
        """Forget everything past :data:`MEMO_LIMIT` signatures. Called before a
        node's policies are expanded, never during: the selectors of what a node
        uses stay known until its sets are acquired."""
        if len(self._by_signature) >= MEMO_LIMIT or len(self._by_subject) >= MEMO_LIMIT:
            self._by_signature.clear()
            self._by_subject.clear()
            self._by_entries.clear()
            self.selectors = dict(self._fixed)
            for rule in self._rules:
                rule.by_part.clear()

    def variants(
        self, subjects: Sequence[SameSubject]
    ) -> tuple[tuple[SameVariant, ...], tuple[int, ...]]:
        """See :func:`expand_isolation`. Done in whole lists, not a loop per subject:
        most subjects' variants are known by then."""
        known = self._by_subject.get
        hits = [known(s) for s in subjects]
        if None in hits:
            find = self._find
            seen = [v or find(s) for v, s in zip(hits, subjects, strict=True)]
        else:
            seen = cast(list[SameVariant], hits)
        # Distinct variants in order of first appearance (hashed by identity).
        found = tuple(dict.fromkeys(seen))
        position = {v: i for i, v in enumerate(found)}
        return found, tuple(map(position.__getitem__, seen))

    def _find(self, subject: SameSubject) -> SameVariant:
        signature = self._signature(subject)
        found = self._by_signature.get(signature)
        if found is None:
            parts = (signature,) if len(self._rules) == 1 else signature
            assert isinstance(parts, tuple)
            found = self._by_signature[signature] = self._combine(subject, parts)
        self._by_subject[subject] = found
        return found

    def _combine(self, subject: SameSubject, parts: tuple[object, ...]) -> SameVariant:
        entries: list[_RuleEntry] = []
        for rule, part in zip(self._rules, parts, strict=True):
            entry = rule.by_part.get(part)
            if entry is None:
                entry = rule.by_part[part] = self._expand(rule, subject)
            entries.append(entry)
        key = tuple([id(e) for e in entries])
        found = self._by_entries.get(key)
        if found is None:
            found = self._by_entries[key] = self._variant(entries)
        return found

    def _variant(self, entries: list[_RuleEntry]) -> SameVariant:
        """The variant of one combination of expanded rules (one per rule, in order)."""
        ingress = [rule for i in self._ingress if (rule := entries[i][0]) is not None]
        egress = [rule for i in self._egress if (rule := entries[i][0]) is not None]
        if len(entries) == 1:
            names = entries[0][1]
        else:
            names = entries[0][1].union(*[e[1] for e in entries[1:]])
        return SameVariant(SameRules(tuple(ingress), tuple(egress)), names)

    def _expand(self, rule: _SameRule, subject: SameSubject) -> _RuleEntry:
        """``rule`` as ``subject`` sees it: its peers in the order written, a set an
        earlier peer brought matching as that peer (explain says so), and a peer by
        sameness whose keys the subject lacks left out."""
        peers: list[PeerMatch] = []
        same: list[SameMatch] = []
        names: list[str] = []
        for matches, resolve in rule.peers:
            if resolve is None:
                peers.extend(m for m in matches if m not in peers)
                continue
            found = resolve(subject)
            if found is None:
                continue
            name, selector, match, why = found
            self.selectors[name] = selector
            names.append(name)
            if match not in peers:
                peers.append(match)
                same.append(why)
        if not peers:
            return _NO_RULE
        written = rule.rule
        out = TierRule(
            written.action, rule.index, tuple(peers), rule.ports, written.name, False, tuple(same)
        )
        return out, rule.fixed.union(names)


def _combined(parts: list[SignaturePart]) -> SignaturePart:
    """One signature from several parts (the part itself when there is one)."""
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        return lambda s: (first(s), second(s))
    return lambda s: tuple([part(s) for part in parts])


def expand_isolation(
    memo: SamenessMemo, subjects: Sequence[SameSubject]
) -> tuple[tuple[SameVariant, ...], tuple[int, ...]]:
    """The variants of an IsolationPolicy on one node, for its local ``subjects``
    (in the order of the node's targets): the distinct rules by sameness they see,
    in order of first appearance, and the index of each subject's.

    Their number grows with the distinct values compared among the node's subjects,
    never with the pods of the cluster; each is shared by every node that has it.
    """
    return memo.variants(subjects)


def _subject_namespace_selector(subject: Subject) -> LabelSelector:
    if subject.namespaces is not None:
        return subject.namespaces
    assert subject.pods is not None
    return subject.pods.namespace_selector


# --------------------------------------------------------------------------- state


@dataclass
class _PolicyState:
    policy: NetworkPolicy
    compiled: CompiledPolicy
    sets: frozenset[str]
    targets: set[str]


@dataclass
class _ClusterPolicyState:
    policy: ClusterNetworkPolicy
    compiled: CompiledClusterPolicy
    sets: frozenset[str]
    namespaces: set[str]  # namespaces the subject's namespace selector matches
    targets: set[str]
    # The compiled policy's sort key, kept: node rule sets sort their CNPs by it.
    order: tuple[int, int, str, int] = field(init=False)
    # An IsolationPolicy's rules by sameness per signature of a subject, shared by
    # its nodes (None: no rules by sameness).
    sameness: SamenessMemo | None = None

    def __post_init__(self) -> None:
        self.order = self.compiled.order


# The variants of an IsolationPolicy's rules by sameness on a node: the names of
# their sets, their rules and the index of each subject's.
_Expanded = tuple[frozenset[str], tuple[SameRules, ...], tuple[int, ...]]


@dataclass(slots=True)
class _NodeSameness:
    """What a node's rule set build expanded by sameness so far: its subjects, and
    the variants per memo and subjects (by the memo's identity)."""

    subjects: dict[str, SameSubject] = field(default_factory=dict)
    expanded: dict[tuple[SamenessMemo, tuple[str, ...]], _Expanded] = field(default_factory=dict)


@dataclass(frozen=True)
class _BasePart:
    """The NetworkPolicy side of one node's rule set (see Compiler._build_node)."""

    policies: tuple[NodePolicy, ...]
    set_names: frozenset[str]
    targeted: frozenset[str]
    known: tuple[KnownPod, ...]
    contested: tuple[str, ...]


@dataclass(frozen=True)
class _ClusterPart:
    """The ClusterNetworkPolicy side of one node's rule set."""

    policies: tuple[NodeClusterPolicy, ...]
    set_names: frozenset[str]
    targeted: frozenset[str]
    # What they were made from: the policies' names in order, each one's sets, and
    # the node's sets by sameness (a part is patched where only some changed).
    names: tuple[str, ...] = ()
    sets_of: Mapping[str, frozenset[str]] = field(default_factory=dict)
    same: frozenset[str] = frozenset()


@dataclass
class _SetState:
    name: str
    selector: PeerSelector
    pod_selector: LabelSelector
    namespace_selector: LabelSelector | None
    users: set[str] = field(default_factory=set)
    # The namespaces it selects pods in (none listed for every namespace, see
    # Compiler._everywhere_sets).
    namespaces: set[str] = field(default_factory=set)
    buckets: dict[int, dict[str, PeerMember]] = field(default_factory=dict)
    size: int = 0
    # Buckets changed since the last flush; None means rebuild every shard.
    dirty: set[int] | None = None

    node_selector: LabelSelector | None = None

    def wants(self, pod: Pod) -> PeerMember | None:
        """The member ``pod`` would be, if the set selects it."""
        if self.node_selector is not None:
            return None  # a node set holds Nodes, never pods
        if not self.pod_selector.matches(pod.labels):
            return None
        named = self.selector.named_port
        if named is None:
            return PeerMember(pod.key, pod.ips)
        number = pod.named_port(named.name, named.protocol)
        return None if number is None else PeerMember(pod.key, pod.ips, number)


@dataclass(frozen=True)
class Changes:
    """What a flush changed: new values, or None for deleted objects.

    ``peer_sets`` is keyed by shard name (``<set>-<shard>``).
    """

    nodes: Mapping[str, NodeRuleSet | None]
    peer_sets: Mapping[str, PeerSet | None]

    def __bool__(self) -> bool:
        return bool(self.nodes or self.peer_sets)


@dataclass(frozen=True)
class CompiledCluster:
    """Every node's rule set and every peer-set shard, sorted by name."""

    node_rule_sets: Mapping[str, NodeRuleSet]
    peer_sets: Mapping[str, PeerSet]

    def shards(self, set_name: str) -> tuple[PeerSet, ...]:
        """The shards of one set, in shard order."""
        found = [ps for ps in self.peer_sets.values() if ps.set_name == set_name]
        return tuple(sorted(found, key=lambda ps: ps.shard))

    def by_set(self) -> dict[str, tuple[PeerSet, ...]]:
        """Shards grouped by set name."""
        out: dict[str, list[PeerSet]] = {}
        for ps in self.peer_sets.values():
            out.setdefault(ps.set_name, []).append(ps)
        return {k: tuple(sorted(v, key=lambda ps: ps.shard)) for k, v in sorted(out.items())}


_member_pod = operator.attrgetter("pod")


def _bucket(key: str) -> int:
    return zlib.crc32(key.encode()) % _BUCKETS


class Compiler:
    """Incremental compiler over an index of pods, namespaces and policies.

    Not thread-safe; the controller serialises events into it.
    """

    def __init__(self, shard_size: int = DEFAULT_SHARD_SIZE) -> None:
        if shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        self.shard_size = shard_size
        self._pods: dict[str, Pod] = {}
        self._pod_index = LabelIndex()  # selectable pods only
        self._ns_pods: dict[str, set[str]] = {}  # selectable pods by namespace
        self._node_pods: dict[str, set[str]] = {}  # selectable pods by node
        # Selectable pods by container port (name, protocol), with its number: a set
        # of a named port is filled from the few pods declaring it, not from them all.
        self._port_pods: dict[tuple[str, str], dict[str, int]] = {}
        self._node_refs: dict[str, int] = {}  # every pod counts for its node
        self._declared_nodes: set[str] = set()
        self._ns_declared: dict[str, Namespace] = {}
        self._ns_index = LabelIndex()  # every known namespace
        self._policies: dict[str, _PolicyState] = {}
        self._ns_policies: dict[str, set[str]] = {}
        self._pod_policies: dict[str, set[str]] = {}
        self._sets: dict[str, _SetState] = {}
        self._ns_sets: dict[str, set[str]] = {}  # namespace -> sets whose scope has it
        self._nssel_sets: set[str] = (
            set()
        )  # sets with a namespace selector, but not every namespace
        # Sets whose namespace selector is empty (every namespace): in no _ns_sets entry,
        # not among _nssel_sets, and with no list of namespaces (_SetState.namespaces).
        self._everywhere_sets: set[str] = set()
        self._dirty_nodes: set[str] = set()
        self._dirty_sets: set[str] = set()
        self._node_out: dict[str, NodeRuleSet] = {}
        self._set_out: dict[str, dict[int, PeerSet]] = {}
        self._local_cache: dict[str, tuple[Pod, LocalPod]] = {}
        # A pod's member of the sets without a named port, and its bucket: one object
        # for every set it is in (kept while the pod is the same object).
        self._member_cache: dict[str, tuple[Pod, PeerMember, int]] = {}
        # Pods come in raw; the ownership rule decides which addresses each owns.
        self._ownership = OwnershipTracker()
        self._node_contested: dict[str, dict[str, tuple[str, ...]]] = {}
        # ClusterNetworkPolicies, their subjects, and the Nodes for `nodes` peers.
        self._cnps: dict[str, _ClusterPolicyState] = {}
        # Every CNP's name in evaluation order; None when a CNP came, went or changed.
        self._cnp_order: list[str] | None = None
        self._ns_cnps: dict[str, set[str]] = {}  # namespace -> CNPs whose subject has it
        self._nodes: dict[str, NodeInfo] = {}
        self._node_sets: set[str] = set()  # sets of Nodes (node_selector)
        # A node's rule set is built from two parts, each rebuilt only when dirty: the
        # NetworkPolicy part (and known pods, contested addresses) and the CNP part.
        # A CNP event then rebuilds the CNP part of its subjects' nodes, reusing the
        # NodeClusterPolicy of every other CNP there.
        self._node_cnp_pods: dict[str, dict[str, set[str]]] = {}  # node -> CNP -> subjects
        self._ncp_cache: dict[tuple[str, str], NodeClusterPolicy] = {}
        # The sets an IsolationPolicy's rules by sameness use on a node (its subjects'
        # values): node -> policy key -> sets. The node's union (_same_held) counts
        # once in _same_refs (set -> nodes holding it), however many use it; a set
        # held by a node has the user _SAME_USER.
        self._same_sets: dict[str, dict[str, frozenset[str]]] = {}
        self._same_held: dict[str, frozenset[str]] = {}
        self._same_refs: Counter[str] = Counter()
        self._same_set_cache = SameSets()
        # One memo per distinct list of rules by sameness, whatever the policies.
        self._memos: dict[SamenessRules, SamenessMemo] = {}
        self._same_subjects = SameSubjects()
        self._dirty_cnp_nodes: set[str] = set()
        # Nodes whose subjects of cluster policies changed: the others keep their
        # cluster part's targeted pods (a CNP's rule edit does not move a subject).
        self._resubjected_nodes: set[str] = set()
        # Per node, the cluster policies whose NodeClusterPolicy was forgotten since
        # its cluster part was built: a part is patched at those, not rebuilt.
        self._stale_ncps: dict[str, set[str]] = {}
        self._base_parts: dict[str, _BasePart] = {}
        self._cnp_parts: dict[str, _ClusterPart] = {}
        # Nodes whose pods changed since the last flush: the others may keep their
        # rule set's LocalPods when the same pods are targeted.
        self._pods_touched: set[str] = set()
        self._node_targeted: dict[str, frozenset[str]] = {}

    # ------------------------------------------------------------------ events

    def upsert(self, obj: ClusterInput) -> None:
        """Add or replace a Namespace, Pod, NetworkPolicy, ClusterNetworkPolicy or Node.

        A pod is given as read; the compiler applies :mod:`stockade.ownership`, so a
        pod that takes another's address changes what both pods own. A Node
        (:class:`~stockade.cnp.NodeInfo`) is also declared (see :meth:`upsert_node`).
        """
        if isinstance(obj, Pod):
            for pod in self._ownership.upsert(obj):
                self._set_pod(pod.key, pod)
        elif isinstance(obj, Namespace):
            self._set_namespace(obj.name, obj)
        elif isinstance(obj, ClusterNetworkPolicy):
            self._set_cluster_policy(obj.key, obj)
        elif isinstance(obj, NodeInfo):
            self.upsert_node(obj.name)
            self._set_node_info(obj.name, obj)
        else:
            self._set_policy(obj.key, obj)

    def delete(self, kind: str, key: str) -> None:
        """Remove an object by kind and key.

        Kinds: Pod, Namespace, NetworkPolicy, ClusterNetworkPolicy, IsolationPolicy
        (by name or key), Node (which is also undeclared, see :meth:`delete_node`).
        Namespaced keys are ``namespace/name``. Unknown keys are ignored.
        """
        if kind == "Pod":
            self._set_pod(key, None)
            for pod in self._ownership.delete(key):
                self._set_pod(pod.key, pod)
        elif kind == "Namespace":
            self._set_namespace(key, None)
        elif kind == "NetworkPolicy":
            self._set_policy(key, None)
        elif kind == "ClusterNetworkPolicy":
            self._set_cluster_policy(key, None)
        elif kind == IsolationPolicy.kind:
            # By name, or by key (IsolationPolicy/<name>: a name has no "/").
            prefixed = key if key.startswith(ISOLATION_PREFIX) else ISOLATION_PREFIX + key
            self._set_cluster_policy(prefixed, None)
        elif kind == "Node":
            self._set_node_info(key, None)
            self.delete_node(key)
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def ip_conflicts(self) -> list[IPClaim]:
        """Every address more than one pod claims, and its owner (None: contested)."""
        return self._ownership.conflicts()

    def ip_conflicts_of(self, key: str) -> list[IPClaim]:
        """The address conflicts the pod ``key`` takes part in."""
        return self._ownership.conflicts_of(key)

    def compiled_policy(self, key: str) -> CompiledPolicy | None:
        """The compiled form of the NetworkPolicy ``key`` as the compiler holds it.

        Callers that keep their own record of a policy read it here rather than
        compiling the policy a second time.
        """
        state = self._policies.get(key)
        return state.compiled if state is not None else None

    def upsert_node(self, name: str) -> None:
        """Declare a node, so it has a (possibly empty) rule set without pods."""
        if name not in self._declared_nodes:
            self._declared_nodes.add(name)
            self._dirty_nodes.add(name)

    def delete_node(self, name: str) -> None:
        """Forget a declared node (its rule set goes when no pod refers to it)."""
        if name in self._declared_nodes:
            self._declared_nodes.discard(name)
            self._dirty_nodes.add(name)

    # ------------------------------------------------------------------ pods

    def _set_pod(self, key: str, pod: Pod | None) -> None:
        old = self._pods.get(key)
        if old == pod:
            return
        if pod is None:
            del self._pods[key]
            self._local_cache.pop(key, None)
            self._member_cache.pop(key, None)
        else:
            self._pods[key] = pod
        for changed in (old, pod):
            if changed is not None:
                self._pods_touched.add(changed.node_name)
        if old is not None:
            self._node_ref(old.node_name, -1)
            if old.selectable:
                self._unindex_pod(old)
        if pod is not None:
            self._node_ref(pod.node_name, +1)
            if pod.selectable:
                self._know_namespace(pod.namespace)
                self._index_pod(pod)
        self._contest(key, old, pod)
        if _known_address(old) != _known_address(pod):
            # The node's list of known pods changes (see NodeRuleSet.known_pods).
            for changed in (old, pod):
                if changed is not None and changed.selectable:
                    self._dirty_nodes.add(changed.node_name)
        current = pod or old
        assert current is not None  # both None was caught by old == pod
        namespace = current.namespace
        self._retarget_pod(key, namespace, old, pod)
        self._resubject_pod(key, namespace, old, pod)
        self._repeer_pod(key, namespace, old, pod)

    def _contest(self, key: str, old: Pod | None, pod: Pod | None) -> None:
        """Keep each node's contested addresses (denied both ways by its agent)."""
        before = (old.node_name, old.contested_ips) if old and old.contested_ips else None
        after = (pod.node_name, pod.contested_ips) if pod and pod.contested_ips else None
        if before == after:
            return
        if before is not None:
            by_pod = self._node_contested.get(before[0], {})
            by_pod.pop(key, None)
            if not by_pod:
                self._node_contested.pop(before[0], None)
            self._dirty_nodes.add(before[0])
        if after is not None:
            self._node_contested.setdefault(after[0], {})[key] = after[1]
            self._dirty_nodes.add(after[0])

    def _node_ref(self, node: str, delta: int) -> None:
        count = self._node_refs.get(node, 0) + delta
        if count:
            self._node_refs[node] = count
        else:
            self._node_refs.pop(node, None)
        if count in (0, 1):
            self._dirty_nodes.add(node)

    def _index_pod(self, pod: Pod) -> None:
        key = pod.key
        self._pod_index.add(key, pod.labels)
        self._ns_pods.setdefault(pod.namespace, set()).add(key)
        self._node_pods.setdefault(pod.node_name, set()).add(key)
        for cp in pod.named_ports:  # the first of each name wins, as in Pod.named_port
            self._port_pods.setdefault((cp.name, cp.protocol), {})[key] = cp.port

    def _unindex_pod(self, pod: Pod) -> None:
        key = pod.key
        self._pod_index.remove(key)
        _discard(self._ns_pods, pod.namespace, key)
        _discard(self._node_pods, pod.node_name, key)
        port_pods = self._port_pods
        for cp in pod.named_ports:
            numbers = port_pods.get((cp.name, cp.protocol))
            if numbers is not None:
                numbers.pop(key, None)
                if not numbers:
                    del port_pods[(cp.name, cp.protocol)]

    def _retarget_pod(self, key: str, namespace: str, old: Pod | None, pod: Pod | None) -> None:
        for pkey in self._ns_policies.get(namespace, ()):
            state = self._policies[pkey]
            was = key in state.targets
            now = (
                pod is not None and pod.selectable and state.policy.pod_selector.matches(pod.labels)
            )
            if was and now and _same_local(old, pod):
                continue
            if now:
                state.targets.add(key)
                self._pod_policies.setdefault(key, set()).add(pkey)
            elif was:
                state.targets.discard(key)
                _discard(self._pod_policies, key, pkey)
            if was and old is not None:
                self._dirty_nodes.add(old.node_name)
            if now and pod is not None:
                self._dirty_nodes.add(pod.node_name)

    def _resubject_pod(self, key: str, namespace: str, old: Pod | None, pod: Pod | None) -> None:
        """Keep the pod's place among the subjects of the ClusterNetworkPolicies."""
        for name in self._ns_cnps.get(namespace, ()):
            state = self._cnps[name]
            was = key in state.targets
            now = pod is not None and _subject_pod_matches(state.policy.subject, pod)
            self._mark_subject(state, key, was, now, old, pod)

    def _mark_subject(
        self,
        state: _ClusterPolicyState,
        key: str,
        was: bool,
        now: bool,
        old: Pod | None,
        pod: Pod | None,
    ) -> None:
        if was and now and _same_local(old, pod) and not _regroups(state, old, pod):
            return
        if not was and not now:
            return
        name = state.policy.key
        if now:
            state.targets.add(key)
        elif was:
            state.targets.discard(key)
        if was and old is not None:
            self._unsubject(old.node_name, name, key)
        if now and pod is not None:
            self._subject(pod.node_name, name, key)

    def _forget_ncp(self, node: str, cnp: str) -> None:
        """The NodeClusterPolicy of ``cnp`` on ``node`` must be made again."""
        self._ncp_cache.pop((node, cnp), None)
        self._stale_ncps.setdefault(node, set()).add(cnp)
        self._dirty_cnp_nodes.add(node)

    def _subject(self, node: str, cnp: str, pod: str) -> None:
        self._node_cnp_pods.setdefault(node, {}).setdefault(cnp, set()).add(pod)
        self._forget_ncp(node, cnp)
        self._resubjected_nodes.add(node)

    def _subject_all(self, cnp: str, keys: set[str]) -> None:
        """:meth:`_subject` for many pods at once (a new policy's subjects): each node
        is touched once, its subjects found by set intersection when there are many."""
        by_node: dict[str, set[str]] = {}
        if len(keys) > 4 * len(self._node_pods):
            for node, on_node in self._node_pods.items():
                here = on_node & keys
                if here:
                    by_node[node] = here
        else:
            pods = self._pods
            for key in keys:
                by_node.setdefault(pods[key].node_name, set()).add(key)
        node_cnp_pods = self._node_cnp_pods
        for node, members in by_node.items():
            node_cnp_pods.setdefault(node, {}).setdefault(cnp, set()).update(members)
            self._forget_ncp(node, cnp)
        self._resubjected_nodes.update(by_node)

    def _unsubject(self, node: str, cnp: str, pod: str) -> None:
        by_cnp = self._node_cnp_pods.get(node)
        if by_cnp is not None:
            _discard(by_cnp, cnp, pod)
            if not by_cnp:
                del self._node_cnp_pods[node]
        self._forget_ncp(node, cnp)
        self._resubjected_nodes.add(node)

    def _repeer_pod(self, key: str, namespace: str, old: Pod | None, pod: Pod | None) -> None:
        bucket = _bucket(key)
        for name in itertools.chain(self._ns_sets.get(namespace, ()), self._everywhere_sets):
            state = self._sets[name]
            members = state.buckets.get(bucket)
            before = members.get(key) if members else None
            after = state.wants(pod) if pod is not None and pod.selectable else None
            if before == after:
                continue
            self._put_member(state, bucket, key, after)

    def _put_member(
        self, state: _SetState, bucket: int, key: str, member: PeerMember | None
    ) -> None:
        members = state.buckets.setdefault(bucket, {})
        if key in members:
            state.size -= 1
            del members[key]
        if member is not None:
            members[key] = member
            state.size += 1
        if not members:
            del state.buckets[bucket]
        if state.dirty is not None:
            state.dirty.add(bucket)
        self._dirty_sets.add(state.name)

    # ------------------------------------------------------------------ namespaces

    def _namespace_labels(self, name: str) -> Namespace:
        return self._ns_declared.get(name) or Namespace.default(name)

    def _know_namespace(self, name: str) -> None:
        if name not in self._ns_index:
            self._relabel_namespace(name, self._namespace_labels(name))

    def _set_namespace(self, name: str, ns: Namespace | None) -> None:
        old = self._ns_declared.get(name)
        if old == ns:
            return
        if ns is None:
            del self._ns_declared[name]
        else:
            self._ns_declared[name] = ns
        effective = self._namespace_labels(name)
        if name in self._ns_index and self._ns_index.labels(name) == effective.labels:
            return
        self._relabel_namespace(name, effective)

    def _relabel_namespace(self, name: str, ns: Namespace) -> None:
        self._ns_index.remove(name)
        self._ns_index.add(name, ns.labels)
        self._rescope_cluster_policies(name, ns)
        scoped = self._ns_sets.setdefault(name, set())
        for set_name in self._nssel_sets:
            state = self._sets[set_name]
            assert state.namespace_selector is not None
            now = state.namespace_selector.matches(ns.labels)
            if now == (name in state.namespaces):
                continue
            if now:
                state.namespaces.add(name)
                scoped.add(set_name)
            else:
                state.namespaces.discard(name)
                scoped.discard(set_name)
            self._refill_namespace(state, name, now)

    def _rescope_cluster_policies(self, name: str, ns: Namespace) -> None:
        """A namespace's labels changed: which CNP subjects cover its pods."""
        for cnp_name, state in self._cnps.items():
            now = _subject_namespace_selector(state.policy.subject).matches(ns.labels)
            if now == (name in state.namespaces):
                if now and _isolating(state):
                    self._regroup_namespace(cnp_name, state, name)
                continue
            if now:
                state.namespaces.add(name)
                self._ns_cnps.setdefault(name, set()).add(cnp_name)
            else:
                state.namespaces.discard(name)
                _discard(self._ns_cnps, name, cnp_name)
            for key in self._ns_pods.get(name, ()):
                pod = self._pods[key]
                was = key in state.targets
                selected = now and _subject_pod_matches(state.policy.subject, pod)
                self._mark_subject(state, key, was, selected, pod, pod)

    def _regroup_namespace(self, key: str, state: _ClusterPolicyState, namespace: str) -> None:
        """An IsolationPolicy's subjects in a relabelled namespace: their nodes compile
        the policy again (the namespace's values may have changed)."""
        for pod in self._ns_pods.get(namespace, set()) & state.targets:
            node = self._pods[pod].node_name
            self._forget_ncp(node, key)

    def _refill_namespace(self, state: _SetState, namespace: str, include: bool) -> None:
        for key in self._ns_pods.get(namespace, ()):
            member = state.wants(self._pods[key]) if include else None
            bucket = _bucket(key)
            if state.buckets.get(bucket, {}).get(key) != member:
                self._put_member(state, bucket, key, member)

    # ------------------------------------------------------------------ policies

    def _set_policy(self, key: str, policy: NetworkPolicy | None) -> None:
        old = self._policies.get(key)
        if (old.policy if old is not None else None) == policy:
            return
        new: _PolicyState | None = None
        if policy is not None:
            compiled, selectors = compile_policy(policy)
            for name, selector in selectors.items():
                self._acquire_set(name, selector, key)
            within = self._ns_pods.get(policy.namespace, set())
            targets = self._pod_index.select(policy.pod_selector, within) if within else set()
            new = _PolicyState(policy, compiled, frozenset(selectors), targets)
            self._policies[key] = new
            self._ns_policies.setdefault(policy.namespace, set()).add(key)
        else:
            del self._policies[key]
        if old is not None:
            if new is None or new.policy.namespace != old.policy.namespace:
                _discard(self._ns_policies, old.policy.namespace, key)
            for name in old.sets - (new.sets if new else frozenset()):
                self._release_set(name, key)
            for pod in old.targets - (new.targets if new else set()):
                _discard(self._pod_policies, pod, key)
        if new is not None:
            pod_policies = self._pod_policies
            for pod in (new.targets - old.targets) if old else new.targets:
                found = pod_policies.get(pod)
                if found is None:
                    pod_policies[pod] = {key}
                else:
                    found.add(key)
        touched = (old.targets if old else set()) | (new.targets if new else set())
        pods = self._pods
        self._dirty_nodes.update([pods[p].node_name for p in touched])

    # ------------------------------------------------------------------ cluster policies

    def _set_cluster_policy(self, name: str, policy: ClusterNetworkPolicy | None) -> None:
        old = self._cnps.get(name)
        if (old.policy if old is not None else None) == policy:
            return
        # Set users share one namespace of keys; an IsolationPolicy's key has its kind.
        user = name if name.startswith(ISOLATION_PREFIX) else "ClusterNetworkPolicy/" + name
        new: _ClusterPolicyState | None = None
        if policy is not None:
            compiled, selectors = compile_cluster_policy(policy)
            for set_name, selector in selectors.items():
                self._acquire_set(set_name, selector, user)
            namespaces = self._ns_index.select(_subject_namespace_selector(policy.subject))
            targets = self._subjects(policy.subject, namespaces)
            new = _ClusterPolicyState(
                policy,
                compiled,
                frozenset(selectors),
                namespaces,
                targets,
                self._acquire_memo(name, policy),
            )
            self._cnps[name] = new
            self._cnp_order = None
        else:
            del self._cnps[name]
            self._cnp_order = None
        kept = new.sameness if new is not None else None
        if old is not None and old.sameness is not None and old.sameness is not kept:
            self._release_memo(name, old.sameness)
        old_ns = old.namespaces if old else set()
        new_ns = new.namespaces if new else set()
        for ns in old_ns - new_ns:
            _discard(self._ns_cnps, ns, name)
        for ns in new_ns - old_ns:
            self._ns_cnps.setdefault(ns, set()).add(name)
        old_targets = old.targets if old else set()
        new_targets = new.targets if new else set()
        if old is not None:
            for set_name in old.sets - (new.sets if new else frozenset()):
                self._release_set(set_name, user)
        for pod in old_targets - new_targets:
            self._unsubject(self._pods[pod].node_name, name, pod)
        added = new_targets - old_targets if old_targets else new_targets
        if added:
            self._subject_all(name, added)
        if (
            old is not None
            and new is not None
            and (old.compiled != new.compiled or _isolating(new))
        ):
            # Same subjects, new rules: their nodes get the new compiled policy (an
            # IsolationPolicy's rules by sameness are compiled on each node).
            for node in {self._pods[p].node_name for p in old_targets & new_targets}:
                self._forget_ncp(node, name)

    def _acquire_memo(self, name: str, policy: ClusterNetworkPolicy) -> SamenessMemo | None:
        """The memo of ``policy``'s rules by sameness (None: it has none), shared with
        the policies that have the same rules; taken before the policy's last version
        lets it go, so an edit that keeps them keeps what it knows."""
        written = sameness_rules(policy) if isinstance(policy, IsolationPolicy) else ()
        if not written:
            return None
        memo = self._memos.get(written)
        if memo is None:
            memo = self._memos[written] = SamenessMemo(written, self._same_set_cache)
        memo.users.add(name)
        return memo

    def _release_memo(self, name: str, memo: SamenessMemo) -> None:
        """``name`` (its last version) no longer uses ``memo``; dropped with its last user."""
        memo.users.discard(name)
        if not memo.users:
            del self._memos[memo.written]

    def _subjects(self, subject: Subject, namespaces: set[str]) -> set[str]:
        """The selectable pods a subject selects, among the given namespaces."""
        within: set[str] = set()
        for ns in namespaces:
            within |= self._ns_pods.get(ns, set())
        if not within:
            return within
        if subject.namespaces is not None:
            return within
        assert subject.pods is not None
        return self._pod_index.select(subject.pods.pod_selector, within)

    def _set_node_info(self, name: str, info: NodeInfo | None) -> None:
        """A Node's labels or addresses changed: the node sets that hold it follow."""
        if self._nodes.get(name) == info:
            return
        if info is None:
            self._nodes.pop(name, None)
        else:
            self._nodes[name] = info
        bucket = _bucket(name)
        for set_name in self._node_sets:
            state = self._sets[set_name]
            before = state.buckets.get(bucket, {}).get(name)
            after = _node_member(state, info)
            if before != after:
                self._put_member(state, bucket, name, after)

    def _acquire_set(self, name: str, selector: PeerSelector, user: str) -> None:
        state = self._sets.get(name)
        if state is None:
            state = self._create_set(name, selector)
        state.users.add(user)

    def _create_set(self, name: str, selector: PeerSelector) -> _SetState:
        if selector.node_selector is not None:
            return self._create_node_set(name, selector)
        ns_sel = (
            None if selector.namespace_selector is None else _selector(selector.namespace_selector)
        )
        state = _SetState(name, selector, _selector(selector.pod_selector), ns_sel)
        self._sets[name] = state
        if selector.namespace_selector == ():
            # Every namespace, known or to come: not listed, and left out of namespace
            # events (a namespace is known before its first pod, so no pod is missed).
            self._everywhere_sets.add(name)
            self._fill(state, self._pod_index.select(state.pod_selector))
        else:
            if ns_sel is None:
                assert selector.namespace is not None
                state.namespaces = {selector.namespace}
            else:
                self._nssel_sets.add(name)
                state.namespaces = self._ns_index.select(ns_sel)
            for ns in state.namespaces:
                self._ns_sets.setdefault(ns, set()).add(name)
            self._fill(state, self._initial_members(state))
        state.dirty = None
        self._dirty_sets.add(name)
        return state

    def _fill(self, state: _SetState, keys: set[str]) -> None:
        """Put the members of a new pod set in place: ``keys`` match its pod selector.

        What :meth:`_SetState.wants` decides, without asking the selector again.
        """
        named = state.selector.named_port
        pods, buckets, members = self._pods, state.buckets, self._member_cache
        if named is not None:
            self._fill_named(state, keys, named)
            return
        for key in keys:
            pod = pods[key]
            cached = members.get(key)
            if cached is None or cached[0] is not pod:
                cached = members[key] = (pod, PeerMember(key, pod.ips), _bucket(key))
            _, member, bucket = cached
            found = buckets.get(bucket)
            if found is None:
                buckets[bucket] = {key: member}
            else:
                found[key] = member
        state.size = sum(len(members) for members in buckets.values())

    def _fill_named(self, state: _SetState, keys: set[str], named: NamedPortRef) -> None:
        """:meth:`_fill` for a set of a named port: a member of its own for each pod
        declaring the port (the selector is mostly every pod, and few declare it)."""
        pods, buckets = self._pods, state.buckets
        declared = self._port_pods.get((named.name, named.protocol), {})
        # Walk the smaller side: the declaring pods, or the selected ones.
        if len(declared) <= len(keys):
            found = [(key, number) for key, number in declared.items() if key in keys]
        else:
            found = [(key, declared[key]) for key in keys if key in declared]
        for key, number in found:
            buckets.setdefault(_bucket(key), {})[key] = PeerMember(key, pods[key].ips, number)
        state.size = sum(len(members) for members in buckets.values())

    def _create_node_set(self, name: str, selector: PeerSelector) -> _SetState:
        assert selector.node_selector is not None
        node_sel = _selector(selector.node_selector)
        state = _SetState(name, selector, EVERYTHING, None, node_selector=node_sel)
        self._sets[name] = state
        self._node_sets.add(name)
        for node_name, info in self._nodes.items():
            member = _node_member(state, info)
            if member is not None:
                state.buckets.setdefault(_bucket(node_name), {})[node_name] = member
                state.size += 1
        state.dirty = None
        self._dirty_sets.add(name)
        return state

    def _initial_members(self, state: _SetState) -> set[str]:
        if len(state.namespaces) == 1:
            (ns,) = state.namespaces
            within = self._ns_pods.get(ns)
            return self._pod_index.select(state.pod_selector, within) if within else set()
        estimate = self._pod_index.estimate(state.pod_selector)
        in_scope, ns_pods = 0, self._ns_pods
        for ns in state.namespaces:
            in_scope += len(ns_pods.get(ns, ()))
            if in_scope > estimate:
                break
        if in_scope <= estimate:
            # Fewer pods in the selected namespaces than the selector's best index
            # entry: select among them.
            scope: set[str] = set()
            for ns in state.namespaces:
                scope |= self._ns_pods.get(ns, set())
            return self._pod_index.select(state.pod_selector, scope) if scope else scope
        chosen = self._pod_index.select(state.pod_selector)
        pods = self._pods
        return {k for k in chosen if pods[k].namespace in state.namespaces}

    def _release_set(self, name: str, user: str) -> None:
        state = self._sets[name]
        state.users.discard(user)
        if state.users:
            return
        del self._sets[name]
        self._nssel_sets.discard(name)
        self._node_sets.discard(name)
        if name in self._everywhere_sets:
            self._everywhere_sets.discard(name)
        else:
            for ns in state.namespaces:
                _discard(self._ns_sets, ns, name)
        self._dirty_sets.add(name)

    # ------------------------------------------------------------------ outputs

    def flush(self) -> Changes:
        """Rebuild what events made dirty; report only what really changed."""
        node_changes: dict[str, NodeRuleSet | None] = {}
        for node in sorted(self._dirty_nodes | self._dirty_cnp_nodes):
            built = self._build_node(node)
            if built != self._node_out.get(node):
                node_changes[node] = built
                if built is None:
                    self._node_out.pop(node, None)
                else:
                    self._node_out[node] = built
        self._dirty_nodes.clear()
        self._dirty_cnp_nodes.clear()
        self._pods_touched.clear()
        set_changes: dict[str, PeerSet | None] = {}
        for name in sorted(self._dirty_sets):
            self._flush_set(name, set_changes)
        self._dirty_sets.clear()
        return Changes(node_changes, set_changes)

    def result(self) -> CompiledCluster:
        """Flush, then every current output, sorted by name."""
        self.flush()
        shards = {ps.name: ps for by_shard in self._set_out.values() for ps in by_shard.values()}
        return CompiledCluster(dict(sorted(self._node_out.items())), dict(sorted(shards.items())))

    def _build_node(self, node: str) -> NodeRuleSet | None:
        if node not in self._node_refs and node not in self._declared_nodes:
            self._base_parts.pop(node, None)
            self._cnp_parts.pop(node, None)
            self._resubjected_nodes.discard(node)
            self._stale_ncps.pop(node, None)
            self._node_targeted.pop(node, None)
            self._keep_same_sets(node, {})
            return None
        old_base = base = self._base_parts.get(node)
        if base is None or node in self._dirty_nodes:
            base = self._base_parts[node] = self._build_base(node)
        old_cluster = cluster = self._cnp_parts.get(node)
        if cluster is None or node in self._dirty_cnp_nodes:
            cluster = self._cnp_parts[node] = self._build_cluster_part(node)
        targeted = base.targeted | cluster.targeted
        previous = self._node_out.get(node)
        if (
            previous is not None
            and node not in self._pods_touched
            and self._node_targeted.get(node) == targeted
        ):
            pods = previous.pods
        else:
            pods = tuple(self._local_pod(k) for k in sorted(targeted))
        self._node_targeted[node] = targeted
        if (
            previous is not None
            and old_base is not None
            and old_cluster is not None
            and base.set_names == old_base.set_names
            and cluster.set_names == old_cluster.set_names
        ):
            # The output was made from the old parts: the same names, already sorted.
            peer_sets = previous.peer_sets
        else:
            peer_sets = tuple(sorted(base.set_names | cluster.set_names))
        return NodeRuleSet(
            node,
            pods,
            base.policies,
            peer_sets,
            known_pods=base.known,
            contested_ips=base.contested,
            cluster_policies=cluster.policies,
        )

    def _build_base(self, node: str) -> _BasePart:
        """The NetworkPolicy part of a node's rule set, with its known and contested pods."""
        # Pods in order, so each policy's targets come out sorted.
        local = sorted(self._node_pods.get(node, ()))
        pod_policies = self._pod_policies
        by_policy: dict[str, list[str]] = {}
        targeted: list[str] = []
        for pod in local:
            pkeys = pod_policies.get(pod)
            if pkeys:
                targeted.append(pod)
                for pkey in pkeys:
                    found = by_policy.get(pkey)
                    if found is None:
                        by_policy[pkey] = [pod]
                    else:
                        found.append(pod)
        states = self._policies
        policies: list[NodePolicy] = []
        set_names: set[str] = set()
        for pkey in sorted(by_policy):
            state = states[pkey]
            policies.append(NodePolicy(state.compiled, tuple(by_policy[pkey])))
            set_names.update(state.sets)
        pods = self._pods
        known = tuple([KnownPod(k, pods[k].ips) for k in local])
        contested = sorted(
            {ip for ips in self._node_contested.get(node, {}).values() for ip in ips}
        )
        return _BasePart(
            tuple(policies), frozenset(set_names), frozenset(targeted), known, tuple(contested)
        )

    def _build_cluster_part(self, node: str) -> _ClusterPart:
        """The CNPs selecting a pod of ``node``, in evaluation order, with their subjects.

        A CNP whose rules and subjects here did not change keeps its NodeClusterPolicy;
        when the node has the same CNPs in the same order, the last part is patched
        where some were forgotten instead of walked whole (a CNP edit touches ~80
        nodes of ~145 CNPs each).
        """
        by_cnp = self._node_cnp_pods.get(node, {})
        cnps = self._cnps
        same_sets = dict(self._same_sets.get(node, {}))
        fresh: list[SamenessMemo] = []  # the memos of the variants made here
        for memo in self._memos.values():
            memo.trim()
        known = _NodeSameness()  # the expansions by sameness made here
        order = self._cnp_order
        if order is None:
            order = self._cnp_order = sorted(cnps, key=lambda n: cnps[n].order)
        # The cluster's order, filtered: cheaper than sorting each node's CNPs anew.
        names = tuple([n for n in order if n in by_cnp])
        old = self._cnp_parts.get(node)
        stale = self._stale_ncps.pop(node, set())
        patched = old is not None and old.names == names
        changed: list[str] = []
        if old is not None and patched:
            entries = list(old.policies)
            changed = [n for n in stale if n in by_cnp]
            for name in changed:
                entries[names.index(name)] = self._node_cluster_policy(
                    node, name, by_cnp, same_sets, fresh, known
                )
        else:
            cache = self._ncp_cache
            entries = []
            for name in names:
                ncp = cache.get((node, name))
                if ncp is None:
                    ncp = self._node_cluster_policy(node, name, by_cnp, same_sets, fresh, known)
                entries.append(ncp)
        self._keep_same_sets(node, {k: v for k, v in same_sets.items() if k in by_cnp}, fresh)
        same = self._same_held.get(node, frozenset())
        if (
            old is not None
            and patched
            and same == old.same
            and all(cnps[n].sets >= old.sets_of[n] for n in changed)
        ):
            # Sets only added (or none changed): the old union grows by them.
            set_names = old.set_names.union(*[cnps[n].sets for n in changed])
            sets_of = (
                {**old.sets_of, **{n: cnps[n].sets for n in changed}} if changed else old.sets_of
            )
        else:
            sets_of = {n: cnps[n].sets for n in names}
            set_names = frozenset().union(*sets_of.values(), same)
        # The node's subjects of any cluster policy (by_cnp holds only this node's),
        # made again only when one of them moved.
        if old is None or node in self._resubjected_nodes:
            targeted = frozenset().union(*by_cnp.values())
            self._resubjected_nodes.discard(node)
        else:
            targeted = old.targeted
        return _ClusterPart(tuple(entries), set_names, targeted, names, sets_of, same)

    def _node_cluster_policy(
        self,
        node: str,
        name: str,
        by_cnp: Mapping[str, set[str]],
        same_sets: dict[str, frozenset[str]],
        fresh: list[SamenessMemo],
        known: _NodeSameness,
    ) -> NodeClusterPolicy:
        """``name`` as ``node`` enforces it, made and cached (an IsolationPolicy's
        variants expanded: its sets in ``same_sets``, its memo in ``fresh``, what
        the node expanded so far in ``known``)."""
        state = self._cnps[name]
        targets = tuple(sorted(by_cnp[name]))
        memo = state.sameness
        if memo is None:
            same_sets.pop(name, None)  # an edit may have taken its rules by sameness
            ncp = NodeClusterPolicy(state.compiled, targets)
        else:
            # IsolationPolicies with the same rules by sameness and the same subjects
            # here (most select every tenant pod) see the same variants.
            found = known.expanded.get((memo, targets))
            if found is None:
                found = known.expanded[(memo, targets)] = self._expand_here(memo, targets, known)
            same_sets[name], rules, variant_of = found
            fresh.append(memo)
            ncp = NodeClusterPolicy(state.compiled, targets, rules, variant_of)
        self._ncp_cache[(node, name)] = ncp
        return ncp

    def _expand_here(
        self, memo: SamenessMemo, targets: tuple[str, ...], known: _NodeSameness
    ) -> _Expanded:
        """The variants of ``memo``'s rules for a node's subjects ``targets``."""
        subjects, subject = known.subjects, self._same_subject
        variants, variant_of = expand_isolation(
            memo, [subjects.get(p) or subject(p, subjects) for p in targets]
        )
        names = frozenset().union(*[v.names for v in variants])
        return names, tuple([v.rules for v in variants]), variant_of

    def _same_subject(self, key: str, known: dict[str, SameSubject]) -> SameSubject:
        """The pod ``key`` as a subject of rules by sameness, kept in ``known``."""
        pod = self._pods[key]
        # The index holds every known namespace's labels, one map each.
        found = known[key] = self._same_subjects.of(pod, self._ns_index.labels(pod.namespace))
        return found

    def _keep_same_sets(
        self, node: str, keep: Mapping[str, frozenset[str]], fresh: Sequence[SamenessMemo] = ()
    ) -> None:
        """The sets of the IsolationPolicies compiled for ``node`` are now ``keep``
        (policy key -> set names): acquire what the node did not hold, release what
        it no longer uses. A set new to the compiler is made from its selector, in
        the memos of the policies just expanded here (``fresh``).

        Acquired before released, so a set that stays is never rebuilt.
        """
        held = self._same_held.get(node, frozenset())
        now = frozenset().union(*keep.values())
        refs, sets = self._same_refs, self._sets
        added = now - held if held else now
        # Counted in bulk; only a set no node held yet is taken (~600 a node, each
        # held by ~150 nodes at the isolation scale). Not added.difference(refs): a
        # Counter is no exact dict, and the difference would walk all of it.
        for set_name in [n for n in added if n not in refs]:
            state = sets.get(set_name)
            if state is None:
                selector = next(m.selectors[set_name] for m in fresh if set_name in m.selectors)
                state = self._create_set(set_name, selector)
            state.users.add(_SAME_USER)
        refs.update(added)
        gone = held - now
        if gone:
            refs.subtract(gone)
            for set_name in gone:
                if not refs[set_name]:
                    del refs[set_name]
                    self._release_set(set_name, _SAME_USER)
        if keep:
            self._same_sets[node] = dict(keep)
            self._same_held[node] = now
        else:
            self._same_sets.pop(node, None)
            self._same_held.pop(node, None)

    def _local_pod(self, key: str) -> LocalPod:
        pod = self._pods[key]
        cached = self._local_cache.get(key)
        if cached is None or cached[0] is not pod:
            cached = (pod, _local_pod(pod))
            self._local_cache[key] = cached
        return cached[1]

    def _flush_set(self, name: str, changes: dict[str, PeerSet | None]) -> None:
        previous = self._set_out.get(name, {})
        state = self._sets.get(name)
        if state is None:
            for ps in previous.values():
                changes[ps.name] = None
            self._set_out.pop(name, None)
            return
        count = self._shard_count(state)
        if count == 1:
            self._flush_one_shard(state, previous, changes)
            return
        if count != len(previous) or state.dirty is None:
            rebuild = set(range(count))
        else:
            rebuild = {b % count for b in state.dirty}
        current = dict(previous) if count == len(previous) else {}
        grouped: dict[int, list[PeerMember]] = {shard: [] for shard in rebuild}
        for bucket, members in state.buckets.items():
            wanted = grouped.get(bucket % count)
            if wanted is not None:
                wanted.extend(members.values())
        for shard in sorted(rebuild):
            ps = self._build_shard(state, shard, count, grouped[shard])
            current[shard] = ps
            if previous.get(shard) != ps:
                changes[ps.name] = ps
        for shard, ps in previous.items():
            if shard >= count:
                changes[ps.name] = None
        self._set_out[name] = current
        state.dirty = set()

    def _flush_one_shard(
        self, state: _SetState, previous: dict[int, PeerSet], changes: dict[str, PeerSet | None]
    ) -> None:
        """_flush_set for a set that fits one shard (most sets): no grouping by shard."""
        if state.dirty is not None and not state.dirty and len(previous) == 1:
            return  # nothing moved since the last flush
        members = [member for bucket in state.buckets.values() for member in bucket.values()]
        shard = self._build_shard(state, 0, 1, members)
        if previous.get(0) != shard:
            changes[shard.name] = shard
        for number, gone in previous.items():
            if number >= 1:
                changes[gone.name] = None
        self._set_out[state.name] = {0: shard}
        state.dirty = set()

    def _shard_count(self, state: _SetState) -> int:
        count = 1
        if state.size <= self.shard_size:
            return count
        while count < _BUCKETS:
            sizes = [0] * count
            for bucket, members in state.buckets.items():
                sizes[bucket % count] += len(members)
            if max(sizes) <= self.shard_size:
                break
            count *= 2
        return count

    @staticmethod
    def _build_shard(
        state: _SetState, shard: int, count: int, members: list[PeerMember]
    ) -> PeerSet:
        members.sort(key=_member_pod)
        return PeerSet(
            name=f"{state.name}-{shard}",
            set_name=state.name,
            selector=state.selector,
            shard=shard,
            shards=count,
            members=tuple(members),
        )


def _isolating(state: _ClusterPolicyState) -> bool:
    """The policy is an IsolationPolicy (its nodes compile its rules for their subjects)."""
    return isinstance(state.policy, IsolationPolicy)


def _regroups(state: _ClusterPolicyState, old: Pod | None, pod: Pod | None) -> bool:
    """A subject of an IsolationPolicy changed labels: it may change value groups."""
    return _isolating(state) and (old is None or pod is None or old.labels != pod.labels)


def _subject_pod_matches(subject: Subject, pod: Pod) -> bool:
    """The pod half of a subject (its namespace already matches)."""
    if not pod.selectable:
        return False
    return subject.pods is None or subject.pods.pod_selector.matches(pod.labels)


def _node_member(state: _SetState, info: NodeInfo | None) -> PeerMember | None:
    """The member a Node is in a node set: its addresses, if its labels match."""
    if info is None or not info.addresses or state.node_selector is None:
        return None
    if not state.node_selector.matches(info.labels):
        return None
    return PeerMember(info.name, info.addresses)


def _same_local(old: Pod | None, new: Pod | None) -> bool:
    """Whether a still-targeted pod looks the same to its node's rule set."""
    return (
        old is not None
        and new is not None
        and old.node_name == new.node_name
        and old.ips == new.ips
        and old.ports == new.ports
    )


def _known_address(pod: Pod | None) -> tuple[str, str, tuple[str, ...]] | None:
    """What NodeRuleSet.known_pods says of a pod: its node and addresses, if selectable."""
    if pod is None or not pod.selectable:
        return None
    return (pod.node_name, pod.key, pod.ips)


def _local_pod(pod: Pod) -> LocalPod:
    if not pod.ports:
        return LocalPod(pod.key, pod.ips)
    return LocalPod(pod.key, pod.ips, _port_specs(pod.ports))


# Cached by the declared ports: every replica of a Deployment declares the same,
# and the specs are immutable, so they are shared.
@functools.lru_cache(maxsize=8192)
def _port_specs(ports: tuple[ContainerPort, ...]) -> tuple[ContainerPortSpec, ...]:
    """A local pod's named ports (see :attr:`Pod.named_ports`), sorted."""
    return tuple(
        sorted(
            (ContainerPortSpec(p.name, p.port, p.protocol) for p in named_ports_of(ports)),
            key=lambda p: (p.name, p.protocol, p.port),
        )
    )


def _discard(mapping: dict[str, set[str]], key: str, value: str) -> None:
    values = mapping.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del mapping[key]


def compile_cluster(
    source: Cluster | Iterable[ClusterInput], shard_size: int = DEFAULT_SHARD_SIZE
) -> CompiledCluster:
    """Compile a whole snapshot: the rule sets of every node and every peer set.

    The cyclic garbage collector is held off meanwhile (:mod:`stockade.gcpause`).
    """
    objects = source.objects() if isinstance(source, Cluster) else source
    with collector_paused():
        compiler = Compiler(shard_size)
        for obj in objects:
            compiler.upsert(obj)
        result = compiler.result()
        # Its state goes inside the block: what the block made moves to the oldest
        # generation when it ends (stockade.gcpause), where only the outputs belong.
        del compiler
    return result
