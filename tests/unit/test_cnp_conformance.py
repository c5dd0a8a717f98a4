"""The ClusterNetworkPolicy conformance suite of network-policy-api v0.2.0, offline.

Upstream (``conformance/tests/*.go`` at tag v0.2.0) runs each test against a live
cluster: it applies a few policies, then has client pods "poke" server pods and
expects each connection to succeed or time out. This file models the same cluster
and the same policies in stockade's own words, and turns every poke into a row
``(src, dst, protocol, port, expected)``, checked on the compiled engine
(``Dataplane(cluster).verdict``) and on the reference
(``reference.explain_with_tiers``).

The model of the upstream suite's base manifests:

* namespaces ``network-policy-conformance-<house>`` for the houses gryffindor,
  slytherin, hufflepuff and ravenclaw, labelled ``conformance-house: <house>`` (and
  ``kubernetes.io/metadata.name``, which the API server adds), and
  ``network-policy-conformance-forbidden-forrest``;
* in each house a StatefulSet of two pods (harry-potter-0/1, draco-malfoy-0/1,
  cedric-diggory-0/1, luna-lovegood-0/1) labelled ``conformance-house: <house>``,
  serving TCP 80 (declared as ``web``) and 8080, UDP 53 (declared as ``dns``) and
  5353, SCTP 9003 and 9005;
* in forbidden-forrest two host-network pods centaur-0/1, serving the suite's host
  network ports (34345.. by default): TCP 34345 and 34346, UDP 34347 and 34349,
  SCTP 34351 and 34352. Two host-network pods declaring the same ports never share
  a node, so centaur-0 and centaur-1 are on different nodes;
* Nodes labelled ``kubernetes.io/os: linux``, each with an ``InternalIP``.

Where the pods land is up to the scheduler, so every row runs on several layouts:
``spread`` (every ``-0`` pod on the node of centaur-0, every ``-1`` pod on the node
of centaur-1), ``crossed`` (the other way round: ``-0`` pods with centaur-1) and
``spread-v6`` (``spread`` on a single-stack IPv6 cluster; the inline-CIDR tests use
``/128`` there, as upstream does). The node-peer tests thus reach a host-network
pod both on the client's own node and on another node.

Each upstream test starts from its manifests and patches policies between its
subtests; a patch stays in force for the later subtests. Every state is a separate
:class:`Step` (its own cluster), named after the patch that led to it. Every row
carries the upstream test's ShortName and a short name of its subtest; the comment
above each group quotes the upstream subtest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

from stockade.cluster import Cluster, parse_documents
from stockade.model import Pod
from stockade.verdict import Dataplane
from stockade_lab import reference
from stockade_lab.reference import Endpoint

Doc = dict[str, Any]

TCP, UDP, SCTP = "TCP", "UDP", "SCTP"

# --- the model of the suite's base manifests -----------------------------------------

PREFIX = "network-policy-conformance-"
HOUSES = ("gryffindor", "slytherin", "hufflepuff", "ravenclaw")
FOREST = "forbidden-forrest"
SETS = {
    "gryffindor": "harry-potter",
    "slytherin": "draco-malfoy",
    "hufflepuff": "cedric-diggory",
    "ravenclaw": "luna-lovegood",
    FOREST: "centaur",
}
G, S, H, R = (PREFIX + h for h in HOUSES)


def _key(house: str, ordinal: int) -> str:
    return f"{PREFIX}{house}/{SETS[house]}-{ordinal}"


HP0, HP1 = _key("gryffindor", 0), _key("gryffindor", 1)
DM0, DM1 = _key("slytherin", 0), _key("slytherin", 1)
CD0, CD1 = _key("hufflepuff", 0), _key("hufflepuff", 1)
LL0, LL1 = _key("ravenclaw", 0), _key("ravenclaw", 1)
CT0, CT1 = _key(FOREST, 0), _key(FOREST, 1)

# The suite's HostNetworkPorts with its default range start (34345), 8 ports.
HNP = tuple(range(34345, 34353))

NODE_NAMES = ("kind-worker", "kind-worker2", "kind-control-plane")
NODE_ADDRS = {
    4: {
        "kind-worker": "172.18.0.2",
        "kind-worker2": "172.18.0.3",
        "kind-control-plane": "172.18.0.4",
    },
    6: {
        "kind-worker": "fc00:f853:ccd:e793::2",
        "kind-worker2": "fc00:f853:ccd:e793::3",
        "kind-control-plane": "fc00:f853:ccd:e793::4",
    },
}


@dataclass(frozen=True)
class Layout:
    """Where the pods run. ``house_nodes[i]`` hosts every house pod of ordinal ``i``;
    centaur-0 always runs on kind-worker and centaur-1 on kind-worker2."""

    name: str
    family: int
    house_nodes: tuple[str, str]

    def pod_ip(self, house: str, ordinal: int) -> str:
        node = NODE_NAMES.index(self.house_nodes[ordinal]) + 1
        host = 10 + 2 * HOUSES.index(house) + ordinal
        if self.family == 4:
            return f"10.244.{node}.{host}"
        return f"fd00:10:244:{node}::{host:x}"

    def host_mask(self) -> str:
        return "/32" if self.family == 4 else "/128"


LAYOUTS = (
    Layout("spread", 4, ("kind-worker", "kind-worker2")),
    Layout("crossed", 4, ("kind-worker2", "kind-worker")),
    Layout("spread-v6", 6, ("kind-worker", "kind-worker2")),
)


def _namespace(house: str) -> Doc:
    name = PREFIX + house
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {"conformance-house": house, "kubernetes.io/metadata.name": name},
        },
    }


def _node(layout: Layout, name: str) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
            },
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": NODE_ADDRS[layout.family][name]},
                {"type": "Hostname", "address": name},
            ]
        },
    }


def _container(name: str, ports: Sequence[tuple[str, int, str]] = ()) -> Doc:
    container: Doc = {"name": name, "image": "registry.k8s.io/e2e-test-images/agnhost:2.45"}
    if ports:
        container["ports"] = [
            {"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports
        ]
    return container


def _pod(layout: Layout, house: str, ordinal: int) -> Doc:
    base = SETS[house]
    name = f"{base}-{ordinal}"
    if house == FOREST:
        node = NODE_NAMES[ordinal]
        ip = NODE_ADDRS[layout.family][node]
        containers = [
            _container(f"{base}-client"),
            _container(f"{base}-{HNP[0]}-tcp", [(f"web-{HNP[0]}", HNP[0], TCP)]),
            _container(f"{base}-{HNP[1]}-tcp", [(f"web-{HNP[1]}", HNP[1], TCP)]),
            _container(f"{base}-{HNP[2]}-udp", [(f"dns-{HNP[2]}", HNP[2], UDP)]),
            _container(f"{base}-{HNP[4]}-udp", [(f"dns-{HNP[4]}", HNP[4], UDP)]),
            _container(f"{base}-{HNP[6]}"),
            _container(f"{base}-{HNP[7]}"),
        ]
    else:
        node = layout.house_nodes[ordinal]
        ip = layout.pod_ip(house, ordinal)
        containers = [
            _container(f"{base}-client"),
            _container(f"{base}-80", [("web", 80, TCP)]),
            _container(f"{base}-8080"),
            _container(f"{base}-5353"),
            _container(f"{base}-53", [("dns", 53, UDP)]),
            _container(f"{base}-9003"),
            _container(f"{base}-9005"),
        ]
    host_ip = NODE_ADDRS[layout.family][node]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": PREFIX + house,
            "name": name,
            "labels": {
                "conformance-house": house,
                "statefulset.kubernetes.io/pod-name": name,
                "apps.kubernetes.io/pod-index": str(ordinal),
            },
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": house == FOREST,
            "containers": containers,
        },
        "status": {
            "phase": "Running",
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
        },
    }


def base_docs(layout: Layout) -> list[Doc]:
    """Namespaces, Nodes and the ten pods of the suite's base manifests."""
    return [
        *(_namespace(h) for h in (*HOUSES, FOREST)),
        *(_node(layout, n) for n in NODE_NAMES),
        *(_pod(layout, h, i) for h in (*HOUSES, FOREST) for i in (0, 1)),
    ]


