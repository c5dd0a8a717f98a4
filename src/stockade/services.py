"""Services and EndpointSlices: parsed strictly, and resolved to the backends kube-proxy picks.

stockade never enforces anything on a Service address: kube-proxy DNATs a ClusterIP or
a NodePort to one backend in PREROUTING, and the FORWARD hook judges the packet
after that (docs/semantics.md, "Traffic to Service IPs"). So a Service matters to
stockade in two places, both served by this module:

- ``stockade explain``/``matrix`` accept a Service as the destination and give the
  verdict per backend, as the kernel will (:func:`service_backends`);
- the sandbox keeps EndpointSlices current as pods come and go
  (:func:`desired_slices`, the EndpointSlice controller's job in a real cluster) and
  programs kube-proxy's NAT from them.

Everything here is pure: dicts in, frozen dataclasses or dicts out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stockade.errors import FieldError, InvalidObjectError
from stockade.model import (
    PROTOCOLS,
    Labels,
    Pod,
    expected_string,
    is_svc_name,
    object_ref,
    parse_ip,
    parse_metadata,
)
from stockade.ruleset import stable_hash
from stockade.safetext import short
from stockade.validation import label_key, label_value

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
# The value the upstream controller writes; the sandbox's stand-in writes the same,
# so tools that look for controller-managed slices treat them alike.
MANAGED_BY = "endpointslice-controller.k8s.io"
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
TRAFFIC_POLICIES = ("Cluster", "Local")
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
MAX_ENDPOINTS_PER_SLICE = 100  # the upstream controller's default


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of a Service: ``target`` is a number or a container port's name."""

    name: str
    protocol: str
    port: int
    target: int | str
    node_port: int | None = None

    def label(self) -> str:
        """``http (80/TCP)`` or ``80/TCP``, for messages."""
        text = f"{self.port}/{self.protocol}"
        return f"{self.name} ({text})" if self.name else text


@dataclass(frozen=True, slots=True)
class Service:
    """A Service as far as routing to its backends goes."""

    namespace: str
    name: str
    type: str
    # None: no selector (endpoints are managed by someone else, not from pods).
    selector: Labels | None
    cluster_ips: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    uid: str = ""

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def headless(self) -> bool:
        """No cluster IP: clients reach the backends by their own addresses."""
        return not self.cluster_ips

    def families(self) -> tuple[int, ...]:
        """The IP versions of the cluster IPs, primary first."""
        return tuple(ipaddress.ip_address(ip).version for ip in self.cluster_ips)

    def find_port(self, wanted: int | str, protocol: str | None = None) -> ServicePort | None:
        """The port with that number (or name), and protocol when given."""
        for sp in self.ports:
            if protocol is not None and sp.protocol != protocol:
                continue
            if (isinstance(wanted, int) and sp.port == wanted) or sp.name == wanted:
                return sp
        return None


@dataclass(frozen=True, slots=True)
class SlicePort:
    """A port of an EndpointSlice: the service port's name and the backends' number."""

    name: str
    port: int | None
    protocol: str


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    """One endpoint of a slice (a pod, usually)."""

    addresses: tuple[str, ...]
    ready: bool
    serving: bool
    terminating: bool
    node_name: str
    pod: str  # ``namespace/name`` of the targetRef when it is a Pod, else ""


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """An EndpointSlice: the backends of one Service, one address family."""

    namespace: str
    name: str
    service: str  # the kubernetes.io/service-name label; "" when absent
    address_type: str
    endpoints: tuple[SliceEndpoint, ...]
    ports: tuple[SlicePort, ...]


@dataclass(frozen=True, slots=True)
class Backend:
    """Where kube-proxy may send a connection to one Service port."""

    ip: str
    port: int
    protocol: str
    node_name: str
    pod: str  # ``namespace/name``, "" when the endpoint is not a pod
    ready: bool


# --------------------------------------------------------------------------- parsing


def _port_number(raw: Any, path: str, errors: list[FieldError], low: int = 1) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, int):
        errors.append(FieldError(path, f"must be an integer, got {short(raw)}"))
        return None
    if not low <= raw <= 65535:
        errors.append(FieldError(path, f"must be between {low} and 65535, got {raw}"))
        return None
    return raw


def _protocol(raw: Any, path: str, errors: list[FieldError]) -> str:
    value = "TCP" if raw is None else raw
    if value not in PROTOCOLS:
        errors.append(FieldError(path, f"must be one of {', '.join(PROTOCOLS)}, got {short(raw)}"))
        return "TCP"
    return str(value)


def _choice(
    raw: Any, path: str, choices: Sequence[str], default: str, errors: list[FieldError]
) -> str:
    if raw is None:
        return default
    if raw not in choices:
        errors.append(FieldError(path, f"must be one of {', '.join(choices)}, got {short(raw)}"))
        return default
    return str(raw)


