"""The API server emulator against plain HTTP, the kubernetes client, real kopf and kubectl."""

from __future__ import annotations

import gc
import http.client
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade_lab.emulator import Emulator, EmulatorThread

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "manifests" / "crds.yaml"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed (the kubectl tests need the real binary)"
)


# --- helpers ----------------------------------------------------------------------------------


class Api:
    """A tiny JSON client over http.client (no third-party code between test and server)."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Accept": accept}
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode()

    def ok(self, method: str, path: str, body: Any = None, **kwargs: str) -> Any:
        status, result = self.call(method, path, body, **kwargs)
        assert 200 <= status < 300, (status, result)
        return result

    def watch(self, path: str, accept: str = "application/json") -> Watch:
        return Watch(self, path, accept)


class Watch:
    """A watch stream read line by line."""

    def __init__(self, api: Api, path: str, accept: str) -> None:
        self.conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
        self.conn.request("GET", path, headers={"Accept": accept})
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()
        self.content_type = self.response.getheader("Content-Type", "")

    def next(self, timeout: float = 5.0) -> Obj | None:
        """The next event, or None at the end of the stream."""
        sock = self.conn.sock
        if sock is not None:
            sock.settimeout(timeout)
        line = self.response.readline()
        if not line:
            return None
        event: Obj = json.loads(line)
        return event

    def take(self, count: int, timeout: float = 5.0) -> list[Obj]:
        events: list[Obj] = []
        for _ in range(count):
            event = self.next(timeout)
            assert event is not None, f"stream ended after {events}"
            events.append(event)
        return events

    def close(self) -> None:
        self.conn.close()


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec},
    }


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def emu() -> Iterator[EmulatorThread]:
    with EmulatorThread(Emulator(bookmark_interval=0.2)) as running:
        yield running


@pytest.fixture
def api(emu: EmulatorThread) -> Api:
    return Api(emu.url)


PODS = "/api/v1/namespaces/default/pods"


# --- paths and discovery ----------------------------------------------------------------------


def test_core_namespaces_paths(api: Api) -> None:
    listed = api.ok("GET", "/api/v1/namespaces")
    assert {"default", "kube-system"} <= {n["metadata"]["name"] for n in listed["items"]}
    one = api.ok("GET", "/api/v1/namespaces/default")
    assert one["kind"] == "Namespace"
    assert one["status"]["phase"] == "Active"
    status = api.ok("GET", "/api/v1/namespaces/default/status")
    assert status["metadata"]["name"] == "default"
    api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "team-a"}})
    assert api.ok("GET", "/api/v1/namespaces/team-a/pods")["items"] == []
    assert api.call("GET", "/api/v1/namespaces/missing")[0] == 404
    assert api.call("GET", "/api/v1/nothings")[0] == 404


def test_discovery(api: Api) -> None:
    assert api.ok("GET", "/api")["versions"] == ["v1"]
    core = api.ok("GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods"]["namespaced"] is True
    assert by_name["pods"]["kind"] == "Pod"
    assert "pods/status" in by_name
    assert "nodes/status" in by_name
    assert by_name["namespaces"]["namespaced"] is False
    groups = {g["name"]: g for g in api.ok("GET", "/apis")["groups"]}
    assert {"networking.k8s.io", "apiextensions.k8s.io", "coordination.k8s.io"} <= set(groups)
    assert "events.k8s.io" in groups
    assert "metrics.k8s.io" not in groups
    assert api.ok("GET", "/apis/networking.k8s.io")["preferredVersion"]["version"] == "v1"
    netpol = api.ok("GET", "/apis/networking.k8s.io/v1")["resources"]
    assert netpol[0]["name"] == "networkpolicies"
    assert api.ok("GET", "/version")["major"] == "1"
    for health in ("/healthz", "/readyz", "/livez"):
        assert api.call("GET", health) == (200, "ok")


def test_openapi_v3_declares_field_validation(api: Api) -> None:
    root = api.ok("GET", "/openapi/v3")
    url = root["paths"]["apis/networking.k8s.io/v1"]["serverRelativeURL"]
    doc = api.ok("GET", url)
    patch = doc["paths"][
        "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"
    ]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "NetworkPolicy"
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    assert api.call("GET", "/openapi/v2")[0] == 200


# --- server-set metadata ----------------------------------------------------------------------


def test_server_sets_metadata(api: Api) -> None:
    first = api.ok("POST", PODS, pod("a"))
    meta = first["metadata"]
    assert meta["namespace"] == "default"
    assert meta["uid"]
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    second = api.ok("POST", PODS, {"metadata": {"generateName": "web-"}, "spec": {}})
    assert second["metadata"]["name"].startswith("web-")
    assert len(second["metadata"]["name"]) == len("web-") + 5
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert second["kind"] == "Pod"
    assert second["apiVersion"] == "v1"
    assert api.call("POST", PODS, pod("a"))[0] == 409
    status, error = api.call("POST", "/api/v1/namespaces/nope/pods", pod("b"))
    assert status == 404
    assert error["kind"] == "Status"
    assert error["reason"] == "NotFound"
    wrong = pod("c")
    wrong["metadata"]["namespace"] = "kube-system"
    assert api.call("POST", PODS, wrong)[0] == 400
    assert api.call("POST", PODS, {"metadata": {}})[0] == 422


def test_generation_bumps_on_spec_changes_only(api: Api) -> None:
    api.ok("POST", PODS, pod("g"))
    path = f"{PODS}/g"
    merge = "application/merge-patch+json"
    labelled = api.ok("PATCH", path, {"metadata": {"labels": {"x": "1"}}}, content_type=merge)
    assert labelled["metadata"]["generation"] == 1
    status = api.ok("PATCH", f"{path}/status", {"status": {"phase": "Running"}}, content_type=merge)
    assert status["metadata"]["generation"] == 1
    assert status["status"]["phase"] == "Running"
    changed = api.ok("PATCH", path, {"spec": {"nodeName": "n1"}}, content_type=merge)
    assert changed["metadata"]["generation"] == 2


def test_writes_answer_with_the_metadata_alone_when_asked(api: Api) -> None:
    partial = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"
    created = api.ok("POST", PODS, pod("m"), accept=partial)
    assert created["kind"] == "PartialObjectMetadata"
    assert created["apiVersion"] == "meta.k8s.io/v1"
    assert created["metadata"]["name"] == "m"
    assert created["metadata"]["uid"]
    assert "spec" not in created
    merge = "application/merge-patch+json"
    patched = api.ok(
        "PATCH", f"{PODS}/m", {"spec": {"nodeName": "n1"}}, content_type=merge, accept=partial
    )
    assert set(patched) == {"kind", "apiVersion", "metadata"}
    assert patched["metadata"]["generation"] == 2
    assert api.ok("GET", f"{PODS}/m", accept=partial)["kind"] == "PartialObjectMetadata"
    assert api.ok("GET", f"{PODS}/m")["spec"]["nodeName"] == "n1"


# --- patches, PUT, conflicts, deletion ---------------------------------------------------------


def test_json_patch_and_test_op(api: Api) -> None:
    created = api.ok("POST", PODS, pod("j", {"app": "x"}))
    path = f"{PODS}/j"
    jp = "application/json-patch+json"
    rv = created["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/labels/tier", "value": "db"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx"},
    ]
    patched = api.ok("PATCH", path, ops, content_type=jp)
    assert patched["metadata"]["labels"] == {"app": "x", "tier": "db"}
    assert patched["spec"]["containers"][0]["image"] == "nginx"
    stale = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}]
    status, error = api.call("PATCH", path, stale, content_type=jp)
    assert status == 422
    assert error["reason"] == "Invalid"
    removed = api.ok(
        "PATCH", path, [{"op": "remove", "path": "/metadata/labels/app"}], content_type=jp
    )
    assert removed["metadata"]["labels"] == {"tier": "db"}


def test_merge_patch(api: Api) -> None:
    api.ok("POST", PODS, pod("m", {"a": "1", "b": "2"}))
    merged = api.ok(
        "PATCH",
        f"{PODS}/m",
        {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"containers": [{"name": "z"}]}},
        content_type="application/merge-patch+json",
    )
    assert merged["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert merged["spec"]["containers"] == [{"name": "z"}]  # merge patch replaces lists


def test_strategic_merge_patch(api: Api) -> None:
    body = pod("s")
    body["spec"]["containers"] = [
        {"name": "a", "image": "a:1", "ports": [{"containerPort": 80, "name": "http"}]},
        {"name": "b", "image": "b:1"},
    ]
    body["metadata"]["finalizers"] = ["one"]
    api.ok("POST", PODS, body)
    smp = "application/strategic-merge-patch+json"
    patch = {
        "metadata": {"finalizers": ["two"]},
        "spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "c"}],
            "containers": [
                {"name": "a", "image": "a:2", "ports": [{"containerPort": 443, "name": "https"}]},
                {"name": "c", "image": "c:1"},
            ],
        },
    }
    patched = api.ok("PATCH", f"{PODS}/s", patch, content_type=smp)
    containers = patched["spec"]["containers"]
    assert [c["name"] for c in containers] == ["b", "a", "c"]
    by_name = {c["name"]: c for c in containers}
    assert by_name["a"]["image"] == "a:2"
    assert [p["containerPort"] for p in by_name["a"]["ports"]] == [80, 443]
    assert by_name["a"]["ports"][0]["protocol"] == "TCP"  # defaulted
    assert patched["metadata"]["finalizers"] == ["one", "two"]
    assert not any(k.startswith("$") for k in patched["spec"])
    deleted = api.ok(
        "PATCH",
        f"{PODS}/s",
        {
            "spec": {"containers": [{"name": "b", "$patch": "delete"}]},
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["one"]},
        },
        content_type=smp,
    )
    assert [c["name"] for c in deleted["spec"]["containers"]] == ["a", "c"]
    assert deleted["metadata"]["finalizers"] == ["two"]


def test_put_conflicts_and_noop(emu: EmulatorThread, api: Api) -> None:
    created = api.ok("POST", PODS, pod("p"))
    path = f"{PODS}/p"
    replaced = dict(created, spec={"containers": [{"name": "main", "image": "v2"}]})
    updated = api.ok("PUT", path, replaced)
    assert updated["spec"]["containers"][0]["image"] == "v2"
    assert updated["metadata"]["generation"] == 2
    status, error = api.call("PUT", path, replaced)  # carries the old resourceVersion
    assert status == 409
    assert error["reason"] == "Conflict"
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}}
    merge = "application/merge-patch+json"
    assert api.call("PATCH", path, stale, content_type=merge)[0] == 409
    before = emu.emulator.resource_version
    same = api.ok("PATCH", path, {"metadata": {"labels": {}}}, content_type=merge)
    assert same["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]
    assert emu.emulator.resource_version == before


def test_finalizers_and_delete_collection(api: Api) -> None:
    body = pod("f", {"app": "x"})
    body["metadata"]["finalizers"] = ["stockade.dev/cleanup"]
    api.ok("POST", PODS, body)
    for name, app in (("k1", "x"), ("k2", "y"), ("k3", "x")):
        api.ok("POST", PODS, pod(name, {"app": app}))
    gone = api.ok("DELETE", f"{PODS}?labelSelector=app%3Dx")
    assert gone["kind"] == "PodList"
    assert sorted(p["metadata"]["name"] for p in gone["items"]) == ["f", "k1", "k3"]
    remaining = api.ok("GET", PODS)["items"]
    assert [p["metadata"]["name"] for p in remaining] == ["f", "k2"]
    terminating = remaining[0]
    assert terminating["metadata"]["deletionTimestamp"]
    assert api.ok("DELETE", f"{PODS}/f")["metadata"]["deletionTimestamp"]  # idempotent
    api.ok(
        "PATCH",
        f"{PODS}/f",
        {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    assert api.call("GET", f"{PODS}/f")[0] == 404
    assert api.call("DELETE", f"{PODS}/f")[0] == 404


def test_namespace_deletion_cascades(api: Api) -> None:
    api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "doomed"}})
    api.ok("POST", "/api/v1/namespaces/doomed/pods", pod("x"))
    terminating = api.ok("DELETE", "/api/v1/namespaces/doomed")
    assert terminating["status"]["phase"] == "Terminating"
    assert api.call("POST", "/api/v1/namespaces/doomed/pods", pod("y"))[0] == 403
    assert len(api.ok("GET", "/api/v1/namespaces/doomed/pods")["items"]) == 1
    wait_for(lambda: api.call("GET", "/api/v1/namespaces/doomed")[0] == 404, 5, "cleanup")
    assert api.ok("GET", "/api/v1/pods")["items"] == []


# --- list and watch ---------------------------------------------------------------------------


def test_list_kind_version_and_pages(api: Api) -> None:
    for index in range(5):
        api.ok("POST", PODS, pod(f"p{index}"))
    listed = api.ok("GET", PODS)
    assert listed["kind"] == "PodList"
    assert listed["apiVersion"] == "v1"
    assert int(listed["metadata"]["resourceVersion"]) >= 5
    names: list[str] = []
    query = "limit=2"
    while True:
        page = api.ok("GET", f"{PODS}?{query}")
        names += [p["metadata"]["name"] for p in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
        query = f"limit=2&continue={urllib.parse.quote(token)}"
    assert names == [f"p{i}" for i in range(5)]
    nodes = api.ok("GET", "/api/v1/nodes")
    assert nodes["kind"] == "NodeList"


def test_watch_resumes_from_version_and_loses_nothing(api: Api) -> None:
    api.ok("POST", PODS, pod("before"))
    listed = api.ok("GET", PODS)
    rv = listed["metadata"]["resourceVersion"]
    api.ok("POST", PODS, pod("between"))  # after the list, before the watch
    watch = api.watch(f"{PODS}?watch=true&resourceVersion={rv}")
    try:
        api.ok("POST", PODS, pod("after"))
        events = watch.take(2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "between"),
            ("ADDED", "after"),
        ]
        assert events[0]["object"]["kind"] == "Pod"
        assert watch.content_type.startswith("application/json")
    finally:
        watch.close()
    initial = api.watch(f"{PODS}?watch=true")
    try:
        names = [e["object"]["metadata"]["name"] for e in initial.take(3)]
        assert names == ["after", "before", "between"]
    finally:
        initial.close()


def test_watch_gone_after_compaction(emu: EmulatorThread, api: Api) -> None:
    first = api.ok("POST", PODS, pod("old"))
    emu.emulator.log_limit = 2
    for index in range(4):
        api.ok("POST", PODS, pod(f"new{index}"))
    watch = api.watch(f"{PODS}?watch=true&resourceVersion={first['metadata']['resourceVersion']}")
    try:
        event = watch.next()
        assert event is not None
        assert event["type"] == "ERROR"
        assert event["object"]["kind"] == "Status"
        assert event["object"]["code"] == 410
        assert event["object"]["reason"] == "Expired"
        assert watch.next() is None
    finally:
        watch.close()
    emu.emulator.compact()
    rv = api.ok("GET", PODS)["metadata"]["resourceVersion"]
    fresh = api.watch(f"{PODS}?watch=true&resourceVersion={rv}&timeoutSeconds=1")
    assert fresh.next(timeout=3) is None  # nothing new: ends by timeoutSeconds
    fresh.close()


def test_watch_timeout_bookmarks_and_initial_events(api: Api) -> None:
    api.ok("POST", PODS, pod("w"))
    started = time.monotonic()
    watch = api.watch(
        f"{PODS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        "&allowWatchBookmarks=true&timeoutSeconds=1"
    )
    events = []
    while (event := watch.next()) is not None:
        events.append(event)
    watch.close()
    assert 0.9 <= time.monotonic() - started < 3
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    annotations = events[1]["object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}
    assert all(e["type"] == "BOOKMARK" for e in events[1:])
    assert len(events) >= 3  # periodic bookmarks (interval 0.2 s in this fixture)


def test_watch_with_selectors_translates_events(api: Api) -> None:
    rv = api.ok("GET", PODS)["metadata"]["resourceVersion"]
    watch = api.watch(f"{PODS}?watch=true&resourceVersion={rv}&labelSelector=app%3Dweb")
    merge = "application/merge-patch+json"
    try:
        api.ok("POST", PODS, pod("x", {"app": "db"}))
        api.ok("PATCH", f"{PODS}/x", {"metadata": {"labels": {"app": "web"}}}, content_type=merge)
        api.ok("PATCH", f"{PODS}/x", {"spec": {"nodeName": "n"}}, content_type=merge)
        api.ok("PATCH", f"{PODS}/x", {"metadata": {"labels": {"app": "db"}}}, content_type=merge)
        types = [e["type"] for e in watch.take(3)]
        assert types == ["ADDED", "MODIFIED", "DELETED"]
    finally:
        watch.close()


def test_label_and_field_selectors(api: Api) -> None:
    api.ok("POST", PODS, pod("a", {"app": "web", "tier": "front"}, nodeName="n1"))
    api.ok("POST", PODS, pod("b", {"app": "web"}, nodeName="n2"))
    api.ok("POST", PODS, pod("c", {"app": "db"}))
    api.ok("POST", "/api/v1/namespaces/kube-system/pods", pod("d", {"app": "web"}))

    def select(param: str, selector: str, path: str = PODS) -> list[str]:
        listed = api.ok("GET", f"{path}?{param}={urllib.parse.quote(selector)}")
        return [p["metadata"]["name"] for p in listed["items"]]

    def labels(selector: str) -> list[str]:
        return select("labelSelector", selector)

    def fields(selector: str, path: str = PODS) -> list[str]:
        return select("fieldSelector", selector, path)

    assert labels("app=web") == ["a", "b"]
    assert labels("app==web") == ["a", "b"]
    assert labels("app!=web") == ["c"]
    assert labels("app in (web, db),tier") == ["a"]
    assert labels("app notin (web)") == ["c"]
    assert labels("tier") == ["a"]
    assert labels("!tier") == ["b", "c"]
    assert labels("app=web,!tier") == ["b"]
    assert fields("metadata.name=b") == ["b"]
    assert fields("spec.nodeName=n1") == ["a"]
    assert fields("spec.nodeName!=n1") == ["b", "c"]
    assert fields("spec.nodeName=") == ["c"]
    assert fields("metadata.namespace=kube-system", "/api/v1/pods") == ["d"]
    assert fields("metadata.namespace!=default,metadata.name=d", "/api/v1/pods") == ["d"]
    assert api.call("GET", f"{PODS}?labelSelector=a%20in%20b")[0] == 400


# --- status subresource and events ------------------------------------------------------------


def test_status_subresource_is_separate(api: Api) -> None:
    body = pod("st")
    body["status"] = {"phase": "Running", "podIP": "10.0.0.1"}
    created = api.ok("POST", PODS, body)
    assert created["status"] == {"phase": "Pending"}  # as the real API server resets it
    merge = "application/merge-patch+json"
    ignored = api.ok(
        "PATCH",
        f"{PODS}/st",
        {"status": {"phase": "Failed"}, "spec": {"nodeName": "n1"}},
        content_type=merge,
    )
    assert ignored["status"]["phase"] == "Pending"
    assert ignored["spec"]["nodeName"] == "n1"
    full = dict(ignored)
    full["status"] = {"phase": "Running", "podIP": "10.0.0.2"}
    full["spec"] = {**full["spec"], "nodeName": "other"}
    put = api.ok("PUT", f"{PODS}/st/status", full)
    assert put["status"]["podIP"] == "10.0.0.2"
    assert put["spec"]["nodeName"] == "n1"  # a status write changes only status
    node = {"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready"}]}}
    assert api.ok("POST", "/api/v1/nodes", node)["status"]["conditions"]
    api.ok(
        "PATCH",
        "/api/v1/nodes/n1/status",
        {"status": {"capacity": {"pods": "110"}}},
        content_type=merge,
    )


def test_events_with_generate_name(api: Api) -> None:
    event = {
        "metadata": {"generateName": "web."},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "Compiled",
        "message": "rule set published",
        "type": "Normal",
    }
    created = api.ok("POST", "/api/v1/namespaces/default/events", event)
    assert created["metadata"]["name"].startswith("web.")
    found = api.ok(
        "GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb"
    )
    assert len(found["items"]) == 1
    new_style = {
        "metadata": {"generateName": "web."},
        "regarding": {"kind": "Pod", "name": "web"},
        "reason": "Compiled",
        "note": "ok",
        "type": "Normal",
        "action": "Compile",
        "reportingController": "stockade.dev/controller",
        "reportingInstance": "c-1",
        "eventTime": "2025-01-01T00:00:00.000000Z",
    }
    created = api.ok("POST", "/apis/events.k8s.io/v1/namespaces/default/events", new_style)
    assert created["apiVersion"] == "events.k8s.io/v1"


# --- CRDs and tables --------------------------------------------------------------------------


def apply_crds(api: Api) -> None:
    for doc in yaml.safe_load_all(CRDS.read_text()):
        api.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", doc)


def test_crds_register_resources_and_columns(api: Api) -> None:
    apply_crds(api)
    crd = api.ok(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/noderulesets.stockade.dev"
    )
    assert {c["type"] for c in crd["status"]["conditions"]} == {"Established", "NamesAccepted"}
    found = api.ok("GET", "/apis/stockade.dev/v1alpha1")["resources"]
    by_name = {r["name"]: r for r in found}
    assert by_name["noderulesets"]["namespaced"] is False
    assert by_name["noderulesets"]["kind"] == "NodeRuleSet"
    assert "noderulesets/status" in by_name
    assert "stockade.dev" in {g["name"] for g in api.ok("GET", "/apis")["groups"]}
    base = "/apis/stockade.dev/v1alpha1/noderulesets"
    body = {
        "apiVersion": "stockade.dev/v1alpha1",
        "kind": "NodeRuleSet",
        "metadata": {"name": "node-1"},
        "spec": {"node": "node-1", "pods": [], "policies": []},
        "status": {"applied": True},
    }
    created = api.ok("POST", base, body)
    assert "status" not in created  # status subresource: ignored on create
    merge = "application/merge-patch+json"
    api.ok(
        "PATCH",
        f"{base}/node-1/status",
        {"status": {"policies": 3, "clusterPolicies": 2, "applied": True}},
        content_type=merge,
    )
    table = api.ok("GET", base, accept=TABLE)
    assert table["kind"] == "Table"
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns == [
        "Name",
        "Node",
        "Policies",
        "Cluster-Policies",
        "Pods",
        "Applied",
        "Last-Sync",
        "Age",
    ]
    cells = table["rows"][0]["cells"]
    assert cells[:6] == ["node-1", "node-1", 3, 2, None, True]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    smp = "application/strategic-merge-patch+json"
    assert api.call("PATCH", f"{base}/node-1", {"spec": {}}, content_type=smp)[0] == 415
    api.ok(
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/noderulesets.stockade.dev",
    )
    assert api.call("GET", base)[0] == 404


def test_builtin_tables(api: Api) -> None:
    body = pod("web", nodeName="n1")
    api.ok("POST", PODS, body)
    api.ok(
        "PATCH",
        f"{PODS}/web/status",
        {
            "status": {
                "phase": "Running",
                "podIP": "10.1.0.5",
                "containerStatuses": [{"name": "main", "ready": True, "restartCount": 2}],
            }
        },
        content_type="application/merge-patch+json",
    )
    table = api.ok("GET", PODS, accept=TABLE)
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns[:5] == [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0)]
    assert ("IP", 1) in columns
    assert ("Node", 1) in columns
    assert table["rows"][0]["cells"][:4] == ["web", "1/1", "Running", "2"]
    assert table["rows"][0]["cells"][5:7] == ["10.1.0.5", "n1"]
    namespaces = api.ok("GET", "/api/v1/namespaces", accept=TABLE)
    assert [c["name"] for c in namespaces["columnDefinitions"]] == ["Name", "Status", "Age"]
    policy = {
        "metadata": {"name": "deny"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]},
    }
    created = api.ok(
        "POST", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies", policy
    )
    assert created["spec"]["policyTypes"] == ["Ingress"]  # defaulted
    netpols = api.ok(
        "GET", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies", accept=TABLE
    )
    assert netpols["rows"][0]["cells"][:2] == ["deny", "app=web"]


# --- faults and direct access -----------------------------------------------------------------


def test_fault_injection(emu: EmulatorThread, api: Api) -> None:
    emulator = emu.emulator
    emulator.faults.add(method="GET", path_regex=r"/pods$", status=500, times=2)
    assert api.call("GET", PODS)[0] == 500
    assert api.call("GET", PODS)[0] == 500
    assert api.call("GET", PODS)[0] == 200
    emulator.faults.add(path_regex="/nodes", delay=0.3, times=1)
    started = time.monotonic()
    api.ok("GET", "/api/v1/nodes")
    assert time.monotonic() - started >= 0.3
    emulator.faults.add(path_regex="/namespaces$", drop=True, times=1)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        api.call("GET", "/api/v1/namespaces")
    assert api.call("GET", "/api/v1/namespaces")[0] == 200
    emulator.faults.add(watch=True, status=503, reason="ServiceUnavailable", times=1)
    status, error = api.call("GET", f"{PODS}?watch=true")
    assert status == 503
    assert error["reason"] == "ServiceUnavailable"
    assert len(emulator.faults) == 0


def test_drop_watches(emu: EmulatorThread, api: Api) -> None:
    rv = api.ok("GET", PODS)["metadata"]["resourceVersion"]
    watch = api.watch(f"{PODS}?watch=true&resourceVersion={rv}")
    try:
        time.sleep(0.1)
        emu.emulator.drop_watches()
        assert watch.next(timeout=3) is None
    finally:
        watch.close()


def test_direct_access(emu: EmulatorThread, api: Api) -> None:
    emulator = emu.emulator
    rv = api.ok("GET", PODS)["metadata"]["resourceVersion"]
    watch = api.watch(f"{PODS}?watch=true&resourceVersion={rv}")
    try:
        stored = emulator.put_object(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "direct"},
                "status": {"phase": "Running", "podIP": "10.0.0.9"},
            }
        )
        assert stored["metadata"]["namespace"] == "default"
        assert stored["status"]["podIP"] == "10.0.0.9"  # kept: bypasses the API's reset
        event = watch.next()
        assert event is not None
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "direct")
    finally:
        watch.close()
    assert [p["metadata"]["name"] for p in emulator.objects("", "v1", "pods")] == ["direct"]
    emulator.delete_object("", "v1", "pods", "direct", "default")
    assert emulator.objects("", "v1", "pods") == []


def test_earlier_versions_are_never_changed_by_later_writes(api: Api) -> None:
    """A new version shares what it does not change with the stored one (no copies),
    so no write may change a version a watch replays later."""
    created = api.ok("POST", PODS, pod("cow", {"app": "a"}, nodeName="n1"))
    rv = created["metadata"]["resourceVersion"]
    merge = "application/merge-patch+json"
    api.ok("PATCH", f"{PODS}/cow", {"metadata": {"labels": {"app": "b"}}}, content_type=merge)
    api.ok("PATCH", f"{PODS}/cow", {"spec": {"nodeName": "n2"}}, content_type=merge)
    json_patch = [{"op": "replace", "path": "/metadata/labels/app", "value": "c"}]
    api.ok("PATCH", f"{PODS}/cow", json_patch, content_type="application/json-patch+json")
    current = api.ok("GET", f"{PODS}/cow")
    current["spec"]["containers"][0]["image"] = "nginx"
    api.ok("PUT", f"{PODS}/cow", current)
    api.ok("PATCH", f"{PODS}/cow/status", {"status": {"phase": "Running"}}, content_type=merge)
    watch = api.watch(f"{PODS}?watch=true&resourceVersion={rv}")  # replayed from the log
    try:
        seen = [
            (
                e["object"]["metadata"]["labels"]["app"],
                e["object"]["spec"]["nodeName"],
                e["object"]["spec"]["containers"][0]["image"],
                e["object"]["metadata"]["generation"],
                e["object"]["status"]["phase"],
            )
            for e in watch.take(5)
        ]
    finally:
        watch.close()
    assert seen == [
        ("b", "n1", "busybox", 1, "Pending"),
        ("b", "n2", "busybox", 2, "Pending"),
        ("c", "n2", "busybox", 2, "Pending"),
        ("c", "n2", "nginx", 3, "Pending"),
        ("c", "n2", "nginx", 3, "Running"),
    ]
    assert created["metadata"]["labels"] == {"app": "a"}


def test_admin_bulk_load_request_log_and_metadata(emu: EmulatorThread, api: Api) -> None:
    emulator = emu.emulator
    api.ok("GET", "/api/v1/namespaces")
    start = api.ok("GET", "/_emulator/requests?since=0")
    total = start["total"]
    assert start["requests"][-1] == ["GET", "/api/v1/namespaces"]  # admin calls not logged
    watch = api.watch(f"{PODS}?watch=true&resourceVersion={emulator.resource_version}")
    try:
        items = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bulk"}},
            *[{**pod(f"b{i}"), "status": {"phase": "Running"}} for i in range(5)],
        ]
        before = time.monotonic()
        loaded = api.ok("POST", "/_emulator/objects?chunk=2", {"items": items})
        assert loaded["count"] == 6
        assert before <= loaded["started"] <= loaded["finished"] <= time.monotonic()
        assert int(loaded["resourceVersion"]) - int(loaded["firstResourceVersion"]) == 5
        events = watch.take(5)
    finally:
        watch.close()
    assert [e["object"]["metadata"]["name"] for e in events] == [f"b{i}" for i in range(5)]
    assert events[0]["object"]["status"] == {"phase": "Running"}  # kept, as put_object does
    again = api.ok("POST", "/_emulator/objects", [{**pod("b0"), "spec": {"nodeName": "n9"}}])
    assert again["count"] == 1
    stored = emulator.get_object("", "v1", "pods", "b0", "default")
    assert stored is not None
    assert stored["spec"] == {"nodeName": "n9"}
    meta = api.ok("GET", "/_emulator/metadata?version=v1&plural=pods")
    assert [i["name"] for i in meta["items"]] == [f"b{i}" for i in range(5)]
    first = meta["items"][0]
    assert first["namespace"] == "default"
    assert first["generation"] == 2
    assert first["committed"] == meta["lastChange"]  # b0 changed last
    assert all(loaded["started"] <= i["committed"] <= meta["now"] for i in meta["items"])
    api.ok("GET", PODS)
    log = api.ok("GET", f"/_emulator/requests?since={total}")
    assert log["total"] == total + 2  # the watch and this list
    assert log["first"] == total
    assert log["requests"][-1] == ["GET", PODS]
    assert api.call("GET", "/_emulator/nothing")[0] == 404
    assert api.call("GET", "/_emulator/requests?since=x")[0] == 400
    assert api.call("POST", "/_emulator/objects", {"items": "no"})[0] == 400
    assert api.call("POST", "/_emulator/objects", [{"kind": "Nope", "apiVersion": "v9"}])[0] == 404
    # An emulator inside a test's process leaves the collector alone.
    assert not emulator.freeze_loaded


def test_a_bulk_load_freezes_what_the_process_holds_when_asked() -> None:
    frozen = gc.get_freeze_count()
    try:
        with EmulatorThread(Emulator(freeze_loaded=True)) as running:
            api = Api(running.url)
            api.ok("POST", "/_emulator/objects", [pod("f0")])
            assert gc.get_freeze_count() > frozen
            assert api.ok("GET", f"{PODS}/f0")["metadata"]["name"] == "f0"
    finally:
        gc.unfreeze()


def test_standalone_module(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stockade_lab.emulator",
            "--port",
            str(port),
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == f"http://127.0.0.1:{port}"
        assert Api(f"http://127.0.0.1:{port}").ok("GET", "/api")["versions"] == ["v1"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0


# --- the kubernetes Python client ---------------------------------------------------------------


def test_kubernetes_client(emu: EmulatorThread, tmp_path: Path) -> None:
    # A dev dependency, imported loosely typed (it ships partial stubs); a missing
    # package fails the test rather than skipping it.
    kubernetes = importlib.import_module("kubernetes")

    path = emu.write_kubeconfig(tmp_path / "kubeconfig")
    client = kubernetes.config.new_client_from_config(config_file=str(path))
    try:
        core = kubernetes.client.CoreV1Api(client)
        for name, app in (("a", "web"), ("b", "db")):
            core.create_namespaced_pod("default", pod(name, {"app": app}))
        listed = core.list_namespaced_pod("default", label_selector="app=web")
        assert [p.metadata.name for p in listed.items] == ["a"]
        assert listed.metadata.resource_version
        patched = core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"x": "y"}}})
        assert patched.metadata.labels == {"app": "web", "x": "y"}
        watcher = kubernetes.watch.Watch()
        seen = [
            (e["type"], e["object"].metadata.name)
            for e in watcher.stream(
                core.list_namespaced_pod,
                "default",
                field_selector="metadata.name=b",
                timeout_seconds=1,
            )
        ]
        assert seen == [("ADDED", "b")]
        networking = kubernetes.client.NetworkingV1Api(client)
        networking.create_namespaced_network_policy(
            "default", {"metadata": {"name": "p"}, "spec": {"podSelector": {}}}
        )
        assert networking.read_namespaced_network_policy("p", "default").spec.policy_types == [
            "Ingress"
        ]
    finally:
        client.close()


# --- real kopf --------------------------------------------------------------------------------

OPERATOR = """
import json, os
import kopf

