"""``stockade-controller``: kopf watches, the compiler, a Lease, the publisher.

Every replica watches and compiles; the one holding the Lease publishes (or every
replica, with ``--standalone``, meant for a single replica). :func:`run` is the
whole controller as a coroutine, so tests can run it in a thread against an
emulated API server and stop it with a flag.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from stockade.compiler import DEFAULT_SHARD_SIZE, Compiler
from stockade.controller.discovery import (
    OPTIONAL_RECHECK,
    CrdGate,
    client_fetch,
)
from stockade.controller.handlers import build_registry, operator_settings
from stockade.controller.leader import LeaderElector
from stockade.controller.metrics import ControllerMetrics, serve_http
from stockade.controller.publisher import LeanWrites, Publisher
from stockade.controller.state import ControllerState
from stockade.kube import (
    CLUSTER_NETWORK_POLICIES,
    ISOLATION_POLICIES,
    KubeClient,
    KubeConfig,
    Resource,
)

log = logging.getLogger("stockade.controller")


@dataclass
class Options:
    """The controller's settings (the command line, parsed)."""

    kubeconfig: str | None = None
    flush_interval: float = 0.2  # seconds
    metrics_port: int = 8080  # 0: no HTTP endpoint
    metrics_host: str = "0.0.0.0"
    lease_name: str = "stockade-controller"
    lease_namespace: str | None = None  # default: $POD_NAMESPACE, else the config's
    lease_duration: float = 15.0
    identity: str = ""
    standalone: bool = False
    # Seconds between looks for an absent ClusterNetworkPolicy CRD (the controller
    # stops once it is served, to start again watching it).
    optional_recheck: float = OPTIONAL_RECHECK
    shard_size: int = DEFAULT_SHARD_SIZE
    log_level: str = "INFO"
    # Full garbage collections only when idle, at least this often (0: CPython's own).
    gc_idle_interval: float = 60.0
    # Pods, Namespaces and NetworkPolicies by reflectors of our own inside kopf's
    # lifecycle (operator/feed.py); False: by kopf handlers like every other kind.
    feeds: bool = True


def default_identity() -> str:
    """``$POD_NAME`` in a pod, else host name and process id."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        prog="stockade-controller",
        description="Compile NetworkPolicies into per-node NodeRuleSets and shared PeerSets.",
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG)")
    p.add_argument(
        "--flush-interval",
        type=float,
        default=200,
        metavar="MS",
        help="publish at most every MS milliseconds (default 200)",
    )
    p.add_argument("--metrics-port", type=int, default=8080, help="/metrics and /healthz (0: off)")
    p.add_argument("--metrics-host", default="0.0.0.0", help="address to serve metrics on")
    p.add_argument("--lease-name", default="stockade-controller", help="Lease for leader election")
    p.add_argument("--lease-namespace", help="namespace of the Lease (default: $POD_NAMESPACE)")
    p.add_argument(
        "--lease-duration", type=float, default=15.0, help="seconds before a standby takes over"
    )
    p.add_argument("--identity", default="", help="this replica's name in the Lease")
    p.add_argument("--standalone", action="store_true", help="no leader election: always publish")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="PeerSet shard size")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    p.add_argument(
        "--gc-idle-interval",
        type=float,
        default=60.0,
        metavar="S",
        help="full garbage collections only when idle, every S seconds at most "
        "(0: Python's own schedule)",
    )
    p.add_argument(
        "--kopf-watches",
        action="store_true",
        help="watch Pods, Namespaces and NetworkPolicies with kopf handlers instead of "
        "the controller's feeds (slower in bursts)",
    )
    ns = p.parse_args(argv)
    return Options(
        kubeconfig=ns.kubeconfig,
        flush_interval=ns.flush_interval / 1000.0,
        metrics_port=ns.metrics_port,
        metrics_host=ns.metrics_host,
        lease_name=ns.lease_name,
        lease_namespace=ns.lease_namespace,
        lease_duration=ns.lease_duration,
        identity=ns.identity,
        standalone=ns.standalone,
        shard_size=ns.shard_size,
        log_level=ns.log_level,
        gc_idle_interval=ns.gc_idle_interval,
        feeds=not ns.kopf_watches,
    )


@dataclass
class Controller:
    """The parts of a running controller, for tests to look at."""

    state: ControllerState
    publisher: Publisher
    metrics: ControllerMetrics
    elector: LeaderElector | None
    # Polls discovery until the CRDs are served; nothing else starts before.
    gate: CrdGate


def assemble(
    options: Options,
    config: KubeConfig,
    client: KubeClient,
    metrics: ControllerMetrics | None = None,
) -> Controller:
    """Wire state, publisher and (unless standalone) the leader elector together."""
    metrics = metrics or ControllerMetrics()
    state = ControllerState(Compiler(options.shard_size), clock=time.monotonic)
    publisher = Publisher(
        LeanWrites(client), state, metrics, interval=options.flush_interval, clock=time.monotonic
    )
    state.on_change = publisher.mark
    elector: LeaderElector | None = None
    if options.standalone:
        publisher.set_leader(True)
    else:
        namespace = options.lease_namespace or os.environ.get("POD_NAMESPACE") or config.namespace
        elector = LeaderElector(
            client,
            options.lease_name,
            namespace,
            options.identity or default_identity(),
            duration=options.lease_duration,
            on_change=publisher.set_leader,
        )
    return Controller(state, publisher, metrics, elector, CrdGate(client_fetch(client)))


async def run(
    options: Options,
    stop: threading.Event | None = None,
    started: threading.Event | None = None,
    metrics: ControllerMetrics | None = None,
    on_start: list[Controller] | None = None,
) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM in the main thread).

    First waits until the CRDs are served (``Controller.gate``; /readyz answers 503
    meanwhile), then runs kopf, the publisher and the election. ``started`` is set
    once the HTTP endpoint is up, before that wait; ``on_start`` (a list) receives
    the :class:`Controller`, so an in-process test can read its state and metrics.
    """
    config = KubeConfig.load(options.kubeconfig)
    async with KubeClient(config) as client:
        controller = assemble(options, config, client, metrics)
        if on_start is not None:
            on_start.append(controller)
        gate = controller.gate
        tasks: list[asyncio.Task[None]] = []

        def healthy() -> bool:
            return not any(t.done() for t in tasks)

        def ready() -> bool:
            return gate.served

        runner = None
        if options.metrics_port:
            runner = await serve_http(
                controller.metrics, options.metrics_port, healthy, options.metrics_host, ready
            )
        if started is not None:
            started.set()
        try:
            # kopf resolves its resources once (scanning is off): start nothing before
            # the CRDs are served, or NodeRuleSets would never be watched.
            if not await _unless_stopped(gate.wait(), stop):
                return
            optional: list[object] = []

            async def look_optional() -> None:
                optional.extend(await gate.optional_served())

            if not await _unless_stopped(look_optional(), stop):
                return
            if CLUSTER_NETWORK_POLICIES in optional:
                controller.publisher.watch_cluster_policies()
            if ISOLATION_POLICIES in optional:
                controller.publisher.watch_isolation_policies()
            await _run_parts(options, config, controller, client, tasks, stop)
        finally:
            if runner is not None:
                await runner.cleanup()