# --- policy builders ---------------------------------------------------------------


def named_ns(namespace: str) -> Doc:
    """A selector of one namespace by its ``kubernetes.io/metadata.name`` label."""
    return {"matchLabels": {"kubernetes.io/metadata.name": namespace}}


def house(name: str) -> Doc:
    """A selector of ``conformance-house: <name>``."""
    return {"matchLabels": {"conformance-house": name}}


def house_pods(name: str) -> Doc:
    """A ``pods`` peer or subject: pods of the house in namespaces of the house."""
    return {"namespaceSelector": house(name), "podSelector": house(name)}


def port(protocol: str, number: int) -> Doc:
    return {protocol.lower(): {"destinationPort": {"number": number}}}


def port_range(protocol: str, start: int, end: int) -> Doc:
    return {protocol.lower(): {"destinationPort": {"range": {"start": start, "end": end}}}}


def rule(
    direction: str, name: str, action: str, peers: Sequence[Doc], protocols: Sequence[Doc] = ()
) -> Doc:
    """An ``ingress`` (peers in ``from``) or ``egress`` (peers in ``to``) rule."""
    doc: Doc = {
        "name": name,
        "action": action,
        "from" if direction == "ingress" else "to": list(peers),
    }
    if protocols:
        doc["protocols"] = list(protocols)
    return doc


def cnp(
    name: str,
    tier: str,
    priority: int,
    subject: Doc,
    *,
    ingress: Sequence[Doc] = (),
    egress: Sequence[Doc] = (),
) -> Doc:
    spec: Doc = {"tier": tier, "priority": priority, "subject": subject}
    if ingress:
        spec["ingress"] = list(ingress)
    if egress:
        spec["egress"] = list(egress)
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def swap(rules: Sequence[Doc], i: int, j: int) -> list[Doc]:
    """The rule list with rules ``i`` and ``j`` exchanged (the suite's patches)."""
    out = list(rules)
    out[i], out[j] = out[j], out[i]
    return out


def with_protocols(rules: Sequence[Doc], index: int, protocols: Sequence[Doc]) -> list[Doc]:
    """The rule list with rule ``index``'s ``protocols`` replaced."""
    out = [dict(r) for r in rules]
    out[index]["protocols"] = list(protocols)
    return out


def with_action(rules: Sequence[Doc], index: int, action: str) -> list[Doc]:
    out = [dict(r) for r in rules]
    out[index]["action"] = action
    return out


def ladder(
    direction: str,
    whole: str,
    partial: str,
    partial_ports: Sequence[Doc],
    limited: str,
    limited_ports: Sequence[Doc],
    *,
    passes: bool = True,
) -> list[Doc]:
    """The rule list the per-protocol tests share, in its applied order.

    Admin (``passes``): 0 Accept ``whole``, 1 Deny ``whole``, 2 Pass ``whole``,
    3 Deny ``partial`` on ``partial_ports``, 4 Pass ``partial`` on the same ports,
    5 Accept ``limited`` on ``limited_ports``, 6 Deny ``limited`` (everything else).
    Baseline (no ``passes``): the same without rules 2 and 4.
    """
    ns = {"namespaces": named_ns(whole)}
    part = {"namespaces": named_ns(partial)}
    lim = {"namespaces": named_ns(limited)}
    rules = [
        rule(direction, "whole-accept", "Accept", [ns]),
        rule(direction, "whole-deny", "Deny", [ns]),
        rule(direction, "whole-pass", "Pass", [ns]),
        rule(direction, "partial-deny", "Deny", [part], partial_ports),
        rule(direction, "partial-pass", "Pass", [part], partial_ports),
        rule(direction, "limited-accept", "Accept", [lim], limited_ports),
        rule(direction, "limited-deny-rest", "Deny", [lim]),
    ]
    if not passes:
        del rules[4], rules[2]
    return rules


# --- rows and steps ----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One PokeServer call: ``src`` connects to ``dst`` (a pod, poked at its IP)."""

    subtest: str
    src: str
    dst: str
    protocol: str
    port: int
    expected: bool

    @property
    def id(self) -> str:
        s, d = self.src.split("/")[1], self.dst.split("/")[1]
        verdict = "allow" if self.expected else "deny"
        return f"{s}->{d}:{self.protocol}/{self.port}={verdict}"


Poke = tuple[str, str, str, int, bool]


def sub(name: str, *pokes: Poke) -> tuple[Row, ...]:
    """The rows of one upstream subtest."""
    return tuple(Row(name, *p) for p in pokes)


@dataclass(frozen=True)
class Step:
    """A state of one upstream test (its manifests, after the patches so far) and the
    pokes made in that state."""

    test: str  # upstream ShortName
    state: str  # "applied", or the patches so far
    objects: Callable[[Layout], list[Doc]]
    rows: tuple[Row, ...]

    @property
    def id(self) -> str:
        return f"{self.test}[{self.state}]"


def fixed(*docs: Doc) -> Callable[[Layout], list[Doc]]:
    return lambda _layout: list(docs)


STEPS: list[Step] = []


def step(
    test: str, state: str, objects: Callable[[Layout], list[Doc]], *groups: tuple[Row, ...]
) -> None:
    STEPS.append(Step(test, state, objects, tuple(r for g in groups for r in g)))


# --- CNPAdminTierEgressTCP / UDP / SCTP ----------------------------------------------

# base/admin_tier/standard-egress-tcp-rules.yaml: "egress-tcp", Admin 6, subject
# gryffindor; whole ravenclaw, partial slytherin TCP 80, limited hufflepuff TCP 8080.
_E_TCP = ladder("egress", R, S, [port(TCP, 80)], H, [port(TCP, 8080)])
_E_TCP_01 = swap(_E_TCP, 0, 1)
_E_TCP_02 = swap(_E_TCP_01, 0, 2)
_E_TCP_34 = swap(_E_TCP_02, 3, 4)


def _egress_tcp(rules: list[Doc]) -> Callable[[Layout], list[Doc]]:
    return fixed(cnp("egress-tcp", "Admin", 6, {"namespaces": named_ns(G)}, egress=rules))


step(
    "CNPAdminTierEgressTCP",
    "applied",
    _egress_tcp(_E_TCP),
    # "Should support an 'allow-egress' policy for TCP protocol; ensure rule ordering is respected"
    sub("allow-egress, rule order", (HP0, LL0, TCP, 80, True), (HP1, LL0, TCP, 8080, True)),
    # "Should support an 'allow-egress' policy for TCP protocol at the specified port"
    sub("allow-egress at port", (HP0, CD1, TCP, 8080, True), (HP1, CD1, TCP, 80, False)),
)
step(
    "CNPAdminTierEgressTCP",
    "swap 0,1",
    _egress_tcp(_E_TCP_01),
    # "Should support an 'deny-egress' policy for TCP protocol; ensure rule ordering is respected"
    sub("deny-egress, rule order", (HP0, LL1, TCP, 80, False), (HP1, LL1, TCP, 8080, False)),
    # "Should support a 'deny-egress' policy for TCP protocol at the specified port"
    sub("deny-egress at port", (HP0, DM0, TCP, 80, False), (HP1, DM0, TCP, 8080, True)),
)
step(
    "CNPAdminTierEgressTCP",
    "swap 0,1; swap 0,2",
    _egress_tcp(_E_TCP_02),
    # "Should support an 'pass-egress' policy for TCP protocol; ensure rule ordering is respected"
    sub("pass-egress, rule order", (HP0, LL0, TCP, 80, True), (HP1, LL0, TCP, 8080, True)),
)
step(
    "CNPAdminTierEgressTCP",
    "swap 0,1; swap 0,2; swap 3,4",
    _egress_tcp(_E_TCP_34),
    # "Should support a 'pass-egress' policy for TCP protocol at the specified port"
    sub("pass-egress at port", (HP0, DM0, TCP, 80, True), (HP1, DM0, TCP, 8080, True)),
)

