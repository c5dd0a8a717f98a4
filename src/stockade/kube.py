"""A small typed async Kubernetes client on aiohttp: the one narrow API adapter.

The controller's publisher and the agent's watcher talk to the API server only
through :class:`KubeClient`: list, watch, get, create, replace, merge patches, delete
and Events, over plain HTTP or HTTPS with a bearer token or client certificates,
configured from a kubeconfig or from the in-cluster service account.

Errors are few and typed: :class:`ApiError` (``status``, ``reason``, ``message``,
with :class:`NotFound`, :class:`Conflict` and :class:`Gone` for 404, 409 and 410)
for answers the server gave, :class:`Unreachable` for connection failures and
timeouts. Objects are plain JSON dicts; list items get their ``kind`` and
``apiVersion`` filled in (the API server leaves them out of list items).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import ssl
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import aiohttp
import yaml

from stockade.encoded import Encoded

JsonObject = dict[str, Any]
# One page of a list: its objects, and the list's resourceVersion.
ListPage = tuple[list[JsonObject], str]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_TIMEOUT = 30.0
_LIST_CHUNK = 500
# Accept header of a call that reads only the answer's metadata.
_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"
_TOKEN_REFRESH = 60.0


def _encode(body: Any) -> str:
    return body.text if isinstance(body, Encoded) else json.dumps(body)


def _with_type(resource: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with the resource's apiVersion and kind first (an :class:`Encoded` stays one)."""
    head = {"apiVersion": resource.api_version, "kind": resource.kind}
    full = {**head, **body}
    if not isinstance(body, Encoded):
        return full
    rest = body.text.strip()[1:].lstrip()  # after the opening brace
    prefix = json.dumps(head)[:-1]  # without the closing brace
    return Encoded(full, f"{prefix}{', ' if rest != '}' else ''}{rest}")


# --------------------------------------------------------------------------- resources


@dataclass(frozen=True, slots=True)
class Resource:
    """An API resource: where it lives and what its objects are called."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str = ""
    ) -> str:
        """The URL path of the collection, or of one object (and a subresource)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