def _selector(raw: Any, errors: list[FieldError]) -> Labels | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        errors.append(FieldError("spec.selector", f"must be a map, got {short(raw)}"))
        return None
    out: dict[str, str] = {}
    for key, value in raw.items():
        path = f"spec.selector.{short(key)}"
        if not isinstance(key, str):
            errors.append(FieldError(path, "label keys must be strings"))
            continue
        if not isinstance(value, str):
            errors.append(FieldError(path, expected_string(value)))
            continue
        problems = label_key(key) + label_value(value)
        errors.extend(FieldError(path, p) for p in problems)
        if not problems:
            out[key] = value
    return out


def _service_port(raw: Any, path: str, errors: list[FieldError]) -> ServicePort | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, f"must be a map, got {short(raw)}"))
        return None
    name = raw.get("name") or ""
    if not isinstance(name, str):
        errors.append(FieldError(f"{path}.name", expected_string(name)))
        name = ""
    port = _port_number(raw.get("port"), f"{path}.port", errors)
    protocol = _protocol(raw.get("protocol"), f"{path}.protocol", errors)
    raw_target = raw.get("targetPort")
    target: int | str | None
    if raw_target is None or (type(raw_target) is int and raw_target == 0):
        target = port  # the API server defaults targetPort to port
    elif isinstance(raw_target, str):
        if raw_target.isascii() and raw_target.isdigit():
            # At most 6 digits: int() of thousands of digits raises, "²" is a digit too.
            number = int(raw_target) if len(raw_target) <= 6 else 10**6
            target = _port_number(number, f"{path}.targetPort", errors)
        elif is_svc_name(raw_target):
            target = raw_target
        else:
            errors.append(
                FieldError(f"{path}.targetPort", f"{short(raw_target)} is not a valid port name")
            )
            target = None
    else:
        target = _port_number(raw_target, f"{path}.targetPort", errors)
    node_port = raw.get("nodePort")
    if node_port is not None:
        node_port = _port_number(node_port, f"{path}.nodePort", errors)
    if port is None or target is None:
        return None
    return ServicePort(name, protocol, port, target, node_port)


def parse_service(obj: Mapping[str, Any], source: str | None = None) -> Service:
    """Parse a Service; raises :class:`InvalidObjectError` listing every problem."""
    errors: list[FieldError] = []
    namespace, name, _ = parse_metadata(obj, errors, namespaced=True)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        errors.append(FieldError("spec", "required"))
        spec = {}
    kind = _choice(spec.get("type"), "spec.type", SERVICE_TYPES, "ClusterIP", errors)
    cluster_ips: list[str] = []
    raw_ips = spec.get("clusterIPs")
    if raw_ips is None:
        raw_ips = [spec["clusterIP"]] if spec.get("clusterIP") else []
    if not isinstance(raw_ips, list):
        errors.append(FieldError("spec.clusterIPs", f"must be a list, got {short(raw_ips)}"))
        raw_ips = []
    for i, raw_ip in enumerate(raw_ips):
        if raw_ip in ("None", ""):
            continue  # headless
        ip = parse_ip(raw_ip, f"spec.clusterIPs[{i}]", errors)
        if ip is not None and ip not in cluster_ips:
            cluster_ips.append(ip)
    ports: list[ServicePort] = []
    raw_ports = spec.get("ports")
    raw_ports = [] if raw_ports is None else raw_ports
    if not isinstance(raw_ports, list):
        errors.append(FieldError("spec.ports", f"must be a list, got {short(raw_ports)}"))
        raw_ports = []
    for i, raw_port in enumerate(raw_ports):
        sp = _service_port(raw_port, f"spec.ports[{i}]", errors)
        if sp is not None:
            ports.append(sp)
    seen = [(p.port, p.protocol) for p in ports]
    if len(set(seen)) != len(seen):
        errors.append(FieldError("spec.ports", "a port and protocol appear twice"))
    if len(ports) > 1 and any(not p.name for p in ports):
        errors.append(FieldError("spec.ports", "every port needs a name when there are several"))
    names = [p.name for p in ports if p.name]
    if len(set(names)) != len(names):
        errors.append(FieldError("spec.ports", "a port name appears twice"))
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    uid = meta.get("uid") or ""
    service = Service(
        namespace=namespace,
        name=name,
        type=kind,
        selector=_selector(spec.get("selector"), errors),
        cluster_ips=tuple(cluster_ips),
        ports=tuple(ports),
        external_traffic_policy=_choice(
            spec.get("externalTrafficPolicy"),
            "spec.externalTrafficPolicy",
            TRAFFIC_POLICIES,
            "Cluster",
            errors,
        ),
        internal_traffic_policy=_choice(
            spec.get("internalTrafficPolicy"),
            "spec.internalTrafficPolicy",
            TRAFFIC_POLICIES,
            "Cluster",
            errors,
        ),
        uid=uid if isinstance(uid, str) else "",
    )
    if errors:
        raise InvalidObjectError(object_ref(obj), errors, source)
    return service


