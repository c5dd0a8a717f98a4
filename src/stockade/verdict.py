"""Verdicts from the compiled rule sets: a pure model of the dataplane, with reasons.

This is what ``stockade matrix`` and ``stockade explain`` run. It reads only what
the agents receive (NodeRuleSets and PeerSets) plus where each address lives, and
walks a packet through the hooks it would cross: FORWARD at the source pod's node
(egress) and at the destination pod's node (ingress), once when both are on one
node; INPUT at the node for a pod reaching its own node (egress only). Each
direction runs the tiers: Admin ClusterNetworkPolicies, NetworkPolicy, Baseline
ClusterNetworkPolicies, then the default (allowed). A node reaching its own pods
(OUTPUT) is never filtered.

The reference evaluator (:mod:`stockade_lab.reference`) is the independent oracle the
tests compare this with.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace

from stockade.cluster import Cluster
from stockade.compiler import CompiledCluster, compile_cluster
from stockade.model import EGRESS, INGRESS, Pod
from stockade.ownership import IPClaim, resolve
from stockade.ruleset import (
    ACCEPT,
    ADMIN_TIER,
    BASELINE_TIER,
    DENY,
    PASS,
    CompiledClusterPolicy,
    CompiledRule,
    LocalPod,
    NodeRuleSet,
    PeerMatch,
    PeerSet,
    PortMatch,
    TierRule,
)

Endpoint = Pod | str
NETWORK_POLICY_TIER = "NetworkPolicy"


@dataclass(frozen=True, slots=True)
class RuleRef:
    """A rule of a policy: ``direction`` is Ingress or Egress, ``index`` in the spec."""

    policy: str
    direction: str
    index: int

    def __str__(self) -> str:
        return f"{self.policy} {self.direction.lower()} rule {self.index}"


@dataclass(frozen=True, slots=True)
class TierHit:
    """A tier's answer for one direction.

    For a ClusterNetworkPolicy rule: ``tier`` Admin or Baseline, ``action`` Accept,
    Deny or Pass, ``policy`` the CNP's name, ``rule`` its index in the direction's
    list and ``rule_name`` its name; ``fail_closed`` when the rule is a "Deny all"
    because of a peer stockade does not enforce; ``same`` the sameness that matched
    when the rule is an IsolationPolicy's and its first matching peer is one by
    sameness (``same value of app (web)``). For the NetworkPolicy tier: ``tier``
    NetworkPolicy, ``action`` Accept or Deny, ``policy`` the isolating policies
    joined by ``,``, ``rule`` None.
    """

    tier: str
    action: str
    policy: str
    rule: int | None = None
    rule_name: str = ""
    fail_closed: bool = False
    same: str = ""

    def __str__(self) -> str:
        if self.rule is None:
            return f"{self.tier} tier ({self.policy}): {self.action}"
        named = f" ({self.rule_name})" if self.rule_name else ""
        closed = ", fail closed" if self.fail_closed else ""
        return f"{self.tier} {self.policy} rule {self.rule}{named}: {self.action}{closed}"


@dataclass(frozen=True, slots=True)
class DirectionVerdict:
    """One direction's check on one pod, through the tiers.

    ``isolated_by``: the NetworkPolicies isolating the pod this way; ``allowed_by``
    the rules of theirs that allow (only looked at when the NetworkPolicy tier is
    reached). ``decided_by``: the tier step that decided (None: nothing did, the
    default allows); ``passed``: the Pass rules met on the way, in order.
    ``own_node``: the destination is the pod's own node (the INPUT hook).
    """

    pod: str
    direction: str
    isolated_by: tuple[str, ...]
    allowed_by: tuple[RuleRef, ...]
    decided_by: TierHit | None = None
    passed: tuple[TierHit, ...] = ()
    own_node: bool = False

    @property
    def allowed(self) -> bool:
        """Nothing decided (the default allows), or the deciding step accepts."""
        return self.decided_by is None or self.decided_by.action == ACCEPT

    @property
    def tier(self) -> str:
        """The tier that decided: Admin, NetworkPolicy, Baseline, or "" (the default)."""
        return self.decided_by.tier if self.decided_by is not None else ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verdict for one connection attempt and why.

    ``note`` explains verdicts decided before any policy lookup (same pod, own
    node, no address).
    """

    allowed: bool
    src: str
    dst: str
    src_ip: str | None
    dst_ip: str | None
    port: int
    protocol: str
    egress: DirectionVerdict | None = None
    ingress: DirectionVerdict | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class _Place:
    """Where an address lives: a pod on a node, a node itself, or outside."""

    node: str | None
    pod: str | None  # None for a node address


