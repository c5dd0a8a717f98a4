"""ClusterNetworkPolicy tiers enforced by the real agent, with real packets.

The cluster of test_agent_packets (nodes n1 and n2 in network namespaces, pods in
their own namespaces, outside hosts) plus ClusterNetworkPolicies and Node objects,
compiled by ``compile_cluster`` and applied by the real
:class:`~stockade.agent.applier.Applier` in each node's namespace. Each test checks
the kernel against hand-written expectations (and, where the whole matrix is
probed, against the engine's ``Dataplane.verdict``).

Everything lives in ``stk-*`` namespaces that the fixtures remove; nothing touches
the host's network namespace.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import pytest

from stockade.agent.backend import Backend
from stockade.agent.render import RenderOptions
from stockade_lab.netlab import Lab, Place
from tests.integration.cluster_lab import (
    FABRIC4,
    FABRIC6,
    NODE_IPS,
    TIMEOUT,
    ClusterLab,
    Raw,
    connect,
    exchange,
    ns_doc,
    pod_doc,
)

pytestmark = pytest.mark.root

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(fabric4=FABRIC4, fabric6=FABRIC6) as lab:
        yield lab


def _make(lab: Lab, backend: Backend) -> Generator[ClusterLab]:
    cl = ClusterLab(lab, backend)
    try:
        yield cl
    finally:
        cl.cleanup()


@pytest.fixture(params=("nft", "legacy"))
def cl(request: pytest.FixtureRequest, lab: Lab) -> Iterator[ClusterLab]:
    """A cluster lab on each backend."""
    yield from _make(lab, request.param)


@pytest.fixture
def cl_nft(lab: Lab) -> Iterator[ClusterLab]:
    """A cluster lab on the nft backend only."""
    yield from _make(lab, "nft")


# --------------------------------------------------------------------------- the cluster

NAMESPACES = [ns_doc("prod", env="prod"), ns_doc("dev", env="dev"), ns_doc("other", env="other")]
PODS = [
    pod_doc("prod", "web", "n1", "10.0.1.10", "fd00::1:10", {"app": "web"}),
    pod_doc("prod", "db", "n1", "10.0.1.11", None, {"app": "db"}),
    pod_doc("prod", "api", "n2", "10.0.2.10", None, {"app": "api"}),
    pod_doc("dev", "tool", "n1", "10.0.1.13", None, {"app": "tool"}),
    pod_doc("other", "client", "n1", "10.0.1.12", None, {"app": "client"}),
]
WEB4, DB4, API4, TOOL4, CLIENT4 = "10.0.1.10", "10.0.1.11", "10.0.2.10", "10.0.1.13", "10.0.1.12"
N1, N2 = NODE_IPS["n1"][0], NODE_IPS["n2"][0]
X1 = "203.0.113.7"
ECHO = 7000


def node_doc(name: str, **labels: str) -> Raw:
    """A Node with its fabric addresses in status.addresses."""
    v4, v6 = NODE_IPS[name]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": v4},
                {"type": "InternalIP", "address": v6},
                {"type": "Hostname", "address": name},
            ]
        },
    }


BASE: list[Raw] = [*NAMESPACES, *PODS, node_doc("n1", role="worker"), node_doc("n2", role="worker")]


def ns(env: str) -> Raw:
    return {"matchLabels": {"env": env}}


ALL: Raw = {}


def cnp(
    name: str,
    tier: str,
    priority: int,
    subject: Raw,
    *,
    ingress: Sequence[Raw] | None = None,
    egress: Sequence[Raw] | None = None,
) -> Raw:
    """A ClusterNetworkPolicy; ``subject`` is a namespaces selector."""
    spec: dict[str, Any] = {"tier": tier, "priority": priority, "subject": {"namespaces": subject}}
    if ingress is not None:
        spec["ingress"] = list(ingress)
    if egress is not None:
        spec["egress"] = list(egress)
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def rule(action: str, peers: Sequence[Raw], *, tcp: int | None = None, egress: bool = True) -> Raw:
    out: Raw = {"action": action, ("to" if egress else "from"): list(peers)}
    if tcp is not None:
        out["protocols"] = [{"tcp": {"destinationPort": {"number": tcp}}}]
    return out


def np_doc(namespace: str, name: str, spec: Raw) -> Raw:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


DENY_INGRESS_PROD = np_doc("prod", "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
WEB_TO_DB = np_doc(
    "prod",
    "db-from-web",
    {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
    },
)


# --------------------------------------------------------------------------- helpers


def outcome(lab: Lab, where: Place, ip: str, port: int, timeout: float = TIMEOUT) -> str:
    """``ok``, ``refused`` (RST or ICMP error) or ``timeout`` for a TCP connect."""
    with lab.in_netns(where):
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
    except TimeoutError:
        return "timeout"
    except OSError:
        return "refused"
    finally:
        sock.close()
    return "ok"


def reach(cl: ClusterLab, src: str, ip: str, port: int = 80, proto: str = "TCP") -> bool:
    """Whether ``src`` (a pod key or a node name) gets an answer from ``ip:port``."""
    where: Place = cl.nodes[src] if src in cl.nodes else cl.pod(src)
    return cl.lab.probe(where, ip, port, proto, TIMEOUT)


def no_differences(cl: ClusterLab, probes: Sequence[tuple[int, str]] = ((80, "TCP"),)) -> None:
    """The kernel agrees with the engine on every pair (pods, nodes, outside hosts)."""
    failures = [line for port, proto in probes for line in cl.differences(port, proto, 4)]
    assert not failures, "kernel and engine differ:\n" + "\n".join(failures)


# --------------------------------------------------------------------------- the tests


def test_admin_deny_drops(cl: ClusterLab) -> None:
    """Admin Deny is a DROP (the connection times out, as the upstream suites expect)
    over a NetworkPolicy that allows; only the rule's port; the engine agrees."""
    deny = cnp(
        "prod-no-dev",
        "Admin",
        10,
        ns("prod"),
        egress=[rule("Deny", [{"namespaces": ns("dev")}], tcp=80)],
    )
    reports = cl.set_cluster([*BASE, deny])
    assert reports["n1"].iptables_restores > 0
    assert cl.verify() == {}
    started = time.monotonic()
    assert outcome(cl.lab, cl.pod("prod/web"), TOOL4, 80) == "timeout"
    assert time.monotonic() - started >= TIMEOUT * 0.9
    assert reach(cl, "prod/web", TOOL4, 53, "UDP")
    assert reach(cl, "prod/web", TOOL4, 85)
    assert reach(cl, "dev/tool", WEB4, 80)  # the other way: no policy
    assert not reach(cl, "prod/api", TOOL4, 80)  # from n2: denied there, on its way out
    no_differences(cl, [(80, "TCP"), (53, "UDP")])


