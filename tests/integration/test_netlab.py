"""The network lab: namespaces for nodes, pods and outside hosts, with real packets.

Every test here needs root; nothing is created in the host's own namespace (one test
compares the host's links, addresses, routes and forwarding switches before and
after a whole lab's life).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade_lab import netlab
from stockade_lab.netlab import Host, Lab, MissingFeatureError, Node, PodNet

pytestmark = pytest.mark.root

T = 0.5  # probe timeout: everything here answers in milliseconds
PORTS = [(80, "TCP"), (53, "UDP"), (8080, "TCP"), (132, "SCTP")]


class Cluster:
    """A lab with two dual-stack nodes, two pods on each, and one outside host."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.a: Node = lab.add_node("a", pod_cidr4="10.244.1.0/24", pod_cidr6="fd00:244:1::/64")
        self.b: Node = lab.add_node("b", pod_cidr4="10.244.2.0/24", pod_cidr6="fd00:244:2::/64")
        self.a1: PodNet = lab.add_pod(self.a, "a1", "10.244.1.11", "fd00:244:1::11")
        self.a2: PodNet = lab.add_pod(self.a, "a2", "10.244.1.12", "fd00:244:1::12")
        self.b1: PodNet = lab.add_pod(self.b, "b1", "10.244.2.11", "fd00:244:2::11")
        self.b2: PodNet = lab.add_pod(self.b, "b2", "10.244.2.12")  # IPv4 only
        self.ext: Host = lab.add_external("inet", "203.0.113.10", "2001:db8::10")
        for place in (self.a1, self.a2, self.b1, self.b2, self.ext, self.a):
            lab.serve(place, PORTS)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Lab() as lab:
        yield Cluster(lab)


def _lab_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.startswith("stk-")}


def test_pod_to_pod_on_one_node(cluster: Cluster) -> None:
    lab = cluster.lab
    assert lab.ask(cluster.a1, cluster.a2.ip4, 80, "TCP", T) == "a2"
    assert lab.ask(cluster.a2, cluster.a1.ip4, 53, "UDP", T) == "a1"
    assert lab.probe(cluster.a1, cluster.a2.ip4, 8080, "TCP", T)


def test_pod_to_pod_across_nodes(cluster: Cluster) -> None:
    lab = cluster.lab
    assert lab.ask(cluster.a1, cluster.b1.ip4, 80, "TCP", T) == "b1"
    assert lab.ask(cluster.b2, cluster.a2.ip4, 53, "UDP", T) == "a2"


def test_ipv6_on_one_node_and_across(cluster: Cluster) -> None:
    lab = cluster.lab
    assert cluster.a1.ip6
    assert cluster.a2.ip6
    assert cluster.b1.ip6
    assert lab.ask(cluster.a1, cluster.a2.ip6, 80, "TCP", T) == "a2"
    assert lab.ask(cluster.a1, cluster.b1.ip6, 80, "TCP", T) == "b1"
    assert lab.ask(cluster.b1, cluster.a1.ip6, 53, "UDP", T) == "a1"


def test_pod_to_external_host_and_back(cluster: Cluster) -> None:
    lab, ext = cluster.lab, cluster.ext
    assert ext.ip6
    assert lab.ask(cluster.a1, ext.ip4, 80, "TCP", T) == "inet"
    assert lab.ask(cluster.b2, ext.ip4, 53, "UDP", T) == "inet"
    assert lab.ask(cluster.b1, ext.ip6, 80, "TCP", T) == "inet"
    assert lab.ask(ext, cluster.a2.ip4, 80, "TCP", T) == "a2"
    assert lab.ask(ext, cluster.b1.ip4, 53, "UDP", T) == "b1"


def test_external_sees_the_pod_address(cluster: Cluster) -> None:
    # nothing is masqueraded: an outside peer sees the pod's own address
    lab = cluster.lab
    with lab.in_netns(cluster.ext):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        listener.bind((cluster.ext.ip4, 9999))
        listener.listen(1)
        listener.settimeout(T)
        with lab.in_netns(cluster.b1):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with client:
            client.settimeout(T)
            client.connect((cluster.ext.ip4, 9999))
            conn, peer = listener.accept()
            conn.close()
    assert peer[0] == cluster.b1.ip4