PODS = Resource("", "v1", "pods", "Pod", namespaced=True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
EVENTS = Resource("", "v1", "events", "Event", namespaced=True)
NETWORK_POLICIES = Resource(
    "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", namespaced=True
)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
SERVICES = Resource("", "v1", "services", "Service", namespaced=True)
ENDPOINT_SLICES = Resource(
    "discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", namespaced=True
)
NODE_RULE_SETS = Resource("stockade.dev", "v1alpha1", "noderulesets", "NodeRuleSet", False)
PEER_SETS = Resource("stockade.dev", "v1alpha1", "peersets", "PeerSet", namespaced=False)
ISOLATION_POLICIES = Resource(
    "stockade.dev", "v1alpha1", "isolationpolicies", "IsolationPolicy", namespaced=False
)
# network-policy-api's ClusterNetworkPolicy: an optional API (its CRD may be absent).
CLUSTER_NETWORK_POLICIES = Resource(
    "policy.networking.k8s.io",
    "v1alpha2",
    "clusternetworkpolicies",
    "ClusterNetworkPolicy",
    namespaced=False,
)


# --------------------------------------------------------------------------- errors


class KubeError(Exception):
    """Any failure talking to the API server."""


class Unreachable(KubeError):
    """The API server could not be reached, or did not answer in time."""


class ApiError(KubeError):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")


class NotFound(ApiError):
    """404: the object (or the resource) does not exist."""


class Conflict(ApiError):
    """409: a resourceVersion conflict, or the object already exists (``reason``)."""


class Gone(ApiError):
    """410: the requested resourceVersion is too old; list again."""


_BY_STATUS: dict[int, type[ApiError]] = {404: NotFound, 409: Conflict, 410: Gone}


def api_error(status: int, body: Any) -> ApiError:
    """The error for an HTTP status and its (Status object, text or nothing) body."""
    reason = message = ""
    if isinstance(body, Mapping):
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or "")
    elif isinstance(body, str):
        message = body.strip()[:500]
    return _BY_STATUS.get(status, ApiError)(status, reason, message)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class KubeConfig:
    """Where the API server is and how to authenticate.

    ``token_file`` (the in-cluster token, which the kubelet rotates) is read again
    every minute; ``token`` is fixed.
    """

    server: str
    token: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    ca_data: str | None = None  # PEM text
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    namespace: str = "default"
    _temp: tuple[str, ...] = field(default=(), repr=False)

    @staticmethod
    def in_cluster() -> KubeConfig:
        """The service account's config, as a pod sees it."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeError("not in a cluster: KUBERNETES_SERVICE_HOST is not set")
        if ":" in host:
            host = f"[{host}]"
        ns_file = SERVICE_ACCOUNT_DIR / "namespace"
        namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
        return KubeConfig(
            server=f"https://{host}:{port}",
            token_file=str(SERVICE_ACCOUNT_DIR / "token"),
            ca_file=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
            namespace=namespace,
        )

    @staticmethod
    def from_file(path: str | os.PathLike[str], context: str | None = None) -> KubeConfig:
        """The current (or named) context of a kubeconfig file."""
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return KubeConfig.from_dict(raw, context, base=Path(path).parent)

    @staticmethod
    def from_dict(
        raw: Mapping[str, Any], context: str | None = None, base: Path | None = None
    ) -> KubeConfig:
        """Parse a kubeconfig document (relative file paths resolve against ``base``)."""
        base = base or Path.cwd()
        name = context or raw.get("current-context")
        contexts = {c["name"]: c.get("context") or {} for c in raw.get("contexts") or []}
        if name is None and len(contexts) == 1:
            name = next(iter(contexts))
        if name not in contexts:
            raise KubeError(f"kubeconfig: no context {name!r}")
        ctx = contexts[name]
        clusters = {c["name"]: c.get("cluster") or {} for c in raw.get("clusters") or []}
        users = {u["name"]: u.get("user") or {} for u in raw.get("users") or []}
        cluster = clusters.get(ctx.get("cluster"))
        if cluster is None or not cluster.get("server"):
            raise KubeError(f"kubeconfig: context {name!r} has no cluster with a server")
        user = users.get(ctx.get("user"), {})
        temp: list[str] = []

        def path_of(key: str, where: Mapping[str, Any]) -> str | None:
            value = where.get(key)
            if value is None:
                return None
            p = Path(str(value))
            return str(p if p.is_absolute() else base / p)

        def data_file(key: str, where: Mapping[str, Any]) -> str | None:
            value = where.get(key)
            if value is None:
                return None
            fd, tmp = tempfile.mkstemp(prefix="stockade-kube-", suffix=".pem")
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.b64decode(value))
            temp.append(tmp)
            return tmp

        ca_data = cluster.get("certificate-authority-data")
        token = user.get("token")
        token_file = path_of("tokenFile", user)
        return KubeConfig(
            server=str(cluster["server"]).rstrip("/"),
            token=str(token) if token else None,
            token_file=token_file,
            ca_file=path_of("certificate-authority", cluster),
            ca_data=base64.b64decode(ca_data).decode() if ca_data else None,
            cert_file=path_of("client-certificate", user)
            or data_file("client-certificate-data", user),
            key_file=path_of("client-key", user) or data_file("client-key-data", user),
            insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
            namespace=str(ctx.get("namespace") or "default"),
            _temp=tuple(temp),
        )

    @staticmethod
    def load(path: str | os.PathLike[str] | None = None) -> KubeConfig:
        """``path``; else in-cluster when in a pod; else ``$KUBECONFIG`` or ~/.kube/config."""
        if path is not None:
            return KubeConfig.from_file(path)
        if os.environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").exists():
            return KubeConfig.in_cluster()
        env = os.environ.get("KUBECONFIG")
        if env:
            return KubeConfig.from_file(env.split(os.pathsep)[0])
        return KubeConfig.from_file(Path.home() / ".kube" / "config")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings for an https server; None for plain http."""
        if not self.server.startswith("https:"):
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def cleanup(self) -> None:
        """Remove the temporary files written for inline certificate data."""
        for tmp in self._temp:
            Path(tmp).unlink(missing_ok=True)


