"""The agent's /healthz, /readyz and /metrics (agent/health.py), and their wiring.

:class:`Health` with an injected clock (deadline logic); the HTTP endpoints over real
HTTP on 127.0.0.1 (an ephemeral port); the watcher beating it (against the fake API
of test_agent_watch); the command line; the DaemonSet's probes.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade.agent.cli import _serve_health, build_parser
from stockade.agent.health import (
    BIND_ENV,
    NOT_READY,
    Check,
    Health,
    HealthServer,
    default_deadline,
    error_counts,
    serve,
)
from stockade.agent.metrics import AgentMetrics
from stockade.agent.watch import AgentWatcher
from stockade.compiler import CompiledCluster
from tests.unit.test_agent_watch import (
    FakeApi,
    FakeApplier,
    _options,
    _until,
    cluster_docs,
    compile_docs,
    objects_for,
)
from tests.unit.test_manifests import MANIFESTS, find, objects


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- Health


def test_default_deadline_is_three_resyncs_at_least_a_minute() -> None:
    assert default_deadline(30) == 90
    assert default_deadline(5) == 60
    assert default_deadline(0.5) == 60
    assert default_deadline(100) == 300


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Health(0)


def test_liveness_follows_the_beats() -> None:
    clock = FakeClock()
    health = Health(90, clock=clock)
    assert health.liveness() == Check(True)  # the grace of a fresh start
    clock.now += 90
    assert health.liveness().ok
    clock.now += 5
    assert health.liveness() == Check(
        False, "sync loop has not completed an iteration in 95 s since start (deadline 90 s)"
    )
    health.beat()
    assert health.liveness() == Check(True, "ok")
    clock.now += 95
    assert health.liveness() == Check(False, "sync loop stalled for 95 s (deadline 90 s)")
    health.beat()
    assert health.liveness().ok


def test_liveness_does_not_care_about_the_api_or_errors() -> None:
    """Fail static: an agent cut off from the API, or refusing a rule set, is alive."""
    clock = FakeClock()
    health = Health(60, clock=clock)
    for _ in range(10):
        clock.now += 30
        health.beat(applied_from="disk", api_reachable=False, error="kernel write failed: x")
        assert health.liveness().ok
        assert health.readiness().ok


def test_readiness_needs_an_applied_rule_set_and_keeps_it() -> None:
    clock = FakeClock()
    health = Health(60, clock=clock)
    assert health.readiness() == Check(False, NOT_READY)
    health.beat(api_reachable=True)
    assert health.readiness() == Check(False, "no rule set applied yet")
    health.beat(applied_from="disk")
    assert health.readiness() == Check(True)
    # Later rounds that apply nothing new (or fail) leave the node enforcing: still ready.
    health.beat(error="refused: policy x")
    assert health.readiness().ok
    assert health.detail()["applied_from"] == "disk"
    health.beat(applied_from="api")
    assert health.detail()["applied_from"] == "api"


def test_a_stalled_loop_is_not_ready_either() -> None:
    clock = FakeClock()
    health = Health(60, clock=clock)
    health.beat(applied_from="api")
    clock.now += 61
    check = health.readiness()
    assert not check.ok
    assert check.reason.startswith("sync loop stalled for 61 s")


def test_detail() -> None:
    clock, wall = FakeClock(50.0), FakeClock(1_700_000_000.0)
    health = Health(60, clock=clock, wall=wall)
    first = health.detail()
    assert first == {
        "live": True,
        "ready": False,
        "reason": NOT_READY,
        "deadline_seconds": 60,
        "uptime_seconds": 0.0,
        "iterations": 0,
        "last_iteration_seconds_ago": None,
        "applied_from": None,
        "last_successful_sync": None,
        "last_successful_sync_seconds_ago": None,
        "last_error": None,
        "api_reachable": None,
        "rule_set_missing": None,
        "families": None,
    }
    clock.now += 2
    health.beat(applied_from="api", last_sync=wall.now - 1, api_reachable=True)
    health.beat(error="waiting for PeerSets: ps-1", api_reachable=False)
    clock.now += 3
    wall.now += 3
    got = health.detail()
    assert got["ready"] is True
    assert got["reason"] == "ok"
    assert got["iterations"] == 2
    assert got["uptime_seconds"] == 5.0
    assert got["last_iteration_seconds_ago"] == 3.0
    assert got["last_successful_sync"] == "2023-11-14T22:13:19Z"
    assert got["last_successful_sync_seconds_ago"] == 4.0
    assert got["last_error"] == "waiting for PeerSets: ps-1"
    assert got["api_reachable"] is False
    clock.now += 100
    assert health.detail()["reason"].startswith("sync loop stalled for 103 s")


def test_beats_from_another_thread() -> None:
    """The loop beats in its thread, the HTTP thread reads: no lost or torn updates."""
    health = Health(60)

    def beat() -> None:
        for _ in range(2000):
            health.beat(applied_from="api", api_reachable=True)

    threads = [threading.Thread(target=beat) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        assert health.liveness().ok
        health.detail()
    for t in threads:
        t.join()
    assert health.detail()["iterations"] == 8000


# --------------------------------------------------------------------------- HTTP


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    """Status, content type and body (an error status is an answer too)."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[Health, AgentMetrics, FakeClock, HealthServer]]:
    clock = FakeClock()
    health = Health(60, clock=clock)
    metrics = AgentMetrics()
    server = serve(health, metrics.registry, 0, "127.0.0.1")
    try:
        yield health, metrics, clock, server
    finally:
        server.close()


