"""The controller's metrics (on a registry of its own) and its /healthz and /metrics.

Nothing is registered at import time: every controller instance (two in the
fail-over test, in one process) has its own :class:`ControllerMetrics`.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest


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
    metrics: ControllerMetrics, port: int, healthy: Callable[[], bool], host: str = "0.0.0.0"
) -> web.AppRunner:
    """Serve /metrics and /healthz until the returned runner is cleaned up."""

    async def metrics_handler(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health_handler(_request: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(text="ok\n" if ok else "unhealthy\n", status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