async def _unless_stopped(work: Coroutine[Any, Any, None], stop: threading.Event | None) -> bool:
    """Run ``work`` to its end (True), or until ``stop`` is set (False; it is cancelled)."""
    task = asyncio.create_task(work, name="crd-wait")
    if stop is None:
        await task
        return True
    flag = asyncio.create_task(_wait_thread_event(stop), name="stop-flag")
    await asyncio.wait([task, flag], return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, flag):
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
    if task.cancelled():
        return False
    error = task.exception()
    if error is not None:
        raise error
    return True


async def _run_parts(
    options: Options,
    config: KubeConfig,
    controller: Controller,
    client: KubeClient,
    tasks: list[asyncio.Task[None]],
    stop: threading.Event | None,
) -> None:
    """kopf, the publisher, the election (and the GC pacer) until one ends or ``stop``."""
    state, publisher, metrics, elector = (
        controller.state,
        controller.publisher,
        controller.metrics,
        controller.elector,
    )
    registry = build_registry(
        state,
        config,
        metrics,
        publisher.observe_rule_set,
        cluster_policies=publisher.cluster_policies_watched,
        isolation_policies=publisher.isolation_policies_watched,
        feed_client=client if options.feeds else None,
        listed_by_feed=publisher.listed_by_feed,
    )
    settings = operator_settings()
    settings.process.ultimate_exiting_timeout = None
    kopf_stop = asyncio.Event()
    tasks.append(asyncio.create_task(publisher.run(), name="publisher"))
    crd_appeared: asyncio.Task[Resource] | None = None
    absent = [
        resource
        for resource, watched in (
            (CLUSTER_NETWORK_POLICIES, publisher.cluster_policies_watched),
            (ISOLATION_POLICIES, publisher.isolation_policies_watched),
        )
        if not watched
    ]
    if absent:
        crd_appeared = asyncio.create_task(
            controller.gate.until_served(absent, options.optional_recheck),
            name="crd-appeared",
        )
    if elector is not None:
        tasks.append(asyncio.create_task(elector.run(), name="leader-election"))
    # The collector's schedule is the process's: only a controller that is the
    # process (main thread) takes it over, not one embedded in a test's thread.
    if options.gc_idle_interval > 0 and threading.current_thread() is threading.main_thread():
        pacer = GcPacer(
            lambda: not publisher.coalescer.dirty and not publisher.pending,
            options.gc_idle_interval,
            starting=publisher.starting,
        )
        tasks.append(asyncio.create_task(pacer.run(), name="gc-pacer"))
    kopf_task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            standalone=True,
            clusterwide=True,
            stop_flag=kopf_stop,
        ),
        name="kopf",
    )
    watchers: list[asyncio.Task[Any]] = [*tasks, kopf_task]
    if crd_appeared is not None:
        watchers.append(crd_appeared)
    if stop is not None:
        watchers.append(asyncio.create_task(_wait_thread_event(stop), name="stop-flag"))
    try:
        done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.get_name() != "stop-flag" and not task.cancelled() and task.exception():
                log.error("%s failed", task.get_name(), exc_info=task.exception())
            elif task is crd_appeared and not task.cancelled():
                served = crd_appeared.result()
                log.warning(
                    "CustomResourceDefinition %s.%s/%s is served now: "
                    "stopping, to start again watching %ss",
                    served.plural,
                    served.group,
                    served.version,
                    served.kind,
                )
    finally:
        kopf_stop.set()
        for task in watchers:
            if task is not kopf_task:
                task.cancel()
        for task in watchers:
            if task is not kopf_task:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(kopf_task, 30)
        if elector is not None:
            await elector.release()