def test_endpoints(served: tuple[Health, AgentMetrics, FakeClock, HealthServer]) -> None:
    health, _metrics, clock, server = served
    base = server.url
    assert server.port > 0
    assert get(f"{base}/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    assert get(f"{base}/readyz") == (503, "text/plain; charset=utf-8", f"{NOT_READY}\n")
    health.beat(applied_from="api", last_sync=1_700_000_000.0, api_reachable=True)
    assert get(f"{base}/readyz")[::2] == (200, "ok\n")
    # The loop stops beating (its clock moves on): both fail, with the reason.
    clock.now += 95
    assert get(f"{base}/healthz")[::2] == (
        503,
        "sync loop stalled for 95 s (deadline 60 s)\n",
    )
    assert get(f"{base}/readyz")[0] == 503
    health.beat()
    assert get(f"{base}/healthz")[0] == 200
    assert get(f"{base}/nothing")[0] == 404


def test_verbose_is_json_with_the_same_status(
    served: tuple[Health, AgentMetrics, FakeClock, HealthServer],
) -> None:
    health, metrics, _clock, server = served
    metrics.errors.labels("api").inc(3)
    health.beat(error="kernel write failed: boom", api_reachable=False)
    status, ctype, body = get(f"{server.url}/readyz?verbose")
    assert (status, ctype) == (503, "application/json")
    detail: dict[str, Any] = json.loads(body)
    assert detail["ready"] is False
    assert detail["live"] is True
    assert detail["reason"] == NOT_READY
    assert detail["last_error"] == "kernel write failed: boom"
    assert detail["api_reachable"] is False
    assert detail["errors"] == {"api": 3.0}
    status, ctype, body = get(f"{server.url}/healthz?verbose=1")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body)["live"] is True


