"""Test-wide settings: root-only tests skip with a reason when not run as root.

CI runs as root and must run them all; ``STOCKADE_REQUIRE_ROOT=1`` (set by CI)
turns the skip into a failure so a missing capability cannot pass silently.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``root`` as non-root, unless root is required (then they fail)."""
    del config
    if os.geteuid() == 0:
        return
    required = os.environ.get("STOCKADE_REQUIRE_ROOT") == "1"
    for item in items:
        if "root" in item.keywords and not required:
            item.add_marker(pytest.mark.skip(reason="needs root (netns, iptables, ipset)"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A root-only test without root fails, before any fixture, when root is required.

    Not ``xfail(run=False)``: that reports XFAIL and exits 0, so a missing
    capability would pass quietly.
    """
    required = os.environ.get("STOCKADE_REQUIRE_ROOT") == "1"
    if required and os.geteuid() != 0 and "root" in item.keywords:
        pytest.fail(
            "needs root (netns, iptables, ipset), and STOCKADE_REQUIRE_ROOT=1 forbids skipping"
        )