def test_pod_to_node_and_node_to_pod(cluster: Cluster) -> None:
    lab, a = cluster.lab, cluster.a
    assert lab.ask(cluster.a1, a.fabric_ip4, 80, "TCP", T) == "a"
    assert lab.ask(cluster.b1, a.fabric_ip6, 53, "UDP", T) == "a"  # from another node's pod
    assert lab.ask(a, cluster.a1.ip4, 80, "TCP", T) == "a1"
    assert lab.ask(a, cluster.b2.ip4, 53, "UDP", T) == "b2"


def test_closed_port_is_false_quickly(cluster: Cluster) -> None:
    lab = cluster.lab
    start = time.monotonic()
    assert not lab.probe(cluster.a1, cluster.b1.ip4, 81, "TCP", 2.0)  # RST
    assert not lab.probe(cluster.a1, cluster.b1.ip4, 54, "UDP", 2.0)  # ICMP port unreachable
    assert cluster.b1.ip6
    assert not lab.probe(cluster.a1, cluster.b1.ip6, 81, "TCP", 2.0)
    assert time.monotonic() - start < 1.0


def test_unknown_address_is_false(cluster: Cluster) -> None:
    lab = cluster.lab
    start = time.monotonic()
    # in a node's pod CIDR, but no pod: the node has no route and says so
    assert not lab.probe(cluster.a1, "10.244.2.99", 80, "TCP", T)
    # outside everything: no route anywhere, never leaves the lab
    assert not lab.probe(cluster.a1, "192.0.2.1", 80, "TCP", T)
    assert time.monotonic() - start < 2 * T + 0.5


def test_probe_many_in_parallel(cluster: Cluster) -> None:
    lab = cluster.lab
    pods = [cluster.a1, cluster.a2, cluster.b1, cluster.b2]
    probes: list[tuple[netlab.Place, str, int, str]] = [
        (src, dst.ip4, port, proto)
        for src in pods
        for dst in pods
        for port, proto in ((80, "TCP"), (53, "UDP"))
    ]
    probes.append((cluster.a1, cluster.b1.ip4, 81, "TCP"))
    start = time.monotonic()
    result = lab.probe_many(probes, timeout=T)
    assert result == [True] * (len(probes) - 1) + [False]
    assert time.monotonic() - start < 2.0


def test_sctp_is_probed(cluster: Cluster) -> None:
    lab = cluster.lab
    if not lab.has_sctp:
        with pytest.raises(MissingFeatureError) as info:
            lab.probe(cluster.a1, cluster.a2.ip4, 132, "SCTP", T)
        assert info.value.feature == "sctp"
        pytest.skip("the kernel has no SCTP sockets (feature: sctp)")
    assert lab.ask(cluster.a1, cluster.b1.ip4, 132, "SCTP", T) == "b1"


def test_in_netns_switches_only_the_calling_thread(cluster: Cluster) -> None:
    home = os.stat("/proc/thread-self/ns/net").st_ino
    target = os.stat(f"/run/netns/{cluster.a1.ns}").st_ino
    with cluster.lab.in_netns(cluster.a1):
        assert os.stat("/proc/thread-self/ns/net").st_ino == target
        assert os.stat("/proc/self/ns/net").st_ino in (home, target)
    assert os.stat("/proc/thread-self/ns/net").st_ino == home
    with pytest.raises(RuntimeError), cluster.lab.in_netns(cluster.a1):
        raise RuntimeError("boom")
    assert os.stat("/proc/thread-self/ns/net").st_ino == home


def test_run_in_namespace(cluster: Cluster) -> None:
    out = cluster.lab.run(cluster.a1, ["ip", "-o", "addr", "show", "dev", "eth0"]).stdout
    assert "10.244.1.11/32" in out
    assert "fd00:244:1::11/128" in out
    routes = cluster.lab.run(cluster.a, ["ip", "route"]).stdout
    assert "10.244.2.0/24 via 172.31.255.2 dev eth0" in routes
    assert "10.244.1.11 dev pv1" in routes
    proc = cluster.lab.run(cluster.a1, ["cat"], input="hello")
    assert proc.stdout == "hello"
    assert cluster.lab.run(cluster.a1, ["false"], check=False).returncode == 1
    with pytest.raises(netlab.NetlabError):
        cluster.lab.run(cluster.a1, ["false"])


