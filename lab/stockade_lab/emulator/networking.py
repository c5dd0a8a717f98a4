"""Services and EndpointSlices as kube-apiserver defaults, validates and allocates them.

:class:`ServiceNetwork` holds the cluster's service CIDRs and node port range with what
is handed out of them (:mod:`stockade_lab.emulator.allocation`). On every write of a
Service it fills in the defaults (``type``, ``sessionAffinity``, port ``protocol`` and
``targetPort``, traffic policies), resolves ``ipFamilyPolicy``/``ipFamilies`` against the
configured families, allocates cluster IPs and node ports (or honours the requested
ones), keeps what an update leaves out and refuses to change ``clusterIP``.
:func:`admit_endpointslice` validates and defaults a ``discovery.k8s.io/v1``
EndpointSlice. Errors are 422 ``Invalid`` worded as kube-apiserver words them (a full
range is 500, as there).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from typing import Any

from stockade_lab.emulator.allocation import (
    DEFAULT_NODE_PORT_RANGE,
    DEFAULT_SERVICE_CIDRS,
    AllocationError,
    IPRange,
    PortRange,
    RangeFullError,
    Transaction,
    ip_family,
    parse_service_cidrs,
)
from stockade_lab.emulator.status_errors import ApiError, Cause, invalid_fields

Obj = dict[str, Any]

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
IP_FAMILIES = ("IPv4", "IPv6")
PROTOCOLS = ("SCTP", "TCP", "UDP")
TRAFFIC_POLICIES = ("Cluster", "Local")
SESSION_AFFINITIES = ("ClientIP", "None")
ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
MAX_ENDPOINTS = 1000
MAX_ADDRESSES = 100
MAX_SLICE_PORTS = 20000
DEFAULT_AFFINITY_TIMEOUT = 10800
_NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def _go(value: Any) -> str:
    """A value as Go's ``%#v`` shows it in field errors (strings quoted)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool | int):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True)


