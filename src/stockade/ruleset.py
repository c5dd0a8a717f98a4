"""The rule-set format: the contract between the controller and the agents.

A :class:`NodeRuleSet` holds, for one node, the policies that select at least one
of its pods: the local targets, the compiled rules, and references to
:class:`PeerSet` objects by name. PeerSets are shared by every node that needs them,
named by the content of their selector, and split into shards of bounded size, the
way EndpointSlices split a Service's endpoints.

The CRDs (``NodeRuleSet`` and ``PeerSet`` in ``stockade.dev``) carry exactly these
models; :func:`node_rule_set_schema` and :func:`peer_set_schema` produce their
OpenAPI v3 schemas from the same classes, so there is one source of truth.

Everything here is plain data; ordering is canonical (sorted) so the same cluster
always serialises to the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from pydantic import ConfigDict, TypeAdapter
from pydantic.alias_generators import to_camel

GROUP = "stockade.dev"
VERSION = "v1alpha1"
FORMAT_VERSION = 2

# Serialised with camelCase keys, the way Kubernetes resources are written.
_CONFIG = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# What json.dumps(..., sort_keys=True, separators=(",", ":")) builds on every call:
# made once, since names and hashes are computed for every group, set and policy.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def stable_hash(payload: Any, length: int = 16) -> str:
    """A short hex digest of ``payload`` in canonical JSON (sorted keys)."""
    return text_hash(canonical_json(payload), length)


def text_hash(text: str, length: int = 16) -> str:
    """A short hex digest of ``text``, canonical JSON made by the caller."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True, slots=True)
class SelectorRequirement:
    """A label requirement: ``operator`` is In, NotIn, Exists or DoesNotExist."""

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NamedPortRef:
    """A container port name and protocol, resolved on each pod."""

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    name: str
    protocol: str


@dataclass(frozen=True, slots=True)
class PeerSelector:
    """What a PeerSet selects; its canonical JSON names the set.

    ``namespace`` fixes the namespace (a peer with only a podSelector); otherwise
    ``namespace_selector`` picks namespaces (empty: all). ``named_port`` restricts
    the set to pods that declare that port, and makes its members ``ip,port``.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    pod_selector: tuple[SelectorRequirement, ...] = ()
    namespace: str | None = None
    namespace_selector: tuple[SelectorRequirement, ...] | None = None
    named_port: NamedPortRef | None = None
    # A ClusterNetworkPolicy ``nodes`` peer: the set holds Nodes (not pods) whose
    # labels match, each member a node name and the IPs of its status.addresses.
    # Set, it excludes the pod fields.
    node_selector: tuple[SelectorRequirement, ...] | None = None


@dataclass(frozen=True, slots=True)
class PeerMember:
    """A pod in a PeerSet: its IPs, and the resolved number for a named-port set.

    In a node set (``PeerSelector.node_selector``) ``pod`` is the Node's name.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    pod: str
    ips: tuple[str, ...]
    port: int | None = None


@dataclass(frozen=True, slots=True)
class PeerSet:
    """One shard of a shared peer set.

    ``set_name`` is the name rules refer to; the object's ``name`` is
    ``<set_name>-<shard>``. An agent has the whole set once it holds ``shards``
    shards of the same ``set_name``.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    name: str
    set_name: str
    selector: PeerSelector
    shard: int
    shards: int
    members: tuple[PeerMember, ...]


@dataclass(frozen=True, slots=True)
class PortMatch:
    """A destination port match.

    Exactly one form: ``port`` (with ``end_port`` for a range), ``name`` (a named
    port, resolved on the destination pod), or neither (every port of
    ``protocol``). For egress rules a named port comes with ``named_port_set``:
    the PeerSet of every pod declaring it, whose ``ip,port`` members resolve it.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    protocol: str
    port: int | None = None
    end_port: int | None = None
    name: str | None = None
    named_port_set: str | None = None


