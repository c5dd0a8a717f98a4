"""operator/discovery.py: the wait for stockade's CRDs, with a fake discovery and clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import pytest

from stockade.controller.discovery import (
    REQUIRED,
    CrdGate,
    discovery_path,
    group_versions,
    missing,
    next_delay,
    served_names,
)
from stockade.kube import NODE_RULE_SETS, PEER_SETS, ApiError, Unreachable

BOTH = {
    "kind": "APIResourceList",
    "groupVersion": "stockade.dev/v1alpha1",
    "resources": [
        {"name": "noderulesets", "kind": "NodeRuleSet"},
        {"name": "noderulesets/status", "kind": "NodeRuleSet"},
        {"name": "peersets", "kind": "PeerSet"},
    ],
}
ONLY_PEERS = {**BOTH, "resources": [{"name": "peersets"}, {"name": "noderulesets/status"}]}


def test_pure_parts() -> None:
    assert group_versions(REQUIRED) == ["stockade.dev/v1alpha1"]
    assert discovery_path("stockade.dev/v1alpha1") == "/apis/stockade.dev/v1alpha1"
    assert discovery_path("v1") == "/api/v1"
    assert served_names(BOTH) == {"noderulesets", "peersets"}
    assert served_names({"resources": "junk"}) == set()
    assert missing(REQUIRED, {}) == list(REQUIRED)
    assert missing(REQUIRED, {"stockade.dev/v1alpha1": served_names(ONLY_PEERS)}) == [
        NODE_RULE_SETS
    ]
    assert missing(REQUIRED, {"stockade.dev/v1alpha1": served_names(BOTH)}) == []
    delays = [next_delay(0.0)]
    for _ in range(8):
        delays.append(next_delay(delays[-1]))
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == 10.0


class FakeDiscovery:
    """Answers in order: a document, None (404), or an exception; then the last forever."""

    def __init__(self, *answers: Mapping[str, object] | Exception | None) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, gv: str) -> Mapping[str, object] | None:
        self.asked.append(gv)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _gate(fetch: FakeDiscovery) -> tuple[CrdGate, list[float]]:
    slept: list[float] = []
    now = [0.0]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    return CrdGate(fetch, sleep=sleep, clock=lambda: now[0]), slept


def test_served_at_once_waits_not_at_all() -> None:
    gate, slept = _gate(FakeDiscovery(BOTH))
    asyncio.run(gate.wait())
    assert gate.served
    assert gate.checks == 1
    assert slept == []


def test_waits_with_backoff_and_logs_what_is_missing(caplog: pytest.LogCaptureFixture) -> None:
    fetch = FakeDiscovery(
        None, None, Unreachable("GET /apis/stockade.dev/v1alpha1: timeout"), ONLY_PEERS, BOTH
    )
    gate, slept = _gate(fetch)
    with caplog.at_level(logging.INFO, "stockade.controller"):
        asyncio.run(gate.wait())
    assert gate.served
    assert gate.checks == 5
    assert slept == [0.5, 1.0, 2.0, 4.0]
    assert fetch.asked == ["stockade.dev/v1alpha1"] * 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Logged when what is missing (or why) changes, not at every look.
    assert len(warnings) == 3
    assert "noderulesets.stockade.dev/v1alpha1, peersets.stockade.dev/v1alpha1" in warnings[0]
    assert "not served" in warnings[0]
    assert "next check in 0.5 s" in warnings[0]
    assert "discovery failed" in warnings[1]
    assert "timeout" in warnings[1]
    assert "peersets" not in warnings[2]
    assert "noderulesets" in warnings[2]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("served after 7.5 s" in m for m in infos)


def test_still_waiting_is_repeated_each_minute(caplog: pytest.LogCaptureFixture) -> None:
    fetch = FakeDiscovery(*([None] * 20), BOTH)
    gate, slept = _gate(fetch)
    with caplog.at_level(logging.WARNING, "stockade.controller"):
        asyncio.run(gate.wait())
    assert max(slept) == 10.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # ~170 s of waiting: the first look, then once a minute.
    assert 3 <= len(warnings) <= 4


def test_waiting_state_is_visible_and_errors_other_than_404_retry() -> None:
    async def scenario() -> CrdGate:
        fetch = FakeDiscovery(ApiError(403, "Forbidden"), None)
        gate = CrdGate(fetch, first=0.001, cap=0.001)
        task = asyncio.create_task(gate.wait())
        while gate.checks < 3:
            await asyncio.sleep(0.001)
        assert not gate.served
        assert gate.waiting_for == (
            "noderulesets.stockade.dev/v1alpha1",
            "peersets.stockade.dev/v1alpha1",
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return gate

    gate = asyncio.run(scenario())
    assert not gate.served
    assert REQUIRED == (NODE_RULE_SETS, PEER_SETS)
