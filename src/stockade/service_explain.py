"""Verdicts for connections to a Service: one per backend, as the kernel will judge them.

kube-proxy DNATs a connection to a cluster IP to one ready backend, picked at random
per connection, and stockade judges the packet after that, on the backend
(docs/semantics.md, "Traffic to Service IPs"). So "may A reach Service S on port P?"
has one answer per backend, each the ordinary verdict for A to that pod on the port
the service port resolves to there. This module resolves and asks the one verdict
engine (:class:`stockade.verdict.Dataplane`); it decides nothing itself. Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from stockade.cluster import Cluster
from stockade.model import Pod
from stockade.services import (
    Backend,
    EndpointSlice,
    Service,
    ServicePort,
    desired_slices,
    parse_endpoint_slice,
    selected_pods,
    service_backends,
    target_number,
)
from stockade.verdict import Dataplane, Endpoint, Verdict


class ServiceLookupError(ValueError):
    """The destination names no usable Service port; the message says why."""


@dataclass(frozen=True)
class BackendVerdict:
    """The verdict for one backend of the service port."""

    backend: Backend
    verdict: Verdict


@dataclass(frozen=True)
class ServiceVerdict:
    """Every backend's verdict, and how the endpoints were found."""

    service: Service
    port: ServicePort
    cluster_ip: str
    backends: tuple[BackendVerdict, ...]
    derived: bool  # endpoints computed from the selector (no EndpointSlice given)
    notes: tuple[str, ...] = field(default=())

    @property
    def allowed_count(self) -> int:
        """How many backends allow the connection."""
        return sum(1 for b in self.backends if b.verdict.allowed)

    @property
    def outcome(self) -> str:
        """``all``, ``none``, ``some`` or ``refused`` (no ready backend)."""
        if not self.backends:
            return "refused"
        if self.allowed_count == len(self.backends):
            return "all"
        return "none" if self.allowed_count == 0 else "some"

    def summary(self) -> str:
        """One line for people."""
        total = len(self.backends)
        if not total:
            return (
                f"no ready endpoint: kube-proxy rejects connections to {self.cluster_ip}:"
                f"{self.port.port}/{self.port.protocol} (port unreachable), whatever policy says"
            )
        if self.outcome == "all":
            return f"all {total} backend(s) allow this connection"
        if self.outcome == "none":
            return f"none of the {total} backend(s) allows this connection"
        return (
            f"{self.allowed_count} of {total} backends allow this connection; kube-proxy picks "
            "one at random per connection, so it may or may not connect"
        )


def find_service(
    text: str, services: Sequence[Service], family: int | None = None
) -> tuple[Service, str] | None:
    """The Service ``svc/ns/name`` names (or that holds the cluster IP ``text``).

    Returns the service and the cluster IP to use (of ``family`` when given), None
    when ``text`` is neither form. Raises :class:`ServiceLookupError` for a named
    Service that does not exist or has no cluster IP.
    """
    if text.startswith("svc/"):
        namespace, _, name = text[4:].partition("/")
        if not namespace or not name or "/" in name:
            raise ServiceLookupError(f"DST {text}: expected svc/NAMESPACE/NAME")
        found = next((s for s in services if (s.namespace, s.name) == (namespace, name)), None)
        if found is None:
            known = sorted(s.name for s in services if s.namespace == namespace)
            where = ", ".join(known[:10]) or "none in the files"
            raise ServiceLookupError(
                f"DST {text}: unknown service (services in {namespace}: {where})"
            )
        return found, _cluster_ip(found, family, text)
    try:
        address = str(ipaddress.ip_address(text))
    except ValueError:
        return None
    for svc in services:
        if address in svc.cluster_ips:
            return svc, address
    return None


def _cluster_ip(service: Service, family: int | None, text: str) -> str:
    if service.type == "ExternalName":
        raise ServiceLookupError(
            f"DST {text}: an ExternalName service is a DNS alias; kube-proxy programs no address"
        )
    if service.headless:
        raise ServiceLookupError(
            f"DST {text}: a headless service (clusterIP: None) has no address of its own; "
            "clients connect to the pods: explain those (ns/pod)"
        )
    ip = cluster_ip_of(service, family)
    if ip is None:
        raise ServiceLookupError(f"DST {text}: the service has no IPv{family} cluster IP")
    return ip


def cluster_ip_of(service: Service, family: int | None) -> str | None:
    """The service's first cluster IP of ``family`` (any family when None)."""
    return next(
        (
            ip
            for ip in service.cluster_ips
            if family is None or ipaddress.ip_address(ip).version == family
        ),
        None,
    )


def service_verdict(
    plane: Dataplane,
    cluster: Cluster,
    src: Endpoint,
    service: Service,
    cluster_ip: str,
    port: int,
    protocol: str,
    slices: Sequence[EndpointSlice],
) -> ServiceVerdict:
    """The verdict per ready backend of ``service``'s ``port``/``protocol``.

    Endpoints come from the EndpointSlices of the service when any are given;
    otherwise they are derived from its selector as the EndpointSlice controller
    would (``derived``). Raises :class:`ServiceLookupError` when the service has no
    such port.
    """
    sp = service.find_port(port, protocol)
    if sp is None:
        ports = ", ".join(p.label() for p in service.ports) or "none"
        raise ServiceLookupError(
            f"service {service.key} has no port {port}/{protocol} (ports: {ports})"
        )
    family = ipaddress.ip_address(cluster_ip).version
    own = [s for s in slices if s.namespace == service.namespace and s.service == service.name]
    derived = not own
    notes: list[str] = []
    if derived:
        pods = list(cluster.pods.values())
        own = [parse_endpoint_slice(body) for body in desired_slices(service, pods)]
        notes.append("no EndpointSlice given: endpoints derived from the selector")
        notes += _undeclared(service, sp, pods)
        if service.selector is None:
            notes.append("the service has no selector and no EndpointSlice: no endpoints")
    backends = [
        b
        for b in service_backends(service, sp, own)
        if ipaddress.ip_address(b.ip).version == family
    ]
    verdicts = tuple(
        BackendVerdict(b, plane.verdict(src, _backend_end(cluster, b), b.port, protocol, family))
        for b in backends
    )
    return ServiceVerdict(service, sp, cluster_ip, verdicts, derived, tuple(notes))


def _backend_end(cluster: Cluster, backend: Backend) -> Endpoint:
    pod = cluster.pods.get(backend.pod) if backend.pod else None
    if pod is not None and backend.ip in pod.ips:
        return pod
    return backend.ip


def _undeclared(service: Service, sp: ServicePort, pods: Sequence[Pod]) -> list[str]:
    """Selected pods that declare no container port of the named target port."""
    if isinstance(sp.target, int):
        return []
    return [
        f"{pod.key} declares no {sp.protocol} port named {sp.target}: not an endpoint of "
        f"port {sp.label()}"
        for pod in selected_pods(service, pods)
        if target_number(sp, pod) is None
    ]
