"""The scenarios on the sandbox: real namespaces, real processes, real packets.

A thin adapter from :class:`e2e.driver.ClusterDriver` to
:class:`stockade_lab.sandbox.api.Sandbox`: every change goes through the API server
emulator and returns once every node's agent enforces it (the sandbox's converged
check), and every probe is a real connection between network namespaces.
"""

from __future__ import annotations

import copy
import os
import socket
from typing import Any

from e2e.cluster_model import (
    NAMESPACES,
    NODES,
    POD_KEYS,
    PORTS,
    kubelet_labels,
    model_objects,
    port_name,
)
from e2e.flows import TcpFlow
from stockade_lab.netlab import EchoServer
from stockade_lab.sandbox.api import Sandbox

Doc = dict[str, Any]
Matrix = dict[str, dict[str, bool]]

SANDBOX_NAME = "e2e"
EXTERNAL_HOSTS = {"ext-1": "203.0.113.10", "ext-2": "203.0.113.11"}
# Through Services, every model pod has its own, selecting it by this label (which
# the driver keeps on the pod whatever labels a scenario gives it), as the upstream
# suite gives every pod a Service and connects to its cluster IP.
SERVICE_LABEL = "e2e.stockade.dev/service"
VIA = ("pod", "service")
# Kinds reset() deletes: every policy a scenario applied.
POLICY_KINDS = ("NetworkPolicy", "ClusterNetworkPolicy", "IsolationPolicy")


def _kernel_has_sctp() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        return False
    return True


def _key(doc: Doc) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return (str(doc.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


def service_name(key: str) -> str:
    """The Service of model pod ``ns/pod``: ``s-<ns>-<pod>``, in the pod's namespace."""
    namespace, pod = key.split("/")
    return f"s-{namespace}-{pod}"


def service_manifest(key: str, protocols: tuple[str, ...]) -> Doc:
    """A ClusterIP Service for one model pod: each port by its named target port."""
    namespace, _ = key.split("/")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(key), "namespace": namespace},
        "spec": {
            "selector": {SERVICE_LABEL: service_name(key)},
            "ports": [
                {
                    "name": f"service-port-{proto.lower()}-{port}",
                    "port": port,
                    "protocol": proto,
                    # The container port's name: the backend's number comes from it.
                    "targetPort": port_name(port, proto),
                }
                for port in PORTS
                for proto in protocols
            ],
        },
    }