class FieldErrors:
    """Field errors collected during one admission."""

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def __bool__(self) -> bool:
        return bool(self.causes)

    def invalid(self, field: str, value: Any, detail: str) -> None:
        self.causes.append(
            Cause("FieldValueInvalid", field, f"Invalid value: {_go(value)}: {detail}")
        )

    def required(self, field: str, detail: str = "") -> None:
        message = f"Required value: {detail}" if detail else "Required value"
        self.causes.append(Cause("FieldValueRequired", field, message))

    def unsupported(self, field: str, value: Any, supported: Sequence[str]) -> None:
        values = ", ".join(json.dumps(s) for s in supported)
        self.causes.append(
            Cause(
                "FieldValueNotSupported",
                field,
                f"Unsupported value: {_go(value)}: supported values: {values}",
            )
        )

    def forbidden(self, field: str, detail: str) -> None:
        self.causes.append(Cause("FieldValueForbidden", field, f"Forbidden: {detail}"))

    def too_many(self, field: str, actual: int, limit: int) -> None:
        self.causes.append(
            Cause(
                "FieldValueTooMany",
                field,
                f"Too many: {actual}: must have at most {limit} items",
            )
        )

    def duplicate(self, field: str, value: Any) -> None:
        self.causes.append(Cause("FieldValueDuplicate", field, f"Duplicate value: {_go(value)}"))

    def check(self, kind: str, name: str, group: str = "") -> None:
        """Raise the 422 of every error collected, if any."""
        if self.causes:
            raise invalid_fields(kind, name, self.causes, group)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _canonical(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _needs_cluster_ip(spec: Obj) -> bool:
    return bool(spec.get("type", "ClusterIP") != "ExternalName")


def _needs_node_ports(spec: Obj) -> bool:
    kind = spec.get("type", "ClusterIP")
    if kind == "NodePort":
        return True
    return kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False


def _service_ports(ports: list[Any], errs: FieldErrors) -> list[Obj]:
    """The ports of a Service with ``protocol`` and ``targetPort`` defaulted."""
    names: set[str] = set()
    defaulted: list[Obj] = []
    for i, raw in enumerate(ports):
        where = f"spec.ports[{i}]"
        if not isinstance(raw, dict):
            errs.invalid(where, raw, "must be an object")
            continue
        port = dict(raw)
        protocol = port.setdefault("protocol", "TCP")
        if protocol not in PROTOCOLS:
            errs.unsupported(f"{where}.protocol", protocol, PROTOCOLS)
        number = _int(port.get("port"))
        if number is None or not 1 <= number <= 65535:
            errs.invalid(
                f"{where}.port", port.get("port"), "must be between 1 and 65535, inclusive"
            )
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
        port_name = port.get("name") or ""
        if len(ports) > 1 and not port_name:
            errs.required(f"{where}.name")
        elif port_name in names:
            errs.duplicate(f"{where}.name", port_name)
        names.add(port_name)
        defaulted.append(port)
    return defaulted


def _full(what: str) -> ApiError:
    return ApiError(
        500, "InternalError", f"Internal error occurred: failed to allocate a {what}: range is full"
    )


class ServiceNetwork:
    """The service CIDRs and node port range of the emulated cluster, and their allocations.

    ``service_cidrs``: one or two CIDRs of different families, the first the primary
    (a comma-separated string or a sequence); ``node_ports``: the node port range.
    """

    def __init__(
        self,
        service_cidrs: str | Sequence[str] = DEFAULT_SERVICE_CIDRS,
        node_ports: tuple[int, int] = DEFAULT_NODE_PORT_RANGE,
    ) -> None:
        self.ranges: tuple[IPRange, ...] = parse_service_cidrs(service_cidrs)
        self.by_family = {r.family: r for r in self.ranges}
        self.node_ports = PortRange(*node_ports)

    @property
    def dual_stack(self) -> bool:
        """Whether both IP families are configured."""
        return len(self.ranges) == 2

    @property
    def primary(self) -> str:
        """The cluster's primary IP family (of the first service CIDR)."""
        return self.ranges[0].family

    # --- what a stored Service holds ---------------------------------------------------------

    def _held_ips(self, spec: Obj | None) -> set[str]:
        if not spec or not _needs_cluster_ip(spec):
            return set()
        held = set()
        for address in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            canonical = _canonical(address) if isinstance(address, str) else None
            if canonical is not None:
                held.add(canonical)
        return held

    @staticmethod
    def _held_ports(spec: Obj | None) -> set[int]:
        if not spec or spec.get("type") not in _NODE_PORT_TYPES:
            return set()
        ports = spec.get("ports") or []
        found = (_int(p.get("nodePort")) for p in ports if isinstance(p, dict))
        return {port for port in found if port}

    def _release_ip(self, address: str, txn: Transaction | None) -> None:
        family = ip_family(address)
        ip_range = self.by_family.get(family or "")
        if ip_range is None:
            return
        if txn is None:
            ip_range.release(address)
        else:
            txn.release_ip(ip_range, address)

    def release(self, service: Obj) -> None:
        """Give back the cluster IPs and node ports of a Service that is gone."""
        spec = service.get("spec") or {}
        for address in self._held_ips(spec):
            self._release_ip(address, None)
        for port in self._held_ports(spec):
            self.node_ports.release(port)

    # --- admission ---------------------------------------------------------------------------

    def admit(self, namespace: str, name: str, service: Obj, old: Obj | None) -> Transaction:
        """Default, validate and allocate ``service`` (in place) on a create or an update.

        ``old`` is the stored version on an update. Returns the transaction of the
        allocations, for the caller to commit once the write is stored (or roll back);
        on an error everything is rolled back already.
        """
        spec = service.get("spec")
        if not isinstance(spec, dict):
            spec = service["spec"] = {}
        old_spec = (old.get("spec") or {}) if old is not None else None
        txn = Transaction()
        try:
            self._admit(namespace, name, spec, old_spec, txn)
        except BaseException:
            txn.rollback()
            raise
        return txn

    def _admit(
        self, namespace: str, name: str, spec: Obj, old: Obj | None, txn: Transaction
    ) -> None:
        errs = FieldErrors()
        self._defaults(spec, errs)
        errs.check("Service", name)
        if _needs_cluster_ip(spec):
            self._cluster_ips(namespace, name, spec, old, errs, txn)
        else:
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if old is not None and spec.get(key) == old.get(key):
                    spec.pop(key, None)  # left over from the type before
            spec.pop("ipFamilies", None)
            spec.pop("ipFamilyPolicy", None)
            if spec.get("clusterIP") or spec.get("clusterIPs"):
                errs.forbidden("spec.clusterIP", "may not be set for ExternalName services")
        errs.check("Service", name)
        self._allocate_node_ports(spec, old, errs, txn)
        errs.check("Service", name)
        new_ips = self._held_ips(spec)
        for address in self._held_ips(old) - new_ips:
            self._release_ip(address, txn)
        for port in self._held_ports(old) - self._held_ports(spec):
            txn.release_port(self.node_ports, port)

    @staticmethod
    def _defaults(spec: Obj, errs: FieldErrors) -> None:
        kind = spec.get("type") or "ClusterIP"
        spec["type"] = kind
        if kind not in SERVICE_TYPES:
            errs.unsupported("spec.type", kind, SERVICE_TYPES)
            return
        affinity = spec.get("sessionAffinity") or "None"
        spec["sessionAffinity"] = affinity
        if affinity not in SESSION_AFFINITIES:
            errs.unsupported("spec.sessionAffinity", affinity, SESSION_AFFINITIES)
        elif affinity == "ClientIP":
            config = dict(spec.get("sessionAffinityConfig") or {})
            client = dict(config.get("clientIP") or {})
            client.setdefault("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
            config["clientIP"] = client
            spec["sessionAffinityConfig"] = config
        ports = spec.get("ports") or []
        if not isinstance(ports, list):
            errs.invalid("spec.ports", ports, "must be a list")
            return
        defaulted = _service_ports(ports, errs)
        spec["ports"] = defaulted
        if kind == "ExternalName":
            if not spec.get("externalName"):
                errs.required("spec.externalName")
            return
        if not defaulted and spec.get("clusterIP") != "None":
            errs.required("spec.ports")
        internal = spec.setdefault("internalTrafficPolicy", "Cluster")
        if internal not in TRAFFIC_POLICIES:
            errs.unsupported("spec.internalTrafficPolicy", internal, TRAFFIC_POLICIES)
        if kind in _NODE_PORT_TYPES:
            external = spec.setdefault("externalTrafficPolicy", "Cluster")
            if external not in TRAFFIC_POLICIES:
                errs.unsupported("spec.externalTrafficPolicy", external, TRAFFIC_POLICIES)
        if kind == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)

    def _cluster_ips(  # noqa: PLR0915
        self,
        namespace: str,
        name: str,
        spec: Obj,
        old: Obj | None,
        errs: FieldErrors,
        txn: Transaction,
    ) -> None:
        inherited_ips = inherited_families = False
        old_ips: list[str] = []
        if old is not None and _needs_cluster_ip(old) and old.get("clusterIP"):
            old_ip = old["clusterIP"]
            old_ips = list(old.get("clusterIPs") or [old_ip])
            if not spec.get("clusterIP") and not spec.get("clusterIPs"):
                spec["clusterIP"] = old_ip
                spec["clusterIPs"] = list(old_ips)
                inherited_ips = True
            elif spec.get("clusterIP") == old_ip and not spec.get("clusterIPs"):
                spec["clusterIPs"] = list(old_ips)
                inherited_ips = True
            if not spec.get("ipFamilyPolicy") and old.get("ipFamilyPolicy"):
                spec["ipFamilyPolicy"] = old["ipFamilyPolicy"]
            if not spec.get("ipFamilies") and old.get("ipFamilies"):
                spec["ipFamilies"] = list(old["ipFamilies"])
                inherited_families = True
            wanted = spec.get("clusterIP") or (spec.get("clusterIPs") or [""])[0]
            if wanted != old_ip:
                errs.invalid("spec.clusterIP", wanted, "field is immutable")
                return
        cluster_ip = spec.get("clusterIP") or ""
        listed = spec.get("clusterIPs") or []
        if not isinstance(cluster_ip, str) or not isinstance(listed, list):
            errs.invalid("spec.clusterIPs", listed, "must be a list of IP addresses")
            return
        if cluster_ip and listed and listed[0] != cluster_ip:
            errs.invalid(
                "spec.clusterIPs[0]", listed[0], "must match clusterIP when both are specified"
            )
        ips: list[str] = [str(ip) for ip in listed] or ([cluster_ip] if cluster_ip else [])
        headless = ips[:1] == ["None"]
        if len(ips) > 2:
            errs.too_many("spec.clusterIPs", len(ips), 2)
        if headless and len(ips) > 1:
            errs.invalid("spec.clusterIPs", ips, 'must be a single "None" for a headless service')
        ip_families: list[str] = []
        if not headless:
            for i, address in enumerate(ips):
                family = ip_family(address)
                if family is None:
                    errs.invalid(f"spec.clusterIPs[{i}]", address, "must be a valid IP address")
                else:
                    ip_families.append(family)
            if len(ip_families) == 2 and ip_families[0] == ip_families[1]:
                errs.invalid(
                    "spec.clusterIPs[1]",
                    ips[1],
                    "must be of the other IP family than clusterIPs[0]",
                )
        if old_ips and not headless:
            for i in range(min(len(old_ips), len(ips))):
                if _canonical(ips[i]) != _canonical(old_ips[i]):
                    errs.invalid(f"spec.clusterIPs[{i}]", ips, "may not change once set")
        policy = spec.get("ipFamilyPolicy")
        if policy is not None and policy not in IP_FAMILY_POLICIES:
            errs.unsupported("spec.ipFamilyPolicy", policy, IP_FAMILY_POLICIES)
        families_in = spec.get("ipFamilies") or []
        families: list[str] = []
        if not isinstance(families_in, list):
            errs.invalid("spec.ipFamilies", families_in, "must be a list")
            families_in = []
        if len(families_in) > 2:
            errs.too_many("spec.ipFamilies", len(families_in), 2)
        for i, family in enumerate(families_in):
            if family not in IP_FAMILIES:
                errs.unsupported(f"spec.ipFamilies[{i}]", family, IP_FAMILIES)
            elif family in families:
                errs.duplicate(f"spec.ipFamilies[{i}]", family)
            else:
                families.append(family)
        if errs:
            return
        for i, family in enumerate(ip_families):
            if i < len(families) and families[i] != family:
                errs.invalid(
                    f"spec.ipFamilies[{i}]",
                    families[i],
                    f"does not match the IP family of clusterIPs[{i}] ({ips[i]})",
                )
            elif i >= len(families):
                families.append(family)
        selectorless_headless = headless and not spec.get("selector")
        if policy is None:
            policy = "RequireDualStack" if selectorless_headless else "SingleStack"
        if policy == "SingleStack":
            if inherited_families:  # a downgrade from dual-stack drops the secondary
                families = families[:1]
            if inherited_ips:
                ips = ips[:1]
            if len(families) > 1 or len(ips) > 1:
                errs.invalid(
                    "spec.ipFamilyPolicy",
                    policy,
                    "must be RequireDualStack or PreferDualStack when multiple IP families "
                    "are specified",
                )
        if policy == "RequireDualStack" and not self.dual_stack and not selectorless_headless:
            errs.invalid(
                "spec.ipFamilyPolicy",
                policy,
                "this cluster is not configured for dual-stack services",
            )
        if selectorless_headless:
            families = [f for f in families if f in self.by_family]
        for i, family in enumerate(families):
            if family not in self.by_family:
                errs.invalid(f"spec.ipFamilies[{i}]", family, "not configured on this cluster")
        if errs:
            return
        if not families:
            families = [self.primary]
        if policy != "SingleStack" and len(families) == 1 and self.dual_stack:
            families.append(next(r.family for r in self.ranges if r.family != families[0]))
        spec["ipFamilyPolicy"] = policy
        spec["ipFamilies"] = families
        if headless:
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
            return
        held = {_canonical(address) for address in old_ips}
        kubernetes = (namespace, name) == ("default", "kubernetes")
        got: list[str] = []
        for i, family in enumerate(families):
            ip_range = self.by_family[family]
            if i < len(ips):
                if _canonical(ips[i]) in held:
                    got.append(ips[i])
                    continue
                try:
                    got.append(txn.allocate_ip(ip_range, ips[i], reserved_ok=kubernetes))
                except AllocationError as exc:
                    errs.invalid("spec.clusterIPs", ips, f"failed to allocate IP {ips[i]}: {exc}")
                continue
            try:
                if kubernetes and i == 0 and not ip_range.is_allocated(ip_range.reserved):
                    got.append(txn.allocate_ip(ip_range, ip_range.reserved, reserved_ok=True))
                else:
                    got.append(txn.allocate_ip(ip_range))
            except RangeFullError as exc:
                raise _full("serviceIP") from exc
        if errs:
            return
        spec["clusterIP"] = got[0]
        spec["clusterIPs"] = got

    def _allocate_node_ports(  # noqa: PLR0915
        self, spec: Obj, old: Obj | None, errs: FieldErrors, txn: Transaction
    ) -> None:
        ports: list[Obj] = spec.get("ports") or []
        old_held = self._held_ports(old)
        if spec.get("type") not in _NODE_PORT_TYPES:
            for i, port in enumerate(ports):
                if not port.get("nodePort"):
                    continue
                if port["nodePort"] in old_held:
                    port.pop("nodePort")  # left over from the type before
                else:
                    errs.forbidden(
                        f"spec.ports[{i}].nodePort",
                        f"may not be used when `type` is '{spec.get('type')}'",
                    )
            return
        if old is not None and old_held:
            by_name = {
                p.get("name") or "": p["nodePort"]
                for p in old.get("ports") or []
                if isinstance(p, dict) and p.get("nodePort")
            }
            used = {p["nodePort"] for p in ports if p.get("nodePort")}
            for port in ports:
                if not port.get("nodePort"):
                    value = by_name.get(port.get("name") or "")
                    if value and value not in used:
                        port["nodePort"] = value
                        used.add(value)
        taken: set[int] = set()
        seen: set[tuple[int, str]] = set()
        by_number: dict[int, int] = {}
        for i, port in enumerate(ports):
            raw = port.get("nodePort")
            if raw in (None, 0):
                continue
            value = _int(raw)
            where = f"spec.ports[{i}].nodePort"
            if value is None:
                errs.invalid(where, raw, "must be an integer")
                continue
            if (value, port["protocol"]) in seen:
                errs.duplicate(where, value)
                continue
            seen.add((value, port["protocol"]))
            if value not in old_held and value not in taken:
                try:
                    txn.allocate_port(self.node_ports, value)
                except AllocationError as exc:
                    errs.invalid(where, value, str(exc))
                    continue
            taken.add(value)
            by_number.setdefault(_int(port.get("port")) or 0, value)
        if errs or not _needs_node_ports(spec):
            return
        for port in ports:
            if port.get("nodePort"):
                continue
            number = _int(port.get("port")) or 0
            reuse = by_number.get(number)
            if reuse is not None and (reuse, port["protocol"]) not in seen:
                value = reuse
            else:
                try:
                    value = txn.allocate_port(self.node_ports)
                except RangeFullError as exc:
                    raise _full("nodePort") from exc
                by_number.setdefault(number, value)
            seen.add((value, port["protocol"]))
            port["nodePort"] = value


def _endpoint_address_error(address_type: str, address: Any) -> str | None:
    if not isinstance(address, str):
        return "must be a string"
    if address_type in IP_FAMILIES:
        if ip_family(address) != address_type:
            return f"must be a valid {address_type} address"
        return None
    if len(address) > 253 or not _DNS1123_SUBDOMAIN.match(address):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character"
        )
    return None


