"""The sandbox ready for ClusterNetworkPolicy: Node objects with labels and addresses,
host-network pods that serve in their node's namespace and are probed at the node's
address, and the ClusterNetworkPolicy CRD served so that ``kubectl apply`` works and
the controller and agents enforce what is applied.

One dual-stack sandbox for the module (``stk-<runid>-*`` namespaces only, removed by
``down``); nothing touches the host's network namespace.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade_lab.sandbox import Sandbox, SandboxError, differences

ROOT = Path(__file__).resolve().parents[2]
STOCKADE = str(ROOT / ".venv" / "bin" / "stockade")

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.skip("the sandbox needs root (network namespaces)", allow_module_level=True)

Doc = dict[str, Any]

NAMESPACE: Doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "infra"}}


def _pod(name: str, node: str, *, host_network: bool = False, ports: Any = ()) -> Doc:
    spec: Doc = {
        "nodeName": node,
        "containers": [
            {
                "name": "c",
                "image": "busybox",
                "ports": [
                    {"containerPort": p, "protocol": proto, "name": f"p-{p}-{proto.lower()}"}
                    for p, proto in ports
                ],
            }
        ],
    }
    if host_network:
        spec["hostNetwork"] = True
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "infra", "labels": {"app": name}},
        "spec": spec,
    }


HOSTD = _pod("hostd", "node-1", host_network=True, ports=[(9090, "TCP"), (9091, "UDP")])
CLIENT = _pod("client", "node-2")
NEAR = _pod("near", "node-1")


def _cnp(name: str, spec: Doc) -> Doc:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


# Admin tier: no pod may reach a node labelled zone=restricted on TCP 9090 (where the
# host-network daemon listens); an experimental-channel `nodes` peer.
DENY_RESTRICTED_NODES = _cnp(
    "deny-restricted-nodes",
    {
        "tier": "Admin",
        "priority": 10,
        "subject": {"namespaces": {}},
        "egress": [
            {
                "name": "no-restricted-nodes",
                "action": "Deny",
                "to": [{"nodes": {"matchLabels": {"zone": "restricted"}}}],
                "protocols": [{"tcp": {"destinationPort": {"number": 9090}}}],
            }
        ],
    },
)


def _kubectl(sandbox: Sandbox, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(sandbox.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _node(sandbox: Sandbox, name: str) -> Doc:
    node = sandbox.api.get("Node", name)
    assert node is not None, name
    return node


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(f"n{os.getpid()}", nodes=2, dual_stack=True)
    sb.up()
    try:
        yield sb
    finally:
        sb.down()


def test_nodes_are_node_objects_with_labels_and_addresses(sandbox: Sandbox) -> None:
    state = sandbox.status()["nodes"]
    for name in ("node-1", "node-2"):
        node = _node(sandbox, name)
        assert node["metadata"]["labels"] == {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
        }
        assert node["status"]["addresses"] == [
            {"type": "InternalIP", "address": state[name]["ip4"]},
            {"type": "InternalIP", "address": state[name]["ip6"]},
            {"type": "Hostname", "address": name},
        ]
        assert sandbox.node_addresses()[name] == [state[name]["ip4"], state[name]["ip6"]]
    # The engine's view holds them, with their addresses, for `nodes` peers.
    nodes = sandbox.snapshot().cluster.nodes
    assert nodes["node-1"].addresses == (state["node-1"]["ip4"], state["node-1"]["ip6"])

    # `stockade sandbox node add NAME --label k=v`: a real node with labels.
    proc = subprocess.run(
        [
            *(STOCKADE, "sandbox", "--name", sandbox.name, "node", "add", "edge-1"),
            *("--label", "zone=edge", "--label", "example.com/tier=infra"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "node edge-1: address 172.31.255.3, fd31::3" in proc.stdout
    edge = _node(sandbox, "edge-1")
    assert edge["metadata"]["labels"] == {
        "kubernetes.io/hostname": "edge-1",
        "kubernetes.io/os": "linux",
        "zone": "edge",
        "example.com/tier": "infra",
    }
    assert edge["spec"]["podCIDR"] == "10.244.3.0/24"
    listed = subprocess.run(
        [STOCKADE, "sandbox", "--name", sandbox.name, "node", "list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "edge-1: InternalIP=172.31.255.3 InternalIP=fd31::3 Hostname=edge-1" in listed
    assert "zone=edge" in listed
    # A bad label is refused before anything is built.
    with pytest.raises(SandboxError, match="node label"):
        sandbox.add_node("edge-2", {"zone": "not valid!"})
    assert sandbox.api.get("Node", "edge-2") is None

    # kubectl label node works against the API server emulator, and the engine sees it.
    _kubectl(sandbox, "label", "node", "node-1", "zone=a")
    assert _node(sandbox, "node-1")["metadata"]["labels"]["zone"] == "a"
    assert sandbox.snapshot().cluster.nodes["node-1"].labels["zone"] == "a"
    shown = _kubectl(sandbox, "get", "nodes", "-L", "zone")
    assert "edge-1" in shown
    assert "edge" in shown
    # Sandbox.label_node sets them exactly; the kubelet's labels stay.
    sandbox.label_node("node-1", {"role": "infra"}, wait=False)
    assert _node(sandbox, "node-1")["metadata"]["labels"] == {
        "kubernetes.io/hostname": "node-1",
        "kubernetes.io/os": "linux",
        "role": "infra",
    }
    assert _node(sandbox, "node-1")["status"]["addresses"][0]["type"] == "InternalIP"
    # Applying a Node manifest: an existing node is relabelled ...
    sandbox.apply(
        [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}], wait=False
    )
    assert "role" not in _node(sandbox, "node-1")["metadata"]["labels"]
    # ... and a sandbox node cannot be deleted (it lives until `down`).
    with pytest.raises(SandboxError, match="sandbox node"):
        sandbox.delete([{"kind": "Node", "metadata": {"name": "node-2"}}], wait=False)
    sandbox.wait_converged(30)


def test_host_network_pod_serves_at_its_node_address(sandbox: Sandbox) -> None:
    sandbox.apply([NAMESPACE, HOSTD, CLIENT, NEAR])
    nodes = sandbox.status()["nodes"]
    ip4, ip6 = nodes["node-1"]["ip4"], nodes["node-1"]["ip6"]
    pod = sandbox.api.get("Pod", "hostd", "infra")
    assert pod is not None
    assert pod["status"]["podIP"] == ip4
    assert pod["status"]["podIPs"] == [{"ip": ip4}, {"ip": ip6}]
    assert pod["status"]["hostIP"] == ip4
    described = sandbox.status()["pods"]["infra/hostd"]
    assert described["hostNetwork"] is True
    assert described["ns"] == nodes["node-1"]["ns"]
    assert [9090, "TCP"] in described["serving"]
    assert [9091, "UDP"] in described["serving"]
    client_ip = sandbox.status()["pods"]["infra/client"]["ips"][0]

    # It really serves in node-1's namespace on its declared ports: from a pod on the
    # other node (FORWARD there, INPUT on node-1), from a pod on its own node (INPUT),
    # both families; and the answer is its own.
    answers = sandbox.probe_replies(
        [
            ("infra/client", ip4, 9090, "TCP"),
            ("infra/client", ip6, 9090, "TCP"),
            ("infra/client", ip4, 9091, "UDP"),
            ("infra/near", ip4, 9090, "TCP"),
            ("infra/client", ip4, 9091, "TCP"),  # declared UDP only: refused
            # From the host-network pod: the node's namespace, the node's address.
            ("infra/hostd", client_ip, 80, "TCP"),
        ]
    )
    assert answers == [
        (True, "infra/hostd"),
        (True, "infra/hostd"),
        (True, "infra/hostd"),
        (True, "infra/hostd"),
        (False, None),
        (True, "infra/client"),
    ]
    # It is in the matrix, at its node's address, and packets agree with the engine.
    real = sandbox.probe_matrix(9090)
    assert real["infra/client"]["infra/hostd"] is True
    assert real["infra/hostd"]["infra/client"] is False  # nothing listens on 9090 there
    assert differences(real, sandbox.expected_matrix(9090)) == []
    assert differences(sandbox.probe_matrix(80), sandbox.expected_matrix(80)) == []
    assert (
        differences(sandbox.probe_matrix(9091, "UDP"), sandbox.expected_matrix(9091, "UDP")) == []
    )
    table = subprocess.run(
        [STOCKADE, "sandbox", "--name", sandbox.name, "probe", "--port", "9090", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "infra/hostd" in json.dumps(yaml.safe_load(table))

    # Deleted, it stops serving; the node's own servers (80, 81) stay.
    sandbox.delete([HOSTD])
    assert sandbox.probe(
        [("infra/client", ip4, 9090, "TCP"), ("infra/client", ip4, 80, "TCP")]
    ) == [
        False,
        True,
    ]
    sandbox.apply([HOSTD])
    assert sandbox.probe([("infra/client", ip4, 9090, "TCP")]) == [True]

    # Two host-network pods of one node declaring one port: the first serves it, the
    # other takes over once the first is gone.
    first = _pod("first", "node-2", host_network=True, ports=[(9095, "TCP")])
    second = _pod("second", "node-2", host_network=True, ports=[(9095, "TCP")])
    sandbox.apply([first])
    sandbox.apply([second])
    node2 = nodes["node-2"]["ip4"]
    assert sandbox.probe_replies([("infra/near", node2, 9095, "TCP")]) == [(True, "infra/first")]
    sandbox.delete([first])
    assert sandbox.probe_replies([("infra/near", node2, 9095, "TCP")]) == [(True, "infra/second")]
    sandbox.delete([second])
    assert sandbox.probe([("infra/near", node2, 9095, "TCP")]) == [False]


def test_cnp_applied_with_kubectl_is_served_and_enforced(sandbox: Sandbox) -> None:
    sandbox.apply([NAMESPACE, HOSTD, CLIENT, NEAR])
    ip4 = sandbox.status()["nodes"]["node-1"]["ip4"]
    out = _kubectl(sandbox, "apply", "-f", "-", stdin=yaml.safe_dump(DENY_RESTRICTED_NODES))
    assert "clusternetworkpolicy.policy.networking.k8s.io/deny-restricted-nodes" in out
    # The CRD's printer columns, computed by the emulator, printed by the real kubectl.
    table = _kubectl(sandbox, "get", "cnp").splitlines()
    assert table[0].split() == ["NAME", "TIER", "PRIORITY", "AGE"]
    assert table[1].split()[:3] == ["deny-restricted-nodes", "Admin", "10"]
    stored = sandbox.api.get("ClusterNetworkPolicy", "deny-restricted-nodes")
    assert stored is not None
    assert stored["spec"] == DENY_RESTRICTED_NODES["spec"]
    assert "deny-restricted-nodes" in sandbox.snapshot().cluster.cluster_policies
    # The API server refuses what the CRD's schema refuses? The emulator does not
    # validate custom resources (docs/emulator.md); the controller rejects them.

    # No node is restricted yet: the daemon is reachable.
    sandbox.wait_converged(30)
    assert sandbox.probe([("infra/client", ip4, 9090, "TCP")]) == [True]
    # node-1 relabelled into the `nodes` peer: denied from every pod, from the other
    # node (FORWARD on node-2) and from node-1's own pod (INPUT on node-1).
    _kubectl(sandbox, "label", "node", "node-1", "zone=restricted")
    sandbox.wait_converged(30)
    assert sandbox.probe(
        [
            ("infra/client", ip4, 9090, "TCP"),
            ("infra/near", ip4, 9090, "TCP"),
            ("infra/client", ip4, 80, "TCP"),  # another port: not the rule's
        ]
    ) == [False, False, True]
    for port in (80, 9090):
        assert differences(sandbox.probe_matrix(port), sandbox.expected_matrix(port)) == []
    # Relabelled out again: reachable again.
    _kubectl(sandbox, "label", "node", "node-1", "zone-")
    sandbox.wait_converged(30)
    assert sandbox.probe([("infra/client", ip4, 9090, "TCP")]) == [True]
    # The policy deleted with kubectl: gone from the rule sets too.
    restricted = copy.deepcopy(DENY_RESTRICTED_NODES)
    _kubectl(sandbox, "label", "node", "node-1", "zone=restricted")
    _kubectl(sandbox, "delete", "cnp", restricted["metadata"]["name"])
    sandbox.wait_converged(30)
    assert sandbox.probe([("infra/client", ip4, 9090, "TCP")]) == [True]
    _kubectl(sandbox, "label", "node", "node-1", "zone-")
    sandbox.delete([NAMESPACE])
