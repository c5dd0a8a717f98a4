"""The agent's conntrack cut judges a flow as FORWARD judged it: through kube-proxy's NAT.

kube-proxy DNATs a ClusterIP or NodePort to a backend in PREROUTING, so the filter
FORWARD chain, where stockade's rules are, sees the backend as destination; SNAT
(MASQUERADE) runs later, in POSTROUTING, so FORWARD sees the original source. The
agent's cut (``Applier.cut_denied_flows``) must judge that view, and delete by the
original tuple.

Each case builds two nodes, a client pod and a backend pod on ``n1``, a second
backend on ``n2`` and an outside host, programs by hand in the nodes' ``nat`` tables
what kube-proxy would (a ClusterIP balanced over both backends with ``statistic
--mode nth``, a NodePort on ``n1``'s own address with MASQUERADE, a hairpin
Service, a Service whose endpoint is ``n1`` itself), opens live TCP connections
through them, and applies policies through the compile path of the other packet
tests. Both IP families, both iptables backends. Everything lives in ``stk-*``
namespaces that the fixtures remove; nothing touches the host's namespace.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from stockade.agent.backend import Backend
from stockade.agent.netlink import Flow
from stockade_lab.netlab import Lab, Place
from tests.integration.cluster_lab import (
    EXTERNALS,
    FABRIC4,
    FABRIC6,
    NODE_IPS,
    ClusterLab,
    Raw,
    ns_doc,
    pod_doc,
)

pytestmark = pytest.mark.root

BACKENDS: tuple[Backend, ...] = ("nft", "legacy")
FAMILIES = (4, 6)

ECHO = 7070  # the backends' port (not one the lab's responders use)
SVC_PORT = 80
NODE_PORT = 30080
TIMEOUT = 1.0

# (IPv4, IPv6) of each party
CLIENT = ("10.0.1.20", "fd00::1:20")
BACKEND1 = ("10.0.1.21", "fd00::1:21")  # on n1, with the client
BACKEND2 = ("10.0.2.21", "fd00::2:21")  # on n2
VIP = ("10.96.0.10", "fd96::10")  # balanced over both backends
HAIRPIN_VIP = ("10.96.0.11", "fd96::11")  # backend 1 only
HOST_VIP = ("10.96.0.12", "fd96::12")  # a host-network endpoint: n1 itself
OUTSIDE = EXTERNALS["x1"]


def _ip(pair: tuple[str, str | None], family: int) -> str:
    ip = pair[0] if family == 4 else pair[1]
    assert ip is not None
    return ip


def _policy(name: str, spec: Raw) -> Raw:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "prod"},
        "spec": spec,
    }


BASE: list[Raw] = [
    ns_doc("prod", env="prod"),
    pod_doc("prod", "client", "n1", *CLIENT, {"app": "client"}),
    pod_doc("prod", "backend1", "n1", *BACKEND1, {"app": "backend"}),
    pod_doc("prod", "backend2", "n2", *BACKEND2, {"app": "backend"}),
]
# The backends take no connection any more (ingress isolated, nothing allowed).
DENY_BACKENDS = _policy(
    "backend-deny",
    {"podSelector": {"matchLabels": {"app": "backend"}}, "policyTypes": ["Ingress"]},
)
# The client may reach the backend pods only (no ipBlock covers any Service address).
CLIENT_TO_BACKENDS = _policy(
    "client-egress",
    {
        "podSelector": {"matchLabels": {"app": "client"}},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [{"podSelector": {"matchLabels": {"app": "backend"}}}],
                "ports": [{"port": ECHO, "protocol": "TCP"}],
            }
        ],
    },
)
# The backends take the client and the outside host (the NodePort's source).
BACKENDS_FROM_CLIENT_AND_OUTSIDE = _policy(
    "backend-in",
    {
        "podSelector": {"matchLabels": {"app": "backend"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": {"app": "client"}}},
                    {"ipBlock": {"cidr": f"{OUTSIDE[0]}/32"}},
                    {"ipBlock": {"cidr": f"{OUTSIDE[1]}/128"}},
                ],
                "ports": [{"port": ECHO, "protocol": "TCP"}],
            }
        ],
    },
)


# --------------------------------------------------------------------------- sockets


class Echo:
    """A TCP echo server (both families) in a namespace that keeps connections open."""

    def __init__(self, lab: Lab, where: Place, port: int) -> None:
        with lab.in_netns(where):
            self.listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.listener.bind(("::", port))
        self.listener.listen(16)
        self.conns: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True, name="echo")]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True, name="echo")
            self.threads.append(t)
            t.start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(4096):
                conn.sendall(data)

    def close(self) -> None:
        """Close every socket (which ends the threads)."""
        for sock in [self.listener, *self.conns]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for t in self.threads:
            t.join(timeout=2.0)


def connect(lab: Lab, where: Place, ip: str, port: int) -> socket.socket:
    """A TCP connection opened from ``where`` to ``ip`` (the caller closes it)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with lab.in_netns(where):
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect((ip, port))
    return sock


