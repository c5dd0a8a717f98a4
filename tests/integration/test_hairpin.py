"""A pod reaching itself through its own Service (hairpin), with real packets.

kube-proxy DNATs ``pod -> ClusterIP`` to ``pod -> pod`` in PREROUTING, so the packet is
routed back out of the pod's veth and crosses the filter FORWARD chain with source ==
destination == the pod's address (kube-proxy's hairpin MASQUERADE runs later, in
POSTROUTING). docs/semantics.md rule 12 says a pod can always reach itself: stockade's
STK-FORWARD lets such a packet pass before any policy lookup, even when the pod is
isolated and allows nobody.

Each test builds node ``n1`` with two pods under a default-deny-ingress policy
(:mod:`cluster_lab`), adds by hand, in the node's nat table, what kube-proxy would: a
DNAT of a virtual IP to the pod and the hairpin masquerade. Both backends (nft,
legacy), IPv4 and IPv6, TCP and UDP. Everything lives in ``stk-*`` namespaces; nothing
touches the host's network namespace.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stockade.agent.backend import Backend
from stockade_lab.netlab import Lab
from tests.integration.cluster_lab import (
    FABRIC4,
    FABRIC6,
    TIMEOUT,
    ClusterLab,
    Raw,
    ns_doc,
    pod_doc,
)

pytestmark = pytest.mark.root

BACKENDS: tuple[Backend, ...] = ("nft", "legacy")
HAIRPIN_COMMENT = "stockade:a pod reaching itself (hairpin through a Service)"
# family -> (the Service's virtual IP, the backend pod web, the other pod cli)
ADDRESSES = {
    4: ("10.96.0.10", "10.0.1.10", "10.0.1.11"),
    6: ("fd00:96::10", "fd00::1:10", "fd00::1:11"),
}
PORT = 80

DOCS: list[Raw] = [
    ns_doc("shop"),
    pod_doc("shop", "web", "n1", ADDRESSES[4][1], ADDRESSES[6][1], {"app": "web"}),
    pod_doc("shop", "cli", "n1", ADDRESSES[4][2], ADDRESSES[6][2], {"app": "cli"}),
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-ingress", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
    },
]


@pytest.fixture(params=BACKENDS)
def cl(request: pytest.FixtureRequest) -> Iterator[ClusterLab]:
    """The cluster on one backend, with kube-proxy's NAT for the Service by hand."""
    with Lab(fabric4=FABRIC4, fabric6=FABRIC6) as lab:
        cl = ClusterLab(lab, request.param)
        try:
            cl.set_cluster(DOCS)
            for family, (vip, web, _) in ADDRESSES.items():
                _add_service_nat(cl, family, vip, web)
            yield cl
        finally:
            cl.cleanup()


def _add_service_nat(cl: ClusterLab, family: int, vip: str, pod: str) -> None:
    """What kube-proxy (iptables mode) writes for a Service whose one endpoint is ``pod``."""
    host = "32" if family == 4 else "128"
    target = f"{pod}:{PORT}" if family == 4 else f"[{pod}]:{PORT}"
    for proto in ("tcp", "udp"):
        cl.iptables(
            "n1", family, "-t", "nat", "-A", "PREROUTING", "-d", vip, "-p", proto,
            "--dport", str(PORT), "-j", "DNAT", "--to-destination", target,
        )  # fmt: skip
    cl.iptables(
        "n1", family, "-t", "nat", "-A", "POSTROUTING",
        "-s", f"{pod}/{host}", "-d", f"{pod}/{host}", "-j", "MASQUERADE",
    )  # fmt: skip


def _hairpin_packets(cl: ClusterLab, family: int) -> int:
    """The packet counter of STK-FORWARD's hairpin rule (exactly one such rule)."""
    listing = cl.iptables("n1", family, "-t", "filter", "-L", "STK-FORWARD", "-v", "-x", "-n")
    counts = [int(line.split()[0]) for line in listing.splitlines() if HAIRPIN_COMMENT in line]
    assert len(counts) == 1, listing
    return counts[0]


def _ask(cl: ClusterLab, src: str, dst_ip: str, proto: str) -> str | None:
    return cl.lab.ask(cl.pod(src), dst_ip, PORT, proto, TIMEOUT)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("proto", ["TCP", "UDP"])
def test_a_pod_reaches_itself_through_its_service(cl: ClusterLab, family: int, proto: str) -> None:
    vip, web, _ = ADDRESSES[family]
    # The engine: the pod may reach itself, the other pod may not reach it.
    assert cl.expected("shop/web", "shop/web", PORT, proto, family)
    assert not cl.expected("shop/cli", "shop/web", PORT, proto, family)
    assert cl.verify() == {}  # the rule reads back as written: no drift

    # (the chain as it was before the hairpin rule drops this: the test checks that)
    assert _ask(cl, "shop/web", vip, proto) == "shop/web"
    # It passed through STK-FORWARD's hairpin rule (not around FORWARD, not by policy):
    # the lab is new, so the rule's counter started at zero.
    assert _hairpin_packets(cl, family) >= 1

    # Another pod through the same virtual IP is still judged by policy, and its
    # packets never match the hairpin rule.
    moved = _hairpin_packets(cl, family)
    assert _ask(cl, "shop/cli", vip, proto) is None
    assert _ask(cl, "shop/cli", web, proto) is None
    assert _hairpin_packets(cl, family) == moved
    # Loopback never meets FORWARD: still fine.
    assert _ask(cl, "shop/web", web, proto) == "shop/web"


@pytest.mark.parametrize("family", [4, 6])
def test_without_the_hairpin_rule_the_pod_is_cut_off_and_resync_restores_it(
    cl: ClusterLab, family: int
) -> None:
    """The test above cannot pass vacuously: the old chain drops hairpin traffic."""
    vip, _, _ = ADDRESSES[family]
    assert _ask(cl, "shop/web", vip, "TCP") == "shop/web"
    # Back to the chain as it was before the hairpin rule: delete it (by position).
    listing = cl.iptables("n1", family, "-t", "filter", "-L", "STK-FORWARD", "--line-numbers", "-n")
    number = next(line.split()[0] for line in listing.splitlines() if HAIRPIN_COMMENT in line)
    cl.iptables("n1", family, "-t", "filter", "-D", "STK-FORWARD", number)
    for proto in ("TCP", "UDP"):
        assert _ask(cl, "shop/web", vip, proto) is None, proto

    drift = cl.verify()
    assert any("STK-FORWARD" in d for d in drift["n1"]), drift
    cl.appliers["n1"].resync()
    assert cl.verify() == {}
    for proto in ("TCP", "UDP"):
        assert _ask(cl, "shop/web", vip, proto) == "shop/web", proto
