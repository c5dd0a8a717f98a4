"""The agent's /healthz, /readyz and /metrics with a real kernel and the emulated API.

- ``stockade-agent run --node n1`` (a process of its own, as in the DaemonSet) with the
  API server failing at first: alive (fail static), not ready; once the API answers
  and the rule set is applied, ready. The same for the file mode (``-f``).
- An agent whose event loop is blocked (in-process, so the test can block it): the
  HTTP thread keeps answering, /healthz turns 503 with the reason, and 200 again once
  the loop runs.

The kernel state lives in a node namespace (``stk-<run>-n-n1``); the HTTP endpoint
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade.agent.applier import Applier
from stockade.agent.backend import Tools
from stockade.agent.executor import SubprocessExecutor
from stockade.agent.health import NOT_READY, Health, HealthServer, serve
from stockade.agent.metrics import AgentMetrics
from stockade.compiler import CompiledCluster
from stockade_lab.emulator import EmulatorThread
from stockade_lab.netlab import Lab, Node
from tests.integration.test_agent_watch_live import WatcherThread
from tests.integration.waiting import wait_for
from tests.unit.test_agent_watch import cluster_docs, compile_docs, node_object, peer_object

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- harness


def get(url: str) -> tuple[int, str]:
    """Status and body; (0, reason) when nothing answers (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError) as exc:
        return 0, str(exc)


def verbose(url: str) -> dict[str, Any]:
    status, body = get(f"{url}?verbose")
    assert status in (200, 503), body
    detail: dict[str, Any] = json.loads(body)
    return detail


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def publish(emu: EmulatorThread, compiled: CompiledCluster) -> None:
    for ps in compiled.peer_sets.values():
        emu.emulator.put_object(peer_object(ps))
    emu.emulator.put_object(node_object(compiled.node_rule_sets["n1"]))


@pytest.fixture
def node() -> Iterator[Node]:
    with Lab(fabric4="192.168.78.0/24", fabric6="fd78::/64", clean_leftovers=False) as lab:
        yield lab.add_node("n1", pod_cidr4="10.0.1.0/24")


@pytest.fixture
def kernel_cleanup(node: Node) -> Iterator[Applier]:
    """An applier on the node's namespace; removes what the agent left (fail static)."""
    applier = Applier(SubprocessExecutor(netns=node.ns), netns=node.ns, tools=Tools("nft"))
    yield applier
    applier.cleanup()


