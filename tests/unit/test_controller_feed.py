"""The controller's feeds: list, watch, relist after 410 Gone, into ``observe``.

A fake API serves a list, then a watch stream, then 410 Gone and a second list that
lacks a pod: the feed reports every listed pod (type None), every event as it comes,
and the pod missing from the relist as deleted; it stops when cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from stockade.controller.feed import Feed, WithoutSpecs
from stockade.kube import (
    NAMESPACES,
    NODE_RULE_SETS,
    PODS,
    Gone,
    JsonObject,
    KubeClient,
    KubeConfig,
    Resource,
    Unreachable,
)
from stockade.reflector import Backoff
from stockade_lab.emulator import EmulatorThread

ROOT = Path(__file__).resolve().parents[2]


def _pod(ns: str, name: str, app: str = "x") -> JsonObject:
    return {"metadata": {"namespace": ns, "name": name, "labels": {"app": app}}}


class FakePodApi:
    """Lists and watch streams given in order; a watch beyond them waits forever."""

    def __init__(self, lists: list[list[JsonObject]], streams: list[list[Any]]) -> None:
        self.lists = lists
        self.streams = streams
        self.calls: list[tuple[str, str, str | None]] = []

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]:
        self.calls.append(("list", resource.plural, None))
        return self.lists.pop(0), str(len(self.calls))

    async def _stream(self, version: str | None) -> AsyncIterator[tuple[str, JsonObject]]:
        if not self.streams:
            await asyncio.Event().wait()
        for item in self.streams.pop(0):
            if item == "GONE":
                raise Gone(410, "too old")
            yield item
        await asyncio.Event().wait()

    def watch(
        self,
        resource: Resource,
        resource_version: str | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, JsonObject]]:
        self.calls.append(("watch", resource.plural, resource_version))
        return self._stream(resource_version)

    async def patch_status(
        self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        raise AssertionError("the Pod feed writes nothing")


def _names(seen: list[tuple[str | None, Mapping[str, Any]]]) -> list[tuple[str | None, str]]:
    return [(kind, f"{o['metadata']['namespace']}/{o['metadata']['name']}") for kind, o in seen]


async def _until(cond: Any) -> None:
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not reached")


def test_list_events_and_a_relist_that_lost_a_pod() -> None:
    async def scenario() -> None:
        api = FakePodApi(
            lists=[[_pod("a", "p1"), _pod("a", "p2")], [_pod("a", "p1"), _pod("b", "p3")]],
            streams=[
                [("MODIFIED", _pod("a", "p1", "y")), ("ADDED", _pod("b", "p3")), "GONE"],
                [("DELETED", _pod("b", "p3"))],
            ],
        )
        seen: list[tuple[str | None, Mapping[str, Any]]] = []
        feed = Feed(api, PODS, lambda kind, obj: seen.append((kind, obj)))
        assert not feed.reflector.synced
        feed.start()
        await _until(lambda: len(seen) >= 8)
        assert feed.synced
        assert _names(seen)[:7] == [
            (None, "a/p1"),
            (None, "a/p2"),
            ("MODIFIED", "a/p1"),
            ("ADDED", "b/p3"),
            # 410: listed again; a/p2 is gone from the list, so it is reported deleted
            (None, "a/p1"),
            (None, "b/p3"),
            ("DELETED", "a/p2"),
        ]
        assert _names(seen)[7:] == [("DELETED", "b/p3")]
        assert feed.known == {("a", "p1")}
        assert [c[0] for c in api.calls] == ["list", "watch", "list", "watch"]
        assert {c[1] for c in api.calls} == {"pods"}
        await feed.stop()
        await feed.stop()  # twice is harmless

    asyncio.run(scenario())


def test_a_cluster_scoped_object_is_deleted_without_a_namespace() -> None:
    seen: list[tuple[str | None, Mapping[str, Any]]] = []
    feed = Feed(FakePodApi([], []), NAMESPACES, lambda kind, obj: seen.append((kind, obj)))
    feed.on_list([{"metadata": {"name": "team-a"}}])
    assert feed.known == {("", "team-a")}
    feed.on_list([])
    assert seen[-1] == ("DELETED", {"metadata": {"name": "team-a"}})


class PagedApi(FakePodApi):
    """Hands its lists over in pages of two; the first list fails after its first page."""

    def __init__(self, lists: list[list[JsonObject]], fail_once: bool = False) -> None:
        super().__init__(lists, [])
        self.fail_once = fail_once

    async def list_pages(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        prefetch: bool = True,
    ) -> AsyncIterator[tuple[list[JsonObject], str]]:
        self.calls.append(("list", resource.plural, None))
        items = self.lists.pop(0)
        for start in range(0, len(items), 2):
            if start and self.fail_once:
                self.fail_once = False
                raise Unreachable("connection reset")
            yield items[start : start + 2], "9"


def test_a_list_in_pages_and_slices_and_one_that_failed_half_way() -> None:
    async def scenario() -> None:
        first = [_pod("a", f"p{i}") for i in range(5)]
        # The list fails after its first page; the next one lacks a/p0 (deleted meanwhile).
        api = PagedApi([first, first[1:]], fail_once=True)
        seen: list[tuple[str | None, Mapping[str, Any]]] = []
        feed = Feed(api, PODS, lambda kind, obj: seen.append((kind, obj)))
        feed.reflector.slice_size = 1
        feed.reflector.backoff = Backoff(0.001, 0.001)
        feed.start()
        await _until(lambda: feed.synced)
        names = _names(seen)
        assert names[:2] == [(None, "a/p0"), (None, "a/p1")]
        # Listed again from the start, without a/p0: observed before, so deleted now.
        assert names[2:] == [*((None, f"a/p{i}") for i in range(1, 5)), ("DELETED", "a/p0")]
        assert feed.known == {("a", f"p{i}") for i in range(1, 5)}
        await feed.stop()

    asyncio.run(scenario())


def test_a_feed_lists_after_the_one_it_follows() -> None:
    async def scenario() -> None:
        order: list[str] = []
        gate = asyncio.Event()

        class SlowApi(FakePodApi):
            async def list(self, resource: Resource, *args: Any, **kwargs: Any) -> Any:
                if resource is NAMESPACES:
                    await gate.wait()
                order.append(resource.plural)
                return await super().list(resource)

        namespaces = Feed(SlowApi([[{"metadata": {"name": "a"}}]], []), NAMESPACES, lambda *_: None)
        pods = Feed(SlowApi([[_pod("a", "p")]], []), PODS, lambda *_: None, after=namespaces)
        pods.start()
        namespaces.start()
        await asyncio.sleep(0.02)
        assert order == []
        assert not pods.synced
        gate.set()
        await _until(lambda: pods.synced)
        assert order == ["namespaces", "pods"]
        await pods.stop()
        await namespaces.stop()

    asyncio.run(scenario())


def test_rule_sets_come_without_their_specs_from_the_api_server(tmp_path: Path) -> None:
    """Listed and watched from the emulator (the API server's layout): metadata and
    status, in small pages, and no spec."""
    emu = EmulatorThread()
    emu.start()
    try:
        for crd in yaml.safe_load_all((ROOT / "manifests/crds.yaml").read_text()):
            emu.emulator.put_object(crd)
        for i in range(3):
            emu.emulator.put_object(_rule_set(f"n{i}"))
        config = KubeConfig.load(emu.write_kubeconfig(tmp_path / "kubeconfig"))

        async def scenario() -> None:
            seen: list[tuple[str | None, Mapping[str, Any]]] = []
            async with KubeClient(config) as client:
                specless = WithoutSpecs(client, page=2)
                pages = [len(items) async for items, _ in specless.list_pages(NODE_RULE_SETS)]
                assert pages == [2, 1]
                feed = Feed(specless, NODE_RULE_SETS, lambda t, o: seen.append((t, o)))
                feed.start()
                await _until(lambda: feed.synced)
                status = {"appliedGeneration": 1, "conditions": [{"type": "A", "status": "True"}]}
                await client.patch_status(NODE_RULE_SETS, "n1", status)
                await client.create(NODE_RULE_SETS, _rule_set("n3"))
                await _until(lambda: len(seen) == 5)
                await feed.stop()
            assert [(t, o["metadata"]["name"]) for t, o in seen] == [
                (None, "n0"),
                (None, "n1"),
                (None, "n2"),
                ("MODIFIED", "n1"),
                ("ADDED", "n3"),
            ]
            assert all("spec" not in o and o["kind"] == "NodeRuleSet" for _, o in seen)
            assert seen[3][1]["status"] == status
            assert seen[3][1]["metadata"]["generation"] == 1
            assert "status" not in seen[4][1]

        asyncio.run(scenario())
    finally:
        emu.stop()


def _rule_set(node: str) -> JsonObject:
    return {
        "apiVersion": "stockade.dev/v1alpha1",
        "kind": "NodeRuleSet",
        "metadata": {"name": node},
        "spec": {"node": node, "pods": [], "policies": [], "peerSets": []},
    }
