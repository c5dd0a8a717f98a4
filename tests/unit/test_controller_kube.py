"""stockade.kube against a small aiohttp server of the test's own (no cluster)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from stockade import kube as kube_module
from stockade.encoded import Encoded
from stockade.kube import (
    LEASES,
    NETWORK_POLICIES,
    NODE_RULE_SETS,
    PODS,
    ApiError,
    Conflict,
    Gone,
    KubeClient,
    KubeConfig,
    KubeError,
    NotFound,
    Unreachable,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    return web.json_response(body, status=code)


class FakeApi:
    """Records requests; answers what each test installs."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str], Any]] = []
        self.routes: dict[tuple[str, str], Handler] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(
            (request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return _status(404, "NotFound", f"{request.path} not found")
        return await handler(request)


@asynccontextmanager
async def serving(api: FakeApi, token: str | None = "t0ken") -> AsyncIterator[KubeClient]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        config = KubeConfig(server=str(server.make_url("")).rstrip("/"), token=token)
        async with KubeClient(config, timeout=2.0) as client:
            yield client
    finally:
        await server.close()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_paths() -> None:
    assert PODS.path() == "/api/v1/pods"
    assert PODS.path("ns1") == "/api/v1/namespaces/ns1/pods"
    assert PODS.path("ns1", "p") == "/api/v1/namespaces/ns1/pods/p"
    assert NODE_RULE_SETS.path(name="n1", subresource="status") == (
        "/apis/stockade.dev/v1alpha1/noderulesets/n1/status"
    )
    assert NETWORK_POLICIES.api_version == "networking.k8s.io/v1"
    assert LEASES.path("kube-system", "x") == (
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x"
    )


def test_list_pages_fills_kind_and_sends_token() -> None:
    api = FakeApi()

    async def pods(request: web.Request) -> web.Response:
        if "continue" not in request.query:
            return web.json_response(
                {"items": [{"metadata": {"name": "a"}}], "metadata": {"continue": "c1"}}
            )
        assert request.query["continue"] == "c1"
        return web.json_response(
            {"items": [{"metadata": {"name": "b"}}], "metadata": {"resourceVersion": "42"}}
        )

    api.routes[("GET", "/api/v1/pods")] = pods

    async def go() -> None:
        async with serving(api) as client:
            items, rv = await client.list(PODS, label_selector="app=x", field_selector="a=b")
        assert [i["metadata"]["name"] for i in items] == ["a", "b"]
        assert items[0]["kind"] == "Pod"
        assert items[0]["apiVersion"] == "v1"
        assert rv == "42"
        _, _, query, headers, _ = api.requests[0]
        assert query["labelSelector"] == "app=x"
        assert query["fieldSelector"] == "a=b"
        assert headers["Authorization"] == "Bearer t0ken"

    run(go())


def test_list_pages_asks_for_the_next_page_while_this_one_is_used() -> None:
    api = FakeApi()
    pages = {"": ("c1", ["a", "b"]), "c1": ("c2", ["c"]), "c2": ("", ["d"])}

    async def pods(request: web.Request) -> web.Response:
        token, names = pages[request.query.get("continue", "")]
        meta = {"resourceVersion": "7", **({"continue": token} if token else {})}
        return web.json_response(
            {"items": [{"metadata": {"name": n}} for n in names], "metadata": meta}
        )

    api.routes[("GET", "/api/v1/pods")] = pods

    async def go() -> None:
        seen: list[tuple[list[str], int]] = []
        async with serving(api) as client:
            async for items, rv in client.list_pages(PODS):
                asked = len(api.requests)
                # Back in the event loop for a while: the next page's request goes out.
                for _ in range(50):
                    await asyncio.sleep(0.001)
                seen.append(([i["metadata"]["name"] for i in items], len(api.requests) - asked))
                assert rv == "7"
                assert items[0]["kind"] == "Pod"
        assert [names for names, _ in seen] == [["a", "b"], ["c"], ["d"]]
        # Each next page was asked for while the one before was in use (none after the last).
        assert [more for _, more in seen] == [1, 1, 0]
        assert [q.get("continue") for _, _, q, _, _ in api.requests] == [None, "c1", "c2"]

    run(go())


def test_list_pages_stopped_half_way_cancels_the_next_page() -> None:
    api = FakeApi()
    release = asyncio.Event()

    async def pods(request: web.Request) -> web.Response:
        if "continue" in request.query:
            await release.wait()
            return _status(410, "Expired", "the continue token expired")
        return web.json_response(
            {"items": [{"metadata": {"name": "a"}}], "metadata": {"continue": "c1"}}
        )

    api.routes[("GET", "/api/v1/pods")] = pods

    async def go() -> None:
        async with serving(api) as client:
            pages = client.list_pages(PODS)
            items, _ = await anext(pages)
            assert [i["metadata"]["name"] for i in items] == ["a"]
            await pages.aclose()  # the prefetch is cancelled, nothing raised
            release.set()
            with pytest.raises(Gone):
                async for _ in client.list_pages(PODS):
                    pass

    run(go())


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        pytest.param(404, "NotFound", NotFound, id="404"),
        pytest.param(409, "AlreadyExists", Conflict, id="409"),
        pytest.param(410, "Expired", Gone, id="410"),
        pytest.param(422, "Invalid", ApiError, id="422"),
    ],
)
def test_errors_are_typed(code: int, reason: str, error: type[ApiError]) -> None:
    api = FakeApi()

    async def fail(_request: web.Request) -> web.Response:
        return _status(code, reason, "no luck")

    api.routes[("POST", "/apis/stockade.dev/v1alpha1/noderulesets")] = fail

    async def go() -> None:
        async with serving(api) as client:
            with pytest.raises(error) as info:
                await client.create(NODE_RULE_SETS, {"metadata": {"name": "n"}})
        assert info.value.status == code
        assert info.value.reason == reason
        assert info.value.message == "no luck"
        assert type(info.value) is error

    run(go())


