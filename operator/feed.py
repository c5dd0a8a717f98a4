"""The high-volume kinds, fed to the controller's state by reflectors of our own.

Pods are nine events in ten of a burst, and NetworkPolicies and Namespaces most of
the rest; kopf's per-event machinery (its per-object dispatch, its handler
invocation with a dozen keyword arguments, its logging adapters) cost more than
parsing and compiling the object itself (docs/performance.md, "Control plane").
The handlers need none of it for these kinds: they read the event's object and
nothing else. So each is listed and watched by :class:`~stockade.reflector.Reflector`
(the one the agent uses) and every event goes straight to the same ``observe`` the
kopf handlers call. The feeds live inside kopf's lifecycle: started by a
``kopf.on.startup`` handler, stopped by ``kopf.on.cleanup`` (operator/handlers.py),
so they run exactly when kopf's watches run. The low-volume kinds (Nodes,
ClusterNetworkPolicies, IsolationPolicies) stay on kopf. The NodeRuleSets, which the
controller writes and reads only the agents' status of, come from a feed too, their
specs skipped (:class:`WithoutSpecs`).

A relist (after 410 Gone) delivers the whole list again: objects that were known
and are missing from it are reported deleted, as a watch would have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

from stockade.kube import JsonObject, KubeClient, ListPage, Resource, collect_pages
from stockade.reflector import ReflectApi, Reflector

log = logging.getLogger("stockade.controller")

# observe(event type, object): None for a listed object, else ADDED/MODIFIED/DELETED.
Observe = Callable[[str | None, Mapping[str, Any]], None]


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    """``(namespace, name)`` of an object (namespace empty when cluster-scoped)."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _deleted(namespace: str, name: str) -> dict[str, Any]:
    meta = {"namespace": namespace, "name": name} if namespace else {"name": name}
    return {"metadata": meta}


class Feed:
    """List and watch one resource into ``observe``, remembering what is known.

    A list is taken page by page as it arrives (the next page is fetched while this
    one is observed) and never held whole. ``after``: this feed's first list waits
    until that feed's first list is in, so the initial objects reach the compiler
    in an order that is cheap for it (namespaces before the pods and policies that
    use them: a policy selecting namespaces by label, compiled before the
    namespaces, was re-scoped once per namespace that came after it).
    """

    def __init__(
        self, client: ReflectApi, resource: Resource, observe: Observe, after: Feed | None = None
    ) -> None:
        self.resource = resource
        self.observe = observe
        self.after = after
        self.known: set[tuple[str, str]] = set()
        self._listing: set[tuple[str, str]] = set()
        self.listed = asyncio.Event()
        self.reflector = Reflector(
            client, resource, self.on_list, self.on_event, lambda: None, sink=self
        )
        self._task: asyncio.Task[None] | None = None

    def on_list(self, items: list[JsonObject]) -> None:
        """A (re)list given whole: every item observed; known objects it lacks are deleted."""
        self.list_started()
        self.list_page(items)
        self.list_done()

    def list_started(self) -> None:
        """A (re)list begins."""
        self._listing = set()

    def list_page(self, items: list[JsonObject]) -> None:
        """Some objects of the list: each observed (event type None), and known from now
        on (a list that fails half-way has them observed: the next one must be able to
        report them deleted)."""
        listing, known, observe = self._listing, self.known, self.observe
        for item in items:
            key = object_key(item)
            listing.add(key)
            known.add(key)
            observe(None, item)

    def list_done(self) -> None:
        """The list is in: known objects it lacked are reported deleted."""
        listed, self._listing = self._listing, set()
        for namespace, name in sorted(self.known - listed):
            self.observe("DELETED", _deleted(namespace, name))
        self.known = listed
        self.listed.set()

    def on_event(self, kind: str, obj: JsonObject) -> None:
        """One watch event (ADDED, MODIFIED, DELETED; ERROR events never get here)."""
        key = object_key(obj)
        if kind == "DELETED":
            self.known.discard(key)
        else:
            self.known.add(key)
        self.observe(kind, obj)

    @property
    def synced(self) -> bool:
        """The first list is in."""
        return self.reflector.synced

    def start(self) -> None:
        """Run the reflector (from kopf's startup)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"feed-{self.resource.plural}")

    async def _run(self) -> None:
        try:
            if self.after is not None:
                await self.after.listed.wait()
            await self.reflector.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a bug: say so, kopf's health sees the rest
            log.exception("the %s feed stopped", self.resource.plural)
            raise

    async def stop(self) -> None:
        """Stop the reflector (from kopf's cleanup)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# Objects a page when a feed lists without specs: a NodeRuleSet weighs tens of KB.
_SPECLESS_PAGE = 50


class WithoutSpecs:
    """The calls of a feed whose objects come without their spec.

    For the NodeRuleSets, whose metadata and status (the agents') are all the
    controller reads: their specs are its own writes, tens of KB each. Watched by
    kopf, every rule set the controller wrote came back in a watch event decoded
    whole (all 28 MB of them at a cold start of 500 nodes), on the event loop that
    was writing the next ones. The watch skips the spec without decoding it
    (:meth:`~stockade.kube.KubeClient.watch`, ``without_spec``); a list (at start,
    and after 410 Gone) is decoded whole, in small pages, and the specs dropped.
    """

    def __init__(self, client: KubeClient, page: int = _SPECLESS_PAGE) -> None:
        self.client = client
        self.page = page

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]:
        """The whole list, without specs."""
        return await collect_pages(
            self.list_pages(resource, namespace, label_selector, field_selector)
        )

    async def list_pages(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        prefetch: bool = True,
        limit: int = _SPECLESS_PAGE,
    ) -> AsyncGenerator[ListPage, None]:
        """The list in pages of at most ``page`` objects, without specs."""
        pages = self.client.list_pages(
            resource,
            namespace,
            label_selector,
            field_selector,
            prefetch=prefetch,
            limit=min(limit, self.page),
        )
        async with contextlib.aclosing(pages):
            async for items, version in pages:
                for item in items:
                    item.pop("spec", None)
                yield items, version

    def watch(
        self,
        resource: Resource,
        resource_version: str | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, JsonObject]]:
        """The client's watch, its objects' specs skipped."""
        return self.client.watch(
            resource,
            resource_version,
            namespace,
            label_selector,
            field_selector,
            timeout_seconds,
            without_spec=True,
        )
