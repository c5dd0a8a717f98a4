"""Leader election on a coordination.k8s.io/v1 Lease: one replica publishes.

Both replicas watch and compile; only the holder of the Lease writes rule sets and
Events. The algorithm is client-go's: a candidate takes the Lease when its holder
has not renewed it for ``leaseDurationSeconds`` as measured by the candidate's own
clock (from when it last saw the record change, so clocks need not agree); the
holder renews every ``retry`` seconds and steps down by itself when it could not
renew for ``renew_deadline`` (less than the duration), so two replicas never both
believe they lead. Writes are conditional on the resourceVersion read, so two
candidates racing for an expired Lease cannot both win. On a clean shutdown the
holder releases the Lease, and the standby takes over at its next try.

:func:`decide` is the pure part: what to do with the Lease as read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from stockade.kube import LEASES, Conflict, JsonObject, KubeError, NotFound, Resource, now_micro

log = logging.getLogger("stockade.controller.leader")

Action = Literal["renew", "acquire", "wait"]


class LeaseApi(Protocol):
    """The calls election makes (:class:`~stockade.kube.KubeClient` has them)."""

    async def get(
        self, resource: Resource, name: str, namespace: str | None = None
    ) -> JsonObject: ...

    async def create(
        self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject: ...

    async def replace(
        self, resource: Resource, name: str, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject: ...


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The fields of a Lease that election reads."""

    holder: str
    duration: float
    renew_time: str
    transitions: int
    resource_version: str

    @staticmethod
    def of(obj: Mapping[str, Any]) -> LeaseRecord:
        """Read a Lease object."""
        spec = obj.get("spec") or {}
        meta = obj.get("metadata") or {}
        return LeaseRecord(
            holder=str(spec.get("holderIdentity") or ""),
            duration=float(spec.get("leaseDurationSeconds") or 0),
            renew_time=str(spec.get("renewTime") or ""),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str(meta.get("resourceVersion") or ""),
        )


def decide(record: LeaseRecord, identity: str, unchanged_for: float) -> Action:
    """What ``identity`` does with a Lease that has not changed for ``unchanged_for`` s.

    Purely computational: :class:`LeaderElector` reads and writes the Lease.
    """
    if record.holder == identity:
        return "renew"
    if not record.holder or unchanged_for >= record.duration:
        return "acquire"
    return "wait"


class LeaderElector:
    """Keeps trying to hold the Lease ``namespace/name``; :attr:`is_leader` says who won.

    ``on_change(leading)`` is called on every transition.
    """

    def __init__(
        self,
        client: LeaseApi,
        name: str,
        namespace: str,
        identity: str,
        duration: float = 15.0,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.duration = duration
        self.renew_deadline = duration * 2 / 3
        self.retry = max(0.05, duration / 5)
        self.on_change = on_change or (lambda _leading: None)
        self.clock = clock
        self.is_leader = False
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    async def run(self) -> None:
        """Try, renew and watch the deadline forever (cancel to stop)."""
        try:
            while True:
                await self.try_once()
                await asyncio.sleep(self.retry)
        finally:
            self._set(False)

    async def try_once(self) -> None:
        """One round: read the Lease, then renew, acquire or wait."""
        now = self.clock()
        try:
            obj = await self.client.get(LEASES, self.name, self.namespace)
        except NotFound:
            await self._create(now)
            return
        except KubeError as exc:
            log.warning("lease %s/%s: cannot read: %s", self.namespace, self.name, exc)
            self._check_deadline(now)
            return
        record = LeaseRecord.of(obj)
        if record != self._observed:
            self._observed = record
            self._observed_at = now
        action = decide(record, self.identity, now - self._observed_at)
        if action == "wait":
            self._set(False)
            return
        transitions = record.transitions + (0 if action == "renew" else 1)
        spec = obj.get("spec") or {}
        stamp = now_micro()
        new_spec = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }
        if action == "acquire":
            new_spec["acquireTime"] = stamp
        body = {"metadata": obj.get("metadata") or {}, "spec": new_spec}
        try:
            await self.client.replace(LEASES, self.name, body, self.namespace)
        except Conflict:
            self._check_deadline(now)
            return
        except KubeError as exc:
            log.warning("lease %s/%s: cannot %s: %s", self.namespace, self.name, action, exc)
            self._check_deadline(now)
            return
        self._renewed_at = now
        if action == "acquire":
            log.info("lease %s/%s acquired by %s", self.namespace, self.name, self.identity)
        self._set(True)

    async def _create(self, now: float) -> None:
        stamp = now_micro()
        body = {
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.duration)),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        try:
            await self.client.create(LEASES, body, self.namespace)
        except KubeError as exc:
            log.info("lease %s/%s: not created: %s", self.namespace, self.name, exc)
            return
        self._renewed_at = now
        log.info("lease %s/%s created by %s", self.namespace, self.name, self.identity)
        self._set(True)

    def _check_deadline(self, now: float) -> None:
        if self.is_leader and now - self._renewed_at > self.renew_deadline:
            log.warning(
                "lease %s/%s: not renewed in time, stepping down", self.namespace, self.name
            )
            self._set(False)

    def _set(self, leading: bool) -> None:
        if leading != self.is_leader:
            self.is_leader = leading
            self.on_change(leading)

    async def release(self) -> None:
        """Give the Lease up (on shutdown), so the standby need not wait for expiry."""
        self._set(False)
        try:
            obj = await self.client.get(LEASES, self.name, self.namespace)
            if LeaseRecord.of(obj).holder != self.identity:
                return
            spec = {**(obj.get("spec") or {}), "holderIdentity": "", "leaseDurationSeconds": 1}
            body = {"metadata": obj.get("metadata") or {}, "spec": spec}
            await self.client.replace(LEASES, self.name, body, self.namespace)
        except KubeError as exc:
            log.info("lease %s/%s: not released: %s", self.namespace, self.name, exc)
