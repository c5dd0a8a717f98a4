"""Services end to end on the sandbox: node ports, backends on two nodes, and NAT.

These need what only the sandbox has (kube-proxy's NAT in every node, outside hosts
reaching node ports), so they run with the sandbox driver and skip elsewhere. Every
expectation is written by hand from the NetworkPolicy spec and docs/semantics.md
("Traffic to Service IPs"); the matrices through Services are the scenarios of
``test_scenarios.py`` run with ``STOCKADE_E2E_VIA=service``.

Model placement (e2e/cluster_model.py): node-1 runs x/a, x/c, y/a, y/c, z/a, z/c; node-2 runs
x/b, y/b, z/b.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from e2e.cluster_model import POD_KEYS, network_policy, pod_manifest
from e2e.driver import ClusterDriver

Doc = dict[str, Any]
NODE_IPS = {"node-1": "172.31.255.1", "node-2": "172.31.255.2"}
EXT_1 = "203.0.113.10"


def _sandbox(driver: ClusterDriver) -> Any:
    if not driver.name.startswith("sandbox"):
        pytest.skip(f"needs the sandbox's kube-proxy; the {driver.name} driver has none")
    return driver.sandbox  # type: ignore[attr-defined]


def node_port_service(name: str, selector: dict[str, str], node_port: int, traffic: str) -> Doc:
    """A NodePort Service in namespace x on port 80 of the selected pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "x"},
        "spec": {
            "type": "NodePort",
            "externalTrafficPolicy": traffic,
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": 80, "nodePort": node_port}],
        },
    }


def allow_from_cidr(cidr: str) -> Doc:
    """x/b admits only ``cidr`` (and nothing else) on every port."""
    return network_policy(
        "x",
        "b-from-cidr",
        {
            "podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}],
        },
    )


@pytest.fixture
def services(driver: ClusterDriver) -> Any:
    """The sandbox, with the Services a test made removed afterwards."""
    sandbox = _sandbox(driver)
    made: list[Doc] = []

    class Made:
        def apply(self, docs: list[Doc]) -> None:
            made.extend(d for d in docs if d["kind"] == "Service")
            driver.apply(docs)

    yield sandbox, Made()
    if made:
        sandbox.delete(made)


def _ask(sandbox: Any, src: str, ip: str, port: int, times: int = 1) -> list[str | None]:
    return [reply for _, reply in sandbox.probe_replies([(src, ip, port, "TCP")] * times)]


def test_node_port_cluster_policy_sees_the_node_or_the_client(services: Any) -> None:
    """externalTrafficPolicy: Cluster. x/b runs on node-2.

    Through node-1 the packet is DNATed and masqueraded there, so node-2's FORWARD
    sees node-1's address; through node-2 itself FORWARD runs before the masquerade
    and sees the outside client's address.
    """
    sandbox, made = services
    made.apply([node_port_service("b-cluster", {"pod": "b"}, 30080, "Cluster")])
    made.apply([allow_from_cidr(f"{EXT_1}/32")])
    assert _ask(sandbox, "external:ext-1", NODE_IPS["node-1"], 30080) == [None]
    assert _ask(sandbox, "external:ext-1", NODE_IPS["node-2"], 30080) == ["x/b"]
    made.apply([allow_from_cidr(f"{NODE_IPS['node-1']}/32")])
    assert _ask(sandbox, "external:ext-1", NODE_IPS["node-1"], 30080) == ["x/b"]
    assert _ask(sandbox, "external:ext-1", NODE_IPS["node-2"], 30080) == [None]


def test_node_port_local_policy_keeps_the_client(services: Any) -> None:
    """externalTrafficPolicy: Local: no masquerade, only nodes with a backend answer."""
    sandbox, made = services
    made.apply([node_port_service("b-local", {"pod": "b"}, 30081, "Local")])
    made.apply([allow_from_cidr(f"{EXT_1}/32")])
    assert _ask(sandbox, "external:ext-1", NODE_IPS["node-2"], 30081) == ["x/b"]
    assert _ask(sandbox, "external:ext-2", NODE_IPS["node-2"], 30081) == [None]
    # node-1 has no local backend: kube-proxy drops, whatever the policy
    assert _ask(sandbox, "external:ext-1", NODE_IPS["node-1"], 30081) == [None]
    made.apply([allow_from_cidr(f"{NODE_IPS['node-1']}/32")])
    assert _ask(sandbox, "external:ext-1", NODE_IPS["node-2"], 30081) == [None]


def test_backends_on_two_nodes_are_judged_one_by_one(services: Any) -> None:
    """A Service over all of x's pods (node-1 and node-2); only x/b admits y/a.

    kube-proxy picks a backend per connection: y/a's connections that land on x/b
    answer, those that land on x/a or x/c are dropped; z/a is answered by none.
    """
    sandbox, made = services
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "all-x", "namespace": "x"},
        "spec": {
            "selector": {"ns-member": "x"},
            "ports": [{"port": 80, "targetPort": "serve-80-tcp"}],
        },
    }
    pods = [
        {
            **doc,
            "metadata": {
                **doc["metadata"],
                "labels": {"pod": doc["metadata"]["name"], "ns-member": "x"},
            },
        }
        for doc in _model_pods("x")
    ]
    deny = network_policy("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    b_from_ya = network_policy(
        "x",
        "b-from-ya",
        {
            "podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"ns": "y"}},
                            "podSelector": {"matchLabels": {"pod": "a"}},
                        }
                    ]
                }
            ],
        },
    )
    made.apply([*pods, svc, deny, b_from_ya])
    ip = sandbox.api.get("Service", "all-x", "x")["spec"]["clusterIP"]
    replies = Counter(_ask(sandbox, "y/a", ip, 80, times=30))
    assert set(replies) <= {"x/b", None}
    assert replies["x/b"] > 0, replies  # 30 tries, 1 in 3 each: (2/3)^30 < 1e-5 to miss
    assert replies[None] > 0, replies
    assert set(_ask(sandbox, "z/a", ip, 80, times=10)) == {None}


def test_a_pod_reaches_itself_through_its_own_service(services: Any) -> None:
    """Hairpin: x/a behind a default deny still reaches itself via its cluster IP."""
    sandbox, made = services
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "self-a", "namespace": "x"},
        "spec": {"selector": {"pod": "a"}, "ports": [{"port": 80}]},
    }
    made.apply([svc, network_policy("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})])
    ip = sandbox.api.get("Service", "self-a", "x")["spec"]["clusterIP"]
    assert _ask(sandbox, "x/a", ip, 80) == ["x/a"]
    assert _ask(sandbox, "x/c", ip, 80) == [None]


def _model_pods(namespace: str) -> list[Doc]:
    return [pod_manifest(k, sctp=False) for k in POD_KEYS if k.startswith(f"{namespace}/")]
