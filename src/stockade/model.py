"""The cluster model: immutable Namespaces, Pods and NetworkPolicies.

Objects are parsed from plain dicts, as the API server or a YAML file gives them.
Parsing is strict for NetworkPolicies (every problem is collected, and the policy is
rejected whole) and tolerant only where Kubernetes itself is (a Pod without an IP
simply takes no part yet).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from stockade.errors import FieldError, InvalidObjectError, ObjectRef
from stockade.selectors import EVERYTHING, LabelSelector, parse_selector

PROTOCOLS = ("TCP", "UDP", "SCTP")
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
INGRESS = "Ingress"
EGRESS = "Egress"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Labels = Mapping[str, str]

# IANA_SVC_NAME as Kubernetes validates a named port: at most 15 characters,
# lowercase letters, digits and '-', at least one letter, no leading, trailing or
# doubled '-'.
_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


def _frozen_labels(raw: Any, path: str, errors: list[FieldError]) -> Labels:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, "must be a map of strings"))
        return MappingProxyType({})
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str):
            errors.append(FieldError(f"{path}.{key}", f"must be a string, got {value!r}"))
            continue
        out[key] = value
    return MappingProxyType(out)


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

    @property
    def host_ip(self) -> str:
        """The node's primary address (``status.hostIP``), or empty when unknown."""
        return self.host_ips[0] if self.host_ips else ""

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

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
        """The number of this pod's container port ``name``/``protocol``, if any."""
        for cp in self.ports:
            if cp.name == name and cp.protocol == protocol:
                return cp.port
        return None


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

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


ClusterObject = Namespace | Pod | NetworkPolicy