@dataclass(frozen=True, slots=True)
class PeerMatch:
    """A peer: a PeerSet by name, or a CIDR minus exceptions (one of the two)."""

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    peer_set: str | None = None
    cidr: str | None = None
    excepts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """An allow rule: any of ``peers`` (empty: all) on any of ``ports`` (empty: all)."""

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    peers: tuple[PeerMatch, ...] = ()
    ports: tuple[PortMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A policy compiled independently of any node.

    ``ingress``/``egress`` is None when the policy does not isolate its targets in
    that direction; an empty tuple isolates and allows nothing.
    ``id`` is a short stable hash of ``namespace/name``, for chain and set names.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    name: str
    id: str
    ingress: tuple[CompiledRule, ...] | None
    egress: tuple[CompiledRule, ...] | None

    def peer_sets(self) -> set[str]:
        """Names of every PeerSet the rules refer to."""
        names: set[str] = set()
        for rules in (self.ingress or (), self.egress or ()):
            for rule in rules:
                names.update(p.peer_set for p in rule.peers if p.peer_set)
                names.update(p.named_port_set for p in rule.ports if p.named_port_set)
        return names


ADMIN_TIER = "Admin"
BASELINE_TIER = "Baseline"
TIER_ORDER = {ADMIN_TIER: 0, BASELINE_TIER: 1}
ACCEPT = "Accept"
DENY = "Deny"
PASS = "Pass"


@dataclass(frozen=True, slots=True)
class SameMatch:
    """Why a peer set of an IsolationPolicy rule matches: the sameness it stands for.

    ``peer_set`` is one of the rule's peer sets, ``reason`` the words for people
    (``same value of app (web)``, ``same namespace (team-a)``).
    """

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    peer_set: str
    reason: str


@dataclass(frozen=True, slots=True)
class TierRule:
    """One rule of a ClusterNetworkPolicy, compiled: ``action`` on a match.

    It matches when one of ``peers`` matches the far end (empty: every peer) and
    one of ``ports`` the destination (empty: all traffic). Empty peers happen only
    for a rule that fails closed (``fail_closed``: a Deny or Pass rule with a peer
    stockade does not enforce, compiled as "Deny all"); an Accept rule that fails
    closed matches nothing and is left out. ``index`` is the rule's position in the
    policy's ``ingress``/``egress`` list, ``name`` its optional name.

    ``same``: for an IsolationPolicy rule with peers by sameness, as one subject
    sees it (see :class:`SameRules`), the sameness each of its peer sets stands for.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    action: str
    index: int
    peers: tuple[PeerMatch, ...] = ()
    ports: tuple[PortMatch, ...] = ()
    name: str = ""
    fail_closed: bool = False
    same: tuple[SameMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class CompiledClusterPolicy:
    """A ClusterNetworkPolicy (or IsolationPolicy) compiled independently of any node.

    ``name`` is the policy's key: a ClusterNetworkPolicy's name, or
    ``IsolationPolicy/<name>``. ``tier`` is Admin or Baseline, ``priority`` 0..1000
    (lower first); rules keep the order written. ``id`` is a short stable hash of
    the name, for chain and set names.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    name: str
    id: str
    tier: str
    priority: int
    ingress: tuple[TierRule, ...] = ()
    egress: tuple[TierRule, ...] = ()

    @property
    def order(self) -> tuple[int, int, str, int]:
        """The evaluation order: tier, then priority, then name (equal priorities),
        then the ClusterNetworkPolicy before an IsolationPolicy of the same name.

        An IsolationPolicy's ``name`` is its key, ``IsolationPolicy/<name>`` (a
        ClusterNetworkPolicy's name has no ``/``).
        """
        _, slash, bare = self.name.rpartition("/")
        return (TIER_ORDER.get(self.tier, len(TIER_ORDER)), self.priority, bare, 1 if slash else 0)

    def peer_sets(self) -> set[str]:
        """Names of every PeerSet the rules refer to."""
        return _tier_rule_sets((*self.ingress, *self.egress))


@dataclass(frozen=True, slots=True)
class SameRules:
    """An IsolationPolicy's rules by sameness as some of its subjects see them.

    A rule with peers by sameness matches, for one subject, the sets of the far
    ends that share the subject's values (one set per value, shared by every
    subject with that value on every node). Subjects with the same values see the
    same rules, so a node's subjects share a few of these (one per distinct
    combination of values among them), and equal ones are one object in the
    compiler. A rule whose peers all need keys the subject lacks is left out.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    ingress: tuple[TierRule, ...] = ()
    egress: tuple[TierRule, ...] = ()

    def peer_sets(self) -> set[str]:
        """Names of every PeerSet the rules refer to."""
        return _tier_rule_sets((*self.ingress, *self.egress))


@dataclass(frozen=True, slots=True)
class NodeClusterPolicy:
    """A ClusterNetworkPolicy as one node enforces it: the rules and its local subjects.

    For an IsolationPolicy with rules by sameness, ``policy`` holds its other rules,
    ``variants`` the distinct :class:`SameRules` of the local subjects and
    ``variant_of`` which one each target sees (parallel to ``targets``); both are
    empty for a policy without rules by sameness. :meth:`for_subject` merges them.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    policy: CompiledClusterPolicy
    targets: tuple[str, ...]
    variants: tuple[SameRules, ...] = ()
    variant_of: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.variants and not self.variant_of:
            return
        if len(self.variant_of) != len(self.targets):
            raise ValueError(
                f"cluster policy {self.policy.name}: {len(self.variant_of)} variant indexes"
                f" for {len(self.targets)} targets"
            )
        # Bounds, not a test per target: the compiler makes ~750,000 of these at scale.
        of = self.variant_of
        if of and (min(of) < 0 or max(of) >= len(self.variants)):
            raise ValueError(
                f"cluster policy {self.policy.name}: a variant index outside"
                f" 0..{len(self.variants) - 1}"
            )

    def peer_sets(self) -> set[str]:
        """Names of every PeerSet the rules refer to, the variants' included."""
        return self.policy.peer_sets().union(*(v.peer_sets() for v in self.variants))

    def view(self, variant: SameRules | None) -> CompiledClusterPolicy:
        """The policy as the subjects of ``variant`` see it: its rules and the
        variant's, in the order written (None: the policy itself)."""
        if variant is None:
            return self.policy
        return replace(
            self.policy,
            ingress=by_index(self.policy.ingress, variant.ingress),
            egress=by_index(self.policy.egress, variant.egress),
        )

    def for_subject(self, pod: str) -> CompiledClusterPolicy:
        """The policy as the local subject ``pod`` sees it."""
        if not self.variants:
            return self.policy
        return self.view(self.variants[self.variant_of[self.targets.index(pod)]])

    def subjects_by_variant(self) -> list[tuple[SameRules | None, tuple[str, ...]]]:
        """The local subjects grouped by the variant they see, in variant order
        (one group with None for a policy without rules by sameness)."""
        if not self.variants:
            return [(None, self.targets)]
        members: list[list[str]] = [[] for _ in self.variants]
        for pod, index in zip(self.targets, self.variant_of, strict=True):
            members[index].append(pod)
        return [(v, tuple(m)) for v, m in zip(self.variants, members, strict=True) if m]


def _tier_rule_sets(rules: Iterable[TierRule]) -> set[str]:
    names: set[str] = set()
    for rule in rules:
        names.update(p.peer_set for p in rule.peers if p.peer_set)
        names.update(p.named_port_set for p in rule.ports if p.named_port_set)
    return names


def by_index(rules: tuple[TierRule, ...], same: tuple[TierRule, ...]) -> tuple[TierRule, ...]:
    """A policy's rules of one direction and a variant's, merged into the order written."""
    if not same:
        return rules
    if not rules:
        return same
    return tuple(sorted((*rules, *same), key=lambda r: r.index))


@dataclass(frozen=True, slots=True)
class ContainerPortSpec:
    """A local pod's declared port (for ingress named ports)."""

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    name: str
    port: int
    protocol: str


@dataclass(frozen=True, slots=True)
class LocalPod:
    """A pod on the node that some policy selects."""

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    name: str
    ips: tuple[str, ...]
    ports: tuple[ContainerPortSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class KnownPod:
    """A pod on the node that the rule set accounts for, selected by a policy or not.

    Agents running with ``--isolate-new-pods`` isolate any local pod (by name and
    address) that no NodeRuleSet lists yet, so a pod gets no traffic before its
    policies land.
    """

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    name: str
    ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodePolicy:
    """A policy as one node enforces it: the compiled rules and its local targets."""

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    policy: CompiledPolicy
    targets: tuple[str, ...]

    def peer_sets(self) -> set[str]:
        """Names of every PeerSet the rules refer to."""
        return self.policy.peer_sets()


@dataclass(frozen=True, slots=True)
class NodeRuleSet:
    """Everything one node's agent needs besides the PeerSets it names."""

    __pydantic_config__: ClassVar[ConfigDict] = _CONFIG
    node: str
    pods: tuple[LocalPod, ...]
    policies: tuple[NodePolicy, ...]
    peer_sets: tuple[str, ...]
    format_version: int = FORMAT_VERSION
    known_pods: tuple[KnownPod, ...] = ()
    # Local addresses several pods claim and none owns (stockade.ownership): the
    # agent denies all forwarded traffic from and to them.
    contested_ips: tuple[str, ...] = ()
    # ClusterNetworkPolicies selecting a local pod, in evaluation order (tier,
    # priority, name); their subjects are listed in ``pods`` like NetworkPolicy
    # targets, and their PeerSets in ``peer_sets``.
    cluster_policies: tuple[NodeClusterPolicy, ...] = ()


_NODE_ADAPTER: TypeAdapter[NodeRuleSet] = TypeAdapter(NodeRuleSet)
_PEER_ADAPTER: TypeAdapter[PeerSet] = TypeAdapter(PeerSet)


def node_rule_set_to_dict(rs: NodeRuleSet) -> dict[str, Any]:
    """The NodeRuleSet as the JSON-ready ``spec`` of its custom resource."""
    out: dict[str, Any] = _NODE_ADAPTER.dump_python(rs, mode="json", by_alias=True)
    return out


def node_rule_set_from_dict(raw: Any) -> NodeRuleSet:
    """Validate and parse a NodeRuleSet spec; raises ``pydantic.ValidationError``."""
    return _NODE_ADAPTER.validate_python(raw)


def peer_set_to_dict(ps: PeerSet) -> dict[str, Any]:
    """The PeerSet shard as the JSON-ready ``spec`` of its custom resource."""
    out: dict[str, Any] = _PEER_ADAPTER.dump_python(ps, mode="json", by_alias=True)
    return out


def peer_set_from_dict(raw: Any) -> PeerSet:
    """Validate and parse a PeerSet spec; raises ``pydantic.ValidationError``."""
    return _PEER_ADAPTER.validate_python(raw)


def node_rule_set_schema() -> dict[str, Any]:
    """JSON schema of a NodeRuleSet spec (pydantic's serialisation view)."""
    return _NODE_ADAPTER.json_schema(by_alias=True, mode="serialization")


def peer_set_schema() -> dict[str, Any]:
    """JSON schema of a PeerSet spec (pydantic's serialisation view)."""
    return _PEER_ADAPTER.json_schema(by_alias=True, mode="serialization")


def canonical_json(payload: Any) -> str:
    """Byte-stable JSON: sorted keys, no whitespace."""
    return _CANONICAL.encode(payload)