def test_writes_send_the_right_verbs_and_content_types() -> None:
    api = FakeApi()

    async def echo(request: web.Request) -> web.Response:
        raw = await request.read()
        return web.json_response(json.loads(raw) if raw else {})

    base = "/apis/stockade.dev/v1alpha1/noderulesets"
    for method, path in [
        ("POST", base),
        ("PUT", f"{base}/n1"),
        ("PATCH", f"{base}/n1"),
        ("PATCH", f"{base}/n1/status"),
        ("DELETE", f"{base}/n1"),
        ("GET", f"{base}/n1"),
    ]:
        api.routes[(method, path)] = echo

    async def go() -> None:
        async with serving(api) as client:
            created = await client.create(NODE_RULE_SETS, {"metadata": {"name": "n1"}, "spec": {}})
            assert created["kind"] == "NodeRuleSet"
            assert created["apiVersion"] == "stockade.dev/v1alpha1"
            await client.replace(NODE_RULE_SETS, "n1", {"metadata": {"name": "n1"}})
            await client.patch_merge(NODE_RULE_SETS, "n1", {"spec": {"a": 1}})
            await client.patch_status(NODE_RULE_SETS, "n1", {"applied": True})
            await client.delete(NODE_RULE_SETS, "n1")
            await client.get(NODE_RULE_SETS, "n1")

    run(go())
    methods = [(m, p.rsplit("/", 1)[-1]) for m, p, *_ in api.requests]
    assert methods == [
        ("POST", "noderulesets"),
        ("PUT", "n1"),
        ("PATCH", "n1"),
        ("PATCH", "status"),
        ("DELETE", "n1"),
        ("GET", "n1"),
    ]
    assert api.requests[2][3]["Content-Type"] == "application/merge-patch+json"
    assert api.requests[3][4] == {"status": {"applied": True}}