def _condition(
    raw: Mapping[str, Any], key: str, default: bool, path: str, errors: list[FieldError]
) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        errors.append(FieldError(f"{path}.{key}", f"must be a boolean, got {short(value)}"))
        return False
    return value


def _slice_endpoint(
    raw: Any, path: str, address_type: str, errors: list[FieldError]
) -> SliceEndpoint | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, f"must be a map, got {short(raw)}"))
        return None
    addresses: list[str] = []
    raw_addresses = raw.get("addresses")
    if not isinstance(raw_addresses, list) or not raw_addresses:
        errors.append(FieldError(f"{path}.addresses", "required, a non-empty list"))
        raw_addresses = []
    for i, item in enumerate(raw_addresses):
        where = f"{path}.addresses[{i}]"
        if address_type == "FQDN":
            if isinstance(item, str):
                addresses.append(item)
            else:
                errors.append(FieldError(where, expected_string(item)))
            continue
        ip = parse_ip(item, where, errors)
        if ip is not None:
            if f"IPv{ipaddress.ip_address(ip).version}" != address_type:
                errors.append(FieldError(where, f"{ip} is not an {address_type} address"))
            else:
                addresses.append(ip)
    conditions = raw.get("conditions") or {}
    if not isinstance(conditions, Mapping):
        errors.append(FieldError(f"{path}.conditions", f"must be a map, got {short(conditions)}"))
        conditions = {}
    cpath = f"{path}.conditions"
    # Unknown readiness counts as ready, as the API documents for consumers.
    ready = _condition(conditions, "ready", True, cpath, errors)
    serving = _condition(conditions, "serving", ready, cpath, errors)
    terminating = _condition(conditions, "terminating", False, cpath, errors)
    node = raw.get("nodeName") or ""
    if not isinstance(node, str):
        errors.append(FieldError(f"{path}.nodeName", expected_string(node)))
        node = ""
    pod = ""
    ref = raw.get("targetRef")
    if isinstance(ref, Mapping) and ref.get("kind") == "Pod":
        ns, pod_name = ref.get("namespace"), ref.get("name")
        if isinstance(ns, str) and isinstance(pod_name, str):
            pod = f"{ns}/{pod_name}"
    return SliceEndpoint(tuple(addresses), ready, serving, terminating, node, pod)


def parse_endpoint_slice(obj: Mapping[str, Any], source: str | None = None) -> EndpointSlice:
    """Parse an EndpointSlice; raises :class:`InvalidObjectError` listing every problem."""
    errors: list[FieldError] = []
    namespace, name, labels = parse_metadata(obj, errors, namespaced=True)
    address_type = obj.get("addressType")
    if address_type not in ADDRESS_TYPES:
        errors.append(
            FieldError(
                "addressType",
                f"must be one of {', '.join(ADDRESS_TYPES)}, got {short(address_type)}",
            )
        )
        address_type = "IPv4"
    assert isinstance(address_type, str)
    endpoints: list[SliceEndpoint] = []
    raw_endpoints = obj.get("endpoints") or []
    if not isinstance(raw_endpoints, list):
        errors.append(FieldError("endpoints", f"must be a list, got {short(raw_endpoints)}"))
        raw_endpoints = []
    for i, raw in enumerate(raw_endpoints):
        ep = _slice_endpoint(raw, f"endpoints[{i}]", address_type, errors)
        if ep is not None:
            endpoints.append(ep)
    ports: list[SlicePort] = []
    raw_ports = obj.get("ports") or []
    if not isinstance(raw_ports, list):
        errors.append(FieldError("ports", f"must be a list, got {short(raw_ports)}"))
        raw_ports = []
    for i, raw in enumerate(raw_ports):
        path = f"ports[{i}]"
        if not isinstance(raw, Mapping):
            errors.append(FieldError(path, f"must be a map, got {short(raw)}"))
            continue
        port_name = raw.get("name") or ""
        if not isinstance(port_name, str):
            errors.append(FieldError(f"{path}.name", expected_string(port_name)))
            continue
        number = raw.get("port")
        if number is not None:
            number = _port_number(number, f"{path}.port", errors)
        ports.append(
            SlicePort(port_name, number, _protocol(raw.get("protocol"), f"{path}.protocol", errors))
        )
    if errors:
        raise InvalidObjectError(object_ref(obj), errors, source)
    return EndpointSlice(
        namespace,
        name,
        labels.get(SERVICE_NAME_LABEL, ""),
        address_type,
        tuple(endpoints),
        tuple(ports),
    )


