"""Faults that tests inject in front of the emulator logic: errors, dropped connections, latency."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass


@dataclass
class Fault:
    """One rule: requests it matches get ``delay`` seconds of latency, then an error or a drop.

    ``times`` counts the requests it still applies to (None: every one); ``watch`` limits
    it to watch requests (True), to everything else (False), or neither (None).
    """

    method: str | None = None
    path_regex: re.Pattern[str] | None = None
    status: int | None = None
    times: int | None = None
    delay: float = 0.0
    drop: bool = False
    watch: bool | None = None
    reason: str = ""
    message: str = ""
    hits: int = 0

    def matches(self, method: str, path_qs: str, is_watch: bool) -> bool:
        """Whether this fault applies to a request (ignoring ``times``)."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.watch is not None and self.watch != is_watch:
            return False
        return self.path_regex is None or self.path_regex.search(path_qs) is not None


class Faults:
    """The fault rules of one emulator; thread-safe, so tests add them from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def add(
        self,
        *,
        method: str | None = None,
        path_regex: str | None = None,
        status: int | None = None,
        times: int | None = None,
        delay: float = 0.0,
        drop: bool = False,
        watch: bool | None = None,
        reason: str = "",
        message: str = "",
    ) -> Fault:
        """Add a rule. ``path_regex`` is searched in the path with its query string."""
        fault = Fault(
            method=method,
            path_regex=re.compile(path_regex) if path_regex is not None else None,
            status=status,
            times=times,
            delay=delay,
            drop=drop,
            watch=watch,
            reason=reason,
            message=message,
        )
        with self._lock:
            self._rules.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        """Remove one rule."""
        with self._lock:
            if fault in self._rules:
                self._rules.remove(fault)

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path_qs: str, is_watch: bool) -> list[Fault]:
        """The rules that apply to this request, each counted as used once."""
        taken: list[Fault] = []
        with self._lock:
            for fault in list(self._rules):
                if not fault.matches(method, path_qs, is_watch):
                    continue
                fault.hits += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._rules.remove(fault)
                taken.append(fault)
        return taken

    def __len__(self) -> int:
        with self._lock:
            return len(self._rules)