def test_invalid_requests_are_refused(cluster: Cluster) -> None:
    lab = cluster.lab
    with pytest.raises(ValueError, match="outside"):
        lab.add_pod(cluster.a, "bad", "10.244.2.50")
    with pytest.raises(ValueError, match="taken"):
        lab.add_pod(cluster.a, "dup", cluster.a1.ip4)
    with pytest.raises(ValueError, match="name"):
        lab.add_pod(cluster.a, "no/slash", "10.244.1.60")
    with pytest.raises(ValueError, match="overlap"):
        lab.add_node("c", pod_cidr4="10.244.1.128/25")


def test_pod_traffic_crosses_the_node_forward_chain() -> None:
    # what stockade hooks: a DROP in the node's FORWARD chain (inside the node's
    # namespace, never the host's) cuts pod-to-pod traffic on the node, both families,
    # while the node itself still reaches the pod (OUTPUT, not FORWARD)
    if shutil.which("iptables") is None or shutil.which("ip6tables") is None:
        pytest.skip("iptables is not installed")
    with Lab() as lab:
        node = lab.add_node("n", pod_cidr4="10.244.1.0/24", pod_cidr6="fd00:244:1::/64")
        p1 = lab.add_pod(node, "p1", "10.244.1.2", "fd00:244:1::2")
        p2 = lab.add_pod(node, "p2", "10.244.1.3", "fd00:244:1::3")
        assert p2.ip6
        lab.serve(p2, [(80, "TCP")])
        assert lab.probe_many([(p1, p2.ip4, 80, "TCP"), (p1, p2.ip6, 80, "TCP")], T) == [True] * 2
        lab.run(node, ["iptables", "-A", "FORWARD", "-d", p2.ip4, "-j", "DROP"])
        lab.run(node, ["ip6tables", "-A", "FORWARD", "-d", p2.ip6, "-j", "DROP"])
        assert lab.probe_many([(p1, p2.ip4, 80, "TCP"), (p1, p2.ip6, 80, "TCP")], T) == [False] * 2
        assert lab.probe(node, p2.ip4, 80, "TCP", T)


def test_remove_pod_and_add_it_again() -> None:
    with Lab() as lab:
        node = lab.add_node("n", pod_cidr4="10.244.1.0/24")
        p1 = lab.add_pod(node, "p1", "10.244.1.2")
        p2 = lab.add_pod(node, "p2", "10.244.1.3")
        lab.serve(p2, [(80, "TCP")])
        assert lab.probe(p1, p2.ip4, 80, "TCP", T)
        lab.remove_pod(p2)
        assert p2.ns not in _lab_namespaces()
        assert "pv2" not in lab.run(node, ["ip", "-o", "link"]).stdout
        assert not lab.probe(p1, p2.ip4, 80, "TCP", T)
        again = lab.add_pod(node, "p2", "10.244.1.3")
        lab.serve(again, [(80, "TCP")], reply="back")
        assert lab.ask(p1, again.ip4, 80, "TCP", T) == "back"


def test_many_pods_are_quick_to_set_up() -> None:
    with Lab() as lab:
        nodes = [
            lab.add_node(f"n{i}", pod_cidr4=f"10.244.{i}.0/24", pod_cidr6=f"fd00:244:{i}::/64")
            for i in (1, 2)
        ]
        start = time.monotonic()
        pods = [
            lab.add_pod(
                nodes[i % 2],
                f"p{i}",
                f"10.244.{i % 2 + 1}.{10 + i}",
                f"fd00:244:{i % 2 + 1}::{10 + i}",
            )
            for i in range(20)
        ]
        per_pod = (time.monotonic() - start) / len(pods)
        for pod in pods:
            lab.serve(pod, [(80, "TCP"), (53, "UDP")])
        probes: list[tuple[netlab.Place, str, int, str]] = []
        for src in pods:
            for dst in pods:
                assert dst.ip6
                probes += [(src, dst.ip4, 80, "TCP"), (src, dst.ip6, 53, "UDP")]
        assert all(lab.probe_many(probes, timeout=1.0))
    print(f"netlab: {per_pod * 1000:.1f} ms per pod")
    assert per_pod < 0.25


