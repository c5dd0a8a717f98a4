"""A plain reference evaluator of Kubernetes NetworkPolicy v1, for testing only.

This module answers "may ``src`` open a connection to ``dst`` on ``port``/``protocol``?"
straight from the spec, one small function per clause, with no indexing, no caching
and no code shared with the compiler, the verdict engine or the rule-set format. It is
the oracle that the compiled engine and the CLI matrix are checked against, so it
values being obviously right over being fast.

Purely computational: no I/O, no clock, no globals. The choices the spec leaves open
(host-network pods, pods with no IP, own-node traffic, named ports, ...) are written
down, with their reasons, in ``docs/semantics.md``; the docstrings below name them.
"""

from __future__ import annotations

import ipaddress

from stockade.cluster import Cluster
from stockade.model import NetworkPolicy, Peer, Pod, PolicyPort, Rule

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Endpoint = Pod | str
"""A pod, or the IP address of something that is not a pod (an external host, a node)."""


def allowed(
    cluster: Cluster,
    src: Endpoint,
    dst: Endpoint,
    port: int,
    protocol: str,
    family: int | None = None,
) -> bool:
    """Whether a new connection from ``src`` to ``dst`` on ``port``/``protocol`` is allowed.

    ``family`` (4 or 6) picks the address family; None means the family of ``src``'s
    primary address. Each side is judged by its first address of that family; when
    either side has none, or either side is a pod that takes no part (no IP yet, or
    finished), there is no path and the answer is False.
    """
    if not (_takes_part(cluster, src) and _takes_part(cluster, dst)):
        return False
    if _same_pod(src, dst):
        # Over loopback, whatever the family: "a pod cannot block access to itself".
        return True
    fam = family if family is not None else _primary_family(src)
    src_addr = _owned_address(cluster, src, fam)
    dst_addr = _owned_address(cluster, dst, fam)
    if src_addr is None or dst_addr is None:
        return False
    if _own_node(src, dst, src_addr, dst_addr):
        return True
    if _contested(cluster, src_addr) or _contested(cluster, dst_addr):
        # Owned by no pod: denied both ways, narrower than any claimant's policy.
        return False
    # Both ends must allow: the source's egress and the destination's ingress.
    egress_ok = _egress_allows(cluster, src, dst, dst_addr=dst_addr, port=port, protocol=protocol)
    ingress_ok = _ingress_allows(cluster, src, dst, src_addr=src_addr, port=port, protocol=protocol)
    return egress_ok and ingress_ok


def matrix(
    cluster: Cluster, port: int, protocol: str, family: int | None = None
) -> dict[str, dict[str, bool]]:
    """``matrix[src][dst]``: :func:`allowed` between every two active pods, keyed ``ns/name``.

    Host-network pods are included (as their node's address); pods with no IP or
    finished are not.
    """
    pods = cluster.active_pods()
    return {
        src.key: {dst.key: allowed(cluster, src, dst, port, protocol, family) for dst in pods}
        for src in pods
    }


# --- endpoints ---------------------------------------------------------------------


def _takes_part(cluster: Cluster, endpoint: Endpoint) -> bool:
    """A pod takes part when it is active and owns an address; an address always does."""
    if not isinstance(endpoint, Pod):
        return True
    if endpoint.host_network:
        # It uses its node's address, which no pod owns.
        return endpoint.active
    return endpoint.active and any(
        _usable(cluster, endpoint, ipaddress.ip_address(ip)) for ip in endpoint.ips
    )


def _usable(cluster: Cluster, pod: Pod, addr: IPAddress) -> bool:
    """The pod owns ``addr``, or nobody does: a contested address is still the pod's
    for loopback and its own node (traffic that never meets a policy); every other
    connection from or to it is denied."""
    return _is(_owner(cluster, addr), pod) or _contested(cluster, addr)


def _is(pod: Pod | None, endpoint: Pod) -> bool:
    return pod is not None and pod.key == endpoint.key


# --- who owns an address -----------------------------------------------------------


