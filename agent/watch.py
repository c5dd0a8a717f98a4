"""The agent's API side: watch the node's rule set and the peer sets, apply, report.

:class:`AgentWatcher` runs five tasks on one event loop (six with
``isolate_new_pods``: a reflector of the node's Pods, see :mod:`stockade.agent.newpods`):

- two :class:`Reflector` s (list, then watch from the list's resourceVersion; on
  410 Gone list again; on any other error back off exponentially with jitter, 0.2 s
  up to 10 s by default): the node's own NodeRuleSet (field selector
  ``metadata.name=<node>``) and every PeerSet, into a :class:`~stockade.agent.cache.WatchCache`;
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
import json
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from stockade.agent.applier import Applier, RefusedError
from stockade.agent.cache import (
    Invalid,
    Missing,
    Ready,
    StateError,
    Waiting,
    WatchCache,
    bundle_from_json,
    bundle_to_json,
)
from stockade.agent.executor import CommandError
from stockade.agent.health import Health
from stockade.agent.metrics import AgentMetrics
from stockade.agent.newpods import LocalPods
from stockade.agent.plan import PlanError
from stockade.agent.status import (
    REASON_APPLIED,
    REASON_INCOMPLETE,
    REASON_INVALID,
    REASON_KERNEL,
    REASON_REFUSED,
    SyncState,
    needs_write,
    status_payload,
)
from stockade.kube import (
    NODE_RULE_SETS,
    PEER_SETS,
    PODS,
    Gone,
    JsonObject,
    KubeError,
    NotFound,
    Resource,
    now_rfc3339,
)
from stockade.ruleset import NodeRuleSet, canonical_json

log = logging.getLogger("stockade.agent.watch")

DEFAULT_STATE_DIR = Path("/var/lib/stockade")
STATE_FILE = "bundle.json"


class WatchApi(Protocol):
    """The calls the watcher makes (:class:`~stockade.kube.KubeClient` has them)."""

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]: ...

    def watch(
        self,
        resource: Resource,
        resource_version: str | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, JsonObject]]: ...

    async def patch_status(
        self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject: ...


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
    # Watch the node's Pods and deny the traffic of those its rule set does not
    # list yet (agent/newpods.py); the applier needs RenderOptions(isolate_new_pods).
    isolate_new_pods: bool = False
    # At most one save of the applied bundle this often (the latest wins), in a
    # worker thread: a big node's bundle is megabytes, and churn applies often.
    save_interval: float = 1.0


# --------------------------------------------------------------------------- back-off


class Backoff:
    """Exponential back-off with jitter: ``low * 2**n`` capped at ``high``, times 0.5 .. 1."""

    def __init__(
        self, low: float = 0.2, high: float = 10.0, rng: Callable[[], float] = random.random
    ) -> None:
        if not 0 < low <= high:
            raise ValueError("need 0 < low <= high")
        self.low = low
        self.high = high
        self.rng = rng
        self.attempt = 0

    def next(self) -> float:
        """The next delay (grows until ``high``)."""
        ceiling = min(self.high, self.low * 2 ** min(self.attempt, 62))
        self.attempt += 1
        return float(ceiling * (0.5 + 0.5 * self.rng()))

    def reset(self) -> None:
        """Start again from ``low`` (after a success)."""
        self.attempt = 0


# --------------------------------------------------------------------------- on disk


class StateStore:
    """The last applied bundle, in ``directory/bundle.json``, replaced atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self._lock = threading.Lock()
        self._written = 0

    def save(self, ready: Ready, seq: int | None = None) -> bool:
        """Write the bundle: a temporary file, fsync, rename over the old one, fsync the dir.

        ``seq``: the bundle's place in the order of applies; an older one than what
        was written already is skipped (False), whichever thread comes last.
        """
        with self._lock:
            if seq is not None and seq <= self._written:
                return False
            self._write(ready)
            if seq is not None:
                self._written = seq
            return True

    def _write(self, ready: Ready) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        data = canonical_json(bundle_to_json(ready))
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load(self, node: str) -> Ready | None:
        """The saved bundle of ``node``; None when there is none. Raises :class:`StateError`."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise StateError(f"{self.path}: not JSON: {exc}") from None
        return bundle_from_json(raw, node)


# --------------------------------------------------------------------------- reflector


class Reflector:
    """List, then watch from the list's version; relist on 410; back off on errors.

    ``on_list`` gets every object of a (re)list; ``on_event`` each watch event;
    ``on_change`` is called after either. ``synced`` turns true after the first list.
    """

    def __init__(
        self,
        client: WatchApi,
        resource: Resource,
        on_list: Callable[[list[JsonObject]], None],
        on_event: Callable[[str, JsonObject], None],
        on_change: Callable[[], None],
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
        backoff: Backoff | None = None,
        watch_timeout: int = 300,
        on_error: Callable[[KubeError], None] | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.on_list = on_list
        self.on_event = on_event
        self.on_change = on_change
        self.on_error = on_error
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.backoff = backoff or Backoff()
        self.watch_timeout = watch_timeout
        self.synced = False
        self.connected = False
        self.resource_version: str | None = None
        self.lists = 0
        self.relists_gone = 0
        self.errors = 0

    async def run(self) -> None:
        """Forever (cancel to stop)."""
        name = self.resource.plural
        while True:
            try:
                if self.resource_version is None:
                    items, rv = await self.client.list(
                        self.resource,
                        label_selector=self.label_selector,
                        field_selector=self.field_selector,
                    )
                    self.lists += 1
                    self.on_list(items)
                    self.resource_version = rv
                    self.synced = self.connected = True
                    self.backoff.reset()
                    self.on_change()
                    log.debug("listed %d %s at %s", len(items), name, rv)
                started = time.monotonic()
                events = 0
                async for kind, obj in self.client.watch(
                    self.resource,
                    resource_version=self.resource_version,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    timeout_seconds=self.watch_timeout,
                ):
                    self.connected = True
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self.resource_version = str(version)
                    if kind != "BOOKMARK":
                        events += 1
                        self.on_event(kind, obj)
                        self.on_change()
                if events == 0 and time.monotonic() - started < 1.0:
                    # A stream that ends at once, again and again, must not spin.
                    await asyncio.sleep(self.backoff.next())
            except Gone:
                self.relists_gone += 1
                log.info(
                    "%s: resourceVersion %s expired (410); listing again",
                    name,
                    self.resource_version,
                )
                self.resource_version = None
            except KubeError as exc:
                self.errors += 1
                self.connected = False
                if self.on_error is not None:
                    self.on_error(exc)
                delay = self.backoff.next()
                log.warning("%s: %s; retrying in %.1fs", name, exc, delay)
                await asyncio.sleep(delay)


# --------------------------------------------------------------------------- the watcher


class AgentWatcher:
    """Keeps the kernel of one node in line with its NodeRuleSet and PeerSets."""

    def __init__(
        self,
        client: WatchApi,
        applier: Applier,
        options: WatchOptions,
        metrics: AgentMetrics | None = None,
        after_resync: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        health: Health | None = None,
    ) -> None:
        self.client = client
        self.health = health  # beaten after every sync-loop iteration (agent/health.py)
        self.applier = applier
        self.options = options
        self.metrics = metrics or AgentMetrics()
        self.after_resync = after_resync
        self.clock = clock
        self.node = options.node
        self.cache = WatchCache(options.node)
        self.store = StateStore(options.state_dir) if options.state_dir is not None else None
        self._unsaved: tuple[int, Ready] | None = None  # the latest applied bundle, if unsaved
        self._save_seq = 0
        self._save_wanted = asyncio.Event()
        self.saves = 0
        self._changed = asyncio.Event()
        self._status_dirty = asyncio.Event()
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
        if options.isolate_new_pods:
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
        self.status_writes = 0
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
        self._kernel_backoff = Backoff(options.backoff_min, options.backoff_max)
        self._sync_written_at: float | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
            backoff=Backoff(self.options.backoff_min, self.options.backoff_max),
            watch_timeout=self.options.watch_timeout,
            on_error=on_error or self._api_error,
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
            asyncio.create_task(self._status_loop(), name="status"),
            asyncio.create_task(self._save_loop(), name="save"),
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
            await self._flush_save()

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
            deadlines = [next_resync]
            if self.applied is None and not self._restore_done:
                deadlines.append(restore_at)
            if self._retry_at is not None:
                deadlines.append(self._retry_at)
            if self._waiting is not None:
                deadlines.append(self._waiting[1] + self.options.set_grace)
            timeout = max(0.0, min(deadlines) - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            self._changed.clear()
            now = self.clock()
            if self._retry_at is not None and now >= self._retry_at:
                self._retry_at = None
            if self.nodes.synced and self.peers.synced and self._retry_at is None:
                await self.sync_once()
            elif self._crd_missing:
                self._rule_set_gone(self._crd_reason)
            if self.applied is None and not self._restore_done and now >= restore_at:
                await self.restore()
            if now >= next_resync:
                await self.resync()
                next_resync = self.clock() + self.options.resync_interval
            self._status_dirty.set()
            self._report_health()

    async def sync_once(self) -> None:
        """Look at the cache and act: apply a new complete bundle, or record why not."""
        self._looked = True
        outcome = self.cache.assemble()
        if isinstance(outcome, Missing):
            self._waiting = None
            self._rule_set_gone(self._crd_reason if self._crd_missing else outcome.reason)
        else:
            self._rule_set_back()
        if isinstance(outcome, Ready):
            self._waiting = None
            await self._apply(outcome)
        elif isinstance(outcome, Waiting):
            key = (outcome.generation, tuple(sorted(outcome.missing.items())))
            if self._waiting is None or self._waiting[0] != key:
                self._waiting = (key, self.clock())
                log.info("%s", outcome.message)
            if self.clock() - self._waiting[1] >= self.options.set_grace:
                self._not_applied(outcome.generation, REASON_INCOMPLETE, outcome.message)
        elif isinstance(outcome, Invalid):
            self._waiting = None
            if self._record_refusal(outcome.generation, REASON_INVALID, outcome.error):
                log.error("%s; keeping the last applied state", outcome.error)
        if not isinstance(outcome, Ready) and self.applied is not None:
            await self._repend(self.applied)

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
        except (RefusedError, CommandError, PlanError) as exc:
            self.metrics.errors.labels("kernel").inc()
            log.error("cannot update the pending pods: %s; will retry", exc)
            return
        self._pending_applied(pending)
        rendered = self.applier.last.rendered if self.applier.last else None
        self.metrics.record(report, rendered, time.time())

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

    async def _apply(self, ready: Ready) -> None:
        pending = self.pending(ready.node)
        if (
            self.applied is not None
            and ready.hash == self.applied.hash
            and pending == self.applied_pending
        ):
            if self.applied_from != "api":
                self.applied_from = "api"
            self.applied = ready  # the same content; the generation may be newer
            self._applied_state(ready)
            return
        if self._refused is not None and self._refused[0] == ready.hash:
            self._not_applied(ready.generation, REASON_REFUSED, self._refused[1])
            if self.applied is not None:  # new pods still wait for a rule set to list them
                await self._repend(self.applied)
            return
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
        except (CommandError, PlanError) as exc:
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
        rendered = self.applier.last.rendered if self.applier.last else None
        self.metrics.record(report, rendered, time.time())
        log.info(
            "applied generation %s (hash %s): %d difference(s), %.1f ms",
            ready.generation,
            ready.hash,
            len(report.differences),
            report.seconds * 1000,
        )
        self._applied_state(ready)
        self._save(ready)

    def _applied_state(self, ready: Ready) -> None:
        last_sync = self.state.last_sync if self.state else None
        if self.state is None or not self.state.applied or self.state.applied_hash != ready.hash:
            last_sync = now_rfc3339()
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

    def _save(self, ready: Ready) -> None:
        """Have ``ready`` saved soon (:meth:`_save_loop`), superseding any unsaved one."""
        if self.store is None:
            return
        self._save_seq += 1
        self._unsaved = (self._save_seq, ready)
        self._save_wanted.set()

    async def _save_loop(self) -> None:
        while True:
            await self._save_wanted.wait()
            self._save_wanted.clear()
            await self._flush_save()
            await asyncio.sleep(self.options.save_interval)

    async def _flush_save(self) -> None:
        unsaved, self._unsaved = self._unsaved, None
        if unsaved is None or self.store is None:
            return
        seq, ready = unsaved
        try:
            if await asyncio.to_thread(self.store.save, ready, seq):
                self.saves += 1
        except OSError as exc:
            self.metrics.errors.labels("state").inc()
            log.error("cannot save the applied bundle to %s: %s", self.store.path, exc)

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
        except (RefusedError, CommandError, PlanError) as exc:
            self.metrics.errors.labels("state").inc()
            log.error("cannot apply the saved bundle: %s", exc)
            return
        self.restored = True
        self.applies += 1
        self.applied = ready
        self.applied_from = "disk"
        self._pending_applied(pending)
        rendered = self.applier.last.rendered if self.applier.last else None
        self.metrics.record(report, rendered, time.time())
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
        except (CommandError, PlanError) as exc:
            self.metrics.errors.labels("kernel").inc()
            log.error("resync failed: %s; will retry", exc)
            return
        self.resyncs += 1
        rendered = self.applier.last.rendered if self.applier.last else None
        self.metrics.record(report, rendered, time.time())
        if report.changed:
            log.warning("resync repaired drift: %s", "; ".join(report.differences))
        if self.state is not None and self.state.applied:
            self.state = replace(self.state, last_sync=now_rfc3339())

    # ------------------------------------------------------------------ status

    def desired_status(self) -> dict[str, Any] | None:
        """The status to write now, or None (nothing to say, or no object to say it on)."""
        if self.state is None or self.cache.node_object is None or not self._looked:
            return None
        return status_payload(self.state, now_rfc3339(), self.cache.node_status)

    async def _status_loop(self) -> None:
        backoff = Backoff(self.options.backoff_min, self.options.backoff_max)
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            while True:
                desired = self.desired_status()
                if desired is None:
                    break
                since = (
                    self.clock() - self._sync_written_at
                    if self._sync_written_at is not None
                    else None
                )
                if not needs_write(
                    self.cache.node_status,
                    desired,
                    seconds_since_sync_write=since,
                    refresh=self.options.status_refresh,
                ):
                    break
                try:
                    answer = await self.client.patch_status(NODE_RULE_SETS, self.node, desired)
                except NotFound:
                    break
                except KubeError as exc:
                    self.metrics.errors.labels("api").inc()
                    delay = backoff.next()
                    log.warning("status write failed: %s; retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                self.status_writes += 1
                self._sync_written_at = self.clock()
                if answer.get("status") is not None and self.cache.node_object is not None:
                    self.cache.node_object = {**self.cache.node_object, "status": answer["status"]}
                break
