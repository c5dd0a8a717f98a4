"""The agent's liveness and readiness, and the one HTTP endpoint that serves them.

:class:`Health` is what the agent's main loop reports to: the sync loop (API mode)
or the poll loop (file mode) calls :meth:`Health.beat` at the end of every
iteration, with what it knows (whether a rule set is enforced and where it came
from, the last successful sync, the current error, whether the API answers).

- **Live** while the loop completed an iteration within ``deadline`` seconds
  (default :func:`default_deadline`: three resync intervals, at least 60 s). The loop
  wakes at least once per resync interval, API or not, so only a loop that is stuck
  (a hung iptables-restore, a blocked event loop) misses it. The API
  server plays no part: an agent that cannot reach it keeps enforcing what it has
  (fail static), and restarting it would change nothing.
- **Ready** once a rule set is enforced: one successful apply since start, or the
  bundle saved on disk restored (sticky: a later refused or failed apply leaves the
  last state in force, so the node stays ready), and while live.

:func:`serve` runs a stdlib HTTP server in a daemon thread, never on the agent's
event loop: a stuck loop stops beating and shows as 503, instead of taking the
endpoint down with it. It serves ``/metrics`` (the agent's registry, in the format
the scraper asks for), ``/healthz`` and ``/readyz`` (200 ``ok``, or 503 and the
reason); ``?verbose`` answers the detail as JSON, with the same status code.
:func:`serve_all` serves the same on several addresses (one socket each: the
node's addresses from the downward API, ``status.hostIPs``), on one port.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("stockade.agent.health")

MIN_DEADLINE = 60.0
DEADLINE_RESYNCS = 3
NOT_READY = "no rule set applied yet"

BIND_ENV = "STOCKADE_BIND_ADDRESS"
"""The addresses to serve on, comma-separated (the DaemonSet sets it from ``status.hostIPs``)."""
LOOPBACK = "127.0.0.1"


def default_deadline(resync_interval: float) -> float:
    """How long the loop may go without an iteration: 3 resync intervals, at least 60 s."""
    return max(DEADLINE_RESYNCS * resync_interval, MIN_DEADLINE)


@dataclass(frozen=True, slots=True)
class Check:
    """The answer of one probe: ``ok``, else why not."""

    ok: bool
    reason: str = "ok"


class Health:
    """Thread-safe: the main loop beats, the HTTP thread asks.

    ``clock`` is monotonic (deadlines), ``wall`` is Unix time (for display); both are
    injectable for tests.
    """

    def __init__(
        self,
        deadline: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if deadline <= 0:
            raise ValueError("the liveness deadline must be positive")
        self.deadline = deadline
        self.clock = clock
        self.wall = wall
        self._lock = threading.Lock()
        self._started = clock()
        self._last_beat: float | None = None
        self._beats = 0
        self._applied_from: str | None = None
        self._last_sync: float | None = None
        self._error: str | None = None
        self._api: bool | None = None
        self._rule_set_missing: str | None = None
        self._families: list[str] | None = None

    def beat(
        self,
        *,
        applied_from: str | None = None,
        last_sync: float | None = None,
        error: str | None = None,
        api_reachable: bool | None = None,
        rule_set_missing: str | None = None,
    ) -> None:
        """The loop completed an iteration; the keywords say what it knows now.

        ``applied_from`` ("api", "disk", "file"): a rule set is enforced, taken from
        there (None: nothing yet; readiness, once reached, is kept). ``last_sync``:
        Unix time of the last successful apply or resync. ``error``: why the wanted
        state is not enforced now (None: nothing wrong). ``api_reachable``: None in
        file mode. ``rule_set_missing``: why the node has no NodeRuleSet (the
        applied rules stay in force; shown, not judged: readiness is unchanged).
        """
        with self._lock:
            self._last_beat = self.clock()
            self._beats += 1
            if applied_from is not None:
                self._applied_from = applied_from
            if last_sync is not None:
                self._last_sync = last_sync
            self._error = error
            self._api = api_reachable
            self._rule_set_missing = rule_set_missing

    def set_families(self, families: list[str]) -> None:
        """The IP families the agent programs (detected at start), for ``?verbose``."""
        with self._lock:
            self._families = list(families)

    def _liveness(self, now: float) -> Check:
        since = self._last_beat if self._last_beat is not None else self._started
        age = now - since
        if age <= self.deadline:
            return Check(True)
        took = f"{age:.0f} s" if age >= 10 else f"{age:.1f} s"
        what = (
            f"stalled for {took}"
            if self._last_beat is not None
            else f"has not completed an iteration in {took} since start"
        )
        return Check(False, f"sync loop {what} (deadline {self.deadline:g} s)")

    def liveness(self) -> Check:
        """Live while the loop completed an iteration within the deadline (since start)."""
        with self._lock:
            return self._liveness(self.clock())

    def readiness(self) -> Check:
        """Ready once a rule set is enforced, and while live."""
        with self._lock:
            if self._applied_from is None:
                return Check(False, NOT_READY)
            return self._liveness(self.clock())

    def detail(self) -> dict[str, Any]:
        """Everything known, as JSON-ready data (``?verbose``)."""
        with self._lock:
            now, wall = self.clock(), self.wall()
            live = self._liveness(now)
            ready = Check(False, NOT_READY) if self._applied_from is None else live
            beat = self._last_beat
            return {
                "live": live.ok,
                "ready": ready.ok,
                "reason": live.reason if not live.ok else ready.reason,
                "deadline_seconds": self.deadline,
                "uptime_seconds": round(now - self._started, 3),
                "iterations": self._beats,
                "last_iteration_seconds_ago": None if beat is None else round(now - beat, 3),
                "applied_from": self._applied_from,
                "last_successful_sync": _rfc3339(self._last_sync),
                "last_successful_sync_seconds_ago": (
                    None if self._last_sync is None else round(wall - self._last_sync, 3)
                ),
                "last_error": self._error,
                "api_reachable": self._api,
                "rule_set_missing": self._rule_set_missing,
                "families": self._families,
            }


def _rfc3339(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_counts(registry: CollectorRegistry) -> dict[str, float]:
    """``stockade_agent_errors_total`` by kind, read from the registry."""
    counts: dict[str, float] = {}
    for family in registry.collect():
        if family.name == "stockade_agent_errors":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels.get("kind", "")] = sample.value
    return counts


# --------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    health: Health
    registry: CollectorRegistry

    def __init__(self, host: str, port: int) -> None:
        # IPv4 or IPv6 as the address says.
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        self.address_family = info[0][0]
        super().__init__((host, port), _Handler, bind_and_activate=False)
        try:
            if self.address_family == socket.AF_INET6:
                # One address, one family: "::1" or a host's IPv6 address is IPv6 only;
                # "::" also takes IPv4 (asked for explicitly, never the default).
                wildcard = ipaddress.ip_address(host.split("%", 1)[0]).is_unspecified
                self.socket.setsockopt(
                    socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if wildcard else 1
                )
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper or prober that hung up early is not worth a traceback on stderr.
        log.debug("HTTP request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "stockade-agent"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        verbose = "verbose" in parse_qs(url.query, keep_blank_values=True)
        if url.path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.registry), content_type)
        elif url.path in ("/healthz", "/readyz"):
            health = self.server.health
            check = health.liveness() if url.path == "/healthz" else health.readiness()
            status = 200 if check.ok else 503
            if verbose:
                detail = {**health.detail(), "errors": error_counts(self.server.registry)}
                body = json.dumps(detail, indent=2, sort_keys=True) + "\n"
                self._send(status, body.encode(), "application/json")
            else:
                self._send(status, f"{check.reason}\n".encode(), "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found: try /metrics, /healthz, /readyz\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` in a daemon thread; :meth:`close` ends it."""

    def __init__(
        self, health: Health, registry: CollectorRegistry, port: int, host: str = LOOPBACK
    ) -> None:
        self._server = _Server(host, port)
        self._server.health = health
        self._server.registry = registry
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="stockade-agent-http",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The base address, for logs and tests."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve(
    health: Health, registry: CollectorRegistry, port: int, host: str = LOOPBACK
) -> HealthServer:
    """Start serving (``port`` 0: an ephemeral one, see :attr:`HealthServer.port`)."""
    server = HealthServer(health, registry, port, host)
    log.info("serving /metrics, /healthz and /readyz on %s", server.url)
    return server


def parse_bind_addresses(values: Iterable[str]) -> list[str]:
    """IP addresses from values that may each be comma-separated; raises ValueError.

    ``status.hostIPs`` through the downward API reads ``10.0.0.5,fd00::5``; an
    IPv6 address may be given bare or in brackets. Duplicates are dropped.
    """
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            text = part.strip().removeprefix("[").removesuffix("]")
            if not text:
                continue
            try:
                address = str(ipaddress.ip_address(text))
            except ValueError:
                raise ValueError(f"bind address {part.strip()!r} is not an IP address") from None
            if address not in out:
                out.append(address)
    return out


def serve_all(
    health: Health, registry: CollectorRegistry, port: int, hosts: Iterable[str]
) -> list[HealthServer]:
    """Serve on every address of ``hosts`` (one socket each), on ``port``; all or none."""
    servers: list[HealthServer] = []
    try:
        for host in hosts:
            servers.append(serve(health, registry, port, host))
    except OSError as exc:
        for server in servers:
            server.close()
        raise OSError(f"cannot serve /metrics on {host} port {port}: {exc}") from exc
    return servers