def object_ref(obj: Mapping[str, Any]) -> ObjectRef:
    """Kind, namespace and name of a raw object, as far as they can be read."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    kind = obj.get("kind")
    return ObjectRef(
        kind=kind if isinstance(kind, str) and kind else "<unknown kind>",
        namespace=meta.get("namespace") if isinstance(meta.get("namespace"), str) else None,
        name=str(meta.get("name") or "<unnamed>"),
    )


def parse_object(obj: Mapping[str, Any], source: str | None = None) -> ClusterObject:
    """Parse a Namespace, Pod or NetworkPolicy dict.

    Raises :class:`InvalidObjectError` listing every problem found.
    """
    ref = object_ref(obj)
    kind = obj.get("kind")
    if kind == "Pod":
        return parse_pod(obj, source)
    if kind == "Namespace":
        return parse_namespace(obj, source)
    if kind == "NetworkPolicy":
        return parse_policy(obj, source)
    raise InvalidObjectError(ref, [FieldError("kind", f"unsupported kind {kind!r}")], source=source)


def _metadata(
    obj: Mapping[str, Any], errors: list[FieldError], namespaced: bool
) -> tuple[str, str, Labels]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        errors.append(FieldError("metadata", "required"))
        return "", "", MappingProxyType({})
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        errors.append(FieldError("metadata.name", "required, a non-empty string"))
        name = ""
    namespace = meta.get("namespace", "default") if namespaced else ""
    if namespaced and (not isinstance(namespace, str) or not namespace):
        errors.append(FieldError("metadata.namespace", "must be a non-empty string"))
        namespace = ""
    labels = _frozen_labels(meta.get("labels"), "metadata.labels", errors)
    return namespace, name, labels


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
    if not isinstance(raw, str):
        errors.append(FieldError(path, "must be an IP address string"))
        return None
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        errors.append(FieldError(path, f"invalid IP address {raw!r}"))
        return None


def _pod_ips(status: Mapping[str, Any], errors: list[FieldError]) -> tuple[str, ...]:
    ips: list[str] = []
    pod_ips = status.get("podIPs")
    if isinstance(pod_ips, list) and pod_ips:
        for i, item in enumerate(pod_ips):
            raw = item.get("ip") if isinstance(item, Mapping) else None
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
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            value = item.get("ip") if isinstance(item, Mapping) else None
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
            continue
        for ci, container in enumerate(containers):
            if not isinstance(container, Mapping):
                continue
            if group == "initContainers" and container.get("restartPolicy") != "Always":
                # Only sidecar init containers keep running and serve ports.
                continue
            for pi, raw in enumerate(container.get("ports") or []):
                path = f"spec.{group}[{ci}].ports[{pi}]"
                port = _container_port(raw, path, errors)
                if port is not None:
                    ports.append(port)
    return tuple(ports)


def _container_port(raw: Any, path: str, errors: list[FieldError]) -> ContainerPort | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, "must be an object"))
        return None
    number = raw.get("containerPort")
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
        errors.append(FieldError(f"{path}.containerPort", f"must be 1-65535, got {number!r}"))
        return None
    protocol = raw.get("protocol") or "TCP"
    if protocol not in PROTOCOLS:
        errors.append(FieldError(f"{path}.protocol", f"unknown protocol {protocol!r}"))
        return None
    name = raw.get("name") or ""
    if not isinstance(name, str):
        errors.append(FieldError(f"{path}.name", "must be a string"))
        return None
    return ContainerPort(name, number, protocol)


def parse_pod(obj: Mapping[str, Any], source: str | None = None) -> Pod:
    """Parse a Pod: labels, node, IPs, phase, hostNetwork and container ports."""
    errors: list[FieldError] = []
    namespace, name, labels = _metadata(obj, errors, namespaced=True)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if not isinstance(spec, Mapping):
        errors.append(FieldError("spec", "must be an object"))
        spec = {}
    if not isinstance(status, Mapping):
        errors.append(FieldError("status", "must be an object"))
        status = {}
    ips = _pod_ips(status, errors)
    ports = _container_ports(spec, errors)
    node = spec.get("nodeName") or ""
    phase = status.get("phase") or ("Running" if ips else "Pending")
    host_ips = _host_ips(status, errors)
    if not isinstance(node, str):
        errors.append(FieldError("spec.nodeName", "must be a string"))
    if not isinstance(phase, str):
        errors.append(FieldError("status.phase", "must be a string"))
    if errors:
        raise InvalidObjectError(object_ref(obj), errors, source)
    return Pod(
        namespace=namespace,
        name=name,
        labels=labels,
        node_name=node,
        ips=ips,
        host_network=bool(spec.get("hostNetwork", False)),
        phase=phase,
        ports=ports,
        host_ips=host_ips,
    )


def parse_policy(obj: Mapping[str, Any], source: str | None = None) -> NetworkPolicy:
    """Parse and validate a NetworkPolicy; every problem is collected.

    ``policyTypes`` defaults as the API server defaults it: Ingress always, and
    Egress when the policy has at least one egress rule.
    """
    errors: list[FieldError] = []
    namespace, name, _ = _metadata(obj, errors, namespaced=True)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        errors.append(FieldError("spec", "required, an object"))
        raise InvalidObjectError(object_ref(obj), errors, source)
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
    if errors:
        raise InvalidObjectError(object_ref(obj), errors, source)
    return NetworkPolicy(
        namespace=namespace,
        name=name,
        pod_selector=pod_selector,
        ingress=ingress_rules if INGRESS in types else None,
        egress=egress_rules if EGRESS in types else None,
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
                FieldError(f"spec.policyTypes[{i}]", f"must be Ingress or Egress, got {item!r}")
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
        errors.append(FieldError(path, f"must be a CIDR such as 10.0.0.0/8, got {raw!r}"))
        return None
    try:
        # Host bits are tolerated and masked, as the API server long accepted them.
        return ipaddress.ip_network(raw.strip(), strict=False)
    except ValueError:
        errors.append(FieldError(path, f"invalid CIDR {raw!r}"))
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
                f"{path}.protocol", f"unknown protocol {protocol!r}; expected TCP, UDP or SCTP"
            )
        )
        ok = False
    port = raw.get("port")
    end = raw.get("endPort")
    number: int | None = None
    name: str | None = None
    if isinstance(port, bool):
        errors.append(FieldError(f"{path}.port", f"must be a number or a name, got {port!r}"))
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
                    f"{port!r} is not a valid port name (at most 15 lowercase letters, digits "
                    "and '-', with at least one letter) nor a number",
                )
            )
            ok = False
        name = port
    elif port is not None:
        errors.append(FieldError(f"{path}.port", f"must be a number or a name, got {port!r}"))
        ok = False
    if end is not None:
        if isinstance(end, bool) or not isinstance(end, int):
            errors.append(FieldError(f"{path}.endPort", f"must be a number, got {end!r}"))
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
