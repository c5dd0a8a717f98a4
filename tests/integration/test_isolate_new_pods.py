"""``stockade-agent run --isolate-new-pods`` end to end, with real packets.

A sandbox whose agents run with the option; the controller is stopped so that no
rule set can cover a new pod; the new pod must then be cut off both ways (while
every other pod keeps talking), and get exactly the engine's verdicts once the
controller is back and has published its rule set. Also: a new pod that takes over
a deleted pod's address is isolated too, and the option off (the default) leaves a
new pod open, as the spec says for pods no policy selects.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stockade_lab.sandbox import Sandbox, differences
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.skip("the sandbox needs root (network namespaces)", allow_module_level=True)


def _pod(name: str, node: str, ip: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "iso", "labels": labels or {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"podIP": ip},
    }


NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "iso"}}
# Only "db" is selected: without isolation a new "client" pod would be open at once.
POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "db", "namespace": "iso"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
    },
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(f"i{os.getpid()}", nodes=2, isolate_new_pods=True)
    sb.up()
    try:
        sb.apply(
            [
                NAMESPACE,
                _pod("db", "node-1", "10.244.1.20", app="db"),
                _pod("web", "node-2", "10.244.2.20", app="web"),
                POLICY,
            ]
        )
        yield sb
    finally:
        sb.down()


def _both_ways(sb: Sandbox, pod: str, ip: str, peer: str, peer_ip: str) -> list[bool | None]:
    return sb.probe([(pod, peer_ip, 80, "TCP"), (peer, ip, 80, "TCP")])


def test_new_pod_is_isolated_until_its_rule_set_lands(sandbox: Sandbox) -> None:
    # Running pods talk as the engine says.
    assert sandbox.probe([("iso/web", "10.244.1.20", 80, "TCP")]) == [False]  # db isolated
    sandbox.stop_controller()
    try:
        sandbox.apply([_pod("client", "node-1", "10.244.1.21", role="client")], wait=False)
        # No rule set lists the client: no traffic in or out, even from its own node's
        # pods and to pods that no policy selects.
        wait_for(
            lambda: sandbox.status()["pods"].get("iso/client", {}).get("ips") == ["10.244.1.21"],
            20,
            "the client pod",
        )
        wait_for(
            lambda: (
                _both_ways(sandbox, "iso/client", "10.244.1.21", "iso/web", "10.244.2.20")
                == [False, False]
            ),
            20,
            "the new pod to be isolated",
        )
        assert sandbox.probe([("iso/client", "10.244.1.20", 80, "TCP")]) == [False]
        # Everyone else is untouched.
        assert sandbox.probe([("iso/db", "10.244.2.20", 80, "TCP")]) == [True]
        time.sleep(0.5)
        assert _both_ways(sandbox, "iso/client", "10.244.1.21", "iso/web", "10.244.2.20") == [
            False,
            False,
        ]
    finally:
        sandbox.start_controller()
    # The controller lists the pod: it gets exactly the engine's verdicts.
    sandbox.wait_converged(30)
    wait_for(
        lambda: sandbox.probe([("iso/client", "10.244.1.20", 80, "TCP")]) == [True],
        20,
        "the client to reach db once covered",
    )
    real = sandbox.probe_matrix(80)
    assert differences(real, sandbox.expected_matrix(80)) == []


def test_reused_address_is_isolated_too(sandbox: Sandbox) -> None:
    sandbox.apply([_pod("temp", "node-2", "10.244.2.40", app="temp")])
    assert sandbox.probe([("iso/temp", "10.244.2.20", 80, "TCP")]) == [True]
    sandbox.stop_controller()
    try:
        sandbox.delete([_pod("temp", "node-2", "10.244.2.40")], wait=False)
        wait_for(lambda: "iso/temp" not in sandbox.status()["pods"], 20, "temp to go")
        # Another pod gets the same address; the rule set still names the old one.
        sandbox.apply([_pod("heir", "node-2", "10.244.2.40", app="heir")], wait=False)
        wait_for(
            lambda: sandbox.probe([("iso/web", "10.244.2.40", 80, "TCP")]) == [False],
            20,
            "the heir of the address to be isolated",
        )
    finally:
        sandbox.start_controller()
    sandbox.wait_converged(30)
    wait_for(
        lambda: sandbox.probe([("iso/web", "10.244.2.40", 80, "TCP")]) == [True],
        20,
        "the heir to be covered",
    )


def test_without_the_option_a_new_unselected_pod_is_open() -> None:
    sb = Sandbox(f"o{os.getpid()}", nodes=1)
    sb.up()
    try:
        sb.apply([NAMESPACE, _pod("a", "node-1", "10.244.1.30")])
        sb.stop_controller()
        sb.apply([_pod("b", "node-1", "10.244.1.31")], wait=False)
        wait_for(
            lambda: sb.probe([("iso/b", "10.244.1.30", 80, "TCP")]) == [True],
            20,
            "the new pod to be reachable",
        )
    finally:
        sb.down()
