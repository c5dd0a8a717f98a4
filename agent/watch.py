"""The agent's API side: watch the node's rule set and the peer sets, apply, report.

:class:`AgentWatcher` runs five tasks on one event loop (six with
``isolate_new_pods``: a reflector of the node's Pods, see :mod:`stockade.agent.newpods`):

- two :class:`~stockade.reflector.Reflector` s (list, then watch from the
  list's resourceVersion; on 410 Gone list again; on any other error back off
  exponentially with jitter, 0.2 s up to 10 s by default): the node's own
  NodeRuleSet (field selector ``metadata.name=<node>``) and every PeerSet, into a
  :class:`~stockade.agent.cache.WatchCache`;
- the sync loop: whenever the cache changes it assembles the bundle (a rule set
  whose named sets are all complete) and hands it to the
  :class:`~stockade.agent.applier.Applier` (in a worker thread: the applier
  blocks on subprocesses); every ``resync_interval`` it resyncs (drift repair),
  whether or not the API server answers;
- the saver: after a successful apply, the bundle goes to ``state_dir`` (tmp + fsync +
  rename) in a worker thread, at most once per ``save_interval`` (the latest bundle
  wins; the last one is also written when the watcher stops);
- the status writer: merge-patches the NodeRuleSet's ``status`` subresource
  (:mod:`stockade.agent.status`) when it differs from what the API holds, retrying
  with back-off while the API is away.

Fail static: nothing here ever removes rules because the API server is unreachable
or answers errors. The kernel changes only when a complete, renderable bundle
arrives that differs from the applied one. Absence is not "no policy" either: when
the node's NodeRuleSet disappears (a DELETED event, a relist without it, the CRD
itself gone: 404) the agent keeps enforcing what it applied, logs a WARNING once,
sets ``stockade_agent_rule_set_missing`` to 1 and says so in ``/readyz?verbose``.
Only an explicit empty rule set (a NodeRuleSet with no policies, which the
controller publishes for every Node) or ``stockade-agent cleanup`` opens a node.

At start, if nothing could be applied from the API within ``restore_after``
seconds (API down, or its bundle incomplete or invalid), the bundle saved on disk is
applied, so a node that reboots during an API outage comes back enforcing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from stockade.agent.applier import Applier, RefusedError
from stockade.agent.cache import Ready, StateError, WatchCache
from stockade.agent.decide import (
    Apply,
    Decision,
    GiveUpWaiting,
    Keep,
    Refuse,
    RefuseAgain,
    RuleSetGone,
    SyncView,
    Wait,
    decide,
    next_wakeup,
    on_wakeup,
)
from stockade.agent.executor import CommandError
from stockade.agent.health import Health
from stockade.agent.metrics import AgentMetrics
from stockade.agent.newpods import LocalPods
from stockade.agent.plan import PlanError
from stockade.agent.saver import DEFAULT_STATE_DIR, BundleSaver, StateStore
from stockade.agent.status import (
    REASON_APPLIED,
    REASON_INCOMPLETE,
    REASON_INVALID,
    REASON_KERNEL,
    REASON_REFUSED,
    SyncState,
    status_payload,
)
from stockade.agent.status_writer import StatusWriter
from stockade.kube import (
    NODE_RULE_SETS,
    PEER_SETS,
    PODS,
    JsonObject,
    KubeError,
    NotFound,
    Resource,
    rfc3339,
)
from stockade.reflector import Backoff, Reflector, WatchApi
from stockade.ruleset import NodeRuleSet

log = logging.getLogger("stockade.agent.watch")

# What a kernel write may raise and the loop survives, the old state staying in force:
# a tool's error, a plan the kernel's state does not allow, and a netlink error that
# no adapter turned into a CommandError (the conntrack cut's dump and deletes, the
# node's addresses, a netlink socket refused).
KERNEL_ERRORS = (CommandError, PlanError, NetlinkError)


@dataclass(frozen=True)
class WatchOptions:
    """How the watcher behaves; the defaults are the agent's."""

    node: str
    state_dir: Path | None = DEFAULT_STATE_DIR
    resync_interval: float = 30.0
    restore_after: float = 3.0
    set_grace: float = 5.0
    backoff_min: float = 0.2
    backoff_max: float = 10.0
    status_refresh: float = 60.0
    watch_timeout: int = 300
    # At most one save of the applied bundle this often (the latest wins), in a
    # worker thread: a big node's bundle is megabytes, and churn applies often.
    save_interval: float = 1.0