# --------------------------------------------------------------------------- client


RFC3339 = "%Y-%m-%dT%H:%M:%SZ"  # how Kubernetes writes timestamps (seconds, Z)


def now_rfc3339() -> str:
    """The current time as Kubernetes writes timestamps (seconds, Z)."""
    return datetime.now(UTC).strftime(RFC3339)


def rfc3339(when: float) -> str:
    """Unix time ``when`` as Kubernetes writes timestamps (for a caller with its own clock)."""
    return datetime.fromtimestamp(when, UTC).strftime(RFC3339)


def now_micro() -> str:
    """The current time as a MicroTime (Leases, events.k8s.io)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def collect_pages(pages: AsyncIterator[ListPage]) -> tuple[list[JsonObject], str]:
    """A paged list's objects in one list, and the last page's resourceVersion (the
    one to watch from)."""
    items: list[JsonObject] = []
    version = ""
    async for page, page_version in pages:
        items += page
        version = page_version
    return items, version


class KubeClient:
    """Async client for the handful of calls stockade makes.

    Create it inside a running event loop (or let the first request do so), and
    close it with :meth:`close` or ``async with``.
    """

    def __init__(self, config: KubeConfig, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.config = config
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = config.token
        self._token_read = 0.0

    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str] | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> KubeClient:
        """A client configured by :meth:`KubeConfig.load`."""
        return cls(KubeConfig.load(path), timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ plumbing

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.config.ssl_context() or False)
            self._session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        cfg = self.config
        if cfg.token_file and time.monotonic() - self._token_read > _TOKEN_REFRESH:
            self._token = Path(cfg.token_file).read_text().strip()
            self._token_read = time.monotonic()
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        metadata_only: bool = False,
    ) -> JsonObject:
        """One call; the decoded JSON answer, or an :class:`ApiError`/:class:`Unreachable`.

        ``metadata_only``: the answer is asked for as ``PartialObjectMetadata`` (a large
        object is not sent back whole), and of a successful answer only
        ``{"metadata": ...}`` is decoded when the object's metadata comes before its
        spec (a server that sends the whole object anyway, as the API server writes it).
        """
        data = None if body is None else _encode(body).encode()
        headers = self._headers(content_type if data is not None else None)
        if metadata_only:
            # The API server then answers with the metadata alone (any verb), not the
            # whole object back; a server that cannot falls back to the object.
            headers["Accept"] = _METADATA_ONLY
        limit = aiohttp.ClientTimeout(total=timeout or self.timeout)
        try:
            async with self._session_now().request(
                method,
                self.config.server + path,
                params=params,
                data=data,
                headers=headers,
                timeout=limit,
            ) as resp:
                text = await resp.text()
                if metadata_only and resp.status < 400:
                    return _decode_metadata(text)
                decoded = _decode(text)
                if resp.status >= 400:
                    raise api_error(resp.status, decoded if decoded is not None else text)
                return decoded if isinstance(decoded, dict) else {}
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise Unreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------ reads

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]:
        """Every object (paged), and the list's resourceVersion to watch from."""
        return await collect_pages(
            self.list_pages(resource, namespace, label_selector, field_selector, prefetch=False)
        )

    async def list_pages(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        prefetch: bool = True,
        limit: int = _LIST_CHUNK,
    ) -> AsyncGenerator[ListPage, None]:
        """Every object, a page at a time (``limit`` objects at most), each with the
        list's resourceVersion (the last page's is the one to watch from).

        ``prefetch``: the next page is requested before this one is handed over, so
        the server prepares it while the caller works on this one (a caller that
        returns to the event loop now and then lets the request go out meanwhile).
        """
        params = _selectors(label_selector, field_selector)
        params["limit"] = str(max(1, limit))
        path = resource.path(namespace)
        pending: asyncio.Task[JsonObject] | None = None
        try:
            answer = await self.request("GET", path, params=params)
            while True:
                items: list[JsonObject] = answer.get("items") or []
                for item in items:
                    item.setdefault("kind", resource.kind)
                    item.setdefault("apiVersion", resource.api_version)
                meta = answer.get("metadata") or {}
                version = str(meta.get("resourceVersion") or "")
                token = meta.get("continue")
                del answer
                if token:
                    params = {**params, "continue": str(token)}
                    if prefetch:
                        pending = asyncio.ensure_future(self.request("GET", path, params=params))
                yield items, version
                del items
                if not token:
                    return
                if pending is not None:
                    task, pending = pending, None
                    answer = await task
                else:
                    answer = await self.request("GET", path, params=params)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, KubeError):
                    await pending

    async def watch(
        self,
        resource: Resource,
        resource_version: str | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        *,
        without_spec: bool = False,
    ) -> AsyncIterator[tuple[str, JsonObject]]:
        """``(type, object)`` events until the server closes the watch.

        Types are ADDED, MODIFIED, DELETED and BOOKMARK. Raises :class:`Gone` when
        ``resource_version`` is too old (a 410 answer or an ERROR event with code 410).
        ``without_spec``: the objects come without their spec, which is skipped rather
        than decoded (a watcher of large objects that reads their metadata and status).
        """
        params = _selectors(label_selector, field_selector)
        params["watch"] = "true"
        params["allowWatchBookmarks"] = "true"
        params["timeoutSeconds"] = str(timeout_seconds)
        if resource_version:
            params["resourceVersion"] = resource_version
        limit = aiohttp.ClientTimeout(
            total=None, connect=self.timeout, sock_read=timeout_seconds + 30
        )
        path = resource.path(namespace)
        try:
            async with self._session_now().get(
                self.config.server + path, params=params, headers=self._headers(), timeout=limit
            ) as resp:
                if resp.status >= 400:
                    text = await resp.text()
                    decoded = _decode(text)
                    raise api_error(resp.status, decoded if decoded is not None else text)
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        event = _watch_event(line, resource, without_spec)
                        if event is not None:
                            yield event
                event = _watch_event(buffer, resource, without_spec)
                if event is not None:
                    yield event
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise Unreachable(f"watch {path}: {type(exc).__name__}: {exc}") from exc

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> JsonObject:
        """One object; :class:`NotFound` if it does not exist."""
        return await self.request("GET", resource.path(namespace, name))

    # ------------------------------------------------------------------ writes

    async def create(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        metadata_only: bool = False,
    ) -> JsonObject:
        """POST; :class:`Conflict` (reason AlreadyExists) if the name is taken.

        ``body`` may be :class:`Encoded`; ``metadata_only`` as for :meth:`request`.
        """
        return await self.request(
            "POST",
            resource.path(namespace),
            body=_with_type(resource, body),
            metadata_only=metadata_only,
        )

    async def replace(
        self, resource: Resource, name: str, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        """PUT the whole object; :class:`Conflict` on a stale resourceVersion."""
        full = {"apiVersion": resource.api_version, "kind": resource.kind, **body}
        return await self.request("PUT", resource.path(namespace, name), body=full)

    async def patch_merge(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        metadata_only: bool = False,
    ) -> JsonObject:
        """A JSON merge patch (RFC 7386) of the object.

        ``patch`` may be :class:`Encoded`; ``metadata_only`` as for :meth:`request`.
        """
        return await self.request(
            "PATCH",
            resource.path(namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
            metadata_only=metadata_only,
        )

    async def patch_status(
        self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        """A merge patch of the ``status`` subresource."""
        return await self.request(
            "PATCH",
            resource.path(namespace, name, "status"),
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def delete(
        self, resource: Resource, name: str, namespace: str | None = None
    ) -> JsonObject:
        """DELETE; :class:`NotFound` if it is already gone."""
        return await self.request("DELETE", resource.path(namespace, name))

    async def create_event(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        event_type: str = "Normal",
        component: str = "stockade-controller",
    ) -> JsonObject:
        """A core v1 Event about ``involved`` (an object with kind, apiVersion, metadata)."""
        if event_type not in ("Normal", "Warning"):
            raise ValueError(f"event type must be Normal or Warning, not {event_type!r}")
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        stamp = now_rfc3339()
        body = {
            "metadata": {
                "generateName": f"{meta.get('name', 'object')}.",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", ""),
                "kind": involved.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace") or "",
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": event_type,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        return await self.create(EVENTS, body, namespace)


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


def _decode(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


# An answer's opening up to its metadata: ``{"apiVersion": "...", "kind": "...", "metadata":``
# (either of the first two may be missing). Strings without quotes or escapes only, so
# the match cannot start inside a string.
_UP_TO_METADATA = re.compile(
    r'\s*\{\s*(?:"(?:apiVersion|kind)"\s*:\s*"[^"\\]*"\s*,\s*){0,2}"metadata"\s*:\s*'
)
_DECODER = json.JSONDecoder()


def _decode_metadata(text: str) -> JsonObject:
    """``{"metadata": ...}`` of an object's JSON; the whole object when the metadata
    does not come first (or the text is not an object)."""
    match = _UP_TO_METADATA.match(text)
    if match is not None:
        try:
            meta, _ = _DECODER.raw_decode(text, match.end())
        except ValueError:
            meta = None
        if isinstance(meta, dict):
            return {"metadata": meta}
    decoded = _decode(text)
    return decoded if isinstance(decoded, dict) else {}


# A watch event's opening, up to its object: ``{"type": "MODIFIED", "object": ``.
_EVENT_HEAD = re.compile(r'\s*\{\s*"type"\s*:\s*"([A-Z]+)"\s*,\s*"object"\s*:\s*')
# A member named "status" (outside a string, a quote after "," or "{" opens a key).
_STATUS_KEY = re.compile(r'[,{]\s*"status"\s*:\s*')
# What follows the object's last member in a watch event: the object's and the event's end.
_EVENT_END = re.compile(r"\s*\}\s*\}\s*")


def _event_without_spec(text: str) -> tuple[str, JsonObject] | None:
    """``(type, {"metadata": ..., "status": ...})`` of an ADDED/MODIFIED/DELETED event,
    its object's spec skipped, not decoded; None when the text is not laid out as the
    API server writes it (apiVersion, kind, metadata, spec, status: a custom
    resource's keys in order), for the caller to decode it whole.

    The status is found without reading the spec: every ``"status":`` after a
    ``,`` or ``{`` is a member name (a string's quotes are escaped), and the
    object's own is the one whose value ends the object (and the event). An object
    with no such name anywhere has no status.
    """
    head = _EVENT_HEAD.match(text)
    if head is None or head.group(1) not in ("ADDED", "MODIFIED", "DELETED"):
        return None
    opening = _UP_TO_METADATA.match(text, head.end())
    if opening is None:
        return None
    try:
        meta, pos = _DECODER.raw_decode(text, opening.end())
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    obj: JsonObject = {"metadata": meta}
    found = False
    for key in _STATUS_KEY.finditer(text, pos):
        found = True
        try:
            status, end = _DECODER.raw_decode(text, key.end())
        except ValueError:
            return None
        if _EVENT_END.fullmatch(text, end) is not None:
            if isinstance(status, dict):
                obj["status"] = status
            return head.group(1), obj
    return None if found else (head.group(1), obj)


def _watch_event(
    line: bytes, resource: Resource, without_spec: bool = False
) -> tuple[str, JsonObject] | None:
    line = line.strip()
    if not line:
        return None
    if without_spec:
        lean = _event_without_spec(line.decode())
        if lean is not None:
            kind, obj = lean
            obj.setdefault("kind", resource.kind)
            obj.setdefault("apiVersion", resource.api_version)
            return kind, obj
    event = json.loads(line)
    if without_spec and isinstance(event.get("object"), dict):
        event["object"].pop("spec", None)
    kind = str(event.get("type", ""))
    obj = event.get("object") or {}
    if kind == "ERROR":
        code = int(obj.get("code") or 500)
        raise api_error(code, obj)
    if kind != "BOOKMARK":
        obj.setdefault("kind", resource.kind)
        obj.setdefault("apiVersion", resource.api_version)
    return kind, obj
