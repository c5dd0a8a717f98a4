"""The control-plane scale benchmark's targets: each check passes exactly at its bound."""

from __future__ import annotations

from typing import Any

from bench.controller_scale import checks


def _result(ratio: float, restart: int, writes: float | None, peak: int | None) -> dict[str, Any]:
    return {
        "cold_start": {"ratio": ratio},
        "restart": {"writes": restart},
        "burst": {"write_ratio": writes},
        "controller_peak_rss_bytes": peak,
    }


def test_every_target_at_its_bound_passes() -> None:
    assert all(checks(_result(3.0, 0, 1.2, (1 << 30) - 1)).values())


def test_each_target_misses_past_its_bound() -> None:
    got = checks(_result(3.01, 1, 1.21, 1 << 30))
    assert not any(got.values())
    assert len(got) == 4


def test_unknown_figures_are_misses_not_passes() -> None:
    got = checks(_result(1.0, 0, None, None))
    assert got["burst writes <= 1.2x changed objects"] is False
    assert got["controller peak memory < 1 GB"] is False