OUT = os.environ["STOCKADE_TEST_EVENTS"]

def note(*fields):
    with open(OUT, "a") as f:
        f.write(json.dumps(fields) + "\\n")

@kopf.on.startup()
def configure(settings, **_):
    settings.watching.server_timeout = 5
    settings.persistence.finalizer = "stockade.dev/test-operator"

@kopf.on.event("namespaces")
def namespace_event(type, name, **_):
    note("event", "namespace", type, name)

@kopf.on.event("pods")
def pod_event(type, name, body, **_):
    note("event", "pod", type, name, body.get("metadata", {}).get("labels", {}))

@kopf.on.create("pods")
def pod_created(name, patch, **_):
    patch.metadata.labels["seen-by"] = "kopf"
    note("create", "pod", name)

@kopf.on.create("namespaces")
def namespace_created(name, **_):
    note("create", "namespace", name)
"""


KOPF_PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusterkopfpeerings.kopf.dev"},
    "spec": {
        "scope": "Cluster",
        "group": "kopf.dev",
        "names": {
            "kind": "ClusterKopfPeering",
            "plural": "clusterkopfpeerings",
            "singular": "clusterkopfpeering",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def test_real_kopf_operator(emu: EmulatorThread, api: Api, tmp_path: Path) -> None:
    """kopf (with cluster peering: its CRD is served like any other) sees every change."""
    api.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", KOPF_PEERING_CRD)
    api.ok("POST", "/apis/kopf.dev/v1/clusterkopfpeerings", {"metadata": {"name": "default"}})
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
    operator = tmp_path / "operator.py"
    operator.write_text(OPERATOR)
    events_file = tmp_path / "events.jsonl"
    events_file.touch()
    log = (tmp_path / "kopf.log").open("w")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "STOCKADE_TEST_EVENTS": str(events_file)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--all-namespaces",
            "--verbose",
            str(operator),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def seen() -> list[list[Any]]:
        return [json.loads(line) for line in events_file.read_text().splitlines() if line]

    def has(*prefix: Any) -> bool:
        return any(entry[: len(prefix)] == list(prefix) for entry in seen())

    try:
        wait_for(lambda: has("event", "namespace", None, "default"), 20, "kopf's initial list")
        peering = api.ok("GET", "/apis/kopf.dev/v1/clusterkopfpeerings/default")
        assert peering.get("status"), "kopf did not announce itself in the peering object"
        api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "kopf-ns"}})
        wait_for(lambda: has("create", "namespace", "kopf-ns"), 10, "namespace creation")
        api.ok("POST", "/api/v1/namespaces/kopf-ns/pods", pod("kp", {"app": "web"}))
        wait_for(lambda: has("create", "pod", "kp"), 10, "pod creation handler")
        path = "/api/v1/namespaces/kopf-ns/pods/kp"
        wait_for(
            lambda: api.ok("GET", path)["metadata"].get("labels", {}).get("seen-by") == "kopf",
            10,
            "kopf's patch",
        )
        api.ok(
            "PATCH",
            path,
            {"metadata": {"labels": {"app": "db"}}},
            content_type="application/merge-patch+json",
        )
        wait_for(
            lambda: any(
                e[:4] == ["event", "pod", "MODIFIED", "kp"] and e[4].get("app") == "db"
                for e in seen()
            ),
            10,
            "pod update",
        )
        api.ok("DELETE", path)
        wait_for(lambda: has("event", "pod", "DELETED", "kp"), 10, "pod deletion")
        api.ok("DELETE", "/api/v1/namespaces/kopf-ns")
        wait_for(lambda: has("event", "namespace", "DELETED", "kopf-ns"), 10, "ns deletion")
    except AssertionError:
        log.flush()
        print((tmp_path / "kopf.log").read_text()[-5000:])
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "kopf.log").read_text()
    assert "Traceback" not in output, output[-5000:]


# --- real kubectl -----------------------------------------------------------------------------

MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {team: a}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: demo, labels: {app: web}}
spec:
  nodeName: node-1
  containers:
  - name: web
    image: nginx
    ports: [{containerPort: 80, name: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: demo, labels: {app: db}}
spec:
  containers: [{name: db, image: postgres}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ingress, namespace: demo}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 80}]
"""

