"""The applied bundle on disk, and the saver that writes it behind the sync loop.

After a successful apply the bundle goes to ``state_dir`` so that a node that
reboots during an API outage comes back enforcing (the watcher restores it when
nothing arrives from the API in time). :class:`StateStore` writes one file
atomically; :class:`BundleSaver` coalesces saves (the latest bundle wins, at most
one write per interval, in a worker thread) and writes the last one on stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from stockade.agent.cache import Ready, StateError, bundle_from_json, bundle_to_json
from stockade.ruleset import canonical_json

log = logging.getLogger("stockade.agent.watch")

DEFAULT_STATE_DIR = Path("/var/lib/stockade")
STATE_FILE = "bundle.json"


class StateStore:
    """The last applied bundle, in ``directory/bundle.json``, replaced atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self._lock = threading.Lock()
        self._written = 0

    def save(self, ready: Ready, seq: int | None = None) -> bool:
        """Write the bundle: a temporary file, fsync, rename over the old one, fsync the dir.

        ``seq``: the bundle's place in the order of applies; an older one than what
        was written already is skipped (False), whichever thread comes last.
        """
        with self._lock:
            if seq is not None and seq <= self._written:
                return False
            self._write(ready)
            if seq is not None:
                self._written = seq
            return True

    def _write(self, ready: Ready) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        data = canonical_json(bundle_to_json(ready))
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load(self, node: str) -> Ready | None:
        """The saved bundle of ``node``; None when there is none. Raises :class:`StateError`."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise StateError(f"{self.path}: not JSON: {exc}") from None
        return bundle_from_json(raw, node)


class BundleSaver:
    """Saves the latest applied bundle soon after each apply, never two at once.

    ``on_error`` is told of a failed write (the watcher counts it); the bundle is
    not retried until the next apply or :meth:`flush` (at stop).
    """

    def __init__(
        self, store: StateStore, interval: float, on_error: Callable[[OSError], None]
    ) -> None:
        self.store = store
        self.interval = interval
        self.on_error = on_error
        self.saves = 0
        self._unsaved: tuple[int, Ready] | None = None  # the latest applied, if unsaved
        self._seq = 0
        self._wanted = asyncio.Event()

    def want(self, ready: Ready) -> None:
        """Have ``ready`` saved soon, superseding any unsaved one."""
        self._seq += 1
        self._unsaved = (self._seq, ready)
        self._wanted.set()

    async def run(self) -> None:
        """Forever (cancel to stop): save what is wanted, at most once per interval."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self.flush()
            await asyncio.sleep(self.interval)

    async def flush(self) -> None:
        """Write the unsaved bundle now, if any."""
        unsaved, self._unsaved = self._unsaved, None
        if unsaved is None:
            return
        seq, ready = unsaved
        try:
            if await asyncio.to_thread(self.store.save, ready, seq):
                self.saves += 1
        except OSError as exc:
            self.on_error(exc)
            log.error("cannot save the applied bundle to %s: %s", self.store.path, exc)
