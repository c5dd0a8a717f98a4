"""The emulator's object store and event log: plain Python, no HTTP.

Objects by resource (storage key), namespace and name; a resourceVersion counter; the
event log watches replay (bounded: older versions are compacted and answer 410
Gone); what kube-apiserver does on a write that stockade relies on (server-set
metadata, defaulting, generation, Services' cluster IPs and node ports, finalizers
and the namespace controller's cleanup, CRDs registering their resources). The HTTP
side (:mod:`stockade_lab.emulator.server`) translates requests into these calls.

Everything that changes state runs synchronously under :attr:`Store.lock`, so a test
thread can call ``put_object`` while the server's event loop runs in another. Stored
objects are never mutated after they are committed: every write stores a new copy,
so the event log can hold the very objects it reports.
"""

from __future__ import annotations

import bisect
import collections
import copy
import datetime
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stockade_lab.emulator import patching
from stockade_lab.emulator.allocation import (
    DEFAULT_NODE_PORT_RANGE,
    DEFAULT_SERVICE_CIDRS,
    Transaction,
)
from stockade_lab.emulator.networking import ServiceNetwork, admit_endpointslice
from stockade_lab.emulator.resources import BUILTIN_RESOURCES, ResourceDef, resources_from_crd
from stockade_lab.emulator.status_errors import (
    ApiError,
    already_exists,
    conflict,
    invalid,
    not_found,
)

Obj = dict[str, Any]

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
# Resources whose spec the server defaults (``Store._default`` writes into it).
_DEFAULTED = frozenset({("", "pods"), ("", "services"), ("networking.k8s.io", "networkpolicies")})
_NS_KEY = ("", "namespaces")
_SVC_KEY = ("", "services")
_SLICE_KEY = ("discovery.k8s.io", "endpointslices")


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Objects(dict[tuple[str, str], Obj]):
    """One resource's objects by ``(namespace, name)``, with their keys kept sorted
    (for paged lists) until a key comes or goes."""

    def __init__(self) -> None:
        super().__init__()
        self._sorted: list[tuple[str, str]] | None = None

    def __setitem__(self, key: tuple[str, str], value: Obj) -> None:
        if key not in self:
            self._sorted = None
        super().__setitem__(key, value)

    def __delitem__(self, key: tuple[str, str]) -> None:
        self._sorted = None
        super().__delitem__(key)

    def pop(self, key: tuple[str, str], *default: Any) -> Any:
        self._sorted = None
        return super().pop(key, *default)

    def sorted_keys(self) -> list[tuple[str, str]]:
        """Every key, sorted (cached until the keys change)."""
        if self._sorted is None:
            self._sorted = sorted(self)
        return self._sorted


@dataclass(frozen=True)
class WatchEvent:
    """One entry of the event log: the object after the change (and before, for MODIFIED)."""

    rv: int
    type: str
    key: tuple[str, str]
    obj: Obj
    old: Obj | None