def test_close_leaves_no_namespace_and_no_record() -> None:
    lab = Lab()
    try:
        node = lab.add_node("n", pod_cidr4="10.244.1.0/24")
        pod = lab.add_pod(node, "p", "10.244.1.2")
        lab.add_external("x", "198.51.100.7")
        lab.serve(pod, [(80, "TCP"), (53, "UDP")])
        made = set(lab.namespaces)
        assert made <= _lab_namespaces()
        assert len(made) == 4
    finally:
        lab.close()
    assert not {ns for ns in _lab_namespaces() if ns.startswith(f"stk-{lab.run_id}-")}
    assert not (netlab.RECORD_DIR / f"{lab.run_id}.json").exists()
    lab.close()  # idempotent


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _fake_run(run_id: str, pid: int, start: int | None) -> str:
    netlab.RECORD_DIR.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "start": start, "pidns": os.stat("/proc/self/ns/pid").st_ino}
    (netlab.RECORD_DIR / f"{run_id}.json").write_text(json.dumps(record))
    ns = f"stk-{run_id}-n-x"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    return ns


def test_leftovers_of_a_dead_run_are_cleaned() -> None:
    ns = _fake_run("deadbeef", _dead_pid(), 12345)
    try:
        removed = netlab.cleanup_leftovers()
        assert ns in removed
        assert ns not in _lab_namespaces()
        assert not (netlab.RECORD_DIR / "deadbeef.json").exists()
    finally:
        if Path(f"/run/netns/{ns}").exists():
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_a_killed_run_is_cleaned_at_the_next_start() -> None:
    script = (
        "import time\n"
        "from stockade_lab.netlab import Lab\n"
        "lab = Lab()\n"
        "node = lab.add_node('n', pod_cidr4='10.244.1.0/24')\n"
        "lab.add_pod(node, 'p', '10.244.1.2')\n"
        "print(lab.run_id, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert run_id
        theirs = {ns for ns in _lab_namespaces() if ns.startswith(f"stk-{run_id}-")}
        assert len(theirs) == 3
        assert not set(netlab.cleanup_leftovers()) & theirs  # still alive: kept
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    with Lab() as lab:  # a new lab cleans up first
        assert not {ns for ns in _lab_namespaces() if ns.startswith(f"stk-{run_id}-")}
        assert not (netlab.RECORD_DIR / f"{run_id}.json").exists()
        assert lab.run_id != run_id


def test_a_live_run_and_an_unowned_namespace_are_kept() -> None:
    me = os.getpid()
    start = int(Path(f"/proc/{me}/stat").read_text().rsplit(")", 1)[1].split()[19])
    live = _fake_run("a1ive", me, start)
    unowned = "stk-n0record-n-x"
    subprocess.run(["ip", "netns", "add", unowned], check=True)
    try:
        removed = netlab.cleanup_leftovers()
        assert live not in removed
        assert unowned not in removed
        assert {live, unowned} <= _lab_namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", live], check=False)
        subprocess.run(["ip", "netns", "del", unowned], check=False)
        (netlab.RECORD_DIR / "a1ive.json").unlink(missing_ok=True)


def _host_state() -> dict[str, str]:
    """Read-only views of the host namespace's network configuration."""
    commands = {
        "link": ["ip", "-o", "link"],
        "addr": ["ip", "-o", "addr"],
        "route": ["ip", "route", "show", "table", "all"],
        "route6": ["ip", "-6", "route", "show", "table", "all"],
        "rule": ["ip", "rule"],
    }
    state = {
        key: subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        for key, argv in commands.items()
    }
    for key in ("ipv4/ip_forward", "ipv6/conf/all/forwarding", "ipv4/conf/all/proxy_arp"):
        state[key] = Path("/proc/sys/net", key).read_text()
    return state


def test_the_host_namespace_is_untouched() -> None:
    before = _host_state()
    with Lab() as lab:
        node = lab.add_node("n", pod_cidr4="10.244.1.0/24", pod_cidr6="fd00:244:1::/64")
        pod = lab.add_pod(node, "p", "10.244.1.2", "fd00:244:1::2")
        ext = lab.add_external("x", "203.0.113.20", "2001:db8::20")
        lab.serve(ext, [(80, "TCP")])
        assert lab.probe(pod, ext.ip4, 80, "TCP", T)
        during = _host_state()
    after = _host_state()
    assert during == before
    assert after == before
