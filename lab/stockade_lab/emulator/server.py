"""The emulated API server over HTTP: aiohttp routing in front of the object store.

Requests become calls on :class:`~stockade_lab.emulator.store.Store` (objects, the
event log, what kube-apiserver does on a write); discovery and OpenAPI documents come
from :mod:`stockade_lab.emulator.discovery`. This module adds what only HTTP has:
routing, watches streamed from the event log (bookmarks, 410 Gone, timeouts),
pagination, server-side Tables, injected faults, the request log and the admin API
(``/_emulator/...``) of the tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from stockade_lab.emulator import tables
from stockade_lab.emulator.allocation import DEFAULT_NODE_PORT_RANGE, DEFAULT_SERVICE_CIDRS
from stockade_lab.emulator.discovery import (
    KUBE_VERSION,
    group_list,
    openapi_v3,
    resource_list,
    root_paths,
)
from stockade_lab.emulator.faults import Faults
from stockade_lab.emulator.networking import ServiceNetwork
from stockade_lab.emulator.query_selectors import parse_field_selector, parse_label_selector
from stockade_lab.emulator.resources import ResourceDef
from stockade_lab.emulator.status_errors import ApiError, not_found
from stockade_lab.emulator.store import (
    DEFAULT_NAMESPACES,
    Obj,
    Store,
    WatchEvent,
    translate_event,
)

logger = logging.getLogger("stockade_lab.emulator")

ADMIN_PREFIX = "/_emulator/"
__all__ = ["ADMIN_PREFIX", "KUBE_VERSION", "Emulator", "EmulatorThread", "WatchEvent"]


@dataclass(frozen=True)
class _Target:
    rd: ResourceDef
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool


class Emulator:
    """An emulated Kubernetes API server for tests, the sandbox and local runs.

    ``log_limit`` bounds the event log (older versions answer 410 Gone to watches);
    ``bookmark_interval`` is how often watches that allow bookmarks get one;
    ``request_log`` is how many ``(method, path?query)`` pairs ``requests`` keeps.
    A deleted namespace stays Terminating for ``namespace_cleanup_delay`` seconds before
    its contents and then itself are deleted, as the namespace controller does it.
    Services get cluster IPs from ``service_cidrs`` (one or two CIDRs of different IP
    families, the first the primary; a comma-separated string or a sequence) and node
    ports from ``node_port_range``, as kube-apiserver's ``--service-cluster-ip-range``
    and ``--service-node-port-range`` (see :mod:`stockade_lab.emulator.networking`).
    ``freeze_loaded``: after a bulk load (``/_emulator/objects``) everything the process
    holds is moved out of the cyclic collector's reach (``gc.freeze``); for an emulator
    that is a process of its own (``python -m stockade_lab.emulator`` does it), never
    for one inside a test's process.
    """

    def __init__(
        self,
        *,
        log_limit: int = 10_000,
        bookmark_interval: float = 5.0,
        require_namespaces: bool = True,
        namespace_cleanup_delay: float = 0.5,
        namespaces: Iterable[str] = DEFAULT_NAMESPACES,
        request_log: int = 2000,
        service_cidrs: str | Sequence[str] = DEFAULT_SERVICE_CIDRS,
        node_port_range: tuple[int, int] = DEFAULT_NODE_PORT_RANGE,
        freeze_loaded: bool = False,
    ) -> None:
        self.faults = Faults()
        self.freeze_loaded = freeze_loaded
        self.store = Store(
            log_limit=log_limit,
            require_namespaces=require_namespaces,
            namespace_cleanup_delay=namespace_cleanup_delay,
            namespaces=namespaces,
            service_cidrs=service_cidrs,
            node_port_range=node_port_range,
        )
        self.store.on_commit = self._wake
        self.bookmark_interval = bookmark_interval
        self.requests: collections.deque[tuple[str, str]] = collections.deque(maxlen=request_log)
        self.requests_total = 0  # every API request served (``requests`` keeps the last ones)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._changed: asyncio.Event | None = None
        self._drops: set[asyncio.Event] = set()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port); returns the base URL."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._changed = asyncio.Event()
        self.store.call_later = self._call_later
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        self._url = f"http://{host}:{bound}"
        return self._url

    async def stop(self) -> None:
        """End every watch and stop serving."""
        for drop in list(self._drops):
            drop.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """The base URL (after ``start``)."""
        if self._url is None:
            raise RuntimeError("the emulator is not started")
        return self._url

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for this server (plain HTTP, no auth)."""
        return write_kubeconfig(path, self.url, namespace)

    # --- the store, for tests and tools (stockade_lab.emulator.store) ---------------------------

    @property
    def network(self) -> ServiceNetwork:
        """Cluster IPs and node ports handed out (the store's)."""
        return self.store.network

    @property
    def resource_version(self) -> int:
        """The last resourceVersion handed out."""
        return self.store.resource_version

    @property
    def log_limit(self) -> int:
        """How many events the watch log keeps (older ones are compacted away)."""
        return self.store.log_limit

    @log_limit.setter
    def log_limit(self, value: int) -> None:
        self.store.log_limit = value

    def compact(self) -> None:
        """Forget the whole event log: watches from any earlier version get 410 Gone."""
        self.store.compact()

    def resources(self) -> list[ResourceDef]:
        """Every resource served now."""
        return self.store.resources()

    def register(self, rd: ResourceDef) -> None:
        """Serve one more resource."""
        self.store.register(rd)

    def objects(self, group: str, version: str, plural: str) -> list[Obj]:
        """Copies of all objects of a resource, sorted by namespace and name."""
        return self.store.objects(group, version, plural)

    def get_object(
        self, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> Obj | None:
        """A copy of one object, or None."""
        return self.store.get_object(group, version, plural, name, namespace)

    def put_object(self, obj: Obj) -> Obj:
        """Create or replace an object bypassing HTTP (and faults): :meth:`Store.put_object`."""
        return self.store.put_object(obj)

    def load(self, objects: Iterable[Obj]) -> int:
        """Many objects at once, under one lock: :meth:`Store.load`."""
        return self.store.load(objects)

    def delete_object(
        self, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> Obj:
        """Delete an object as a DELETE request would (finalizers are honoured)."""
        return self.store.delete_object(group, version, plural, name, namespace)

    def metadata(self, group: str, version: str, plural: str) -> Obj:
        """Every object's metadata with its commit time: :meth:`Store.metadata`."""
        return self.store.metadata(group, version, plural)

    def _call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the event loop after ``delay`` seconds (from any thread)."""
        loop = self._loop
        if loop is not None:
            self._in_loop(lambda: loop.call_later(delay, fn))

    def drop_watches(self) -> None:
        """End every open watch stream now (clients see the stream close and reconnect)."""
        if self._loop is None:
            return

        def drop_all() -> None:
            for drop in list(self._drops):
                drop.set()

        self._in_loop(drop_all)

    def _in_loop(self, fn: Callable[[], object]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def _wake(self) -> None:
        def wake() -> None:
            if self._changed is not None:
                self._changed.set()
                self._changed = asyncio.Event()

        self._in_loop(wake)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX):
            try:
                return await self._admin(request)
            except ApiError as exc:
                return web.json_response(exc.status(), status=exc.code)
            except ValueError as exc:
                err = ApiError(400, "BadRequest", f"bad admin request: {exc}")
                return web.json_response(err.status(), status=400)
        is_watch = request.query.get("watch") in ("true", "1") or "/watch/" in request.path
        self.requests.append((request.method, request.path_qs))
        self.requests_total += 1
        try:
            for fault in self.faults.take(request.method, request.path_qs, is_watch):
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.drop:
                    if request.transport is not None:
                        request.transport.abort()
                    raise ConnectionResetError("dropped by an injected fault")
                if fault.status is not None:
                    raise ApiError(
                        fault.status,
                        fault.reason or _REASONS.get(fault.status, "InternalError"),
                        fault.message or f"injected fault ({fault.status})",
                    )
            return await self._route(request)
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            logger.exception("emulator error on %s %s", request.method, request.path_qs)
            err = ApiError(500, "InternalError", f"emulator error: {exc!r}")
            return web.json_response(err.status(), status=500)

    async def _admin(self, request: web.Request) -> web.StreamResponse:
        """``/_emulator/...``: bulk load, request log, metadata with commit times.

        Not logged in ``requests`` and never faulted. Times are ``time.monotonic()`` of
        the emulator's process (on Linux one clock for every process of the machine).
        """
        what = request.path[len(ADMIN_PREFIX) :].strip("/")
        query = request.query
        if what == "objects" and request.method == "POST":
            _, payload = await self._read_body(request)
            items = payload.get("items") if isinstance(payload, dict) else payload
            if not isinstance(items, list):
                raise ApiError(400, "BadRequest", "expected a list of objects or {items: [...]}")
            chunk = max(int(query.get("chunk") or 0), 0) or len(items) or 1
            started = time.monotonic()
            first_rv = self.store.resource_version + 1
            for start in range(0, len(items), chunk):
                self.store.load(items[start : start + chunk])
                if start + chunk < len(items):
                    await asyncio.sleep(0)  # let the watches stream what is committed
            if self.freeze_loaded:
                # Loaded objects live as long as the emulator, and none is cyclic: the
                # full collections that every write's garbage sets off need not walk
                # them again (with 57,500 objects loaded, they were most of the time
                # spent taking in a large object: bench/controller_scale.py).
                gc.freeze()
            return web.json_response(
                {
                    "count": len(items),
                    "firstResourceVersion": str(first_rv),
                    "resourceVersion": str(self.store.resource_version),
                    "started": started,
                    "finished": time.monotonic(),
                }
            )
        if what == "requests" and request.method == "GET":
            since = int(query.get("since") or 0)
            with self.store.lock:
                total = self.requests_total
                kept = list(self.requests)
            first = total - len(kept)
            skip = max(since - first, 0)
            return web.json_response(
                {"total": total, "first": first + skip, "requests": kept[skip:]}
            )
        if what == "metadata" and request.method == "GET":
            return web.json_response(
                self.store.metadata(
                    query.get("group", ""), query.get("version", "v1"), query.get("plural", "")
                )
            )
        raise ApiError(404, "NotFound", f"no admin endpoint {request.method} {request.path}")

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/readyz", "/livez") or (
            parts and parts[0] in ("healthz", "readyz", "livez")
        ):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/version":
            return web.json_response(KUBE_VERSION)
        if path == "/":
            return web.json_response({"paths": root_paths(self.store.resources())})
        if parts[:2] == ["openapi", "v2"]:
            # An empty protobuf message is a valid, empty openapi_v2.Document: kubectl then
            # finds no schema and falls back to its compiled-in types.
            return web.Response(
                body=b"", content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
            )
        if parts[:2] == ["openapi", "v3"]:
            return web.json_response(
                openapi_v3("/".join(parts[2:]), self.store.resources(), self.store.crds())
            )
        if parts == ["api"]:
            return web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}
                    ],
                }
            )
        if parts == ["apis"]:
            return web.json_response(group_list(self.store.resources()))
        if parts[0] == "apis" and len(parts) == 2:
            for group in group_list(self.store.resources())["groups"]:
                if group["name"] == parts[1]:
                    return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **group})
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if (parts[0] == "api" and len(parts) == 2) or (parts[0] == "apis" and len(parts) == 3):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            return web.json_response(resource_list(self.store.resources(), group, version))
        if parts[0] in ("api", "apis"):
            target = self._parse_target(parts)
            return await self._serve_resource(request, target)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _parse_target(self, parts: list[str]) -> _Target:
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        watch_path = bool(rest) and rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = self.store.find(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace = rest[1]
                rest = rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rd = self.store.find(group, version, rest[0])
        if rd is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if rd.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub is not None and not (sub == "status" and rd.status_subresource):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Target(rd, namespace, name, sub, watch_path)

    async def _read_body(self, request: web.Request) -> tuple[str, Any]:
        content_type = request.content_type or "application/json"
        raw = await request.read()
        if "protobuf" in content_type:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the stockade emulator serves JSON only; protobuf bodies are not supported",
            )
        try:
            if content_type in ("application/yaml", "application/apply-patch+yaml"):
                return content_type, yaml.safe_load(raw.decode() or "null")
            return content_type, json.loads(raw.decode() or "null")
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, "BadRequest", f"cannot decode the body: {exc}") from exc

    async def _serve_resource(self, request: web.Request, target: _Target) -> web.StreamResponse:
        # Answers are shallow views, serialised at once: stored objects are never mutated.
        rd = target.rd
        method = request.method
        query = request.query
        dry_run = "dryRun" in query
        is_watch = target.watch_path or query.get("watch") in ("true", "1")
        if method == "GET" and is_watch:
            return await self._serve_watch(request, target)
        if method == "GET" and target.name is None:
            return self._serve_list(request, target)
        if method == "GET":
            with self.store.lock:
                obj = self.store.get(rd, target.namespace, target.name or "")
                if obj is None:
                    raise not_found(rd.plural, target.name or "", rd.group)
                obj = self.store.view(rd, obj)
            if _wants_table(request):
                return web.json_response(
                    tables.table(
                        rd,
                        [obj],
                        resource_version=obj["metadata"]["resourceVersion"],
                        include_object=query.get("includeObject", "Metadata"),
                    )
                )
            return _object_response(request, obj)
        if method == "POST" and target.name is None:
            _, body = await self._read_body(request)
            with self.store.lock:
                created = self.store.create(
                    rd, target.namespace, body, raw=False, dry_run=dry_run, owned=True
                )
                return _object_response(request, self.store.view(rd, created), 201)
        if method == "PUT" and target.name is not None:
            _, body = await self._read_body(request)
            with self.store.lock:
                updated = self.store.update(
                    rd,
                    target.namespace,
                    target.name,
                    body,
                    status_only=target.subresource == "status",
                    dry_run=dry_run,
                )
                return _object_response(request, self.store.view(rd, updated))
        if method == "PATCH" and target.name is not None:
            content_type, payload = await self._read_body(request)
            with self.store.lock:
                patched, created_now = self.store.patch(
                    rd,
                    target.namespace,
                    target.name,
                    content_type,
                    payload,
                    status_only=target.subresource == "status",
                    dry_run=dry_run,
                )
                return _object_response(
                    request, self.store.view(rd, patched), 201 if created_now else 200
                )
        if method == "DELETE":
            options: Obj = {}
            if request.can_read_body:
                _, body = await self._read_body(request)
                options = body if isinstance(body, dict) else {}
            with self.store.lock:
                if target.name is not None:
                    gone = self.store.delete(
                        rd, target.namespace, target.name, options, dry_run=dry_run
                    )
                    return web.json_response(self.store.view(rd, gone))
                predicate = _predicate(query)
                deleted = []
                for obj in self.store.select(rd, target.namespace, predicate):
                    meta = obj["metadata"]
                    deleted.append(
                        self.store.view(
                            rd,
                            self.store.delete(
                                rd, meta.get("namespace"), meta["name"], options, dry_run=dry_run
                            ),
                        )
                    )
                return web.json_response(
                    {
                        "kind": rd.list_kind,
                        "apiVersion": rd.api_version,
                        "metadata": {"resourceVersion": str(self.store.resource_version)},
                        "items": deleted,
                    }
                )
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow {method} here")

    def _serve_list(self, request: web.Request, target: _Target) -> web.Response:
        rd = target.rd
        query = request.query
        selected = query.get("labelSelector") or query.get("fieldSelector")
        predicate = _predicate(query) if selected else None
        after: tuple[str, str] | None = None
        token = query.get("continue")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
                after = (decoded["start"][0], decoded["start"][1])
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise ApiError(400, "BadRequest", "invalid continue token") from exc
        limit = int(query.get("limit") or 0)
        # A page costs its own objects: its start is found by bisection in the sorted
        # keys and only the page is viewed (a whole list per page made paging quadratic).
        with self.store.lock:
            chosen, remaining = self.store.page(rd, target.namespace, predicate, after, limit)
            rv = str(self.store.resource_version)
        page = [self.store.view(rd, o) for o in chosen]
        next_token = None
        if limit > 0 and remaining > 0:
            last = page[-1]["metadata"]
            next_token = base64.urlsafe_b64encode(
                json.dumps(
                    {"rv": rv, "start": [last.get("namespace") or "", last["name"]]}
                ).encode()
            ).decode()
        if _wants_table(request):
            return web.json_response(
                tables.table(
                    rd,
                    page,
                    resource_version=rv,
                    include_object=query.get("includeObject", "Metadata"),
                    continue_token=next_token,
                )
            )
        metadata: Obj = {"resourceVersion": rv}
        if next_token:
            metadata["continue"] = next_token
            metadata["remainingItemCount"] = remaining
        return web.json_response(
            {
                "kind": rd.list_kind,
                "apiVersion": rd.api_version,
                "metadata": metadata,
                "items": page,
            }
        )

    async def _serve_watch(  # noqa: PLR0915
        self, request: web.Request, target: _Target
    ) -> web.StreamResponse:
        rd = target.rd
        query = request.query
        predicate = _predicate(query, name=target.name)
        as_table = _wants_table(request)
        include_object = query.get("includeObject", "Metadata")
        bookmarks = query.get("allowWatchBookmarks") == "true"
        since = query.get("resourceVersion") or ""
        send_initial_param = query.get("sendInitialEvents")
        send_initial = (
            send_initial_param == "true" if send_initial_param is not None else since in ("", "0")
        )
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None

        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        first_table = [True]

        def render(type_: str, obj: Obj) -> bytes:
            body: Obj = obj
            if as_table and type_ not in ("ERROR", "BOOKMARK"):
                body = tables.table(
                    rd,
                    [obj],
                    resource_version=obj["metadata"]["resourceVersion"],
                    include_object=include_object,
                    with_columns=first_table[0],
                )
                first_table[0] = False
            return json.dumps({"type": type_, "object": body}).encode() + b"\n"

        def bookmark(rv: int, initial_end: bool = False) -> bytes:
            meta: Obj = {"resourceVersion": str(rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            obj = {"kind": rd.kind, "apiVersion": rd.api_version, "metadata": meta}
            return json.dumps({"type": "BOOKMARK", "object": obj}).encode() + b"\n"

        initial: list[bytes] = []
        with self.store.lock:
            if send_initial:
                for obj in self.store.select(rd, target.namespace, predicate):
                    initial.append(render("ADDED", self.store.view(rd, obj)))
                last = self.store.resource_version
            else:
                try:
                    last = int(since)
                except ValueError as exc:
                    raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from exc
                if last < self.store.compacted_rv:
                    initial.append(_gone(last, self.store.compacted_rv))
                    last = -1
        drop = asyncio.Event()
        self._drops.add(drop)
        try:
            for chunk in initial:
                await response.write(chunk)
            if last < 0:
                return response
            if send_initial and bookmarks:
                await response.write(bookmark(last, initial_end=True))
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                changed = self._changed
                assert changed is not None
                chunks: list[bytes] = []
                with self.store.lock:
                    if last < self.store.compacted_rv:
                        chunks.append(_gone(last, self.store.compacted_rv))
                        gone = True
                    else:
                        gone = False
                        for event in self.store.events_after(last):
                            translated = translate_event(rd, event, target.namespace, predicate)
                            if translated is not None:
                                chunks.append(render(*translated))
                        last = self.store.resource_version
                for chunk in chunks:
                    await response.write(chunk)
                if gone or drop.is_set():
                    return response
                now = loop.time()
                if deadline is not None and now >= deadline:
                    if bookmarks:
                        await response.write(bookmark(last))
                    return response
                if bookmarks and now >= next_bookmark:
                    await response.write(bookmark(last))
                    next_bookmark = now + self.bookmark_interval
                waits = [next_bookmark - now if bookmarks else 3600.0]
                if deadline is not None:
                    waits.append(deadline - now)
                await _wait_any(changed, drop, max(min(waits), 0.0))
        except ConnectionError:
            return response
        finally:
            self._drops.discard(drop)


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _gone(asked: int, oldest: int) -> bytes:
    status = ApiError(410, "Expired", f"too old resource version: {asked} ({oldest})").status()
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


async def _wait_any(first: asyncio.Event, second: asyncio.Event, timeout: float) -> None:
    tasks = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _object_response(request: web.Request, obj: Obj, status: int = 200) -> web.Response:
    """One object as asked for: whole, or only its metadata when the client accepts
    ``PartialObjectMetadata`` (as the API server answers any verb then)."""
    if "as=PartialObjectMetadata;" in request.headers.get("Accept", ""):
        return web.json_response(tables.partial_metadata(obj), status=status)
    return web.json_response(obj, status=status)


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept


def _predicate(query: Any, name: str | None = None) -> Callable[[Obj], bool]:
    labels = parse_label_selector(query.get("labelSelector"))
    fields = parse_field_selector(query.get("fieldSelector"))
    if name is None:
        return lambda obj: labels(obj) and fields(obj)
    return lambda obj: obj["metadata"].get("name") == name and labels(obj) and fields(obj)


def write_kubeconfig(path: str | Path, url: str, namespace: str = "default") -> Path:
    """A kubeconfig pointing at ``url`` (plain HTTP, no credentials)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stockade-emulator", "cluster": {"server": url}}],
        "users": [{"name": "stockade-emulator", "user": {}}],
        "contexts": [
            {
                "name": "stockade-emulator",
                "context": {
                    "cluster": "stockade-emulator",
                    "user": "stockade-emulator",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "stockade-emulator",
        "preferences": {},
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


class EmulatorThread:
    """Runs an Emulator on its own event loop in a background thread (a context manager).

    Without ``emulator``, a default one is made with ``service_cidrs`` (one or two
    CIDRs, comma-separated or a sequence; the emulator's default when None).
    """

    def __init__(
        self,
        emulator: Emulator | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        service_cidrs: str | Sequence[str] | None = None,
    ) -> None:
        if emulator is not None and service_cidrs is not None:
            raise ValueError("service_cidrs is for the emulator the thread makes itself")
        if emulator is None:
            emulator = (
                Emulator(service_cidrs=service_cidrs) if service_cidrs is not None else Emulator()
            )
        self.emulator = emulator
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The base URL of the running emulator."""
        if self._url is None:
            raise RuntimeError("the emulator thread is not running")
        return self._url

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for the running emulator."""
        return write_kubeconfig(path, self.url, namespace)

    def start(self) -> str:
        """Start the thread and the server; returns the URL."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._url = loop.run_until_complete(self.emulator.start(self._host, self._port))
            except BaseException as exc:
                failure.append(exc)
                loop.run_until_complete(self.emulator.stop())
                loop.close()
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.emulator.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="stockade-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.url

    def stop(self) -> None:
        """Stop the server and join the thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
