"""stockade beside kube-proxy: policy through its NAT, and neither disturbing the other.

The kube-proxy stand-in (:mod:`stockade_lab.sandbox.kubeproxy`) writes kube-proxy's
iptables-mode chains into each node of a :class:`ClusterLab`; the real applier writes
stockade's. Probes go to cluster IPs and node ports with real packets, and what
answers is compared with the engine's verdict *on the backend* (the destination
FORWARD sees after DNAT), as docs/semantics.md ("Traffic to Service IPs") says.

Both iptables backends; IPv4 and IPv6 where the lab has both.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from stockade.agent.backend import Backend
from stockade.services import (
    Service,
    desired_slices,
    parse_endpoint_slice,
    parse_service,
    service_backends,
)
from stockade_lab.netlab import Lab
from stockade_lab.sandbox.kubeproxy import ProxyNode, render_proxy
from stockade_lab.sandbox.servicectl import IptablesRunner
from tests.integration.cluster_lab import (
    FABRIC4,
    FABRIC6,
    NODE_IPS,
    ClusterLab,
    Raw,
    ns_doc,
    pod_doc,
    save_all,
)

pytestmark = pytest.mark.root

CLUSTER_CIDRS = {4: "10.0.0.0/16", 6: "fd00::/96"}

PODS: list[Raw] = [
    ns_doc("prod"),
    ns_doc("other"),
    pod_doc(
        "prod", "web", "n1", "10.0.1.10", "fd00::1:10", {"app": "web"}, [("http", 8080, "TCP")]
    ),
    pod_doc(
        "prod",
        "db",
        "n1",
        "10.0.1.11",
        "fd00::1:11",
        {"app": "db", "tier": "back"},
        [("http", 80, "TCP"), ("dns", 53, "UDP")],
    ),
    pod_doc(
        "prod",
        "api",
        "n2",
        "10.0.2.10",
        "fd00::2:10",
        {"app": "api", "tier": "back"},
        [("http", 9090, "TCP")],
    ),
    pod_doc("other", "client", "n1", "10.0.1.12", "fd00::1:12", {"app": "client"}),
    pod_doc("other", "far", "n2", "10.0.2.12", "fd00::2:12", {"app": "far"}),
]


def service(
    name: str,
    ips: tuple[str, str],
    selector: dict[str, str],
    ports: list[dict[str, Any]],
    kind: str = "ClusterIP",
    traffic: str = "Cluster",
) -> Raw:
    """A dual-stack Service object as the API server stores it (IPs allocated)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "prod", "uid": f"uid-{name}"},
        "spec": {
            "type": kind,
            "clusterIPs": list(ips),
            "ipFamilies": ["IPv4", "IPv6"],
            "selector": selector,
            "ports": ports,
            "externalTrafficPolicy": traffic,
        },
    }


DB = service(
    "db",
    ("10.96.0.20", "fd00:96::20"),
    {"app": "db"},
    [
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
    ],
)
API = service(
    "api",
    ("10.96.0.21", "fd00:96::21"),
    {"app": "api"},
    [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30090}],
    kind="NodePort",
)
API_LOCAL = service(
    "api-local",
    ("10.96.0.22", "fd00:96::22"),
    {"app": "api"},
    [{"name": "http", "port": 80, "targetPort": 9090, "nodePort": 30091}],
    kind="NodePort",
    traffic="Local",
)
BACK = service(  # backends on both nodes
    "back",
    ("10.96.0.23", "fd00:96::23"),
    {"tier": "back"},
    [{"name": "http", "port": 8000, "targetPort": "http"}],
)
WEB = service(
    "web", ("10.96.0.24", "fd00:96::24"), {"app": "web"}, [{"port": 80, "targetPort": 8080}]
)
SERVICES = [DB, API, API_LOCAL, BACK, WEB]

DENY_INGRESS: Raw = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny", "namespace": "prod"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}
DB_FROM_WEB: Raw = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "db-from-web", "namespace": "prod"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
    },
}


def api_from(cidr: str) -> Raw:
    """Ingress to prod/api from one address block only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "api-from", "namespace": "prod"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "api"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}],
        },
    }


class Proxy:
    """The kube-proxy stand-in on every node of a cluster lab."""

    def __init__(self, cl: ClusterLab) -> None:
        self.cl = cl
        self.runner = IptablesRunner(cl.backend)
        self.services: list[Service] = []

    def sync(self, services: list[Raw]) -> None:
        """Program every node, both families, from ``services`` and the lab's pods."""
        self.services = [parse_service(s) for s in services]
        pods = list(self.cl.cluster.pods.values())
        slices = [
            parse_endpoint_slice(body) for s in self.services for body in desired_slices(s, pods)
        ]
        for name, node in self.cl.nodes.items():
            for family in (4, 6):
                rules = render_proxy(
                    ProxyNode(name, family, CLUSTER_CIDRS[family]), self.services, slices
                )
                self.runner.apply(node.ns, family, rules)

    def backends(self, name: str, port: int | str) -> list[str]:
        """The pod keys behind a service port."""
        svc = next(s for s in self.services if s.name == name)
        sp = svc.find_port(port)
        assert sp is not None
        pods = list(self.cl.cluster.pods.values())
        slices = [parse_endpoint_slice(b) for b in desired_slices(svc, pods)]
        return sorted({b.pod for b in service_backends(svc, sp, slices)})