def test_admin_deny_with_reject(lab: Lab) -> None:
    """--reject: an Admin Deny rejects instead of dropping."""
    gen = _make(lab, "nft")
    cl = next(gen)
    try:
        for applier in cl.appliers.values():
            applier.options = RenderOptions(drop_action="REJECT")
        deny = cnp(
            "no-dev", "Admin", 10, ns("prod"), egress=[rule("Deny", [{"namespaces": ns("dev")}])]
        )
        cl.set_cluster([*BASE, deny])
        assert outcome(cl.lab, cl.pod("prod/web"), TOOL4, 80) == "refused"
    finally:
        gen.close()


def test_admin_accept_overrides_network_policy_isolation(cl_nft: ClusterLab) -> None:
    cl = cl_nft
    accept = cnp(
        "dev-to-prod",
        "Admin",
        5,
        ns("prod"),
        ingress=[rule("Accept", [{"namespaces": ns("dev")}], egress=False)],
    )
    cl.set_cluster([*BASE, DENY_INGRESS_PROD])
    assert not reach(cl, "dev/tool", DB4)
    cl.set_cluster([*BASE, DENY_INGRESS_PROD, accept])
    assert reach(cl, "dev/tool", DB4)
    assert reach(cl, "dev/tool", API4)  # on n2
    assert not reach(cl, "other/client", DB4)  # still isolated by the NetworkPolicy
    no_differences(cl)