def test_metrics_are_the_agents_registry(
    served: tuple[Health, AgentMetrics, FakeClock, HealthServer],
) -> None:
    _health, metrics, _clock, server = served
    metrics.errors.labels("kernel").inc()
    metrics.last_success.set(1234)
    status, ctype, body = get(f"{server.url}/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    assert 'stockade_agent_errors_total{kind="kernel"} 1.0' in body
    assert "stockade_agent_last_successful_sync_timestamp_seconds 1234.0" in body
    # A scraper asking for OpenMetrics gets it, as from prometheus_client's own server.
    status, ctype, body = get(
        f"{server.url}/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200
    assert ctype.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


def test_error_counts() -> None:
    metrics = AgentMetrics()
    assert error_counts(metrics.registry) == {}
    metrics.errors.labels("refused").inc()
    metrics.errors.labels("api").inc(2)
    assert error_counts(metrics.registry) == {"refused": 1.0, "api": 2.0}


def test_close_releases_the_port() -> None:
    health = Health(60)
    metrics = AgentMetrics()
    first = serve(health, metrics.registry, 0, "127.0.0.1")
    port = first.port
    first.close()
    again = serve(health, metrics.registry, port, "127.0.0.1")
    try:
        assert get(f"{again.url}/healthz")[0] == 200
    finally:
        again.close()


def test_ipv6() -> None:
    """An IPv6 address (a node's, from ``status.hostIPs``) works too."""
    try:
        server = serve(Health(60), AgentMetrics().registry, 0, "::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert server.url == f"http://[::1]:{server.port}"
        assert get(f"{server.url}/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    finally:
        server.close()


def test_the_server_answers_while_the_loop_is_stuck() -> None:
    """The server thread does not beat: a loop blocked for good reads as unhealthy."""
    health = Health(0.2)
    metrics = AgentMetrics()
    server = serve(health, metrics.registry, 0, "127.0.0.1")
    stuck = threading.Event()
    release = threading.Event()

    def loop() -> None:
        health.beat(applied_from="file")
        stuck.set()
        release.wait(10)  # a hung iptables-restore, say
        health.beat()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        assert stuck.wait(5)
        for _ in range(100):
            status, _ctype, body = get(f"{server.url}/healthz")
            if status == 503:
                break
            threading.Event().wait(0.02)
        assert status == 503
        assert re.fullmatch(r"sync loop stalled for \d+(\.\d)? s \(deadline 0\.2 s\)\n", body)
        release.set()
        thread.join(5)
        assert get(f"{server.url}/healthz")[0] == 200
    finally:
        release.set()
        thread.join(5)
        server.close()


# --------------------------------------------------------------------------- the watcher


def test_the_watcher_beats_each_round(tmp_path: Path) -> None:
    compiled: CompiledCluster = compile_docs(cluster_docs())

    async def go() -> None:
        api = FakeApi()
        api.down = True
        applier = FakeApplier()
        health = Health(60)
        watcher = AgentWatcher(api, applier, _options(tmp_path, restore_after=60), health=health)
        task = asyncio.create_task(watcher.run())
        # The API is down and nothing is saved: alive (fail static), not ready.
        await _until(lambda: health.detail()["iterations"] >= 2)
        assert health.liveness().ok
        assert health.readiness() == Check(False, NOT_READY)
        assert health.detail()["api_reachable"] is False
        # The API answers: the rule set is applied, the agent is ready.
        node_obj, peers = objects_for("n1", compiled)
        api.objects["noderulesets"]["n1"] = node_obj
        api.objects["peersets"] = {p["metadata"]["name"]: p for p in peers}
        api.down = False
        await _until(lambda: health.readiness().ok)
        detail = health.detail()
        assert detail["applied_from"] == "api"
        assert detail["api_reachable"] is True
        assert detail["last_successful_sync"] is not None
        assert detail["last_error"] is None
        # Resyncs keep it beating with no API event at all.
        beats = detail["iterations"]
        await _until(lambda: health.detail()["iterations"] >= beats + 2)
        watcher.stop()
        await task

    asyncio.run(go())


# --------------------------------------------------------------------------- the command line


def test_run_options() -> None:
    args = build_parser().parse_args(["run", "--node", "n1"])
    assert (args.metrics_port, args.bind_address, args.liveness_deadline) == (0, None, 0.0)
    assert _serve_health(args, AgentMetrics()).deadline == 90  # 3 x 30 s
    args = build_parser().parse_args(["run", "--resync-interval", "5"])
    assert _serve_health(args, AgentMetrics()).deadline == 60
    args = build_parser().parse_args(["run", "--liveness-deadline", "7.5"])
    assert _serve_health(args, AgentMetrics()).deadline == 7.5


# --------------------------------------------------------------------------- the DaemonSet


def test_the_daemonset_probes_the_agents_endpoints() -> None:
    ds = find(objects(MANIFESTS), "DaemonSet", "stockade-agent")
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == args.metrics_port  # one port, named, used by the probes
    assert args.metrics_port not in (9100, 9101, 9091, 9099, *range(9962, 9966))
    # Bound to the node's own addresses (the kubelet probes the pod IP: the node's).
    assert args.bind_address is None
    env = {e["name"]: e for e in container["env"]}
    assert env[BIND_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIPs"
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert http["port"] in ("metrics", args.metrics_port), probe
    # The kubelet gives up only after the agent's own deadline has passed too.
    assert not args.liveness_deadline
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 30
