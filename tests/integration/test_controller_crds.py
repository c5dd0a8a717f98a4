"""A fresh install: the controller starts before stockade's CRDs are served.

kopf resolves its resources once (scanning is off), so the controller must not start
its watches before NodeRuleSet is served: it waits (not ready, but alive) and then
watches NodeRuleSets like any other start, so the agents' status reaches the sync lag.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from stockade_lab.emulator import EmulatorThread
from tests.integration.test_controller import (
    ControllerThread,
    options,
    pod,
    put,
    rule_sets,
)
from tests.integration.test_controller_nodes import agent_reports, node, samples
from tests.integration.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
LAG_COUNT = "stockade_controller_sync_lag_seconds_count"

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[EmulatorThread]:
    """The emulator without stockade's CRDs (the test creates them later)."""
    thread = EmulatorThread()
    thread.start()
    thread.write_kubeconfig(tmp_path / "kubeconfig")
    try:
        yield thread
    finally:
        thread.stop()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_waits_for_crds_then_watches_rule_sets(emu: EmulatorThread, tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    put(emu, node("node-1"))
    put(emu, pod("web-1", "node-1", "10.0.1.1"))
    ctl = ControllerThread(options(tmp_path, metrics_port=port, metrics_host="127.0.0.1"))
    ctl.start()
    try:
        gate = ctl.controller.gate
        wait_for(lambda: gate.checks >= 3, message="a few looks at discovery")
        assert not gate.served
        assert gate.waiting_for == (
            "noderulesets.stockade.dev/v1alpha1",
            "peersets.stockade.dev/v1alpha1",
        )
        assert _status(f"{base}/healthz") == 200, "waiting is alive"
        assert _status(f"{base}/readyz") == 503, "waiting is not ready"
        assert ctl.controller.publisher.published is None, "nothing started"

        for crd in yaml.safe_load_all((ROOT / "manifests/crds.yaml").read_text()):
            emu.emulator.put_object(crd)
        wait_for(lambda: gate.served, timeout=30, message="the CRDs seen")
        wait_for(lambda: "node-1" in rule_sets(emu), message="node-1's rule set")
        wait_for(ctl.settled)
        assert _status(f"{base}/readyz") == 200

        # The NodeRuleSet watch is live: the agent's status reaches the sync lag.
        agent_reports(emu, "node-1")
        wait_for(
            lambda: samples(ctl, LAG_COUNT).get((("cause", "other"),)) == 1,
            message="the agent's status observed (NodeRuleSets watched)",
        )
    finally:
        ctl.stop()


def test_stops_cleanly_while_waiting(emu: EmulatorThread, tmp_path: Path) -> None:
    ctl = ControllerThread(options(tmp_path)).start()
    wait_for(lambda: ctl.controller.gate.checks >= 1)
    ctl.stop()
    assert not ctl.controller.gate.served
    assert ctl.writes() == 0
