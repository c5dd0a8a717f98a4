"""Fail static on absence, with a real kernel: a NodeRuleSet deleted (by accident, or
with its CRD) leaves the node enforcing what it had; an explicit empty one opens it.

The agent runs as in tests/integration/test_agent_watch_live.py (a watcher thread against
the emulator, an applier bound to a ``stk-`` node namespace made by the lab).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from stockade.agent.cache import empty_rule_set
from stockade.agent.health import Health
from stockade.agent.metrics import AgentMetrics
from stockade_lab.emulator import EmulatorThread
from stockade_lab.netlab import Node
from tests.integration.test_agent_watch_live import (
    GROUP,
    VERSION,
    WatcherThread,
    applied_with,
    kernel,
    node,  # noqa: F401 - the fixture
    publish,
    put_node,
)
from tests.integration.waiting import wait_for
from tests.unit.test_agent_watch import cluster_docs, compile_docs, node_object

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
CRD = "noderulesets.stockade.dev"


@pytest.fixture
def watched(emu: EmulatorThread, node: Node, tmp_path: Path) -> Iterator[WatcherThread]:  # noqa: F811
    agent = WatcherThread(
        tmp_path / "kubeconfig",
        node.ns,
        tmp_path / "state",
        metrics=AgentMetrics(),
        health=Health(60),
    ).start()
    try:
        yield agent
    finally:
        agent.stop()
        agent.applier.cleanup()


def _missing(agent: WatcherThread) -> float:
    assert agent.metrics is not None
    return float(agent.metrics.rule_set_missing._value.get())


def _crd() -> dict[str, object]:
    for doc in yaml.safe_load_all((ROOT / "manifests/crds.yaml").read_text()):
        if doc["metadata"]["name"] == CRD:
            return dict(doc)
    raise AssertionError(f"no {CRD} in manifests/crds.yaml")


def test_deleting_the_rule_set_or_its_crd_keeps_the_node_enforcing(
    emu: EmulatorThread, watched: WatcherThread
) -> None:
    compiled = compile_docs(cluster_docs())
    publish(emu, compiled)
    wait_for(lambda: applied_with(emu, watched, 1), message="generation 1 applied")
    enforced = kernel(watched)
    assert "STK-" in enforced[0]
    assert "10.0.2.10" in enforced[1]
    applies = watched.w.applies

    # Deleted by accident: the kernel keeps every rule and set; the agent says so.
    emu.emulator.delete_object(GROUP, VERSION, "noderulesets", "n1")
    wait_for(lambda: _missing(watched) == 1, message="rule set reported missing")
    resyncs = watched.w.resyncs
    wait_for(lambda: watched.w.resyncs >= resyncs + 2, message="resyncs go on")
    assert kernel(watched) == enforced
    assert watched.applier.verify() == []
    assert watched.w.applies == applies
    assert watched.health is not None
    detail = watched.health.detail()
    assert "not found" in (detail["rule_set_missing"] or "")
    assert detail["ready"] is True

    # Back, then the CRD itself deleted (every NodeRuleSet with it): still enforcing.
    put_node(emu, node_object(compiled.node_rule_sets["n1"]))
    wait_for(lambda: _missing(watched) == 0, message="rule set back")
    assert watched.w.applies == applies  # the same content: nothing rewritten
    emu.emulator.delete_object("apiextensions.k8s.io", "v1", "customresourcedefinitions", CRD)
    wait_for(lambda: _missing(watched) == 1, message="CRD gone reported")
    resyncs = watched.w.resyncs
    wait_for(lambda: watched.w.resyncs >= resyncs + 2, message="resyncs go on")
    assert kernel(watched) == enforced
    assert watched.w.applies == applies

    # The CRD back with an explicit empty rule set: that opens the node.
    emu.emulator.put_object(_crd())
    put_node(emu, node_object(empty_rule_set("n1")))
    wait_for(lambda: watched.w.applies == applies + 1, message="empty rule set applied")
    wait_for(lambda: _missing(watched) == 0, message="no longer missing")
    opened = kernel(watched)
    assert "10.0.2.10" not in opened[1]
    assert opened != enforced