# --------------------------------------------------------------------------- resolution


def service_backends(
    service: Service, port: ServicePort, slices: Iterable[EndpointSlice], *, ready_only: bool = True
) -> tuple[Backend, ...]:
    """The backends kube-proxy balances ``port`` of ``service`` over, from its slices.

    A slice port is matched by the service port's name and protocol, as kube-proxy
    does; a slice that does not list the port contributes nothing for it. Without
    ``ready_only`` terminating and unready endpoints are included too (marked).
    """
    out: dict[tuple[str, int], Backend] = {}
    for es in slices:
        if es.namespace != service.namespace or es.service != service.name:
            continue
        if es.address_type not in ("IPv4", "IPv6"):
            continue
        number = next(
            (
                sp.port
                for sp in es.ports
                if sp.name == port.name and sp.protocol == port.protocol and sp.port is not None
            ),
            None,
        )
        if number is None:
            continue
        for ep in es.endpoints:
            if ready_only and not ep.ready:
                continue
            for ip in ep.addresses:
                out.setdefault(
                    (ip, number), Backend(ip, number, port.protocol, ep.node_name, ep.pod, ep.ready)
                )
    return tuple(sorted(out.values(), key=_backend_order))


def _backend_order(backend: Backend) -> tuple[int, int, int]:
    addr = ipaddress.ip_address(backend.ip)
    return (addr.version, int(addr), backend.port)


def target_number(port: ServicePort, pod: Pod) -> int | None:
    """The pod's port a service port sends to: the number, or the pod's named port."""
    if isinstance(port.target, int):
        return port.target
    return pod.named_port(port.target, port.protocol)


def selected_pods(service: Service, pods: Iterable[Pod]) -> list[Pod]:
    """The pods a selector-bearing Service routes to: same namespace, labels match.

    Finished pods and pods without an address are no endpoints (the EndpointSlice
    controller skips them); host-network pods are, at their node's address.
    """
    if service.selector is None or not service.selector:
        # A Service with no selector (or an empty one, which the upstream controller
        # treats the same) gets no controller-made endpoints.
        return []
    selector = service.selector
    return sorted(
        (
            p
            for p in pods
            if p.namespace == service.namespace
            and p.active
            and all(p.labels.get(k) == v for k, v in selector.items())
        ),
        key=lambda p: p.key,
    )


def desired_slices(service: Service, pods: Iterable[Pod]) -> list[dict[str, Any]]:
    """The EndpointSlices the upstream controller would keep for ``service``, as objects.

    One slice per address family and per distinct mapping of service ports to pod
    ports (named target ports may resolve differently on different pods), at most
    :data:`MAX_ENDPOINTS_PER_SLICE` endpoints each. Names are deterministic
    (``<service>-<hash>``) so the caller can diff by name. A pod that does not
    declare a named target port is left out of that port's mapping, as upstream.
    """
    if service.type == "ExternalName":
        return []
    families = service.families() or (4, 6)
    groups: dict[tuple[int, tuple[tuple[str, str, int], ...]], list[dict[str, Any]]] = {}
    for pod in selected_pods(service, pods):
        mapping = tuple(
            (sp.name, sp.protocol, number)
            for sp in service.ports
            if (number := target_number(sp, pod)) is not None
        )
        for ip in pod.ips:
            version = ipaddress.ip_address(ip).version
            if version not in families:
                continue
            endpoint: dict[str, Any] = {
                "addresses": [ip],
                "conditions": {
                    "ready": not pod.deleting,
                    "serving": True,
                    "terminating": pod.deleting,
                },
                "targetRef": {"kind": "Pod", "namespace": pod.namespace, "name": pod.name},
            }
            if pod.node_name:
                endpoint["nodeName"] = pod.node_name
            groups.setdefault((version, mapping), []).append(endpoint)
    out: list[dict[str, Any]] = []
    for (family, mapping), endpoints in sorted(groups.items()):
        for start in range(0, len(endpoints), MAX_ENDPOINTS_PER_SLICE):
            chunk = endpoints[start : start + MAX_ENDPOINTS_PER_SLICE]
            digest = stable_hash({"v": family, "ports": list(mapping), "chunk": start}, 10)
            name = f"{service.name[: 63 - 11]}-{digest}"
            meta: dict[str, Any] = {
                "name": name,
                "namespace": service.namespace,
                "labels": {SERVICE_NAME_LABEL: service.name, MANAGED_BY_LABEL: MANAGED_BY},
            }
            if service.uid:
                meta["ownerReferences"] = [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "name": service.name,
                        "uid": service.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ]
            out.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": meta,
                    "addressType": f"IPv{family}",
                    "endpoints": chunk,
                    "ports": [
                        {"name": name_, "protocol": proto, "port": number}
                        for name_, proto, number in mapping
                    ],
                }
            )
    return out