def exchange(sock: socket.socket, payload: bytes, timeout: float = 0.4) -> bool:
    """Whether ``payload`` comes back on an open connection in time."""
    sock.settimeout(timeout)
    try:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(4096)
            if not chunk:
                return False
            got += chunk
    except OSError:
        return False
    return got == payload


# --------------------------------------------------------------------------- the lab


@dataclass
class NatLab:
    """Two nodes, their pods, kube-proxy's NAT by hand, and echo servers."""

    cl: ClusterLab
    family: int

    def ip(self, pair: tuple[str, str | None]) -> str:
        return _ip(pair, self.family)

    def node_ip(self, node: str) -> str:
        return _ip(NODE_IPS[node], self.family)

    def nat(self, node: str, *args: str) -> None:
        self.cl.iptables(node, self.family, "-w", "5", "-t", "nat", *args)

    def program(self) -> None:
        """What kube-proxy would write into ``n1``'s nat table (in this family)."""
        plen = "32" if self.family == 4 else "128"
        b1, b2, node = self.ip(BACKEND1), self.ip(BACKEND2), self.node_ip("n1")
        tcp = ["-p", "tcp", "--dport"]
        # ClusterIP over both backends: the first new connection to backend 1, the
        # next to backend 2 (kube-proxy picks at random; nth makes the test exact).
        vip = ["-A", "PREROUTING", "-d", f"{self.ip(VIP)}/{plen}", *tcp, str(SVC_PORT)]
        nth = ["-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0"]
        self.nat("n1", *vip, *nth, "-j", "DNAT", "--to-destination", self.endpoint(b1))
        self.nat("n1", *vip, "-j", "DNAT", "--to-destination", self.endpoint(b2))
        # A Service of backend 1 only, for backend 1 to reach itself (hairpin, which
        # kube-proxy masquerades so that the replies come back through the node).
        hp = ["-A", "PREROUTING", "-d", f"{self.ip(HAIRPIN_VIP)}/{plen}", *tcp, str(SVC_PORT)]
        self.nat("n1", *hp, "-j", "DNAT", "--to-destination", self.endpoint(b1))
        self.nat("n1", "-A", "POSTROUTING", "-s", b1, "-d", b1, "-j", "MASQUERADE")
        # A Service whose endpoint is the node itself (a host-network pod).
        hv = ["-A", "PREROUTING", "-d", f"{self.ip(HOST_VIP)}/{plen}", *tcp, str(SVC_PORT)]
        self.nat("n1", *hv, "-j", "DNAT", "--to-destination", self.endpoint(node))
        # A NodePort on n1's own address to backend 1, masqueraded (externalTrafficPolicy
        # Cluster): backend 1 sees n1's address, FORWARD saw the outside host's.
        outside = self.ip(OUTSIDE)
        np = ["-A", "PREROUTING", "-d", f"{node}/{plen}", *tcp, str(NODE_PORT)]
        self.nat("n1", *np, "-j", "DNAT", "--to-destination", self.endpoint(b1))
        masq = ["-A", "POSTROUTING", "-s", outside, "-d", b1, "-p", "tcp", "--dport", str(ECHO)]
        self.nat("n1", *masq, "-j", "MASQUERADE")

    def endpoint(self, ip: str) -> str:
        """``ip:port`` of a backend, as DNAT's ``--to-destination`` takes it."""
        return f"{ip}:{ECHO}" if self.family == 4 else f"[{ip}]:{ECHO}"

    def unprogram(self) -> None:
        for chain in ("PREROUTING", "POSTROUTING"):
            for node in self.cl.nodes:
                self.nat(node, "-F", chain)

    def flows(self, node: str) -> list[Flow]:
        """``node``'s conntrack entries of this family, listed as the agent does."""
        return [f for f in self.cl.appliers[node].conntrack.flows() if f.family == self.family]

    def conntrack_text(self, node: str) -> str:
        name = "ipv4" if self.family == 4 else "ipv6"
        return self.cl.lab.run(self.cl.nodes[node], ["conntrack", "-L", "-f", name]).stdout


