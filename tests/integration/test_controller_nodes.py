"""Nodes and sync lag: the real controller against the emulated API server.

Node objects give their node a rule set (empty without pods); a "fake agent" writes
``status.appliedGeneration`` through the status subresource, as the agent does, and
the controller's sync-lag histogram and oldest-unapplied gauge follow.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade.controller.metrics import OLDEST_UNAPPLIED
from stockade_lab.emulator import EmulatorThread
from tests.integration.test_controller import (
    ALLOW_CLIENT,
    GROUP,
    VERSION,
    ControllerThread,
    options,
    pod,
    policies_on,
    policy,
    put,
    rule_sets,
)
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.timeout(120)]


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def agent_reports(emu: EmulatorThread, name: str) -> int:
    """Write what an agent writes once it enforces the current generation."""
    obj = emu.emulator.get_object(GROUP, VERSION, "noderulesets", name)
    assert obj is not None
    generation = int(obj["metadata"]["generation"])
    body = json.dumps(
        {"status": {"applied": True, "appliedGeneration": generation, "appliedHash": "x"}}
    ).encode()
    req = urllib.request.Request(
        f"{emu.url}/apis/{GROUP}/{VERSION}/noderulesets/{name}/status",
        data=body,
        method="PATCH",
        headers={"Content-Type": "application/merge-patch+json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
    return generation


def samples(ctl: ControllerThread, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for metric in ctl.controller.metrics.registry.collect():
        for s in metric.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
def controller(emu: EmulatorThread, tmp_path: Path) -> Iterator[ControllerThread]:
    ctl = ControllerThread(options(tmp_path)).start()
    try:
        yield ctl
    finally:
        ctl.stop()


def test_node_added_and_removed(emu: EmulatorThread, controller: ControllerThread) -> None:
    put(emu, node("node-a"))
    put(emu, node("node-b"))
    wait_for(lambda: {"node-a", "node-b"} <= set(rule_sets(emu)), message="empty rule sets")
    assert rule_sets(emu)["node-a"]["spec"]["policies"] == []
    assert rule_sets(emu)["node-a"]["spec"]["pods"] == []
    # A policy selecting a pod on node-b; node-a stays empty.
    put(emu, pod("web-1", "node-b", "10.0.2.1"))
    put(emu, policy("allow-client", ALLOW_CLIENT))
    wait_for(lambda: policies_on(emu, "node-b") == ["default/allow-client"])
    assert policies_on(emu, "node-a") == []

    # node-a goes: its (empty) rule set goes with it.
    emu.emulator.delete_object("", "v1", "nodes", "node-a")
    wait_for(lambda: "node-a" not in rule_sets(emu), message="node-a's rule set deleted")
    # node-b goes while its pod is still there: the rule set stays until the pod goes.
    emu.emulator.delete_object("", "v1", "nodes", "node-b")
    time.sleep(0.5)
    assert policies_on(emu, "node-b") == ["default/allow-client"]
    emu.emulator.delete_object("", "v1", "pods", "web-1", "default")
    wait_for(lambda: "node-b" not in rule_sets(emu), message="node-b's rule set deleted")
    wait_for(controller.settled)


def test_restart_with_nodes_writes_nothing(emu: EmulatorThread, tmp_path: Path) -> None:
    for name in ("node-a", "node-b", "node-c"):
        put(emu, node(name))
    first = ControllerThread(options(tmp_path)).start()
    try:
        wait_for(lambda: len(rule_sets(emu)) == 3)
        wait_for(first.settled)
    finally:
        first.stop()
    second = ControllerThread(options(tmp_path)).start()
    try:
        wait_for(second.settled)
        time.sleep(0.5)
        # The warm-up waits for the nodes too: no empty rule set is deleted and remade.
        assert second.writes() == 0
    finally:
        second.stop()


def test_sync_lag_from_policy_change_to_applied(
    emu: EmulatorThread,
    controller: ControllerThread,
) -> None:
    put(emu, node("node-1"))
    put(emu, node("node-2"))
    put(emu, pod("web-1", "node-1", "10.0.1.1"))
    wait_for(lambda: {"node-1", "node-2"} <= set(rule_sets(emu)))
    wait_for(controller.settled)
    for name in ("node-1", "node-2"):
        agent_reports(emu, name)
    lag = "stockade_controller_sync_lag_seconds_count"
    wait_for(lambda: samples(controller, lag).get((("cause", "other"),)) == 2, message="settled")
    wait_for(lambda: not samples(controller, OLDEST_UNAPPLIED), message="nothing pending")

    # A policy selecting web-1 changes node-1's rule set only.
    put(emu, policy("allow-client", ALLOW_CLIENT))
    wait_for(lambda: policies_on(emu, "node-1") == ["default/allow-client"])
    wait_for(lambda: samples(controller, OLDEST_UNAPPLIED), message="a pending change")
    time.sleep(0.3)
    pending = samples(controller, OLDEST_UNAPPLIED)
    assert set(pending) == {(("node", "node-1"),)}
    assert pending[(("node", "node-1"),)] >= 0.3
    assert samples(controller, lag).get((("cause", "policy"),), 0) == 0

    agent_reports(emu, "node-1")
    wait_for(lambda: samples(controller, lag).get((("cause", "policy"),)) == 1, message="lag")
    total = samples(controller, "stockade_controller_sync_lag_seconds_sum")[(("cause", "policy"),)]
    assert 0.3 <= total < 10
    wait_for(lambda: not samples(controller, OLDEST_UNAPPLIED), message="gauge cleared")

    # An agent that reports an older generation leaves the change pending.
    put(emu, policy("allow-client", {"podSelector": {}, "ingress": []}))
    wait_for(lambda: samples(controller, OLDEST_UNAPPLIED), message="pending again")
    before = samples(controller, lag)[(("cause", "policy"),)]
    time.sleep(0.3)
    assert samples(controller, lag)[(("cause", "policy"),)] == before
