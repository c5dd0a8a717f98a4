"""The publisher: compiler output in, NodeRuleSets, PeerSets and Events out.

The I/O adapter around :mod:`stockade.controller.writes` and
:mod:`stockade.controller.reports`. Watch events only mark it dirty; a flush runs
at most every ``interval`` seconds (:class:`~stockade.controller.writes.Coalescer`),
takes the compiler's changes, and writes only the objects whose hash differs
from what is published. Before its first flush it waits until the watches have
delivered every object that existed at start (so a restart never publishes a
partial view), and when it becomes the leader it adopts what is already
published (one list per kind), so a restart with nothing changed writes nothing.
On ClusterNetworkPolicies it also posts Events and writes the ``Accepted``
condition through their status subresource, only when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from stockade.compiler import Changes
from stockade.controller.conditions import ConditionSpec, accepted_condition, conditions_patch
from stockade.controller.lag import Applied, SyncLagTracker
from stockade.controller.metrics import ControllerMetrics
from stockade.controller.reports import (
    REASON_APPLIED,
    REPORTED_KINDS,
    AppliedSettler,
    EventSpec,
    PolicyTracker,
    cluster_policy_events,
    invalid_events,
    named_port_refs,
    new_events,
    policy_events,
    seed_from_events,
)
from stockade.controller.state import (
    ALL_KINDS,
    CLUSTER_NETWORK_POLICY,
    ISOLATION_POLICY,
    KINDS,
    NAMESPACE,
    NETWORK_POLICY,
    NODE,
    POD,
    ClusterPolicyRecord,
    ControllerState,
    object_key,
)
from stockade.controller.writes import (
    NODE_RULE_SET,
    PEER_SET,
    Coalescer,
    Desired,
    Kind,
    ObjectKey,
    Write,
    desired_node,
    desired_peer_set,
    plan_writes,
    published_from_list,
    published_hash,
)
from stockade.kube import (
    CLUSTER_NETWORK_POLICIES,
    EVENTS,
    ISOLATION_POLICIES,
    NAMESPACES,
    NETWORK_POLICIES,
    NODE_RULE_SETS,
    NODES,
    PEER_SETS,
    PODS,
    ApiError,
    Conflict,
    JsonObject,
    KubeClient,
    KubeError,
    ListPage,
    NotFound,
    Resource,
    now_rfc3339,
)
from stockade.reflector import PagedListApi
from stockade.ruleset import NodeRuleSet, PeerSet

log = logging.getLogger("stockade.controller.publisher")

_RESOURCES: dict[Kind, Resource] = {NODE_RULE_SET: NODE_RULE_SETS, PEER_SET: PEER_SETS}
_WATCHED: dict[str, Resource] = {
    POD: PODS,
    NAMESPACE: NAMESPACES,
    NETWORK_POLICY: NETWORK_POLICIES,
    NODE: NODES,
    CLUSTER_NETWORK_POLICY: CLUSTER_NETWORK_POLICIES,
    ISOLATION_POLICY: ISOLATION_POLICIES,
}
EVENT_SOURCE = "stockade-controller"
# A status write not seen back on the watch after this long may be written again.
STATUS_ECHO_WAIT = 10.0
# Objects per page when adopting what is published (a NodeRuleSet is tens of KB).
_ADOPT_PAGE: dict[Kind, int] = {NODE_RULE_SET: 50, PEER_SET: 500}
# Rule sets encoded between two looks at the event loop in a flush: the writes of
# those encoded before go out meanwhile.
_NODES_PER_STEP = 4
# PeerSet shards encoded between two looks at the event loop in a flush (a shard of
# 1,000 members takes about 0.15 ms).
_SHARDS_PER_STEP = 16
# Seconds the event loop is left to the PeerSet writes after each rule set encoded
# meanwhile (one rule set takes about 2 ms to encode at 50,000 pods).
_WRITES_TURN = 0.001
# Seconds a policy's PolicyApplied counts must stay the same before the Event is
# posted: a burst posts one Event per policy, with the counts it settled at.
EVENT_SETTLE = 1.0


class SentStatus(NamedTuple):
    """The Accepted condition last written to a ClusterNetworkPolicy, and when."""

    condition: ConditionSpec
    at: float


class PublisherApi(Protocol):
    """The calls the publisher makes (:class:`~stockade.kube.KubeClient` has them)."""

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]: ...

    async def create(
        self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject: ...

    async def patch_merge(
        self, resource: Resource, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject: ...

    async def delete(
        self, resource: Resource, name: str, namespace: str | None = None
    ) -> JsonObject: ...

    async def patch_status(
        self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject: ...

    async def create_event(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        event_type: str = "Normal",
        component: str = "stockade-controller",
    ) -> JsonObject: ...


class LeanWrites:
    """A :class:`~stockade.kube.KubeClient` as the publisher uses it.

    The answers to its creates and patches are decoded for their metadata only (the
    uid and generation are all it reads), not as whole objects: a NodeRuleSet weighs
    tens of kilobytes, and decoding it again after sending it was a measurable share
    of a flush.
    """

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]:
        """As the client's."""
        return await self.client.list(resource, namespace, label_selector, field_selector)

    def list_pages(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        prefetch: bool = True,
        limit: int = 500,
    ) -> AsyncGenerator[ListPage, None]:
        """As the client's."""
        return self.client.list_pages(
            resource, namespace, label_selector, field_selector, prefetch=prefetch, limit=limit
        )

    async def create(
        self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        """The client's, answering ``{"metadata": ...}``."""
        return await self.client.create(resource, body, namespace, metadata_only=True)

    async def patch_merge(
        self, resource: Resource, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        """The client's, answering ``{"metadata": ...}``."""
        return await self.client.patch_merge(resource, name, patch, namespace, metadata_only=True)

    async def delete(
        self, resource: Resource, name: str, namespace: str | None = None
    ) -> JsonObject:
        """As the client's."""
        return await self.client.delete(resource, name, namespace)

    async def patch_status(
        self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        """As the client's."""
        return await self.client.patch_status(resource, name, status, namespace)

    async def create_event(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        event_type: str = "Normal",
        component: str = "stockade-controller",
    ) -> JsonObject:
        """As the client's."""
        return await self.client.create_event(involved, reason, message, event_type, component)


class Clock(Protocol):
    """Monotonic seconds."""

    def __call__(self) -> float: ...


class Publisher:
    """Publishes the compiler's output when this replica leads.

    Call :meth:`mark` on every event (``ControllerState.on_change``),
    :meth:`set_leader` on every leadership change, and run :meth:`run`.
    """

    def __init__(
        self,
        client: PublisherApi,
        state: ControllerState,
        metrics: ControllerMetrics | None = None,
        interval: float = 0.2,
        clock: Clock = time.monotonic,
        concurrency: int = 16,
        retry_delay: float = 1.0,
        warmup_relist: float = 5.0,
        event_settle: float = EVENT_SETTLE,
    ) -> None:
        self.client = client
        self.state = state
        self.metrics = metrics or ControllerMetrics()
        # A burst is flushed once it pauses for half an interval, or every ten
        # intervals while it lasts; a lone change still goes out after one interval.
        # With the high-volume kinds on kopf, a quarter interval flushed in the gaps
        # kopf left while it worked through a burst, writing most objects twice (491
        # writes for 335 changed objects on bench.controller); with them on the feeds
        # (operator/feed.py) the events come without those gaps: half an interval
        # writes each object once (335) and the burst is current 0.2 s sooner.
        self.coalescer = Coalescer(interval, quiet=interval / 2, max_delay=10 * interval)
        self.clock = clock
        self.concurrency = concurrency
        self.retry_delay = retry_delay
        self.warmup_relist = warmup_relist
        self.desired: dict[ObjectKey, Desired] = {}
        self.published: dict[ObjectKey, str] | None = None  # None: not adopted
        self.pending: set[ObjectKey] = set()
        self.tracker = PolicyTracker()
        self.reported: dict[str, set[EventSpec]] | None = None  # by policy uid
        self.report_pending: set[str] = set()
        # PolicyApplied Events wait until a policy's counts settle (one per burst);
        # the policies held, by uid: (kind, key) to report them again when due.
        self.event_settle = event_settle
        self.settler = AppliedSettler(event_settle)
        self.held: dict[str, tuple[str, str]] = {}
        self.pod_reported: dict[str, set[EventSpec]] = {}  # Pod Events posted, by uid
        # ClusterNetworkPolicies: watched only when their CRD is served; those whose
        # Events or condition may have changed; the conditions written and when, so
        # a write is not repeated before the watch brings it back.
        self.watched_kinds: tuple[str, ...] = KINDS
        # Kinds a feed of our own lists whole before it reports synced (the Pods):
        # the warm-up waits for that instead of listing them a second time.
        self.listed_by_feed: dict[str, Callable[[], bool]] = {}
        self.cluster_report_pending: set[str] = set()
        self.status_sent: dict[str, SentStatus] = {}
        self.leading = False
        self.ready = False
        self.last_error: str | None = None
        self.lag = SyncLagTracker()
        self.metrics.track_unapplied(lambda: self.lag.oldest(self.clock()))
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ signals

    def watch_cluster_policies(self) -> None:
        """ClusterNetworkPolicies are watched (their CRD is served): wait for them too."""
        self._watch(CLUSTER_NETWORK_POLICY)

    def watch_isolation_policies(self) -> None:
        """IsolationPolicies are watched (their CRD is served): wait for them too."""
        self._watch(ISOLATION_POLICY)

    def _watch(self, kind: str) -> None:
        if kind not in self.watched_kinds:
            self.watched_kinds = tuple(k for k in ALL_KINDS if k in {*self.watched_kinds, kind})

    @property
    def cluster_policies_watched(self) -> bool:
        """Whether ClusterNetworkPolicies are watched."""
        return CLUSTER_NETWORK_POLICY in self.watched_kinds

    @property
    def isolation_policies_watched(self) -> bool:
        """Whether IsolationPolicies are watched."""
        return ISOLATION_POLICY in self.watched_kinds

    def starting(self) -> bool:
        """The start is under way: the warm-up, then (leading) the first flush's writes."""
        if not self.ready:
            return True
        return self.leading and (self.published is None or bool(self.pending))

    def mark(self) -> None:
        """Something changed: flush soon."""
        self.coalescer.mark(self.clock())
        self._wake.set()

    def set_leader(self, leading: bool) -> None:
        """Leadership changed; a new leader adopts what is published before writing."""
        self.leading = leading
        self.metrics.leader.set(1 if leading else 0)
        if not leading:
            self.published = None
            self.reported = None
            self.settler = AppliedSettler(self.event_settle)
            self.held = {}
            self.lag.clear()
        log.info("publisher %s", "leading" if leading else "standing by")
        self._wake.set()

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        """Warm up, then flush whenever due (cancel to stop)."""
        await self.warm_up()
        while True:
            now = self.clock()
            if self.leading and self._requeue_settled(now):
                self.coalescer.mark(now)
            due = self.coalescer.due_in(now)
            held = self.settler.due_in(now) if self.leading else None
            if held is not None:
                due = held if due is None else min(due, held)
            if self.leading and self.published is None:
                due = 0.0
            if due is None or due > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due)
                continue
            await self.flush_once()

    def _requeue_settled(self, now: float) -> bool:
        """Policies whose held PolicyApplied may go now are reported again; any?"""
        due = self.settler.take_due(now)
        for uid in due:
            kind, key = self.held.pop(uid, ("", ""))
            if kind == NETWORK_POLICY:
                self.report_pending.add(key)
            elif kind == CLUSTER_NETWORK_POLICY:
                self.cluster_report_pending.add(key)
        return bool(due)

    def _settle(
        self,
        kind: str,
        key: str,
        uid: str,
        previous: set[EventSpec],
        current: tuple[EventSpec, ...],
    ) -> tuple[tuple[EventSpec, ...], set[EventSpec]]:
        """What to post now, and what counts as reported afterwards.

        A PolicyApplied whose counts are still moving is held back (the settler
        says when to look again); the one posted before stays "reported" meanwhile,
        so a burst that ends where it started posts nothing.
        """
        offered = self.settler.hold(uid, current, self.clock())
        if len(offered) == len(current):
            self.held.pop(uid, None)
            return offered, set(offered)
        self.held[uid] = (kind, key)
        kept = {e for e in previous if e.reason == REASON_APPLIED}
        return offered, set(offered) | kept

    async def warm_up(self) -> None:
        """Wait until the watches delivered every object that existed at start.

        The objects are listed here once; objects deleted before the watches
        listed them are dropped from the wait by a fresh list every few seconds. A
        kind a feed lists itself (``listed_by_feed``) is waited for until the feed
        says its list is in, without a second list of its objects.
        """
        expected: set[tuple[str, str]] = set()
        fed = {k: v for k, v in self.listed_by_feed.items() if k in self.watched_kinds}
        for kind in self.watched_kinds:
            if kind not in fed:
                expected |= await self._list_keys(kind)
        started = last_list = self.clock()
        while True:
            missing = self.state.missing(expected)
            if not missing and all(synced() for synced in fed.values()):
                break
            if self.clock() - last_list >= self.warmup_relist:
                kinds = {kind for kind, _ in missing}
                existing: set[tuple[str, str]] = set()
                for kind in kinds:
                    existing |= await self._list_keys(kind)
                expected = (expected - missing) | (missing & existing)
                last_list = self.clock()
                log.info("warm-up: %d objects not delivered yet", len(missing & existing))
            await asyncio.sleep(0.05)
        self.state.end_warmup()
        self.ready = True
        log.info("warm-up done in %.2fs: %d objects", self.clock() - started, len(expected))
        self.mark()

    async def _list_keys(self, kind: str) -> set[tuple[str, str]]:
        while True:
            try:
                items, _ = await self.client.list(_WATCHED[kind])
            except KubeError as exc:
                log.warning("warm-up: cannot list %s: %s", kind, exc)
                await asyncio.sleep(self.retry_delay)
                continue
            return {(kind, object_key(kind, item)) for item in items}

    async def flush_once(self) -> bool:
        """One flush; False when some work is left for a retry.

        Leading, the PeerSets and rule sets are encoded as they are written: each
        PeerSet goes out as soon as it is encoded, the rule sets are encoded
        meanwhile, and once the PeerSets are in each NodeRuleSet goes out as soon as
        it is encoded, so encoding thousands of objects overlaps the API server's
        taking them in.
        """
        first_event = self.coalescer.dirty_since
        self.coalescer.begin(self.clock())
        started = time.perf_counter()
        changes = self.state.compiler.flush()
        policy_changes = self.state.take_policy_changes()
        nodes = list(changes.nodes.items())
        if self.leading:
            shards = list(changes.peer_sets.items())
            done = await self._publish(shards, nodes, policy_changes, first_event)
        else:
            self._absorb_peer_sets(changes)
            self._absorb_nodes(nodes, policy_changes, first_event)
            self._absorb_done()
            self.pending.clear()
            self.report_pending.clear()
            self.cluster_report_pending.clear()
            done = True
        self.metrics.flushes.inc()
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        self.metrics.dirty_backlog.set(len(self.pending))
        if not done:
            self.coalescer.retry(self.clock(), self.retry_delay)
        else:
            self.last_error = None
        return done

    async def _publish(
        self,
        shards: list[tuple[str, PeerSet | None]],
        nodes: list[tuple[str, NodeRuleSet | None]],
        policy_changes: Mapping[str, float],
        first_event: float | None,
    ) -> bool:
        """Leading: adopt (once); the PeerSets, each written as soon as it is encoded,
        and meanwhile the flush's rule sets encoded; once the PeerSets are in, each rule
        set written as soon as it is encoded; then the rest (``write``) and the reports.
        False when some work is left for a retry; the PeerSets and rule sets are
        desired in any case."""
        shards_in = nodes_in = False  # taken in, or being taken in
        writing: list[asyncio.Task[bool]] = []
        peer_sets: asyncio.Task[bool] | None = None
        done = True
        try:
            if self.published is None:
                await self.adopt()
            gate = asyncio.Semaphore(self.concurrency)
            shards_in = True
            peer_sets = asyncio.create_task(_all_true(await self._peer_sets_out(shards, gate)))
            nodes_in = True
            writing = await self._rule_sets_out(nodes, peer_sets, gate, policy_changes, first_event)
            done = peer_sets.result()
            written = await asyncio.gather(*writing)
            writing = []
            done = done and all(written)
            self._absorb_done()
            done = done and await self.write()
            done = await self.report() and done
        except KubeError as exc:
            log.warning("flush failed: %s", exc)
            self.last_error = str(exc)
            done = False
        finally:
            if peer_sets is not None and not peer_sets.done():
                writing.append(peer_sets)
            for task in writing:
                task.cancel()
            await asyncio.gather(*writing, return_exceptions=True)
            # Adopting failed: the PeerSets and rule sets are desired still.
            if not shards_in:
                self._named_ports_resized(self._absorb_shards(shards))
            if not nodes_in:
                self._absorb_nodes(nodes, policy_changes, first_event)
                self._absorb_done()
        return done

    async def _rule_sets_out(
        self,
        nodes: list[tuple[str, NodeRuleSet | None]],
        peer_sets: asyncio.Task[bool],
        gate: asyncio.Semaphore,
        policy_changes: Mapping[str, float],
        first_event: float | None,
    ) -> list[asyncio.Task[bool]]:
        """The flush's rule sets into the desired state, encoded while ``peer_sets``
        (the PeerSets' writes) go out, then written once they are all in, each further
        one as soon as it is encoded; the writes started, once ``peer_sets`` is done
        (none when a PeerSet failed: no rule set goes before its PeerSets).

        The API server takes the PeerSets in meanwhile: at a cold start the
        controller sat idle through thousands of PeerSet writes, then encoded the rule
        sets while the API server waited. Cancelled or failed half-way, the remaining
        rule sets are taken in all the same and the writes started are cancelled.
        """
        taken = 0
        writing: list[asyncio.Task[bool]] = []
        held: list[Write] = []
        try:
            while taken < len(nodes):
                if peer_sets.done() and not peer_sets.result():
                    break
                writing_peer_sets = not peer_sets.done()
                step = nodes[taken : taken + (1 if writing_peer_sets else _NODES_PER_STEP)]
                self._absorb_nodes(step, policy_changes, first_event)
                taken += len(step)
                keys = {ObjectKey(NODE_RULE_SET, node) for node, _ in step}
                held += self._upserts(NODE_RULE_SET, keys)
                if not writing_peer_sets:
                    writing += [asyncio.create_task(self._write_gated(w, gate)) for w in held]
                    held = []
                # The writes started go out meanwhile. While the PeerSets are written,
                # the loop gets a while to itself after each rule set: a write takes a
                # few turns of the loop to be answered and the next one sent, and with
                # one turn per rule set encoded the API server sat idle.
                await asyncio.sleep(_WRITES_TURN if writing_peer_sets else 0)
            if await peer_sets:
                writing += [asyncio.create_task(self._write_gated(w, gate)) for w in held]
        except BaseException:
            for task in writing:
                task.cancel()
            raise
        finally:
            if taken < len(nodes):  # a PeerSet failed (or cancelled): desired all the same
                self._absorb_nodes(nodes[taken:], policy_changes, first_event)
        return writing

    async def _peer_sets_out(
        self, shards: list[tuple[str, PeerSet | None]], gate: asyncio.Semaphore
    ) -> list[asyncio.Task[bool]]:
        """The flush's PeerSet shards into the desired state, each one's write started
        as soon as it is encoded (the API server takes the first ones in while the
        next are encoded), after those an earlier flush left pending; the writes.

        Cancelled half-way, the remaining shards are taken in all the same (desired,
        pending) and the writes started are cancelled.
        """
        ours = {ObjectKey(PEER_SET, shard) for shard, _ in shards}
        earlier = {k for k in self.pending if k.kind == PEER_SET} - ours
        started = [
            asyncio.create_task(self._write_gated(w, gate))
            for w in self._upserts(PEER_SET, earlier)
        ]
        taken = 0
        resized: set[str] = set()
        try:
            while taken < len(shards):
                step = shards[taken : taken + _SHARDS_PER_STEP]
                resized |= self._absorb_shards(step)
                taken += len(step)
                keys = {ObjectKey(PEER_SET, shard) for shard, _ in step}
                started += [
                    asyncio.create_task(self._write_gated(w, gate))
                    for w in self._upserts(PEER_SET, keys)
                ]
                # As for the rule sets below: the writes need turns of the loop.
                await asyncio.sleep(_WRITES_TURN if started else 0)
        except BaseException:
            for task in started:
                task.cancel()
            raise
        finally:
            resized |= self._absorb_shards(shards[taken:])
            self._named_ports_resized(resized)
        return started

    # ------------------------------------------------------------------ steps

    def absorb(self, first_event: float | None = None) -> None:
        """Take the compiler's changes into the desired state (no I/O).

        ``first_event`` is when the first event of this flush was observed: the
        start of the sync lag of a rule-set change no policy change caused.
        """
        changes = self.state.compiler.flush()
        policy_changes = self.state.take_policy_changes()
        self._absorb_peer_sets(changes)
        self._absorb_nodes(changes.nodes.items(), policy_changes, first_event)
        self._absorb_done()

    def _absorb_peer_sets(self, changes: Changes) -> None:
        """The PeerSet shards of a flush into the desired state."""
        self._named_ports_resized(self._absorb_shards(changes.peer_sets.items()))

    def _absorb_shards(self, shards: Iterable[tuple[str, PeerSet | None]]) -> set[str]:
        """PeerSet shards into the desired state; the sets whose size changed."""
        resized: set[str] = set()
        for shard, ps in shards:
            key = ObjectKey(PEER_SET, shard)
            if ps is None:
                self.desired.pop(key, None)
            else:
                self.desired[key] = desired_peer_set(ps)
            self.pending.add(key)
            changed = self.tracker.peer_set(shard, ps)
            if changed is not None:
                resized.add(changed)
        return resized

    def _named_ports_resized(self, resized: set[str]) -> None:
        """The policies whose named ports refer to a set whose size changed: to report."""
        if resized:
            for pkey, record in self.state.policies.items():
                if record.compiled is not None and any(
                    ref.peer_set in resized for ref in named_port_refs(record.compiled)
                ):
                    self.report_pending.add(pkey)

    def _absorb_nodes(
        self,
        nodes: Iterable[tuple[str, NodeRuleSet | None]],
        policy_changes: Mapping[str, float],
        first_event: float | None,
    ) -> None:
        """Rule sets of a flush into the desired state."""
        for node, rs in nodes:
            if not node:
                continue  # unscheduled pods: no node, no rule set
            key = ObjectKey(NODE_RULE_SET, node)
            if rs is None:
                self.desired.pop(key, None)
                self.lag.removed(node)
            else:
                desired = desired_node(rs)
                if self.leading:
                    self._track_change(node, desired, policy_changes, first_event)
                self.desired[key] = desired
            self.pending.add(key)
            self.report_pending |= self.tracker.node(node, rs)

    def _absorb_done(self) -> None:
        """The policies whose reports may have changed, and the gauges."""
        self.report_pending |= self.state.touched_policies
        self.state.touched_policies.clear()
        self.cluster_report_pending |= self.tracker.take_cluster_touched()
        self.cluster_report_pending |= self.state.touched_cluster_policies
        self.state.touched_cluster_policies.clear()
        for kind in (NODE_RULE_SET, PEER_SET):
            self.metrics.desired.labels(kind).set(sum(1 for k in self.desired if k.kind == kind))

    def _track_change(
        self,
        node: str,
        desired: Desired,
        policy_changes: Mapping[str, float],
        first_event: float | None,
    ) -> None:
        """Start the sync-lag clock of a node's new rule-set content."""
        names = desired.policy_names()
        old = self.desired.get(ObjectKey(NODE_RULE_SET, node))
        if old is not None:
            names |= old.policy_names()
        causes = tuple(k for k in policy_changes if k in names)
        if causes:
            at = min(policy_changes[k] for k in causes)
        else:
            at = first_event if first_event is not None else self.clock()
        self.lag.changed(node, desired.hash, at, causes)

    def observe_rule_set(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A NodeRuleSet from the watch: the agent's status may settle sync lags."""
        if event_type == "DELETED" or not self.leading:
            return
        meta = body.get("metadata") or {}
        name = str(meta.get("name") or "")
        status = body.get("status") or {}
        # appliedGeneration names what the kernel holds, even when a later
        # generation was refused (then ``applied`` is false and it stays behind).
        self._record(
            self.lag.status(
                name,
                str(meta.get("uid") or "") or None,
                _int(meta.get("generation")),
                published_hash(body) or None,
                _int(status.get("appliedGeneration")),
                self.clock(),
            )
        )

    def _record(self, applied: list[Applied]) -> None:
        for done in applied:
            self.metrics.sync_lag.labels(done.cause).observe(done.lag)
            log.debug("%s applied %.3fs after %s", done.node, done.lag, done.policies or "its pods")

    async def adopt(self) -> None:
        """Read what is published (and which Events were posted) before writing.

        The published objects are read a few at a time (a client with ``list_pages``)
        and only their hashes kept: hundreds of NodeRuleSets of tens of kilobytes
        each, decoded at once, were the controller's peak of memory on a restart.
        """
        published: dict[ObjectKey, str] = {}
        for kind, resource in _RESOURCES.items():
            async for items in self._pages(resource, _ADOPT_PAGE[kind]):
                published.update(published_from_list(kind, items))
                if kind == NODE_RULE_SET:
                    for item in items:
                        self.observe_rule_set(None, item)
                del items
        self.published = published
        self.pending = set(self.desired) | set(published)
        log.info("adopted %d published objects; %d desired", len(published), len(self.desired))
        self.reported = seed_from_events(await self._list_events())
        self.report_pending = set(self.state.policies)
        self.cluster_report_pending = set(self.state.cluster_policies)

    async def _pages(self, resource: Resource, limit: int) -> AsyncIterator[list[JsonObject]]:
        """A whole list, a page at a time when the client can (else at once)."""
        if not isinstance(self.client, PagedListApi):
            items, _ = await self.client.list(resource)
            yield items
            return
        pages = self.client.list_pages(resource, prefetch=False, limit=limit)
        async with contextlib.aclosing(pages):
            async for items, _ in pages:
                yield items

    async def _list_events(self) -> list[dict[str, object]]:
        items: list[JsonObject] = []
        try:
            for kind in REPORTED_KINDS:
                found, _ = await self.client.list(
                    EVENTS, field_selector=f"involvedObject.kind={kind}"
                )
                items += found
        except ApiError:
            # Not every server supports this field selector; filter here instead.
            items, _ = await self.client.list(EVENTS)
        return [
            dict(e)
            for e in items
            if (e.get("source") or {}).get("component") == EVENT_SOURCE
            or e.get("reportingComponent") == EVENT_SOURCE
        ]

    def _upserts(self, kind: Kind, among: set[ObjectKey] | None = None) -> list[Write]:
        """The creates and updates of ``kind`` that pending keys (of ``among``) need;
        the keys of that kind that need none are done. Deletes are left to ``write``
        (their phases come after every create and update)."""
        assert self.published is not None
        keys = {
            k
            for k in (self.pending if among is None else among & self.pending)
            if k.kind == kind and k in self.desired
        }
        writes = [w for phase in plan_writes(self.desired, self.published, keys) for w in phase]
        for key in keys - {w.key for w in writes}:
            want = self.desired[key]
            self._settled(key, want)
            if kind == NODE_RULE_SET:
                self._record(self.lag.unchanged(key.name, want.hash, self.clock()))
            self.pending.discard(key)
        return writes

    async def _write_gated(self, write: Write, gate: asyncio.Semaphore) -> bool:
        async with gate:
            return await self._write_one(write)

    async def _write_phase(
        self, writes: list[Write], gate: asyncio.Semaphore | None = None
    ) -> bool:
        """Independent writes, at most ``concurrency`` at once; False: one failed."""
        if not self.leading:
            return False
        gate = gate or asyncio.Semaphore(self.concurrency)
        results = await asyncio.gather(*(self._write_gated(w, gate) for w in writes))
        return all(results)

    async def write(self) -> bool:
        """Write what differs, phase by phase; stop at the first phase that fails."""
        assert self.published is not None
        phases = plan_writes(self.desired, self.published, self.pending)
        # Keys that need no write are done.
        planned = {w.key for phase in phases for w in phase}
        for key in self.pending - planned:
            want = self.desired.get(key)
            if want is not None:
                self._settled(key, want)
            if key.kind == NODE_RULE_SET and want is not None:
                self._record(self.lag.unchanged(key.name, want.hash, self.clock()))
        self.pending &= planned
        for phase in phases:
            if not await self._write_phase(phase):
                return False
        return True

    async def _write_one(self, write: Write) -> bool:
        if not self.leading or self.published is None:
            return False
        key = write.key
        resource = _RESOURCES[key.kind]
        verb = write.verb
        try:
            if verb == "delete":
                with contextlib.suppress(NotFound):
                    await self.client.delete(resource, key.name)
                self.published.pop(key, None)
                if key.kind == NODE_RULE_SET:
                    self.lag.removed(key.name)
            else:
                assert write.desired is not None
                answer: Mapping[str, Any] = {}
                if verb == "create":
                    try:
                        answer = await self.client.create(resource, write.desired.body(key.name))
                    except Conflict:
                        verb = "update"
                if verb == "update":
                    try:
                        answer = await self.client.patch_merge(
                            resource, key.name, write.desired.patch()
                        )
                    except NotFound:
                        verb = "create"
                        answer = await self.client.create(resource, write.desired.body(key.name))
                self.published[key] = write.desired.hash
                self._settled(key, write.desired)
                if key.kind == NODE_RULE_SET:
                    meta = answer.get("metadata") or {}
                    self._record(
                        self.lag.published(
                            key.name,
                            write.desired.hash,
                            str(meta.get("uid") or "") or None,
                            _int(meta.get("generation")),
                            self.clock(),
                        )
                    )
        except KubeError as exc:
            self.metrics.write_errors.labels(key.kind, verb).inc()
            log.warning("%s %s failed: %s", verb, key, exc)
            self.last_error = str(exc)
            return False
        self.metrics.writes.labels(key.kind, verb).inc()
        self.pending.discard(key)
        log.debug("%s %s", verb, key)
        return True

    def _settled(self, key: ObjectKey, desired: Desired) -> None:
        """``desired`` is in the API: its encoded spec is not needed any more."""
        if desired.spec_json and self.desired.get(key) is desired:
            self.desired[key] = dataclasses.replace(desired, spec_json="")

    async def report(self) -> bool:
        """Post the Events that changed for the policies touched since the last flush,
        and the ``Accepted`` condition of ClusterNetworkPolicies; False when a status
        write failed (it is retried with the flush's back-off).

        Policies are reported concurrently (bounded like the writes), each policy's
        Events in order: a burst touching hundreds of policies costs a few round
        trips of latency, not hundreds.
        """
        if self.reported is None:
            return True
        reported = self.reported
        keys, self.report_pending = self.report_pending, set()
        gate = asyncio.Semaphore(self.concurrency)

        async def one(pkey: str) -> None:
            record = self.state.policies.get(pkey)
            if record is None:
                return
            if record.error is not None:
                current = invalid_events(record.error, kept=record.compiled is not None)
            else:
                assert record.compiled is not None
                fp = self.tracker.footprint(pkey)
                current = policy_events(
                    record.compiled, fp, self.tracker.set_size, record.empty_rules
                )
            previous = reported.get(record.uid, set())
            offered, now_reported = self._settle(
                NETWORK_POLICY, pkey, record.uid, previous, current
            )
            async with gate:
                await self._post_events("NetworkPolicy", pkey, record.involved, previous, offered)
            reported[record.uid] = now_reported

        await asyncio.gather(*(one(pkey) for pkey in sorted(keys)))
        statuses_ok = await self._report_cluster_policies(reported, gate)
        await self._report_pods(gate)
        live_count = len(self.state.policies) + len(self.state.cluster_policies)
        if len(reported) > 2 * live_count + 100:
            live = {r.uid for r in self.state.policies.values()}
            live |= {r.uid for r in self.state.cluster_policies.values()}
            self.reported = {uid: v for uid, v in reported.items() if uid in live}
            self.settler.retain(live)
        return statuses_ok

    async def _report_cluster_policies(
        self, reported: dict[str, set[EventSpec]], gate: asyncio.Semaphore
    ) -> bool:
        """Events and the ``Accepted`` condition of the ClusterNetworkPolicies touched."""
        names, self.cluster_report_pending = self.cluster_report_pending, set()
        for gone in [n for n in self.status_sent if n not in self.state.cluster_policies]:
            del self.status_sent[gone]
        failed: list[str] = []

        async def one(name: str) -> None:
            record = self.state.cluster_policies.get(name)
            if record is None:
                return
            if record.error is not None:
                current = invalid_events(record.error, kept=record.policy is not None)
            else:
                assert record.policy is not None
                current = cluster_policy_events(
                    record.policy,
                    self.tracker.cluster_footprint(name),
                    self.tracker.overlaps_of(name),
                )
            previous = reported.get(record.uid, set())
            offered, now_reported = self._settle(
                CLUSTER_NETWORK_POLICY, name, record.uid, previous, current
            )
            async with gate:
                await self._post_events(
                    str(record.involved["kind"]), name, record.involved, previous, offered
                )
                reported[record.uid] = now_reported
                if not await self._write_condition(name, record):
                    failed.append(name)

        await asyncio.gather(*(one(name) for name in sorted(names)))
        self.cluster_report_pending.update(failed)
        return not failed

    async def _post_events(
        self,
        kind: str,
        key: str,
        involved: Mapping[str, Any],
        previous: Iterable[EventSpec],
        current: Iterable[EventSpec],
    ) -> None:
        """Post the Events of ``current`` not already in ``previous``; a failure is logged."""
        for event in new_events(previous, current):
            try:
                await self.client.create_event(
                    involved, event.reason, event.message, event.type, EVENT_SOURCE
                )
            except KubeError as exc:
                log.warning("event on %s %s not posted: %s", kind, key, exc)
                continue
            self.metrics.events.labels(event.type, event.reason).inc()
            log.info("%s %s: %s %s: %s", kind, key, event.type, event.reason, event.message)

    async def _write_condition(self, name: str, record: ClusterPolicyRecord) -> bool:
        """Write the ``Accepted`` condition if the object does not carry it (False: failed)."""
        want = accepted_condition(record.policy, record.error, record.generation)
        conditions = conditions_patch(record.conditions, want, now_rfc3339())
        if conditions is None:
            self.status_sent.pop(name, None)
            return True
        sent = self.status_sent.get(name)
        if (
            sent is not None
            and sent.condition == want
            and self.clock() - sent.at < STATUS_ECHO_WAIT
        ):
            return True  # written; the watch has not brought it back yet
        kind = str(record.involved["kind"])
        patch = {"conditions": conditions}
        try:
            if kind == ISOLATION_POLICY:
                bare = str(record.involved["metadata"]["name"])
                await self.client.patch_status(ISOLATION_POLICIES, bare, patch)
            else:
                await self.client.patch_status(CLUSTER_NETWORK_POLICIES, name, patch)
        except NotFound:
            return True  # deleted meanwhile: its DELETED event follows
        except KubeError as exc:
            self.metrics.write_errors.labels(CLUSTER_NETWORK_POLICY, "patch").inc()
            log.warning("status of %s %s not written: %s", kind, name, exc)
            self.last_error = str(exc)
            return False
        self.status_sent[name] = SentStatus(want, self.clock())
        self.metrics.writes.labels(CLUSTER_NETWORK_POLICY, "patch").inc()
        log.debug("%s %s: Accepted=%s", kind, name, want.status)
        return True

    async def _report_pods(self, gate: asyncio.Semaphore) -> None:
        """Post the Warnings on Pods (address conflicts, unreadable pods), once each."""
        pending, self.state.pod_reports = self.state.pod_reports, {}

        async def one(key: str, involved: Mapping[str, Any], events: tuple[EventSpec, ...]) -> None:
            uid = str(involved["metadata"].get("uid") or key)
            done = self.pod_reported.setdefault(uid, set())
            async with gate:
                for event in events:
                    if event in done:
                        continue
                    try:
                        await self.client.create_event(
                            involved, event.reason, event.message, event.type, EVENT_SOURCE
                        )
                    except KubeError as exc:
                        log.warning("event on Pod %s not posted: %s", key, exc)
                        continue
                    done.add(event)
                    self.metrics.events.labels(event.type, event.reason).inc()
                    log.warning("Pod %s: %s: %s", key, event.reason, event.message)

        await asyncio.gather(*(one(k, *pending[k]) for k in sorted(pending)))
        if len(self.pod_reported) > 10_000:
            # Bounded memory: forgetting only risks posting an Event again.
            self.pod_reported = {}

    def healthy(self) -> bool:
        """Whether the last flush left nothing failed (or there was none)."""
        return self.last_error is None


async def _all_true(tasks: list[asyncio.Task[bool]]) -> bool:
    """Whether every task came out True (all are awaited)."""
    return all(await asyncio.gather(*tasks))


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