# --------------------------------------------------------------------------- the watcher


class AgentWatcher:
    """Keeps the kernel of one node in line with its NodeRuleSet and PeerSets.

    A thin shell: reflectors fill the cache, :func:`~stockade.agent.decide.decide`
    says what to do with what the cache assembled, and this class does it (apply
    in a worker thread, record the state), then hands the state to the
    :class:`~stockade.agent.status_writer.StatusWriter` and applied bundles to the
    :class:`~stockade.agent.saver.BundleSaver`. Whether new pods are isolated is the
    applier's option (``RenderOptions.isolate_new_pods``), read from there only.
    ``clock`` (monotonic) and ``wall`` (epoch seconds, for metrics and the status's
    timestamps) are the only time sources.
    """

    def __init__(
        self,
        client: WatchApi,
        applier: Applier,
        options: WatchOptions,
        metrics: AgentMetrics | None = None,
        after_resync: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        health: Health | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.health = health  # beaten after every sync-loop iteration (agent/health.py)
        self.applier = applier
        self.options = options
        self.metrics = metrics or AgentMetrics()
        self.after_resync = after_resync
        self.clock = clock
        self.wall = wall
        self.node = options.node
        self.cache = WatchCache(options.node)
        self.store = StateStore(options.state_dir) if options.state_dir is not None else None
        self.saver = (
            BundleSaver(self.store, options.save_interval, self._state_error)
            if self.store is not None
            else None
        )
        self._changed = asyncio.Event()
        self.status_writer = StatusWriter(
            client,
            self.node,
            self.cache,
            self.desired_status,
            refresh=options.status_refresh,
            backoff=self._backoff(),
            clock=clock,
            on_error=self._api_error,
        )
        self.nodes = self._reflector(
            NODE_RULE_SETS,
            self._list_nodes,
            self.cache.node_event,
            field_selector=f"metadata.name={options.node}",
            on_error=self._node_api_error,
        )
        self.peers = self._reflector(PEER_SETS, self.cache.replace_peers, self.cache.peer_event)
        self.local_pods: LocalPods | None = None
        self.pods: Reflector | None = None
        if self.isolate_new_pods:
            self.local_pods = LocalPods()
            self.pods = self._reflector(
                PODS,
                self.local_pods.replace,
                self.local_pods.event,
                field_selector=f"spec.nodeName={options.node}",
            )
        self.applied_pending: dict[str, str] = {}  # pending address -> pod, as applied
        self.applied: Ready | None = None  # what the kernel was last told to hold
        self.applied_from: str | None = None  # "api" or "disk"
        self.state: SyncState | None = None
        self.applies = 0
        self.resyncs = 0
        self.restored = False
        self._restore_done = False
        self._looked = False  # sync_once ran: the state speaks of what the API holds
        self._waiting: tuple[Any, float] | None = None  # (what is missing, since)
        self._retry_at: float | None = None
        self._refused: tuple[str, str] | None = None  # (hash, error) of a refused bundle
        # Why the node's NodeRuleSet is absent (None: it is there, or not looked yet);
        # the applied state stays in force meanwhile (fail static).
        self.rule_set_missing: str | None = None
        self._crd_missing = False  # the last list of NodeRuleSets answered 404
        self._kernel_backoff = self._backoff()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def isolate_new_pods(self) -> bool:
        """Whether pods the rule set does not list yet are isolated (the applier's option)."""
        return self.applier.options.isolate_new_pods

    @property
    def saves(self) -> int:
        """Bundles written to disk so far."""
        return self.saver.saves if self.saver is not None else 0

    @property
    def status_writes(self) -> int:
        """Status patches written so far."""
        return self.status_writer.writes

    def _backoff(self) -> Backoff:
        return Backoff(self.options.backoff_min, self.options.backoff_max)

    def _reflector(
        self,
        resource: Resource,
        on_list: Callable[[list[JsonObject]], None],
        on_event: Callable[[str, JsonObject], None],
        field_selector: str | None = None,
        on_error: Callable[[KubeError], None] | None = None,
    ) -> Reflector:
        return Reflector(
            self.client,
            resource,
            on_list,
            on_event,
            self._changed.set,
            field_selector=field_selector,
            backoff=self._backoff(),
            watch_timeout=self.options.watch_timeout,
            on_error=on_error or self._api_error,
            clock=self.clock,
        )

    def _list_nodes(self, objs: list[JsonObject]) -> None:
        self._crd_missing = False
        self.cache.replace_nodes(objs)

    def _node_api_error(self, exc: KubeError) -> None:
        self._api_error(exc)
        if isinstance(exc, NotFound) and not self._crd_missing:
            # The resource itself is gone (the CRD was deleted): so is the object.
            self._crd_missing = True
            self.cache.set_node(None)
            self._changed.set()

    def _report_health(self) -> None:
        """One sync-loop iteration done: beat, with what the loop knows now."""
        if self.health is None:
            return
        state = self.state
        error = None
        if state is not None and not state.applied:
            error = state.message or state.reason
        self.health.beat(
            applied_from=self.applied_from if self.applied is not None else None,
            last_sync=self.metrics.last_sync,
            error=error,
            api_reachable=all(
                r.connected for r in (self.nodes, self.peers, self.pods) if r is not None
            ),
            rule_set_missing=self.rule_set_missing,
        )

    def _api_error(self, exc: KubeError) -> None:
        del exc
        self.metrics.errors.labels("api").inc()

    def _state_error(self, exc: OSError) -> None:
        del exc
        self.metrics.errors.labels("state").inc()

    def _record(self, report: Any) -> None:
        rendered = self.applier.last.rendered if self.applier.last else None
        self.metrics.record(report, rendered, self.wall())

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Until :meth:`stop`; re-raises if a task fails."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks = [
            asyncio.create_task(self.nodes.run(), name="watch-noderulesets"),
            asyncio.create_task(self.peers.run(), name="watch-peersets"),
            *([asyncio.create_task(self.pods.run(), name="watch-pods")] if self.pods else []),
            asyncio.create_task(self._sync_loop(), name="sync"),
            asyncio.create_task(self.status_writer.run(), name="status"),
            *([asyncio.create_task(self.saver.run(), name="save")] if self.saver else []),
        ]
        stopper = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper:
                    task.result()  # raises what the task raised
        finally:
            for task in [stopper, *tasks]:
                task.cancel()
            await asyncio.gather(stopper, *tasks, return_exceptions=True)
            # What was applied last is on disk when the agent stops (or reboots).
            if self.saver is not None:
                await self.saver.flush()

    def stop(self) -> None:
        """Ask :meth:`run` to end; safe from any thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    # ------------------------------------------------------------------ the sync loop

    async def _sync_loop(self) -> None:
        start = self.clock()
        restore_at = start + self.options.restore_after
        next_resync = start + self.options.resync_interval
        while True:
            timeout = next_wakeup(
                self.clock(),
                next_resync=next_resync,
                restore_at=restore_at if self._restore_pending else None,
                retry_at=self._retry_at,
                waiting_since=self._waiting[1] if self._waiting is not None else None,
                grace=self.options.set_grace,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            self._changed.clear()
            wake = on_wakeup(
                self.clock(),
                self._view(),
                synced=self.nodes.synced and self.peers.synced,
                restore_at=restore_at if self._restore_pending else None,
                next_resync=next_resync,
                crd_reason=self._crd_reason,
            )
            self._retry_at = wake.retry_at
            if wake.look:
                await self.sync_once()
            elif wake.gone is not None:
                self._rule_set_gone(wake.gone)
            # sync_once may have applied a bundle: then there is nothing to restore.
            if wake.restore_due and self._restore_pending:
                await self.restore()
            if wake.resync:
                await self.resync()
                next_resync = self.clock() + self.options.resync_interval
            self.status_writer.mark_dirty()
            self._report_health()

    @property
    def _restore_pending(self) -> bool:
        return self.applied is None and not self._restore_done

    def _view(self) -> SyncView:
        return SyncView(
            applied_hash=self.applied.hash if self.applied is not None else None,
            applied_pending=self.applied_pending,
            refused=self._refused,
            waiting=self._waiting,
            crd_missing=self._crd_missing,
            retry_at=self._retry_at,
        )

    async def sync_once(self) -> None:
        """Look at the cache and act: apply a new complete bundle, or record why not."""
        self._looked = True
        outcome = self.cache.assemble()
        pending = self.pending(outcome.node) if isinstance(outcome, Ready) else {}
        decision = decide(
            outcome,
            self._view(),
            pending=pending,
            now=self.clock(),
            grace=self.options.set_grace,
            crd_reason=self._crd_reason,
        )
        if isinstance(decision, RuleSetGone):
            self._rule_set_gone(decision.reason)
        else:
            self._rule_set_back()
        if not isinstance(decision, Wait | GiveUpWaiting):
            self._waiting = None
        await self._act(decision, pending)
        if not isinstance(outcome, Ready) and self.applied is not None:
            await self._repend(self.applied)

    async def _act(self, decision: Decision, pending: dict[str, str]) -> None:
        """Perform ``decision`` (recording state; applying in a worker thread)."""
        if isinstance(decision, Apply):
            await self._apply(decision.ready, pending)
        elif isinstance(decision, Keep):
            self.applied_from = "api"
            self.applied = decision.ready  # the same content; the generation may be newer
            self._applied_state(decision.ready)
        elif isinstance(decision, RefuseAgain):
            self._not_applied(decision.ready.generation, REASON_REFUSED, decision.error)
            if self.applied is not None:  # new pods still wait for a rule set to list them
                await self._repend(self.applied)
        elif isinstance(decision, Wait):
            self._waiting = (decision.key, decision.since)
            if decision.first:
                log.info("%s", decision.message)
        elif isinstance(decision, GiveUpWaiting):
            self._waiting = (decision.key, decision.since)
            self._not_applied(decision.generation, REASON_INCOMPLETE, decision.message)
        elif isinstance(decision, Refuse) and self._record_refusal(
            decision.generation, REASON_INVALID, decision.error
        ):
            log.error("%s; keeping the last applied state", decision.error)

    @property
    def _crd_reason(self) -> str:
        return (
            f"NodeRuleSet {self.node} not found: "
            "the noderulesets resource answers 404 (CRD deleted?)"
        )

    def _rule_set_gone(self, reason: str) -> None:
        """No rule set for the node: keep what is applied, and say so (once)."""
        if self.rule_set_missing is None:
            if self.applied is not None:
                log.warning(
                    "%s: keeping the applied rule set (generation %s, hash %s) in force; "
                    "only an explicit empty NodeRuleSet or `stockade-agent cleanup` opens "
                    "the node",
                    reason,
                    self.applied.generation,
                    self.applied.hash,
                )
            else:
                log.warning("%s: nothing applied, nothing enforced until one exists", reason)
        self.rule_set_missing = reason
        self.metrics.rule_set_missing.set(1)

    def _rule_set_back(self) -> None:
        if self.rule_set_missing is not None:
            log.info("NodeRuleSet %s is back", self.node)
        self.rule_set_missing = None
        self.metrics.rule_set_missing.set(0)

    def pending(self, node: NodeRuleSet) -> dict[str, str]:
        """Addresses of local pods ``node`` does not list yet (empty unless isolating)."""
        if self.local_pods is None or self.pods is None or not self.pods.synced:
            return {}
        return self.local_pods.pending(node.known_pods)

    async def _repend(self, applied: Ready) -> None:
        """The applied bundle stays; only the set of pending pods may have moved."""
        pending = self.pending(applied.node)
        if pending == self.applied_pending:
            return
        try:
            report = await asyncio.to_thread(
                self.applier.apply, applied.node, applied.peer_sets, pending
            )
        except (RefusedError, *KERNEL_ERRORS) as exc:
            self.metrics.errors.labels("kernel").inc()
            log.error("cannot update the pending pods: %s; will retry", exc)
            return
        self._pending_applied(pending)
        self._record(report)

    def _pending_applied(self, pending: dict[str, str]) -> None:
        before = self.applied_pending
        isolated = sorted({pod for ip, pod in pending.items() if ip not in before})
        released = sorted({pod for ip, pod in before.items() if ip not in pending})
        if isolated:
            log.info("isolating until the rule set covers them: %s", ", ".join(isolated))
        if released:
            log.info("covered by the rule set now: %s", ", ".join(released))
        self.applied_pending = pending
        self.metrics.pending_pods.set(len(set(pending.values())))

    async def _apply(self, ready: Ready, pending: dict[str, str]) -> None:
        try:
            report = await asyncio.to_thread(
                self.applier.apply, ready.node, ready.peer_sets, pending
            )
        except RefusedError as exc:
            self._refused = (ready.hash, str(exc))
            if self._record_refusal(ready.generation, REASON_REFUSED, str(exc)):
                log.error("%s; keeping the last applied state", exc)
            if self.applied is not None:
                await self._repend(self.applied)
            return
        except KERNEL_ERRORS as exc:
            # A kernel that refuses a write (a tool's error, netlink's) is retried
            # with back-off; the old state stays.
            self.metrics.errors.labels("kernel").inc()
            delay = self._kernel_backoff.next()
            self._retry_at = self.clock() + delay
            self._not_applied(ready.generation, REASON_KERNEL, f"kernel write failed: {exc}")
            log.error("apply failed: %s; retrying in %.1fs", exc, delay)
            return
        self._kernel_backoff.reset()
        self.applies += 1
        self.applied = ready
        self.applied_from = "api"
        self._pending_applied(pending)
        self._record(report)
        log.info(
            "applied generation %s (hash %s): %d difference(s), %.1f ms",
            ready.generation,
            ready.hash,
            len(report.differences),
            report.seconds * 1000,
        )
        self._applied_state(ready)
        if self.saver is not None:
            self.saver.want(ready)

    def _applied_state(self, ready: Ready) -> None:
        last_sync = self.state.last_sync if self.state else None
        if self.state is None or not self.state.applied or self.state.applied_hash != ready.hash:
            last_sync = rfc3339(self.wall())
        self.state = SyncState(
            observed_generation=ready.generation,
            applied=True,
            reason=REASON_APPLIED,
            applied_generation=ready.generation,
            applied_hash=ready.hash,
            applied_rules=ready.node,
            last_sync=last_sync,
        )

    def _record_refusal(self, generation: int | None, reason: str, message: str) -> bool:
        """Record a refused generation; True the first time (log and count it once)."""
        old = self.state
        first = not (
            old is not None
            and old.reason == reason
            and old.message == message
            and old.observed_generation == generation
        )
        if first:
            self.metrics.errors.labels("refused").inc()
        self._not_applied(generation, reason, message)
        return first

    def _not_applied(self, generation: int | None, reason: str, message: str) -> None:
        applied = self.applied
        self.state = SyncState(
            observed_generation=generation,
            applied=False,
            reason=reason,
            message=message,
            applied_generation=applied.generation if applied else None,
            applied_hash=applied.hash if applied else None,
            applied_rules=applied.node if applied else None,
            last_sync=self.state.last_sync if self.state else None,
        )

    async def restore(self) -> None:
        """Apply the bundle saved on disk (once, when nothing came from the API in time)."""
        self._restore_done = True
        if self.store is None:
            return
        try:
            ready = self.store.load(self.node)
        except (OSError, StateError) as exc:
            self.metrics.errors.labels("state").inc()
            log.error("cannot restore the saved bundle: %s", exc)
            return
        if ready is None:
            log.warning("nothing applied from the API yet and no saved bundle to restore")
            return
        pending = self.pending(ready.node)
        try:
            report = await asyncio.to_thread(
                self.applier.apply, ready.node, ready.peer_sets, pending
            )
        except (RefusedError, *KERNEL_ERRORS) as exc:
            self.metrics.errors.labels("state").inc()
            log.error("cannot apply the saved bundle: %s", exc)
            return
        self.restored = True
        self.applies += 1
        self.applied = ready
        self.applied_from = "disk"
        self._pending_applied(pending)
        self._record(report)
        log.warning(
            "nothing from the API within %.1fs: enforcing the saved bundle "
            "(generation %s, hash %s)",
            self.options.restore_after,
            ready.generation,
            ready.hash,
        )
        if self.state is None:
            self._applied_state(ready)

    async def resync(self) -> None:
        """Drift repair against the last applied state (needs no API)."""
        if self.applied is None:
            return
        try:
            report = await asyncio.to_thread(self.applier.resync)
            if self.after_resync is not None:
                await asyncio.to_thread(self.after_resync)
        except KERNEL_ERRORS as exc:
            self.metrics.errors.labels("kernel").inc()
            log.error("resync failed: %s; will retry", exc)
            return
        self.resyncs += 1
        self._record(report)
        if report.changed:
            log.warning("resync repaired drift: %s", "; ".join(report.differences))
        if self.state is not None and self.state.applied:
            self.state = replace(self.state, last_sync=rfc3339(self.wall()))

    # ------------------------------------------------------------------ status

    def desired_status(self) -> dict[str, Any] | None:
        """The status to write now, or None (nothing to say, or no object to say it on)."""
        if self.state is None or self.cache.node_object is None or not self._looked:
            return None
        return status_payload(self.state, rfc3339(self.wall()), self.cache.node_status)