# base/admin_tier/standard-egress-udp-rules.yaml: "egress-udp", Admin 7, subject
# hufflepuff; whole ravenclaw, partial slytherin UDP 5353, limited gryffindor UDP 53.
_E_UDP = ladder("egress", R, S, [port(UDP, 5353)], G, [port(UDP, 53)])
_E_UDP_01 = swap(_E_UDP, 0, 1)
_E_UDP_02 = swap(_E_UDP_01, 0, 2)
_E_UDP_34 = swap(_E_UDP_02, 3, 4)


def _egress_udp(rules: list[Doc]) -> Callable[[Layout], list[Doc]]:
    return fixed(cnp("egress-udp", "Admin", 7, {"namespaces": named_ns(H)}, egress=rules))


step(
    "CNPAdminTierEgressUDP",
    "applied",
    _egress_udp(_E_UDP),
    # "Should support an 'allow-egress' policy for UDP protocol; ensure rule ordering is respected"
    sub("allow-egress, rule order", (CD0, LL0, UDP, 53, True), (CD1, LL0, UDP, 5353, True)),
    # "Should support an 'allow-egress' policy for UDP protocol at the specified port"
    sub("allow-egress at port", (CD0, HP1, UDP, 53, True), (CD1, HP1, UDP, 5353, False)),
)
step(
    "CNPAdminTierEgressUDP",
    "swap 0,1",
    _egress_udp(_E_UDP_01),
    # "Should support an 'deny-egress' policy for UDP protocol; ensure rule ordering is respected"
    sub("deny-egress, rule order", (CD0, LL1, UDP, 53, False), (CD1, LL1, UDP, 5353, False)),
    # "Should support a 'deny-egress' policy for UDP protocol at the specified port"
    sub("deny-egress at port", (CD0, DM0, UDP, 5353, False), (CD1, DM0, UDP, 53, True)),
)
step(
    "CNPAdminTierEgressUDP",
    "swap 0,1; swap 0,2",
    _egress_udp(_E_UDP_02),
    # "Should support an 'pass-egress' policy for UDP protocol; ensure rule ordering is respected"
    sub("pass-egress, rule order", (CD0, LL1, UDP, 5353, True), (CD1, LL1, UDP, 53, True)),
)
step(
    "CNPAdminTierEgressUDP",
    "swap 0,1; swap 0,2; swap 3,4",
    _egress_udp(_E_UDP_34),
    # "Should support a 'pass-egress' policy for UDP protocol at the specified port"
    sub("pass-egress at port", (CD0, DM0, UDP, 5353, True), (CD1, DM0, UDP, 53, True)),
)

# base/admin_tier/standard-egress-sctp-rules.yaml: "egress-sctp", Admin 8, subject
# ravenclaw; whole gryffindor, partial slytherin SCTP 9003, limited hufflepuff SCTP 9003.
_E_SCTP = ladder("egress", G, S, [port(SCTP, 9003)], H, [port(SCTP, 9003)])
_E_SCTP_01 = swap(_E_SCTP, 0, 1)
_E_SCTP_02 = swap(_E_SCTP_01, 0, 2)
_E_SCTP_34 = swap(_E_SCTP_02, 3, 4)


def _egress_sctp(rules: list[Doc]) -> Callable[[Layout], list[Doc]]:
    return fixed(cnp("egress-sctp", "Admin", 8, {"namespaces": named_ns(R)}, egress=rules))


step(
    "CNPAdminTierEgressSCTP",
    "applied",
    _egress_sctp(_E_SCTP),
    # "Should support an 'allow-egress' policy for SCTP protocol; ensure rule ordering is respected"
    sub("allow-egress, rule order", (LL0, HP0, SCTP, 9003, True), (LL1, HP0, SCTP, 9005, True)),
    # "Should support an 'allow-egress' policy for SCTP protocol at the specified port"
    sub("allow-egress at port", (LL0, CD1, SCTP, 9003, True), (LL1, CD1, SCTP, 9005, False)),
)
step(
    "CNPAdminTierEgressSCTP",
    "swap 0,1",
    _egress_sctp(_E_SCTP_01),
    # "Should support an 'deny-egress' policy for SCTP protocol; ensure rule ordering is respected"
    sub("deny-egress, rule order", (LL0, HP1, SCTP, 9003, False), (LL1, HP1, SCTP, 9005, False)),
    # "Should support a 'deny-egress' policy for SCTP protocol at the specified port"
    sub("deny-egress at port", (LL0, DM0, SCTP, 9003, False), (LL1, DM0, SCTP, 9005, True)),
)
step(
    "CNPAdminTierEgressSCTP",
    "swap 0,1; swap 0,2",
    _egress_sctp(_E_SCTP_02),
    # "Should support an 'pass-egress' policy for SCTP protocol; ensure rule ordering is respected"
    sub("pass-egress, rule order", (LL0, HP1, SCTP, 9003, True), (LL1, HP1, SCTP, 9005, True)),
)
step(
    "CNPAdminTierEgressSCTP",
    "swap 0,1; swap 0,2; swap 3,4",
    _egress_sctp(_E_SCTP_34),
    # "Should support a 'pass-egress' policy for SCTP protocol at the specified port"
    sub("pass-egress at port", (LL0, DM0, SCTP, 9003, True), (LL1, DM0, SCTP, 9005, True)),
)

# --- CNPAdminTierIngressTCP / UDP / SCTP ---------------------------------------------

# base/admin_tier/standard-ingress-tcp-rules.yaml: "ingress-tcp", Admin 3, subject
# gryffindor; whole ravenclaw, partial slytherin TCP 80, limited hufflepuff TCP 80.
_I_TCP = ladder("ingress", R, S, [port(TCP, 80)], H, [port(TCP, 80)])
_I_TCP_01 = swap(_I_TCP, 0, 1)
_I_TCP_02 = swap(_I_TCP_01, 0, 2)
_I_TCP_34 = swap(_I_TCP_02, 3, 4)


def _ingress_tcp(rules: list[Doc]) -> Callable[[Layout], list[Doc]]:
    return fixed(cnp("ingress-tcp", "Admin", 3, {"namespaces": named_ns(G)}, ingress=rules))


step(
    "CNPAdminTierIngressTCP",
    "applied",
    _ingress_tcp(_I_TCP),
    # "Should support an 'allow-ingress' policy for TCP protocol; ensure rule ordering is respected"
    sub("allow-ingress, rule order", (LL0, HP0, TCP, 80, True), (LL1, HP0, TCP, 8080, True)),
    # "Should support an 'allow-ingress' policy for TCP protocol at the specified port"
    sub("allow-ingress at port", (CD0, HP1, TCP, 80, True), (CD1, HP1, TCP, 8080, False)),
)
step(
    "CNPAdminTierIngressTCP",
    "swap 0,1",
    _ingress_tcp(_I_TCP_01),
    # "Should support an 'deny-ingress' policy for TCP protocol; ensure rule ordering is respected"
    sub("deny-ingress, rule order", (LL0, HP1, TCP, 80, False), (LL1, HP1, TCP, 8080, False)),
    # "Should support a 'deny-ingress' policy for TCP protocol at the specified port"
    sub("deny-ingress at port", (DM0, HP0, TCP, 80, False), (DM1, HP0, TCP, 8080, True)),
)
step(
    "CNPAdminTierIngressTCP",
    "swap 0,1; swap 0,2",
    _ingress_tcp(_I_TCP_02),
    # "Should support an 'pass-ingress' policy for TCP protocol; ensure rule ordering is respected"
    sub("pass-ingress, rule order", (LL0, HP0, TCP, 80, True), (LL1, HP0, TCP, 8080, True)),
)
step(
    "CNPAdminTierIngressTCP",
    "swap 0,1; swap 0,2; swap 3,4",
    _ingress_tcp(_I_TCP_34),
    # "Should support a 'pass-ingress' policy for TCP protocol at the specified port"
    sub("pass-ingress at port", (DM0, HP0, TCP, 80, True), (DM1, HP0, TCP, 8080, True)),
)

