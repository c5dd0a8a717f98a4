"""The controller's metrics (on a registry of its own) and its /metrics, /healthz, /readyz.

Nothing is registered at import time: every controller instance (two in the
fail-over test, in one process) has its own :class:`ControllerMetrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

# Policy change to node applied: from tens of milliseconds (a quiet cluster, a fast
# agent) to minutes (an agent that cannot apply).
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OLDEST_UNAPPLIED = "stockade_controller_oldest_unapplied_change_seconds"


class _OldestUnapplied(Collector):
    """Per node, the age of its oldest rule-set change not yet applied, read at scrape."""

    def __init__(self, source: Callable[[], dict[str, float]]) -> None:
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            OLDEST_UNAPPLIED,
            "Seconds since the oldest change of the node's rule set that its agent "
            "has not reported applied (absent: none pending)",
            labels=["node"],
        )
        for node, age in sorted(self.source().items()):
            family.add_metric([node], age)
        yield family


class ControllerMetrics:
    """Writes by kind and verb, flush timing, backlog, leadership, Events posted."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.writes = Counter(
            "stockade_controller_writes",
            "API writes of published objects",
            ["kind", "verb"],
            registry=r,
        )
        self.write_errors = Counter(
            "stockade_controller_write_errors",
            "API writes that failed (retried at a later flush)",
            ["kind", "verb"],
            registry=r,
        )
        self.flushes = Counter("stockade_controller_flushes", "Flushes run", registry=r)
        self.flush_seconds = Histogram(
            "stockade_controller_flush_duration_seconds",
            "Time of one flush: compile, diff, writes and Events",
            registry=r,
        )
        self.dirty_backlog = Gauge(
            "stockade_controller_dirty_backlog",
            "Published objects not yet known to match what is desired",
            registry=r,
        )
        self.desired = Gauge(
            "stockade_controller_desired_objects", "Objects to publish", ["kind"], registry=r
        )
        self.leader = Gauge(
            "stockade_controller_leader", "1 when this replica publishes", registry=r
        )
        self.watch_events = Counter(
            "stockade_controller_watch_events", "Watch events received", ["kind"], registry=r
        )
        self.rejected = Counter(
            "stockade_controller_rejected_objects",
            "Objects rejected as invalid (never widening what policy allows)",
            ["kind"],
            registry=r,
        )
        self.events = Counter(
            "stockade_controller_events_posted",
            "Kubernetes Events posted on NetworkPolicies",
            ["type", "reason"],
            registry=r,
        )

        self.sync_lag = Histogram(
            "stockade_controller_sync_lag_seconds",
            "From the watch event that changed a node's rule set (the NetworkPolicy's, "
            "cause=policy; else the first event of the flush, cause=other) to the node's "
            "agent reporting that generation applied",
            ["cause"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._oldest: _OldestUnapplied | None = None

    def track_unapplied(self, source: Callable[[], dict[str, float]]) -> None:
        """Serve ``stockade_controller_oldest_unapplied_change_seconds`` from ``source``."""
        if self._oldest is not None:
            self.registry.unregister(self._oldest)
        self._oldest = _OldestUnapplied(source)
        self.registry.register(self._oldest)

    def write_count(self, kind: str | None = None, verb: str | None = None) -> float:
        """Writes so far, optionally of one kind and/or verb (for tests and logs)."""
        total = 0.0
        for metric in self.writes.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                if kind is not None and sample.labels.get("kind") != kind:
                    continue
                if verb is not None and sample.labels.get("verb") != verb:
                    continue
                total += sample.value
        return total

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


async def serve_http(
    metrics: ControllerMetrics,
    port: int,
    healthy: Callable[[], bool],
    host: str = "0.0.0.0",
    ready: Callable[[], bool] | None = None,
) -> web.AppRunner:
    """Serve /metrics, /healthz and /readyz until the returned runner is cleaned up.

    ``/healthz`` (liveness) fails only when ``healthy()`` is false; ``/readyz``
    (readiness) also while ``ready()`` is false, e.g. while the controller waits for
    its CRDs to be served (``ready`` None: the same as /healthz).
    """

    async def metrics_handler(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health_handler(_request: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(text="ok\n" if ok else "unhealthy\n", status=200 if ok else 503)

    async def ready_handler(_request: web.Request) -> web.Response:
        if not healthy():
            return web.Response(text="unhealthy\n", status=503)
        if ready is not None and not ready():
            return web.Response(text="not ready\n", status=503)
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health_handler)
    app.router.add_get("/readyz", ready_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
