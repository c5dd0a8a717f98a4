"""What the sandbox's processes share: the state directory, tracked processes, a small
synchronous API client, and object helpers.

State directory (``/run/stockade-sandbox/<name>/``, or ``$STOCKADE_SANDBOX_DIR/<name>``):

| file | written by | content |
|---|---|---|
| ``state.json`` | supervisor | run id, options, node table, the supervisor's pid |
| ``ready`` | supervisor | exists once everything runs |
| ``kubeconfig`` | emulator | the API server's address (plain HTTP on 127.0.0.1) |
| ``control.sock`` | supervisor | JSON-lines control socket (probe, add-node, restarts) |
| ``pids/<proc>.json`` | supervisor | every process it started: pid, start time, argv |
| ``logs/<proc>.log`` | the processes | their stdout and stderr |
| ``agents/<node>/`` | agents | each agent's ``--state-dir`` (and bundle, in file mode) |

A process is only ever signalled when its pid *and* its start time (from
``/proc/<pid>/stat``) match the record, so a reused pid is never hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stockade import kube
from stockade.kube import (
    CLUSTER_NETWORK_POLICIES,
    ENDPOINT_SLICES,
    ISOLATION_POLICIES,
    NAMESPACES,
    NETWORK_POLICIES,
    NODE_RULE_SETS,
    NODES,
    PEER_SETS,
    PODS,
    SERVICES,
    KubeClient,
    KubeConfig,
    Resource,
)
from stockade.validation import label_key, label_value
from stockade_lab.processes import process_start

JsonObject = dict[str, Any]

DEFAULT_ROOT = Path("/run/stockade-sandbox")
DEFAULT_NAME = "default"
SERVE_PORTS_DEFAULT: tuple[int, ...] = (80, 81)
"""Ports every pod answers on besides its declared ones (as the upstream netpol e2e)."""
IP_ANNOTATION = "sandbox.stockade.dev/pod-ip"
"""Asks the kubelet stand-in for this pod IP (the API server drops ``status`` on create)."""


class SandboxError(RuntimeError):
    """The sandbox could not do what was asked; the message says why."""


def root_dir() -> Path:
    """Where sandboxes keep their state."""
    env = os.environ.get("STOCKADE_SANDBOX_DIR")
    return Path(env) if env else DEFAULT_ROOT


@dataclass(frozen=True)
class Layout:
    """The paths of one sandbox's state directory."""

    dir: Path

    @classmethod
    def named(cls, name: str = DEFAULT_NAME) -> Layout:
        """The layout of the sandbox called ``name``."""
        if not name or "/" in name or name.startswith("."):
            raise SandboxError(f"not a sandbox name: {name!r}")
        return cls(root_dir() / name)

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    @property
    def ready(self) -> Path:
        return self.dir / "ready"

    @property
    def failed(self) -> Path:
        return self.dir / "failed"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def control(self) -> Path:
        return self.dir / "control.sock"

    @property
    def pids(self) -> Path:
        return self.dir / "pids"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def agent_dir(self, node: str) -> Path:
        return self.dir / "agents" / node

    def read_state(self) -> JsonObject | None:
        """``state.json``, or None when there is none (or it is half written)."""
        try:
            data = json.loads(self.state.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (a temporary file renamed over the target)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    tmp.rename(path)


# --------------------------------------------------------------------------- processes


def record_process(layout: Layout, name: str, pid: int, argv: Iterable[str]) -> None:
    """Remember a started process in ``pids/<name>.json``."""
    write_json(
        layout.pids / f"{name}.json",
        {"pid": pid, "start": process_start(pid), "argv": list(argv)},
    )


def forget_process(layout: Layout, name: str) -> None:
    """Drop a process's record."""
    with contextlib.suppress(FileNotFoundError):
        (layout.pids / f"{name}.json").unlink()


def recorded_processes(layout: Layout) -> dict[str, tuple[int, int | None]]:
    """Recorded processes that still run: name -> (pid, start)."""
    alive: dict[str, tuple[int, int | None]] = {}
    if not layout.pids.is_dir():
        return alive
    for path in sorted(layout.pids.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            pid, start = int(record["pid"]), record.get("start")
        except (ValueError, KeyError, TypeError, FileNotFoundError):
            continue
        if start is not None and process_start(pid) == start:
            alive[path.stem] = (pid, start)
    return alive


def is_alive(pid: int, start: int | None) -> bool:
    """Whether the process ``pid`` started at ``start`` still runs."""
    return start is not None and process_start(pid) == start


def terminate(processes: Mapping[str, tuple[int, int | None]], grace: float = 3.0) -> None:
    """SIGTERM the processes (those whose start time matches), SIGKILL what lingers."""
    targets = {name: ps for name, ps in processes.items() if is_alive(*ps)}
    for pid, _ in targets.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(is_alive(*ps) for ps in targets.values()):
        time.sleep(0.05)
    for pid, start in targets.values():
        if is_alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(is_alive(*ps) for ps in targets.values()):
        time.sleep(0.02)


def remove_dir(layout: Layout) -> None:
    """Remove the state directory (only what lies under the sandbox root)."""
    root = root_dir().resolve()
    target = layout.dir.resolve()
    if root not in target.parents:
        raise SandboxError(f"refusing to remove {target}: not under {root}")
    shutil.rmtree(target, ignore_errors=True)


# --------------------------------------------------------------------------- control socket


def control_call(layout: Layout, request: Mapping[str, Any], timeout: float = 60.0) -> JsonObject:
    """Send one request to the supervisor; its answer (``error`` raises)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(layout.control))
        except OSError as exc:
            raise SandboxError(
                f"the sandbox supervisor does not answer ({exc}); is the sandbox up?"
            ) from None
        chunks: list[bytes] = []
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if data.endswith(b"\n"):
                    break
        except OSError as exc:
            raise SandboxError(f"the sandbox supervisor went away ({exc})") from None
    finally:
        sock.close()
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise SandboxError("the sandbox supervisor closed the connection") from None
    if not isinstance(answer, dict):
        raise SandboxError("the sandbox supervisor answered nonsense")
    if answer.get("error"):
        raise SandboxError(str(answer["error"]))
    return answer


# --------------------------------------------------------------------------- API client


# Where the objects of each kind live: stockade.kube's resources (the product's own
# table for those it has), plus the ones only the sandbox writes.
KINDS: dict[str, Resource] = {
    r.kind: r
    for r in (
        NAMESPACES,
        PODS,
        NODES,
        NETWORK_POLICIES,
        CLUSTER_NETWORK_POLICIES,
        ISOLATION_POLICIES,
        SERVICES,
        ENDPOINT_SLICES,
        NODE_RULE_SETS,
        PEER_SETS,
        Resource(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            namespaced=False,
        ),
    )
}


class ApiError(SandboxError):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"API {status}: {message}")


class Api:
    """The sandbox's synchronous face of :class:`stockade.kube.KubeClient`.

    The CLI side of the sandbox is synchronous; each call runs the product's own
    async client to completion, so there is one API client in stockade, with one
    way of encoding, authenticating and reporting errors.
    """

    def __init__(self, kubeconfig: Path) -> None:
        self.config = KubeConfig.from_file(kubeconfig)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> JsonObject:
        """One call; the decoded answer, or :class:`ApiError` / :class:`SandboxError`."""
        return asyncio.run(self._request(method, path, body, content_type, timeout))

    async def _request(
        self, method: str, path: str, body: Any, content_type: str, timeout: float
    ) -> JsonObject:
        async with KubeClient(self.config, timeout) as client:
            try:
                return await client.request(method, path, body=body, content_type=content_type)
            except kube.ApiError as exc:
                raise ApiError(exc.status, exc.message or exc.reason) from None
            except kube.Unreachable as exc:
                raise SandboxError(
                    f"{method} {path}: the API server is unreachable: {exc}"
                ) from None

    def list(self, kind: str, namespace: str | None = None) -> list[JsonObject]:
        k = KINDS[kind]
        items = self.request("GET", k.path(namespace)).get("items") or []
        for item in items:
            item.setdefault("kind", k.kind)
            item.setdefault("apiVersion", f"{k.group}/{k.version}" if k.group else k.version)
        return list(items)

    def get(self, kind: str, name: str, namespace: str | None = None) -> JsonObject | None:
        try:
            return self.request("GET", KINDS[kind].path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` of an API object (``/name`` for a cluster-scoped one)."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def kubelet_node_labels(name: str) -> dict[str, str]:
    """The labels a kubelet puts on its Node (and puts back when they are removed)."""
    return {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}


def check_node_labels(labels: Any) -> dict[str, str]:
    """Labels asked for a node, checked as the API server checks labels (None: none)."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise SandboxError(f"node labels must map names to strings, got {labels!r}"[:200])
    for key, value in labels.items():
        problems = label_key(key) + label_value(value)
        if problems:
            raise SandboxError(f"node label {key}={value}: {'; '.join(problems)}"[:300])
    return dict(labels)


def kind_of(obj: Mapping[str, Any]) -> Resource:
    """The API location of an object by its ``kind`` (the kinds the sandbox handles)."""
    kind = str(obj.get("kind", ""))
    if kind not in KINDS:
        raise SandboxError(f"the sandbox does not handle kind {kind or '<none>'!r}")
    return KINDS[kind]


def load_objects(paths: Iterable[str | Path]) -> list[JsonObject]:
    """Objects from YAML/JSON files (multi-document, ``kind: List`` flattened)."""
    out: list[JsonObject] = []

    def add(doc: Any) -> None:
        if doc is None:
            return
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            for item in doc["items"] or []:
                add(item)
            return
        if not isinstance(doc, dict):
            raise SandboxError(f"not a Kubernetes object: {doc!r}"[:200])
        out.append(doc)

    for path in paths:
        text = Path(path).read_text(encoding="utf-8") if str(path) != "-" else _stdin()
        try:
            for doc in yaml.safe_load_all(text):
                add(doc)
        except yaml.YAMLError as exc:
            raise SandboxError(f"{path}: not valid YAML: {exc}") from None
    return out


def _stdin() -> str:
    import sys  # noqa: PLC0415

    return sys.stdin.read()