def _claimants(cluster: Cluster, addr: IPAddress) -> list[Pod]:
    """Pods that say ``addr`` is theirs: active, not on the host network."""
    return [
        p
        for p in cluster.pods.values()
        if p.active and not p.host_network and any(ipaddress.ip_address(i) == addr for i in p.ips)
    ]


def _owner(cluster: Cluster, addr: IPAddress) -> Pod | None:
    """The pod ``addr`` belongs to, or None (no claimant, or contested).

    One claimant owns it. Of several, a pod not being deleted beats pods being
    deleted; then the strictly newest creation time wins, when every remaining
    claimant has one. Anything else is a tie: nobody owns the address.
    """
    pods = _claimants(cluster, addr)
    if len(pods) <= 1:
        return pods[0] if pods else None
    not_deleting = [p for p in pods if not p.deleting]
    if not_deleting:
        pods = not_deleting
    if len(pods) == 1:
        return pods[0]
    times = [p.created for p in pods]
    if any(t is None for t in times):
        return None
    newest = [p for p in pods if p.created == max(t for t in times if t is not None)]
    return newest[0] if len(newest) == 1 else None


def _contested(cluster: Cluster, addr: IPAddress) -> bool:
    """Several pods claim ``addr`` and none of them owns it."""
    return len(_claimants(cluster, addr)) > 1 and _owner(cluster, addr) is None


def _owned_address(cluster: Cluster, endpoint: Endpoint, family: int) -> IPAddress | None:
    """The endpoint's first address of ``family``; for a pod, the first it can use.

    A host-network pod has its node's address, which it never owns: it uses it.
    """
    for addr in _addresses(endpoint):
        if addr.version != family:
            continue
        if not isinstance(endpoint, Pod) or endpoint.host_network:
            return addr
        if _usable(cluster, endpoint, addr):
            return addr
    return None


def _addresses(endpoint: Endpoint) -> list[IPAddress]:
    """Every address of the endpoint, primary first (a host-network pod has its node's)."""
    raw = endpoint.ips if isinstance(endpoint, Pod) else (endpoint,)
    return [ipaddress.ip_address(ip) for ip in raw]


def _primary_family(endpoint: Endpoint) -> int:
    """The IP version of the endpoint's primary address."""
    return _addresses(endpoint)[0].version


def address_of(endpoint: Endpoint, family: int) -> IPAddress | None:
    """The endpoint's first address of ``family``, or None when it has none."""
    for addr in _addresses(endpoint):
        if addr.version == family:
            return addr
    return None


def _same_pod(src: Endpoint, dst: Endpoint) -> bool:
    """A pod cannot block access to itself (spec: "a pod cannot block access to itself")."""
    return isinstance(src, Pod) and isinstance(dst, Pod) and src.key == dst.key


def _own_node(src: Endpoint, dst: Endpoint, src_addr: IPAddress, dst_addr: IPAddress) -> bool:
    """Traffic between a pod and the node it runs on is always allowed.

    The node is seen either as a host-network pod on the same node, or as an address
    among the pod's ``host_ips`` (``status.hostIP`` and ``hostIPs``). Two
    host-network pods need no rule here: neither is ever isolated.
    """
    return _is_node_of(src, dst, src_addr) or _is_node_of(dst, src, dst_addr)


def _is_node_of(node_side: Endpoint, pod_side: Endpoint, node_addr: IPAddress) -> bool:
    """Whether ``node_side`` is the node that the pod ``pod_side`` runs on."""
    if not isinstance(pod_side, Pod) or pod_side.host_network:
        return False
    if isinstance(node_side, Pod):
        return (
            node_side.host_network
            and bool(pod_side.node_name)
            and node_side.node_name == pod_side.node_name
        )
    return any(ipaddress.ip_address(ip) == node_addr for ip in pod_side.host_ips)


# --- isolation ---------------------------------------------------------------------


def selects(policy: NetworkPolicy, pod: Pod) -> bool:
    """Whether ``policy`` applies to ``pod``: same namespace, podSelector matches.

    Only selectable pods (active, not host-network) can be policy targets.
    """
    return (
        pod.selectable
        and policy.namespace == pod.namespace
        and policy.pod_selector.matches(pod.labels)
    )


