"""Lease election: the decision table, and the elector against an in-memory Lease."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from stockade.controller.leader import LeaderElector, LeaseRecord, decide
from stockade.kube import Conflict, JsonObject, NotFound, Resource, Unreachable


def rec(holder: str, duration: float = 10.0) -> LeaseRecord:
    return LeaseRecord(holder, duration, "t", 0, "1")


@pytest.mark.parametrize(
    ("record", "unchanged_for", "want"),
    [
        pytest.param(rec("me"), 0.0, "renew", id="mine-renew"),
        pytest.param(rec("me"), 99.0, "renew", id="mine-even-if-stale"),
        pytest.param(rec("other"), 3.0, "wait", id="other-fresh"),
        pytest.param(rec("other"), 10.0, "acquire", id="other-expired"),
        pytest.param(rec(""), 0.0, "acquire", id="released"),
    ],
)
def test_decide(record: LeaseRecord, unchanged_for: float, want: str) -> None:
    assert decide(record, "me", unchanged_for) == want


class FakeLeases:
    def __init__(self) -> None:
        self.lease: JsonObject | None = None
        self.rv = 0
        self.down = False

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> JsonObject:
        if self.down:
            raise Unreachable("down")
        if self.lease is None:
            raise NotFound(404, "NotFound", name)
        return copy.deepcopy(self.lease)

    async def create(
        self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        if self.lease is not None:
            raise Conflict(409, "AlreadyExists", "")
        self.rv += 1
        self.lease = copy.deepcopy(dict(body))
        self.lease["metadata"]["resourceVersion"] = str(self.rv)
        return self.lease

    async def replace(
        self, resource: Resource, name: str, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        if self.down:
            raise Unreachable("down")
        assert self.lease is not None
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "stale")
        self.rv += 1
        self.lease = copy.deepcopy(dict(body))
        self.lease["metadata"]["resourceVersion"] = str(self.rv)
        return self.lease


def test_elector_acquire_renew_expire_takeover_release() -> None:
    api = FakeLeases()
    now = [0.0]
    changes: list[tuple[str, bool]] = []

    def elector(name: str) -> LeaderElector:
        return LeaderElector(
            api,
            "lease",
            "ns",
            name,
            duration=10.0,
            on_change=lambda leading: changes.append((name, leading)),
            clock=lambda: now[0],
        )

    a, b = elector("a"), elector("b")

    def leading(e: LeaderElector) -> bool:
        return e.is_leader

    async def go() -> None:
        await a.try_once()
        assert leading(a)
        await b.try_once()
        assert not leading(b)
        now[0] = 5.0
        await a.try_once()  # renewed: b sees a change and restarts its count
        await b.try_once()
        now[0] = 14.0
        await b.try_once()
        assert not leading(b)  # only 9 s since the last renewal b saw
        # a cannot reach the API: past its renew deadline it steps down by itself.
        api.down = True
        now[0] = 12.0
        await a.try_once()
        assert not leading(a)
        api.down = False
        now[0] = 15.5
        await b.try_once()
        assert leading(b)
        assert api.lease is not None
        assert api.lease["spec"]["leaseTransitions"] == 1
        await b.release()
        assert api.lease["spec"]["holderIdentity"] == ""
        now[0] = 16.0
        await a.try_once()
        assert leading(a)  # a released Lease is taken at once

    asyncio.run(go())
    assert changes == [("a", True), ("a", False), ("b", True), ("b", False), ("a", True)]