# base/admin_tier/standard-ingress-udp-rules.yaml: "ingress-udp", Admin 4, subject
# hufflepuff; whole ravenclaw, partial slytherin UDP 5353, limited gryffindor UDP 53.
_I_UDP = ladder("ingress", R, S, [port(UDP, 5353)], G, [port(UDP, 53)])
_I_UDP_01 = swap(_I_UDP, 0, 1)
_I_UDP_02 = swap(_I_UDP_01, 0, 2)
_I_UDP_34 = swap(_I_UDP_02, 3, 4)


def _ingress_udp(rules: list[Doc]) -> Callable[[Layout], list[Doc]]:
    return fixed(cnp("ingress-udp", "Admin", 4, {"namespaces": named_ns(H)}, ingress=rules))


step(
    "CNPAdminTierIngressUDP",
    "applied",
    _ingress_udp(_I_UDP),
    # "Should support an 'allow-ingress' policy for UDP protocol; ensure rule ordering is respected"
    sub("allow-ingress, rule order", (LL0, CD0, UDP, 53, True), (LL1, CD0, UDP, 5353, True)),
    # "Should support an 'allow-ingress' policy for UDP protocol at the specified port"
    sub("allow-ingress at port", (HP0, CD1, UDP, 53, True), (HP1, CD1, UDP, 5353, False)),
)
step(
    "CNPAdminTierIngressUDP",
    "swap 0,1",
    _ingress_udp(_I_UDP_01),
    # "Should support an 'deny-ingress' policy for UDP protocol; ensure rule ordering is respected"
    sub("deny-ingress, rule order", (LL0, CD1, UDP, 53, False), (LL1, CD1, UDP, 5353, False)),
    # "Should support a 'deny-ingress' policy for UDP protocol at the specified port"
    sub("deny-ingress at port", (DM0, CD0, UDP, 5353, False), (DM1, CD0, UDP, 53, True)),
)
step(
    "CNPAdminTierIngressUDP",
    "swap 0,1; swap 0,2",
    _ingress_udp(_I_UDP_02),
    # "Should support an 'pass-ingress' policy for UDP protocol; ensure rule ordering is respected"
    sub("pass-ingress, rule order", (LL0, CD1, UDP, 5353, True), (LL1, CD1, UDP, 53, True)),
)
step(
    "CNPAdminTierIngressUDP",
    "swap 0,1; swap 0,2; swap 3,4",
    _ingress_udp(_I_UDP_34),
    # "Should support a 'pass-ingress' policy for UDP protocol at the specified port"
    sub("pass-ingress at port", (DM0, CD0, UDP, 5353, True), (DM1, CD0, UDP, 53, True)),
)

# base/admin_tier/standard-ingress-sctp-rules.yaml: "ingress-sctp", Admin 5, subject
# ravenclaw; whole gryffindor, partial slytherin SCTP 9003, limited hufflepuff SCTP 9003.
_I_SCTP = ladder("ingress", G, S, [port(SCTP, 9003)], H, [port(SCTP, 9003)])
_I_SCTP_01 = swap(_I_SCTP, 0, 1)
_I_SCTP_02 = swap(_I_SCTP_01, 0, 2)
_I_SCTP_34 = swap(_I_SCTP_02, 3, 4)


def _ingress_sctp(rules: list[Doc]) -> Callable[[Layout], list[Doc]]:
    return fixed(cnp("ingress-sctp", "Admin", 5, {"namespaces": named_ns(R)}, ingress=rules))


step(
    "CNPAdminTierIngressSCTP",
    "applied",
    _ingress_sctp(_I_SCTP),
    # "Should support an 'allow-ingress' policy for SCTP protocol; ensure rule ordering is
    # respected"
    sub("allow-ingress, rule order", (HP0, LL0, SCTP, 9003, True), (HP1, LL0, SCTP, 9005, True)),
    # "Should support an 'allow-ingress' policy for SCTP protocol at the specified port"
    sub("allow-ingress at port", (CD0, LL1, SCTP, 9003, True), (CD1, LL1, SCTP, 9005, False)),
)
step(
    "CNPAdminTierIngressSCTP",
    "swap 0,1",
    _ingress_sctp(_I_SCTP_01),
    # "Should support an 'deny-ingress' policy for SCTP protocol; ensure rule ordering is respected"
    sub("deny-ingress, rule order", (HP0, LL1, SCTP, 9003, False), (HP1, LL1, SCTP, 9005, False)),
    # "Should support a 'deny-ingress' policy for SCTP protocol at the specified port"
    sub("deny-ingress at port", (DM0, LL0, SCTP, 9003, False), (DM1, LL0, SCTP, 9005, True)),
)
step(
    "CNPAdminTierIngressSCTP",
    "swap 0,1; swap 0,2",
    _ingress_sctp(_I_SCTP_02),
    # "Should support an 'pass-ingress' policy for SCTP protocol; ensure rule ordering is respected"
    sub("pass-ingress, rule order", (HP0, LL1, SCTP, 9003, True), (HP1, LL1, SCTP, 9005, True)),
)
step(
    "CNPAdminTierIngressSCTP",
    "swap 0,1; swap 0,2; swap 3,4",
    _ingress_sctp(_I_SCTP_34),
    # "Should support a 'pass-ingress' policy for SCTP protocol at the specified port"
    sub("pass-ingress at port", (DM0, LL0, SCTP, 9003, True), (DM1, LL0, SCTP, 9005, True)),
)

# --- CNPBaselineTierEgress/Ingress TCP / UDP / SCTP ------------------------------------

# base/baseline_tier/standard-{egress,ingress}-{tcp,udp,sctp}-rules.yaml: "default",
# Baseline 10, the same subjects and rules as the Admin ones, without the Pass rules.


def _baseline(direction: str, subject_ns: str, rules: list[Doc]) -> Callable[[Layout], list[Doc]]:
    subject = {"namespaces": named_ns(subject_ns)}
    gress = {direction: rules}
    return fixed(cnp("default", "Baseline", 10, subject, **gress))


_BE_TCP = ladder("egress", R, S, [port(TCP, 80)], H, [port(TCP, 8080)], passes=False)
step(
    "CNPBaselineTierEgressTCP",
    "applied",
    _baseline("egress", G, _BE_TCP),
    # "Should support an 'allow-egress' policy for TCP protocol; ensure rule ordering is respected"
    sub("allow-egress, rule order", (HP0, LL0, TCP, 80, True), (HP1, LL0, TCP, 8080, True)),
    # "Should support an 'allow-egress' policy for TCP protocol at the specified port"
    sub("allow-egress at port", (HP0, CD1, TCP, 8080, True), (HP1, CD1, TCP, 80, False)),
)
step(
    "CNPBaselineTierEgressTCP",
    "swap 0,1",
    _baseline("egress", G, swap(_BE_TCP, 0, 1)),
    # "Should support an 'deny-egress' policy for TCP protocol; ensure rule ordering is respected"
    sub("deny-egress, rule order", (HP0, LL1, TCP, 80, False), (HP1, LL1, TCP, 8080, False)),
    # "Should support a 'deny-egress' policy for TCP protocol at the specified port"
    sub("deny-egress at port", (HP0, DM0, TCP, 80, False), (HP1, DM0, TCP, 8080, True)),
)

