"""ClusterNetworkPolicy (``policy.networking.k8s.io/v1alpha2``) and Node: model and parser.

The immutable model of the cluster-wide, tiered policy of kubernetes-sigs/
network-policy-api v0.2.0, and a strict parser that refuses what the API server
refuses with the CRD installed (its OpenAPI schema: required fields, enums,
bounds, ``maxItems``, ``min/maxProperties``, ``listType=set``, and its CEL rules),
listing every problem, as :func:`stockade.model.parse_policy` does for a
NetworkPolicy. Both channels are read: the experimental one adds the ``nodes`` and
``domainNames`` egress peers.

Also :class:`NodeInfo`, the little of a Node a ``nodes`` peer needs: its name,
labels and the IP addresses in ``status.addresses``.

Purely computational: no I/O. What the fields mean when traffic is judged is in
:mod:`stockade_lab.reference` (``allowed_with_tiers``) and ``docs/tiers.md``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from stockade.errors import FieldError, InvalidObjectError, ObjectRef
from stockade.model import (
    ClusterObject,
    IPNetwork,
    Labels,
    Pod,
    expected_string,
    key_path,
    object_ref,
    parse_ip,
    parse_metadata,
)
from stockade.safetext import short
from stockade.selectors import EVERYTHING, LabelSelector, parse_selector

API_VERSION = "policy.networking.k8s.io/v1alpha2"
KIND = "ClusterNetworkPolicy"
NODE_KIND = "Node"
NODE_API_VERSION = "v1"

ADMIN = "Admin"
BASELINE = "Baseline"
TIERS = (ADMIN, BASELINE)

ACCEPT = "Accept"
DENY = "Deny"
PASS = "Pass"
ACTIONS = (ACCEPT, DENY, PASS)

PRIORITY_MIN = 0
PRIORITY_MAX = 1000
MAX_RULES = 25  # ingress and egress, each
MAX_PEERS = 25  # from / to
MAX_PROTOCOLS = 25
MAX_NETWORKS = 25
MAX_DOMAIN_NAMES = 25
MAX_RULE_NAME = 100
MAX_CIDR_LENGTH = 43

# The protocol keys of ``protocols[]`` items and the protocol each stands for.
_PROTOCOL_KEYS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}
_INGRESS_PEER_KEYS = ("namespaces", "pods")
_EGRESS_PEER_KEYS = ("namespaces", "pods", "networks", "nodes", "domainNames")
# The CRD's pattern for a DomainName, verbatim (its ``A-z`` ranges included: the
# API server accepts what it accepts).
_DOMAIN_NAME = re.compile(
    r"^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$"
)
_PREFIX_LENGTH = re.compile(r"0|[1-9][0-9]{0,2}")
_NODE_IP_TYPES = ("InternalIP", "ExternalIP")


@dataclass(frozen=True, slots=True)
class NamespacedPods:
    """``pods``: pods matching ``pod_selector`` in namespaces matching ``namespace_selector``."""

    namespace_selector: LabelSelector
    pod_selector: LabelSelector


@dataclass(frozen=True, slots=True)
class Subject:
    """``spec.subject``: exactly one of ``namespaces`` or ``pods`` is set."""

    namespaces: LabelSelector | None = None
    pods: NamespacedPods | None = None

    def selects(self, namespace_labels: Mapping[str, str], pod: Pod) -> bool:
        """Whether the subject selects ``pod`` (in a namespace with those labels).

        Host-network pods, and pods with no IP or finished, are never subjects.
        """
        if not pod.selectable:
            return False
        if self.namespaces is not None:
            return self.namespaces.matches(namespace_labels)
        return (
            self.pods is not None
            and self.pods.namespace_selector.matches(namespace_labels)
            and self.pods.pod_selector.matches(pod.labels)
        )


@dataclass(frozen=True, slots=True)
class ClusterPeer:
    """One item of ``from``/``to``: exactly one field is set (the others are None/empty).

    ``domain_names`` is accepted but not enforced by stockade: a rule holding such a
    peer fails closed (see :attr:`ClusterRule.unsupported`).
    """

    namespaces: LabelSelector | None = None
    pods: NamespacedPods | None = None
    networks: tuple[IPNetwork, ...] = ()
    nodes: LabelSelector | None = None
    domain_names: tuple[str, ...] = ()

    @property
    def field(self) -> str:
        """The name of the field that is set, as the API spells it."""
        if self.namespaces is not None:
            return "namespaces"
        if self.pods is not None:
            return "pods"
        if self.networks:
            return "networks"
        if self.nodes is not None:
            return "nodes"
        return "domainNames"


@dataclass(frozen=True, slots=True)
class ProtocolMatch:
    """One item of ``protocols``.

    Either a protocol (``TCP``/``UDP``/``SCTP``) with the inclusive destination port
    range ``port``..``end_port`` (equal for a single ``number``), or a
    ``destinationNamedPort`` (``named_port``), resolved on the destination pod's
    declared container ports, whatever their protocol; ``protocol`` is then None.
    """

    protocol: str | None = None
    port: int = 0
    end_port: int = 0
    named_port: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterRule:
    """One ingress or egress rule, in the order written; empty ``protocols`` is all traffic."""

    action: str
    peers: tuple[ClusterPeer, ...]
    protocols: tuple[ProtocolMatch, ...] = ()
    name: str = ""

    @property
    def unsupported(self) -> bool:
        """The rule has a peer stockade does not enforce (``domainNames``).

        The spec's "fail closed" then applies to the whole rule: an Accept rule
        matches no traffic, a Deny or Pass rule is a "Deny all" rule.
        """
        return any(peer.domain_names for peer in self.peers)


@dataclass(frozen=True, slots=True)
class ClusterNetworkPolicy:
    """A parsed, valid ClusterNetworkPolicy (cluster-scoped)."""

    name: str
    tier: str
    priority: int
    subject: Subject
    ingress: tuple[ClusterRule, ...] = ()
    egress: tuple[ClusterRule, ...] = ()

    # The kind, and its rank among policies of equal tier, priority and name
    # (a ClusterNetworkPolicy first); IsolationPolicy has the same shape.
    kind: ClassVar[str] = KIND
    kind_rank: ClassVar[int] = 0

    @property
    def key(self) -> str:
        """The policy's name (cluster-scoped objects have no namespace).

        Other kinds of this shape prefix it with their kind, so keys never clash.
        """
        return self.name

    @property
    def order(self) -> tuple[int, int, str, int]:
        """Evaluation order: tier, priority, name, then kind (ClusterNetworkPolicy first)."""
        return (TIERS.index(self.tier), self.priority, self.name, self.kind_rank)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A Node as a ``nodes`` peer sees it: name, labels, IPs from ``status.addresses``."""

    name: str
    labels: Labels
    addresses: tuple[str, ...] = ()