NODE_RULE_SET = """
apiVersion: stockade.dev/v1alpha1
kind: NodeRuleSet
metadata: {name: node-1}
spec: {node: node-1, pods: [], policies: []}
"""


class Kubectl:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        assert KUBECTL is not None
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "HOME": str(home),
            "KUBECACHEDIR": str(home / "cache"),
        }

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        assert KUBECTL is not None
        done = subprocess.run(
            [KUBECTL, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout + done.stderr


@pytest.fixture
def kubectl(emu: EmulatorThread, tmp_path: Path) -> Kubectl:
    return Kubectl(emu.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path)


@needs_kubectl
def test_kubectl_apply_get_label_delete(emu: EmulatorThread, kubectl: Kubectl) -> None:
    out = kubectl("apply", "-f", "-", stdin=MANIFESTS)
    assert "namespace/demo created" in out
    assert "networkpolicy.networking.k8s.io/web-ingress created" in out
    again = kubectl("apply", "-f", "-", stdin=MANIFESTS.replace("image: nginx", "image: nginx:2"))
    assert "pod/web configured" in again
    assert "namespace/demo unchanged" in again
    web = emu.emulator.get_object("", "v1", "pods", "web", "demo")
    assert web is not None
    assert web["spec"]["containers"][0]["image"] == "nginx:2"
    assert web["spec"]["containers"][0]["ports"] == [
        {"containerPort": 80, "name": "http", "protocol": "TCP"}
    ]
    wide = kubectl("get", "pods", "-n", "demo", "-o", "wide")
    header = wide.splitlines()[0].split()
    assert header[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "IP" in header
    assert "NODE" in header
    assert any(line.split()[0] == "web" and "node-1" in line for line in wide.splitlines())
    assert "app=web" in kubectl("get", "networkpolicies", "-n", "demo")
    assert "kube-system" in kubectl("get", "namespaces")
    kubectl("label", "pod", "web", "-n", "demo", "tier=front")
    assert "web" in kubectl("get", "pods", "-n", "demo", "-l", "tier=front")
    described = kubectl("describe", "pod", "web", "-n", "demo")
    assert "tier=front" in described
    assert "80/TCP" in described
    gone = kubectl("delete", "-f", "-", stdin=MANIFESTS)
    assert 'namespace "demo" deleted' in gone
    assert emu.emulator.objects("", "v1", "pods") == []
    assert "NotFound" in kubectl("get", "namespace", "demo", check=False)


@needs_kubectl
def test_kubectl_crds_and_printer_columns(emu: EmulatorThread, kubectl: Kubectl) -> None:
    out = kubectl("apply", "-f", str(CRDS))
    assert "customresourcedefinition.apiextensions.k8s.io/noderulesets.stockade.dev created" in out
    assert "noderuleset.stockade.dev/node-1 created" in kubectl(
        "apply", "-f", "-", stdin=NODE_RULE_SET
    )
    emu.emulator.put_object(
        {
            "apiVersion": "stockade.dev/v1alpha1",
            "kind": "NodeRuleSet",
            "metadata": {"name": "node-2"},
            "spec": {"node": "node-2"},
            "status": {"policies": 4, "pods": 2, "applied": True},
        }
    )
    table = kubectl("get", "noderulesets").splitlines()
    assert table[0].split() == [
        "NAME",
        "NODE",
        "POLICIES",
        "CLUSTER-POLICIES",
        "PODS",
        "APPLIED",
        "LAST-SYNC",
        "AGE",
    ]
    assert table[2].split()[:5] == ["node-2", "node-2", "4", "2", "true"]
    assert "node-1" in kubectl("get", "stockade")  # the CRD's category
    described = kubectl("describe", "noderuleset", "node-2")
    assert "Node:" in described
    assert "node-2" in described
    kubectl("delete", "noderuleset", "node-1")
    assert [
        o["metadata"]["name"]
        for o in emu.emulator.objects("stockade.dev", "v1alpha1", "noderulesets")
    ] == ["node-2"]


@needs_kubectl
def test_kubectl_get_watch(emu: EmulatorThread, kubectl: Kubectl, tmp_path: Path) -> None:
    assert KUBECTL is not None
    output = tmp_path / "watch.out"
    with output.open("w") as sink:
        proc = subprocess.Popen(
            [KUBECTL, "get", "pods", "-n", "default", "-w"],
            env=kubectl.env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: (
                    "No resources found" in output.read_text()
                    or (
                        bool(emu.emulator.requests)
                        and any("watch=true" in path for _, path in emu.emulator.requests)
                    )
                ),
                10,
                "watch",
            )
            emu.emulator.put_object(pod("watched"))
            wait_for(lambda: "watched" in output.read_text(), 10, "the watched pod")
            emu.emulator.put_object({**pod("watched"), "spec": {"nodeName": "n9"}})
            wait_for(lambda: output.read_text().count("watched") >= 2, 10, "the update")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    lines = output.read_text().splitlines()
    assert any(line.split()[:1] == ["watched"] for line in lines)


def test_thread_stops_cleanly() -> None:
    emulator = Emulator()
    with EmulatorThread(emulator) as running:
        api = Api(running.url)
        watch = api.watch(f"{PODS}?watch=true")
    assert watch.next(timeout=3) is None
    watch.close()
    assert not any(t.name == "stockade-emulator" for t in threading.enumerate())