def test_encoded_bodies_are_sent_as_they_are() -> None:
    api = FakeApi()
    raw: list[bytes] = []

    async def echo(request: web.Request) -> web.Response:
        raw.append(await request.read())
        return web.json_response(json.loads(raw[-1]))

    base = "/apis/stockade.dev/v1alpha1/noderulesets"
    api.routes[("POST", base)] = echo
    api.routes[("PATCH", f"{base}/n1")] = echo
    content = {"metadata": {"name": "n1"}, "spec": {"b": 1, "a": [1, 2]}}
    text = '{"metadata":{"name":"n1"},"spec":{"a":[1,2],"b":1}}'

    async def go() -> None:
        async with serving(api) as client:
            created = await client.create(NODE_RULE_SETS, Encoded(content, text))
            assert created == {
                "apiVersion": "stockade.dev/v1alpha1",
                "kind": "NodeRuleSet",
                **content,
            }
            await client.patch_merge(NODE_RULE_SETS, "n1", Encoded({"spec": {}}, '{"spec":{}}'))
            await client.create(NODE_RULE_SETS, Encoded({}, "{}"))

    run(go())
    # The text itself went out (its key order and separators), after apiVersion and kind.
    assert raw[0].decode().endswith('"metadata":{"name":"n1"},"spec":{"a":[1,2],"b":1}}')
    assert raw[1] == b'{"spec":{}}'
    assert json.loads(raw[2]) == {"apiVersion": "stockade.dev/v1alpha1", "kind": "NodeRuleSet"}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(
            {"apiVersion": "v", "kind": "K", "metadata": {"uid": "u", "generation": 2}, "spec": {}},
            {"metadata": {"uid": "u", "generation": 2}},
            id="metadata-first",
        ),
        pytest.param(
            {"metadata": {"uid": "u"}, "spec": {"metadata": "x"}},
            {"metadata": {"uid": "u"}},
            id="metadata-at-once",
        ),
        pytest.param(
            {"spec": {"metadata": {"uid": "no"}}, "metadata": {"uid": "u"}},
            {"spec": {"metadata": {"uid": "no"}}, "metadata": {"uid": "u"}},
            id="spec-first-whole",
        ),
        pytest.param(
            {"kind": 'a"metadata": {}', "metadata": {"uid": "u"}},
            {"kind": 'a"metadata": {}', "metadata": {"uid": "u"}},
            id="escaped-quote-whole",
        ),
    ],
)
def test_metadata_only_answers(answer: dict[str, Any], expected: dict[str, Any]) -> None:
    api = FakeApi()

    async def reply(_request: web.Request) -> web.Response:
        return web.json_response(answer)

    async def fail(_request: web.Request) -> web.Response:
        return _status(409, "Conflict", "stale")

    base = "/apis/stockade.dev/v1alpha1/noderulesets"
    api.routes[("POST", base)] = reply
    api.routes[("PATCH", f"{base}/n1")] = fail

    async def go() -> None:
        async with serving(api) as client:
            got = await client.create(
                NODE_RULE_SETS, {"metadata": {"name": "n1"}}, metadata_only=True
            )
            assert got == expected
            with pytest.raises(Conflict):  # errors are decoded whole, as ever
                await client.patch_merge(NODE_RULE_SETS, "n1", {"spec": {}}, metadata_only=True)
        # Asked for as PartialObjectMetadata, the whole object accepted too.
        accept = api.requests[0][3]["Accept"]
        assert accept.startswith("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
        assert accept.endswith(", application/json")

    run(go())


def test_create_event() -> None:
    api = FakeApi()

    async def created(request: web.Request) -> web.Response:
        return web.json_response(await request.json(), status=201)

    api.routes[("POST", "/api/v1/namespaces/team/events")] = created
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "team", "uid": "u-1"},
    }

    async def go() -> None:
        async with serving(api) as client:
            await client.create_event(policy, "PolicyApplied", "applied on 1 node", "Normal")
            with pytest.raises(ValueError, match="Normal or Warning"):
                await client.create_event(policy, "X", "y", "Error")

    run(go())
    body = api.requests[0][4]
    assert body["metadata"]["generateName"] == "deny."
    assert body["involvedObject"] == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "name": "deny",
        "namespace": "team",
        "uid": "u-1",
        "resourceVersion": "",
    }
    assert (body["reason"], body["type"], body["kind"]) == ("PolicyApplied", "Normal", "Event")