_P = TypeVar("_P", bound=ClusterNetworkPolicy)


# Everything the compiler and the verdict engine read: the NetworkPolicy kinds, and
# the ClusterNetworkPolicies with the Nodes their ``nodes`` peers select.
ClusterInput = ClusterObject | ClusterNetworkPolicy | NodeInfo


# --- common ------------------------------------------------------------------------


def _ref(obj: Any, kind: str) -> ObjectRef:
    if not isinstance(obj, Mapping):
        return ObjectRef(kind, None, "<unnamed>")
    ref = object_ref(obj)
    return ObjectRef(kind, None, ref.name)


def _check_type_meta(
    obj: Mapping[str, Any], kind: str, api_version: str, errors: list[FieldError]
) -> None:
    """``kind`` and ``apiVersion`` may be left out; given, they must be this kind's."""
    if "kind" in obj and obj.get("kind") != kind:
        errors.append(FieldError("kind", f"must be {kind}, got {short(obj.get('kind'))}"))
    if "apiVersion" in obj and obj.get("apiVersion") != api_version:
        errors.append(
            FieldError(
                "apiVersion",
                f"unsupported {short(obj.get('apiVersion'))} for {kind}; expected {api_version}",
            )
        )


def _unknown_fields(
    raw: Mapping[str, Any], known: tuple[str, ...], path: str, errors: list[FieldError]
) -> None:
    for key in sorted((k for k in raw if k not in known), key=str):
        errors.append(FieldError(key_path(path, key), "unknown field"))