def _label(ep: Endpoint) -> str:
    return ep.key if isinstance(ep, Pod) else ep


def _address(ep: Endpoint, family: int) -> str | None:
    # A contested pod still has its address for loopback and its own node.
    ips = (*ep.ips, *ep.contested_ips) if isinstance(ep, Pod) else (ep,)
    for ip in ips:
        if ipaddress.ip_address(ip).version == family:
            return ip
    return None


class SetIndex:
    """PeerSet contents by set name: the IPs, and the ``(ip, port)`` pairs of named ports."""

    def __init__(self, shards: Iterable[PeerSet]) -> None:
        self.ips: dict[str, set[str]] = {}
        self.ports: dict[str, set[tuple[str, int]]] = {}
        for ps in shards:
            ips = self.ips.setdefault(ps.set_name, set())
            ports = self.ports.setdefault(ps.set_name, set())
            for member in ps.members:
                ips.update(member.ips)
                if member.port is not None:
                    ports.update((ip, member.port) for ip in member.ips)


_Policies = list[tuple[str, tuple[CompiledRule, ...]]]


class NodeEvaluator:
    """One node's verdicts, from its NodeRuleSet and the PeerSets, as its FORWARD hook.

    Used by :class:`Dataplane` for the whole cluster and by the agent to judge live
    conntrack entries after an apply; the dataplane never evaluates anything else.
    """

    def __init__(self, rules: NodeRuleSet, sets: SetIndex) -> None:
        self.rules = rules
        self._sets = sets
        self._pods_by_ip: dict[str, LocalPod] = {}
        self._policies: dict[str, dict[str, _Policies]] = {INGRESS: {}, EGRESS: {}}
        # Local pod address -> the CNPs selecting it that have rules this way, in order.
        self._cnps: dict[str, dict[str, list[CompiledClusterPolicy]]] = {INGRESS: {}, EGRESS: {}}
        self._contested = frozenset(rules.contested_ips)
        pods = {p.name: p for p in rules.pods}
        for np in rules.policies:
            for target in np.targets:
                for ip in pods[target].ips:
                    self._pods_by_ip[ip] = pods[target]
                    for direction, rs in ((INGRESS, np.policy.ingress), (EGRESS, np.policy.egress)):
                        if rs is not None:
                            self._policies[direction].setdefault(ip, []).append(
                                (np.policy.name, rs)
                            )
        for ncp in rules.cluster_policies:  # already in evaluation order
            # An IsolationPolicy's subjects each see their own rules by sameness.
            for variant, subjects in ncp.subjects_by_variant():
                policy = ncp.view(variant)
                for target in subjects:
                    for ip in pods[target].ips:
                        self._pods_by_ip[ip] = pods[target]
                        for direction, trs in ((INGRESS, policy.ingress), (EGRESS, policy.egress)):
                            if trs:
                                self._cnps[direction].setdefault(ip, []).append(policy)

    def allows(self, src_ip: str, dst_ip: str, port: int, protocol: str) -> bool:
        """Whether this node's FORWARD hook lets a new connection through (both checks).

        In the order of STK-FORWARD: a contested address is denied, then a packet
        from an address to itself passes (a pod reaching itself through its own
        Service: kube-proxy's DNAT makes it cross FORWARD with source == destination;
        semantics rule 12), then the egress and ingress checks. A contested address
        keeps only loopback, which never meets FORWARD.
        """
        if src_ip in self._contested or dst_ip in self._contested:
            return False
        if src_ip == dst_ip:
            return True
        return all(
            v is None or v.allowed
            for v in (
                self.check(src_ip, dst_ip, port, protocol, EGRESS),
                self.check(src_ip, dst_ip, port, protocol, INGRESS),
            )
        )

    def allows_input(self, src_ip: str, dst_ip: str, port: int, protocol: str) -> bool:
        """Whether this node's INPUT hook lets a new connection from a local pod to the
        node itself through: the pod's egress tiers, where a pod isolated for egress
        by NetworkPolicies is allowed (its own node is always allowed there).
        Anything else reaching the node is not stockade's to judge."""
        verdict = self.check(src_ip, dst_ip, port, protocol, EGRESS, own_node=True)
        return verdict is None or verdict.allowed

    def check(
        self,
        src_ip: str,
        dst_ip: str,
        port: int,
        protocol: str,
        direction: str,
        own_node: bool = False,
    ) -> DirectionVerdict | None:
        """One direction's check through the tiers; None when no policy of any tier
        applies to the local end this way.

        ``own_node``: the destination is this node (egress only): the NetworkPolicy
        tier then accepts a pod it isolates, as "traffic to the pod's node is always
        allowed".
        """
        egress = direction == EGRESS
        local_ip, peer_ip = (src_ip, dst_ip) if egress else (dst_ip, src_ip)
        policies = self._policies[direction].get(local_ip)
        cnps = self._cnps[direction].get(local_ip)
        if not policies and not cnps:
            return None
        dst_local = None if egress else self._pods_by_ip[dst_ip]
        flow = (peer_ip, dst_ip, port, protocol, dst_local)
        passed: list[TierHit] = []
        decided = self._tier(cnps, ADMIN_TIER, direction, flow, passed)
        allowed: list[RuleRef] = []
        isolated_by = tuple(n for n, _ in policies or ())
        if decided is None and policies:
            if own_node:
                decided = TierHit(NETWORK_POLICY_TIER, ACCEPT, ",".join(isolated_by))
            else:
                allowed = [
                    RuleRef(name, direction, index)
                    for name, rules in policies
                    for index, rule in enumerate(rules)
                    if self._rule_matches(rule, *flow)
                ]
                action = ACCEPT if allowed else DENY
                decided = TierHit(NETWORK_POLICY_TIER, action, ",".join(isolated_by))
        if decided is None:
            decided = self._tier(cnps, BASELINE_TIER, direction, flow, passed)
        pod = self._pods_by_ip[local_ip].name
        return DirectionVerdict(
            pod, direction, isolated_by, tuple(allowed), decided, tuple(passed), own_node
        )

    def _tier(
        self,
        cnps: list[CompiledClusterPolicy] | None,
        tier: str,
        direction: str,
        flow: tuple[str, str, int, str, LocalPod | None],
        passed: list[TierHit],
    ) -> TierHit | None:
        """The first matching rule of ``tier`` among the local pod's policies (each
        as that pod sees it, ``cnps``); a Pass is recorded and ends the tier."""
        for policy in cnps or ():
            if policy.tier != tier:
                continue
            rules = policy.egress if direction == EGRESS else policy.ingress
            for rule in rules:
                if not self._rule_matches(rule, *flow):
                    continue
                hit = TierHit(
                    tier,
                    rule.action,
                    policy.name,
                    rule.index,
                    rule.name,
                    rule.fail_closed,
                    self._sameness(rule, flow[0]),
                )
                if rule.action == PASS:
                    passed.append(hit)
                    return None
                return hit
        return None

    def _rule_matches(
        self,
        rule: CompiledRule | TierRule,
        peer_ip: str,
        dst_ip: str,
        port: int,
        protocol: str,
        dst_local: LocalPod | None,
    ) -> bool:
        if rule.peers and not any(self._peer_matches(p, peer_ip) for p in rule.peers):
            return False
        if not rule.ports:
            return True
        return any(self._port_matches(p, dst_ip, port, protocol, dst_local) for p in rule.ports)

    def _sameness(self, rule: TierRule, peer_ip: str) -> str:
        """The sameness of the rule's first peer matching ``peer_ip``, or ""."""
        if not rule.same:
            return ""
        first = next((p for p in rule.peers if self._peer_matches(p, peer_ip)), None)
        if first is None:
            return ""
        return next((s.reason for s in rule.same if s.peer_set == first.peer_set), "")

    def _peer_matches(self, peer: PeerMatch, ip: str) -> bool:
        if peer.peer_set is not None:
            return ip in self._sets.ips.get(peer.peer_set, ())
        assert peer.cidr is not None
        addr = ipaddress.ip_address(ip)
        net = ipaddress.ip_network(peer.cidr)
        if addr.version != net.version or addr not in net:
            return False
        return not any(addr in ipaddress.ip_network(e) for e in peer.excepts)

    def _port_matches(
        self, pm: PortMatch, dst_ip: str, port: int, protocol: str, dst_local: LocalPod | None
    ) -> bool:
        if pm.protocol != protocol:
            return False
        if pm.name is None:
            return pm.port is None or pm.port <= port <= (pm.end_port or pm.port)
        if pm.named_port_set is not None:
            return (dst_ip, port) in self._sets.ports.get(pm.named_port_set, ())
        if dst_local is None:
            return False
        return any(
            cp.name == pm.name and cp.protocol == protocol and cp.port == port
            for cp in dst_local.ports
        )