def egress_policies(cluster: Cluster, pod: Pod) -> list[NetworkPolicy]:
    """The policies that select ``pod`` and have Egress in their policyTypes."""
    return [p for p in cluster.policies.values() if p.egress is not None and selects(p, pod)]


def ingress_policies(cluster: Cluster, pod: Pod) -> list[NetworkPolicy]:
    """The policies that select ``pod`` and have Ingress in their policyTypes."""
    return [p for p in cluster.policies.values() if p.ingress is not None and selects(p, pod)]


def _egress_allows(
    cluster: Cluster, src: Endpoint, dst: Endpoint, *, dst_addr: IPAddress, port: int, protocol: str
) -> bool:
    """The source side: not isolated for egress, or some egress rule allows ``dst``."""
    if not isinstance(src, Pod):
        return True
    policies = egress_policies(cluster, src)
    if not policies:
        return True
    return any(
        rule_matches(
            cluster,
            policy,
            rule,
            other=dst,
            other_addr=dst_addr,
            dst=dst,
            port=port,
            protocol=protocol,
        )
        for policy in policies
        for rule in policy.egress or ()
    )


def _ingress_allows(
    cluster: Cluster, src: Endpoint, dst: Endpoint, *, src_addr: IPAddress, port: int, protocol: str
) -> bool:
    """The destination side: not isolated for ingress, or some ingress rule allows ``src``."""
    if not isinstance(dst, Pod):
        return True
    policies = ingress_policies(cluster, dst)
    if not policies:
        return True
    return any(
        rule_matches(
            cluster,
            policy,
            rule,
            other=src,
            other_addr=src_addr,
            dst=dst,
            port=port,
            protocol=protocol,
        )
        for policy in policies
        for rule in policy.ingress or ()
    )


# --- rules -------------------------------------------------------------------------


def rule_matches(
    cluster: Cluster,
    policy: NetworkPolicy,
    rule: Rule,
    *,
    other: Endpoint,
    other_addr: IPAddress,
    dst: Endpoint,
    port: int,
    protocol: str,
) -> bool:
    """A rule allows when its peers match ``other`` and its ports match the destination.

    ``other`` is the far end (the destination for egress, the source for ingress);
    ``dst`` is always the destination, against which ports are matched. Empty
    ``peers`` or ``ports`` match everything.
    """
    peers_ok = not rule.peers or any(
        peer_matches(cluster, policy, peer, other, other_addr) for peer in rule.peers
    )
    ports_ok = not rule.ports or any(port_matches(pp, dst, port, protocol) for pp in rule.ports)
    return peers_ok and ports_ok


def peer_matches(
    cluster: Cluster, policy: NetworkPolicy, peer: Peer, other: Endpoint, other_addr: IPAddress
) -> bool:
    """Whether one ``from``/``to`` item matches the far end.

    An ipBlock matches by address, pod addresses included; selectors match only
    selectable pods (never host-network pods, never plain addresses).
    """
    if peer.ip_block is not None:
        return peer.ip_block.contains(other_addr)
    if not isinstance(other, Pod) or not other.selectable:
        return False
    if peer.namespace_selector is None:
        ns_ok = other.namespace == policy.namespace
    else:
        ns_ok = peer.namespace_selector.matches(cluster.namespace(other.namespace).labels)
    pod_ok = peer.pod_selector is None or peer.pod_selector.matches(other.labels)
    return ns_ok and pod_ok


def port_matches(pp: PolicyPort, dst: Endpoint, port: int, protocol: str) -> bool:
    """Whether one ``ports`` item matches ``port``/``protocol`` at the destination.

    A named port resolves on the destination pod's declared container ports; a
    host-network pod is judged as its node's address, and an address that is not a
    pod never matches a named port.
    """
    if pp.protocol != protocol:
        return False
    if pp.name is not None:
        return isinstance(dst, Pod) and dst.selectable and dst.named_port(pp.name, protocol) == port
    if pp.port is None:
        return True
    end = pp.end_port if pp.end_port is not None else pp.port
    return pp.port <= port <= end