def _set_fields(raw: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The keys among ``keys`` given a value (JSON null is the same as leaving it out)."""
    return [k for k in keys if raw.get(k) is not None]


def _exactly_one(
    raw: Mapping[str, Any], keys: tuple[str, ...], path: str, errors: list[FieldError]
) -> str | None:
    """The one key of ``keys`` that is set, or None after reporting none or several."""
    given = _set_fields(raw, keys)
    if len(given) == 1:
        return given[0]
    if given:
        errors.append(
            FieldError(path, f"exactly one of {', '.join(keys)} may be set, got {', '.join(given)}")
        )
    else:
        errors.append(FieldError(path, f"must set exactly one of {', '.join(keys)}"))
    return None


def _bounded_list(
    raw: Any, path: str, errors: list[FieldError], *, max_items: int, min_items: int = 0
) -> list[Any] | None:
    """``raw`` as a list within its bounds, or None after reporting why not.

    An over-long list is reported once and its items are not read, so the work and
    the number of messages stay bounded whatever the input.
    """
    if not isinstance(raw, list):
        errors.append(FieldError(path, f"must be a list, got {short(raw)}"))
        return None
    if len(raw) > max_items:
        errors.append(FieldError(path, f"must have at most {max_items} items, got {len(raw)}"))
        return None
    if len(raw) < min_items:
        errors.append(FieldError(path, f"must have at least {min_items} item, got none"))
        return None
    return raw


def _integer(raw: Any, path: str, low: int, high: int, errors: list[FieldError]) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, int):
        errors.append(FieldError(path, f"must be an integer {low}-{high}, got {short(raw)}"))
        return None
    if not low <= raw <= high:
        errors.append(FieldError(path, f"must be between {low} and {high}, got {short(raw)}"))
        return None
    return raw


def _mapping(raw: Any, path: str, errors: list[FieldError]) -> Mapping[str, Any] | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, f"must be an object, got {short(raw)}"))
        return None
    return raw


# --- ClusterNetworkPolicy ------------------------------------------------------------


def parse_cluster_network_policy(obj: Any, source: str | None = None) -> ClusterNetworkPolicy:
    """Parse and validate a ClusterNetworkPolicy; every problem is collected.

    Raises :class:`InvalidObjectError` (one :class:`FieldError` per problem) for
    anything the API server would refuse with the v0.2.0 CRD installed, and for
    fields it does not know (it would prune them; stockade does not guess).
    """
    return parse_tiered_policy(
        obj, source, kind=KIND, api_version=API_VERSION, peer=parse_peer, build=ClusterNetworkPolicy
    )


# Parses one ``from``/``to`` item: (raw, path, ingress, errors) -> peer or None.
PeerParser = Callable[[Any, str, bool, list[FieldError]], "ClusterPeer | None"]


def parse_tiered_policy(
    obj: Any,
    source: str | None,
    *,
    kind: str,
    api_version: str,
    peer: PeerParser,
    build: Callable[..., _P],
) -> _P:
    """The parser of the ClusterNetworkPolicy spec shape, for any kind that has it.

    ``peer`` parses each ``from``/``to`` item (a kind may accept more peers than a
    ClusterNetworkPolicy does) and ``build`` makes the policy from its fields
    (``name``, ``tier``, ``priority``, ``subject``, ``ingress``, ``egress``).
    Raises :class:`InvalidObjectError` listing every problem.
    """
    errors: list[FieldError] = []
    if not isinstance(obj, Mapping):
        errors.append(FieldError("<object>", f"must be an object, got {short(obj)}"))
        raise InvalidObjectError(_ref(obj, kind), errors, source)
    _check_type_meta(obj, kind, api_version, errors)
    # Cluster-scoped: a metadata.namespace is ignored, as the API server clears it.
    _, name, _ = parse_metadata(obj, errors, namespaced=False)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        errors.append(FieldError("spec", f"required, an object, got {short(spec)}"))
        raise InvalidObjectError(_ref(obj, kind), errors, source)
    _unknown_fields(spec, ("tier", "priority", "subject", "ingress", "egress"), "spec", errors)
    tier = _tier(spec.get("tier"), errors)
    priority = _priority(spec.get("priority"), errors)
    subject = _subject(spec.get("subject"), "spec.subject", errors)
    ingress = _rules(spec.get("ingress"), "spec.ingress", peer, ingress=True, errors=errors)
    egress = _rules(spec.get("egress"), "spec.egress", peer, ingress=False, errors=errors)
    if errors or tier is None or priority is None or subject is None:
        raise InvalidObjectError(_ref(obj, kind), errors, source)
    return build(
        name=name, tier=tier, priority=priority, subject=subject, ingress=ingress, egress=egress
    )


def _tier(raw: Any, errors: list[FieldError]) -> str | None:
    if raw is None:
        errors.append(FieldError("spec.tier", "required: Admin or Baseline"))
        return None
    if not isinstance(raw, str):
        errors.append(FieldError("spec.tier", expected_string(raw)))
        return None
    if raw not in TIERS:
        errors.append(FieldError("spec.tier", f"must be Admin or Baseline, got {short(raw)}"))
        return None
    return raw


def _priority(raw: Any, errors: list[FieldError]) -> int | None:
    if raw is None:
        errors.append(FieldError("spec.priority", f"required: {PRIORITY_MIN}-{PRIORITY_MAX}"))
        return None
    return _integer(raw, "spec.priority", PRIORITY_MIN, PRIORITY_MAX, errors)


def _subject(raw: Any, path: str, errors: list[FieldError]) -> Subject | None:
    if raw is None:
        errors.append(FieldError(path, "required: namespaces or pods"))
        return None
    subject = _mapping(raw, path, errors)
    if subject is None:
        return None
    _unknown_fields(subject, ("namespaces", "pods"), path, errors)
    which = _exactly_one(subject, ("namespaces", "pods"), path, errors)
    if which == "namespaces":
        return Subject(namespaces=_selector(subject["namespaces"], f"{path}.namespaces", errors))
    if which == "pods":
        pods = _namespaced_pods(subject["pods"], f"{path}.pods", errors)
        return Subject(pods=pods) if pods is not None else None
    return None


def _selector(raw: Any, path: str, errors: list[FieldError]) -> LabelSelector:
    """A label selector given as an object (``{}`` selects everything)."""
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, f"must be a label selector object, got {short(raw)}"))
        return EVERYTHING
    return parse_selector(raw, path, errors)


def _namespaced_pods(raw: Any, path: str, errors: list[FieldError]) -> NamespacedPods | None:
    pods = _mapping(raw, path, errors)
    if pods is None:
        return None
    _unknown_fields(pods, ("namespaceSelector", "podSelector"), path, errors)
    if pods.get("podSelector") is None:
        errors.append(FieldError(f"{path}.podSelector", "required (use {} to select all pods)"))
        return None
    ns_raw = pods.get("namespaceSelector")
    ns = EVERYTHING if ns_raw is None else _selector(ns_raw, f"{path}.namespaceSelector", errors)
    pod = _selector(pods["podSelector"], f"{path}.podSelector", errors)
    return NamespacedPods(namespace_selector=ns, pod_selector=pod)


def _rules(
    raw: Any, path: str, peer: PeerParser, *, ingress: bool, errors: list[FieldError]
) -> tuple[ClusterRule, ...]:
    if raw is None:
        return ()
    items = _bounded_list(raw, path, errors, max_items=MAX_RULES)
    if items is None:
        return ()
    rules: list[ClusterRule] = []
    for i, item in enumerate(items):
        rule = _rule(item, f"{path}[{i}]", peer, ingress=ingress, errors=errors)
        if rule is not None:
            rules.append(rule)
    return tuple(rules)


def _rule(
    raw: Any, path: str, peer: PeerParser, *, ingress: bool, errors: list[FieldError]
) -> ClusterRule | None:
    rule = _mapping(raw, path, errors)
    if rule is None:
        return None
    peers_field = "from" if ingress else "to"
    _unknown_fields(rule, ("name", "action", peers_field, "protocols"), path, errors)
    before = len(errors)
    name = _rule_name(rule.get("name"), f"{path}.name", errors)
    action = _action(rule.get("action"), f"{path}.action", errors)
    peers = _peers(
        rule.get(peers_field), f"{path}.{peers_field}", peer, ingress=ingress, errors=errors
    )
    protocols = _protocols(rule.get("protocols"), f"{path}.protocols", errors)
    if not ingress and _named_port_with_address_peer(peers, protocols):
        # The CRD's CEL rule on ClusterNetworkPolicyEgressRule.
        errors.append(
            FieldError(
                path,
                "networks/nodes/domainNames peer cannot be set with namedPorts since there "
                "are no namedPorts for networks/nodes/domainNames",
            )
        )
    if len(errors) != before or action is None:
        return None
    return ClusterRule(action=action, peers=peers, protocols=protocols, name=name)


def _named_port_with_address_peer(
    peers: tuple[ClusterPeer, ...], protocols: tuple[ProtocolMatch, ...]
) -> bool:
    has_address_peer = any(p.networks or p.nodes is not None or p.domain_names for p in peers)
    return has_address_peer and any(p.named_port is not None for p in protocols)


def _rule_name(raw: Any, path: str, errors: list[FieldError]) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        errors.append(FieldError(path, expected_string(raw)))
        return ""
    if len(raw) > MAX_RULE_NAME:
        errors.append(
            FieldError(path, f"must be at most {MAX_RULE_NAME} characters, got {len(raw)}")
        )
        return ""
    return raw


def _action(raw: Any, path: str, errors: list[FieldError]) -> str | None:
    if raw is None:
        errors.append(FieldError(path, "required: Accept, Deny or Pass"))
        return None
    if not isinstance(raw, str):
        errors.append(FieldError(path, expected_string(raw)))
        return None
    if raw not in ACTIONS:
        errors.append(FieldError(path, f"must be Accept, Deny or Pass, got {short(raw)}"))
        return None
    return raw


def _peers(
    raw: Any, path: str, parse: PeerParser, *, ingress: bool, errors: list[FieldError]
) -> tuple[ClusterPeer, ...]:
    if raw is None:
        errors.append(FieldError(path, "required: a list of 1 to 25 peers"))
        return ()
    items = _bounded_list(raw, path, errors, max_items=MAX_PEERS, min_items=1)
    if items is None:
        return ()
    peers: list[ClusterPeer] = []
    for i, item in enumerate(items):
        peer = parse(item, f"{path}[{i}]", ingress, errors)
        if peer is not None:
            peers.append(peer)
    return tuple(peers)


def parse_peer(raw: Any, path: str, ingress: bool, errors: list[FieldError]) -> ClusterPeer | None:
    """One ClusterNetworkPolicy ``from``/``to`` item; problems go to ``errors``."""
    peer = _mapping(raw, path, errors)
    if peer is None:
        return None
    keys = _INGRESS_PEER_KEYS if ingress else _EGRESS_PEER_KEYS
    foreign = sorted((k for k in peer if k not in keys), key=str)
    # Only foreign fields given: each is reported below, "set exactly one" would
    # say the same thing twice.
    keys_reported_only = bool(foreign) and not _set_fields(peer, keys)
    for key in foreign:
        where = "an ingress" if ingress else "an egress"
        known = key in _EGRESS_PEER_KEYS
        errors.append(
            FieldError(
                key_path(path, key), f"not allowed in {where} peer" if known else "unknown field"
            )
        )
    if keys_reported_only:
        return None
    which = _exactly_one(peer, keys, path, errors)
    value = peer.get(which) if which is not None else None
    where = f"{path}.{which}"
    if which == "namespaces":
        return ClusterPeer(namespaces=_selector(value, where, errors))
    if which == "pods":
        pods = _namespaced_pods(value, where, errors)
        return ClusterPeer(pods=pods) if pods is not None else None
    if which == "nodes":
        return ClusterPeer(nodes=_selector(value, where, errors))
    if which == "networks":
        networks = _networks(value, where, errors)
        return ClusterPeer(networks=networks) if networks else None
    if which == "domainNames":
        names = _domain_names(value, where, errors)
        return ClusterPeer(domain_names=names) if names else None
    return None


def _networks(raw: Any, path: str, errors: list[FieldError]) -> tuple[IPNetwork, ...]:
    items = _bounded_list(raw, path, errors, max_items=MAX_NETWORKS, min_items=1)
    if items is None:
        return ()
    out: list[IPNetwork] = []
    seen: set[str] = set()
    ok = True
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        network = parse_cidr(item, where, errors)
        if network is None:
            ok = False
            continue
        assert isinstance(item, str)
        if item in seen:
            # listType=set: the API server refuses a duplicate item.
            errors.append(FieldError(where, f"duplicate value {short(item)}"))
            ok = False
            continue
        seen.add(item)
        out.append(network)
    return tuple(out) if ok else ()


def parse_cidr(raw: Any, path: str, errors: list[FieldError]) -> IPNetwork | None:
    """A ``CIDR`` as the CRD admits it: at most 43 characters, and CEL ``isCIDR``.

    ``isCIDR`` is Go's ``netip.ParsePrefix``: an address, ``/`` and a decimal prefix
    length without leading zeros (no netmask form), no IPv6 zone, no white space;
    host bits are allowed (and masked here, as ``Prefix.Contains`` ignores them).
    """
    if not isinstance(raw, str):
        errors.append(
            FieldError(path, f"must be a CIDR string such as 10.0.0.0/8, got {short(raw)}")
        )
        return None
    if len(raw) > MAX_CIDR_LENGTH:
        errors.append(
            FieldError(path, f"must be at most {MAX_CIDR_LENGTH} characters, got {len(raw)}")
        )
        return None
    address, slash, bits = raw.partition("/")
    problem = ""
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    if not slash:
        problem = "no '/' and prefix length"
    elif not (bits.isascii() and _PREFIX_LENGTH.fullmatch(bits)):
        problem = "the prefix length must be a decimal number without leading zeros"
    else:
        try:
            addr = ipaddress.ip_address(address)
        except ValueError:
            problem = "not an IP address before '/'"
        else:
            if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
                problem = "an IPv6 zone is not allowed"
            elif int(bits) > addr.max_prefixlen:
                problem = f"prefix length {bits} is more than {addr.max_prefixlen}"
    if problem or addr is None:
        errors.append(FieldError(path, f"Invalid CIDR format provided: {short(raw)}: {problem}"))
        return None
    return ipaddress.ip_network(f"{addr}/{bits}", strict=False)


def _domain_names(raw: Any, path: str, errors: list[FieldError]) -> tuple[str, ...]:
    items = _bounded_list(raw, path, errors, max_items=MAX_DOMAIN_NAMES, min_items=1)
    if items is None:
        return ()
    out: list[str] = []
    ok = True
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not isinstance(item, str):
            errors.append(FieldError(where, expected_string(item)))
            ok = False
        elif not _DOMAIN_NAME.fullmatch(item):
            errors.append(FieldError(where, f"{short(item)} is not a domain name (or *.domain)"))
            ok = False
        elif item in out:
            errors.append(FieldError(where, f"duplicate value {short(item)}"))
            ok = False
        else:
            out.append(item)
    return tuple(out) if ok else ()


def _protocols(raw: Any, path: str, errors: list[FieldError]) -> tuple[ProtocolMatch, ...]:
    if raw is None:
        return ()
    items = _bounded_list(raw, path, errors, max_items=MAX_PROTOCOLS, min_items=1)
    if items is None:
        return ()
    out: list[ProtocolMatch] = []
    for i, item in enumerate(items):
        match = _protocol(item, f"{path}[{i}]", errors)
        if match is not None:
            out.append(match)
    return tuple(out)


_PROTOCOL_FIELDS = ("tcp", "udp", "sctp", "destinationNamedPort")


def _protocol(raw: Any, path: str, errors: list[FieldError]) -> ProtocolMatch | None:
    item = _mapping(raw, path, errors)
    if item is None:
        return None
    _unknown_fields(item, _PROTOCOL_FIELDS, path, errors)
    which = _exactly_one(item, _PROTOCOL_FIELDS, path, errors)
    if which is None:
        return None
    where = f"{path}.{which}"
    if which == "destinationNamedPort":
        name = item[which]
        if not isinstance(name, str):
            errors.append(FieldError(where, expected_string(name)))
            return None
        if not name:
            # The Go field is omitempty: "" would read as an item with no field set.
            errors.append(FieldError(where, "must not be empty"))
            return None
        return ProtocolMatch(named_port=name)
    body = _mapping(item[which], where, errors)
    if body is None:
        return None
    _unknown_fields(body, ("destinationPort",), where, errors)
    if body.get("destinationPort") is None:
        errors.append(FieldError(f"{where}.destinationPort", "required"))
        return None
    span = _destination_port(body["destinationPort"], f"{where}.destinationPort", errors)
    if span is None:
        return None
    return ProtocolMatch(protocol=_PROTOCOL_KEYS[which], port=span[0], end_port=span[1])


def _destination_port(raw: Any, path: str, errors: list[FieldError]) -> tuple[int, int] | None:
    port = _mapping(raw, path, errors)
    if port is None:
        return None
    _unknown_fields(port, ("number", "range"), path, errors)
    which = _exactly_one(port, ("number", "range"), path, errors)
    if which == "number":
        number = _integer(port["number"], f"{path}.number", 1, 65535, errors)
        return (number, number) if number is not None else None
    if which == "range":
        rpath = f"{path}.range"
        span = _mapping(port["range"], rpath, errors)
        if span is None:
            return None
        _unknown_fields(span, ("start", "end"), rpath, errors)
        bounds: list[int | None] = []
        for key in ("start", "end"):
            if span.get(key) is None:
                errors.append(FieldError(f"{rpath}.{key}", "required: 1-65535"))
                bounds.append(None)
            else:
                bounds.append(_integer(span[key], f"{rpath}.{key}", 1, 65535, errors))
        start, end = bounds
        if start is None or end is None:
            return None
        if not start < end:
            errors.append(
                FieldError(rpath, f"Start port must be less than End port, got {start}-{end}")
            )
            return None
        return (start, end)
    return None


# --- Node ----------------------------------------------------------------------------


def parse_node(obj: Any, source: str | None = None) -> NodeInfo:
    """Parse the name, labels and ``status.addresses`` IPs of a Node.

    An ``InternalIP`` or ``ExternalIP`` address must be an IP; another type
    (``Hostname``, ``InternalDNS``, ``ExternalDNS``) is kept only when its value
    happens to be an IP ("the IPs present in the node.Status.Addresses field").
    Raises :class:`InvalidObjectError` listing every problem.
    """
    errors: list[FieldError] = []
    if not isinstance(obj, Mapping):
        errors.append(FieldError("<object>", f"must be an object, got {short(obj)}"))
        raise InvalidObjectError(_ref(obj, NODE_KIND), errors, source)
    _check_type_meta(obj, NODE_KIND, NODE_API_VERSION, errors)
    _, name, labels = parse_metadata(obj, errors, namespaced=False)
    status = obj.get("status")
    addresses: list[str] = []
    if status is not None and not isinstance(status, Mapping):
        errors.append(FieldError("status", f"must be an object, got {short(status)}"))
    elif isinstance(status, Mapping) and status.get("addresses") is not None:
        raw = status["addresses"]
        if not isinstance(raw, list):
            errors.append(FieldError("status.addresses", f"must be a list, got {short(raw)}"))
        else:
            for i, item in enumerate(raw):
                ip = _node_address(item, f"status.addresses[{i}]", errors)
                if ip is not None and ip not in addresses:
                    addresses.append(ip)
    if errors:
        raise InvalidObjectError(_ref(obj, NODE_KIND), errors, source)
    return NodeInfo(name=name, labels=MappingProxyType(dict(labels)), addresses=tuple(addresses))


def _node_address(raw: Any, path: str, errors: list[FieldError]) -> str | None:
    item = _mapping(raw, path, errors)
    if item is None:
        return None
    kind = item.get("type")
    value = item.get("address")
    if not isinstance(kind, str):
        errors.append(FieldError(f"{path}.type", expected_string(kind)))
        return None
    if not isinstance(value, str):
        errors.append(FieldError(f"{path}.address", expected_string(value)))
        return None
    if kind in _NODE_IP_TYPES:
        return parse_ip(value, f"{path}.address", errors)
    return parse_ip(value, f"{path}.address", [])
