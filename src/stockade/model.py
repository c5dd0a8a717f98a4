"""The cluster model: immutable Namespaces, Pods and NetworkPolicies.

Objects are parsed from plain dicts, as the API server or a YAML file gives them.
Parsing is strict for NetworkPolicies (every problem is collected, and the policy is
rejected whole) and tolerant only where Kubernetes itself is (a Pod without an IP
simply takes no part yet).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TypeGuard

from stockade.errors import FieldError, InvalidObjectError, ObjectRef
from stockade.interning import InternTable, freeze
from stockade.safetext import printable, short
from stockade.selectors import EVERYTHING, LabelSelector, parse_selector
from stockade.validation import dns1123_label, dns1123_subdomain, label_key, label_value

PROTOCOLS = ("TCP", "UDP", "SCTP")
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
# The apiVersion each kind is read as; a file may leave it out (hand-written
# manifests often do), but another version is not silently read as this one.
API_VERSIONS = {
    "Namespace": "v1",
    "Pod": "v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "Service": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
}
# YAML 1.1 reads these unquoted words as booleans: say so when a string was meant.
_YAML_BOOL_HINT = " (YAML reads unquoted yes/no/on/off/true/false as booleans: quote it)"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
INGRESS = "Ingress"
EGRESS = "Egress"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Labels = Mapping[str, str]

# IANA_SVC_NAME as Kubernetes validates a named port: at most 15 characters,
# lowercase letters, digits and '-', at least one letter, no leading, trailing or
# doubled '-'.
_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
# An IPv4 address in the one form ipaddress accepts and prints back (four decimal
# octets, no leading zeros): most pod addresses, checked without building one.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
# Valid label maps by content (see stockade.interning): a Deployment's pods share one.
_LABELS: InternTable[Labels] = InternTable()


def _is_map(value: Any) -> TypeGuard[Mapping[str, Any]]:
    # A plain dict, as JSON and YAML give, is told without the ABC's slower check.
    return type(value) is dict or isinstance(value, Mapping)


def expected_string(value: Any) -> str:
    """``must be a string, got ...`` with a hint when YAML turned a word into a boolean."""
    hint = _YAML_BOOL_HINT if isinstance(value, bool) else ""
    return f"must be a string, got {short(value)}{hint}"


def key_path(path: str, key: Any) -> str:
    """``path.key`` for a map key from the input, printable and bounded."""
    text = key if isinstance(key, str) else str(key)
    return f"{path}.{printable(text[:80])}{'...' if len(text) > 80 else ''}"


def _frozen_labels(raw: Any, path: str, errors: list[FieldError]) -> Labels:
    if raw is None:
        return MappingProxyType({})
    if not _is_map(raw):
        errors.append(FieldError(path, f"must be a map of strings, got {short(raw)}"))
        return MappingProxyType({})
    content = freeze(raw) if type(raw) is dict else None
    known = _LABELS.get(content)
    if known is not None:
        return known
    found = len(errors)
    out: dict[str, str] = {}
    entries: Iterable[tuple[Any, Any]] = raw.items()  # keys as read, not yet known strings
    for key, value in entries:
        if not isinstance(key, str):
            errors.append(FieldError(key_path(path, key), f"label key {expected_string(key)}"))
            continue
        if not isinstance(value, str):
            errors.append(FieldError(key_path(path, key), expected_string(value)))
            continue
        problems = [f"key {p}" for p in label_key(key)]
        problems += [f"value {short(value)} {p}" for p in label_value(value)]
        if problems:
            where = key_path(path, key)
            errors.extend(FieldError(where, p) for p in problems)
            continue
        out[key] = value
    labels = MappingProxyType(out)
    if len(errors) == found:
        _LABELS.put(content, labels)
    return labels


def check_api_version(obj: Mapping[str, Any], errors: list[FieldError]) -> None:
    """A known kind under another apiVersion is refused, not read as the one we know."""
    kind = obj.get("kind")
    # A kind that is no string (a list, from hostile YAML) is not hashable: no lookup.
    if "apiVersion" not in obj or not isinstance(kind, str) or kind not in API_VERSIONS:
        return
    version = obj.get("apiVersion")
    if version != API_VERSIONS[kind]:
        errors.append(
            FieldError(
                "apiVersion",
                f"unsupported {short(version)} for {kind}; expected {API_VERSIONS[kind]}",
            )
        )


def is_svc_name(name: str) -> bool:
    """Whether ``name`` is a valid named port (IANA_SVC_NAME)."""
    return bool(_SVC_NAME.match(name)) and "--" not in name and any(c.isalpha() for c in name)


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace; ``labels`` always carry ``kubernetes.io/metadata.name``."""

    name: str
    labels: Labels

    @staticmethod
    def default(name: str) -> Namespace:
        """The namespace as Kubernetes labels it when nothing else is known."""
        return Namespace(name, MappingProxyType({NAMESPACE_NAME_LABEL: name}))


