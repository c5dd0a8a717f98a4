"""The emulated API server: an in-memory object store with a resourceVersion-ordered event log,
served over HTTP with aiohttp the way kube-apiserver serves JSON clients.

Everything that changes state runs synchronously under one lock, so a test thread can call
``put_object`` while the server's event loop runs in another; watchers are woken through the
loop. Stored objects are never mutated after they are committed: every write stores a new
copy, so the event log can hold the very objects it reports.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import datetime
import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from stockade_lab.emulator import patching, tables
from stockade_lab.emulator.allocation import (
    DEFAULT_NODE_PORT_RANGE,
    DEFAULT_SERVICE_CIDRS,
    Transaction,
)
from stockade_lab.emulator.faults import Faults
from stockade_lab.emulator.networking import ServiceNetwork, admit_endpointslice
from stockade_lab.emulator.query_selectors import parse_field_selector, parse_label_selector
from stockade_lab.emulator.resources import (
    BUILTIN_RESOURCES,
    ResourceDef,
    resources_from_crd,
    version_priority,
)
from stockade_lab.emulator.status_errors import (
    ApiError,
    already_exists,
    conflict,
    invalid,
    not_found,
)

Obj = dict[str, Any]
logger = logging.getLogger("stockade_lab.emulator")

KUBE_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-stockade-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
ADMIN_PREFIX = "/_emulator/"
# Resources whose spec the server defaults (``Emulator._default`` writes into it).
_DEFAULTED = frozenset({("", "pods"), ("", "services"), ("networking.k8s.io", "networkpolicies")})
_NS_KEY = ("", "namespaces")
_SVC_KEY = ("", "services")
_SLICE_KEY = ("discovery.k8s.io", "endpointslices")


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    """One entry of the event log: the object after the change (and before, for MODIFIED)."""

    rv: int
    type: str
    key: tuple[str, str]
    obj: Obj
    old: Obj | None


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
    ) -> None:
        self.faults = Faults()
        self.network = ServiceNetwork(service_cidrs, node_port_range)
        self.bookmark_interval = bookmark_interval
        self.require_namespaces = require_namespaces
        self.namespace_cleanup_delay = namespace_cleanup_delay
        self.requests: collections.deque[tuple[str, str]] = collections.deque(maxlen=request_log)
        self.requests_total = 0  # every API request served (``requests`` keeps the last ones)
        # When each resource (storage key) and each object last changed (monotonic seconds).
        self._changed_at: dict[tuple[str, str], float] = {}
        self._committed: dict[tuple[tuple[str, str], str, str], float] = {}
        self._lock = threading.RLock()
        self._defs: dict[tuple[str, str, str], ResourceDef] = {}
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self._rv = 0
        self._log: collections.deque[WatchEvent] = collections.deque()
        self._log_limit = log_limit
        self._compacted_rv = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._changed: asyncio.Event | None = None
        self._drops: set[asyncio.Event] = set()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        for rd in BUILTIN_RESOURCES:
            self._defs[(rd.group, rd.version, rd.plural)] = rd
        for name in namespaces:
            self.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port); returns the base URL."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._changed = asyncio.Event()
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

    # --- direct access for tests ---------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The last resourceVersion handed out."""
        return self._rv

    @property
    def log_limit(self) -> int:
        """How many events the watch log keeps (older ones are compacted away)."""
        return self._log_limit

    @log_limit.setter
    def log_limit(self, value: int) -> None:
        with self._lock:
            self._log_limit = value
            self._trim_log()

    def compact(self) -> None:
        """Forget the whole event log: watches from any earlier version get 410 Gone."""
        with self._lock:
            self._log.clear()
            self._compacted_rv = self._rv

    def resources(self) -> list[ResourceDef]:
        """Every resource served now."""
        with self._lock:
            return list(self._defs.values())

    def register(self, rd: ResourceDef) -> None:
        """Serve one more resource."""
        with self._lock:
            self._defs[(rd.group, rd.version, rd.plural)] = rd

    def objects(self, group: str, version: str, plural: str) -> list[Obj]:
        """Copies of all objects of a resource, sorted by namespace and name."""
        with self._lock:
            rd = self._def(group, version, plural)
            return [self._present(rd, obj) for obj in self._select(rd, None)]

    def get_object(
        self, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> Obj | None:
        """A copy of one object, or None."""
        with self._lock:
            rd = self._def(group, version, plural)
            obj = self._get(rd, namespace, name)
            return self._present(rd, obj) if obj is not None else None

    def put_object(self, obj: Obj) -> Obj:
        """Create or replace an object bypassing HTTP (and faults); status is kept as given.

        The resource comes from apiVersion and kind. Server-set metadata is filled in and
        watchers see ADDED or MODIFIED as for any write.
        """
        with self._lock:
            rd, stored = self._put(copy.deepcopy(obj))
            return self._present(rd, stored)

    def load(self, objects: Iterable[Obj]) -> int:
        """``put_object`` for many objects at once, under one lock; returns how many.

        The objects are stored as given (not copied): the caller must not use them
        afterwards. Nothing is returned per object, which makes a bulk load of
        thousands of objects (a benchmark's burst) cheap.
        """
        count = 0
        with self._lock:
            for obj in objects:
                self._put(obj)
                count += 1
        return count

    def _put(self, body: Obj) -> tuple[ResourceDef, Obj]:
        """``put_object`` on a body the store may keep (callers hold the lock)."""
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "an object must be a JSON object")
        rd = self._def_for_kind(body.get("apiVersion", ""), body.get("kind", ""))
        meta = body.setdefault("metadata", {})
        namespace = (meta.get("namespace") or "default") if rd.namespaced else None
        name = meta.get("name", "")
        meta.pop("resourceVersion", None)
        if name and self._get(rd, namespace, name) is not None:
            return rd, self._update(rd, namespace, name, body, raw=True, owned=True)
        return rd, self._create(rd, namespace, body, raw=True, owned=True)

    def delete_object(
        self, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> Obj:
        """Delete an object as a DELETE request would (finalizers are honoured)."""
        with self._lock:
            rd = self._def(group, version, plural)
            return self._present(rd, self._delete(rd, namespace, name, {}))

    def drop_watches(self) -> None:
        """End every open watch stream now (clients see the stream close and reconnect)."""
        if self._loop is None:
            return

        def drop_all() -> None:
            for drop in list(self._drops):
                drop.set()

        self._in_loop(drop_all)

    # --- the store (callers hold self._lock) -----------------------------------------------------

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

    def _def(self, group: str, version: str, plural: str) -> ResourceDef:
        rd = self._defs.get((group, version, plural))
        if rd is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return rd

    def _def_for_kind(self, api_version: str, kind: str) -> ResourceDef:
        group, _, version = api_version.rpartition("/")
        for rd in self._defs.values():
            if rd.group == group and rd.version == version and rd.kind == kind:
                return rd
        raise ApiError(404, "NotFound", f"no resource for {api_version} {kind}")

    def _store(self, rd: ResourceDef) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault(rd.storage_key, {})

    def _get(self, rd: ResourceDef, namespace: str | None, name: str) -> Obj | None:
        return self._store(rd).get((namespace or "", name))

    def _present(self, rd: ResourceDef, obj: Obj) -> Obj:
        result = copy.deepcopy(obj)
        result["apiVersion"] = rd.api_version
        result["kind"] = rd.kind
        return result

    @staticmethod
    def _view(rd: ResourceDef, obj: Obj) -> Obj:
        """A shallow view for serialisation (stored objects are never mutated)."""
        return {**obj, "apiVersion": rd.api_version, "kind": rd.kind}

    def _select(
        self,
        rd: ResourceDef,
        namespace: str | None,
        predicate: Callable[[Obj], bool] | None = None,
    ) -> list[Obj]:
        store = self._store(rd)
        return [
            store[key]
            for key in sorted(store)
            if (namespace is None or key[0] == namespace)
            and (predicate is None or predicate(store[key]))
        ]

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _trim_log(self) -> None:
        while len(self._log) > max(self._log_limit, 0):
            dropped = self._log.popleft()
            self._compacted_rv = dropped.rv

    def _record(self, type_: str, rd: ResourceDef, obj: Obj, old: Obj | None) -> None:
        meta = obj["metadata"]
        rv = int(meta["resourceVersion"])
        now = time.monotonic()
        self._changed_at[rd.storage_key] = now
        key = (rd.storage_key, meta.get("namespace") or "", meta.get("name") or "")
        if type_ == "DELETED":
            self._committed.pop(key, None)
        else:
            self._committed[key] = now
        self._log.append(WatchEvent(rv, type_, rd.storage_key, obj, old))
        self._trim_log()
        self._wake()

    def _check_namespace(self, rd: ResourceDef, namespace: str | None) -> None:
        if not rd.namespaced or not self.require_namespaces:
            return
        ns = self._objects.get(_NS_KEY, {}).get(("", namespace or ""))
        if ns is None:
            raise not_found("namespaces", namespace or "")
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} "
                "because it is being terminated",
            )

    def _create(
        self,
        rd: ResourceDef,
        namespace: str | None,
        body: Obj,
        *,
        raw: bool,
        dry_run: bool = False,
        owned: bool = False,
    ) -> Obj:
        """Store a new object; ``owned``: ``body`` is the caller's to give (not copied)."""
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        obj = body if owned else copy.deepcopy(body)
        if obj.get("kind") not in (None, "", rd.kind):
            raise ApiError(
                400, "BadRequest", f"the kind {obj.get('kind')!r} does not match {rd.kind!r}"
            )
        meta = obj.setdefault("metadata", {})
        if rd.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match "
                    "the namespace sent on the request",
                )
            meta["namespace"] = namespace
            self._check_namespace(rd, namespace)
        else:
            meta.pop("namespace", None)
        store = self._store(rd)
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(
                    rd.kind, "", "metadata.name: Required value: name or generateName is required"
                )
            for _ in range(100):
                name = prefix + "".join(random.choices(_NAME_CHARS, k=5))
                if (namespace or "", name) not in store:
                    break
            meta["name"] = name
        if (namespace or "", name) in store:
            raise already_exists(rd.plural, name, rd.group)
        obj["apiVersion"] = rd.api_version
        obj["kind"] = rd.kind
        meta["uid"] = meta.get("uid") if raw and meta.get("uid") else str(uuid.uuid4())
        meta["creationTimestamp"] = (
            meta.get("creationTimestamp") if raw and meta.get("creationTimestamp") else _now()
        )
        meta["generation"] = 1
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        self._prepare_create(rd, obj, raw=raw)
        self._default(rd, obj)
        txn = self._admit(rd, namespace, name, obj, None)
        if dry_run:
            txn.rollback()
            meta["resourceVersion"] = str(self._rv)
            return obj
        txn.commit()
        meta["resourceVersion"] = self._next_rv()
        store[(namespace or "", name)] = obj
        self._record("ADDED", rd, obj, None)
        if rd.storage_key == _CRD_KEY:
            self._sync_crd(obj)
        return obj

    def _prepare_create(self, rd: ResourceDef, obj: Obj, *, raw: bool) -> None:
        key = rd.storage_key
        if key == _NS_KEY:
            status: Obj = (obj.get("status") or {}) if raw else {}
            obj["status"] = {**status, "phase": "Active"}
        elif key == ("", "pods") and not raw:
            obj["status"] = {"phase": "Pending"}
        elif key == _SVC_KEY and not raw:
            obj["status"] = {"loadBalancer": {}}
        elif key == _CRD_KEY:
            names = (obj.get("spec") or {}).get("names") or {}
            versions = (obj.get("spec") or {}).get("versions") or []
            stored = [v["name"] for v in versions if v.get("storage")] or [
                v.get("name") for v in versions[:1]
            ]
            now = _now()
            obj["status"] = {
                "acceptedNames": names,
                "storedVersions": stored,
                "conditions": [
                    {
                        "type": kind,
                        "status": "True",
                        "lastTransitionTime": now,
                        "reason": reason,
                        "message": message,
                    }
                    for kind, reason, message in (
                        ("NamesAccepted", "NoConflicts", "no conflicts found"),
                        (
                            "Established",
                            "InitialNamesAccepted",
                            "the initial names have been accepted",
                        ),
                    )
                ],
            }
        elif rd.crd is not None and rd.status_subresource and not raw:
            obj.pop("status", None)

    @staticmethod
    def _default(rd: ResourceDef, obj: Obj) -> None:
        """The API server's defaulting that stockade relies on (protocols, policyTypes)."""
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        key = rd.storage_key
        if key == ("", "pods"):
            for field in ("initContainers", "containers"):
                for container in spec.get(field) or []:
                    for port in container.get("ports") or []:
                        port.setdefault("protocol", "TCP")
        elif key == ("networking.k8s.io", "networkpolicies"):
            for direction in ("ingress", "egress"):
                for rule in spec.get(direction) or []:
                    for port in rule.get("ports") or []:
                        port.setdefault("protocol", "TCP")
            if not spec.get("policyTypes"):
                spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])

    def _admit(
        self, rd: ResourceDef, namespace: str | None, name: str, obj: Obj, old: Obj | None
    ) -> Transaction:
        """What kube-apiserver does to a Service or an EndpointSlice on a write.

        Services are defaulted and get their cluster IPs and node ports (the returned
        transaction is committed once the write is stored, rolled back on a dry run);
        EndpointSlices are validated. Raises a 422 ``ApiError`` for an invalid object.
        """
        key = rd.storage_key
        if key == _SVC_KEY:
            return self.network.admit(namespace or "", name, obj, old)
        if key == _SLICE_KEY:
            admit_endpointslice(obj, old)
        return Transaction()

    @staticmethod
    def _own(rd: ResourceDef, body: Obj) -> Obj:
        """A version of ``body`` that ``_update`` may change in place.

        A new top level and metadata, and a deep copy of the spec where defaulting
        writes into it; everything else is shared (never mutated once stored).
        """
        new = dict(body)
        meta = new.get("metadata")
        if isinstance(meta, dict):
            new["metadata"] = dict(meta)
        if rd.storage_key in _DEFAULTED and isinstance(new.get("spec"), dict):
            new["spec"] = copy.deepcopy(new["spec"])
        return new

    @staticmethod
    def _comparable(obj: Obj) -> Obj:
        result = dict(obj)
        meta = dict(result.get("metadata") or {})
        for key in ("resourceVersion", "generation", "managedFields"):
            meta.pop(key, None)
        result["metadata"] = meta
        return result

    @staticmethod
    def _spec_part(rd: ResourceDef, obj: Obj) -> Obj:
        skip = {"metadata", "status"} if rd.status_subresource else {"metadata"}
        return {k: v for k, v in obj.items() if k not in skip}

    def _update(
        self,
        rd: ResourceDef,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        raw: bool = False,
        status_only: bool = False,
        dry_run: bool = False,
        owned: bool = False,
    ) -> Obj:
        """Replace an object (PUT semantics); the heart of PUT and every PATCH.

        ``owned``: ``body`` is the caller's to give (it is not copied).
        """
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        current = self._get(rd, namespace, name)
        if current is None:
            raise not_found(rd.plural, name, rd.group)
        meta_in = body.get("metadata") or {}
        wanted_rv = meta_in.get("resourceVersion")
        if wanted_rv not in (None, "") and str(wanted_rv) != current["metadata"]["resourceVersion"]:
            raise conflict(rd.plural, name, rd.group)
        if meta_in.get("name") not in (None, "", name):
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        # Stored objects are never mutated, so the new version shares what it does not
        # change with the current one (and with the request's body, which is ours).
        if status_only:
            new = self._own(rd, current)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            else:
                new.pop("status", None)
        else:
            new = body if owned else self._own(rd, body)
            if rd.status_subresource and not raw:
                if "status" in current:
                    new["status"] = current["status"]
                else:
                    new.pop("status", None)
        new["apiVersion"] = rd.api_version
        new["kind"] = rd.kind
        self._default(rd, new)
        txn = Transaction() if status_only else self._admit(rd, namespace, name, new, current)
        meta = new.setdefault("metadata", {})
        old_meta = current["metadata"]
        for key in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if self._comparable(new) == self._comparable(current):
            txn.commit()  # the same values as stored: nothing taken, nothing given back
            return current
        if self._spec_part(rd, new) != self._spec_part(rd, current):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if dry_run:
            txn.rollback()
            return new
        txn.commit()
        meta["resourceVersion"] = self._next_rv()
        self._store(rd)[(namespace or "", name)] = new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rd, new)
        self._record("MODIFIED", rd, new, current)
        if rd.storage_key == _CRD_KEY:
            self._sync_crd(new)
        return new

    def _patch(
        self,
        rd: ResourceDef,
        namespace: str | None,
        name: str,
        content_type: str,
        payload: Any,
        *,
        status_only: bool,
        dry_run: bool,
    ) -> tuple[Obj, bool]:
        current = self._get(rd, namespace, name)
        if content_type == "application/apply-patch+yaml":
            if current is None:
                body = copy.deepcopy(payload)
                body.setdefault("metadata", {})["name"] = name
                return self._create(rd, namespace, body, raw=False, dry_run=dry_run), True
            patched = patching.merge_patch(current, payload)
        elif current is None:
            raise not_found(rd.plural, name, rd.group)
        elif content_type == "application/json-patch+json":
            patched = patching.json_patch(current, payload)
        elif content_type == "application/merge-patch+json":
            patched = patching.merge_patch(current, payload, owned=True)
        elif content_type == "application/strategic-merge-patch+json":
            if rd.crd is not None:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml",
                )
            patched = patching.strategic_merge_patch(current, payload)
        else:
            raise ApiError(
                415, "UnsupportedMediaType", f"unsupported patch content type {content_type!r}"
            )
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", "the patched object is not an object")
        patched_rv = (patched.get("metadata") or {}).get("resourceVersion")
        if patched_rv is not None and str(patched_rv) != current["metadata"]["resourceVersion"]:
            raise conflict(rd.plural, name, rd.group)
        result = self._update(
            rd, namespace, name, patched, status_only=status_only, dry_run=dry_run
        )
        return result, False

    def _remove(self, rd: ResourceDef, obj: Obj) -> Obj:
        meta = obj["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        self._store(rd).pop(key, None)
        if rd.storage_key == _SVC_KEY:
            self.network.release(obj)
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._record("DELETED", rd, gone, obj)
        if rd.storage_key == _CRD_KEY:
            self._drop_crd(obj)
        if rd.namespaced:
            self._maybe_finish_namespace(key[0])
        return gone

    def _delete(
        self,
        rd: ResourceDef,
        namespace: str | None,
        name: str,
        options: Obj,
        *,
        dry_run: bool = False,
    ) -> Obj:
        current = self._get(rd, namespace, name)
        if current is None:
            raise not_found(rd.plural, name, rd.group)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != current["metadata"].get("uid"):
            raise conflict(rd.plural, name, rd.group)
        if pre.get("resourceVersion") and pre["resourceVersion"] != current["metadata"].get(
            "resourceVersion"
        ):
            raise conflict(rd.plural, name, rd.group)
        if dry_run:
            return current
        if rd.storage_key == _NS_KEY:
            return self._delete_namespace(rd, current)
        if current["metadata"].get("finalizers"):
            if current["metadata"].get("deletionTimestamp"):
                return current
            marked = copy.deepcopy(current)
            marked["metadata"]["deletionTimestamp"] = _now()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            marked["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
            marked["metadata"]["resourceVersion"] = self._next_rv()
            self._store(rd)[(namespace or "", name)] = marked
            self._record("MODIFIED", rd, marked, current)
            return marked
        return self._remove(rd, current)

    def _delete_namespace(self, rd: ResourceDef, current: Obj) -> Obj:
        name = current["metadata"]["name"]
        result = current
        if not current["metadata"].get("deletionTimestamp"):
            marked = copy.deepcopy(current)
            marked["metadata"]["deletionTimestamp"] = _now()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            marked["status"] = {**(marked.get("status") or {}), "phase": "Terminating"}
            marked["metadata"]["resourceVersion"] = self._next_rv()
            self._store(rd)[("", name)] = marked
            self._record("MODIFIED", rd, marked, current)
            result = marked
        if self._loop is not None and self.namespace_cleanup_delay > 0:
            self._in_loop(
                lambda: self._loop.call_later(  # type: ignore[union-attr]
                    self.namespace_cleanup_delay, self._empty_namespace, name
                )
            )
            return result
        self._empty_namespace(name)
        return self._get(rd, None, name) or result

    def _empty_namespace(self, name: str) -> None:
        """The namespace controller's part: delete the contents, then the namespace."""
        with self._lock:
            for other in list(self._defs.values()):
                if not other.namespaced or self._defs_primary(other) is not other:
                    continue
                for obj in self._select(other, name):
                    self._delete(other, name, obj["metadata"]["name"], {})
            self._maybe_finish_namespace(name)

    def _defs_primary(self, rd: ResourceDef) -> ResourceDef:
        """One ResourceDef per storage key (the first registered), to visit storage once."""
        for other in self._defs.values():
            if other.storage_key == rd.storage_key:
                return other
        return rd

    def _maybe_finish_namespace(self, namespace: str) -> Obj | None:
        ns_def = self._defs[("", "v1", "namespaces")]
        ns = self._get(ns_def, None, namespace)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return None
        if ns["metadata"].get("finalizers"):
            return None
        for (_, _), objects in self._objects.items():
            if any(key[0] == namespace for key in objects):
                return None
        return self._remove(ns_def, ns)

    def _sync_crd(self, crd: Obj) -> None:
        name = crd["metadata"]["name"]
        if crd["metadata"].get("deletionTimestamp"):
            return
        for key, rd in list(self._defs.items()):
            if rd.crd == name:
                del self._defs[key]
        for rd in resources_from_crd(crd):
            self._defs[(rd.group, rd.version, rd.plural)] = rd

    def _drop_crd(self, crd: Obj) -> None:
        name = crd["metadata"]["name"]
        defs = [rd for rd in self._defs.values() if rd.crd == name]
        if defs:
            rd = defs[0]
            for obj in self._select(rd, None):
                self._remove(rd, obj)
        for key, rd in list(self._defs.items()):
            if rd.crd == name:
                del self._defs[key]

    # --- HTTP ---------------------------------------------------------------------------------

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

    # --- the admin API (tests and benchmarks; not Kubernetes) -----------------------------------

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
            first_rv = self._rv + 1
            for start in range(0, len(items), chunk):
                self.load(items[start : start + chunk])
                if start + chunk < len(items):
                    await asyncio.sleep(0)  # let the watches stream what is committed
            return web.json_response(
                {
                    "count": len(items),
                    "firstResourceVersion": str(first_rv),
                    "resourceVersion": str(self._rv),
                    "started": started,
                    "finished": time.monotonic(),
                }
            )
        if what == "requests" and request.method == "GET":
            since = int(query.get("since") or 0)
            with self._lock:
                total = self.requests_total
                kept = list(self.requests)
            first = total - len(kept)
            skip = max(since - first, 0)
            return web.json_response(
                {"total": total, "first": first + skip, "requests": kept[skip:]}
            )
        if what == "metadata" and request.method == "GET":
            return web.json_response(
                self.metadata(
                    query.get("group", ""), query.get("version", "v1"), query.get("plural", "")
                )
            )
        raise ApiError(404, "NotFound", f"no admin endpoint {request.method} {request.path}")

    def metadata(self, group: str, version: str, plural: str) -> Obj:
        """Every object's metadata with the time it was last committed, cheaply.

        ``lastChange``: when the resource last changed (a create, update or delete),
        ``now``: the time of the answer (both ``time.monotonic()``).
        """
        with self._lock:
            rd = self._def(group, version, plural)
            key = rd.storage_key
            items = []
            for obj in self._select(rd, None):
                meta = obj["metadata"]
                namespace = meta.get("namespace") or ""
                items.append(
                    {
                        "namespace": namespace,
                        "name": meta.get("name"),
                        "uid": meta.get("uid"),
                        "resourceVersion": meta.get("resourceVersion"),
                        "generation": meta.get("generation"),
                        "labels": meta.get("labels") or {},
                        "annotations": meta.get("annotations") or {},
                        "committed": self._committed.get((key, namespace, meta.get("name") or "")),
                    }
                )
            return {
                "resourceVersion": str(self._rv),
                "lastChange": self._changed_at.get(key),
                "now": time.monotonic(),
                "items": items,
            }

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
            return web.json_response({"paths": self._root_paths()})
        if parts[:2] == ["openapi", "v2"]:
            # An empty protobuf message is a valid, empty openapi_v2.Document: kubectl then
            # finds no schema and falls back to its compiled-in types.
            return web.Response(
                body=b"", content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
            )
        if parts[:2] == ["openapi", "v3"]:
            return self._openapi_v3("/".join(parts[2:]))
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
            return web.json_response(self._group_list())
        if parts[0] == "apis" and len(parts) == 2:
            for group in self._group_list()["groups"]:
                if group["name"] == parts[1]:
                    return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **group})
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if (parts[0] == "api" and len(parts) == 2) or (parts[0] == "apis" and len(parts) == 3):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            return web.json_response(self._resource_list(group, version))
        if parts[0] in ("api", "apis"):
            target = self._parse_target(parts)
            return await self._serve_resource(request, target)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    # --- discovery ----------------------------------------------------------------------------

    def _root_paths(self) -> list[str]:
        paths = {"/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"}
        paths |= {"/openapi/v2", "/openapi/v3"}
        with self._lock:
            for rd in self._defs.values():
                if rd.group:
                    paths |= {f"/apis/{rd.group}", f"/apis/{rd.group}/{rd.version}"}
        return sorted(paths)

    def _group_list(self) -> Obj:
        with self._lock:
            versions: dict[str, set[str]] = {}
            for rd in self._defs.values():
                if rd.group:
                    versions.setdefault(rd.group, set()).add(rd.version)
        groups = []
        for group in sorted(versions):
            ordered = sorted(versions[group], key=version_priority)
            entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in ordered]
            groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> Obj:
        with self._lock:
            defs = [rd for rd in self._defs.values() if (rd.group, rd.version) == (group, version)]
        if not defs:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [entry for rd in defs for entry in rd.discovery()],
        }

    def _openapi_v3(self, sub: str) -> web.Response:
        with self._lock:
            by_gv: dict[str, list[ResourceDef]] = {}
            for rd in self._defs.values():
                by_gv.setdefault(rd.group_version, []).append(rd)
            crds = {
                obj["metadata"]["name"]: obj for obj in self._objects.get(_CRD_KEY, {}).values()
            }
        if not sub:
            paths = {}
            for gv, defs in sorted(by_gv.items()):
                digest = hashlib.sha256(
                    json.dumps([repr(rd) for rd in defs], sort_keys=True).encode()
                ).hexdigest()[:32]
                paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest.upper()}"}
            return web.json_response({"paths": paths})
        if sub not in by_gv:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(_openapi_doc(sub, by_gv[sub], crds))

    # --- resources ----------------------------------------------------------------------------

    def _parse_target(self, parts: list[str]) -> _Target:
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        watch_path = bool(rest) and rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace: str | None = None
        with self._lock:
            if len(rest) >= 3 and rest[0] == "namespaces":
                candidate = self._defs.get((group, version, rest[2]))
                if candidate is not None and candidate.namespaced:
                    namespace = rest[1]
                    rest = rest[2:]
            if not rest or len(rest) > 3:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            rd = self._defs.get((group, version, rest[0]))
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
            with self._lock:
                obj = self._get(rd, target.namespace, target.name or "")
                if obj is None:
                    raise not_found(rd.plural, target.name or "", rd.group)
                obj = self._view(rd, obj)
            if _wants_table(request):
                return web.json_response(
                    tables.table(
                        rd,
                        [obj],
                        resource_version=obj["metadata"]["resourceVersion"],
                        include_object=query.get("includeObject", "Metadata"),
                    )
                )
            return web.json_response(obj)
        if method == "POST" and target.name is None:
            _, body = await self._read_body(request)
            with self._lock:
                created = self._create(
                    rd, target.namespace, body, raw=False, dry_run=dry_run, owned=True
                )
                return web.json_response(self._view(rd, created), status=201)
        if method == "PUT" and target.name is not None:
            _, body = await self._read_body(request)
            with self._lock:
                updated = self._update(
                    rd,
                    target.namespace,
                    target.name,
                    body,
                    status_only=target.subresource == "status",
                    dry_run=dry_run,
                )
                return web.json_response(self._view(rd, updated))
        if method == "PATCH" and target.name is not None:
            content_type, payload = await self._read_body(request)
            with self._lock:
                patched, created_now = self._patch(
                    rd,
                    target.namespace,
                    target.name,
                    content_type,
                    payload,
                    status_only=target.subresource == "status",
                    dry_run=dry_run,
                )
                return web.json_response(
                    self._view(rd, patched), status=201 if created_now else 200
                )
        if method == "DELETE":
            options: Obj = {}
            if request.can_read_body:
                _, body = await self._read_body(request)
                options = body if isinstance(body, dict) else {}
            with self._lock:
                if target.name is not None:
                    gone = self._delete(rd, target.namespace, target.name, options, dry_run=dry_run)
                    return web.json_response(self._view(rd, gone))
                predicate = _predicate(query)
                deleted = []
                for obj in self._select(rd, target.namespace, predicate):
                    meta = obj["metadata"]
                    deleted.append(
                        self._view(
                            rd,
                            self._delete(
                                rd, meta.get("namespace"), meta["name"], options, dry_run=dry_run
                            ),
                        )
                    )
                return web.json_response(
                    {
                        "kind": rd.list_kind,
                        "apiVersion": rd.api_version,
                        "metadata": {"resourceVersion": str(self._rv)},
                        "items": deleted,
                    }
                )
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow {method} here")

    def _serve_list(self, request: web.Request, target: _Target) -> web.Response:
        rd = target.rd
        query = request.query
        predicate = _predicate(query)
        with self._lock:
            items = [self._view(rd, o) for o in self._select(rd, target.namespace, predicate)]
            rv = str(self._rv)
        start = 0
        token = query.get("continue")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
                after = (decoded["start"][0], decoded["start"][1])
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise ApiError(400, "BadRequest", "invalid continue token") from exc
            start = next(
                (
                    i
                    for i, o in enumerate(items)
                    if (o["metadata"].get("namespace") or "", o["metadata"]["name"]) > after
                ),
                len(items),
            )
        limit = int(query.get("limit") or 0)
        page = items[start : start + limit] if limit > 0 else items[start:]
        next_token = None
        remaining = len(items) - start - len(page)
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
        with self._lock:
            if send_initial:
                for obj in self._select(rd, target.namespace, predicate):
                    initial.append(render("ADDED", self._view(rd, obj)))
                last = self._rv
            else:
                try:
                    last = int(since)
                except ValueError as exc:
                    raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from exc
                if last < self._compacted_rv:
                    initial.append(_gone(last, self._compacted_rv))
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
                with self._lock:
                    if last < self._compacted_rv:
                        chunks.append(_gone(last, self._compacted_rv))
                        gone = True
                    else:
                        gone = False
                        for event in self._events_after(last):
                            translated = self._translate(rd, event, target.namespace, predicate)
                            if translated is not None:
                                chunks.append(render(*translated))
                        last = self._rv
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

    def _events_after(self, rv: int) -> list[WatchEvent]:
        found: list[WatchEvent] = []
        for event in reversed(self._log):
            if event.rv <= rv:
                break
            found.append(event)
        found.reverse()
        return found

    def _translate(
        self,
        rd: ResourceDef,
        event: WatchEvent,
        namespace: str | None,
        predicate: Callable[[Obj], bool],
    ) -> tuple[str, Obj] | None:
        if event.key != rd.storage_key:
            return None

        def matches(obj: Obj | None) -> bool:
            if obj is None:
                return False
            if namespace is not None and obj["metadata"].get("namespace") != namespace:
                return False
            return predicate(obj)

        new_ok = matches(event.obj)
        if event.type == "MODIFIED":
            old_ok = matches(event.old)
            if new_ok and old_ok:
                return "MODIFIED", self._view(rd, event.obj)
            if new_ok:
                return "ADDED", self._view(rd, event.obj)
            if old_ok:
                return "DELETED", self._view(rd, event.obj)
            return None
        return (event.type, self._view(rd, event.obj)) if new_ok else None


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


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept


