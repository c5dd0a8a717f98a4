"""The controller's garbage-collector pacing (full collections when idle) and its kopf
storages that keep nothing, with a fake clock and a fake collector."""

from __future__ import annotations

import asyncio
import gc

from stockade.controller.handlers import NoDiffBase, NoProgress, operator_settings
from stockade.controller.main import GcPacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pacer(idle: list[bool]) -> tuple[GcPacer, Clock, list[float]]:
    clock = Clock()
    collected: list[float] = []
    p = GcPacer(
        lambda: idle[0],
        interval=60.0,
        at_most=600.0,
        clock=clock,
        collect=lambda: collected.append(clock.now),
    )
    return p, clock, collected


def test_collects_when_idle_for_two_checks_and_the_interval_passed() -> None:
    idle = [True]
    p, clock, collected = pacer(idle)
    clock.now = 30.0
    assert not p.step()  # idle, but the interval has not passed
    clock.now = 61.0
    assert p.step()  # idle at the previous check too
    assert collected == [61.0]
    clock.now = 62.0
    assert not p.step()  # just collected


def test_a_busy_controller_waits_until_it_pauses() -> None:
    idle = [False]
    p, clock, collected = pacer(idle)
    for second in range(61, 300):
        clock.now = float(second)
        assert not p.step()
    idle[0] = True
    clock.now = 300.0
    assert not p.step()  # idle for one check only: maybe mid-burst
    clock.now = 301.0
    assert p.step()
    assert collected == [301.0]


def test_never_idle_still_collects_at_most_every_ten_intervals() -> None:
    idle = [False]
    p, clock, collected = pacer(idle)
    for second in range(1, 1300):
        clock.now = float(second)
        p.step()
    assert collected == [600.0, 1200.0]
    assert p.collections == 2


def test_install_takes_only_the_oldest_generation_and_uninstall_restores() -> None:
    before = gc.get_threshold()
    p, _, _ = pacer([True])
    p.install()
    try:
        young0, young1, old = gc.get_threshold()
        assert (young0, young1) == before[:2]
        assert old >= 1_000_000
    finally:
        p.uninstall()
    assert gc.get_threshold() == before


def test_run_uninstalls_when_cancelled() -> None:
    before = gc.get_threshold()
    p, _, _ = pacer([True])

    async def go() -> None:
        task = asyncio.create_task(p.run(check=0.01))
        await asyncio.sleep(0.05)
        assert gc.get_threshold() != before
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert gc.get_threshold() == before


def test_kopf_storages_keep_nothing() -> None:
    settings = operator_settings()
    assert isinstance(settings.persistence.diffbase_storage, NoDiffBase)
    progress = settings.persistence.progress_storage
    assert isinstance(progress, NoProgress)
    essence = {"metadata": {"annotations": {"a": "b"}}}
    assert progress.clear(essence=essence) is essence
    assert progress.fetch(key="h", body={}) is None


def test_the_collector_is_off_while_starting_and_on_after() -> None:
    starting = [True]
    clock = Clock()
    p = GcPacer(lambda: True, interval=60.0, clock=clock, starting=lambda: starting[0])
    assert gc.isenabled()
    p.install()
    try:
        assert not gc.isenabled()
        clock.now = 5.0
        assert not p.step()
        assert not gc.isenabled()
        starting[0] = False
        clock.now = 6.0
        assert not p.step()  # the start is over: the collector is back, nothing collected
        assert gc.isenabled()
        assert p.held is False
    finally:
        p.uninstall()
    assert gc.isenabled()


def test_a_start_that_never_ends_holds_the_collector_off_for_a_while_only() -> None:
    clock = Clock()
    p = GcPacer(lambda: False, clock=clock, starting=lambda: True, start_limit=120.0)
    p.install()
    try:
        clock.now = 119.0
        p.step()
        assert not gc.isenabled()
        clock.now = 120.0
        p.step()
        assert gc.isenabled()
    finally:
        p.uninstall()
    assert gc.isenabled()


def test_uninstall_while_starting_gives_the_collector_back() -> None:
    before = gc.get_threshold()
    p = GcPacer(lambda: True, starting=lambda: True)
    p.install()
    assert not gc.isenabled()
    p.uninstall()
    assert gc.isenabled()
    assert gc.get_threshold() == before