def _check_endpoints(address_type: Any, endpoints: Any, errs: FieldErrors) -> None:
    if endpoints is None:
        return
    if not isinstance(endpoints, list):
        errs.invalid("endpoints", endpoints, "must be a list")
        return
    if len(endpoints) > MAX_ENDPOINTS:
        errs.too_many("endpoints", len(endpoints), MAX_ENDPOINTS)
        return
    for i, endpoint in enumerate(endpoints):
        where = f"endpoints[{i}]"
        if not isinstance(endpoint, dict):
            errs.invalid(where, endpoint, "must be an object")
            continue
        addresses = endpoint.get("addresses") or []
        if not isinstance(addresses, list):
            errs.invalid(f"{where}.addresses", addresses, "must be a list")
        elif not addresses:
            errs.required(f"{where}.addresses", "must contain at least 1 address")
        elif len(addresses) > MAX_ADDRESSES:
            errs.too_many(f"{where}.addresses", len(addresses), MAX_ADDRESSES)
        elif address_type in ADDRESS_TYPES:
            for j, address in enumerate(addresses):
                problem = _endpoint_address_error(address_type, address)
                if problem is not None:
                    errs.invalid(f"{where}.addresses[{j}]", address, problem)


def _slice_ports(ports: Any, errs: FieldErrors) -> Any:
    """The ports with ``protocol`` defaulted (new dicts), or ``ports`` when not a list."""
    if ports is None:
        return None
    if not isinstance(ports, list):
        errs.invalid("ports", ports, "must be a list")
        return ports
    if len(ports) > MAX_SLICE_PORTS:
        errs.too_many("ports", len(ports), MAX_SLICE_PORTS)
        return ports
    names: set[str] = set()
    defaulted: list[Any] = []
    for i, raw in enumerate(ports):
        where = f"ports[{i}]"
        if not isinstance(raw, dict):
            errs.invalid(where, raw, "must be an object")
            defaulted.append(raw)
            continue
        port = {**raw, "protocol": raw.get("protocol") or "TCP"}
        if port["protocol"] not in PROTOCOLS:
            errs.unsupported(f"{where}.protocol", port["protocol"], PROTOCOLS)
        number = port.get("port")
        if number is not None and (_int(number) is None or not 0 <= number <= 65535):
            errs.invalid(f"{where}.port", number, "must be between 0 and 65535, inclusive")
        port_name = port.get("name") or ""
        if port_name in names:
            errs.duplicate(f"{where}.name", port_name)
        names.add(port_name)
        defaulted.append(port)
    return defaulted


def admit_endpointslice(slice_: Obj, old: Obj | None) -> None:
    """Validate a ``discovery.k8s.io/v1`` EndpointSlice and default its ports' protocol.

    Checked as kube-apiserver checks it: ``addressType`` (required, one of FQDN, IPv4,
    IPv6, immutable), at most 1000 endpoints of 1 to 100 addresses of that type, at most
    20000 ports with a number 0-65535 (optional), a protocol and unique names. Raises a
    422 ``Invalid``. Nothing it was given is mutated: ``ports`` is replaced by a new list.
    """
    name = (slice_.get("metadata") or {}).get("name") or ""
    errs = FieldErrors()
    address_type = slice_.get("addressType")
    if not address_type:
        errs.required("addressType")
    elif address_type not in ADDRESS_TYPES:
        errs.unsupported("addressType", address_type, ADDRESS_TYPES)
    if old is not None and old.get("addressType") and address_type != old["addressType"]:
        errs.invalid("addressType", address_type, "field is immutable")
    _check_endpoints(address_type, slice_.get("endpoints"), errs)
    ports = _slice_ports(slice_.get("ports"), errs)
    errs.check("EndpointSlice", name, "discovery.k8s.io")
    if ports is not None:
        slice_["ports"] = ports