@dataclass(frozen=True, slots=True)
class ContainerPort:
    """A declared container port; ``name`` is empty when the port has none."""

    name: str
    port: int
    protocol: str


@dataclass(frozen=True, slots=True)
class Pod:
    """A pod as far as network policy cares."""

    namespace: str
    name: str
    labels: Labels
    node_name: str
    ips: tuple[str, ...]
    host_network: bool = False
    phase: str = "Running"
    ports: tuple[ContainerPort, ...] = ()
    host_ips: tuple[str, ...] = ()
    # metadata.deletionTimestamp is set: the pod is terminating, its IP may be reused.
    deleting: bool = False
    # metadata.creationTimestamp as POSIX seconds, None when the object has none.
    created: float | None = None
    # Addresses this pod claims but owns with another pod (stockade.ownership):
    # no pod owns them, and all forwarded traffic from or to them is denied.
    contested_ips: tuple[str, ...] = ()
    # The object did not parse (see untrusted_pod): its addresses are denied.
    untrusted: bool = False
    # ``namespace/name``: made once, the engine asks for it at every step.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")

    @property
    def host_ip(self) -> str:
        """The node's primary address (``status.hostIP``), or empty when unknown."""
        return self.host_ips[0] if self.host_ips else ""

    @property
    def active(self) -> bool:
        """Takes part in policy: has an address and is not finished.

        A finished pod's IP may already belong to another pod, so it must not be
        treated as this one.
        """
        return bool(self.ips) and self.phase not in TERMINAL_PHASES

    @property
    def selectable(self) -> bool:
        """Can be a policy target or match a pod/namespace selector as a peer."""
        return self.active and not self.host_network

    def named_port(self, name: str, protocol: str) -> int | None:
        """The number of this pod's container port ``name``/``protocol``, if any.

        Kubernetes allows one name in two containers; like the API's own lookup
        (``FindPort``) the first declared wins, in every direction (see
        :attr:`named_ports`).
        """
        for cp in self.ports:
            if cp.name == name and cp.protocol == protocol:
                return cp.port
        return None

    @property
    def named_ports(self) -> tuple[ContainerPort, ...]:
        """The named ports a policy can refer to: the first of each name and protocol."""
        return named_ports_of(self.ports)