@pytest.fixture(
    params=[(b, f) for b in BACKENDS for f in FAMILIES], ids=lambda p: f"{p[0]}-v{p[1]}"
)
def nl(request: pytest.FixtureRequest) -> Iterator[NatLab]:
    backend, family = request.param
    with Lab(fabric4=FABRIC4, fabric6=FABRIC6) as lab:
        cl = ClusterLab(lab, backend)
        nat = NatLab(cl, family)
        try:
            cl.set_cluster(BASE)
            nat.program()
            yield nat
        finally:
            with contextlib.suppress(Exception):
                nat.unprogram()
            cl.cleanup()


@dataclass
class Conns:
    """The live connections of a case, opened before the policy change."""

    local: socket.socket  # client -> ClusterIP -> backend 1 (same node)
    remote: socket.socket  # client -> ClusterIP -> backend 2 (n2)
    nodeport: socket.socket  # outside host -> n1's address:NodePort -> backend 1
    hairpin: socket.socket  # backend 1 -> its own Service -> backend 1
    host: socket.socket  # client -> Service -> n1 itself (host network)

    def all(self) -> dict[str, socket.socket]:
        return dict(vars(self))


@contextlib.contextmanager
def open_conns(nl: NatLab) -> Iterator[Conns]:
    cl, lab = nl.cl, nl.cl.lab
    client, b1 = cl.pod("prod/client"), cl.pod("prod/backend1")
    """The connections of :class:`Conns`, each checked to echo; all closed afterwards."""
    servers: list[Echo] = []
    socks: list[socket.socket] = []
    todo: list[tuple[Place, str, int]] = [
        (client, nl.ip(VIP), SVC_PORT),
        (client, nl.ip(VIP), SVC_PORT),
        (cl.externals["x1"], nl.node_ip("n1"), NODE_PORT),
        (b1, nl.ip(HAIRPIN_VIP), SVC_PORT),
        (client, nl.ip(HOST_VIP), SVC_PORT),
    ]
    try:
        for place in (b1, cl.pod("prod/backend2"), cl.nodes["n1"]):
            servers.append(Echo(lab, place, ECHO))
        for where, ip, port in todo:
            socks.append(connect(lab, where, ip, port))
        conns = Conns(*socks)
        for name, sock in conns.all().items():
            assert exchange(sock, b"hello\n"), f"{name}: no echo before any policy"
        yield conns
    finally:
        for sock in socks:
            sock.close()
        for server in servers:
            server.close()


