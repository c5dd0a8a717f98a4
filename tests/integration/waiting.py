"""Polling for the integration tests: wait until a condition holds, or fail saying what."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    what: Callable[[], Any], timeout: float = 20.0, message: str = "", interval: float = 0.05
) -> Any:
    """Poll ``what`` until it returns something truthy (returned); AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message or what}")
        time.sleep(interval)