class Store:
    """Objects, resource definitions and the event log of the emulated API server.

    ``log_limit`` bounds the event log; a deleted namespace stays Terminating for
    ``namespace_cleanup_delay`` seconds before its contents and then itself are
    deleted (when :attr:`call_later` is set; at once otherwise); Services get cluster
    IPs from ``service_cidrs`` and node ports from ``node_port_range``
    (:mod:`stockade_lab.emulator.networking`).
    """

    def __init__(
        self,
        *,
        log_limit: int = 10_000,
        require_namespaces: bool = True,
        namespace_cleanup_delay: float = 0.5,
        namespaces: Iterable[str] = DEFAULT_NAMESPACES,
        service_cidrs: str | Sequence[str] = DEFAULT_SERVICE_CIDRS,
        node_port_range: tuple[int, int] = DEFAULT_NODE_PORT_RANGE,
    ) -> None:
        self.network = ServiceNetwork(service_cidrs, node_port_range)
        self.require_namespaces = require_namespaces
        self.namespace_cleanup_delay = namespace_cleanup_delay
        # When each resource (storage key) and each object last changed (monotonic seconds).
        self._changed_at: dict[tuple[str, str], float] = {}
        self._committed: dict[tuple[tuple[str, str], str, str], float] = {}
        self.lock = threading.RLock()
        self._defs: dict[tuple[str, str, str], ResourceDef] = {}
        self._objects: dict[tuple[str, str], _Objects] = {}
        self._rv = 0
        self._log: collections.deque[WatchEvent] = collections.deque()
        self._log_limit = log_limit
        self._compacted_rv = 0
        # Called after every commit (the server wakes its watches there), and how to
        # run a callback later (the server's event loop; None: nothing runs later).
        self.on_commit: Callable[[], None] = lambda: None
        self.call_later: Callable[[float, Callable[[], None]], None] | None = None
        for rd in BUILTIN_RESOURCES:
            self._defs[(rd.group, rd.version, rd.plural)] = rd
        for name in namespaces:
            self.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    @property
    def compacted_rv(self) -> int:
        """The newest resourceVersion no longer in the log (a watch from before: 410)."""
        return self._compacted_rv

    def find(self, group: str, version: str, plural: str) -> ResourceDef | None:
        """The resource served at group/version/plural, if any."""
        with self.lock:
            return self._defs.get((group, version, plural))

    def crds(self) -> dict[str, Obj]:
        """The stored CustomResourceDefinitions by name."""
        with self.lock:
            return {obj["metadata"]["name"]: obj for obj in self._objects.get(CRD_KEY, {}).values()}

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
        with self.lock:
            self._log_limit = value
            self._trim_log()

    def compact(self) -> None:
        """Forget the whole event log: watches from any earlier version get 410 Gone."""
        with self.lock:
            self._log.clear()
            self._compacted_rv = self._rv

    def resources(self) -> list[ResourceDef]:
        """Every resource served now."""
        with self.lock:
            return list(self._defs.values())

    def register(self, rd: ResourceDef) -> None:
        """Serve one more resource."""
        with self.lock:
            self._defs[(rd.group, rd.version, rd.plural)] = rd

    def objects(self, group: str, version: str, plural: str) -> list[Obj]:
        """Copies of all objects of a resource, sorted by namespace and name."""
        with self.lock:
            rd = self.resource(group, version, plural)
            return [self._present(rd, obj) for obj in self.select(rd, None)]

    def get_object(
        self, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> Obj | None:
        """A copy of one object, or None."""
        with self.lock:
            rd = self.resource(group, version, plural)
            obj = self.get(rd, namespace, name)
            return self._present(rd, obj) if obj is not None else None

    def put_object(self, obj: Obj) -> Obj:
        """Create or replace an object bypassing HTTP (and faults); status is kept as given.

        The resource comes from apiVersion and kind. Server-set metadata is filled in and
        watchers see ADDED or MODIFIED as for any write.
        """
        with self.lock:
            rd, stored = self._put(copy.deepcopy(obj))
            return self._present(rd, stored)

    def load(self, objects: Iterable[Obj]) -> int:
        """``put_object`` for many objects at once, under one lock; returns how many.

        The objects are stored as given (not copied): the caller must not use them
        afterwards. Nothing is returned per object, which makes a bulk load of
        thousands of objects (a benchmark's burst) cheap.
        """
        count = 0
        with self.lock:
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
        if name and self.get(rd, namespace, name) is not None:
            return rd, self.update(rd, namespace, name, body, raw=True, owned=True)
        return rd, self.create(rd, namespace, body, raw=True, owned=True)

    def delete_object(
        self, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> Obj:
        """Delete an object as a DELETE request would (finalizers are honoured)."""
        with self.lock:
            rd = self.resource(group, version, plural)
            return self._present(rd, self.delete(rd, namespace, name, {}))

    # The calls below are the HTTP side's: callers hold ``self.lock``.

    def resource(self, group: str, version: str, plural: str) -> ResourceDef:
        """The resource served at group/version/plural; 404 when there is none."""
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

    def _store(self, rd: ResourceDef) -> _Objects:
        found = self._objects.get(rd.storage_key)
        if found is None:
            found = self._objects[rd.storage_key] = _Objects()
        return found

    def get(self, rd: ResourceDef, namespace: str | None, name: str) -> Obj | None:
        """The stored object (not a copy: never mutate it), or None."""
        return self._store(rd).get((namespace or "", name))

    def _present(self, rd: ResourceDef, obj: Obj) -> Obj:
        result = copy.deepcopy(obj)
        result["apiVersion"] = rd.api_version
        result["kind"] = rd.kind
        return result

    @staticmethod
    def view(rd: ResourceDef, obj: Obj) -> Obj:
        """A shallow view for serialisation (stored objects are never mutated)."""
        return {**obj, "apiVersion": rd.api_version, "kind": rd.kind}

    def select(
        self,
        rd: ResourceDef,
        namespace: str | None,
        predicate: Callable[[Obj], bool] | None = None,
    ) -> list[Obj]:
        """Stored objects of ``rd`` (of ``namespace``, matching ``predicate``), by key."""
        store = self._store(rd)
        return [
            store[key]
            for key in sorted(store)
            if (namespace is None or key[0] == namespace)
            and (predicate is None or predicate(store[key]))
        ]

    def page(
        self,
        rd: ResourceDef,
        namespace: str | None,
        predicate: Callable[[Obj], bool] | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> tuple[list[Obj], int]:
        """One page of :meth:`select`: up to ``limit`` objects (0: all) whose key comes
        after ``after``, and how many more match after them.

        A page costs its own objects (a bisection finds its start in the sorted keys),
        as an API server pages from its store: not the whole list again. Without a
        predicate the remaining count is arithmetic; with one, the rest is filtered.
        """
        store = self._store(rd)
        keys = store.sorted_keys()
        if namespace is not None:
            lo = bisect.bisect_left(keys, (namespace, ""))
            hi = bisect.bisect_left(keys, (namespace + "\0", ""))
        else:
            lo, hi = 0, len(keys)
        if after is not None:
            lo = max(lo, bisect.bisect_right(keys, after, lo, hi))
        chosen: list[Obj] = []
        at = lo
        while at < hi and (limit <= 0 or len(chosen) < limit):
            obj = store[keys[at]]
            at += 1
            if predicate is None or predicate(obj):
                chosen.append(obj)
        if predicate is None:
            return chosen, hi - at
        return chosen, sum(1 for i in range(at, hi) if predicate(store[keys[i]]))

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
        self.on_commit()

    def _check_namespace(self, rd: ResourceDef, namespace: str | None) -> None:
        if not rd.namespaced or not self.require_namespaces:
            return
        namespaces = self._objects.get(_NS_KEY)
        ns = namespaces.get(("", namespace or "")) if namespaces is not None else None
        if ns is None:
            raise not_found("namespaces", namespace or "")
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} "
                "because it is being terminated",
            )

    def create(
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
        if rd.storage_key == CRD_KEY:
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
        elif key == CRD_KEY:
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

    def update(
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
        current = self.get(rd, namespace, name)
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
        if rd.storage_key == CRD_KEY:
            self._sync_crd(new)
        return new

    def patch(
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
        """Apply a patch by its Content-Type (apply patches create); (object, created)."""
        current = self.get(rd, namespace, name)
        if content_type == "application/apply-patch+yaml":
            if current is None:
                body = copy.deepcopy(payload)
                body.setdefault("metadata", {})["name"] = name
                return self.create(rd, namespace, body, raw=False, dry_run=dry_run), True
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
        result = self.update(rd, namespace, name, patched, status_only=status_only, dry_run=dry_run)
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
        if rd.storage_key == CRD_KEY:
            self._drop_crd(obj)
        if rd.namespaced:
            self._maybe_finish_namespace(key[0])
        return gone

    def delete(
        self,
        rd: ResourceDef,
        namespace: str | None,
        name: str,
        options: Obj,
        *,
        dry_run: bool = False,
    ) -> Obj:
        """Delete as a DELETE request: preconditions, finalizers, namespaces."""
        current = self.get(rd, namespace, name)
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
        if self.call_later is not None and self.namespace_cleanup_delay > 0:
            self.call_later(self.namespace_cleanup_delay, lambda: self._empty_namespace(name))
            return result
        self._empty_namespace(name)
        return self.get(rd, None, name) or result

    def _empty_namespace(self, name: str) -> None:
        """The namespace controller's part: delete the contents, then the namespace."""
        with self.lock:
            for other in list(self._defs.values()):
                if not other.namespaced or self._defs_primary(other) is not other:
                    continue
                for obj in self.select(other, name):
                    self.delete(other, name, obj["metadata"]["name"], {})
            self._maybe_finish_namespace(name)

    def _defs_primary(self, rd: ResourceDef) -> ResourceDef:
        """One ResourceDef per storage key (the first registered), to visit storage once."""
        for other in self._defs.values():
            if other.storage_key == rd.storage_key:
                return other
        return rd

    def _maybe_finish_namespace(self, namespace: str) -> Obj | None:
        ns_def = self._defs[("", "v1", "namespaces")]
        ns = self.get(ns_def, None, namespace)
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
            for obj in self.select(rd, None):
                self._remove(rd, obj)
        for key, rd in list(self._defs.items()):
            if rd.crd == name:
                del self._defs[key]

    def metadata(self, group: str, version: str, plural: str) -> Obj:
        """Every object's metadata with the time it was last committed, cheaply.

        ``lastChange``: when the resource last changed (a create, update or delete),
        ``now``: the time of the answer (both ``time.monotonic()``).
        """
        with self.lock:
            rd = self.resource(group, version, plural)
            key = rd.storage_key
            items = []
            for obj in self.select(rd, None):
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

    def events_after(self, rv: int) -> list[WatchEvent]:
        """The logged events newer than ``rv``, oldest first (check ``compacted_rv`` first)."""
        found: list[WatchEvent] = []
        for event in reversed(self._log):
            if event.rv <= rv:
                break
            found.append(event)
        found.reverse()
        return found


def translate_event(
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
            return "MODIFIED", Store.view(rd, event.obj)
        if new_ok:
            return "ADDED", Store.view(rd, event.obj)
        if old_ok:
            return "DELETED", Store.view(rd, event.obj)
        return None
    return (event.type, Store.view(rd, event.obj)) if new_ok else None
