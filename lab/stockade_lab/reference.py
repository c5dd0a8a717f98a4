"""A plain reference evaluator of Kubernetes NetworkPolicy v1, for testing only.

This module answers "may ``src`` open a connection to ``dst`` on ``port``/``protocol``?"
straight from the spec, one small function per clause, with no indexing, no caching
and no code shared with the compiler, the verdict engine or the rule-set format. It is
the oracle that the compiled engine and the CLI matrix are checked against, so it
values being obviously right over being fast.

Purely computational: no I/O, no clock, no globals. The choices the spec leaves open
(host-network pods, pods with no IP, own-node traffic, named ports, ...) are written
down, with their reasons, in ``docs/semantics.md``; the docstrings below name them.

:func:`allowed_with_tiers` adds the ClusterNetworkPolicy tiers (Admin, then
NetworkPolicy, then Baseline) around the same NetworkPolicy step; its choices are
in ``docs/tiers.md``. IsolationPolicies take part in those tiers like
ClusterNetworkPolicies, with their peers by sameness with the subject pod
(:func:`_same_peer_matches`, written from the table of docs/tiers.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stockade.cluster import Cluster
from stockade.cnp import (
    ACCEPT,
    DENY,
    PASS,
    ClusterNetworkPolicy,
    ClusterPeer,
    ClusterRule,
    NamespacedPods,
    NodeInfo,
    ProtocolMatch,
)
from stockade.isolation import IsolationPolicy, SamePeer
from stockade.model import IPNetwork, NetworkPolicy, Peer, Pod, PolicyPort, Rule
from stockade.selectors import LabelSelector

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


# === ClusterNetworkPolicy tiers ====================================================
#
# ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2, network-policy-api
# v0.2.0) adds two tiers around NetworkPolicy. Each direction of a connection is
# judged on its own, by the side it belongs to (egress by the source pod, ingress
# by the destination pod), and the connection is allowed only when both sides
# allow it:
#
#   Admin tier    CNPs with tier Admin selecting the pod, by (priority, name), their
#                 rules of this direction in order; the first rule that matches
#                 decides: Accept or Deny is final, Pass leaves the Admin tier.
#   NetworkPolicy when NetworkPolicies isolate the pod in this direction, they decide
#                 (allowed when some rule allows), finally.
#   Baseline tier as the Admin tier; Pass leaves the Baseline tier.
#   default       allowed.
#
# The reasons for every choice the spec leaves open are in docs/tiers.md.

TIER_ADMIN = "Admin"
TIER_NETWORK_POLICY = "NetworkPolicy"
TIER_BASELINE = "Baseline"
TIER_DEFAULT = "Default"
# The outcome of a direction that nothing in the tiers decided.
ALLOW = "Allow"
EGRESS_SIDE = "egress"
INGRESS_SIDE = "ingress"


@dataclass(frozen=True, slots=True)
class TierStep:
    """One point of a direction's evaluation: the rule (or tier) that acted, and how.

    ``action`` is Accept, Deny or Pass for a CNP rule; Accept or Deny for the
    NetworkPolicy tier; Allow for the default. ``policy`` is the CNP's name (an
    IsolationPolicy's key, ``IsolationPolicy/<name>``), or the ``ns/name`` of the
    isolating NetworkPolicies joined by ``,``; ``rule`` the index of the rule in its
    list (None for the NetworkPolicy tier and the default). ``note`` says why, when
    there is more to say: a rule that failed closed, or the sameness that matched
    (``same value of app (web)``).
    """

    tier: str
    action: str
    policy: str = ""
    rule: int | None = None
    rule_name: str = ""
    note: str = ""

    @property
    def allows(self) -> bool:
        """Whether this step lets the direction through (Accept or the default)."""
        return self.action in (ACCEPT, ALLOW)


@dataclass(frozen=True, slots=True)
class SideVerdict:
    """How one direction (``egress`` at the source, ``ingress`` at the destination) ended.

    ``passed`` lists the Pass rules met on the way, in order.
    """

    direction: str
    decided_by: TierStep
    passed: tuple[TierStep, ...] = ()

    @property
    def allowed(self) -> bool:
        """Whether this direction allows the connection."""
        return self.decided_by.allows


@dataclass(frozen=True, slots=True)
class TieredVerdict:
    """The answer of :func:`explain_with_tiers`.

    ``egress``/``ingress`` are None when a special case decided before any tier
    (``reason`` says which); otherwise ``allowed`` is both sides allowing.
    """

    allowed: bool
    reason: str
    egress: SideVerdict | None = None
    ingress: SideVerdict | None = None


def allowed_with_tiers(
    cluster: Cluster,
    cnps: Iterable[ClusterNetworkPolicy],
    nodes: Iterable[NodeInfo],
    src: Endpoint,
    dst: Endpoint,
    port: int,
    protocol: str,
    family: int | None = None,
) -> bool:
    """Whether a new connection is allowed by the Admin, NetworkPolicy and Baseline tiers.

    With no ClusterNetworkPolicy this is exactly :func:`allowed`. See
    :func:`explain_with_tiers` for the special cases and the deciding rules.
    """
    return explain_with_tiers(cluster, cnps, nodes, src, dst, port, protocol, family).allowed


def explain_with_tiers(
    cluster: Cluster,
    cnps: Iterable[ClusterNetworkPolicy],
    nodes: Iterable[NodeInfo],
    src: Endpoint,
    dst: Endpoint,
    port: int,
    protocol: str,
    family: int | None = None,
) -> TieredVerdict:
    """:func:`allowed_with_tiers`, with the rule or special case that decided.

    The special cases of :func:`allowed`, and how each meets the tiers:

    * an endpoint that takes part in nothing (a pod with no IP, or finished), or
      has no address of the family: no path, denied, before any tier;
    * same pod: allowed, before any tier ("a pod reaching its own IP is not
      subject to CNP"; "a pod cannot block access to itself");
    * from a pod's own node to the pod (the kubelet's probes, host-network pods on
      that node): allowed, before any tier. No CNP ingress peer can select a node
      anyway (ingress peers are namespaces and pods, which never match a node or a
      host-network pod);
    * from a pod to its own node: judged by the pod's egress in the CNP tiers, so
      an Admin Deny to a ``nodes`` (or ``networks``) peer denies it, as the use case
      "block access from cluster workloads to specific ports on cluster nodes"
      needs (the pod's own node is one of those nodes). Only the NetworkPolicy
      tier keeps its rule "traffic to the pod's own node is always allowed": a
      pod isolated for egress by NetworkPolicies may reach its own node there
      (a final Accept), whatever the Baseline tier says. The reply traffic of the
      kubelet's connections is part of those connections, so probes keep working;
    * a contested address (claimed by several pods, owned by none): denied both
      ways, before any tier, even against an Admin Accept, except for the same pod
      and own-node traffic above; from a contested address to its own node:
      allowed, not judged (the address is in no pod's subject set, so the node's
      INPUT hook cannot tell which claimant sent it; before ClusterNetworkPolicy
      own-node traffic was never judged at all).
    """
    policies = tuple(cnps)
    node_list = tuple(nodes)
    if not (_takes_part(cluster, src) and _takes_part(cluster, dst)):
        return TieredVerdict(False, "no path: an endpoint has no usable address or has finished")
    if _same_pod(src, dst):
        return TieredVerdict(True, "same pod: not subject to any policy")
    fam = family if family is not None else _primary_family(src)
    src_addr = _owned_address(cluster, src, fam)
    dst_addr = _owned_address(cluster, dst, fam)
    if src_addr is None or dst_addr is None:
        return TieredVerdict(False, f"no path: an endpoint has no IPv{fam} address")
    if _is_node_of_tiers(node_list, src, dst, src_addr):
        return TieredVerdict(True, "from the destination pod's own node: always allowed")
    to_own_node = _is_node_of_tiers(node_list, dst, src, dst_addr)
    if to_own_node and _contested(cluster, src_addr):
        return TieredVerdict(True, "from a contested address to its own node: not judged")
    if not to_own_node and (_contested(cluster, src_addr) or _contested(cluster, dst_addr)):
        return TieredVerdict(False, "contested address: owned by no pod, denied both ways")
    flow = _Flow(
        cluster=cluster,
        cnps=policies,
        nodes=node_list,
        src=src,
        dst=dst,
        src_addr=src_addr,
        dst_addr=dst_addr,
        port=port,
        protocol=protocol,
        to_own_node=to_own_node,
    )
    egress = _side_verdict(flow, EGRESS_SIDE)
    ingress = _side_verdict(flow, INGRESS_SIDE)
    allowed_both = egress.allowed and ingress.allowed
    reason = "allowed by both sides" if allowed_both else _denied_reason(egress, ingress)
    return TieredVerdict(allowed_both, reason, egress, ingress)


def _is_node_of_tiers(
    nodes: tuple[NodeInfo, ...], node_side: Endpoint, pod_side: Endpoint, node_addr: IPAddress
) -> bool:
    """:func:`_is_node_of`, where the node is also known by its Node object: an
    address in ``status.addresses`` of the Node the pod runs on."""
    if _is_node_of(node_side, pod_side, node_addr):
        return True
    if isinstance(node_side, Pod) or not isinstance(pod_side, Pod) or pod_side.host_network:
        return False
    return any(
        node.name == pod_side.node_name
        and any(ipaddress.ip_address(a) == node_addr for a in node.addresses)
        for node in nodes
    )


def _denied_reason(egress: SideVerdict, ingress: SideVerdict) -> str:
    side = egress if not egress.allowed else ingress
    step = side.decided_by
    where = f" {step.policy}" if step.policy else ""
    rule = f" rule {step.rule}" if step.rule is not None else ""
    return f"denied at {side.direction} by the {step.tier} tier{where}{rule}"


@dataclass(frozen=True, slots=True)
class _Flow:
    """One connection being judged: both ends, their addresses, port and protocol."""

    cluster: Cluster
    cnps: tuple[ClusterNetworkPolicy, ...]
    nodes: tuple[NodeInfo, ...]
    src: Endpoint
    dst: Endpoint
    src_addr: IPAddress
    dst_addr: IPAddress
    port: int
    protocol: str
    to_own_node: bool


# --- one direction through the tiers -----------------------------------------------


def _side_verdict(flow: _Flow, direction: str) -> SideVerdict:
    """Admin tier, then NetworkPolicy, then Baseline tier, then the default (allow)."""
    passed: list[TierStep] = []
    for tier in (TIER_ADMIN, TIER_NETWORK_POLICY, TIER_BASELINE):
        if tier == TIER_NETWORK_POLICY:
            step = _network_policy_step(flow, direction)
        else:
            step = _cnp_tier_step(flow, direction, tier)
        if step is None:
            continue  # nothing in this tier matched: the next tier evaluates
        if step.action == PASS:
            passed.append(step)  # the rest of this tier is skipped
            continue
        return SideVerdict(direction, step, tuple(passed))
    return SideVerdict(direction, TierStep(TIER_DEFAULT, ALLOW), tuple(passed))


def _subject_pod(flow: _Flow, direction: str) -> Endpoint:
    """The end a direction belongs to: the source for egress, the destination for ingress."""
    return flow.src if direction == EGRESS_SIDE else flow.dst


def ordered_tier(cnps: Iterable[ClusterNetworkPolicy], tier: str) -> list[ClusterNetworkPolicy]:
    """The CNPs (and IsolationPolicies) of ``tier`` in evaluation order: priority
    ascending, then name, then the ClusterNetworkPolicy before the IsolationPolicy.

    The spec leaves the order of equal priorities undefined; stockade orders them by
    name so that every evaluation agrees.
    """
    chosen = [p for p in cnps if p.tier == tier]
    return sorted(chosen, key=lambda p: (p.priority, p.name, isinstance(p, IsolationPolicy)))


def _cnp_tier_step(flow: _Flow, direction: str, tier: str) -> TierStep | None:
    """The first matching rule of the tier's CNPs that select the subject, or None."""
    subject = _subject_pod(flow, direction)
    if not isinstance(subject, Pod):
        return None
    for policy in ordered_tier(flow.cnps, tier):
        if not cnp_selects(flow.cluster, policy, subject):
            continue
        rules = policy.egress if direction == EGRESS_SIDE else policy.ingress
        for index, rule in enumerate(rules):
            action = _rule_action(flow, direction, rule)
            if action is not None:
                note = "fail closed: unsupported peer" if rule.unsupported else ""
                note = note or _sameness_note(flow, direction, rule)
                return TierStep(tier, action, policy.key, index, rule.name, note)
    return None


def _sameness_note(flow: _Flow, direction: str, rule: ClusterRule) -> str:
    """Why a rule matched when its first matching peer is a sameness peer, else ""."""
    subject = _subject_pod(flow, direction)
    for peer in rule.peers:
        if not _cnp_peer_matches(flow, direction, peer):
            continue
        if not isinstance(peer, SamePeer) or not isinstance(subject, Pod):
            return ""
        ns_labels = flow.cluster.namespace(subject.namespace).labels
        values = peer.values(ns_labels, subject)
        return peer.describe(values) if values is not None else ""
    return ""


def cnp_selects(cluster: Cluster, policy: ClusterNetworkPolicy, pod: Pod) -> bool:
    """Whether the CNP's subject selects ``pod``.

    Host-network pods, and pods with no IP or finished, are never subjects.
    """
    if not pod.selectable:
        return False
    subject = policy.subject
    ns_labels = cluster.namespace(pod.namespace).labels
    if subject.namespaces is not None:
        return subject.namespaces.matches(ns_labels)
    pods = subject.pods
    return (
        pods is not None
        and pods.namespace_selector.matches(ns_labels)
        and pods.pod_selector.matches(pod.labels)
    )


def _rule_action(flow: _Flow, direction: str, rule: ClusterRule) -> str | None:
    """The action the rule takes on this connection, or None when it does not match.

    A rule with a peer stockade does not enforce (``domainNames``) fails closed, in
    the spec's words: 'For "Accept" rules, "fail closed" means: "treat the rule as
    matching no traffic". For "Deny" and "Pass" rules, "fail closed" means: "treat
    the rule as a 'Deny all' rule"' -- so a Pass rule then denies, and matches every
    connection of its direction whatever its other peers and protocols.
    """
    if rule.unsupported:
        return None if rule.action == ACCEPT else DENY
    if not any(_cnp_peer_matches(flow, direction, peer) for peer in rule.peers):
        return None
    if rule.protocols and not any(_protocol_matches(flow, pm) for pm in rule.protocols):
        return None
    return rule.action


def _cnp_peer_matches(flow: _Flow, direction: str, peer: ClusterPeer) -> bool:
    """Whether one ``from``/``to`` item matches the far end of the connection."""
    other = flow.dst if direction == EGRESS_SIDE else flow.src
    other_addr = flow.dst_addr if direction == EGRESS_SIDE else flow.src_addr
    if isinstance(peer, SamePeer):
        return _same_peer_matches(flow.cluster, peer, _subject_pod(flow, direction), other)
    if peer.namespaces is not None:
        return _namespaces_peer_matches(flow.cluster, peer.namespaces, other)
    if peer.pods is not None:
        return _pods_peer_matches(flow.cluster, peer.pods, other)
    if peer.networks:
        return _networks_peer_matches(peer.networks, other_addr)
    if peer.nodes is not None:
        return _nodes_peer_matches(flow.nodes, peer.nodes, other_addr)
    return False  # domainNames: handled as a whole rule by _rule_action


def _namespaces_peer_matches(cluster: Cluster, selector: LabelSelector, other: Endpoint) -> bool:
    """Every pod of the selected namespaces; never a host-network pod or an address."""
    if not isinstance(other, Pod) or not other.selectable:
        return False
    return selector.matches(cluster.namespace(other.namespace).labels)


def _pods_peer_matches(cluster: Cluster, pods: NamespacedPods, other: Endpoint) -> bool:
    """Pods matching the pod selector in namespaces matching the namespace selector."""
    if not isinstance(other, Pod) or not other.selectable:
        return False
    ns_labels = cluster.namespace(other.namespace).labels
    return pods.namespace_selector.matches(ns_labels) and pods.pod_selector.matches(other.labels)


def _same_peer_matches(
    cluster: Cluster, peer: SamePeer, subject: Endpoint, other: Endpoint
) -> bool:
    """An IsolationPolicy peer by sameness with the subject pod (docs/tiers.md).

    * ``namespaces: {sameAs: Self}``: a pod of the subject pod's own namespace;
    * ``namespaces: {sameLabels: keys}``: a pod whose namespace has every key with the
      value the subject pod's namespace has; nothing if the subject's namespace lacks
      a key (and a namespace lacking a key is never matched);
    * ``pods: {sameLabels: keys, ...}``: a pod with every key, each with the subject
      pod's value (nothing if the subject lacks one), in the subject pod's namespace
      without a namespaceSelector, else in the namespaces it selects, and matching
      the podSelector when there is one.

    Like every pod peer, never a host-network pod or a plain address.
    """
    if not isinstance(subject, Pod) or not isinstance(other, Pod) or not other.selectable:
        return False
    if peer.scope == "namespaces" and not peer.keys:
        return other.namespace == subject.namespace
    if peer.scope == "namespaces":
        mine = cluster.namespace(subject.namespace).labels
        theirs = cluster.namespace(other.namespace).labels
        return _same_values(peer.keys, mine, theirs)
    if not _same_values(peer.keys, subject.labels, other.labels):
        return False
    if peer.in_namespaces is None:
        in_scope = other.namespace == subject.namespace
    else:
        in_scope = peer.in_namespaces.matches(cluster.namespace(other.namespace).labels)
    return in_scope and (peer.also is None or peer.also.matches(other.labels))


def _same_values(keys: tuple[str, ...], mine: Mapping[str, str], theirs: Mapping[str, str]) -> bool:
    """Both label maps have every key, each with the same value."""
    return all(k in mine and k in theirs and mine[k] == theirs[k] for k in keys)


def _networks_peer_matches(networks: tuple[IPNetwork, ...], addr: IPAddress) -> bool:
    """By address, whatever is there: pods, nodes and host-network pods included."""
    return any(addr.version == net.version and addr in net for net in networks)


def _nodes_peer_matches(
    nodes: tuple[NodeInfo, ...], selector: LabelSelector, addr: IPAddress
) -> bool:
    """The address is one of ``status.addresses`` of a Node matching the selector.

    That is the node itself and every host-network pod on it.
    """
    return any(
        selector.matches(node.labels)
        and any(ipaddress.ip_address(a) == addr for a in node.addresses)
        for node in nodes
    )


def _protocol_matches(flow: _Flow, pm: ProtocolMatch) -> bool:
    """One ``protocols`` item against the destination port and protocol.

    A ``destinationNamedPort`` resolves on the destination pod's declared container
    ports, with the connection's protocol (as a NetworkPolicy named port does); a
    destination that is not a selectable pod (an address, a host-network pod) has
    no named ports.
    """
    if pm.named_port is not None:
        dst = flow.dst
        return (
            isinstance(dst, Pod)
            and dst.selectable
            and dst.named_port(pm.named_port, flow.protocol) == flow.port
        )
    return pm.protocol == flow.protocol and pm.port <= flow.port <= pm.end_port


def _network_policy_step(flow: _Flow, direction: str) -> TierStep | None:
    """The NetworkPolicy tier: final for a pod its NetworkPolicies isolate, else None.

    "v1.NetworkPolicy always makes a final decision for selected pods. Further
    evaluation only happens for Pods not selected by a v1.NetworkPolicy" -- per
    direction: a pod isolated for ingress only is decided here for ingress, and its
    egress goes on to the Baseline tier. The decision is the one :func:`allowed`
    makes, own-node egress included (always allowed).
    """
    subject = _subject_pod(flow, direction)
    if not isinstance(subject, Pod):
        return None
    if direction == EGRESS_SIDE:
        isolating = egress_policies(flow.cluster, subject)
        if not isolating:
            return None
        ok = flow.to_own_node or _egress_allows(
            flow.cluster,
            flow.src,
            flow.dst,
            dst_addr=flow.dst_addr,
            port=flow.port,
            protocol=flow.protocol,
        )
    else:
        isolating = ingress_policies(flow.cluster, subject)
        if not isolating:
            return None
        ok = _ingress_allows(
            flow.cluster,
            flow.src,
            flow.dst,
            src_addr=flow.src_addr,
            port=flow.port,
            protocol=flow.protocol,
        )
    keys = ",".join(sorted(p.key for p in isolating))
    note = "own node" if direction == EGRESS_SIDE and flow.to_own_node else ""
    return TierStep(TIER_NETWORK_POLICY, ACCEPT if ok else DENY, keys, note=note)
