"""AppliedSettler: PolicyApplied Events held until their counts settle, by tables."""

from __future__ import annotations

import pytest

from stockade.controller.reports import (
    NORMAL,
    REASON_APPLIED,
    REASON_INVALID,
    WARNING,
    AppliedSettler,
    EventSpec,
)


def applied(nodes: int, pods: int, cluster: int = 3) -> EventSpec:
    return EventSpec(
        NORMAL, REASON_APPLIED, f"applied on {nodes} of {cluster} nodes selecting {pods} pods"
    )


WARN = EventSpec(WARNING, REASON_INVALID, "invalid")

# (case, offers as (time, events), what the last offer lets through)
TABLE: list[tuple[str, list[tuple[float, tuple[EventSpec, ...]]], tuple[EventSpec, ...]]] = [
    ("first sight: held", [(0.0, (applied(1, 2),))], ()),
    ("same counts, too soon", [(0.0, (applied(1, 2),)), (0.9, (applied(1, 2),))], ()),
    ("same counts, settled", [(0.0, (applied(1, 2),)), (1.0, (applied(1, 2),))], (applied(1, 2),)),
    (
        "counts moved: the wait starts again",
        [(0.0, (applied(1, 2),)), (0.8, (applied(1, 3),)), (1.5, (applied(1, 3),))],
        (),
    ),
    (
        "only the cluster's size moved: still the same news",
        [(0.0, (applied(1, 2),)), (1.0, (applied(1, 2, cluster=4),))],
        (applied(1, 2, cluster=4),),
    ),
    ("a warning is never held", [(0.0, (applied(1, 2), WARN))], (WARN,)),
    ("no PolicyApplied: nothing to hold", [(0.0, (WARN,))], (WARN,)),
]


@pytest.mark.parametrize(
    ("offers", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_hold(
    offers: list[tuple[float, tuple[EventSpec, ...]]], expected: tuple[EventSpec, ...]
) -> None:
    settler = AppliedSettler(1.0)
    got: tuple[EventSpec, ...] = ()
    for now, events in offers:
        got = settler.hold("uid", events, now)
    assert got == expected


def test_zero_settle_holds_nothing() -> None:
    assert AppliedSettler(0.0).hold("uid", (applied(1, 1),), 0.0) == (applied(1, 1),)


def test_due_in_and_take_due() -> None:
    settler = AppliedSettler(1.0)
    assert settler.due_in(0.0) is None
    settler.hold("a", (applied(1, 1),), 0.0)
    settler.hold("b", (applied(2, 2),), 0.4)
    assert settler.due_in(0.5) == pytest.approx(0.5)
    assert settler.take_due(0.5) == set()
    assert settler.take_due(1.0) == {"a"}
    assert settler.due_in(1.0) == pytest.approx(0.4)
    assert settler.take_due(2.0) == {"b"}
    assert settler.due_in(2.0) is None
    # taken, then offered again with the same counts: it goes
    assert settler.hold("a", (applied(1, 1),), 2.0) == (applied(1, 1),)


def test_retain_forgets_the_gone() -> None:
    settler = AppliedSettler(1.0)
    settler.hold("a", (applied(1, 1),), 0.0)
    settler.hold("b", (applied(1, 1),), 0.0)
    settler.retain({"b"})
    assert settler.take_due(5.0) == {"b"}
