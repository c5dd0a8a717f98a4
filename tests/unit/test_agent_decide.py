"""The agent's sync decisions, by tables: every branch of decide, on_wakeup and next_wakeup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest

from stockade.agent.cache import Invalid, Missing, Outcome, Ready, Waiting
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
    Wakeup,
    decide,
    next_wakeup,
    on_wakeup,
    wait_key,
)
from stockade.ruleset import NodeRuleSet

GRACE = 5.0
NOW = 100.0
CRD = "the CRD is gone"
NODE = NodeRuleSet("n1", (), (), ())
READY = Ready(NODE, {}, "h1", 3)
WAITING = Waiting(4, {"ps-a": "shard 1 of 2 missing"})
KEY = wait_key(WAITING)
POD = {"10.0.0.7": "ns/new"}


def run(outcome: Outcome, view: SyncView, pending: Mapping[str, str] | None = None) -> Decision:
    return decide(outcome, view, pending=pending or {}, now=NOW, grace=GRACE, crd_reason=CRD)


# (case, outcome, view, pending, expected decision)
TABLE: list[tuple[str, Outcome, SyncView, Mapping[str, str], Decision]] = [
    ("first bundle", READY, SyncView(), {}, Apply(READY)),
    ("same content", READY, SyncView(applied_hash="h1", applied_pending={}), {}, Keep(READY)),
    ("same content, nothing pending recorded", READY, SyncView(applied_hash="h1"), {}, Keep(READY)),
    (
        "same content, a new pod to isolate",
        READY,
        SyncView(applied_hash="h1", applied_pending={}),
        POD,
        Apply(READY),
    ),
    ("new content", READY, SyncView(applied_hash="h0"), {}, Apply(READY)),
    (
        "refused before",
        READY,
        SyncView(applied_hash="h0", refused=("h1", "bad rule")),
        {},
        RefuseAgain(READY, "bad rule"),
    ),
    (
        "another content was refused",
        READY,
        SyncView(applied_hash="h0", refused=("h9", "bad rule")),
        {},
        Apply(READY),
    ),
    ("a wait begins", WAITING, SyncView(), {}, Wait(KEY, NOW, True, WAITING.message)),
    (
        "still waiting, within grace",
        WAITING,
        SyncView(waiting=(KEY, NOW - GRACE + 1)),
        {},
        Wait(KEY, NOW - GRACE + 1, False, WAITING.message),
    ),
    (
        "waited the whole grace",
        WAITING,
        SyncView(waiting=(KEY, NOW - GRACE)),
        {},
        GiveUpWaiting(KEY, NOW - GRACE, 4, WAITING.message),
    ),
    (
        "other sets missing: a new wait",
        WAITING,
        SyncView(waiting=(wait_key(Waiting(4, {"ps-b": "absent"})), NOW - 60)),
        {},
        Wait(KEY, NOW, True, WAITING.message),
    ),
    ("invalid", Invalid(5, "spec.pods: bad"), SyncView(), {}, Refuse(5, "spec.pods: bad")),
    ("no rule set", Missing("deleted"), SyncView(applied_hash="h1"), {}, RuleSetGone("deleted")),
    ("CRD gone", Missing("deleted"), SyncView(crd_missing=True), {}, RuleSetGone(CRD)),
]


@pytest.mark.parametrize(
    ("outcome", "view", "pending", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_decide(
    outcome: Outcome, view: SyncView, pending: Mapping[str, str], expected: Decision
) -> None:
    assert run(outcome, view, pending) == expected


# (case, restore_at, retry_at, waiting_since, expected seconds of sleep)
WAKEUPS = [
    ("only the resync", None, None, None, 30.0),
    ("restore first", NOW + 3, None, None, 3.0),
    ("a retry", None, NOW + 0.5, None, 0.5),
    ("a wait's grace", None, None, NOW - 2, GRACE - 2),
    ("overdue: no sleep", NOW - 1, None, None, 0.0),
    ("the earliest of all", NOW + 3, NOW + 2, NOW - 4, 1.0),
]


@pytest.mark.parametrize(
    ("restore_at", "retry_at", "waiting_since", "expected"),
    [row[1:] for row in WAKEUPS],
    ids=[row[0] for row in WAKEUPS],
)
def test_next_wakeup(
    restore_at: float | None, retry_at: float | None, waiting_since: float | None, expected: float
) -> None:
    got = next_wakeup(
        NOW,
        next_resync=NOW + 30,
        restore_at=restore_at,
        retry_at=retry_at,
        waiting_since=waiting_since,
        grace=GRACE,
    )
    assert got == pytest.approx(expected)


LOOK = Wakeup(look=True, retry_at=None, gone=None, restore_due=False, resync=False)
BACKING_OFF = SyncView(retry_at=NOW + 1)

# (case, view, synced, restore_at, next_resync, expected)
WAKES: list[tuple[str, SyncView, bool, float | None, float, Wakeup]] = [
    ("synced: look", SyncView(), True, None, NOW + 30, LOOK),
    (
        "not listed yet: wait for the reflectors",
        SyncView(),
        False,
        None,
        NOW + 30,
        Wakeup(look=False, retry_at=None, gone=None, restore_due=False, resync=False),
    ),
    (
        "a failed write backs off: no look",
        BACKING_OFF,
        True,
        None,
        NOW + 30,
        Wakeup(look=False, retry_at=NOW + 1, gone=None, restore_due=False, resync=False),
    ),
    ("the back-off is over: look", SyncView(retry_at=NOW), True, None, NOW + 30, LOOK),
    (
        "the CRD gone while backing off: report it without looking",
        replace(BACKING_OFF, crd_missing=True),
        True,
        None,
        NOW + 30,
        Wakeup(look=False, retry_at=NOW + 1, gone=CRD, restore_due=False, resync=False),
    ),
    (
        "the CRD gone before any list",
        SyncView(crd_missing=True),
        False,
        None,
        NOW + 30,
        Wakeup(look=False, retry_at=None, gone=CRD, restore_due=False, resync=False),
    ),
    (
        "the CRD gone, looking: decide reports it",
        SyncView(crd_missing=True),
        True,
        None,
        NOW + 30,
        LOOK,
    ),
    ("restore not yet", SyncView(), True, NOW + 1, NOW + 30, LOOK),
    ("restore due", SyncView(), True, NOW, NOW + 30, replace(LOOK, restore_due=True)),
    ("resync due", SyncView(), True, None, NOW, replace(LOOK, resync=True)),
    (
        "everything at once",
        replace(BACKING_OFF, crd_missing=True),
        True,
        NOW - 1,
        NOW - 1,
        Wakeup(look=False, retry_at=NOW + 1, gone=CRD, restore_due=True, resync=True),
    ),
]


@pytest.mark.parametrize(
    ("view", "synced", "restore_at", "next_resync", "expected"),
    [row[1:] for row in WAKES],
    ids=[row[0] for row in WAKES],
)
def test_on_wakeup(
    view: SyncView,
    synced: bool,
    restore_at: float | None,
    next_resync: float,
    expected: Wakeup,
) -> None:
    got = on_wakeup(
        NOW,
        view,
        synced=synced,
        restore_at=restore_at,
        next_resync=next_resync,
        crd_reason=CRD,
    )
    assert got == expected