class AgentProcess:
    """``stockade-agent run ...`` as a process; ``stop()`` sends SIGTERM and checks exit 0."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        argv = [
            sys.executable,
            "-m",
            "stockade.agent.cli",
            "run",
            *args,
            "--backend",
            "nft",
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.port),
        ]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ}
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def up(self) -> AgentProcess:
        wait_for(
            lambda: get(f"{self.url}/healthz")[0] or self.proc.poll() is not None,
            message="the agent's HTTP endpoint",
        )
        assert self.proc.poll() is None, self.output()
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"the agent ignored SIGTERM:\n{self.output()}") from None
        assert self.proc.returncode == 0, self.output()


# --------------------------------------------------------------------------- API mode


def test_api_mode_ready_after_the_first_apply_alive_without_the_api(
    emu: EmulatorThread, node: Node, kernel_cleanup: Applier, tmp_path: Path
) -> None:
    # The API server answers every request with 503 from the start.
    fault = emu.emulator.faults.add(status=503, reason="ServiceUnavailable")
    agent = AgentProcess(
        [
            "--node",
            "n1",
            "--netns",
            node.ns,
            "--kubeconfig",
            str(tmp_path / "kubeconfig"),
            "--state-dir",
            str(tmp_path / "state"),  # empty: nothing to restore
            "--resync-interval",
            "0.5",
            "--restore-after",
            "0.5",
            "--liveness-deadline",
            "2",
        ],
        tmp_path / "agent.log",
    )
    try:
        agent.up()
        assert get(f"{agent.url}/readyz") == (503, f"{NOT_READY}\n")
        # Longer than the liveness deadline without the API: alive all along (fail static).
        until = time.monotonic() + 3
        while time.monotonic() < until:
            assert get(f"{agent.url}/healthz") == (200, "ok\n"), agent.output()
            assert get(f"{agent.url}/readyz")[0] == 503
            time.sleep(0.2)
        detail = verbose(f"{agent.url}/readyz")
        assert detail["live"] is True
        assert detail["ready"] is False
        assert detail["api_reachable"] is False
        assert detail["applied_from"] is None
        assert detail["errors"]["api"] >= 1
        assert fault.hits >= 1

        # The API comes back with the node's rule set: applied, then ready.
        publish(emu, compile_docs(cluster_docs()))
        emu.emulator.faults.remove(fault)
        wait_for(
            lambda: get(f"{agent.url}/readyz") == (200, "ok\n"),
            timeout=30,
            message="/readyz 200 after the first apply",
        )
        assert get(f"{agent.url}/healthz") == (200, "ok\n")
        detail = verbose(f"{agent.url}/healthz")
        assert detail["applied_from"] == "api"
        assert detail["api_reachable"] is True
        assert detail["last_successful_sync"] is not None
        assert detail["last_error"] is None
        status, metrics = get(f"{agent.url}/metrics")
        assert status == 200
        assert "stockade_agent_last_successful_sync_timestamp_seconds" in metrics
        assert 'stockade_agent_chains{family="4"}' in metrics
        rules = kernel_cleanup.executor.run([kernel_cleanup.tools.save(4), "-t", "filter"])
        assert "STK-FORWARD" in rules
    finally:
        agent.stop()


# --------------------------------------------------------------------------- file mode


def test_file_mode_ready_after_the_first_apply(
    node: Node, kernel_cleanup: Applier, tmp_path: Path
) -> None:
    compiled = compile_docs(cluster_docs())
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(
        yaml.safe_dump_all(
            [
                node_object(compiled.node_rule_sets["n1"]),
                *(peer_object(ps) for ps in compiled.peer_sets.values()),
            ]
        )
    )
    agent = AgentProcess(
        ["-f", str(bundle), "--node", "n1", "--netns", node.ns, "--poll-interval", "0.1"],
        tmp_path / "agent.log",
    ).up()
    try:
        wait_for(lambda: get(f"{agent.url}/readyz") == (200, "ok\n"), message="/readyz 200")
        assert get(f"{agent.url}/healthz") == (200, "ok\n")
        detail = verbose(f"{agent.url}/readyz")
        assert detail["applied_from"] == "file"
        assert detail["api_reachable"] is None
        assert detail["last_successful_sync"] is not None
    finally:
        agent.stop()


# --------------------------------------------------------------------------- a stalled loop


class BlockableAgent(WatcherThread):
    """An API-mode agent in a thread, served on 127.0.0.1; its loop can be blocked."""

    def __init__(self, kubeconfig: Path, applier: Applier, state_dir: Path) -> None:
        metrics = AgentMetrics()
        health = Health(1.0)  # a tiny deadline: three resync intervals and a bit
        super().__init__(
            kubeconfig,
            "",
            state_dir,
            applier=applier,
            metrics=metrics,
            health=health,
            resync_interval=0.3,
        )
        self.server: HealthServer = serve(health, metrics.registry, 0, "127.0.0.1")
        self.url = self.server.url

    def start(self) -> BlockableAgent:
        super().start()
        return self

    def block(self, seconds: float) -> None:
        """Block the agent's event loop (as a hung call on it would)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(time.sleep, seconds)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.server.close()


def test_a_stalled_loop_is_unhealthy_and_recovers(
    emu: EmulatorThread, kernel_cleanup: Applier, tmp_path: Path
) -> None:
    publish(emu, compile_docs(cluster_docs()))
    agent = BlockableAgent(tmp_path / "kubeconfig", kernel_cleanup, tmp_path / "state").start()
    try:
        wait_for(lambda: get(f"{agent.url}/readyz") == (200, "ok\n"), message="ready")
        # Healthy over several deadlines while the loop runs.
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            assert get(f"{agent.url}/healthz") == (200, "ok\n")
            time.sleep(0.1)

        agent.block(4.0)
        _status, body = wait_for(
            lambda: (got := get(f"{agent.url}/healthz"))[0] == 503 and got,
            timeout=5,
            message="/healthz 503 while the loop is blocked",
        )
        assert body.startswith("sync loop stalled for "), body
        assert body.endswith("(deadline 1 s)\n"), body
        assert get(f"{agent.url}/readyz")[0] == 503  # a stuck agent is not ready either
        assert get(f"{agent.url}/metrics")[0] == 200  # the endpoint itself still answers
        assert verbose(f"{agent.url}/healthz")["live"] is False

        # The loop runs again: healthy and ready again, nothing was torn down.
        wait_for(lambda: get(f"{agent.url}/healthz") == (200, "ok\n"), timeout=10)
        wait_for(lambda: get(f"{agent.url}/readyz") == (200, "ok\n"), timeout=5)
        assert kernel_cleanup.verify() == []
    finally:
        agent.stop()