_BE_UDP = ladder("egress", R, S, [port(UDP, 5353)], G, [port(UDP, 53)], passes=False)
step(
    "CNPBaselineTierEgressUDP",
    "applied",
    _baseline("egress", H, _BE_UDP),
    # "Should support an 'allow-egress' policy for UDP protocol; ensure rule ordering is respected"
    sub("allow-egress, rule order", (CD0, LL0, UDP, 53, True), (CD1, LL0, UDP, 5353, True)),
    # "Should support an 'allow-egress' policy for UDP protocol at the specified port"
    sub("allow-egress at port", (CD0, HP1, UDP, 53, True), (CD1, HP1, UDP, 5353, False)),
)
step(
    "CNPBaselineTierEgressUDP",
    "swap 0,1",
    _baseline("egress", H, swap(_BE_UDP, 0, 1)),
    # "Should support an 'deny-egress' policy for UDP protocol; ensure rule ordering is respected"
    sub("deny-egress, rule order", (CD0, LL1, UDP, 53, False), (CD1, LL1, UDP, 5353, False)),
    # "Should support a 'deny-egress' policy for UDP protocol at the specified port"
    sub("deny-egress at port", (CD0, DM0, UDP, 5353, False), (CD1, DM0, UDP, 53, True)),
)

_BE_SCTP = ladder("egress", G, S, [port(SCTP, 9003)], H, [port(SCTP, 9003)], passes=False)
step(
    "CNPBaselineTierEgressSCTP",
    "applied",
    _baseline("egress", R, _BE_SCTP),
    # "Should support an 'allow-egress' policy for SCTP protocol; ensure rule ordering is respected"
    sub("allow-egress, rule order", (LL0, HP0, SCTP, 9003, True), (LL1, HP0, SCTP, 9005, True)),
    # "Should support an 'allow-egress' policy for SCTP protocol at the specified port"
    sub("allow-egress at port", (LL0, CD1, SCTP, 9003, True), (LL1, CD1, SCTP, 9005, False)),
)
step(
    "CNPBaselineTierEgressSCTP",
    "swap 0,1",
    _baseline("egress", R, swap(_BE_SCTP, 0, 1)),
    # "Should support an 'deny-egress' policy for SCTP protocol; ensure rule ordering is respected"
    sub("deny-egress, rule order", (LL0, HP1, SCTP, 9003, False), (LL1, HP1, SCTP, 9005, False)),
    # "Should support a 'deny-egress' policy for SCTP protocol at the specified port"
    sub("deny-egress at port", (LL0, DM0, SCTP, 9003, False), (LL1, DM0, SCTP, 9005, True)),
)

_BI_TCP = ladder("ingress", R, S, [port(TCP, 80)], H, [port(TCP, 80)], passes=False)
step(
    "CNPBaselineTierIngressTCP",
    "applied",
    _baseline("ingress", G, _BI_TCP),
    # "Should support an 'allow-ingress' policy for TCP protocol; ensure rule ordering is respected"
    sub("allow-ingress, rule order", (LL0, HP0, TCP, 80, True), (LL1, HP0, TCP, 8080, True)),
    # "Should support an 'allow-ingress' policy for TCP protocol at the specified port"
    sub("allow-ingress at port", (CD0, HP1, TCP, 80, True), (CD1, HP1, TCP, 8080, False)),
)
step(
    "CNPBaselineTierIngressTCP",
    "swap 0,1",
    _baseline("ingress", G, swap(_BI_TCP, 0, 1)),
    # "Should support an 'deny-ingress' policy for TCP protocol; ensure rule ordering is respected"
    sub("deny-ingress, rule order", (LL0, HP1, TCP, 80, False), (LL1, HP1, TCP, 8080, False)),
    # "Should support a 'deny-ingress' policy for TCP protocol at the specified port"
    sub("deny-ingress at port", (DM0, HP0, TCP, 80, False), (DM1, HP0, TCP, 8080, True)),
)

_BI_UDP = ladder("ingress", R, S, [port(UDP, 5353)], G, [port(UDP, 53)], passes=False)
step(
    "CNPBaselineTierIngressUDP",
    "applied",
    _baseline("ingress", H, _BI_UDP),
    # "Should support an 'allow-ingress' policy for UDP protocol; ensure rule ordering is respected"
    sub("allow-ingress, rule order", (LL0, CD0, UDP, 53, True), (LL1, CD0, UDP, 5353, True)),
    # "Should support an 'allow-ingress' policy for UDP protocol at the specified port"
    sub("allow-ingress at port", (HP0, CD1, UDP, 53, True), (HP1, CD1, UDP, 5353, False)),
)
step(
    "CNPBaselineTierIngressUDP",
    "swap 0,1",
    _baseline("ingress", H, swap(_BI_UDP, 0, 1)),
    # "Should support an 'deny-ingress' policy for UDP protocol; ensure rule ordering is respected"
    sub("deny-ingress, rule order", (LL0, CD1, UDP, 53, False), (LL1, CD1, UDP, 5353, False)),
    # "Should support a 'deny-ingress' policy for UDP protocol at the specified port"
    sub("deny-ingress at port", (DM0, CD0, UDP, 5353, False), (DM1, CD0, UDP, 53, True)),
)

_BI_SCTP = ladder("ingress", G, S, [port(SCTP, 9003)], H, [port(SCTP, 9003)], passes=False)
step(
    "CNPBaselineTierIngressSCTP",
    "applied",
    _baseline("ingress", R, _BI_SCTP),
    # "Should support an 'allow-ingress' policy for SCTP protocol; ensure rule ordering is
    # respected"
    sub("allow-ingress, rule order", (HP0, LL0, SCTP, 9003, True), (HP1, LL0, SCTP, 9005, True)),
    # "Should support an 'allow-ingress' policy for SCTP protocol at the specified port"
    sub("allow-ingress at port", (CD0, LL1, SCTP, 9003, True), (CD1, LL1, SCTP, 9005, False)),
)
step(
    "CNPBaselineTierIngressSCTP",
    "swap 0,1",
    _baseline("ingress", R, swap(_BI_SCTP, 0, 1)),
    # "Should support an 'deny-ingress' policy for SCTP protocol; ensure rule ordering is respected"
    sub("deny-ingress, rule order", (HP0, LL1, SCTP, 9003, False), (HP1, LL1, SCTP, 9005, False)),
    # "Should support a 'deny-ingress' policy for SCTP protocol at the specified port"
    sub("deny-ingress at port", (DM0, LL0, SCTP, 9003, False), (DM1, LL0, SCTP, 9005, True)),
)

# --- CNPAdminTierGress / CNPBaselineTierGress ------------------------------------------

# base/{admin,baseline}_tier/standard-gress-rules-combined.yaml: subject gryffindor, both
# directions: whole ravenclaw; partial slytherin on TCP 80, UDP 53, SCTP 9003; limited
# hufflepuff on TCP 8080 (egress) or TCP 80 (ingress), UDP 5353, SCTP 9003.
_PARTIAL = [port(TCP, 80), port(UDP, 53), port(SCTP, 9003)]
_LIMITED_OUT = [port(TCP, 8080), port(UDP, 5353), port(SCTP, 9003)]
_LIMITED_IN = [port(TCP, 80), port(UDP, 5353), port(SCTP, 9003)]


def _gress(tier: str, swaps: Sequence[tuple[int, int]]) -> Callable[[Layout], list[Doc]]:
    passes = tier == "Admin"
    egress = ladder("egress", R, S, _PARTIAL, H, _LIMITED_OUT, passes=passes)
    ingress = ladder("ingress", R, S, _PARTIAL, H, _LIMITED_IN, passes=passes)
    for i, j in swaps:
        egress, ingress = swap(egress, i, j), swap(ingress, i, j)
    name, priority = ("gress-rules", 15) if passes else ("default", 10)
    subject = {"namespaces": named_ns(G)}
    return fixed(cnp(name, tier, priority, subject, ingress=ingress, egress=egress))


