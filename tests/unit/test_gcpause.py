"""The collector is held off during a full compile and given back as it was."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from stockade import compiler
from stockade.cnp import ClusterInput
from stockade.gcpause import collector_paused
from stockade.model import Namespace


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.usefixtures("collector_enabled")
def test_the_collector_is_off_inside_and_on_after() -> None:
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_the_collector_comes_back_after_an_error() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_a_full_compile_runs_with_the_collector_off(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    upsert = compiler.Compiler.upsert

    def spy(self: compiler.Compiler, obj: ClusterInput) -> None:
        seen.append(gc.isenabled())
        upsert(self, obj)

    monkeypatch.setattr(compiler.Compiler, "upsert", spy)
    compiler.compile_cluster([Namespace.default("a"), Namespace.default("b")])
    assert seen == [False, False]
    assert gc.isenabled()