class GcPacer:
    """Full garbage collections when the controller is idle, not in the middle of a burst.

    CPython collects its oldest generation whenever it has grown by a quarter since
    the last full collection. The controller's heap (the compiler's state, kopf's
    memory of every object) is large and grows during a burst of events, so such
    collections came again and again, each walking the whole heap: 9-10 of them,
    0.2-0.35 s each, during a 5,000-pod burst (``bench.controller``), about half of
    the controller's CPU. Here the young generations are collected as usual; the
    full collection runs when the publisher has been idle for a check interval and
    ``interval`` seconds passed since the last one, or after ``at_most`` seconds
    whatever the load (so garbage in the old generation stays bounded).

    ``starting``: while it says so (at most ``start_limit`` seconds), the collector
    does not run at all, young generations included. The start takes the whole
    cluster in at once (the initial lists, the first flush): millions of long-lived
    objects that no collection can free, each young collection walking the newest
    of them, about a tenth of the start's CPU.
    """

    def __init__(
        self,
        idle: Callable[[], bool],
        interval: float = 60.0,
        at_most: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], object] = gc.collect,
        starting: Callable[[], bool] | None = None,
        start_limit: float = 120.0,
    ) -> None:
        self.idle = idle
        self.interval = interval
        self.at_most = at_most if at_most is not None else 10 * interval
        self.clock = clock
        self.collect = collect
        self.starting = starting
        self.start_limit = start_limit
        self.last = self.began = clock()
        self.collections = 0
        self._was_idle = False
        self._saved: tuple[int, int, int] | None = None
        self._held = False

    def due(self) -> bool:
        """Whether to collect now (call about once a second)."""
        idle = self.idle()
        idle_long_enough, self._was_idle = idle and self._was_idle, idle
        since = self.clock() - self.last
        return since >= self.at_most or (since >= self.interval and idle_long_enough)

    @property
    def held(self) -> bool:
        """The collector is off (the start is under way)."""
        return self._held

    def step(self) -> bool:
        """Collect if due; True when it did."""
        if self._held:
            still = self.starting is not None and self.starting()
            if still and self.clock() - self.began < self.start_limit:
                return False
            gc.enable()
            self._held = False
            self.last = self.clock()
            return False
        if not self.due():
            return False
        self.collect()
        self.collections += 1
        self.last = self.clock()
        self._was_idle = False
        return True

    def install(self) -> None:
        """Take the oldest generation's collections over (the young ones stay automatic)."""
        young = gc.get_threshold()
        self._saved = young
        gc.set_threshold(young[0], young[1], 1_000_000_000)
        if self.starting is not None and gc.isenabled():
            gc.disable()
            self._held = True

    def uninstall(self) -> None:
        """Give CPython its own schedule back."""
        if self._held:
            gc.enable()
            self._held = False
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    async def run(self, check: float = 1.0) -> None:
        """Install, then check every ``check`` seconds (cancel to stop; uninstalls)."""
        self.install()
        try:
            while True:
                # The end of the start is noticed within a tenth of a second.
                await asyncio.sleep(min(check, 0.1) if self._held else check)
                self.step()
        finally:
            self.uninstall()


async def _wait_thread_event(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``stockade-controller`` entry point."""
    options = parse_args(argv)
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        # kopf says "Handler ... succeeded" at INFO for every event of every object:
        # a line per policy and namespace at start, and CPU in a burst. Its warnings
        # and errors still show; --log-level DEBUG shows everything.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # A development aid: profile the whole run into this file (pstats format).
    profile_to = os.environ.get("STOCKADE_CONTROLLER_PROFILE")
    profiler = cProfile.Profile() if profile_to else None
    try:
        if profiler is not None:
            profiler.enable()
        asyncio.run(run(options))
    except KeyboardInterrupt:
        return 130
    finally:
        if profiler is not None and profile_to:
            profiler.disable()
            profiler.dump_stats(profile_to)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