for _test, _tier in (("CNPAdminTierGress", "Admin"), ("CNPBaselineTierGress", "Baseline")):
    step(
        _test,
        "applied",
        _gress(_tier, []),
        # "Should support an 'allow-gress' policy across different protocols"
        sub(
            "allow-gress",
            (HP0, LL0, TCP, 80, True),
            (HP1, LL0, UDP, 53, True),
            (HP0, LL0, SCTP, 9003, True),
            (LL0, HP0, TCP, 80, True),
            (LL1, HP0, UDP, 53, True),
            (LL1, HP0, SCTP, 9003, True),
        ),
        # "Should support an 'allow-gress' policy across different protocols at the specified ports"
        sub(
            "allow-gress at ports",
            (HP0, CD1, TCP, 8080, True),
            (HP1, CD1, TCP, 80, False),
            (HP0, CD1, UDP, 5353, True),
            (HP1, CD1, UDP, 53, False),
            (HP0, CD1, SCTP, 9003, True),
            (HP1, CD1, SCTP, 9005, False),
            (CD0, HP1, TCP, 80, True),
            (CD1, HP1, TCP, 8080, False),
            (CD0, HP1, UDP, 5353, True),
            (CD1, HP1, UDP, 53, False),
            (CD0, HP1, SCTP, 9003, True),
            (CD1, HP1, SCTP, 9005, False),
        ),
    )
    step(
        _test,
        "swap 0,1 both ways",
        _gress(_tier, [(0, 1)]),
        # "Should support an 'deny-gress' policy across different protocols"
        sub(
            "deny-gress",
            (HP0, LL1, TCP, 80, False),
            (HP1, LL1, UDP, 53, False),
            (HP0, LL1, SCTP, 9003, False),
            (LL0, HP1, TCP, 80, False),
            (LL1, HP1, UDP, 53, False),
            (LL1, HP1, SCTP, 9003, False),
        ),
        # "Should support a 'deny-gress' policy across different protocols at the specified ports"
        sub(
            "deny-gress at ports",
            (HP0, DM0, TCP, 80, False),
            (HP1, DM0, TCP, 8080, True),
            (HP0, DM0, UDP, 53, False),
            (HP1, DM0, UDP, 5353, True),
            (HP0, DM0, SCTP, 9003, False),
            (HP1, DM0, SCTP, 9005, True),
            (DM0, HP0, TCP, 80, False),
            (DM1, HP0, TCP, 8080, True),
            (DM0, HP0, UDP, 53, False),
            (DM1, HP0, UDP, 5353, True),
            (DM0, HP0, SCTP, 9003, False),
            (DM1, HP0, SCTP, 9005, True),
        ),
    )

step(
    "CNPAdminTierGress",
    "swap 0,1; swap 0,2 both ways",
    _gress("Admin", [(0, 1), (0, 2)]),
    # "Should support an 'pass-gress' policy across different protocols"
    sub(
        "pass-gress",
        (HP0, LL0, TCP, 80, True),
        (HP0, LL0, UDP, 5353, True),
        (HP0, LL0, SCTP, 9003, True),
        (LL0, HP0, TCP, 80, True),
        (LL1, HP0, UDP, 53, True),
        (LL1, HP0, SCTP, 9003, True),
    ),
)
step(
    "CNPAdminTierGress",
    "swap 0,1; swap 0,2; swap 3,4 both ways",
    _gress("Admin", [(0, 1), (0, 2), (3, 4)]),
    # "Should support a 'pass-gress' policy across different protocols at the specified ports"
    sub(
        "pass-gress at ports",
        (HP0, DM0, TCP, 80, True),
        (HP1, DM0, TCP, 8080, True),
        (HP0, DM0, UDP, 53, True),
        (HP1, DM0, UDP, 5353, True),
        (HP0, DM0, SCTP, 9003, True),
        (HP1, DM0, SCTP, 9005, True),
        (DM0, HP0, TCP, 80, True),
        (DM1, HP0, TCP, 8080, True),
        (DM0, HP0, UDP, 53, True),
        (DM1, HP0, UDP, 5353, True),
        (DM0, HP0, SCTP, 9003, True),
        (DM1, HP0, SCTP, 9005, True),
    ),
)

# --- CNPAdminTierPriorityField ---------------------------------------------------------

# base/admin_tier/standard-priority-field.yaml: on gryffindor pods, an Admin Deny to and
# from slytherin pods at priority 50, an Admin Pass to and from them at 60 (patched to
# 40), and a Baseline Accept to and from them.


def _priority(pass_priority: int) -> Callable[[Layout], list[Doc]]:
    subject = {"pods": house_pods("gryffindor")}
    peer = {"pods": house_pods("slytherin")}

    def both(action: str) -> dict[str, list[Doc]]:
        return {
            "ingress": [rule("ingress", f"{action.lower()}-from-slytherin", action, [peer])],
            "egress": [rule("egress", f"{action.lower()}-to-slytherin", action, [peer])],
        }

    return fixed(
        cnp("deny-at-50", "Admin", 50, subject, **both("Deny")),
        cnp("pass-at-60-then-40", "Admin", pass_priority, subject, **both("Pass")),
        cnp("default", "Baseline", 10, subject, **both("Accept")),
    )


step(
    "CNPAdminTierPriorityField",
    "applied",
    _priority(60),
    # "Should Deny traffic from slytherin to gryffindor respecting admin CNP"
    sub("deny from slytherin", (DM0, HP0, TCP, 80, False), (DM1, HP0, TCP, 8080, False)),
    # "Should Deny traffic to slytherin from gryffindor respecting admin CNP"
    sub("deny to slytherin", (HP0, DM0, TCP, 80, False), (HP1, DM0, TCP, 8080, False)),
)
step(
    "CNPAdminTierPriorityField",
    "pass priority 60 -> 40",
    _priority(40),
    # "Should respect admin CNP priority field; thus passing both ingress and egress
    # traffic over to baseline CNP"
    sub(
        "pass wins at 40",
        (DM0, HP0, TCP, 80, True),
        (DM1, HP0, TCP, 8080, True),
        (HP0, DM0, TCP, 80, True),
        (HP1, DM0, TCP, 8080, True),
    ),
)

# --- CNPAdminTierEgressInlineCIDRPeers / CNPBaselineTierEgressInlineCIDRPeers ----------

# base/{admin,baseline}_tier/standard-egress-inline-cidr-rules.yaml: from gryffindor,
# Accept to slytherin pods, then Deny to 0.0.0.0/0 and ::/0. The Admin one (priority 85)
# selects gryffindor pods, the Baseline one the gryffindor namespace. The second subtest
# first puts an Accept to luna-lovegood-0's and cedric-diggory-0's addresses (/32 or
# /128) in front.


def _cidr(tier: str, with_hosts: bool) -> Callable[[Layout], list[Doc]]:
    def objects(layout: Layout) -> list[Doc]:
        rules = [
            rule("egress", "accept-slytherin", "Accept", [{"pods": house_pods("slytherin")}]),
            rule("egress", "deny-everywhere", "Deny", [{"networks": ["0.0.0.0/0", "::/0"]}]),
        ]
        if with_hosts:
            hosts = [
                layout.pod_ip("ravenclaw", 0) + layout.host_mask(),
                layout.pod_ip("hufflepuff", 0) + layout.host_mask(),
            ]
            rules.insert(0, rule("egress", "accept-two-pod-ips", "Accept", [{"networks": hosts}]))
        if tier == "Admin":
            return [
                cnp("inline-cidrs", "Admin", 85, {"pods": house_pods("gryffindor")}, egress=rules)
            ]
        return [cnp("default", "Baseline", 10, {"namespaces": named_ns(G)}, egress=rules)]

    return objects


