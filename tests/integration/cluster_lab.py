"""A cluster's YAML turned into a netlab lab that the real agent enforces.

:class:`ClusterLab` builds, inside a :class:`~stockade_lab.netlab.Lab`, the nodes ``n1``
(10.0.1.0/24, fd00::1:0/112) and ``n2`` (10.0.2.0/24, fd00::2:0/112) on a fabric
of 192.168.0.0/24 and fd01::/64 (so the nodes' own addresses are 192.168.0.1 and
192.168.0.2, the ``hostIP`` the random clusters of ``tests/unit/strategies.py``
use), outside hosts, and one pod namespace per active pod of the cluster at its
``status.podIPs``. Every pod, node and outside host answers on the same ports
(:data:`SERVE_PORTS` plus the pod's declared container ports), so a probe's answer
depends on policy only.

:meth:`ClusterLab.set_cluster` compiles the cluster with ``compile_cluster`` and
applies every node's NodeRuleSet (with its PeerSets) through an
:class:`~stockade.agent.applier.Applier` bound to the node's namespace;
:meth:`ClusterLab.differences` probes every pair with real packets and lists where
the kernel disagrees with the engine's prediction (``Dataplane.verdict``).

Nothing here touches the host's namespace: every applier and executor is given the
node's namespace, and every probe runs between lab namespaces.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stockade.agent.applier import Applier, ApplyReport
from stockade.agent.backend import Backend, Tools
from stockade.agent.executor import SubprocessExecutor
from stockade.cluster import Cluster, parse_documents
from stockade.compiler import CompiledCluster, compile_cluster
from stockade.model import Pod
from stockade.ruleset import NodeRuleSet, PeerSet
from stockade.verdict import Dataplane, Verdict
from stockade_lab.netlab import Host, Lab, Node, Place, PodNet

Raw = dict[str, Any]
Bundle = tuple[NodeRuleSet, dict[str, tuple[PeerSet, ...]]]

FABRIC4 = "192.168.0.0/24"
FABRIC6 = "fd01::/64"
NODES: Mapping[str, tuple[str, str]] = {
    "n1": ("10.0.1.0/24", "fd00::1:0/112"),
    "n2": ("10.0.2.0/24", "fd00::2:0/112"),
}
NODE_IPS: Mapping[str, tuple[str, str]] = {
    "n1": ("192.168.0.1", "fd01::1"),
    "n2": ("192.168.0.2", "fd01::2"),
}
EXTERNALS: Mapping[str, tuple[str, str | None]] = {
    "x1": ("203.0.113.7", "2001:db8::7"),
    # (netlab cannot add an IPv4-only outside host once nodes have IPv6 pod CIDRs)
    "x2": ("198.51.100.9", "2001:db8:5::9"),
}
SERVE_PORTS: tuple[tuple[int, str], ...] = tuple(
    (port, proto) for port in (53, 80, 85, 90, 5353, 8080, 9090) for proto in ("TCP", "UDP")
)
TIMEOUT = 0.4
"""Probe timeout: allowed probes answer in milliseconds, a DROP is a timeout."""


# --------------------------------------------------------------------------- documents


def ns_doc(name: str, **labels: str) -> Raw:
    """A Namespace object."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod_doc(
    namespace: str,
    name: str,
    node: str,
    ip4: str,
    ip6: str | None = None,
    labels: Mapping[str, str] | None = None,
    ports: Sequence[tuple[str, int, str]] = (),
) -> Raw:
    """A running Pod on ``node`` at ``ip4`` (and ``ip6``); ports are (name, number, proto)."""
    status: Raw = {"phase": "Running", "hostIP": NODE_IPS[node][0], "podIP": ip4}
    if ip6 is not None:
        status["podIPs"] = [{"ip": ip4}, {"ip": ip6}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"name": n, "containerPort": number, "protocol": proto}
                        for n, number, proto in ports
                    ],
                }
            ],
        },
        "status": status,
    }