@pytest.fixture(params=("nft", "legacy"))
def cl(request: pytest.FixtureRequest) -> Iterator[ClusterLab]:
    backend: Backend = request.param
    with Lab(fabric4=FABRIC4, fabric6=FABRIC6) as lab:
        cl = ClusterLab(lab, backend)
        try:
            yield cl
        finally:
            cl.cleanup()


def kube_lines(cl: ClusterLab) -> dict[str, dict[str, list[str]]]:
    """Everything in every node's tables and sets that is not stockade's."""
    out: dict[str, dict[str, list[str]]] = {}
    for name, node in cl.nodes.items():
        state = save_all(cl.lab, node)
        out[name] = {
            key: [line for line in lines if "STK-" not in line and " stk-" not in line]
            for key, lines in state.items()
        }
    return out


def stockade_lines(cl: ClusterLab) -> dict[str, dict[str, list[str]]]:
    """Only stockade's lines (its chains, rules, jump and sets) on every node."""
    out: dict[str, dict[str, list[str]]] = {}
    for name, node in cl.nodes.items():
        state = save_all(cl.lab, node)
        out[name] = {
            key: [line for line in lines if "STK-" in line or " stk-" in line]
            for key, lines in state.items()
        }
    return out


def forward_rules(cl: ClusterLab, node: str, family: int) -> list[str]:
    return [line for line in cl.save(node, family).splitlines() if line.startswith("-A FORWARD")]


# --------------------------------------------------------------------------- through NAT


def _through_services(cl: ClusterLab, proxy: Proxy, family: int) -> list[str]:
    """Probe every service port from every pod; list where the kernel and engine differ."""
    wrong: list[str] = []
    cases = [
        (src, svc, sp, next(ip for ip in svc.cluster_ips if (":" in ip) == (family == 6)))
        for svc in proxy.services
        for sp in svc.ports
        for src in cl.pods
    ]
    with ThreadPoolExecutor(32) as pool:
        replies = list(
            pool.map(
                lambda c: cl.lab.ask(cl.pods[c[0]], c[3], c[2].port, c[2].protocol, 0.4), cases
            )
        )
    for (src, svc, sp, _), reply in zip(cases, replies, strict=True):
        backends = proxy.backends(svc.name, sp.name or sp.port)
        allowed_to = {
            b
            for b in backends
            if cl.expected(src, b, _target(cl, b, sp.target, sp.protocol), sp.protocol, family)
        }
        what = f"{src} -> {svc.key}:{sp.port}/{sp.protocol}"
        # kube-proxy picks one backend per connection: silence is wrong only when
        # every backend would have answered.
        if reply is None and allowed_to == set(backends):
            wrong.append(f"{what}: no answer, the engine allows every backend")
        if reply is not None and reply not in allowed_to:
            wrong.append(f"{what}: {reply} answered, the engine allows {allowed_to or 'none'}")
    return wrong


def _target(cl: ClusterLab, pod_key: str, target: int | str, protocol: str) -> int:
    if isinstance(target, int):
        return target
    number = cl.cluster.pods[pod_key].named_port(target, protocol)
    assert number is not None
    return number


@pytest.mark.parametrize("family", [4, 6])
def test_service_traffic_is_judged_on_the_backend(cl: ClusterLab, family: int) -> None:
    cl.set_cluster([*PODS, DENY_INGRESS, DB_FROM_WEB])
    proxy = Proxy(cl)
    proxy.sync(SERVICES)
    # Balanced services answer from one backend per connection: several rounds see both.
    for _ in range(3):
        assert _through_services(cl, proxy, family) == []
    # the judgement really is per backend: web reaches db through its ClusterIP ...
    assert (
        cl.lab.ask(cl.pods["prod/web"], "10.96.0.20" if family == 4 else "fd00:96::20", 80)
        == "prod/db"
    )
    # ... and the client does not, though the ClusterIP is no pod of any policy
    assert (
        cl.lab.ask(cl.pods["other/client"], "10.96.0.20" if family == 4 else "fd00:96::20", 80)
        is None
    )