for _test, _tier in (
    ("CNPAdminTierEgressInlineCIDRPeers", "Admin"),
    ("CNPBaselineTierEgressInlineCIDRPeers", "Baseline"),
):
    step(
        _test,
        "applied",
        _cidr(_tier, with_hosts=False),
        # "Should support a 'deny-egress' rule policy for egress-cidr-peer"
        sub(
            "deny-egress cidr",
            (HP1, LL0, TCP, 80, False),
            (HP1, LL0, UDP, 53, False),
            (HP1, LL0, SCTP, 9003, False),
            (HP1, CD0, TCP, 80, False),
            (HP1, CD0, UDP, 53, False),
            (HP1, CD0, SCTP, 9003, False),
            (HP1, DM0, TCP, 80, True),
            (HP1, DM0, UDP, 53, True),
            (HP1, DM0, SCTP, 9003, True),
        ),
    )
    step(
        _test,
        "Accept to two pod IPs put first",
        _cidr(_tier, with_hosts=True),
        # "Should support an 'allow-egress' rule policy for egress-cidr-peer"
        sub(
            "allow-egress cidr",
            (HP1, LL0, TCP, 80, True),
            (HP1, LL0, UDP, 53, True),
            (HP1, LL0, SCTP, 9003, True),
            (HP1, CD0, TCP, 80, True),
            (HP1, CD0, UDP, 53, True),
            (HP1, CD0, SCTP, 9003, True),
            (HP1, LL1, TCP, 80, False),
            (HP1, LL1, UDP, 53, False),
            (HP1, LL1, SCTP, 9003, False),
            (HP1, CD1, TCP, 80, False),
            (HP1, CD1, UDP, 53, False),
            (HP1, CD1, SCTP, 9003, False),
        ),
    )

# --- experimental: named ports -----------------------------------------------------------

# CNPAdminTierEgressNamedPort: the egress-tcp manifests, rule 5 (Accept hufflepuff on TCP
# 8080) patched to the named port "web" (TCP 80 on the pods).
step(
    "CNPAdminTierEgressNamedPort",
    "rule 5 -> named port web",
    _egress_tcp(with_protocols(_E_TCP, 5, [{"destinationNamedPort": "web"}])),
    # "Should support an 'allow-egress' policy for named port"
    sub("allow-egress named port", (HP0, CD1, TCP, 80, True), (HP1, CD1, TCP, 8080, False)),
)
# CNPAdminTierIngressNamedPort: the ingress-udp manifests, rule 5 (Accept from gryffindor
# on UDP 53) patched to the named port "dns" (UDP 53 on the pods).
step(
    "CNPAdminTierIngressNamedPort",
    "rule 5 -> named port dns",
    _ingress_udp(with_protocols(_I_UDP, 5, [{"destinationNamedPort": "dns"}])),
    # "Should support an 'allow-ingress' policy for named port"
    sub("allow-ingress named port", (HP0, CD1, UDP, 53, True), (HP1, CD1, UDP, 5353, False)),
)
# CNPBaselineTierEgressNamedPort: the Baseline egress-udp manifests, rule 3 (Accept to
# gryffindor on UDP 53) patched to the named port "dns".
step(
    "CNPBaselineTierEgressNamedPort",
    "rule 3 -> named port dns",
    _baseline("egress", H, with_protocols(_BE_UDP, 3, [{"destinationNamedPort": "dns"}])),
    # "Should support an 'allow-egress' policy for named port"
    sub("allow-egress named port", (CD0, HP1, UDP, 53, True), (CD1, HP1, UDP, 5353, False)),
)
# CNPBaselineTierIngressNamedPort: the Baseline ingress-tcp manifests, rule 3 (Accept from
# hufflepuff on TCP 80) patched to the named port "web".
step(
    "CNPBaselineTierIngressNamedPort",
    "rule 3 -> named port web",
    _baseline("ingress", G, with_protocols(_BI_TCP, 3, [{"destinationNamedPort": "web"}])),
    # "Should support an 'allow-ingress' policy for named port"
    sub("allow-ingress named port", (CD0, HP1, TCP, 80, True), (CD1, HP1, TCP, 8080, False)),
)

# --- experimental: node peers ------------------------------------------------------------

_LINUX = {"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}}
_EVERYWHERE = {"networks": ["0.0.0.0/0", "::/0"]}

# base/admin_tier/experimental-egress-selector-rules.yaml: Admin 75 on gryffindor pods:
# Accept to linux nodes on TCP HNP[0]; Pass to them on UDP HNP[2]; Deny to slytherin
# pods, linux nodes and everywhere. The server is the host-network pod centaur-1.
step(
    "CNPAdminTierEgressNodePeers",
    "applied",
    fixed(
        cnp(
            "nodes-and-cidrs",
            "Admin",
            75,
            {"pods": house_pods("gryffindor")},
            egress=[
                rule("egress", "accept-node-tcp", "Accept", [_LINUX], [port(TCP, HNP[0])]),
                rule("egress", "pass-node-udp", "Pass", [_LINUX], [port(UDP, HNP[2])]),
                rule(
                    "egress",
                    "deny-the-rest",
                    "Deny",
                    [{"pods": house_pods("slytherin")}, _LINUX, _EVERYWHERE],
                ),
            ],
        )
    ),
    # "Should support an 'allow-egress' rule policy for egress-node-peer"
    sub("allow-egress node", (HP1, CT1, TCP, HNP[0], True)),
    # "Should support a 'pass-egress' rule policy for egress-node-peer"
    sub("pass-egress node", (HP1, CT1, UDP, HNP[2], True)),
    # "Should support a 'deny-egress' rule policy for egress-node-peer"
    sub(
        "deny-egress node",
        (HP1, CT1, TCP, HNP[1], False),
        (HP1, CT1, UDP, HNP[4], False),
        (HP1, CT1, SCTP, HNP[6], False),
    ),
)
# base/baseline_tier/experimental-egress-selector-rules.yaml: Baseline on the gryffindor
# namespace: Accept to linux nodes on TCP HNP[0]..HNP[1]; Deny to linux nodes and
# everywhere.
step(
    "CNPBaselineTierEgressNodePeers",
    "applied",
    fixed(
        cnp(
            "default",
            "Baseline",
            10,
            {"namespaces": named_ns(G)},
            egress=[
                rule(
                    "egress",
                    "accept-node-tcp-range",
                    "Accept",
                    [_LINUX],
                    [port_range(TCP, HNP[0], HNP[1])],
                ),
                rule("egress", "deny-nodes-and-everywhere", "Deny", [_LINUX, _EVERYWHERE]),
            ],
        )
    ),
    # "Should support an 'allow-egress' rule policy for egress-node-peer"
    sub("allow-egress node", (HP0, CT1, TCP, HNP[0], True), (HP1, CT1, TCP, HNP[1], True)),
    # "Should support a 'deny-egress' rule policy for egress-node-peer"
    sub("deny-egress node", (HP1, CT1, UDP, HNP[4], False), (HP1, CT1, SCTP, HNP[6], False)),
)

# --- CNPAdminTierIntegration ---------------------------------------------------------------

# base/api_integration/standard-anp-np-banp.yaml: on the gryffindor namespace (by its
# house label) an Admin (priority 10) Deny to and from slytherin, a NetworkPolicy in
# gryffindor isolating every pod both ways and allowing only slytherin, and a Baseline
# Deny to and from slytherin. The test patches the Admin ingress rule, then the Admin
# egress rule, to Pass, then deletes the NetworkPolicy.

_NP_SLYTHERIN_ONLY: Doc = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"namespace": G, "name": "only-slytherin-both-ways"},
    "spec": {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"namespaceSelector": house("slytherin")}]}],
        "egress": [{"to": [{"namespaceSelector": house("slytherin")}]}],
    },
}