class SandboxDriver:
    """:class:`e2e.driver.ClusterDriver` over a running :class:`Sandbox`.

    ``via="service"``: matrices connect to each destination pod's Service cluster IP
    (kube-proxy's DNAT in every node, then stockade's FORWARD), and an answer counts
    only when it comes from that pod.
    """

    def __init__(self, sandbox: Sandbox, via: str = "pod") -> None:
        if via not in VIA:
            raise ValueError(f"via must be one of {VIA}, got {via!r}")
        self.sandbox = sandbox
        self.via = via
        self._sctp = _kernel_has_sctp()
        self._docs: dict[tuple[str, str, str], Doc] = {}
        self._model_keys = {_key(d) for d in model_objects(sctp=self._sctp)}
        self._cluster_ips: dict[str, str] = {}
        self._echo: dict[tuple[str, int], EchoServer] = {}

    @property
    def name(self) -> str:
        """``sandbox`` (``sandbox-via-service`` through Services)."""
        return "sandbox" if self.via == "pod" else "sandbox-via-service"

    def supports_protocol(self, protocol: str) -> bool:
        """TCP and UDP always; SCTP when this kernel has SCTP sockets."""
        return protocol in ("TCP", "UDP") or (protocol == "SCTP" and self._sctp)

    def reset(self) -> None:
        """Delete every policy and extra pod; the model's labels come back.

        Nodes get the kubelet's labels only; nodes added by a scenario stay (a sandbox
        node lives until ``down``), with no pod on them.
        """
        self._close_echo_servers()
        extra = [
            doc
            for key, doc in self._docs.items()
            if key[0] in POLICY_KINDS or (key[0] == "Pod" and key not in self._model_keys)
        ]
        if extra:
            self.delete(extra)
        for node in self.sandbox.api.list("Node"):
            meta = node.get("metadata") or {}
            name = str(meta.get("name"))
            if (meta.get("labels") or {}) != kubelet_labels(name):
                self.sandbox.label_node(name, {}, wait=False)
        self.apply(model_objects(sctp=self._sctp))
        if self.via == "service" and not self._cluster_ips:
            protocols = ("TCP", "UDP", "SCTP") if self._sctp else ("TCP", "UDP")
            self.sandbox.apply([service_manifest(key, protocols) for key in POD_KEYS])
            for key in POD_KEYS:
                namespace, _ = key.split("/")
                svc = self.sandbox.api.get("Service", service_name(key), namespace)
                ip = ((svc or {}).get("spec") or {}).get("clusterIP")
                if not ip or ip == "None":
                    raise AssertionError(f"service {namespace}/{service_name(key)} has no IP")
                self._cluster_ips[key] = ip

    def close(self) -> None:
        """Take the sandbox down."""
        self._close_echo_servers()
        self.sandbox.down()

    def _close_echo_servers(self) -> None:
        for server in self._echo.values():
            server.close()
        self._echo.clear()

    def apply(self, objects: list[Doc]) -> None:
        """Create or update through the API; return once every node enforces it.

        A Node that is not there yet becomes a new sandbox node (namespace, agent);
        an existing Node gets the labels of the document (the kubelet's stay).
        """
        docs = [copy.deepcopy(d) for d in objects]
        for doc in docs:
            if doc.get("kind") == "Namespace":
                labels = doc.setdefault("metadata", {}).setdefault("labels", {})
                labels["kubernetes.io/metadata.name"] = doc["metadata"]["name"]
            if self.via == "service" and _key(doc) in self._model_keys and doc["kind"] == "Pod":
                meta = doc["metadata"]
                key = f"{meta['namespace']}/{meta['name']}"
                meta.setdefault("labels", {})[SERVICE_LABEL] = service_name(key)
        self.sandbox.apply(docs)
        for doc in docs:
            self._docs[_key(doc)] = doc

    def delete(self, objects: list[Doc]) -> None:
        """Delete through the API; return once gone and enforced."""
        self.sandbox.delete([copy.deepcopy(d) for d in objects])
        for doc in objects:
            self._docs.pop(_key(doc), None)

    def matrix(self, port: int, protocol: str) -> Matrix:
        """Real probes between every ordered pair of pods.

        Raises when a cell could not be measured (None): unknown is not denied.
        """
        if self.via == "service":
            return self._matrix_via_services(port, protocol)
        report = self.sandbox.measure_matrix(port, protocol)
        if report.unknown:
            raise AssertionError(f"{protocol} {port}: {report.why()}")
        return {
            src: {dst: ok is True for dst, ok in row.items()} for src, row in report.matrix.items()
        }

    def _matrix_via_services(self, port: int, protocol: str) -> Matrix:
        """Every model pod to every model pod's cluster IP; the answer must name the pod."""
        if port not in PORTS:
            raise AssertionError(f"the model's Services carry ports {PORTS}, not {port}")
        jobs = [(s, self._cluster_ips[d], port, protocol) for s in POD_KEYS for d in POD_KEYS]
        answers = iter(self.sandbox.probe_replies(jobs))
        matrix: Matrix = {}
        for src in POD_KEYS:
            matrix[src] = {}
            for dst in POD_KEYS:
                ok, reply = next(answers)
                if ok is None:
                    raise AssertionError(f"{src} -> service of {dst} {protocol} {port}: unknown")
                if ok and reply != dst:
                    raise AssertionError(
                        f"{src} -> service of {dst} {protocol} {port}: answered by {reply!r}"
                    )
                matrix[src][dst] = bool(ok)
        return matrix

    def probe(self, src: str, dst_ip: str, port: int, protocol: str) -> bool:
        """One real connection attempt from pod ``src``; raises if it could not be made."""
        (result,), (reason,) = self.sandbox.probe_explained([(src, dst_ip, port, protocol)])
        if result is None:
            raise AssertionError(f"{src} -> {dst_ip} {protocol} {port} not measured: {reason}")
        return result

    def open_flow(self, src: str, dst_ip: str, port: int) -> TcpFlow:
        """A real TCP connection from ``src`` (pod key or ``node:<name>``) to an echo
        server on ``dst_ip``:``port``, started in the namespace that owns ``dst_ip`` (a
        pod's, or a node's); it stays open until cut or closed."""
        where = (self._namespace_at(dst_ip), port)
        if where not in self._echo:
            # One server per namespace and port, shared by the flows to it, kept
            # until the next reset.
            self._echo[where] = EchoServer(*where)
        try:
            return TcpFlow(self._namespace_of(src), dst_ip, port, None)
        except OSError as exc:
            raise AssertionError(f"{src} -> {dst_ip} TCP {port}: no flow ({exc})") from exc

    def _namespace_of(self, source: str) -> str:
        if source.startswith("node:"):
            nodes = (self.sandbox.layout.read_state() or {}).get("nodes") or {}
            return str(nodes[source[5:]]["ns"])
        return str(self.sandbox.status()["pods"][source]["ns"])

    def _namespace_at(self, ip: str) -> str:
        for info in (self.sandbox.status().get("pods") or {}).values():
            if ip in info.get("ips", ()) and not info.get("hostNetwork"):
                return str(info["ns"])
        for info in ((self.sandbox.layout.read_state() or {}).get("nodes") or {}).values():
            if ip in (info.get("ip4"), info.get("ip6")):
                return str(info["ns"])
        raise LookupError(f"no sandbox pod or node at {ip}")

    def external_hosts(self) -> dict[str, str]:
        """The sandbox's two outside hosts."""
        return dict(EXTERNAL_HOSTS)

    def relabel_pod(self, key: str, labels: dict[str, str]) -> None:
        """Replace the pod's labels (a PUT of the whole object)."""
        doc = self._pod(key)
        doc["metadata"]["labels"] = dict(labels)
        self.apply([doc])

    def relabel_namespace(self, name: str, labels: dict[str, str]) -> None:
        """Replace the namespace's labels; its name label stays."""
        doc = copy.deepcopy(self._docs[("Namespace", "", name)])
        doc["metadata"]["labels"] = dict(labels)
        self.apply([doc])

    def recreate_pod(self, key: str) -> None:
        """Delete the pod and create it again at its old IP."""
        doc = self._pod(key)
        ip = self.pod_ip(key)
        self.delete([doc])
        doc.setdefault("status", {})["podIP"] = ip
        self.apply([doc])

    def pod_ip(self, key: str) -> str:
        """The pod's primary IP, as the API reports it."""
        pod = self.sandbox.snapshot().cluster.pods[key]
        return pod.ips[0]

    def relabel_node(self, name: str, labels: dict[str, str]) -> None:
        """Set the Node's labels (the kubelet's stay); return once enforced."""
        self.sandbox.label_node(name, labels)

    def node_ip(self, name: str) -> str:
        """The node's InternalIP (172.31.255.N): where its host-network pods are."""
        addresses = self.sandbox.node_addresses()
        if name not in addresses:
            raise LookupError(f"no sandbox node {name}")
        return addresses[name][0]

    def restart_agent(self, node: str) -> None:
        """Kill the node's agent and start it again."""
        self.sandbox.restart_agent(node)

    def restart_controller(self) -> None:
        """Kill the controller and start it again; wait until all is converged."""
        self.sandbox.restart_controller()
        self.sandbox.wait_converged()

    def add_node(self, name: str, labels: dict[str, str] | None = None) -> None:
        """A new node with its agent; one an earlier scenario added gets ``labels``.

        (A sandbox node stays until ``down``: a scenario's ``AddNode`` of a node an
        earlier one added finds it empty and relabels it, as if new.)
        """
        if name in self.sandbox.node_addresses():
            self.sandbox.label_node(name, labels or {})
            return
        self.sandbox.add_node(name, labels)
        self.sandbox.wait_converged()

    def _pod(self, key: str) -> Doc:
        namespace, name = key.split("/")
        return copy.deepcopy(self._docs[("Pod", namespace, name)])


def make_driver() -> SandboxDriver:
    """Bring a two-node sandbox up (cleaning a crashed one first) for the scenarios."""
    # STOCKADE_SANDBOX_IMAGE: agents and controller from the shipped image.
    image = os.environ.get("STOCKADE_SANDBOX_IMAGE") or None
    sandbox = Sandbox(SANDBOX_NAME, agent_mode="api" if image else "auto", image=image)
    sandbox.cleanup()
    sandbox.up()
    assert len(NODES) == 2
    assert NAMESPACES
    # STOCKADE_E2E_VIA=service: every matrix through the pods' Services.
    return SandboxDriver(sandbox, via=os.environ.get("STOCKADE_E2E_VIA") or "pod")