def named_ports_of(ports: tuple[ContainerPort, ...]) -> tuple[ContainerPort, ...]:
    """The named ports among ``ports`` a policy can refer to: the first of each
    name and protocol (see :attr:`Pod.named_ports`)."""
    seen: set[tuple[str, str]] = set()
    out: list[ContainerPort] = []
    for cp in ports:
        if cp.name and (cp.name, cp.protocol) not in seen:
            seen.add((cp.name, cp.protocol))
            out.append(cp)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class IPBlock:
    """``ipBlock``: a CIDR minus its exceptions (all of one family, inside it)."""

    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def contains(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether ``ip`` is inside the CIDR and outside every exception."""
        if ip.version != self.cidr.version or ip not in self.cidr:
            return False
        return not any(ip in exc for exc in self.excepts)


@dataclass(frozen=True, slots=True)
class Peer:
    """One item of ``from``/``to``: selectors (either or both) or an ipBlock.

    ``namespace_selector`` None means "the policy's own namespace".
    """

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class PolicyPort:
    """One item of ``ports``: a number (with optional endPort), a name, or none."""

    protocol: str = "TCP"
    port: int | None = None
    end_port: int | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One ingress or egress rule; empty ``peers``/``ports`` mean all."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """A parsed, valid NetworkPolicy.

    ``ingress`` is None when the policy does not isolate its targets for ingress
    (its rules, if any, are then ignored, as in Kubernetes); likewise ``egress``.
    """

    namespace: str
    name: str
    pod_selector: LabelSelector
    ingress: tuple[Rule, ...] | None
    egress: tuple[Rule, ...] | None
    # ``namespace/name``, made once (see Pod.key).
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")


ClusterObject = Namespace | Pod | NetworkPolicy


def object_ref(obj: Mapping[str, Any]) -> ObjectRef:
    """Kind, namespace and name of a raw object, as far as they can be read."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    kind = obj.get("kind")
    namespace = meta.get("namespace")
    name = meta.get("name")
    return ObjectRef(
        kind=kind if isinstance(kind, str) and kind else "<unknown kind>",
        namespace=namespace if isinstance(namespace, str) else None,
        name=name if isinstance(name, str) and name else "<unnamed>",
    )


def parse_object(obj: Mapping[str, Any], source: str | None = None) -> ClusterObject:
    """Parse a Namespace, Pod or NetworkPolicy dict.

    Raises :class:`InvalidObjectError` listing every problem found.
    """
    kind = obj.get("kind")
    if kind == "Pod":
        return parse_pod(obj, source)
    if kind == "Namespace":
        return parse_namespace(obj, source)
    if kind == "NetworkPolicy":
        return parse_policy(obj, source)
    raise InvalidObjectError(
        object_ref(obj), [FieldError("kind", f"unsupported kind {short(kind)}")], source
    )


_NameCheck = Callable[[str], list[str]]
# How the API server validates each kind's metadata.name.
_NAME_RULES: dict[str, _NameCheck] = {
    "Namespace": dns1123_label,
    "Pod": dns1123_subdomain,
    "NetworkPolicy": dns1123_subdomain,
    # Service names are DNS labels (they become DNS names under the namespace).
    "Service": dns1123_label,
    "EndpointSlice": dns1123_subdomain,
}


def _checked_name(raw: Any, path: str, check: _NameCheck, errors: list[FieldError]) -> str:
    if not isinstance(raw, str) or not raw:
        errors.append(FieldError(path, f"required, a non-empty string, got {short(raw)}"))
        return ""
    problems = check(raw)
    if problems:
        errors.extend(FieldError(path, f"{short(raw)} {p}") for p in problems)
        return ""
    return raw


def _metadata(
    obj: Mapping[str, Any], errors: list[FieldError], namespaced: bool
) -> tuple[str, str, Labels]:
    check_api_version(obj, errors)
    meta = obj.get("metadata")
    if not _is_map(meta):
        errors.append(FieldError("metadata", "required"))
        return "", "", MappingProxyType({})
    kind = obj.get("kind")
    rule = _NAME_RULES.get(kind if isinstance(kind, str) else "", dns1123_subdomain)
    name = _checked_name(meta.get("name"), "metadata.name", rule, errors)
    namespace = ""
    if namespaced:
        raw_ns = meta.get("namespace")
        raw_ns = "default" if raw_ns is None else raw_ns
        namespace = _checked_name(raw_ns, "metadata.namespace", dns1123_label, errors)
    labels = _frozen_labels(meta.get("labels"), "metadata.labels", errors)
    return namespace, name, labels


def parse_metadata(
    obj: Mapping[str, Any], errors: list[FieldError], *, namespaced: bool
) -> tuple[str, str, Labels]:
    """``(namespace, name, labels)`` of any object, checked as the API server checks them.

    Problems are appended to ``errors``; the values are then empty.
    """
    return _metadata(obj, errors, namespaced)


def parse_ip(raw: Any, path: str, errors: list[FieldError]) -> str | None:
    """An IP address string in canonical form; a problem is appended to ``errors``."""
    return _parse_ip(raw, path, errors)


def _timestamp(raw: Any, path: str, errors: list[FieldError]) -> float | None:
    """An RFC 3339 timestamp (as the API server writes it) as POSIX seconds."""
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    errors.append(FieldError(path, f"must be an RFC 3339 timestamp, got {short(raw)}"))
    return None


def parse_namespace(obj: Mapping[str, Any], source: str | None = None) -> Namespace:
    """Parse a Namespace; the ``kubernetes.io/metadata.name`` label is always set."""
    errors: list[FieldError] = []
    _, name, labels = _metadata(obj, errors, namespaced=False)
    if errors:
        raise InvalidObjectError(object_ref(obj), errors, source)
    merged = dict(labels)
    # The API server sets this label on every namespace and immutably so.
    merged[NAMESPACE_NAME_LABEL] = name
    return Namespace(name, MappingProxyType(merged))


def _parse_ip(raw: Any, path: str, errors: list[FieldError]) -> str | None:
    if type(raw) is str and _CANONICAL_IPV4.fullmatch(raw):
        return raw  # already what str(ip_address(raw)) gives back
    if not isinstance(raw, str):
        errors.append(FieldError(path, f"must be an IP address string, got {short(raw)}"))
        return None
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        addr = None
    if addr is None or (isinstance(addr, ipaddress.IPv6Address) and addr.scope_id):
        # A zone (fe80::1%eth0) names an interface of one host: never a pod address.
        errors.append(FieldError(path, f"invalid IP address {short(raw)}"))
        return None
    return str(addr)


def _pod_ips(status: Mapping[str, Any], errors: list[FieldError]) -> tuple[str, ...]:
    ips: list[str] = []
    pod_ips = status.get("podIPs")
    if pod_ips is not None and not isinstance(pod_ips, list):
        errors.append(FieldError("status.podIPs", f"must be a list, got {short(pod_ips)}"))
    if isinstance(pod_ips, list) and pod_ips:
        for i, item in enumerate(pod_ips):
            raw = item.get("ip") if _is_map(item) else None
            ip = _parse_ip(raw, f"status.podIPs[{i}].ip", errors)
            if ip is not None and ip not in ips:
                ips.append(ip)
    primary = status.get("podIP")
    if primary:
        ip = _parse_ip(primary, "status.podIP", errors)
        if ip is not None:
            # podIP is by definition podIPs[0]; keep it first.
            if ip in ips:
                ips.remove(ip)
            ips.insert(0, ip)
    return tuple(ips)


def _host_ips(status: Mapping[str, Any], errors: list[FieldError]) -> tuple[str, ...]:
    """``status.hostIP`` first, then the rest of ``status.hostIPs`` (dual-stack nodes)."""
    ips: list[str] = []
    primary = status.get("hostIP")
    if primary:
        ip = _parse_ip(primary, "status.hostIP", errors)
        if ip is not None:
            ips.append(ip)
    raw = status.get("hostIPs")
    if raw is not None and not isinstance(raw, list):
        errors.append(FieldError("status.hostIPs", f"must be a list, got {short(raw)}"))
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            value = item.get("ip") if _is_map(item) else None
            ip = _parse_ip(value, f"status.hostIPs[{i}].ip", errors)
            if ip is not None and ip not in ips:
                ips.append(ip)
    return tuple(ips)


def _container_ports(
    spec: Mapping[str, Any], errors: list[FieldError]
) -> tuple[ContainerPort, ...]:
    ports: list[ContainerPort] = []
    for group in ("initContainers", "containers"):
        containers = spec.get(group) or []
        if not isinstance(containers, list):
            errors.append(FieldError(f"spec.{group}", f"must be a list, got {short(containers)}"))
            continue
        for ci, container in enumerate(containers):
            if not _is_map(container):
                errors.append(FieldError(f"spec.{group}[{ci}]", "must be an object"))
                continue
            if group == "initContainers" and container.get("restartPolicy") != "Always":
                # Only sidecar init containers keep running and serve ports.
                continue
            ports += _one_container_ports(container, f"spec.{group}[{ci}]", errors)
    return tuple(ports)


def _one_container_ports(
    container: Mapping[str, Any], path: str, errors: list[FieldError]
) -> list[ContainerPort]:
    raw_ports = container.get("ports") or []
    if not isinstance(raw_ports, list):
        errors.append(FieldError(f"{path}.ports", f"must be a list, got {short(raw_ports)}"))
        return []
    ports: list[ContainerPort] = []
    names: set[str] = set()
    for pi, raw in enumerate(raw_ports):
        ppath = f"{path}.ports[{pi}]"
        port = _container_port(raw, ppath, errors)
        if port is None or not port.name:
            if port is not None:
                ports.append(port)
            continue
        # The API server refuses a name declared twice in one container; across
        # containers it is allowed, and the first one wins (ContainerPort order).
        if port.name in names:
            errors.append(FieldError(f"{ppath}.name", f"duplicate port name {short(port.name)}"))
            continue
        names.add(port.name)
        ports.append(port)
    return ports


def _container_port(raw: Any, path: str, errors: list[FieldError]) -> ContainerPort | None:
    if not _is_map(raw):
        errors.append(FieldError(path, "must be an object"))
        return None
    number = raw.get("containerPort")
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
        errors.append(FieldError(f"{path}.containerPort", f"must be 1-65535, got {short(number)}"))
        return None
    protocol = raw.get("protocol", "TCP")
    if protocol not in PROTOCOLS:
        errors.append(FieldError(f"{path}.protocol", f"unknown protocol {short(protocol)}"))
        return None
    name = raw.get("name", "")
    if name is None:
        name = ""
    if not isinstance(name, str):
        errors.append(FieldError(f"{path}.name", expected_string(name)))
        return None
    if name and not is_svc_name(name):
        errors.append(
            FieldError(f"{path}.name", f"{short(name)} is not a valid port name (IANA_SVC_NAME)")
        )
        return None
    return ContainerPort(name, number, protocol)


def parse_pod(obj: Mapping[str, Any], source: str | None = None) -> Pod:
    """Parse a Pod: labels, node, IPs, phase, hostNetwork, container ports, timestamps.

    Every field read is strictly typed (a boolean is a boolean): a Pod that does not
    parse takes no part rather than being guessed at.
    """
    errors: list[FieldError] = []
    namespace, name, labels = _metadata(obj, errors, namespaced=True)
    spec = _object_field(obj, "spec", errors)
    status = _object_field(obj, "status", errors)
    raw_meta = obj.get("metadata")
    meta: Mapping[str, Any] = raw_meta if _is_map(raw_meta) else {}
    ips = _pod_ips(status, errors)
    ports = _container_ports(spec, errors)
    node = spec.get("nodeName") or ""
    if not isinstance(node, str):
        errors.append(FieldError("spec.nodeName", expected_string(node)))
        node = ""
    elif node:
        errors.extend(FieldError("spec.nodeName", p) for p in dns1123_subdomain(node))
    host_network = spec.get("hostNetwork", False)
    if host_network is None:
        host_network = False
    if not isinstance(host_network, bool):
        errors.append(
            FieldError("spec.hostNetwork", f"must be a boolean, got {short(host_network)}")
        )
    phase = status.get("phase") or ("Running" if ips else "Pending")
    if phase not in POD_PHASES:
        errors.append(
            FieldError(
                "status.phase", f"must be one of {', '.join(POD_PHASES)}, got {short(phase)}"
            )
        )
    host_ips = _host_ips(status, errors)
    created = _timestamp(meta.get("creationTimestamp"), "metadata.creationTimestamp", errors)
    deleted = _timestamp(meta.get("deletionTimestamp"), "metadata.deletionTimestamp", errors)
    if errors:
        raise InvalidObjectError(object_ref(obj), errors, source)
    return Pod(
        namespace=namespace,
        name=name,
        labels=labels,
        node_name=node,
        ips=ips,
        host_network=host_network is True,
        phase=phase,
        ports=ports,
        host_ips=host_ips,
        deleting=deleted is not None,
        created=created,
    )


def untrusted_pod(obj: Mapping[str, Any]) -> Pod | None:
    """What can be read of a Pod that does not parse: its key, node and addresses.

    The controller cannot judge such a pod by its policies, and letting it take no
    part would judge its addresses as outside the cluster, open to all. Instead
    no pod owns its addresses and they are denied both ways (stockade.ownership),
    until the object is fixed. None when no address can be read either.
    """
    meta = obj.get("metadata")
    spec = obj.get("spec")
    status = obj.get("status")
    if not (isinstance(meta, Mapping) and isinstance(status, Mapping)):
        return None
    ips = _pod_ips(status, [])
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not ips or not isinstance(name, str) or not isinstance(namespace, str):
        return None
    node = spec.get("nodeName") if isinstance(spec, Mapping) else None
    return Pod(
        namespace=namespace,
        name=name,
        labels=MappingProxyType({}),
        node_name=node if isinstance(node, str) else "",
        ips=ips,
        untrusted=True,
    )


def _object_field(obj: Mapping[str, Any], name: str, errors: list[FieldError]) -> Mapping[str, Any]:
    raw = obj.get(name)
    if raw is None:
        return {}
    if not _is_map(raw):
        errors.append(FieldError(name, f"must be an object, got {short(raw)}"))
        return {}
    return raw


def parse_policy(obj: Mapping[str, Any], source: str | None = None) -> NetworkPolicy:
    """Parse and validate a NetworkPolicy; every problem is collected.

    ``policyTypes`` defaults as the API server defaults it: Ingress always, and
    Egress when the policy has at least one egress rule.
    """
    errors: list[FieldError] = []
    namespace, name, _ = _metadata(obj, errors, namespaced=True)
    spec = obj.get("spec")
    if not _is_map(spec):
        errors.append(FieldError("spec", "required, an object"))
        raise InvalidObjectError(object_ref(obj), errors, source)
    # A spec names no namespace: one template's policies share their parsed spec.
    content = freeze(spec) if type(spec) is dict else None
    parsed = _POLICY_SPECS.get(content)
    if parsed is None:
        found = len(errors)
        parsed = _policy_spec(spec, errors)
        if len(errors) == found:
            _POLICY_SPECS.put(content, parsed)
    if errors:
        raise InvalidObjectError(object_ref(obj), errors, source)
    pod_selector, ingress, egress = parsed
    return NetworkPolicy(
        namespace=namespace, name=name, pod_selector=pod_selector, ingress=ingress, egress=egress
    )


_PolicySpec = tuple[LabelSelector, tuple[Rule, ...] | None, tuple[Rule, ...] | None]
# Valid NetworkPolicy specs by content (see stockade.interning).
_POLICY_SPECS: InternTable[_PolicySpec] = InternTable()


def _policy_spec(spec: Mapping[str, Any], errors: list[FieldError]) -> _PolicySpec:
    """The pod selector, ingress and egress rules of a spec; problems go to ``errors``."""
    for key in sorted(set(spec) - {"podSelector", "ingress", "egress", "policyTypes"}):
        errors.append(FieldError(f"spec.{key}", "unknown field"))
    if "podSelector" not in spec:
        # Required by the API (an empty selector must be written as {}).
        errors.append(FieldError("spec.podSelector", "required (use {} to select all pods)"))
    pod_selector = parse_selector(spec.get("podSelector"), "spec.podSelector", errors)
    raw_ingress = spec.get("ingress")
    raw_egress = spec.get("egress")
    ingress_rules = _parse_rules(raw_ingress, "spec.ingress", "from", errors)
    egress_rules = _parse_rules(raw_egress, "spec.egress", "to", errors)
    types = _policy_types(spec.get("policyTypes"), bool(egress_rules), errors)
    return (
        pod_selector,
        ingress_rules if INGRESS in types else None,
        egress_rules if EGRESS in types else None,
    )


def _policy_types(raw: Any, has_egress: bool, errors: list[FieldError]) -> frozenset[str]:
    if raw is None or raw == []:
        return frozenset({INGRESS, EGRESS}) if has_egress else frozenset({INGRESS})
    if not isinstance(raw, list):
        errors.append(FieldError("spec.policyTypes", "must be a list"))
        return frozenset()
    types: set[str] = set()
    for i, item in enumerate(raw):
        if item not in (INGRESS, EGRESS):
            errors.append(
                FieldError(
                    f"spec.policyTypes[{i}]", f"must be Ingress or Egress, got {short(item)}"
                )
            )
        else:
            types.add(item)
    return frozenset(types)


def _parse_rules(
    raw: Any, path: str, peers_field: str, errors: list[FieldError]
) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(FieldError(path, "must be a list of rules"))
        return ()
    rules: list[Rule] = []
    for i, given in enumerate(raw):
        rpath = f"{path}[{i}]"
        item = {} if given is None else given  # `- {}` may come through as null
        if not isinstance(item, Mapping):
            errors.append(FieldError(rpath, "must be an object"))
            continue
        for key in sorted(set(item) - {peers_field, "ports"}):
            errors.append(FieldError(f"{rpath}.{key}", "unknown field"))
        peers = _parse_peers(item.get(peers_field), f"{rpath}.{peers_field}", errors)
        ports = _parse_ports(item.get("ports"), f"{rpath}.ports", errors)
        rules.append(Rule(peers, ports))
    return tuple(rules)


def _parse_peers(raw: Any, path: str, errors: list[FieldError]) -> tuple[Peer, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(FieldError(path, "must be a list of peers"))
        return ()
    peers: list[Peer] = []
    for i, item in enumerate(raw):
        ppath = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            errors.append(FieldError(ppath, "must be an object"))
            continue
        for key in sorted(set(item) - {"podSelector", "namespaceSelector", "ipBlock"}):
            errors.append(FieldError(f"{ppath}.{key}", "unknown field"))
        has_pod = item.get("podSelector") is not None
        has_ns = item.get("namespaceSelector") is not None
        has_ip = item.get("ipBlock") is not None
        if has_ip and (has_pod or has_ns):
            errors.append(
                FieldError(
                    ppath, "ipBlock cannot be combined with podSelector or namespaceSelector"
                )
            )
            continue
        if not (has_ip or has_pod or has_ns):
            errors.append(
                FieldError(ppath, "must specify podSelector, namespaceSelector or ipBlock")
            )
            continue
        if has_ip:
            block = _parse_ip_block(item["ipBlock"], f"{ppath}.ipBlock", errors)
            if block is not None:
                peers.append(Peer(ip_block=block))
            continue
        pod_sel = (
            parse_selector(item["podSelector"], f"{ppath}.podSelector", errors)
            if has_pod
            else EVERYTHING
        )
        ns_sel = (
            parse_selector(item["namespaceSelector"], f"{ppath}.namespaceSelector", errors)
            if has_ns
            else None
        )
        peers.append(Peer(pod_selector=pod_sel, namespace_selector=ns_sel))
    return tuple(peers)


def _parse_cidr(raw: Any, path: str, errors: list[FieldError]) -> IPNetwork | None:
    if not isinstance(raw, str) or "/" not in raw:
        errors.append(FieldError(path, f"must be a CIDR such as 10.0.0.0/8, got {short(raw)}"))
        return None
    if raw != raw.strip():
        errors.append(FieldError(path, f"invalid CIDR {short(raw)}: surrounding white space"))
        return None
    try:
        # Host bits are tolerated and masked, as the API server long accepted them.
        return ipaddress.ip_network(raw, strict=False)
    except ValueError:
        errors.append(FieldError(path, f"invalid CIDR {short(raw)}"))
        return None


def _parse_ip_block(raw: Any, path: str, errors: list[FieldError]) -> IPBlock | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, "must be an object with cidr and except"))
        return None
    for key in sorted(set(raw) - {"cidr", "except"}):
        errors.append(FieldError(f"{path}.{key}", "unknown field"))
    cidr = _parse_cidr(raw.get("cidr"), f"{path}.cidr", errors)
    raw_except = raw.get("except") or []
    if not isinstance(raw_except, list):
        errors.append(FieldError(f"{path}.except", "must be a list of CIDRs"))
        return None
    excepts: list[IPNetwork] = []
    for i, item in enumerate(raw_except):
        epath = f"{path}.except[{i}]"
        exc = _parse_cidr(item, epath, errors)
        if exc is None or cidr is None:
            continue
        if exc.version != cidr.version:
            errors.append(FieldError(epath, f"{exc} is not of the same IP family as cidr {cidr}"))
        elif not exc.subnet_of(cidr) or exc.prefixlen <= cidr.prefixlen:  # type: ignore[arg-type]
            errors.append(FieldError(epath, f"{exc} must be a strict subset of cidr {cidr}"))
        else:
            excepts.append(exc)
    if cidr is None:
        return None
    return IPBlock(
        cidr, tuple(sorted(set(excepts), key=lambda n: (n.network_address, n.prefixlen)))
    )