def test_pass_hands_the_decision_to_network_policy(cl_nft: ClusterLab) -> None:
    cl = cl_nft
    pas = cnp(
        "pass", "Admin", 1, ns("prod"), ingress=[rule("Pass", [{"namespaces": ALL}], egress=False)]
    )
    deny = cnp(
        "deny", "Admin", 2, ns("prod"), ingress=[rule("Deny", [{"namespaces": ALL}], egress=False)]
    )
    cl.set_cluster([*BASE, deny, WEB_TO_DB])
    assert not reach(cl, "prod/web", DB4)
    assert not reach(cl, "other/client", API4)
    cl.set_cluster([*BASE, pas, deny, WEB_TO_DB])
    assert reach(cl, "prod/web", DB4)  # the NetworkPolicy allows
    assert not reach(cl, "other/client", DB4)  # the NetworkPolicy isolates db
    assert reach(cl, "other/client", API4)  # api is not isolated: on to Baseline, allowed
    no_differences(cl)


def test_baseline_deny_opened_by_a_network_policy(cl_nft: ClusterLab) -> None:
    cl = cl_nft
    base = cnp(
        "default-deny",
        "Baseline",
        100,
        ALL,
        ingress=[rule("Deny", [{"namespaces": ALL}], egress=False)],
    )
    cl.set_cluster([*BASE, base, WEB_TO_DB])
    assert reach(cl, "prod/web", DB4)  # opened by the NetworkPolicy
    assert not reach(cl, "other/client", DB4)
    assert not reach(cl, "other/client", WEB4)  # no NetworkPolicy: the Baseline Deny
    assert not reach(cl, "prod/web", API4)
    assert reach(cl, "n1", WEB4)  # the kubelet's probes: node to its own pods
    assert reach(cl, "prod/web", X1)  # egress is not touched
    no_differences(cl)


def test_egress_to_nodes_denied_through_input_while_node_to_pod_works(cl: ClusterLab) -> None:
    deny_nodes = cnp(
        "no-nodes",
        "Admin",
        10,
        ALL,
        egress=[rule("Deny", [{"nodes": {"matchLabels": {"role": "worker"}}}])],
    )
    cl.set_cluster([*BASE, deny_nodes])
    assert cl.verify() == {}
    assert outcome(cl.lab, cl.pod("prod/web"), N1, 80) == "timeout"  # its own node: INPUT
    assert not reach(cl, "prod/web", N1, 53, "UDP")
    assert not reach(cl, "prod/web", N2)  # another node: FORWARD
    assert not reach(cl, "prod/api", N2)  # n2's pod to n2
    assert reach(cl, "n1", WEB4)  # node to pod: never judged
    assert reach(cl, "n2", WEB4)  # another node to a pod: no ingress rule
    assert reach(cl, "prod/web", DB4)
    assert reach(cl, "prod/web", X1)
    assert cl.lab.probe(cl.pod("prod/web"), NODE_IPS["n1"][1], 80, "TCP", TIMEOUT) is False
    no_differences(cl, [(80, "TCP"), (53, "UDP")])
    # The node address by a networks peer, on one port: the rest of the node is open.
    kubelet = cnp(
        "no-kubelet",
        "Admin",
        10,
        ALL,
        egress=[
            {
                "action": "Deny",
                "to": [{"networks": ["192.168.0.0/24"]}],
                "protocols": [{"tcp": {"destinationPort": {"number": 80}}}],
            }
        ],
    )
    cl.set_cluster([*BASE, kubelet])
    assert not reach(cl, "prod/web", N1, 80)
    assert reach(cl, "prod/web", N1, 85)
    assert reach(cl, "prod/web", N1, 53, "UDP")
    assert reach(cl, "n1", WEB4)
    # no cluster policy any more: the INPUT hook and its chain are gone
    cl.set_cluster(BASE)
    for name in cl.nodes:
        assert "STK-INPUT" not in cl.save(name, 4)
    assert reach(cl, "prod/web", N1, 80)


