"""The emulator's store and event log, without HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from stockade_lab.emulator.discovery import group_list, openapi_v3, resource_list, root_paths
from stockade_lab.emulator.status_errors import ApiError
from stockade_lab.emulator.store import Store, WatchEvent, translate_event

Obj = dict[str, Any]


def pod(name: str, namespace: str = "default", **labels: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
    }


def test_create_sets_server_metadata_and_defaults() -> None:
    store = Store()
    before = store.resource_version
    stored = store.put_object(pod("a"))
    meta = stored["metadata"]
    assert int(meta["resourceVersion"]) == before + 1
    assert meta["uid"]
    assert meta["creationTimestamp"]
    assert meta["generation"] == 1
    # kube-apiserver's defaulting that stockade relies on
    assert stored["spec"]["containers"][0]["ports"][0]["protocol"] == "TCP"


def test_a_namespaced_object_needs_its_namespace() -> None:
    store = Store()
    with pytest.raises(ApiError) as caught:
        store.put_object(pod("a", "nowhere"))
    assert caught.value.code == 404


def test_update_bumps_generation_only_for_the_spec() -> None:
    store = Store()
    store.put_object(pod("a"))
    relabelled = store.put_object(pod("a", app="web"))
    assert relabelled["metadata"]["generation"] == 1
    changed = pod("a", app="web")
    changed["spec"]["containers"][0]["image"] = "nginx"
    assert store.put_object(changed)["metadata"]["generation"] == 2
    # the same values again: nothing written, no new version
    rv = store.resource_version
    store.put_object(changed)
    assert store.resource_version == rv


def test_the_event_log_replays_changes_in_order() -> None:
    store = Store()
    start = store.resource_version
    store.put_object(pod("a"))
    store.put_object(pod("a", app="web"))
    store.delete_object("", "v1", "pods", "a", "default")
    events = store.events_after(start)
    assert [e.type for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert [e.rv for e in events] == sorted(e.rv for e in events)
    assert events[1].old is not None
    assert events[1].old["metadata"].get("labels") == {}
    assert store.events_after(events[-1].rv) == []


def test_compaction_makes_older_versions_gone() -> None:
    store = Store(log_limit=2)
    start = store.resource_version
    for name in "abc":
        store.put_object(pod(name))
    # three events, two kept: a watch from ``start`` has lost one
    assert store.compacted_rv > start
    assert len(store.events_after(store.compacted_rv)) == 2
    store.compact()
    assert store.compacted_rv == store.resource_version
    assert store.events_after(start) == []


def test_finalizers_hold_a_deletion_until_they_are_removed() -> None:
    store = Store()
    held = pod("a")
    held["metadata"]["finalizers"] = ["stockade.dev/test"]
    store.put_object(held)
    marked = store.delete_object("", "v1", "pods", "a", "default")
    assert marked["metadata"]["deletionTimestamp"]
    assert store.get_object("", "v1", "pods", "a", "default") is not None
    released = store.get_object("", "v1", "pods", "a", "default")
    assert released is not None
    released["metadata"]["finalizers"] = []
    store.put_object(released)
    assert store.get_object("", "v1", "pods", "a", "default") is None


def test_a_deleted_namespace_takes_its_objects_with_it() -> None:
    store = Store()  # no call_later: the namespace controller's part runs at once
    store.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    store.put_object(pod("a", "shop"))
    store.delete_object("", "v1", "namespaces", "shop")
    assert store.get_object("", "v1", "pods", "a", "shop") is None
    assert store.get_object("", "v1", "namespaces", "shop") is None


def test_a_crd_registers_its_resource_and_takes_it_away() -> None:
    store = Store()
    crd: Obj = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }
    store.put_object(crd)
    assert store.find("example.com", "v1", "widgets") is not None
    assert "widgets.example.com" in store.crds()
    store.put_object({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert len(store.objects("example.com", "v1", "widgets")) == 1
    store.delete_object(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", crd["metadata"]["name"]
    )
    assert store.find("example.com", "v1", "widgets") is None


def test_every_commit_is_announced() -> None:
    store = Store()
    seen: list[int] = []
    store.on_commit = lambda: seen.append(store.resource_version)
    store.put_object(pod("a"))
    store.delete_object("", "v1", "pods", "a", "default")
    assert seen == [store.resource_version - 1, store.resource_version]


def _event(kind: str, obj: Obj, old: Obj | None = None) -> WatchEvent:
    return WatchEvent(int(obj["metadata"]["resourceVersion"]), kind, ("", "pods"), obj, old)


def test_a_watch_sees_an_object_enter_and_leave_its_selector() -> None:
    store = Store()
    rd = store.resource("", "v1", "pods")
    before = store.put_object(pod("a"))
    after = store.put_object(pod("a", app="web"))
    web = lambda obj: (obj["metadata"].get("labels") or {}).get("app") == "web"  # noqa: E731
    entered = translate_event(rd, _event("MODIFIED", after, before), None, web)
    left = translate_event(rd, _event("MODIFIED", before, after), None, web)
    assert entered is not None
    assert entered[0] == "ADDED"
    assert left is not None
    assert left[0] == "DELETED"
    assert translate_event(rd, _event("MODIFIED", after, before), "other", web) is None


def test_discovery_follows_the_resources() -> None:
    store = Store()
    defs = store.resources()
    assert "/apis/networking.k8s.io/v1" in root_paths(defs)
    groups = {g["name"] for g in group_list(defs)["groups"]}
    assert "networking.k8s.io" in groups
    names = {r["name"] for r in resource_list(defs, "", "v1")["resources"]}
    assert {"pods", "namespaces", "pods/status"} <= names
    with pytest.raises(ApiError):
        resource_list(defs, "nothing.example", "v1")
    index = openapi_v3("", defs, {})
    assert "apis/networking.k8s.io/v1" in index["paths"]
    doc = openapi_v3("apis/networking.k8s.io/v1", defs, {})
    assert any(path.endswith("/networkpolicies/{name}") for path in doc["paths"])


def test_a_page_starts_after_its_key_and_counts_the_rest() -> None:
    store = Store()
    store.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    for name in ("d", "b", "a", "c"):
        store.put_object(pod(name, app="web" if name in "ac" else "db"))
    store.put_object(pod("z", "shop"))
    rd = store.resource("", "v1", "pods")

    def names(objs: list[Obj]) -> list[str]:
        return [o["metadata"]["name"] for o in objs]

    page, rest = store.page(rd, None, None, None, 2)
    assert (names(page), rest) == (["a", "b"], 3)
    page, rest = store.page(rd, None, None, ("default", "b"), 2)
    assert (names(page), rest) == (["c", "d"], 1)
    page, rest = store.page(rd, "default", None, ("default", "b"), 0)
    assert (names(page), rest) == (["c", "d"], 0)
    page, rest = store.page(rd, "shop", None, None, 5)
    assert (names(page), rest) == (["z"], 0)
    web = store.page(rd, None, lambda o: o["metadata"]["labels"].get("app") == "web", None, 1)
    assert (names(web[0]), web[1]) == (["a"], 1)
    # A key that comes or goes is seen by the next page (the sorted keys are redone).
    store.put_object(pod("bb"))
    store.delete_object("", "v1", "pods", "c", "default")
    page, rest = store.page(rd, "default", None, ("default", "b"), 0)
    assert (names(page), rest) == (["bb", "d"], 0)
