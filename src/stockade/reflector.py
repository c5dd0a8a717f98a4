"""Reflectors: list a resource, then watch it from the list's version.

A :class:`Reflector` keeps one resource's objects flowing into callbacks: on 410
Gone it lists again; on any other API error it backs off exponentially with
jitter (:class:`Backoff`) and tries again, forever. The agent runs one per
resource it follows (its NodeRuleSet, the PeerSets, with ``--isolate-new-pods``
its node's Pods); the controller runs one for the Pods (docs/controller.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from stockade.kube import Gone, JsonObject, KubeError, ListPage, Resource

log = logging.getLogger("stockade.reflector")


class ReflectApi(Protocol):
    """The calls a :class:`Reflector` makes (:class:`~stockade.kube.KubeClient` has them)."""

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]: ...

    def watch(
        self,
        resource: Resource,
        resource_version: str | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, JsonObject]]: ...


class WatchApi(ReflectApi, Protocol):
    """The calls the agent's watcher makes: a reflector's, and its status writes."""

    async def patch_status(
        self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject: ...


@runtime_checkable
class PagedListApi(Protocol):
    """A client that hands a list over a page at a time (:class:`~stockade.kube.KubeClient`)."""

    def list_pages(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        prefetch: bool = True,
        limit: int = 500,
    ) -> AsyncGenerator[ListPage, None]: ...


class ListSink(Protocol):
    """Takes a (re)list as it arrives, instead of ``on_list`` taking it whole."""

    def list_started(self) -> None:
        """A (re)list begins (a list that failed half-way is started again)."""

    def list_page(self, items: list[JsonObject]) -> None:
        """Some of the list's objects, in order."""

    def list_done(self) -> None:
        """Every object of the list was given."""


# --------------------------------------------------------------------------- back-off


class Backoff:
    """Exponential back-off with jitter: ``low * 2**n`` capped at ``high``, times 0.5 .. 1."""

    def __init__(
        self, low: float = 0.2, high: float = 10.0, rng: Callable[[], float] = random.random
    ) -> None:
        if not 0 < low <= high:
            raise ValueError("need 0 < low <= high")
        self.low = low
        self.high = high
        self.rng = rng
        self.attempt = 0

    def next(self) -> float:
        """The next delay (grows until ``high``)."""
        ceiling = min(self.high, self.low * 2 ** min(self.attempt, 62))
        self.attempt += 1
        return float(ceiling * (0.5 + 0.5 * self.rng()))

    def reset(self) -> None:
        """Start again from ``low`` (after a success)."""
        self.attempt = 0


# --------------------------------------------------------------------------- reflector


class Reflector:
    """List, then watch from the list's version; relist on 410; back off on errors.

    ``on_list`` gets every object of a (re)list; ``on_event`` each watch event;
    ``on_change`` is called after either. ``synced`` turns true after the first list.

    With a ``sink``, a (re)list goes to it instead of ``on_list``, in slices of at
    most ``slice_size`` objects as its pages arrive, the event loop running between
    slices: a client with ``list_pages`` then fetches the next page while the sink
    works on this one, and a large list is never held whole.
    """

    def __init__(
        self,
        client: ReflectApi,
        resource: Resource,
        on_list: Callable[[list[JsonObject]], None],
        on_event: Callable[[str, JsonObject], None],
        on_change: Callable[[], None],
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
        backoff: Backoff | None = None,
        watch_timeout: int = 300,
        on_error: Callable[[KubeError], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sink: ListSink | None = None,
        slice_size: int = 100,
    ) -> None:
        self.client = client
        self.sink = sink
        self.slice_size = max(1, slice_size)
        self.resource = resource
        self.on_list = on_list
        self.on_event = on_event
        self.on_change = on_change
        self.on_error = on_error
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.backoff = backoff or Backoff()
        self.watch_timeout = watch_timeout
        self.clock = clock
        self.synced = False
        self.connected = False
        self.resource_version: str | None = None
        self.lists = 0
        self.relists_gone = 0
        self.errors = 0

    async def run(self) -> None:
        """Forever (cancel to stop)."""
        name = self.resource.plural
        while True:
            try:
                if self.resource_version is None:
                    if self.sink is not None:
                        count, rv = await self._list_into(self.sink)
                    else:
                        items, rv = await self.client.list(
                            self.resource,
                            label_selector=self.label_selector,
                            field_selector=self.field_selector,
                        )
                        count = len(items)
                        self.on_list(items)
                        del items
                    self.lists += 1
                    self.resource_version = rv
                    self.synced = self.connected = True
                    self.backoff.reset()
                    self.on_change()
                    log.debug("listed %d %s at %s", count, name, rv)
                started = self.clock()
                events = 0
                async for kind, obj in self.client.watch(
                    self.resource,
                    resource_version=self.resource_version,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    timeout_seconds=self.watch_timeout,
                ):
                    self.connected = True
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self.resource_version = str(version)
                    if kind != "BOOKMARK":
                        events += 1
                        self.on_event(kind, obj)
                        self.on_change()
                if events == 0 and self.clock() - started < 1.0:
                    # A stream that ends at once, again and again, must not spin.
                    await asyncio.sleep(self.backoff.next())
            except Gone:
                self.relists_gone += 1
                log.info(
                    "%s: resourceVersion %s expired (410); listing again",
                    name,
                    self.resource_version,
                )
                self.resource_version = None
            except KubeError as exc:
                self.errors += 1
                self.connected = False
                if self.on_error is not None:
                    self.on_error(exc)
                delay = self.backoff.next()
                log.warning("%s: %s; retrying in %.1fs", name, exc, delay)
                await asyncio.sleep(delay)

    async def _whole_list(self) -> AsyncGenerator[ListPage, None]:
        """The client's whole list as one page (a client without ``list_pages``)."""
        items, version = await self.client.list(
            self.resource, label_selector=self.label_selector, field_selector=self.field_selector
        )
        yield items, version

    async def _list_into(self, sink: ListSink) -> tuple[int, str]:
        """A (re)list, slice by slice into ``sink``: (how many objects, its version)."""
        sink.list_started()
        count, version = 0, ""
        size = self.slice_size
        if isinstance(self.client, PagedListApi):
            pages = self.client.list_pages(
                self.resource,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
            )
        else:
            pages = self._whole_list()
        async with contextlib.aclosing(pages):
            async for items, page_version in pages:
                version = page_version
                for start in range(0, len(items), size):
                    sink.list_page(items[start : start + size])
                    # Let the next page's request go out (and other work run).
                    await asyncio.sleep(0)
                count += len(items)
        sink.list_done()
        return count, version
