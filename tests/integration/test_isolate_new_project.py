"""A project namespace created under an IsolationPolicy, with real packets.

Projects by a ``tenant`` namespace label: the same project is passed to the
NetworkPolicy tier (open, as no NetworkPolicy narrows it here), other projects are
denied. The agents run with ``--isolate-new-pods`` and the controller is stopped, so
no rule set can cover the new namespace's first pod for as long as the test likes:
from the moment its address reaches the API server, every connection to or from it
fails, its own project's included, and none of the others' traffic changes. Once
the controller is back the pod is in its project: open to it, closed to the others.
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


def _namespace(name: str, tenant: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"tenant": tenant}},
    }


def _pod(key: str, node: str, ip: str) -> dict[str, Any]:
    ns, name = key.split("/")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"podIP": ip},
    }


PROJECTS = {
    "apiVersion": "stockade.dev/v1alpha1",
    "kind": "IsolationPolicy",
    "metadata": {"name": "projects"},
    "spec": {
        "tier": "Admin",
        "priority": 10,
        "subject": {"namespaces": {"matchExpressions": [{"key": "tenant", "operator": "Exists"}]}},
        "ingress": [
            {
                "name": "same-project",
                "action": "Pass",
                "from": [{"namespaces": {"sameLabels": ["tenant"]}}],
            },
            {"name": "other-projects", "action": "Deny", "from": [{"namespaces": {}}]},
        ],
    },
}
A, B, G, NEW = "10.244.1.20", "10.244.2.20", "10.244.1.30", "10.244.1.40"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(f"p{os.getpid()}", nodes=2, isolate_new_pods=True)
    sb.up()
    try:
        sb.apply(
            [
                _namespace("acme", "acme"),
                _namespace("globex", "globex"),
                _pod("acme/a", "node-1", A),
                _pod("acme/b", "node-2", B),
                _pod("globex/g", "node-1", G),
                PROJECTS,
            ]
        )
        yield sb
    finally:
        sb.down()


def _around_the_new_pod(sb: Sandbox) -> list[bool | None]:
    return sb.probe(
        [
            ("acme-2/n", A, 80, "TCP"),
            ("acme/a", NEW, 80, "TCP"),
            ("acme/b", NEW, 80, "TCP"),
            ("globex/g", NEW, 80, "TCP"),
            ("acme-2/n", G, 80, "TCP"),
        ]
    )


def test_a_new_project_namespace_is_isolated_from_its_first_pod(sandbox: Sandbox) -> None:
    # The projects as they stand: acme open inside, globex apart.
    assert sandbox.probe([("acme/a", B, 80, "TCP"), ("globex/g", A, 80, "TCP")]) == [True, False]
    sandbox.stop_controller()
    try:
        sandbox.apply([_namespace("acme-2", "acme"), _pod("acme-2/n", "node-1", NEW)], wait=False)
        wait_for(
            lambda: sandbox.status()["pods"].get("acme-2/n", {}).get("ips") == [NEW],
            20,
            "the new project's first pod",
        )
        wait_for(
            lambda: _around_the_new_pod(sandbox) == [False] * 5,
            20,
            "the first pod to be isolated",
        )
        # It stays so, every way, for as long as no rule set covers it; the rest of
        # the cluster is untouched.
        for _ in range(3):
            time.sleep(0.3)
            assert _around_the_new_pod(sandbox) == [False] * 5
        assert sandbox.probe([("acme/a", B, 80, "TCP"), ("globex/g", A, 80, "TCP")]) == [
            True,
            False,
        ]
    finally:
        sandbox.start_controller()
    sandbox.wait_converged(30)
    # Covered: in its project, open to it both ways; the other project still denied.
    wait_for(
        lambda: _around_the_new_pod(sandbox) == [True, True, True, False, False],
        20,
        "the pod to join its project",
    )
    real = sandbox.probe_matrix(80)
    assert differences(real, sandbox.expected_matrix(80)) == []