def _watch_handler(lines: list[dict[str, Any]]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.query["watch"] == "true"
        resp = web.StreamResponse()
        await resp.prepare(request)
        for line in lines:
            data = json.dumps(line).encode() + b"\n"
            # Split lines across chunks, as a proxy may.
            await resp.write(data[:5])
            await resp.write(data[5:])
        await resp.write_eof()
        return resp

    return handler


def test_watch_yields_events_then_ends() -> None:
    api = FakeApi()
    api.routes[("GET", "/api/v1/pods")] = _watch_handler(
        [
            {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "6"}}},
            {"type": "DELETED", "object": {"metadata": {"name": "a"}}},
        ]
    )

    async def go() -> None:
        async with serving(api) as client:
            got = [(t, o) async for t, o in client.watch(PODS, "4", timeout_seconds=5)]
        assert [t for t, _ in got] == ["ADDED", "BOOKMARK", "DELETED"]
        assert got[0][1]["kind"] == "Pod"
        assert "kind" not in got[1][1]
        query = api.requests[0][2]
        assert query["resourceVersion"] == "4"
        assert query["timeoutSeconds"] == "5"

    run(go())


def _rule_set_event(kind: str, with_status: bool = True) -> dict[str, Any]:
    """A NodeRuleSet watch event laid out as the API server writes a custom resource."""
    obj: dict[str, Any] = {
        "apiVersion": "stockade.dev/v1alpha1",
        "kind": "NodeRuleSet",
        "metadata": {"name": "n1", "uid": "u1", "generation": 3, "resourceVersion": "7"},
        # Names that look like a status inside the spec: nested, and in strings.
        "spec": {
            "node": "n1",
            "pods": [{"name": 'a,"status": {}}', "status": {"x": 1}}],
            "note": '{"status": 1}}',
        },
    }
    if with_status:
        obj["status"] = {
            "appliedGeneration": 2,
            "conditions": [{"type": "Applied", "status": "True"}],
        }
    return {"type": kind, "object": obj}


def test_watch_without_spec_skips_the_spec_and_keeps_metadata_and_status() -> None:
    events = [
        _rule_set_event("ADDED", with_status=False),
        _rule_set_event("MODIFIED"),
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
        _rule_set_event("DELETED"),
    ]
    api = FakeApi()
    api.routes[("GET", "/apis/stockade.dev/v1alpha1/noderulesets")] = _watch_handler(events)

    async def go() -> None:
        async with serving(api) as client:
            got = [e async for e in client.watch(NODE_RULE_SETS, "1", without_spec=True)]
        assert [t for t, _ in got] == ["ADDED", "MODIFIED", "BOOKMARK", "DELETED"]
        meta = events[1]["object"]["metadata"]
        head = {"kind": "NodeRuleSet", "apiVersion": "stockade.dev/v1alpha1", "metadata": meta}
        assert got[0][1] == head
        assert got[1][1] == {**head, "status": events[1]["object"]["status"]}
        assert got[3][1] == got[1][1]

    run(go())


@pytest.mark.parametrize(
    "layout",
    [
        ["spec", "metadata", "status"],  # the metadata not first
        ["metadata", "status", "spec"],  # the status not last
        ["metadata", "spec", "status", "extra"],
    ],
)
def test_watch_without_spec_decodes_whole_what_is_laid_out_otherwise(layout: list[str]) -> None:
    event = _rule_set_event("MODIFIED")
    full = {**event["object"], "extra": {"status": 5}}
    obj = {"apiVersion": "stockade.dev/v1alpha1", "kind": "NodeRuleSet"}
    obj.update({key: full[key] for key in layout})
    line = json.dumps({"type": "MODIFIED", "object": obj})
    assert kube_module._event_without_spec(line) is None
    got = kube_module._watch_event(line.encode(), NODE_RULE_SETS, without_spec=True)
    assert got is not None
    want = {k: v for k, v in obj.items() if k != "spec"}
    assert got == ("MODIFIED", want)