def _predicate(query: Any, name: str | None = None) -> Callable[[Obj], bool]:
    labels = parse_label_selector(query.get("labelSelector"))
    fields = parse_field_selector(query.get("fieldSelector"))
    if name is None:
        return lambda obj: labels(obj) and fields(obj)
    return lambda obj: obj["metadata"].get("name") == name and labels(obj) and fields(obj)


def _openapi_doc(gv: str, defs: list[ResourceDef], crds: dict[str, Obj]) -> Obj:
    """A minimal OpenAPI v3 document of one group version.

    kubectl (1.27+) reads it to learn whether the server validates fields itself: it looks
    for the PATCH operation of the kind (``x-kubernetes-group-version-kind``) and its
    ``fieldValidation`` query parameter. Finding it, kubectl skips client-side validation.
    The PATCH request bodies do not list strategic merge patch, so kubectl computes its
    patches from its compiled-in types rather than from these (schema-less) documents.
    """
    paths: Obj = {}
    schemas: Obj = {}
    params = [
        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for name in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")
    ]
    for rd in defs:
        gvk = {"group": rd.group, "version": rd.version, "kind": rd.kind}
        ref = f"{gv.replace('/', '.')}.{rd.kind}"
        schema: Obj = {"type": "object", "x-kubernetes-group-version-kind": [gvk]}
        if rd.crd is not None and rd.crd in crds:
            for version in (crds[rd.crd].get("spec") or {}).get("versions") or []:
                if version.get("name") == rd.version:
                    found = (version.get("schema") or {}).get("openAPIV3Schema")
                    if isinstance(found, dict):
                        schema = {**found, "x-kubernetes-group-version-kind": [gvk]}
        schemas[ref] = schema
        base = (
            f"/{gv}/namespaces/{{namespace}}/{rd.plural}" if rd.namespaced else f"/{gv}/{rd.plural}"
        )
        response = {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}
                },
            }
        }
        common = {"x-kubernetes-group-version-kind": gvk, "responses": response}
        paths[f"{base}/{{name}}"] = {
            "get": {"operationId": f"read{rd.kind}", "x-kubernetes-action": "get", **common},
            "put": {"operationId": f"replace{rd.kind}", "x-kubernetes-action": "put", **common},
            "patch": {
                "operationId": f"patch{rd.kind}",
                "x-kubernetes-action": "patch",
                "parameters": params,
                "requestBody": {
                    "content": {
                        media: {"schema": {"type": "object"}}
                        for media in (
                            "application/json-patch+json",
                            "application/merge-patch+json",
                            "application/apply-patch+yaml",
                        )
                    }
                },
                **common,
            },
            "delete": {
                "operationId": f"delete{rd.kind}",
                "x-kubernetes-action": "delete",
                **common,
            },
        }
        paths[base] = {
            "get": {"operationId": f"list{rd.kind}", "x-kubernetes-action": "list", **common},
            "post": {
                "operationId": f"create{rd.kind}",
                "x-kubernetes-action": "post",
                "parameters": params,
                **common,
            },
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (stockade emulator)", "version": KUBE_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


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