def yaml_docs(text: str) -> list[Raw]:
    """The documents of a YAML text (empty ones dropped)."""
    return [d for d in yaml.safe_load_all(text) if d is not None]


# --------------------------------------------------------------------------- state dumps

_COUNTERS = re.compile(r"\[\d+:\d+\]")


def normalised_save(text: str) -> list[str]:
    """``*-save`` output without comment lines and with counters zeroed."""
    return [_COUNTERS.sub("[0:0]", line) for line in text.splitlines() if not line.startswith("#")]


def save_all(lab: Lab, where: Place) -> dict[str, list[str]]:
    """iptables-save of both families and both backends, and ``ipset save``, normalised."""
    out: dict[str, list[str]] = {}
    for tool in (
        "iptables-nft-save",
        "ip6tables-nft-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ):
        out[tool] = normalised_save(lab.run(where, [tool]).stdout)
    out["ipset"] = lab.run(where, ["ipset", "save"]).stdout.splitlines()
    return out


def foreign_lines(state: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """A :func:`save_all` dump without anything stockade owns (``STK-``, ``stk-``)."""
    return {
        key: [line for line in lines if "STK-" not in line and " stk-" not in line]
        for key, lines in state.items()
    }


# --------------------------------------------------------------------------- the lab


@dataclass(frozen=True)
class Endpoint:
    """Something that sends and answers probes: a pod, a node or an outside host."""

    label: str
    place: Place
    ip4: str | None
    ip6: str | None
    pod: Pod | None = None

    def ip(self, family: int) -> str | None:
        """Its address of ``family``, if any."""
        return self.ip4 if family == 4 else self.ip6


class ClusterLab:
    """Nodes, outside hosts and pods of a cluster in ``lab``, enforced by real appliers."""

    def __init__(
        self,
        lab: Lab,
        backend: Backend,
        *,
        cut_conntrack: bool = True,
        externals: Mapping[str, tuple[str, str | None]] = EXTERNALS,
    ) -> None:
        self.lab = lab
        self.backend: Backend = backend
        self.tools = Tools(backend)
        self.nodes: dict[str, Node] = {}
        for name, (cidr4, cidr6) in NODES.items():
            node = lab.add_node(name, pod_cidr4=cidr4, pod_cidr6=cidr6)
            assert (node.fabric_ip4, node.fabric_ip6) == NODE_IPS[name], "fabric addressing"
            lab.serve(node, SERVE_PORTS, reply=name)
            self.nodes[name] = node
        self.externals: dict[str, Host] = {}
        for name, (ip4, ip6) in externals.items():
            host = lab.add_external(name, ip4, ip6)
            lab.serve(host, SERVE_PORTS, reply=name)
            self.externals[name] = host
        self.appliers = {
            name: self.new_applier(name, cut_conntrack=cut_conntrack) for name in self.nodes
        }
        self.pods: dict[str, PodNet] = {}
        self.cluster = Cluster()
        self.compiled = compile_cluster(self.cluster)

    # ----------------------------------------------------------------- the agent

    def new_applier(self, node: str, *, cut_conntrack: bool = True) -> Applier:
        """An applier (and executor) bound to ``node``'s namespace, never the host's."""
        ns = self.nodes[node].ns
        return Applier(
            SubprocessExecutor(netns=ns), netns=ns, tools=self.tools, cut_conntrack=cut_conntrack
        )

    def executor(self, node: str) -> SubprocessExecutor:
        """The subprocess executor of ``node``'s applier."""
        ex = self.appliers[node].executor
        assert isinstance(ex, SubprocessExecutor)
        return ex

    def bundle(self, node: str, compiled: CompiledCluster | None = None) -> Bundle:
        """``node``'s rule set (empty when no pod runs there) and the PeerSets it names."""
        compiled = compiled or self.compiled
        rules = compiled.node_rule_sets.get(node) or NodeRuleSet(node, (), (), ())
        by_set = compiled.by_set()
        return rules, {name: by_set[name] for name in rules.peer_sets}

    def set_cluster(self, docs: Iterable[Raw], *, strict: bool = True) -> dict[str, ApplyReport]:
        """Make the lab's pods match ``docs``, compile, and apply every node's rule set.

        ``strict``: every document must parse (scenarios); random clusters pass
        False, and rejected policies then enforce nothing, as in the engine.
        """
        result = parse_documents(list(docs))
        if strict and result.errors:
            raise AssertionError("; ".join(line for e in result.errors for line in e.lines()))
        self.cluster = result.cluster
        self._sync_pods()
        self.compiled = compile_cluster(self.cluster)
        return {name: self.apply(name) for name in self.nodes}

    def apply(self, node: str) -> ApplyReport:
        """Apply ``node``'s current bundle with its applier."""
        return self.appliers[node].apply(*self.bundle(node))

    def verify(self) -> dict[str, list[str]]:
        """Each node's differences from its last applied state (empty when in sync)."""
        found = {name: a.verify() for name, a in self.appliers.items()}
        return {name: diffs for name, diffs in found.items() if diffs}

    def cleanup(self) -> None:
        """Remove stockade's chains and sets from every node."""
        for applier in self.appliers.values():
            applier.cleanup()

    def iptables(self, node: str, family: int, *args: str) -> str:
        """Run the backend's ``iptables`` (or ``ip6tables``) in ``node``'s namespace."""
        tool = f"{'iptables' if family == 4 else 'ip6tables'}-{self.backend}"
        return self.lab.run(self.nodes[node], [tool, *args]).stdout

    def save(self, node: str, family: int) -> str:
        """``iptables-save`` (``ip6tables-save``) of the backend in ``node``'s namespace."""
        return self.lab.run(self.nodes[node], [self.tools.save(family)]).stdout

    # ----------------------------------------------------------------- pods

    @staticmethod
    def lab_name(pod: Pod) -> str:
        """The lab's name for a pod (namespace names allow no ``/``)."""
        return f"{pod.namespace}.{pod.name}"

    def _wanted(self) -> dict[str, Pod]:
        return {p.key: p for p in self.cluster.active_pods() if not p.host_network}

    def _sync_pods(self) -> None:
        wanted = self._wanted()
        for key in list(self.pods):
            pod = wanted.get(key)
            net = self.pods[key]
            if pod is None or (net.ip4, net.ip6) != _ips(pod) or net.node.name != pod.node_name:
                self.lab.remove_pod(net)
                del self.pods[key]
        for key, pod in wanted.items():
            if key in self.pods:
                continue
            ip4, ip6 = _ips(pod)
            if ip4 is None:
                raise AssertionError(f"pod {key}: the lab needs an IPv4 address")
            net = self.lab.add_pod(self.nodes[pod.node_name], self.lab_name(pod), ip4, ip6)
            declared = {(p.port, p.protocol) for p in pod.ports if p.protocol != "SCTP"}
            self.lab.serve(net, sorted(set(SERVE_PORTS) | declared), reply=key)
            self.pods[key] = net

    def pod(self, key: str) -> PodNet:
        """The lab pod of ``namespace/name``."""
        return self.pods[key]

    # ----------------------------------------------------------------- probing

    def endpoints(self, *, nodes: bool = True, externals: bool = True) -> list[Endpoint]:
        """Every pod in the lab, and optionally the nodes and outside hosts."""
        pods = self._wanted()
        out = [
            Endpoint(key, net, net.ip4, net.ip6, pods[key])
            for key, net in sorted(self.pods.items())
        ]
        if nodes:
            # IPv4 only: the engine knows a node's address from the pods' status.hostIP,
            # which is IPv4 here (the model reads no status.hostIPs), so it would take
            # a node's IPv6 address for an outside one and deny what is own-node traffic.
            out += [Endpoint(n, v, v.fabric_ip4, None) for n, v in self.nodes.items()]
        if externals:
            out += [Endpoint(n, h, h.ip4, h.ip6) for n, h in self.externals.items()]
        return out

    def predict(self, src: Endpoint, dst: Endpoint, port: int, proto: str, family: int) -> Verdict:
        """The engine's verdict for a probe from ``src`` to ``dst``."""
        plane = Dataplane(self.cluster)
        s: Pod | str = src.pod if src.pod is not None else str(src.ip(family))
        d: Pod | str = dst.pod if dst.pod is not None else str(dst.ip(family))
        return plane.verdict(s, d, port, proto, family)

    def differences(
        self,
        port: int,
        proto: str,
        family: int = 4,
        *,
        nodes: bool = True,
        externals: bool = True,
        only: Sequence[str] | None = None,
        timeout: float = TIMEOUT,
    ) -> list[str]:
        """Every ordered pair (with at least one pod) where the kernel and the engine differ.

        ``only`` restricts the pairs to those with an end among these labels.
        """
        plane = Dataplane(self.cluster)
        eps = self.endpoints(nodes=nodes, externals=externals)
        pairs: list[tuple[Endpoint, Endpoint, bool]] = []
        probes: list[tuple[Place, str, int, str]] = []
        for src in eps:
            for dst in eps:
                if src.pod is None and dst.pod is None:
                    continue
                if only is not None and src.label not in only and dst.label not in only:
                    continue
                s_ip, d_ip = src.ip(family), dst.ip(family)
                s: Pod | str = src.pod if src.pod is not None else str(s_ip)
                d: Pod | str = dst.pod if dst.pod is not None else str(d_ip)
                if s_ip is None or d_ip is None:
                    expected = False  # no path in this family
                else:
                    expected = plane.verdict(s, d, port, proto, family).allowed
                    probes.append((src.place, d_ip, port, proto))
                pairs.append((src, dst, expected))
        answers = iter(self.lab.probe_many(probes, timeout=timeout, workers=128))
        out: list[str] = []
        for src, dst, expected in pairs:
            if src.ip(family) is None or dst.ip(family) is None:
                continue
            observed = next(answers)
            if observed != expected:
                v = self.predict(src, dst, port, proto, family)
                why = v.note or f"egress={v.egress} ingress={v.ingress}"
                out.append(
                    f"{src.label} -> {dst.label} ({dst.ip(family)}) {port}/{proto}: "
                    f"kernel {'ALLOWS' if observed else 'DENIES'}, engine "
                    f"{'allows' if expected else 'denies'} ({why})"
                )
        return out

    def expected(self, src: str, dst: str, port: int, proto: str, family: int = 4) -> bool:
        """The engine's verdict between two endpoints named by label."""
        eps = {e.label: e for e in self.endpoints()}
        return self.predict(eps[src], eps[dst], port, proto, family).allowed


def _ips(pod: Pod) -> tuple[str | None, str | None]:
    ip4 = next((ip for ip in pod.ips if ipaddress.ip_address(ip).version == 4), None)
    ip6 = next((ip for ip in pod.ips if ipaddress.ip_address(ip).version == 6), None)
    return ip4, ip6


# --------------------------------------------------------------------------- long-lived flows


def connect(lab: Lab, where: Place, ip: str, port: int, timeout: float = TIMEOUT) -> socket.socket:
    """A TCP connection opened from ``where`` (the caller closes it)."""
    with lab.in_netns(where):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect((ip, port))
    return sock


def exchange(sock: socket.socket, payload: bytes, timeout: float = TIMEOUT) -> bytes | None:
    """Send ``payload`` on an open connection; the echo, or None when none comes in time."""
    sock.settimeout(timeout)
    try:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(4096)
            if not chunk:
                return None
            got += chunk
    except OSError:
        return None
    return got


def run_agent(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``stockade-agent`` (the installed console script) with ``args``."""
    exe = Path(sys.executable).with_name("stockade-agent")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=120, check=False
    )