def test_nodeport_source_is_the_client_or_the_node(cl: ClusterLab) -> None:
    """externalTrafficPolicy decides which address ingress policy sees (docs/semantics.md)."""
    x1 = cl.externals["x1"]
    n1, n2 = NODE_IPS["n1"][0], NODE_IPS["n2"][0]
    cl.set_cluster([*PODS, api_from(f"{x1.ip4}/32")])
    proxy = Proxy(cl)
    proxy.sync(SERVICES)

    def via(node_ip: str, node_port: int) -> str | None:
        return cl.lab.ask(x1, node_ip, node_port, timeout=0.4)

    # Cluster, entering n1: the backend runs on n2, and n1 masquerades: n2 sees n1.
    assert via(n1, 30090) is None
    # Cluster, entering n2 (the backend's node): FORWARD runs before MASQUERADE, so
    # the policy sees the client's address.
    assert via(n2, 30090) == "prod/api"
    # Local: only the backend's node answers, and the client's address is kept.
    assert via(n2, 30091) == "prod/api"
    assert via(n1, 30091) is None  # no local endpoint on n1: kube-proxy drops
    # Allow the nodes instead of the client: the masqueraded path opens, the others close.
    cl.set_cluster([*PODS, api_from(f"{n1}/32")])
    assert via(n1, 30090) == "prod/api"
    assert via(n2, 30090) is None
    assert via(n2, 30091) is None


# --------------------------------------------------------------------------- coexistence


def test_stockade_never_touches_kube_proxy(cl: ClusterLab) -> None:
    """kube-proxy's chains, rules and jumps stay byte-identical through all stockade does."""
    cl.set_cluster(PODS)
    proxy = Proxy(cl)
    proxy.sync(SERVICES)
    before = kube_lines(cl)
    assert any(
        line.startswith("-A KUBE-SVC-") for line in before["n1"][f"iptables-{cl.backend}-save"]
    )
    cl.set_cluster([*PODS, DENY_INGRESS, DB_FROM_WEB])  # apply
    assert kube_lines(cl) == before
    for applier in cl.appliers.values():  # resync with nothing to do
        applier.resync()
    assert kube_lines(cl) == before
    cl.iptables("n1", 4, "-F", "STK-INGRESS")  # drift, then its repair
    assert cl.verify()
    cl.appliers["n1"].resync()
    assert cl.verify() == {}
    assert kube_lines(cl) == before
    cl.set_cluster([*PODS, DB_FROM_WEB])  # a policy removed
    assert kube_lines(cl) == before
    cl.cleanup()
    assert kube_lines(cl) == before
    assert all(v == {k: [] for k in v} for v in stockade_lines(cl).values())


def test_kube_proxy_resyncs_never_disturb_stockade(cl: ClusterLab) -> None:
    cl.set_cluster(PODS)
    proxy = Proxy(cl)
    proxy.sync(SERVICES)  # kube-proxy first, as on a node that joins a cluster
    cl.set_cluster([*PODS, DENY_INGRESS, DB_FROM_WEB])
    ours = stockade_lines(cl)
    assert cl.verify() == {}
    # services come and go; kube-proxy rewrites its chains and deletes stale ones
    proxy.sync([DB, BACK])
    proxy.sync([DB, API, WEB])
    proxy.sync(SERVICES)
    assert stockade_lines(cl) == ours
    assert cl.verify() == {}
    for family in (4, 6):
        assert forward_rules(cl, "n1", family)[0].endswith("-j STK-FORWARD")


def test_kube_proxy_started_after_stockade(cl: ClusterLab) -> None:
    """kube-proxy prepends its FORWARD jumps when missing; stockade's drift check sees
    its jump is no longer first and puts it back on top, touching nothing else."""
    cl.set_cluster([*PODS, api_from("192.0.2.0/24")])
    proxy = Proxy(cl)
    proxy.sync(SERVICES)
    for family in (4, 6):
        rules = forward_rules(cl, "n1", family)
        # KUBE-FORWARD accepts masquerade-marked packets: above stockade it would let
        # node-port traffic past policy.
        assert not rules[0].endswith("-j STK-FORWARD"), rules
    drift = "\n".join(cl.verify().get("n1", []))
    assert "FORWARD: the jump to stockade is not the single first rule" in drift
    kube_before = kube_lines(cl)
    for applier in cl.appliers.values():
        applier.resync()
    assert cl.verify() == {}
    for node in cl.nodes:
        for family in (4, 6):
            assert forward_rules(cl, node, family)[0].endswith("-j STK-FORWARD")
    assert kube_lines(cl) == kube_before
    # and policy holds through the node port again
    assert cl.lab.ask(cl.externals["x1"], NODE_IPS["n1"][0], 30090, timeout=0.4) is None
    # kube-proxy's next resync leaves the order alone (its rules are present)
    proxy.sync(SERVICES)
    assert forward_rules(cl, "n1", 4)[0].endswith("-j STK-FORWARD")
    assert shlex.split(forward_rules(cl, "n1", 4)[0])[-1] == "STK-FORWARD"