def test_watch_without_spec_reads_the_layout_of_the_api_server() -> None:
    no_status = _rule_set_event("ADDED", with_status=False)
    del no_status["object"]["spec"]["pods"][0]["status"]
    for event in (_rule_set_event("MODIFIED"), no_status):
        for separators in ((",", ":"), (", ", ": ")):
            line = json.dumps(event, separators=separators)
            got = kube_module._event_without_spec(line)
            assert got is not None
            want = {k: v for k, v in event["object"].items() if k not in ("spec", "apiVersion")}
            want.pop("kind")
            assert got == (event["type"], want)
    # No status, but a member of the spec named so: not told apart without the
    # spec, so decoded whole.
    line = json.dumps(_rule_set_event("ADDED", with_status=False))
    assert kube_module._event_without_spec(line) is None


def test_watch_raises_gone_on_error_event_and_on_410() -> None:
    api = FakeApi()
    api.routes[("GET", "/api/v1/pods")] = _watch_handler(
        [
            {"type": "ADDED", "object": {"metadata": {"name": "a"}}},
            {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}},
        ]
    )

    async def gone(_request: web.Request) -> web.Response:
        return _status(410, "Expired", "too old resource version")

    api.routes[("GET", "/api/v1/namespaces/x/pods")] = gone

    async def go() -> None:
        async with serving(api) as client:
            seen: list[str] = []

            async def consume() -> None:
                async for event in client.watch(PODS, "1"):
                    seen.append(event[0])

            with pytest.raises(Gone):
                await consume()
            assert seen == ["ADDED"]
            with pytest.raises(Gone):
                async for _ in client.watch(PODS, "1", namespace="x"):
                    pass

    run(go())


def test_timeout_and_unreachable() -> None:
    api = FakeApi()

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    api.routes[("GET", "/api/v1/pods")] = slow

    async def go() -> None:
        async with serving(api) as client:
            client.timeout = 0.2
            with pytest.raises(Unreachable):
                await client.list(PODS)
        async with KubeClient(KubeConfig(server="http://127.0.0.1:1"), timeout=1) as client:
            with pytest.raises(Unreachable):
                await client.get(PODS, "p", "ns")

    run(go())


def test_kubeconfig_parsing(tmp_path: Path) -> None:
    cert = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    raw = {
        "current-context": "b",
        "contexts": [
            {"name": "a", "context": {"cluster": "c1", "user": "u1"}},
            {"name": "b", "context": {"cluster": "c2", "user": "u2", "namespace": "team"}},
        ],
        "clusters": [
            {"name": "c1", "cluster": {"server": "http://127.0.0.1:1234"}},
            {
                "name": "c2",
                "cluster": {"server": "https://api:6443/", "certificate-authority": "ca.pem"},
            },
        ],
        "users": [
            {"name": "u1", "user": {}},
            {"name": "u2", "user": {"token": "abc", "client-certificate-data": cert}},
        ],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(raw))
    cfg = KubeConfig.from_file(path)
    try:
        assert cfg.server == "https://api:6443"
        assert cfg.token == "abc"
        assert cfg.namespace == "team"
        assert cfg.ca_file == str(tmp_path / "ca.pem")
        assert cfg.cert_file is not None
        assert Path(cfg.cert_file).read_bytes() == b"-----BEGIN CERTIFICATE-----\n"
    finally:
        cfg.cleanup()
    assert cfg.cert_file is not None
    assert not Path(cfg.cert_file).exists()
    plain = KubeConfig.from_file(path, context="a")
    assert plain.server == "http://127.0.0.1:1234"
    assert plain.ssl_context() is None
    with pytest.raises(KubeError, match="no context"):
        KubeConfig.from_file(path, context="zzz")