def _parse_ports(raw: Any, path: str, errors: list[FieldError]) -> tuple[PolicyPort, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(FieldError(path, "must be a list of ports"))
        return ()
    ports: list[PolicyPort] = []
    for i, item in enumerate(raw):
        port = _parse_port(item, f"{path}[{i}]", errors)
        if port is not None:
            ports.append(port)
    return tuple(ports)


def _parse_port(raw: Any, path: str, errors: list[FieldError]) -> PolicyPort | None:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, "must be an object"))
        return None
    for key in sorted(set(raw) - {"protocol", "port", "endPort"}):
        errors.append(FieldError(f"{path}.{key}", "unknown field"))
    protocol = raw.get("protocol") or "TCP"
    ok = True
    if protocol not in PROTOCOLS:
        errors.append(
            FieldError(
                f"{path}.protocol", f"unknown protocol {short(protocol)}; expected TCP, UDP or SCTP"
            )
        )
        ok = False
    port = raw.get("port")
    end = raw.get("endPort")
    number: int | None = None
    name: str | None = None
    if isinstance(port, bool):
        errors.append(FieldError(f"{path}.port", f"must be a number or a name, got {short(port)}"))
        ok = False
    elif isinstance(port, int):
        if not 1 <= port <= 65535:
            errors.append(FieldError(f"{path}.port", f"must be between 1 and 65535, got {port}"))
            ok = False
        number = port
    elif isinstance(port, str):
        if not is_svc_name(port):
            errors.append(
                FieldError(
                    f"{path}.port",
                    f"{short(port)} is not a valid port name (at most 15 lowercase letters, digits "
                    "and '-', with at least one letter) nor a number",
                )
            )
            ok = False
        name = port
    elif port is not None:
        errors.append(FieldError(f"{path}.port", f"must be a number or a name, got {short(port)}"))
        ok = False
    if end is not None:
        if isinstance(end, bool) or not isinstance(end, int):
            errors.append(FieldError(f"{path}.endPort", f"must be a number, got {short(end)}"))
            ok = False
        elif number is None:
            errors.append(FieldError(f"{path}.endPort", "may only be set with a numeric port"))
            ok = False
        elif not number <= end <= 65535:
            errors.append(
                FieldError(
                    f"{path}.endPort", f"must be between port ({number}) and 65535, got {end}"
                )
            )
            ok = False
    if not ok:
        return None
    return PolicyPort(protocol=protocol, port=number, end_port=end, name=name)
