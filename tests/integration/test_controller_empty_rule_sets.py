"""Every Node gets a NodeRuleSet, explicitly empty when no policy applies there.

The agent must tell "nothing to enforce" (an object whose spec lists no policy)
from "not published yet" (no object): so a node without pods, and a node whose pods
no policy selects, both get a rule set, before and after policies exist elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade_lab.emulator import EmulatorThread
from tests.integration.test_controller import (
    ALLOW_CLIENT,
    ControllerThread,
    options,
    pod,
    policies_on,
    policy,
    put,
    rule_sets,
)
from tests.integration.test_controller_nodes import node
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def controller(emu: EmulatorThread, tmp_path: Path) -> Iterator[ControllerThread]:
    ctl = ControllerThread(options(tmp_path)).start()
    try:
        yield ctl
    finally:
        ctl.stop()


def _empty(spec: dict[str, object]) -> bool:
    return spec["policies"] == [] and spec["pods"] == [] and spec["peerSets"] == []


def test_nodes_without_policy_get_an_empty_rule_set(
    emu: EmulatorThread, controller: ControllerThread
) -> None:
    for name in ("node-a", "node-b", "node-c"):
        put(emu, node(name))
    # node-b has a pod that no policy selects; node-a has no pod at all.
    put(emu, pod("other", "node-b", "10.0.2.9", {"app": "other"}))
    wait_for(lambda: len(rule_sets(emu)) == 3, message="a rule set per node, no policy at all")
    wait_for(controller.settled)
    for name in ("node-a", "node-b", "node-c"):
        spec = rule_sets(emu)[name]["spec"]
        assert spec["node"] == name
        assert _empty(spec), spec
    assert [p["name"] for p in rule_sets(emu)["node-b"]["spec"]["knownPods"]] == ["default/other"]

    # A policy selecting a pod on node-c only: the other two stay present and empty.
    put(emu, pod("web-1", "node-c", "10.0.3.1"))
    put(emu, policy("allow-client", ALLOW_CLIENT))
    wait_for(lambda: policies_on(emu, "node-c") == ["default/allow-client"])
    wait_for(controller.settled)
    sets = rule_sets(emu)
    assert set(sets) == {"node-a", "node-b", "node-c"}
    assert _empty(sets["node-a"]["spec"])
    assert _empty(sets["node-b"]["spec"])

    # The policy goes: node-c's rule set is emptied, not deleted.
    emu.emulator.delete_object(
        "networking.k8s.io", "v1", "networkpolicies", "allow-client", "default"
    )
    wait_for(lambda: policies_on(emu, "node-c") == [], message="node-c emptied")
    wait_for(controller.settled)
    assert "node-c" in rule_sets(emu)
    assert rule_sets(emu)["node-c"]["spec"]["policies"] == []