def _integration(
    ingress_action: str, egress_action: str, with_np: bool
) -> Callable[[Layout], list[Doc]]:
    subject = {"namespaces": house("gryffindor")}
    peer = {"namespaces": house("slytherin")}
    docs = [
        cnp(
            "admin-deny-or-pass",
            "Admin",
            10,
            subject,
            ingress=[rule("ingress", "from-slytherin", ingress_action, [peer])],
            egress=[rule("egress", "to-slytherin", egress_action, [peer])],
        ),
        cnp(
            "default",
            "Baseline",
            10,
            subject,
            ingress=[rule("ingress", "deny-from-slytherin", "Deny", [peer])],
            egress=[rule("egress", "deny-to-slytherin", "Deny", [peer])],
        ),
    ]
    if with_np:
        docs.append(_NP_SLYTHERIN_ONLY)
    return fixed(*docs)


step(
    "CNPAdminTierIntegration",
    "applied",
    _integration("Deny", "Deny", with_np=True),
    # "Should Deny traffic from slytherin to gryffindor respecting admin CNP"
    sub("admin deny from slytherin", (DM0, HP0, TCP, 80, False), (DM1, HP0, TCP, 8080, False)),
    # "Should Deny traffic to slytherin from gryffindor respecting admin CNP"
    sub("admin deny to slytherin", (HP0, DM0, TCP, 80, False), (HP1, DM0, TCP, 8080, False)),
)
step(
    "CNPAdminTierIntegration",
    "admin ingress -> Pass",
    _integration("Pass", "Deny", with_np=True),
    # "Should support a 'pass-ingress' policy for admin CNP and respect the match for
    # network policy"
    sub("pass-ingress to NP", (DM0, HP0, TCP, 80, True), (DM1, HP0, TCP, 8080, True)),
)
step(
    "CNPAdminTierIntegration",
    "admin ingress, egress -> Pass",
    _integration("Pass", "Pass", with_np=True),
    # "Should support a 'pass-egress' policy for admin CNP and respect the match for
    # network policy"
    sub("pass-egress to NP", (HP0, DM0, TCP, 80, True), (HP1, DM0, TCP, 8080, True)),
)
step(
    "CNPAdminTierIntegration",
    "admin ingress, egress -> Pass; NetworkPolicy deleted",
    _integration("Pass", "Pass", with_np=False),
    # "Should support a 'pass-ingress' policy for admin CNP and respect the match for
    # baseline cluster network policy"
    sub("pass-ingress to baseline", (DM0, HP0, TCP, 80, False), (DM1, HP0, TCP, 8080, False)),
    # "Should support a 'pass-egress' policy for admin CNP and respect the match for
    # baseline cluster network policy"
    sub("pass-egress to baseline", (HP0, DM0, TCP, 80, False), (HP1, DM0, TCP, 8080, False)),
)

# Every ClusterNetworkPolicy conformance test of v0.2.0, by ShortName.
UPSTREAM_TESTS = (
    "CNPAdminTierEgressTCP",
    "CNPAdminTierEgressUDP",
    "CNPAdminTierEgressSCTP",
    "CNPAdminTierIngressTCP",
    "CNPAdminTierIngressUDP",
    "CNPAdminTierIngressSCTP",
    "CNPAdminTierGress",
    "CNPAdminTierPriorityField",
    "CNPAdminTierEgressInlineCIDRPeers",
    "CNPAdminTierIntegration",
    "CNPAdminTierEgressNamedPort",
    "CNPAdminTierIngressNamedPort",
    "CNPAdminTierEgressNodePeers",
    "CNPBaselineTierEgressTCP",
    "CNPBaselineTierEgressUDP",
    "CNPBaselineTierEgressSCTP",
    "CNPBaselineTierIngressTCP",
    "CNPBaselineTierIngressUDP",
    "CNPBaselineTierIngressSCTP",
    "CNPBaselineTierGress",
    "CNPBaselineTierEgressInlineCIDRPeers",
    "CNPBaselineTierEgressNamedPort",
    "CNPBaselineTierIngressNamedPort",
    "CNPBaselineTierEgressNodePeers",
)


# --- running the rows ----------------------------------------------------------------------


@cache
def _world(step_id: str, layout: Layout) -> tuple[Cluster, Dataplane]:
    """The cluster of one step on one layout, and the engine compiled from it."""
    found = [s for s in STEPS if s.id == step_id]
    assert len(found) == 1, step_id
    result = parse_documents([*base_docs(layout), *found[0].objects(layout)])
    assert not result.errors, [str(e) for e in result.errors]
    cluster = result.cluster
    return cluster, Dataplane(cluster)


def engine_verdict(
    cluster: Cluster, dataplane: Dataplane, src: Endpoint, dst: Endpoint, row: Row
) -> tuple[bool, str]:
    verdict = dataplane.verdict(src, dst, row.port, row.protocol)
    return verdict.allowed, repr(verdict)


def reference_verdict(
    cluster: Cluster, dataplane: Dataplane, src: Endpoint, dst: Endpoint, row: Row
) -> tuple[bool, str]:
    verdict = reference.explain_with_tiers(
        cluster,
        cluster.cluster_policies.values(),
        cluster.nodes.values(),
        src,
        dst,
        row.port,
        row.protocol,
    )
    return verdict.allowed, repr(verdict)


Judge = Callable[[Cluster, Dataplane, Endpoint, Endpoint, Row], tuple[bool, str]]
EVALUATORS: dict[str, Judge] = {"engine": engine_verdict, "reference": reference_verdict}

CASES = [
    pytest.param(s, row, layout, id=f"{layout.name}-{s.id}-{row.subtest}-{row.id}")
    for layout in LAYOUTS
    for s in STEPS
    for row in s.rows
]


@pytest.mark.parametrize("evaluator", sorted(EVALUATORS))
@pytest.mark.parametrize(("step_", "row", "layout"), CASES)
def test_upstream_poke(evaluator: str, step_: Step, row: Row, layout: Layout) -> None:
    """One PokeServer expectation of the upstream suite, on one evaluator."""
    cluster, dataplane = _world(step_.id, layout)
    src, dst = cluster.pods[row.src], cluster.pods[row.dst]
    judge = EVALUATORS[evaluator]
    allowed, why = judge(cluster, dataplane, src, dst, row)
    assert allowed == row.expected, f"{step_.test} / {row.subtest}: {why}"
    if dst.host_network:
        # Upstream pokes the pod's IP, which is its node's address: the same verdict by
        # address, where the destination is known only as the node.
        allowed, why = judge(cluster, dataplane, src, dst.ips[0], row)
        assert allowed == row.expected, f"{step_.test} / {row.subtest} (by address): {why}"


def test_every_upstream_test_is_mirrored() -> None:
    assert {s.test for s in STEPS} == set(UPSTREAM_TESTS)
    assert len(UPSTREAM_TESTS) == len(set(UPSTREAM_TESTS)) == 24


def test_model_is_what_the_rows_assume() -> None:
    """The pods the rows name exist, take part, and sit where each layout says."""
    for layout in LAYOUTS:
        cluster, _ = _world(STEPS[0].id, layout)
        pods: list[Pod] = list(cluster.pods.values())
        assert len(pods) == 10
        assert all(p.active for p in pods)
        for p in pods:
            assert p.host_network == p.namespace.endswith(FOREST)
        assert cluster.pods[CT0].node_name != cluster.pods[CT1].node_name
        assert cluster.pods[HP1].node_name == layout.house_nodes[1]
        assert cluster.pods[CT1].ips == (NODE_ADDRS[layout.family]["kind-worker2"],)
        assert cluster.pods[CD1].named_port("web", TCP) == 80
        assert cluster.pods[CD1].named_port("dns", UDP) == 53
        assert len(cluster.nodes) == 3


def test_row_count() -> None:
    """Every PokeServer call of the 24 tests is a row (289 in all)."""
    assert sum(len(s.rows) for s in STEPS) == 289