def _entry(flows: list[Flow], src: str, dst: str, dport: int) -> Flow | None:
    """The entry whose original tuple goes from ``src`` to ``dst``:``dport``."""
    found = [f for f in flows if f.src == src and f.dst == dst and f.dport == dport]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_the_tool_lists_the_reply_tuple_and_both_listings_agree(nl: NatLab) -> None:
    with open_conns(nl):
        text = nl.conntrack_text("n1")
        flows = nl.flows("n1")
        table = nl.cl.appliers["n1"].conntrack
        assert table.runner is not None, "the conntrack tool is installed here"
        assert {f for f in table.netlink_flows() if f.family == nl.family} == set(flows), text
        to_vip = [f for f in flows if f.dst == nl.ip(VIP)]
        assert {(f.seen_dst, f.seen_dport) for f in to_vip} == {
            (nl.ip(BACKEND1), ECHO),
            (nl.ip(BACKEND2), ECHO),
        }, text
        assert all(f.seen_src == nl.ip(CLIENT) and f.natted for f in to_vip)
        np = _entry(flows, nl.ip(OUTSIDE), nl.node_ip("n1"), NODE_PORT)
        assert np is not None, text
        assert np.seen == (nl.ip(OUTSIDE), nl.ip(BACKEND1), ECHO)
        hp = _entry(flows, nl.ip(BACKEND1), nl.ip(HAIRPIN_VIP), SVC_PORT)
        assert hp is not None, text
        assert hp.seen_src == hp.seen_dst == nl.ip(BACKEND1), text
        host = _entry(flows, nl.ip(CLIENT), nl.ip(HOST_VIP), SVC_PORT)
        assert host is not None, text
        assert host.seen_dst == nl.node_ip("n1"), text


def test_a_policy_denying_the_backends_cuts_connections_through_services(nl: NatLab) -> None:
    with open_conns(nl) as conns:
        reports = nl.cl.set_cluster([*BASE, DENY_BACKENDS])
        # n1 cuts the ClusterIP connection to its backend (its original destination
        # is no pod) and the NodePort one (its original destination is n1's own
        # address); n2 cuts the one to its backend (plain there: n1 did the DNAT).
        assert reports["n1"].conntrack_deleted >= 2
        assert reports["n2"].conntrack_deleted >= 1
        flows1, flows2 = nl.flows("n1"), nl.flows("n2")
        assert _entry(flows1, nl.ip(OUTSIDE), nl.node_ip("n1"), NODE_PORT) is None
        assert not [f for f in flows1 if f.seen_dst == nl.ip(BACKEND1) and f.dst == nl.ip(VIP)]
        assert not [f for f in flows2 if f.dst == nl.ip(BACKEND2) and f.dport == ECHO]
        for name in ("local", "remote", "nodeport"):
            assert not exchange(conns.all()[name], b"again\n"), f"{name}: a denied flow flows"
        # A pod reaching itself through its own Service is a pod reaching itself.
        assert exchange(conns.hairpin, b"again\n"), "the hairpin connection was cut"
        hp = _entry(flows1, nl.ip(BACKEND1), nl.ip(HAIRPIN_VIP), SVC_PORT)
        assert hp is not None
        # The Service with a host-network endpoint never crossed FORWARD.
        assert exchange(conns.host, b"again\n")


def test_connections_the_new_policies_allow_survive_with_their_nat(nl: NatLab) -> None:
    with open_conns(nl) as conns:
        before = nl.flows("n1")
        reports = nl.cl.set_cluster([*BASE, CLIENT_TO_BACKENDS, BACKENDS_FROM_CLIENT_AND_OUTSIDE])
        assert reports["n1"].iptables_restores > 0  # a real rule change
        # The egress-isolated client may reach the backends (by podSelector, no ipBlock
        # for the Service address); the outside host may reach backend 1; backend 1
        # reaching itself and the client reaching the node never crossed FORWARD's
        # policy checks. Nothing is cut, so no NAT mapping is lost.
        assert reports["n1"].conntrack_deleted == 0
        assert reports["n2"].conntrack_deleted == 0
        natted = {f for f in before if f.natted}
        assert len(natted) == 5  # two ClusterIP, NodePort, hairpin, host-network
        assert natted <= set(nl.flows("n1")), "a NAT mapping was lost"
        for name, sock in conns.all().items():
            assert exchange(sock, b"again\n"), f"{name}: an allowed flow was cut"
            assert exchange(sock, b"and again\n"), name
