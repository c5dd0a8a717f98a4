"""The kubelet stand-in: Pod objects become pod namespaces that answer on their ports.

It runs in the supervisor's event loop (so the pods' server threads live as long as
the sandbox) and watches every Pod:

- a pod without ``spec.nodeName`` is scheduled round-robin over the sandbox's nodes
  (a merge patch of ``spec.nodeName``), as kube-scheduler would;
- a pod on a sandbox node gets a namespace behind a veth into that node
  (:meth:`stockade_lab.netlab.Lab.add_pod`) with an IP of the node's pod CIDR: the one
  asked for in the ``sandbox.stockade.dev/pod-ip`` annotation (``stockade sandbox
  apply`` sets it from a manifest's ``status.podIP``, which the API server drops on
  create) or in ``status.podIP`` when free, else the most recently freed address of
  the node, else the next unused one. With ``--dual-stack`` the IPv6 address has
  the same host part in the node's IPv6 CIDR;
- it answers on every declared container port (TCP and UDP as declared, SCTP where
  the kernel has it) plus the sandbox's default ports (80 and 81, TCP and UDP, as
  the upstream network-policy e2e pods do), with the pod's ``ns/name`` as reply;
- its status is written through the status subresource: ``podIP``, ``podIPs``,
  ``hostIP``, ``hostIPs``, phase ``Running``, conditions ``Ready`` and friends;
- a host-network pod (``spec.hostNetwork: true``) gets no namespace of its own: its
  servers run in its node's namespace, on its declared ports (TCP and UDP; the reply
  is the pod's ``ns/name``), beside the node's own servers on the default ports; its
  ``podIP(s)`` are the node's addresses, so it is probed there, and probes from it
  start in the node's namespace (from the node's address, through OUTPUT). Its
  servers stop when it is deleted (a port two host-network pods of one node declare
  is served by the first, then by the other once the first is gone);
- a deleted pod's namespace is removed and its IP freed for reuse.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stockade.kube import PODS, Gone, KubeClient, KubeError, now_rfc3339
from stockade_lab.netlab import Lab, Node, PodNet, Server
from stockade_lab.sandbox.common import IP_ANNOTATION, JsonObject, object_key

log = logging.getLogger("stockade_lab.sandbox.kubelet")

InLab = Callable[..., Awaitable[Any]]


class Pool:
    """A node's pod addresses: freed ones are handed out again first."""

    def __init__(self, cidr: ipaddress.IPv4Network) -> None:
        self.cidr = cidr
        self.taken: set[int] = set()
        self.freed: list[int] = []
        self.next = 2

    def take(self, wanted: str | None) -> int:
        if wanted:
            try:
                addr = ipaddress.IPv4Address(wanted)
            except ValueError:
                addr = None
            if addr is not None and addr in self.cidr:
                offset = int(addr) - int(self.cidr.network_address)
                if 1 < offset < self.cidr.num_addresses - 1 and offset not in self.taken:
                    self.taken.add(offset)
                    if offset in self.freed:
                        self.freed.remove(offset)
                    return offset
            log.warning("pod IP %s is not free in %s; allocating another", wanted, self.cidr)
        while self.freed:
            offset = self.freed.pop()
            if offset not in self.taken:
                self.taken.add(offset)
                return offset
        while self.next < self.cidr.num_addresses - 1:
            offset = self.next
            self.next += 1
            if offset not in self.taken:
                self.taken.add(offset)
                return offset
        raise RuntimeError(f"no free address left in {self.cidr}")

    def release(self, offset: int) -> None:
        if offset in self.taken:
            self.taken.discard(offset)
            self.freed.append(offset)


@dataclass
class RunningPod:
    """A pod the stand-in started."""

    key: str
    uid: str
    node: str
    ns: str
    ips: list[str]
    host_network: bool
    serving: list[tuple[int, str]]
    net: PodNet | None = None
    offset: int | None = None
    status: JsonObject = field(default_factory=dict)
    declared: list[tuple[int, str]] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    """A host-network pod's servers in its node's namespace (its declared ports)."""


