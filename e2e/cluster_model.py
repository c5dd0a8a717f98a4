"""The end-to-end model: the namespaces, pods and ports every scenario runs against.

It is the model of the upstream Kubernetes network-policy conformance suite
(``kubernetes/test/e2e/network/netpol``): three namespaces ``x``, ``y``, ``z``, each
with three pods ``a``, ``b``, ``c``. Every pod serves ports 80 and 81 over TCP and
UDP (and SCTP where the cluster has it), one container per port and protocol, with
the named container ports ``serve-80-tcp``, ``serve-80-udp``, ``serve-81-tcp``,
``serve-81-udp`` (``serve-80-sctp``, ``serve-81-sctp``).

Labels, as upstream: pods ``pod=<name>``; namespaces ``ns=<name>`` and the
``kubernetes.io/metadata.name=<name>`` the API server sets on every namespace.

Placement (it matters: a same-node pair is routed through one node's FORWARD hook,
a cross-node pair through two)::

    node-1: x/a x/c y/a y/c z/a z/c
    node-2: x/b y/b z/b

so ``a``-``c`` pairs (and every pod with itself) are same-node, and every pair
involving a ``b`` and a non-``b`` pod is cross-node; ``b``-``b`` pairs (``x/b`` to
``y/b``) are same-node on node-2.

Node names are logical: a driver whose nodes are named otherwise (kind's
``kind-worker``, ``kind-worker2``) maps ``node-1``/``node-2`` onto its own nodes.

Everything here is a plain dict that ``yaml.safe_dump`` writes and ``kubectl apply``
accepts; nothing carries a status (the cluster fills it in).
"""

from __future__ import annotations

import copy
from typing import Any

Doc = dict[str, Any]

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP", "SCTP")
NODES = ("node-1", "node-2")
NODE_OF_POD = {"a": "node-1", "b": "node-2", "c": "node-1"}

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# agnhost is the server the upstream suite runs; ``serve-hostname`` answers on one
# port and protocol with the pod's hostname.
AGNHOST_IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.53"

#: Every pod of the model, ``ns/pod``, in the order truth tables list them.
POD_KEYS = tuple(f"{ns}/{pod}" for ns in NAMESPACES for pod in POD_NAMES)


def port_name(port: int, protocol: str) -> str:
    """The named container port serving ``port``/``protocol``: ``serve-80-tcp``."""
    return f"serve-{port}-{protocol.lower()}"


def namespace_labels(name: str) -> dict[str, str]:
    """The model's labels of namespace ``name``."""
    return {"ns": name, NAMESPACE_NAME_LABEL: name}


def pod_labels(name: str) -> dict[str, str]:
    """The model's labels of pod ``name``."""
    return {"pod": name}


def namespace_manifest(name: str, labels: dict[str, str] | None = None) -> Doc:
    """A Namespace of the model (``labels`` replace the model's, the name label stays)."""
    merged = dict(namespace_labels(name) if labels is None else labels)
    merged[NAMESPACE_NAME_LABEL] = name
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": merged},
    }


def _container(port: int, protocol: str) -> Doc:
    flag = {"TCP": "--tcp", "UDP": "--udp", "SCTP": "--sctp"}[protocol]
    return {
        "name": f"cont-{port}-{protocol.lower()}",
        "image": AGNHOST_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/agnhost", "serve-hostname", flag, "--http=false", "--port", str(port)],
        "ports": [{"containerPort": port, "name": port_name(port, protocol), "protocol": protocol}],
    }


def pod_manifest(
    key: str,
    *,
    labels: dict[str, str] | None = None,
    node: str | None = None,
    sctp: bool = True,
) -> Doc:
    """The Pod ``ns/name``: model labels and node unless given, one container per port.

    ``sctp=False`` leaves out the SCTP containers, for clusters without SCTP.
    """
    namespace, name = key.split("/")
    protocols = PROTOCOLS if sctp else ("TCP", "UDP")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": dict(pod_labels(name) if labels is None else labels),
        },
        "spec": {
            "nodeName": node if node is not None else NODE_OF_POD[name],
            "terminationGracePeriodSeconds": 0,
            "containers": [_container(port, proto) for port in PORTS for proto in protocols],
        },
    }


def model_objects(*, sctp: bool = True) -> list[Doc]:
    """Every Namespace and Pod of the model, namespaces first."""
    docs = [namespace_manifest(ns) for ns in NAMESPACES]
    docs += [pod_manifest(key, sctp=sctp) for key in POD_KEYS]
    return docs


def network_policy(namespace: str, name: str, spec: Doc) -> Doc:
    """A NetworkPolicy exactly as ``kubectl apply`` takes it."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": copy.deepcopy(spec),
    }


def kubelet_labels(node: str) -> dict[str, str]:
    """The labels every node's kubelet puts on its Node (and keeps there)."""
    return {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux"}


def node_manifest(name: str, labels: dict[str, str] | None = None) -> Doc:
    """A Node ``name`` with ``labels`` besides the kubelet's (no status: the cluster's)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {**(labels or {}), **kubelet_labels(name)}},
    }


def host_network_pod_manifest(
    key: str,
    node: str,
    *,
    labels: dict[str, str] | None = None,
    ports: tuple[tuple[int, str], ...] = ((9090, "TCP"),),
) -> Doc:
    """A pod ``ns/name`` on the host network of ``node``, declaring ``ports``.

    It is reached at its node's address, on its declared ports; it is never a policy
    subject nor a ``pods``/``namespaces`` peer (``networks`` and ``nodes`` peers
    match it, at its node's address).
    """
    namespace, name = key.split("/")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": dict(pod_labels(name) if labels is None else labels),
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": True,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "host",
                    "image": AGNHOST_IMAGE,
                    "ports": [
                        {
                            "containerPort": port,
                            "protocol": proto,
                            "name": f"host-{port}-{proto.lower()}",
                        }
                        for port, proto in ports
                    ],
                }
            ],
        },
    }


def cluster_network_policy(name: str, spec: Doc) -> Doc:
    """A ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) as ``kubectl apply`` takes it."""
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": copy.deepcopy(spec),
    }
