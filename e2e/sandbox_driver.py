"""The scenarios on the sandbox: real namespaces, real processes, real packets.

A thin adapter from :class:`e2e.driver.ClusterDriver` to
:class:`stockade.sandbox.api.Sandbox`: every change goes through the API server
emulator and returns once every node's agent enforces it (the sandbox's converged
check), and every probe is a real connection between network namespaces.
"""

from __future__ import annotations

import copy
import os
import socket
from typing import Any

from e2e.model import NAMESPACES, NODES, model_objects
from stockade.sandbox.api import Sandbox

Doc = dict[str, Any]
Matrix = dict[str, dict[str, bool]]

SANDBOX_NAME = "e2e"
EXTERNAL_HOSTS = {"ext-1": "203.0.113.10", "ext-2": "203.0.113.11"}


def _kernel_has_sctp() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        return False
    return True


def _key(doc: Doc) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return (str(doc.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


class SandboxDriver:
    """:class:`e2e.driver.ClusterDriver` over a running :class:`Sandbox`."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._sctp = _kernel_has_sctp()
        self._docs: dict[tuple[str, str, str], Doc] = {}
        self._model_keys = {_key(d) for d in model_objects(sctp=self._sctp)}

    @property
    def name(self) -> str:
        """``sandbox``."""
        return "sandbox"

    def supports_protocol(self, protocol: str) -> bool:
        """TCP and UDP always; SCTP when this kernel has SCTP sockets."""
        return protocol in ("TCP", "UDP") or (protocol == "SCTP" and self._sctp)

    def reset(self) -> None:
        """Delete every policy and extra pod; the model's labels come back."""
        extra = [
            doc
            for key, doc in self._docs.items()
            if key[0] == "NetworkPolicy" or (key[0] == "Pod" and key not in self._model_keys)
        ]
        if extra:
            self.delete(extra)
        self.apply(model_objects(sctp=self._sctp))

    def close(self) -> None:
        """Take the sandbox down."""
        self.sandbox.down()

    def apply(self, objects: list[Doc]) -> None:
        """Create or update through the API; return once every node enforces it."""
        docs = [copy.deepcopy(d) for d in objects]
        for doc in docs:
            if doc.get("kind") == "Namespace":
                labels = doc.setdefault("metadata", {}).setdefault("labels", {})
                labels["kubernetes.io/metadata.name"] = doc["metadata"]["name"]
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
        report = self.sandbox.measure_matrix(port, protocol)
        if report.unknown:
            raise AssertionError(f"{protocol} {port}: {report.why()}")
        return {
            src: {dst: ok is True for dst, ok in row.items()} for src, row in report.matrix.items()
        }

    def probe(self, src: str, dst_ip: str, port: int, protocol: str) -> bool:
        """One real connection attempt from pod ``src``; raises if it could not be made."""
        (result,), (reason,) = self.sandbox.probe_explained([(src, dst_ip, port, protocol)])
        if result is None:
            raise AssertionError(f"{src} -> {dst_ip} {protocol} {port} not measured: {reason}")
        return result

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

    def restart_agent(self, node: str) -> None:
        """Kill the node's agent and start it again."""
        self.sandbox.restart_agent(node)

    def restart_controller(self) -> None:
        """Kill the controller and start it again; wait until all is converged."""
        self.sandbox.restart_controller()
        self.sandbox.wait_converged()

    def add_node(self, name: str) -> None:
        """A new node with its agent."""
        self.sandbox.add_node(name)

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
    return SandboxDriver(sandbox)
