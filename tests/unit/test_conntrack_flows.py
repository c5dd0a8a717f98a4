"""Conntrack flows as FORWARD judged them, and the agent's cut built on that view.

kube-proxy DNATs Service traffic in PREROUTING, before the filter FORWARD chain, and
masquerades in POSTROUTING, after it. So FORWARD judged a flow's original source and
its reply tuple's source (the backend) as destination: :class:`Flow`'s seen view,
which ``Applier.cut_denied_flows`` judges, while it deletes by the original tuple.

The listings below are ``conntrack -L -f ipv4|ipv6`` output captured in the lab of
``tests/integration/test_conntrack_nat.py`` (conntrack-tools 1.4.7), where the same
flows run with real packets.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from stockade.agent.applier import Applier, Desired
from stockade.agent.backend import Tools
from stockade.agent.netlink import ConntrackTable, Flow, parse_conntrack_list
from stockade.cluster import parse_documents
from stockade.compiler import compile_cluster
from tests.unit.fake_kernel import FakeKernel

Raw = dict[str, Any]

# --------------------------------------------------------------------------- listings

# client 10.0.1.20 and backend1 10.0.1.21 on n1 (192.168.0.1), backend2 10.0.2.21 on
# n2, outside host 203.0.113.7; Services: 10.96.0.10:80 over both backends' 7070,
# 10.96.0.11:80 backend1 only (hairpin, masqueraded to the pod veth's 169.254.1.1),
# 10.96.0.12:80 the node itself (host network); NodePort 192.168.0.1:30080 to
# backend1, masqueraded.
REAL_V4 = """\
tcp      6 431999 ESTABLISHED src=10.0.1.20 dst=10.96.0.12 sport=55562 dport=80 src=192.168.0.1 dst=10.0.1.20 sport=7070 dport=55562 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=203.0.113.7 dst=192.168.0.1 sport=41556 dport=30080 src=10.0.1.21 dst=169.254.1.1 sport=7070 dport=41556 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.0.1.20 dst=10.96.0.10 sport=53898 dport=80 src=10.0.2.21 dst=10.0.1.20 sport=7070 dport=53898 [ASSURED] mark=0 use=1
udp      17 29 src=10.0.1.20 dst=10.0.2.21 sport=44493 dport=4444 [UNREPLIED] src=10.0.2.21 dst=10.0.1.20 sport=4444 dport=44493 mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.0.1.21 dst=10.96.0.11 sport=50938 dport=80 src=10.0.1.21 dst=169.254.1.1 sport=7070 dport=50938 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.0.1.20 dst=10.96.0.10 sport=53882 dport=80 src=10.0.1.21 dst=10.0.1.20 sport=7070 dport=53882 [ASSURED] mark=0 use=1
"""  # noqa: E501
REAL_V6 = """\
tcp      6 431999 ESTABLISHED src=fd00::1:20 dst=fd96::12 sport=35010 dport=80 src=fd01::1 dst=fd00::1:20 sport=7070 dport=35010 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=fd00::1:20 dst=fd96::10 sport=36944 dport=80 src=fd00::1:21 dst=fd00::1:20 sport=7070 dport=36944 [ASSURED] mark=0 use=1
udp      17 29 src=fd00::1:20 dst=fd00::2:21 sport=43069 dport=4444 [UNREPLIED] src=fd00::2:21 dst=fd00::1:20 sport=4444 dport=43069 mark=0 use=1
tcp      6 431999 ESTABLISHED src=2001:db8::7 dst=fd01::1 sport=41800 dport=30080 src=fd00::1:21 dst=fd01::1 sport=7070 dport=41800 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=fd00::1:20 dst=fd96::10 sport=36950 dport=80 src=fd00::2:21 dst=fd00::1:20 sport=7070 dport=36950 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=fd00::1:21 dst=fd96::11 sport=41152 dport=80 src=fd00::1:21 dst=fd01::1 sport=7070 dport=41152 [ASSURED] mark=0 use=1
"""  # noqa: E501
# Entries made with `conntrack -I` in a lab namespace (a zone and a mark; SCTP).
REAL_ZONE_SCTP = """\
sctp     132 49 ESTABLISHED src=10.0.1.20 dst=10.0.1.30 sport=5000 dport=5001 [UNREPLIED] src=10.0.1.30 dst=10.0.1.20 sport=5001 dport=5000 mark=0 use=1
tcp      6 49 ESTABLISHED src=10.0.1.20 dst=10.96.0.10 sport=40000 dport=80 [UNREPLIED] src=10.0.1.21 dst=10.0.1.20 sport=8080 dport=40000 [ASSURED] mark=7 zone=3 use=1
"""  # noqa: E501

CLIENT4, BACKEND1_4, BACKEND2_4, NODE4, OUTSIDE4 = (
    "10.0.1.20",
    "10.0.1.21",
    "10.0.2.21",
    "192.168.0.1",
    "203.0.113.7",
)
VIP4, HAIRPIN_VIP4, HOST_VIP4 = "10.96.0.10", "10.96.0.11", "10.96.0.12"
CLIENT6, BACKEND1_6, BACKEND2_6, NODE6, OUTSIDE6 = (
    "fd00::1:20",
    "fd00::1:21",
    "fd00::2:21",
    "fd01::1",
    "2001:db8::7",
)
VIP6 = "fd96::10"
# n1's own addresses (the fabric's, the pod veths' gateway ones, loopback)
LOCAL = {NODE4, NODE6, "169.254.1.1", "fe80::1", "127.0.0.1", "::1"}


# --------------------------------------------------------------------------- parsing


def test_a_flow_without_nat_sees_what_was_sent() -> None:
    flow = Flow(4, "TCP", "10.0.1.20", "10.0.2.21", 40000, 80)
    assert (flow.seen_dst, flow.seen_dport) == ("10.0.2.21", 80)
    assert flow.seen == ("10.0.1.20", "10.0.2.21", 80)
    assert not flow.natted
    # the seen view is part of equality: an entry through a Service is another flow
    assert flow == Flow(4, "TCP", "10.0.1.20", "10.0.2.21", 40000, 80, "10.0.2.21", 80)
    assert flow != Flow(4, "TCP", "10.0.1.20", "10.0.2.21", 40000, 80, "10.0.1.5", 80)


def test_plain_flow() -> None:
    line = (
        "tcp      6 586 ESTABLISHED src=10.0.1.20 dst=10.0.2.21 sport=1000 dport=80 "
        "src=10.0.2.21 dst=10.0.1.20 sport=80 dport=1000 [ASSURED] mark=0 use=1"
    )
    (flow,) = parse_conntrack_list(line, 4)
    assert flow == Flow(4, "TCP", "10.0.1.20", "10.0.2.21", 1000, 80)
    assert not flow.natted


def test_clusterip_flow_is_seen_at_its_backend() -> None:
    line = (
        "tcp      6 431999 ESTABLISHED src=10.244.2.7 dst=10.96.0.10 sport=41000 dport=80 "
        "src=10.244.1.5 dst=10.244.2.7 sport=8080 dport=41000 [ASSURED] mark=0 use=2"
    )
    (flow,) = parse_conntrack_list(line, 4)
    # deleted by the original tuple, judged at the backend
    assert (flow.src, flow.dst, flow.sport, flow.dport) == ("10.244.2.7", "10.96.0.10", 41000, 80)
    assert flow.seen == ("10.244.2.7", "10.244.1.5", 8080)
    assert flow.natted


def test_nodeport_flow_with_masquerade_is_seen_from_the_outside_host() -> None:
    line = (
        "tcp      6 431999 ESTABLISHED src=203.0.113.10 dst=172.31.255.1 sport=52000 "
        "dport=30080 src=10.244.1.5 dst=172.31.255.1 sport=8080 dport=52000 [ASSURED] "
        "mark=16384 use=1"
    )
    (flow,) = parse_conntrack_list(line, 4)
    assert (flow.src, flow.dst, flow.dport) == ("203.0.113.10", "172.31.255.1", 30080)
    # the source before the SNAT, the destination after the DNAT
    assert flow.seen == ("203.0.113.10", "10.244.1.5", 8080)


def test_real_listings() -> None:
    v4 = parse_conntrack_list(REAL_V4, 4)
    assert v4 == [
        Flow(4, "TCP", CLIENT4, HOST_VIP4, 55562, 80, NODE4, 7070),
        Flow(4, "TCP", OUTSIDE4, NODE4, 41556, 30080, BACKEND1_4, 7070),
        Flow(4, "TCP", CLIENT4, VIP4, 53898, 80, BACKEND2_4, 7070),
        Flow(4, "UDP", CLIENT4, BACKEND2_4, 44493, 4444),
        Flow(4, "TCP", BACKEND1_4, HAIRPIN_VIP4, 50938, 80, BACKEND1_4, 7070),
        Flow(4, "TCP", CLIENT4, VIP4, 53882, 80, BACKEND1_4, 7070),
    ]
    v6 = parse_conntrack_list(REAL_V6, 6)
    assert [f.seen for f in v6] == [
        (CLIENT6, NODE6, 7070),
        (CLIENT6, BACKEND1_6, 7070),
        (CLIENT6, BACKEND2_6, 4444),
        (OUTSIDE6, BACKEND1_6, 7070),
        (CLIENT6, BACKEND2_6, 7070),
        (BACKEND1_6, BACKEND1_6, 7070),
    ]
    assert [(f.dst, f.dport) for f in v6 if f.natted] == [
        ("fd96::12", 80),
        (VIP6, 80),
        (NODE6, 30080),
        (VIP6, 80),
        ("fd96::11", 80),
    ]
    assert {f.family for f in v6} == {6}


def test_udp_unreplied_sctp_zone_and_mark() -> None:
    assert parse_conntrack_list(REAL_ZONE_SCTP, 4) == [
        Flow(4, "SCTP", "10.0.1.20", "10.0.1.30", 5000, 5001),
        Flow(4, "TCP", "10.0.1.20", "10.96.0.10", 40000, 80, "10.0.1.21", 8080),
    ]
    # directional zones follow each tuple (zone-orig=, zone-reply=): still ignored
    line = (
        "udp      17 29 src=10.0.1.20 dst=10.96.0.53 sport=4000 dport=53 zone-orig=4 "
        "[UNREPLIED] src=10.0.1.9 dst=10.0.1.20 sport=5353 dport=4000 zone-reply=5 "
        "mark=0 secctx=system_u:object_r:unlabeled_t:s0 zone=4 use=1"
    )
    assert parse_conntrack_list(line, 4) == [
        Flow(4, "UDP", "10.0.1.20", "10.96.0.53", 4000, 53, "10.0.1.9", 5353)
    ]


def test_lines_cut_short_and_other_protocols() -> None:
    text = "\n".join(
        [
            # the reply tuple cut short: taken as not translated
            "udp 17 599 src=fd00::1 dst=fd00::2 sport=5 dport=53 [UNREPLIED] src=fd00::9",
            "tcp 6 10 ESTABLISHED src=fd00::1 dst=fd96::1 sport=6 dport=80 src=fd00::3 dst=fd",
            # the original tuple cut short: neither judged nor deletable, skipped
            "tcp 6 10 ESTABLISHED src=fd00::1 dst=fd00::2 sport=7",
            "tcp 6 10 ESTABLISHED src=fd00::1 dst=",
            "tcp",
            "",
            # not TCP, UDP or SCTP
            "icmpv6 58 29 src=fd00::1 dst=fd00::2 type=128 code=0 id=7 src=fd00::2 "
            "dst=fd00::1 type=129 code=0 id=7 mark=0 use=1",
            "conntrack v1.4.7 (conntrack-tools): 9 flow entries have been shown.",
        ]
    )
    assert parse_conntrack_list(text, 6) == [
        Flow(6, "UDP", "fd00::1", "fd00::2", 5, 53),
        Flow(6, "TCP", "fd00::1", "fd96::1", 6, 80),
    ]


def test_the_netlink_dump_gives_the_same_view(monkeypatch: pytest.MonkeyPatch) -> None:
    def tup(src: str, dst: str, proto: int, sport: int | None, dport: int | None) -> Any:
        return SimpleNamespace(saddr=src, daddr=dst, proto=proto, sport=sport, dport=dport)

    tcp, udp = socket.IPPROTO_TCP, socket.IPPROTO_UDP
    entries: dict[int, list[Any]] = {
        socket.AF_INET: [
            SimpleNamespace(
                tuple_orig=tup(CLIENT4, VIP4, tcp, 53882, 80),
                tuple_reply=tup(BACKEND1_4, CLIENT4, tcp, 7070, 53882),
            ),
            SimpleNamespace(
                tuple_orig=tup(OUTSIDE4, NODE4, tcp, 41556, 30080),
                tuple_reply=tup(BACKEND1_4, "169.254.1.1", tcp, 7070, 41556),
            ),
            # no reply tuple at all: taken as not translated
            SimpleNamespace(tuple_orig=tup(CLIENT4, BACKEND2_4, udp, 4000, 53), tuple_reply=None),
            SimpleNamespace(tuple_orig=tup(CLIENT4, BACKEND2_4, 1, None, None), tuple_reply=None),
        ],
        socket.AF_INET6: [],
    }

    class FakeConntrack:
        def __init__(self, nfgen_family: int) -> None:
            self.family = nfgen_family

        def dump_entries(self) -> Iterator[Any]:
            return iter(entries[self.family])

        def close(self) -> None:
            pass

    monkeypatch.setattr("stockade.agent.netlink._Conntrack", FakeConntrack)
    assert ConntrackTable(None).netlink_flows() == [
        Flow(4, "TCP", CLIENT4, VIP4, 53882, 80, BACKEND1_4, 7070),
        Flow(4, "TCP", OUTSIDE4, NODE4, 41556, 30080, BACKEND1_4, 7070),
        Flow(4, "UDP", CLIENT4, BACKEND2_4, 4000, 53),
    ]


# --------------------------------------------------------------------------- the cut


def _ns(name: str) -> Raw:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {}}}


def _pod(name: str, node: str, ip4: str, ip6: str, app: str) -> Raw:
    host = {"n1": NODE4, "n2": "192.168.0.2"}[node]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "prod", "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        "status": {
            "phase": "Running",
            "hostIP": host,
            "podIP": ip4,
            "podIPs": [{"ip": ip4}, {"ip": ip6}],
        },
    }


def _policy(name: str, spec: Raw) -> Raw:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "prod"},
        "spec": spec,
    }


BASE: list[Raw] = [
    _ns("prod"),
    _pod("client", "n1", CLIENT4, CLIENT6, "client"),
    _pod("backend1", "n1", BACKEND1_4, BACKEND1_6, "backend"),
    _pod("backend2", "n2", BACKEND2_4, BACKEND2_6, "backend"),
]
DENY_BACKENDS = _policy(
    "backend-deny",
    {"podSelector": {"matchLabels": {"app": "backend"}}, "policyTypes": ["Ingress"]},
)
CLIENT_TO_BACKENDS = _policy(
    "client-egress",
    {
        "podSelector": {"matchLabels": {"app": "client"}},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [{"podSelector": {"matchLabels": {"app": "backend"}}}],
                "ports": [{"port": 7070, "protocol": "TCP"}],
            }
        ],
    },
)
BACKENDS_FROM_CLIENT = _policy(
    "backend-in",
    {
        "podSelector": {"matchLabels": {"app": "backend"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
    },
)


def _cut(
    docs: Sequence[Raw],
    *,
    pending: Iterable[str] = (),
    contested: tuple[str, ...] = (),
    involving: set[str] | None = None,
) -> list[tuple[str, str, int]]:
    """The cut of n1 over the real listings: the original (src, dst, dport) it deletes.

    On a fake kernel holding those flows and n1's addresses: the cut reads and
    deletes flows only, it never runs a tool.
    """
    result = parse_documents(list(docs))
    assert not result.errors
    compiled = compile_cluster(result.cluster)
    node = replace(compiled.node_rule_sets["n1"], contested_ips=contested)
    by_set = compiled.by_set()
    kernel = FakeKernel()
    kernel.conntrack = [*parse_conntrack_list(REAL_V4, 4), *parse_conntrack_list(REAL_V6, 6)]
    kernel.addresses = set(LOCAL)
    listed = list(kernel.conntrack)
    applier = Applier(kernel, tools=Tools("nft"), families=(4, 6), kernel=kernel)
    desired = applier.desire(node, {name: by_set[name] for name in node.peer_sets})
    desired = Desired(desired.node, desired.peer_sets, desired.rendered, frozenset(pending))
    count = applier.cut_denied_flows(desired, involving)
    deleted = [f for f in listed if f not in kernel.conntrack]
    assert count == len(deleted)
    assert not any(call.method == "run" for call in kernel.calls)
    return sorted((f.src, f.dst, f.dport) for f in deleted)


def test_a_clusterip_connection_to_a_denied_backend_is_cut() -> None:
    # (a) the client is selected by no policy and the ClusterIP is no pod: judged by
    # the original tuple, nothing here would even be a candidate. (c) the NodePort
    # connection's original destination is n1's own address, yet it crossed FORWARD.
    assert _cut([*BASE, DENY_BACKENDS]) == sorted(
        [
            (CLIENT4, VIP4, 80),  # to backend1 (deleted by the ClusterIP tuple)
            (OUTSIDE4, NODE4, 30080),  # NodePort to backend1
            (CLIENT6, VIP6, 80),
            (OUTSIDE6, NODE6, 30080),
        ]
    )
    # The connection to backend2 is n2's to judge (n2 sees it plain), the hairpin one
    # is backend1 reaching itself, the one to the host-network endpoint went to INPUT.


def test_an_allowed_connection_through_a_service_is_kept() -> None:
    # (b) the egress-isolated client may reach the backend pods, not the ClusterIP
    # address: judged at the backend, nothing is cut (and no NAT mapping is lost).
    # (c) its connection to the Service of a host-network endpoint (n1 itself) never
    # crossed FORWARD: not judged, although the client may not reach n1.
    # Only the UDP flow to port 4444, which the client's egress does not allow, goes.
    udp = [(CLIENT4, BACKEND2_4, 4444), (CLIENT6, BACKEND2_6, 4444)]
    assert _cut([*BASE, CLIENT_TO_BACKENDS]) == sorted(udp)
    # The outside host is no client: its NodePort connection to backend1 is cut.
    assert _cut([*BASE, CLIENT_TO_BACKENDS, BACKENDS_FROM_CLIENT]) == sorted(
        [*udp, (OUTSIDE4, NODE4, 30080), (OUTSIDE6, NODE6, 30080)]
    )


def test_involving_is_compared_with_what_forward_saw() -> None:
    docs = [*BASE, DENY_BACKENDS]
    assert _cut(docs, involving={VIP4, VIP6, NODE4}) == []
    assert _cut(docs, involving={OUTSIDE4}) == [(OUTSIDE4, NODE4, 30080)]
    assert _cut(docs, involving={BACKEND1_6}) == sorted(
        [(CLIENT6, VIP6, 80), (OUTSIDE6, NODE6, 30080)]
    )


def test_a_hairpin_connection_is_never_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    # (d) backend1 reaching itself through its Service: never cut, whatever the
    # evaluator would say of the pair (here one that denies everything).
    class DenyAll:
        def __init__(self, *args: object) -> None:
            pass

        def allows(self, src: str, dst: str, port: int, protocol: str) -> bool:
            assert src != dst, "a hairpin flow was judged"
            return False

    monkeypatch.setattr("stockade.agent.applier.NodeEvaluator", DenyAll)
    cut = _cut([*BASE, DENY_BACKENDS])
    assert (BACKEND1_4, HAIRPIN_VIP4, 80) not in cut
    assert ("fd00::1:21", "fd96::11", 80) not in cut
    assert (CLIENT4, HOST_VIP4, 80) not in cut  # n1's own address: INPUT, not FORWARD
    assert (CLIENT4, VIP4, 80) in cut


def test_pending_and_contested_pods_lose_even_their_hairpin() -> None:
    # STK-FORWARD drops pending (and contested) addresses before its src == dst
    # return, so the cut follows: a pending backend1 keeps nothing through FORWARD.
    everything_of_backend1 = sorted(
        [
            (BACKEND1_4, HAIRPIN_VIP4, 80),
            (CLIENT4, VIP4, 80),
            (OUTSIDE4, NODE4, 30080),
            (BACKEND1_6, "fd96::11", 80),
            (CLIENT6, VIP6, 80),
            (OUTSIDE6, NODE6, 30080),
        ]
    )
    assert _cut(BASE, pending={BACKEND1_4, BACKEND1_6}) == everything_of_backend1
    assert _cut(BASE, contested=(BACKEND1_4, BACKEND1_6)) == everything_of_backend1
    # no policy, nothing pending or contested: nothing is cut
    assert _cut(BASE) == []