class Dataplane:
    """Evaluates connections against compiled rule sets, as the agents enforce them."""

    def __init__(self, cluster: Cluster, compiled: CompiledCluster | None = None) -> None:
        self.cluster = cluster
        self.compiled = compiled if compiled is not None else compile_cluster(cluster)
        # Pods as the compiler saw them: each with only the addresses it owns.
        self._pods, self.conflicts = resolve(cluster.pods.values())
        self._claims: dict[str, IPClaim] = {c.ip: c for c in self.conflicts}
        self._places: dict[str, _Place] = {}
        # Where the claimants of each contested address run: it is local there.
        self._contested_nodes: dict[str, set[str]] = {}
        self._locate()
        sets = SetIndex(self.compiled.peer_sets.values())
        self._nodes = {
            name: NodeEvaluator(rules, sets) for name, rules in self.compiled.node_rule_sets.items()
        }
        self._contested = frozenset(
            ip for rules in self.compiled.node_rule_sets.values() for ip in rules.contested_ips
        )

    def _locate(self) -> None:
        for info in self.cluster.nodes.values():
            for ip in info.addresses:
                self._places.setdefault(ip, _Place(info.name, None))
        for pod in self._pods.values():
            for ip in pod.host_ips:
                self._places.setdefault(ip, _Place(pod.node_name, None))
        for pod in self._pods.values():
            # A contested address stays where its claimants are, for own-node traffic
            # (which never crosses FORWARD); all else to and from it is denied below.
            for ip in pod.contested_ips:
                self._contested_nodes.setdefault(ip, set()).add(pod.node_name)
        for pod in self._pods.values():
            if not pod.active:
                continue
            for ip in pod.ips:
                if pod.host_network:
                    self._places[ip] = _Place(pod.node_name, None)
                else:
                    self._places[ip] = _Place(pod.node_name, pod.key)

    def _place(self, ep: Endpoint, ip: str, other: _Place) -> _Place:
        if isinstance(ep, Pod) and ip in ep.contested_ips:
            # The pod itself, wherever the address's other claimants are.
            return _Place(ep.node_name, ep.key)
        nodes = self._contested_nodes.get(ip, ())
        if other.pod is None and other.node in nodes:
            # A contested address by address, seen from a node one claimant runs on.
            return _Place(other.node, "")
        return self._places.get(ip, _Place(None, None))

    def _seen(self, ep: Endpoint) -> Endpoint:
        """A pod of the cluster as the engine sees it (owned addresses only)."""
        if isinstance(ep, Pod):
            return self._pods.get(ep.key, ep)
        return ep

    def _inactive_note(self, raw: Pod, pod: Pod) -> str:
        lost = [ip for ip in raw.ips if ip not in pod.ips]
        if lost and pod.contested_ips:
            return f"{pod.key}: {self._claims[pod.contested_ips[0]].message()}"
        if lost and lost[0] in self._claims:
            return f"{pod.key}: {self._claims[lost[0]].message()}"
        why = "has no IP" if not raw.ips else f"is {raw.phase}"
        return f"{pod.key} {why}"

    # ------------------------------------------------------------------ verdicts

    def verdict(
        self, src: Endpoint, dst: Endpoint, port: int, protocol: str, family: int | None = None
    ) -> Verdict:
        """The verdict for a new connection from ``src`` to ``dst`` on ``port``/``protocol``.

        ``family`` defaults to the family of the source's primary address.
        """
        base = Verdict(False, _label(src), _label(dst), None, None, port, protocol)
        raw_ends = (src, dst)
        src, dst = self._seen(src), self._seen(dst)
        for raw, ep in zip(raw_ends, (src, dst), strict=True):
            if isinstance(ep, Pod) and not ep.active and not ep.contested_ips:
                assert isinstance(raw, Pod)
                return replace(base, note=self._inactive_note(raw, ep))
        if isinstance(src, Pod) and isinstance(dst, Pod) and src.key == dst.key:
            return replace(base, allowed=True, note="same pod (loopback)")
        if family is None:
            first = (*src.ips, *src.contested_ips)[0] if isinstance(src, Pod) else src
            family = ipaddress.ip_address(first).version
        src_ip, dst_ip = _address(src, family), _address(dst, family)
        base = replace(base, src_ip=src_ip, dst_ip=dst_ip)
        if src_ip is None or dst_ip is None:
            return replace(base, note=f"no IPv{family} path")
        if src_ip == dst_ip and src_ip not in self._contested:
            # Loopback, or through its own Service (hairpin), which FORWARD lets pass
            # too (NodeEvaluator.allows): allowed either way.
            return replace(base, allowed=True, note="same endpoint (loopback)")
        src_at = self._place(src, src_ip, self._places.get(dst_ip, _Place(None, None)))
        dst_at = self._place(dst, dst_ip, src_at)
        if (
            # A pod without a node ("") is on no node: nothing is its own node.
            src_at.node
            and src_at.node == dst_at.node
            and (src_at.pod is None or dst_at.pod is None)
        ):
            return self._own_node(base, src_at, src_ip, dst_ip, port, protocol)
        for ip in (src_ip, dst_ip):
            if ip in self._contested:
                return replace(base, note=self._claims[ip].message() if ip in self._claims else "")
        egress = ingress = None
        if src_at.pod is not None and src_at.node in self._nodes:
            egress = self._nodes[src_at.node].check(src_ip, dst_ip, port, protocol, EGRESS)
        if dst_at.pod is not None and dst_at.node in self._nodes:
            ingress = self._nodes[dst_at.node].check(src_ip, dst_ip, port, protocol, INGRESS)
        allowed = all(v is None or v.allowed for v in (egress, ingress))
        return replace(base, allowed=allowed, egress=egress, ingress=ingress)

    def _own_node(
        self, base: Verdict, src_at: _Place, src_ip: str, dst_ip: str, port: int, protocol: str
    ) -> Verdict:
        """A pod and its own node: the node reaching its pod is never judged (OUTPUT);
        a pod reaching its node is judged by its egress tiers at the INPUT hook.

        A contested source address is in no subject set, so INPUT lets it through.
        """
        node = src_at.node
        assert node is not None
        note = f"a pod and its own node ({node})"
        if src_at.pod is None or src_ip in self._contested or node not in self._nodes:
            return replace(base, allowed=True, note=note)
        egress = self._nodes[node].check(src_ip, dst_ip, port, protocol, EGRESS, own_node=True)
        allowed = egress is None or egress.allowed
        return replace(base, allowed=allowed, egress=egress, note=note)

    def matrix(
        self, port: int, protocol: str, pods: Iterable[Pod] | None = None, family: int | None = None
    ) -> dict[str, dict[str, bool]]:
        """Reachability between every ordered pair of participating pods."""
        chosen = list(pods) if pods is not None else self.cluster.active_pods()
        return {
            s.key: {d.key: self.verdict(s, d, port, protocol, family).allowed for d in chosen}
            for s in chosen
        }
