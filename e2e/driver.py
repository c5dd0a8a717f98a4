"""What the end-to-end scenarios need from a cluster, and an offline driver for CI.

:class:`ClusterDriver` is the contract every cluster driver implements: the engine
driver here (offline, the compiled rule sets judged by :class:`stockade.verdict.Dataplane`),
the sandbox driver (a whole cluster on one machine, real packets) and the kind driver
(a real cluster). The scenarios in :mod:`e2e.scenarios` run unchanged on each of
them; only the engine driver runs in every CI job, where it checks the hand-written
expectations against the engine in a few seconds. The other two check them against
packets.

A driver starts with the model of :mod:`e2e.cluster_model` in place (namespaces, pods, no
policy) and :meth:`ClusterDriver.reset` returns it there between scenarios.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Protocol, runtime_checkable

from e2e.cluster_model import NODES, kubelet_labels, model_objects, node_manifest
from stockade.cluster import Cluster, parse_documents
from stockade.compiler import Compiler
from stockade.model import NAMESPACE_NAME_LABEL, Pod
from stockade.verdict import Dataplane

Doc = dict[str, Any]
Matrix = dict[str, dict[str, bool]]


@runtime_checkable
class ClusterDriver(Protocol):
    """A cluster the scenarios can change and probe.

    Pods are named by key, ``ns/pod``. Every method that changes the cluster returns
    only once the change is *enforced* (the driver waits for the agents to report it
    applied, or polls until probes agree), so a probe right after it sees the new
    state. ``restart_agent``, ``restart_controller`` and ``add_node`` may raise
    :class:`NotImplementedError`; the scenarios that need them are skipped then.
    """

    @property
    def name(self) -> str:
        """A short name for messages: ``engine``, ``sandbox``, ``kind``."""
        ...

    def supports_protocol(self, protocol: str) -> bool:
        """Whether probes over ``protocol`` work here (SCTP is missing on some kernels)."""
        ...

    def reset(self) -> None:
        """Back to the model: no NetworkPolicy, model labels, model pods only."""
        ...

    def apply(self, objects: list[Doc]) -> None:
        """Create or update ``objects`` (as ``kubectl apply``); wait until enforced.

        Raises :class:`ValueError` when the cluster rejects an object.
        """
        ...

    def delete(self, objects: list[Doc]) -> None:
        """Delete ``objects`` (only kind, namespace and name are read); wait until enforced."""
        ...

    def matrix(self, port: int, protocol: str) -> Matrix:
        """Probe every ordered pair of pods: ``result[src][dst]``, keys ``ns/pod``.

        Holds at least the model's pods; a driver may add pods that scenarios created.
        """
        ...

    def probe(self, src: str, dst_ip: str, port: int, protocol: str) -> bool:
        """Whether pod ``src`` can open a connection to ``dst_ip`` on ``port``/``protocol``."""
        ...

    def external_hosts(self) -> dict[str, str]:
        """Hosts outside the cluster that answer on 80 and 81 (TCP and UDP): name -> IP.

        At least two, named ``ext-1`` and ``ext-2``.
        """
        ...

    def relabel_pod(self, key: str, labels: dict[str, str]) -> None:
        """Set pod ``key``'s labels to exactly ``labels``; wait until enforced."""
        ...

    def relabel_namespace(self, name: str, labels: dict[str, str]) -> None:
        """Set namespace ``name``'s labels to ``labels`` (the name label always stays)."""
        ...

    def recreate_pod(self, key: str) -> None:
        """Delete pod ``key`` and create it again as it was (labels included).

        The new pod reuses the old one's IP where the driver can choose it.
        """
        ...

    def pod_ip(self, key: str) -> str:
        """Pod ``key``'s (primary) IP."""
        ...

    def restart_agent(self, node: str) -> None:
        """Kill the agent of ``node`` and start it again; return once it runs again."""
        ...

    def restart_controller(self) -> None:
        """Kill the controller and start it again; return once it serves again."""
        ...

    def add_node(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Add a node ``name`` (with its agent) that pods can then be placed on.

        Its Node object carries ``labels`` besides the kubelet's own
        (``kubernetes.io/hostname``, ``kubernetes.io/os=linux``).
        """
        ...

    def relabel_node(self, name: str, labels: dict[str, str]) -> None:
        """Set node ``name``'s labels to ``labels`` (the kubelet's stay); wait until enforced."""
        ...

    def node_ip(self, name: str) -> str:
        """Node ``name``'s (primary) address: its Node's first ``InternalIP``.

        A host-network pod is at this address (:meth:`pod_ip` gives it too).
        """
        ...

    def close(self) -> None:
        """Release everything the driver created."""
        ...


class Flow(Protocol):
    """An established TCP connection a scenario keeps open across changes."""

    def exchange(self) -> bool:
        """Send a line and wait for its echo: whether the connection still carries data."""
        ...

    def close(self) -> None:
        """Close the connection (and whatever serves it)."""
        ...


@runtime_checkable
class FlowDriver(Protocol):
    """A driver that can hold connections open (optional: the scenarios that need it
    skip on a driver without :meth:`open_flow`)."""

    def open_flow(self, src: str, dst_ip: str, port: int) -> Flow:
        """Open a TCP connection from ``src`` (a pod key or ``node:<name>``) to
        ``dst_ip``:``port``, served by an echo server that keeps it open; raises
        :class:`AssertionError` when it cannot be opened (a denied connection)."""
        ...


class _EngineFlow:
    """A flow on the engine: established while allowed, cut once the rules deny it.

    The agents delete the conntrack entries of every flow the new rules forbid (the
    conntrack cut judges flows by the same tier logic as new connections), so on the
    engine an open flow carries data exactly while a new connection would be allowed.
    """

    def __init__(self, driver: EngineDriver, src: str, dst_ip: str, port: int) -> None:
        self._driver, self._src, self._dst_ip, self._port = driver, src, dst_ip, port
        self._cut = False

    def exchange(self) -> bool:
        """Alive while the rules allow it; once cut, never again."""
        if not self._cut and not self._driver.probe(self._src, self._dst_ip, self._port, "TCP"):
            self._cut = True
        return not self._cut

    def close(self) -> None:
        """Nothing to release."""


def _node_address(index: int) -> str:
    return f"172.31.255.{index}"


def _ref(doc: Doc) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return (str(doc.get("kind")), str(meta.get("namespace", "")), str(meta.get("name")))


class EngineDriver:
    """The cluster judged offline: stockade's compiled rule sets, no packets.

    Applied objects feed an incremental :class:`stockade.compiler.Compiler` in the
    order they arrive, as the controller's watch events would, and every probe is
    answered by :class:`stockade.verdict.Dataplane` over its result (the model of
    the agents' FORWARD hooks). ``restart_controller`` throws that compiler away and
    compiles the whole cluster afresh, as a restarted controller does from a full
    list. There are no agents to restart: ``restart_agent`` raises
    :class:`NotImplementedError`.

    Addresses: node ``node-N`` is 172.31.255.N (as in the sandbox) and its pods are
    10.244.N.10 upwards, in the order they are first created; a recreated pod keeps
    its IP; a host-network pod is at its node's address. The external hosts are
    203.0.113.10 (``ext-1``) and 203.0.113.11 (``ext-2``), plain addresses outside
    the cluster.

    Nodes are Node objects (labels ``kubernetes.io/hostname``,
    ``kubernetes.io/os=linux`` and any given; ``status.addresses`` its InternalIP
    and Hostname), fed to the compiler like every other object, so ``nodes`` peers
    of ClusterNetworkPolicies select them. Applying a Node that does not exist adds
    it; applying an existing one sets its labels (the kubelet's stay).
    """

    EXTERNAL_HOSTS: ClassVar[dict[str, str]] = {"ext-1": "203.0.113.10", "ext-2": "203.0.113.11"}

    def __init__(self, shard_size: int = 2) -> None:
        # Small shards, so that peer sets of the model span several shards and the
        # scenarios exercise sharding too.
        self._shard_size = shard_size
        self._docs: dict[tuple[str, str, str], Doc] = {}
        self._nodes: dict[str, int] = {}
        self._ips: dict[str, str] = {}
        self._next_host: dict[str, int] = {}
        self._compiler = Compiler(shard_size)
        self._dataplane: Dataplane | None = None
        self.reset()

    # ------------------------------------------------------------------ lifecycle

    @property
    def name(self) -> str:
        """``engine``."""
        return "engine"

    def supports_protocol(self, protocol: str) -> bool:
        """Every protocol: nothing is sent."""
        return protocol in ("TCP", "UDP", "SCTP")

    def reset(self) -> None:
        """A fresh compiler over the model; addresses stay as first assigned."""
        self._docs.clear()
        self._compiler = Compiler(self._shard_size)
        self._nodes = {}
        self._dataplane = None
        self.apply([node_manifest(node) for node in NODES])
        self.apply(model_objects())

    def close(self) -> None:
        """Nothing to release."""

    # ------------------------------------------------------------------ changes

    def apply(self, objects: list[Doc]) -> None:
        """Validate (as the API server would) and upsert each object in order."""
        for raw in objects:
            doc = copy.deepcopy(raw)
            kind, namespace, name = _ref(doc)
            if kind == "Pod":
                self._place_pod(doc)
            elif kind == "Namespace":
                labels = doc.setdefault("metadata", {}).setdefault("labels", {})
                labels[NAMESPACE_NAME_LABEL] = name
            elif kind == "Node":
                self._place_node(doc)
            result = parse_documents([doc])
            if result.errors:
                raise ValueError("; ".join(str(e) for e in result.errors))
            self._docs[(kind, namespace, name)] = doc
            self._compiler.upsert(result.objects[0])
        self._settle()

    def delete(self, objects: list[Doc]) -> None:
        """Delete each object; deleting one that does not exist is an error."""
        for raw in objects:
            kind, namespace, name = _ref(raw)
            if kind == "Node" and any(
                (d.get("spec") or {}).get("nodeName") == name
                for k, d in self._docs.items()
                if k[0] == "Pod"
            ):
                raise ValueError(f"node {name} still has pods")
            if self._docs.pop((kind, namespace, name), None) is None:
                raise LookupError(f"{kind} {namespace}/{name} does not exist")
            if kind == "Node":
                self._nodes.pop(name, None)
            self._compiler.delete(kind, f"{namespace}/{name}" if namespace else name)
        self._settle()

    def relabel_pod(self, key: str, labels: dict[str, str]) -> None:
        """Replace pod ``key``'s labels."""
        doc = self._pod_doc(key)
        doc["metadata"]["labels"] = dict(labels)
        self.apply([doc])

    def relabel_namespace(self, name: str, labels: dict[str, str]) -> None:
        """Replace namespace ``name``'s labels (its name label stays)."""
        doc = copy.deepcopy(self._docs[("Namespace", "", name)])
        doc["metadata"]["labels"] = dict(labels)
        self.apply([doc])

    def recreate_pod(self, key: str) -> None:
        """Delete pod ``key`` and create it again with the same IP."""
        doc = self._pod_doc(key)
        self.delete([doc])
        self.apply([doc])

    def restart_agent(self, node: str) -> None:
        """No agents here."""
        raise NotImplementedError("the engine driver has no agents to restart")

    def restart_controller(self) -> None:
        """Compile everything afresh, as a restarted controller does from a full list."""
        self._compiler = Compiler(self._shard_size)
        for obj in self._cluster().objects():
            self._compiler.upsert(obj)
        self._settle()

    def add_node(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Add node ``name`` (a Node object with ``labels``); its pods get 10.244.N.x."""
        if name in self._nodes:
            raise ValueError(f"node {name} exists")
        self.apply([node_manifest(name, labels)])

    def relabel_node(self, name: str, labels: dict[str, str]) -> None:
        """Set the Node's labels (the kubelet's stay)."""
        if name not in self._nodes:
            raise LookupError(f"no node {name}")
        self.apply([node_manifest(name, labels)])

    def node_ip(self, name: str) -> str:
        """172.31.255.N for node ``node-N`` (the N-th node declared)."""
        return _node_address(self._nodes[name])

    # ------------------------------------------------------------------ probes

    def matrix(self, port: int, protocol: str) -> Matrix:
        """Every ordered pair of active pods, as the dataplane model judges it."""
        return self._plane().matrix(port, protocol)

    def probe(self, src: str, dst_ip: str, port: int, protocol: str) -> bool:
        """Pod ``src`` (or node ``node:<name>``, from its address) to an address (a
        pod's, a node's or an outside host's)."""
        plane = self._plane()
        if src.startswith("node:"):
            return plane.verdict(self.node_ip(src[5:]), dst_ip, port, protocol).allowed
        return plane.verdict(self._pod(plane, src), dst_ip, port, protocol).allowed

    def open_flow(self, src: str, dst_ip: str, port: int) -> Flow:
        """A flow that lives while the rules allow it (see :class:`_EngineFlow`)."""
        if not self.probe(src, dst_ip, port, "TCP"):
            raise AssertionError(f"{src} -> {dst_ip} TCP {port}: denied, no flow to open")
        return _EngineFlow(self, src, dst_ip, port)

    def external_hosts(self) -> dict[str, str]:
        """``ext-1`` and ``ext-2`` in TEST-NET-3."""
        return dict(self.EXTERNAL_HOSTS)

    def pod_ip(self, key: str) -> str:
        """The IP assigned to pod ``key``."""
        return self._ips[key]

    # ------------------------------------------------------------------ internals

    def _place_node(self, doc: Doc) -> None:
        """A Node as its kubelet keeps it: the kubelet's labels, its addresses."""
        meta = doc.setdefault("metadata", {})
        name = str(meta.get("name"))
        index = self._nodes.get(name) or max(self._nodes.values(), default=0) + 1
        labels = meta.get("labels") or {}
        meta["labels"] = {**labels, **kubelet_labels(name)}
        doc["status"] = {
            "addresses": [
                {"type": "InternalIP", "address": _node_address(index)},
                {"type": "Hostname", "address": name},
            ]
        }
        self._nodes[name] = index

    def _place_pod(self, doc: Doc) -> None:
        meta, spec = doc["metadata"], doc.setdefault("spec", {})
        key = f"{meta.get('namespace', 'default')}/{meta['name']}"
        node = spec.get("nodeName")
        if node not in self._nodes:
            raise ValueError(f"pod {key}: unknown node {node!r}")
        host_ip = _node_address(self._nodes[node])
        if spec.get("hostNetwork") is True:
            # On the host network: at the node's address, never a pod address.
            self._ips[key] = host_ip
        elif key not in self._ips or self._ips[key] == host_ip:
            host = self._next_host.get(node, 10)
            self._next_host[node] = host + 1
            self._ips[key] = f"10.244.{self._nodes[node]}.{host}"
        ip = self._ips[key]
        doc["status"] = {
            "phase": "Running",
            "hostIP": host_ip,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
        }

    def _pod_doc(self, key: str) -> Doc:
        namespace, name = key.split("/")
        return copy.deepcopy(self._docs[("Pod", namespace, name)])

    def _cluster(self) -> Cluster:
        result = parse_documents(list(self._docs.values()))
        assert not result.errors, result.errors
        return result.cluster

    def _settle(self) -> None:
        self._compiler.flush()
        self._dataplane = None

    def _plane(self) -> Dataplane:
        if self._dataplane is None:
            self._dataplane = Dataplane(self._cluster(), self._compiler.result())
        return self._dataplane

    @staticmethod
    def _pod(plane: Dataplane, key: str) -> Pod:
        return plane.cluster.pods[key]