class Kubelet:
    """Watches Pods; makes, serves and removes their namespaces; writes their status."""

    def __init__(
        self,
        client: KubeClient,
        lab: Lab,
        in_lab: InLab,
        serve_ports: Sequence[int],
        dual_stack: bool,
    ) -> None:
        self.client = client
        self.lab = lab
        self.in_lab = in_lab
        self.serve_ports = tuple(serve_ports)
        self.dual_stack = dual_stack
        self.nodes: dict[str, Node] = {}
        self.pools: dict[str, Pool] = {}
        self.running: dict[str, RunningPod] = {}
        # What each node's namespace answers on: port -> who serves it ("" the node
        # itself, on the default ports; else the host-network pod's key).
        self.node_servers: dict[str, dict[tuple[int, str], str]] = {}
        self.rr = 0
        self.counter = 0
        self.warned: set[str] = set()

    def add_node(self, node: Node) -> None:
        self.nodes[node.name] = node
        self.pools[node.name] = Pool(node.pod_cidr4)
        self.node_servers[node.name] = {
            (p, proto): "" for p in self.serve_ports for proto in ("TCP", "UDP", "SCTP")
        }

    def _node_serving(self, node: str) -> list[tuple[int, str]]:
        return sorted(
            p for p in self.node_servers.get(node, {}) if p[1] != "SCTP" or self.lab.has_sctp
        )

    def namespace_of(self, source: str) -> str | None:
        """The namespace a probe from ``source`` starts in (pod key, node:, external:)."""
        if source.startswith("node:"):
            node = self.nodes.get(source[5:])
            return node.ns if node else None
        if source.startswith("external:"):
            host = self.lab.externals.get(source[9:])
            return host.ns if host else None
        pod = self.running.get(source)
        return pod.ns if pod else None

    def describe(self) -> dict[str, Any]:
        return {
            key: {
                "node": p.node,
                "ns": p.ns,
                "ips": p.ips,
                "hostNetwork": p.host_network,
                "serving": [
                    list(s) for s in (self._node_serving(p.node) if p.host_network else p.serving)
                ],
            }
            for key, p in sorted(self.running.items())
        }

    # ------------------------------------------------------------------ watching

    async def run(self) -> None:
        while True:
            try:
                items, version = await self.client.list(PODS)
                await self.resync(items)
                async for kind, obj in self.client.watch(PODS, version, timeout_seconds=120):
                    if kind == "DELETED":
                        await self.removed(obj)
                    elif kind in ("ADDED", "MODIFIED"):
                        await self.seen(obj)
            except asyncio.CancelledError:
                raise
            except Gone:
                continue
            except KubeError as exc:
                log.warning("pod watch: %s; again in 0.5 s", exc)
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("kubelet stand-in failed; again in 0.5 s")
                await asyncio.sleep(0.5)

    async def resync(self, items: list[JsonObject]) -> None:
        present = {object_key(o): _uid(o) for o in items}
        for key, pod in list(self.running.items()):
            if present.get(key) != pod.uid:
                await self.stop_pod(pod)
        for obj in items:
            await self.seen(obj)

    async def removed(self, obj: JsonObject) -> None:
        pod = self.running.get(object_key(obj))
        if pod is not None and pod.uid == _uid(obj):
            await self.stop_pod(pod)

    async def seen(self, obj: JsonObject) -> None:
        key, uid = object_key(obj), _uid(obj)
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        current = self.running.get(key)
        if current is not None and current.uid != uid:
            await self.stop_pod(current)
            current = None
        if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
            if current is not None:
                await self.stop_pod(current)
            return
        if current is not None:
            if status.get("podIP") != current.ips[0] or status.get("phase") != "Running":
                await self.write_status(current, obj)
            return
        node_name = spec.get("nodeName")
        if not node_name:
            if not self.nodes:
                return
            names = sorted(self.nodes)
            node_name = names[self.rr % len(names)]
            self.rr += 1
            try:
                await self.client.patch_merge(
                    PODS, meta["name"], {"spec": {"nodeName": node_name}}, meta.get("namespace")
                )
            except KubeError as exc:
                log.warning("could not schedule %s: %s", key, exc)
            return  # the MODIFIED event with the node brings it back here
        node = self.nodes.get(node_name)
        if node is None:
            if key not in self.warned:
                self.warned.add(key)
                log.warning("pod %s is on %s, which is not a sandbox node", key, node_name)
            return
        try:
            pod = await self.start_pod(key, uid, node, spec, meta, status)
        except Exception:
            log.exception("could not start pod %s", key)
            return
        self.running[key] = pod
        await self.write_status(pod, obj)

    # ------------------------------------------------------------------ pods

    def _ports(self, spec: JsonObject) -> list[tuple[int, str]]:
        ports: set[tuple[int, str]] = set()
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            for port in container.get("ports") or []:
                number = port.get("containerPort")
                if isinstance(number, int) and 1 <= number <= 65535:
                    ports.add((number, str(port.get("protocol") or "TCP").upper()))
        return sorted(ports)

    async def start_pod(
        self,
        key: str,
        uid: str,
        node: Node,
        spec: JsonObject,
        meta: JsonObject,
        status: JsonObject,
    ) -> RunningPod:
        declared = self._ports(spec)
        if spec.get("hostNetwork"):
            ips = [node.fabric_ip4] + ([node.fabric_ip6] if self.dual_stack else [])
            pod = RunningPod(key, uid, node.name, node.ns, ips, True, [], declared=declared)
            await self._serve_host_ports(pod)
            pod.serving = self._node_serving(node.name)
            return pod
        wanted = (meta.get("annotations") or {}).get(IP_ANNOTATION) or status.get("podIP")
        pool = self.pools[node.name]
        offset = pool.take(wanted)
        ip4 = str(node.pod_cidr4[offset])
        ip6 = str(node.pod_cidr6[offset]) if node.pod_cidr6 is not None else None
        self.counter += 1
        name = key.replace("/", ".")
        if len(name) > 50 or name in self.lab.pods:
            name = f"pod{self.counter}"
        try:
            net: PodNet = await self.in_lab(lambda: self.lab.add_pod(node, name, ip4, ip6))
        except Exception:
            pool.release(offset)
            raise
        ports = sorted(
            {
                *declared,
                *((p, proto) for p in self.serve_ports for proto in ("TCP", "UDP", "SCTP")),
            }
        )
        ports = [p for p in ports if p[1] in ("TCP", "UDP", "SCTP")]
        server: Server = await self.in_lab(lambda: self.lab.serve(net, ports, reply=key))
        del server
        serving = [p for p in ports if p[1] != "SCTP" or self.lab.has_sctp]
        ips = [ip4] + ([ip6] if ip6 else [])
        return RunningPod(key, uid, node.name, net.ns, ips, False, serving, net, offset)

    async def _serve_host_ports(self, pod: RunningPod) -> None:
        """Serve the host-network pod's declared ports nobody serves on its node yet."""
        served = self.node_servers[pod.node]
        free = [p for p in pod.declared if p not in served and p[1] in ("TCP", "UDP", "SCTP")]
        if not free:
            return
        node = self.nodes[pod.node]
        server: Server = await self.in_lab(lambda: self.lab.serve(node, free, reply=pod.key))
        pod.servers.append(server)
        for port in free:
            served[port] = pod.key

    async def _stop_host_ports(self, pod: RunningPod) -> None:
        """Stop a host-network pod's servers; another one's declared ports take over."""
        for server in pod.servers:
            try:
                await self.in_lab(self.lab.unserve, server)
            except Exception:
                log.exception("could not stop the servers of %s", pod.key)
        pod.servers.clear()
        served = self.node_servers.get(pod.node, {})
        for port in [p for p, owner in served.items() if owner == pod.key]:
            del served[port]
        for other in list(self.running.values()):
            if other.host_network and other.node == pod.node and other is not pod:
                await self._serve_host_ports(other)

    async def stop_pod(self, pod: RunningPod) -> None:
        self.running.pop(pod.key, None)
        if pod.host_network:
            await self._stop_host_ports(pod)
        if pod.net is not None:
            try:
                await self.in_lab(self.lab.remove_pod, pod.net)
            except Exception:
                log.exception("could not remove pod %s", pod.key)
        if pod.offset is not None:
            self.pools[pod.node].release(pod.offset)
        log.info("stopped pod %s", pod.key)

    async def write_status(self, pod: RunningPod, obj: JsonObject) -> None:
        meta = obj.get("metadata") or {}
        node = self.nodes[pod.node]
        stamp = now_rfc3339()
        host_ips = [node.fabric_ip4] + ([node.fabric_ip6] if self.dual_stack else [])
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": stamp}
            for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")
        ]
        conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp})
        status = {
            "phase": "Running",
            "podIP": pod.ips[0],
            "podIPs": [{"ip": ip} for ip in pod.ips],
            "hostIP": host_ips[0],
            "hostIPs": [{"ip": ip} for ip in host_ips],
            "startTime": stamp,
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": c.get("name", "c"),
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": stamp}},
                }
                for c in (obj.get("spec") or {}).get("containers") or []
            ],
        }
        try:
            await self.client.patch_status(PODS, meta["name"], status, meta.get("namespace"))
        except KubeError as exc:
            log.warning("could not write the status of %s: %s", pod.key, exc)
        else:
            log.info("pod %s runs on %s at %s", pod.key, pod.node, ", ".join(pod.ips))


def _uid(obj: JsonObject) -> str:
    return str((obj.get("metadata") or {}).get("uid", ""))
