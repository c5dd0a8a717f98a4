"""The agent's status writer: the NodeRuleSet's ``status``, patched when it differs.

The sync loop marks the status dirty after every iteration; the writer asks for
the status to write (the watcher's ``desired_status``), compares it with what the
API holds (:func:`stockade.agent.status.needs_write`: a change, or a ``lastSync``
older than ``refresh``) and merge-patches the ``status`` subresource, retrying
with back-off while the API is away. It never blocks the sync loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from stockade.agent.cache import WatchCache
from stockade.agent.status import needs_write
from stockade.kube import NODE_RULE_SETS, KubeError, NotFound
from stockade.reflector import Backoff, WatchApi

log = logging.getLogger("stockade.agent.watch")


class StatusWriter:
    """Writes the node's NodeRuleSet status whenever it is dirty and differs."""

    def __init__(
        self,
        client: WatchApi,
        node: str,
        cache: WatchCache,
        desired: Callable[[], dict[str, Any] | None],
        *,
        refresh: float,
        backoff: Backoff,
        clock: Callable[[], float],
        on_error: Callable[[KubeError], None],
    ) -> None:
        self.client = client
        self.node = node
        self.cache = cache
        self.desired = desired
        self.refresh = refresh
        self.backoff = backoff
        self.clock = clock
        self.on_error = on_error
        self.writes = 0
        self._dirty = asyncio.Event()
        self._sync_written_at: float | None = None

    def mark_dirty(self) -> None:
        """Look again soon: the state may have changed."""
        self._dirty.set()

    async def run(self) -> None:
        """Forever (cancel to stop)."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._write_while_needed()

    async def _write_while_needed(self) -> None:
        while True:
            desired = self.desired()
            if desired is None:
                return
            since = (
                self.clock() - self._sync_written_at if self._sync_written_at is not None else None
            )
            if not needs_write(
                self.cache.node_status,
                desired,
                seconds_since_sync_write=since,
                refresh=self.refresh,
            ):
                return
            try:
                answer = await self.client.patch_status(NODE_RULE_SETS, self.node, desired)
            except NotFound:
                return
            except KubeError as exc:
                self.on_error(exc)
                delay = self.backoff.next()
                log.warning("status write failed: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            self.backoff.reset()
            self.writes += 1
            self._sync_written_at = self.clock()
            if answer.get("status") is not None and self.cache.node_object is not None:
                self.cache.node_object = {**self.cache.node_object, "status": answer["status"]}
            return
