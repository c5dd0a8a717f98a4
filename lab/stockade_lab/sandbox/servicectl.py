"""Services in the sandbox: the EndpointSlice controller and kube-proxy, as stand-ins.

Test equipment, run by the supervisor beside the kubelet stand-in. One task watches
Pods, Services and EndpointSlices; after each burst of changes it

1. writes the EndpointSlices of every Service with a selector from the pods it
   selects (:func:`stockade.services.desired_slices`, the upstream controller's job),
   creating, updating and deleting only slices it manages;
2. programs every node's namespace the way kube-proxy's iptables mode does
   (:mod:`stockade_lab.sandbox.kubeproxy`), one ``iptables-restore --noflush`` per family
   that names only ``KUBE-*`` chains, then the jump rules kube-proxy prepends when
   they are missing.

``digest`` is what the last completed sync saw of the API (the resource versions of
every Service and EndpointSlice); the sandbox's convergence check compares it with
the API's, so a probe right after ``apply`` never races kube-proxy.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stockade.agent.backend import Backend, Tools
from stockade.agent.executor import CommandError, SubprocessExecutor
from stockade.errors import InvalidObjectError
from stockade.kube import ENDPOINT_SLICES, PODS, SERVICES, Gone, KubeClient, KubeError, Resource
from stockade.model import Pod, parse_pod
from stockade.services import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    EndpointSlice,
    Service,
    desired_slices,
    parse_endpoint_slice,
    parse_service,
)
from stockade_lab.sandbox.common import JsonObject, object_key
from stockade_lab.sandbox.kubeproxy import (
    JUMPS,
    ProxyNode,
    ProxyRules,
    live_kube_chains,
    render_proxy,
    restore_text,
)

log = logging.getLogger("stockade_lab.sandbox.services")

DEBOUNCE = 0.02


def content_digest(services: Iterable[JsonObject], slices: Iterable[JsonObject]) -> str:
    """A digest of which Service and EndpointSlice versions exist (the convergence mark)."""
    marks = sorted(
        f"{kind}/{object_key(o)}@{(o.get('metadata') or {}).get('resourceVersion')}"
        for kind, objs in (("svc", services), ("eps", slices))
        for o in objs
    )
    return hashlib.sha256("\n".join(marks).encode()).hexdigest()[:16]


@dataclass
class ProxiedNode:
    """A node the kube-proxy stand-in programs: its namespace and what it applied last."""

    name: str
    ns: str
    # family -> the tables last written (kube-proxy rewrites only on a change)
    applied: dict[int, dict[str, dict[str, list[str]]]] = field(default_factory=dict)


class IptablesRunner:
    """Runs the backend's tools inside a node's namespace (the agent's executor)."""

    def __init__(self, backend: Backend) -> None:
        self.tools = Tools(backend)
        self.backend = backend

    def binary(self, family: int) -> str:
        """``iptables-nft`` or ``ip6tables-legacy``, ..."""
        return f"{'iptables' if family == 4 else 'ip6tables'}-{self.backend}"

    def save(self, ns: str, family: int) -> str:
        """``iptables-save`` of the namespace (every table)."""
        return SubprocessExecutor(netns=ns).run([self.tools.save(family)])

    def apply(self, ns: str, family: int, rules: ProxyRules) -> str:
        """Write ``rules``: one atomic restore of kube-proxy's chains, then the jumps."""
        live = live_kube_chains(self.save(ns, family))
        text = restore_text(rules, live)
        SubprocessExecutor(netns=ns).run([self.tools.restore(family), "--noflush", "-w", "5"], text)
        self.ensure_jumps(ns, family)
        return text

    def ensure_jumps(self, ns: str, family: int) -> None:
        """kube-proxy's ``EnsureRule(Prepend)``: insert at the top when missing, else leave."""
        ex = SubprocessExecutor(netns=ns)
        for jump in JUMPS:
            base = [self.binary(family), "-w", "5", "-t", jump.table]
            try:
                ex.run([*base, "-C", jump.chain, *jump.args])
            except CommandError:  # missing: prepend it
                ex.run([*base, "-I", jump.chain, "1", *jump.args])


class ServiceStandIns:
    """Keeps EndpointSlices and every node's kube-proxy rules in step with the API."""

    KINDS: tuple[tuple[Resource, str], ...] = (
        (PODS, "pods"),
        (SERVICES, "services"),
        (ENDPOINT_SLICES, "slices"),
    )

    def __init__(
        self,
        client: KubeClient,
        backend: Backend,
        cluster_cidrs: Mapping[int, str],
        families: tuple[int, ...],
    ) -> None:
        self.client = client
        self.runner = IptablesRunner(backend)
        self.cluster_cidrs = dict(cluster_cidrs)
        self.families = families
        self.nodes: dict[str, ProxiedNode] = {}
        self.objects: dict[str, dict[str, JsonObject]] = {"pods": {}, "services": {}, "slices": {}}
        self.versions: dict[str, str] = {}
        self.lock = asyncio.Lock()
        self.dirty = asyncio.Event()
        self.digest = ""
        self.syncs = 0
        self.warned: set[str] = set()

    def add_node(self, name: str, ns: str) -> None:
        """Program this node too (at the next sync, which this schedules)."""
        self.nodes[name] = ProxiedNode(name, ns)
        self.dirty.set()

    def describe(self) -> dict[str, Any]:
        """For ``stockade sandbox status``: the convergence mark and what runs."""
        return {"digest": self.digest, "syncs": self.syncs, "nodes": sorted(self.nodes)}

    # ------------------------------------------------------------------ watching

    async def start(self) -> None:
        """List the three kinds once, so the first :meth:`sync` sees the whole API."""
        for resource, kind in self.KINDS:
            self.versions[kind] = await self._list(resource, kind)

    async def run(self) -> None:
        """Watch the three kinds and sync after each burst of changes, until cancelled."""
        watchers = [asyncio.create_task(self._watch(r, k)) for r, k in self.KINDS]
        try:
            while True:
                await self.dirty.wait()
                await asyncio.sleep(DEBOUNCE)
                self.dirty.clear()
                try:
                    await self.sync()
                except Exception:
                    log.exception("service stand-ins: sync failed; again in 0.5 s")
                    await asyncio.sleep(0.5)
                    self.dirty.set()
        finally:
            for task in watchers:
                task.cancel()

    async def _list(self, resource: Resource, kind: str) -> str:
        items, version = await self.client.list(resource)
        store = self.objects[kind]
        store.clear()
        store.update({object_key(o): o for o in items})
        self.dirty.set()
        return version

    async def _watch(self, resource: Resource, kind: str) -> None:
        store = self.objects[kind]
        version = self.versions.get(kind, "")
        while True:
            try:
                if not version:
                    version = await self._list(resource, kind)
                async for event, obj in self.client.watch(resource, version, timeout_seconds=120):
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event == "DELETED":
                        store.pop(object_key(obj), None)
                    elif event in ("ADDED", "MODIFIED"):
                        store[object_key(obj)] = obj
                    else:
                        continue
                    self.dirty.set()
            except asyncio.CancelledError:
                raise
            except Gone:
                version = ""
                continue
            except KubeError as exc:
                log.warning("%s watch: %s; again in 0.5 s", kind, exc)
                version = ""
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ syncing

    def _parsed(self) -> tuple[list[Pod], list[Service], list[EndpointSlice]]:
        pods: list[Pod] = []
        for obj in self.objects["pods"].values():
            try:
                pods.append(parse_pod(obj))
            except InvalidObjectError:
                continue  # an unreadable pod is no endpoint
        services: list[Service] = []
        for key, obj in self.objects["services"].items():
            try:
                services.append(parse_service(obj))
            except InvalidObjectError as exc:
                if key not in self.warned:
                    self.warned.add(key)
                    log.warning("ignoring service: %s", exc)
        slices: list[EndpointSlice] = []
        for obj in self.objects["slices"].values():
            try:
                slices.append(parse_endpoint_slice(obj))
            except InvalidObjectError:
                continue
        return pods, services, slices

    async def sync(self) -> None:
        """One pass: EndpointSlices first, then every node's rules from what the API holds."""
        async with self.lock:
            await self._sync()

    async def _sync(self) -> None:
        seen = content_digest(self.objects["services"].values(), self.objects["slices"].values())
        pods, services, slices = self._parsed()
        # Slices written now come back through the watch and are programmed by the
        # next pass; this one programs what the API held when it started.
        await self._write_slices(pods, services)
        loop = asyncio.get_running_loop()
        for node in list(self.nodes.values()):
            for family in self.families:
                proxy_node = ProxyNode(node.name, family, self.cluster_cidrs[family])
                rules = render_proxy(proxy_node, services, slices)
                if node.applied.get(family) == rules.tables:
                    continue
                await loop.run_in_executor(None, self.runner.apply, node.ns, family, rules)
                node.applied[family] = rules.tables
        self.digest = seen
        self.syncs += 1

    async def _write_slices(self, pods: list[Pod], services: list[Service]) -> int:
        """Create, update and delete managed slices; returns how many writes were made."""
        managed: dict[str, JsonObject] = {
            key: obj
            for key, obj in self.objects["slices"].items()
            if ((obj.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
        }
        desired: dict[str, JsonObject] = {}
        for service in services:
            if service.selector is None:
                continue  # endpoints of a selector-less Service are someone else's
            for body in desired_slices(service, pods):
                desired[f"{service.namespace}/{body['metadata']['name']}"] = body
        writes = 0
        for key, body in desired.items():
            current = managed.get(key)
            if current is not None and _same_slice(current, body):
                continue
            namespace = body["metadata"]["namespace"]
            try:
                if current is None:
                    await self.client.create(ENDPOINT_SLICES, body, namespace)
                else:
                    body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
                    await self.client.replace(
                        ENDPOINT_SLICES, body["metadata"]["name"], body, namespace
                    )
                writes += 1
            except KubeError as exc:
                log.warning("endpointslice %s: %s", key, exc)
        for key, obj in managed.items():
            if key in desired:
                continue
            meta = obj.get("metadata") or {}
            try:
                await self.client.delete(ENDPOINT_SLICES, meta["name"], meta.get("namespace"))
                writes += 1
            except KubeError as exc:
                log.warning("endpointslice %s: %s", key, exc)
        return writes


def _same_slice(current: JsonObject, body: JsonObject) -> bool:
    labels = (current.get("metadata") or {}).get("labels") or {}
    return bool(
        current.get("addressType") == body["addressType"]
        and (current.get("endpoints") or []) == body["endpoints"]
        and (current.get("ports") or []) == body["ports"]
        and labels.get(SERVICE_NAME_LABEL) == body["metadata"]["labels"][SERVICE_NAME_LABEL]
    )