def test_network_policy_isolated_pod_reaches_its_node_despite_baseline_deny(
    cl_nft: ClusterLab,
) -> None:
    cl = cl_nft
    base = cnp("base-no-nodes", "Baseline", 1, ALL, egress=[rule("Deny", [{"nodes": ALL}])])
    egress_np = np_doc(
        "prod",
        "web-out",
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {}}]}],
        },
    )
    cl.set_cluster([*BASE, base, egress_np])
    assert reach(cl, "prod/web", N1)  # NP-isolated for egress: its own node is allowed
    assert not reach(cl, "prod/db", N1)  # not isolated: the Baseline Deny
    assert not reach(cl, "prod/web", N2)  # another node: the NetworkPolicy does not allow it
    no_differences(cl)


def test_accept_to_deny_flip_cuts_established_flows(cl_nft: ClusterLab) -> None:
    cl = cl_nft

    def flip(action: str) -> Raw:
        return cnp(
            "flip",
            "Admin",
            10,
            ns("other"),
            egress=[rule(action, [{"namespaces": ns("prod")}, {"nodes": ALL}])],
        )

    cl.set_cluster([*BASE, flip("Accept")])
    to_pod = cl.lab.echo_server(cl.pod("prod/db"), ECHO)
    to_node = cl.lab.echo_server(cl.nodes["n1"], ECHO)
    try:
        with (
            connect(cl.lab, cl.pod("other/client"), DB4, ECHO) as pod_flow,
            connect(cl.lab, cl.pod("other/client"), N1, ECHO) as node_flow,
            connect(cl.lab, cl.pod("dev/tool"), DB4, ECHO) as bystander,
        ):
            for sock in (pod_flow, node_flow, bystander):
                assert exchange(sock, b"a\n") == b"a\n"
            reports = cl.set_cluster([*BASE, flip("Deny")])
            assert reports["n1"].conntrack_deleted >= 2
            assert exchange(pod_flow, b"b\n") is None, "a denied forwarded flow kept flowing"
            assert exchange(node_flow, b"b\n") is None, "a denied flow to the node kept flowing"
            assert exchange(bystander, b"b\n") == b"b\n"
            assert not reach(cl, "other/client", DB4, ECHO)
            assert not reach(cl, "other/client", N1, ECHO)
    finally:
        to_pod.close()
        to_node.close()


def test_networks_peers_compared_in_the_rule(cl: ClusterLab) -> None:
    """CIDRs without exceptions are ``-d`` matches in the rules, spelled as
    iptables-save prints them (host bits cleared, an IPv4-mapped IPv6 address in
    inet_ntop's form), so the kernel agrees with the applied state and a second
    apply writes nothing; packets follow the rules' order."""
    ordered = cnp(
        "prod-networks",
        "Admin",
        10,
        ns("prod"),
        egress=[
            rule("Accept", [{"networks": [f"{TOOL4}/32"]}]),
            rule("Deny", [{"networks": ["10.0.2.77/24", "::ffff:10.0.2.10/128"]}]),
            rule("Deny", [{"networks": ["10.0.1.0/24"]}], tcp=80),
            rule("Accept", [{"networks": ["0.0.0.0/0", "::/0"]}]),
        ],
    )
    cl.set_cluster([*BASE, ordered])
    assert cl.verify() == {}
    again = cl.set_cluster([*BASE, ordered])
    assert all(r.iptables_restores == 0 for r in again.values())
    assert reach(cl, "prod/web", TOOL4, 80)  # the first rule accepts
    assert not reach(cl, "prod/web", API4, 80)  # 10.0.2.0/24 denied
    assert not reach(cl, "prod/web", CLIENT4, 80)  # 10.0.1.0/24 denied on port 80
    assert reach(cl, "prod/web", CLIENT4, 85)  # ... and accepted on others
    assert reach(cl, "dev/tool", CLIENT4, 80)  # not a subject
    no_differences(cl, [(80, "TCP"), (85, "TCP")])
