"""``Sandbox``: the Python face of the sandbox, for the CLI, the tests and e2e drivers.

A :class:`Sandbox` is a handle on a state directory; the sandbox itself runs in the
supervisor process (:mod:`stockade_lab.sandbox.supervisor`), so handles are cheap and
several may point at one sandbox. It satisfies the e2e driver protocol:
``apply(objects)``, ``delete(objects)``, ``matrix(port, protocol)``,
``wait_converged()``.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockade.agent.applier import Applier, RefusedError
from stockade.agent.backend import Backend, Tools
from stockade.agent.executor import CommandError, SubprocessExecutor
from stockade.agent.render import RenderOptions
from stockade.cluster import Cluster, parse_input
from stockade.cnp import ClusterInput
from stockade.compiler import CompiledCluster, compile_cluster
from stockade.errors import InvalidObjectError
from stockade.model import Pod
from stockade.ownership import resolve
from stockade.ruleset import node_rule_set_from_dict, peer_set_from_dict
from stockade.services import desired_slices, parse_service
from stockade_lab.netlab import NETNS_DIR, PREFIX, RECORD_DIR, cleanup_leftovers
from stockade_lab.processes import process_start
from stockade_lab.sandbox.common import (
    DEFAULT_NAME,
    IP_ANNOTATION,
    KINDS,
    SERVE_PORTS_DEFAULT,
    Api,
    ApiError,
    JsonObject,
    Layout,
    SandboxError,
    check_node_labels,
    control_call,
    is_alive,
    kind_of,
    kubelet_node_labels,
    load_objects,
    object_key,
    record_process,
    recorded_processes,
    remove_dir,
    terminate,
)
from stockade_lab.sandbox.servicectl import content_digest

Matrix = dict[str, dict[str, bool]]
"""The engine's prediction (:meth:`Sandbox.expected_matrix`): every cell is known."""
ProbeMatrix = dict[str, dict[str, bool | None]]
"""Real packets (:meth:`Sandbox.probe_matrix`): True answered, False refused or timed
out, None not measured (unknown; never to be read as denied)."""
ObjectsOrFiles = Iterable[Mapping[str, Any] | str | Path]
PROBE_TIMEOUT = 1.0
"""Seconds a probe waits: allowed probes answer in milliseconds, a DROP times out."""
BACKEND: Backend = "nft"

# Applied in this order; deleted in the reverse.
_ORDER = {
    "Namespace": 0,
    "Node": 0,
    "Pod": 1,
    "Service": 2,
    "EndpointSlice": 2,
    "NetworkPolicy": 2,
    "ClusterNetworkPolicy": 2,
    "IsolationPolicy": 2,
}
# Cluster-wide kinds of the engine's view whose CRD an older sandbox may lack.
_OPTIONAL_KINDS = ("ClusterNetworkPolicy", "IsolationPolicy")


@dataclass
class Converged:
    """The outcome of :meth:`Sandbox.wait_converged`."""

    seconds: float
    checks: int


@dataclass
class ProbeReport:
    """A matrix of real packets, and why each of its unknown cells is unknown."""

    matrix: ProbeMatrix
    unknown: dict[tuple[str, str], str] = field(default_factory=dict)
    """``(src, dst)`` -> the reason that cell was not measured."""

    def why(self) -> str:
        """One line: how many cells are unknown, and the reasons (most frequent first)."""
        cells = sum(len(row) for row in self.matrix.values())
        counts: dict[str, int] = {}
        for reason in self.unknown.values():
            counts[reason] = counts.get(reason, 0) + 1
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        reasons = "; ".join(f"{reason} ({n})" for reason, n in ranked[:3])
        if len(ranked) > 3:
            reasons += f"; and {len(ranked) - 3} other reasons"
        return f"{len(self.unknown)} of {cells} cells could not be measured: {reasons}"


@dataclass
class Snapshot:
    """The API's current objects as the engine sees them."""

    cluster: Cluster
    raw: dict[str, list[JsonObject]] = field(default_factory=dict)


class Sandbox:
    """A handle on the sandbox called ``name`` (state under ``/run/stockade-sandbox``)."""

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        nodes: int = 2,
        dual_stack: bool = False,
        serve_ports: Sequence[int] = SERVE_PORTS_DEFAULT,
        agent_mode: str = "auto",
        isolate_new_pods: bool = False,
        image: str | None = None,
    ) -> None:
        self.name = name
        self.isolate_new_pods = isolate_new_pods
        self.image = image
        self.layout = Layout.named(name)
        self.nodes = nodes
        self.dual_stack = dual_stack
        self.serve_ports = tuple(serve_ports)
        self.agent_mode = agent_mode
        self._api: Api | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Sandbox:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def supervisor_alive(self) -> bool:
        state = self.layout.read_state()
        if state is None:
            procs = recorded_processes(self.layout)
            return "supervisor" in procs
        return is_alive(int(state.get("pid", 0)), state.get("start"))

    def is_up(self) -> bool:
        """Whether the sandbox runs and is ready."""
        return self.layout.ready.exists() and self.supervisor_alive()

    def up(
        self,
        timeout: float = 90.0,
        on_phase: Callable[[str], None] | None = None,
    ) -> None:
        """Start the sandbox in the background; return once it is ready.

        Leftovers of a crashed sandbox of this name (or any dead netlab run) are
        removed first. Raises :class:`SandboxError` when it is already up.
        """
        if os.geteuid() != 0:
            raise SandboxError("the sandbox needs root (network namespaces)")
        if self.is_up():
            raise SandboxError(
                f"sandbox {self.name!r} is up already; `stockade sandbox down` first"
            )
        self.cleanup()
        self.layout.dir.mkdir(parents=True, exist_ok=True)
        self.layout.logs.mkdir(exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "stockade_lab.sandbox.supervisor",
            "--state-dir",
            str(self.layout.dir),
            "--nodes",
            str(self.nodes),
            "--serve-ports",
            ",".join(str(p) for p in self.serve_ports),
            "--agent-mode",
            self.agent_mode,
        ]
        if self.dual_stack:
            argv.append("--dual-stack")
        if self.isolate_new_pods:
            argv.append("--isolate-new-pods")
        if self.image:
            argv += ["--image", self.image]
        with open(self.layout.logs / "supervisor.log", "ab") as logfile:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        record_process(self.layout, "supervisor", proc.pid, argv)
        self._proc = proc  # kept, so that this handle reaps it at down()
        deadline = time.monotonic() + timeout
        shown = ""
        while not self.layout.ready.exists():
            state = self.layout.read_state() or {}
            phase = str(state.get("phase", "starting"))
            if phase != shown and on_phase is not None:
                on_phase(phase)
                shown = phase
            if proc.poll() is not None or self.layout.failed.exists():
                reason = self._failure()
                self.down()
                raise SandboxError(f"the sandbox failed to start: {reason}")
            if time.monotonic() > deadline:
                reason = self._failure()
                self.down()
                raise SandboxError(f"the sandbox was not ready within {timeout:.0f} s: {reason}")
            time.sleep(0.05)
        if on_phase is not None:
            on_phase("ready")
        self._api = None

    def _failure(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.layout.failed.read_text().strip()
        with contextlib.suppress(FileNotFoundError):
            lines = (self.layout.logs / "supervisor.log").read_text().splitlines()
            return " | ".join(lines[-5:])
        return "no log"

    def down(self) -> list[str]:
        """Stop everything and remove every namespace, process and file; idempotent.

        Works after a crash too. Returns what was cleaned, for people to read.
        """
        done: list[str] = []
        state = self.layout.read_state() or {}
        if self.supervisor_alive() and self.layout.control.exists():
            with contextlib.suppress(SandboxError):
                control_call(self.layout, {"op": "shutdown"}, timeout=5)
                pid, start = int(state.get("pid", 0)), state.get("start")
                deadline = time.monotonic() + 30
                while is_alive(pid, start) and time.monotonic() < deadline:
                    time.sleep(0.05)
                done.append("supervisor stopped")
        leftovers = recorded_processes(self.layout)
        if leftovers:
            terminate(leftovers)
            done.append(f"killed leftover processes: {', '.join(sorted(leftovers))}")
        if state.get("image"):
            # Containers of a crashed image-mode sandbox go before their namespaces.
            from stockade_lab.sandbox.containers import remove_leftovers  # noqa: PLC0415

            remove_leftovers()
        done += self._remove_namespaces(state.get("run_id"))
        if self.layout.dir.exists():
            remove_dir(self.layout)
            done.append(f"removed {self.layout.dir}")
        self._api = None
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None
        return done

    def cleanup(self) -> list[str]:
        """Remove what a crashed sandbox of this name left (no-op when it runs)."""
        if self.supervisor_alive():
            return []
        return self.down()

    @staticmethod
    def _remove_namespaces(run_id: Any) -> list[str]:
        done: list[str] = []
        if isinstance(run_id, str) and run_id:
            prefix = f"{PREFIX}{run_id}-"
            mine = (
                sorted(p.name for p in NETNS_DIR.glob(f"{prefix}*")) if NETNS_DIR.is_dir() else []
            )
            if mine:
                text = "".join(f"netns del {n}\n" for n in mine)
                subprocess.run(
                    ["ip", "-force", "-batch", "-"],
                    input=text,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                done.append(f"deleted {len(mine)} namespace(s) {prefix}*")
            with contextlib.suppress(FileNotFoundError):
                (RECORD_DIR / f"{run_id}.json").unlink()
        gone = cleanup_leftovers()
        if gone:
            done.append(f"deleted {len(gone)} namespace(s) of dead runs")
        return done

    # ------------------------------------------------------------------ plumbing

    @property
    def kubeconfig(self) -> Path:
        """The kubeconfig of the sandbox's API server (kubectl works with it)."""
        return self.layout.kubeconfig

    @property
    def api(self) -> Api:
        if self._api is None:
            if not self.layout.kubeconfig.exists():
                raise SandboxError(f"sandbox {self.name!r} is not up")
            self._api = Api(self.layout.kubeconfig)
        return self._api

    def status(self) -> JsonObject:
        """The supervisor's view: nodes, pods, processes, run id."""
        return control_call(self.layout, {"op": "status"})

    def restart_agent(self, node: str) -> None:
        """Kill and start again the agent of ``node``."""
        control_call(self.layout, {"op": "restart_agent", "node": node})

    def uninstall(self) -> dict[str, str]:
        """Stop every agent and run ``stockade-agent cleanup`` on every node."""
        answer = control_call(self.layout, {"op": "uninstall"}, timeout=120)
        return dict(answer["cleaned"])

    def restart_controller(self) -> None:
        """Kill and start again the controller."""
        control_call(self.layout, {"op": "restart_controller"})

    def stop_controller(self) -> None:
        """Stop the controller (agents keep enforcing what they have)."""
        control_call(self.layout, {"op": "stop_controller"})

    def start_controller(self) -> None:
        """Start the controller again after :meth:`stop_controller`."""
        control_call(self.layout, {"op": "start_controller"})

    def add_node(
        self, name: str | None = None, labels: Mapping[str, str] | None = None
    ) -> JsonObject:
        """Add a node (namespace, Node object, agent); its pod CIDR is the next free one.

        ``labels`` go on the Node object besides ``kubernetes.io/hostname`` and
        ``kubernetes.io/os=linux``. Returns the node's name, namespace and addresses.
        """
        request: JsonObject = {"op": "add_node", "name": name}
        if labels:
            request["labels"] = check_node_labels(labels)
        return control_call(self.layout, request)

    def label_node(
        self, name: str, labels: Mapping[str, str], wait: bool = True, timeout: float = 30.0
    ) -> float:
        """Set a Node's labels to ``labels`` (the kubelet's stay); wait until enforced."""
        wanted = check_node_labels(labels)
        node = self.api.get("Node", name)
        if node is None:
            raise SandboxError(f"no node {name}")
        meta = node.get("metadata") or {}
        body = {
            "metadata": {
                "labels": {**wanted, **kubelet_node_labels(name)},
                "resourceVersion": meta.get("resourceVersion"),
            }
        }
        # A PUT of the whole object keeps status (the status subresource's rule).
        node["metadata"] = {**meta, **body["metadata"]}
        self.api.request("PUT", KINDS["Node"].path(None, name), node)
        return self.wait_converged(timeout).seconds if wait else 0.0

    def node_addresses(self) -> dict[str, list[str]]:
        """Each sandbox node's IP addresses (the InternalIP addresses of its Node), v4 first."""
        state = self.layout.read_state() or {}
        return {
            name: [ip for ip in (info.get("ip4"), info.get("ip6")) if ip]
            for name, info in sorted((state.get("nodes") or {}).items())
        }

    # ------------------------------------------------------------------ objects

    def _objects(self, items: ObjectsOrFiles) -> list[JsonObject]:
        objects: list[JsonObject] = []
        files: list[str | Path] = []
        for item in items:
            if isinstance(item, (str, Path)):
                files.append(item)
            else:
                objects.append(copy.deepcopy(dict(item)))
        if files:
            objects = load_objects(files) + objects
        return objects

    def apply(self, objects: ObjectsOrFiles, wait: bool = True, timeout: float = 30.0) -> float:
        """Create or update objects (or the objects of files); wait until enforced.

        Returns the seconds convergence took (0 with ``wait=False``). A pod's
        ``status.podIP`` (which the API server drops on create) is passed to the
        kubelet stand-in as the ``sandbox.stockade.dev/pod-ip`` annotation.
        """
        items = sorted(self._objects(objects), key=lambda o: _ORDER.get(str(o.get("kind")), 1))
        for obj in items:
            self._apply_one(obj)
        return self.wait_converged(timeout).seconds if wait else 0.0

    def _apply_node(self, obj: JsonObject, name: str) -> None:
        """A Node: a new one becomes a sandbox node; an existing one gets its labels."""
        labels = dict((obj.get("metadata") or {}).get("labels") or {})
        for key, value in kubelet_node_labels(name).items():
            if labels.get(key, value) != value:
                raise SandboxError(f"node {name}: the kubelet's label {key} is {value}")
            labels.pop(key, None)
        if self.api.get("Node", name) is None:
            self.add_node(name, labels)
        else:
            self.label_node(name, labels, wait=False)

    def _apply_one(self, obj: JsonObject) -> None:
        kind = kind_of(obj)
        meta = dict(obj.get("metadata") or {})
        name = meta.get("name")
        if not name:
            raise SandboxError(f"a {kind.kind} without metadata.name")
        if kind.kind == "Node":
            self._apply_node(obj, str(name))
            return
        namespace = (meta.get("namespace") or "default") if kind.namespaced else None
        body = {k: v for k, v in obj.items() if k != "status"}
        body["apiVersion"] = f"{kind.group}/{kind.version}" if kind.group else kind.version
        if kind.kind == "Pod":
            ip = (obj.get("status") or {}).get("podIP")
            if ip:
                meta.setdefault("annotations", {})[IP_ANNOTATION] = ip
        for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            meta.pop(key, None)
        if namespace:
            meta["namespace"] = namespace
        body["metadata"] = meta
        existing = self.api.get(kind.kind, name, namespace)
        if existing is None:
            self.api.request("POST", kind.path(namespace), body)
            return
        if kind.kind == "Pod":
            spec = dict(body.get("spec") or {})
            spec.setdefault("nodeName", (existing.get("spec") or {}).get("nodeName"))
            body["spec"] = spec
        meta["resourceVersion"] = (existing.get("metadata") or {}).get("resourceVersion")
        self.api.request("PUT", kind.path(namespace, name), body)

    def delete(self, objects: ObjectsOrFiles, wait: bool = True, timeout: float = 30.0) -> float:
        """Delete objects (missing ones are fine); wait until gone and enforced."""
        items = sorted(self._objects(objects), key=lambda o: -_ORDER.get(str(o.get("kind")), 1))
        targets: list[tuple[str, str, str | None]] = []
        nodes = (self.layout.read_state() or {}).get("nodes") or {}
        for obj in items:
            kind = kind_of(obj)
            meta = obj.get("metadata") or {}
            if kind.kind == "Node" and meta.get("name") in nodes:
                raise SandboxError(f"node {meta['name']} is a sandbox node; they stay until `down`")
            namespace = (meta.get("namespace") or "default") if kind.namespaced else None
            with contextlib.suppress(ApiError):
                self.api.request("DELETE", kind.path(namespace, meta["name"]))
            targets.append((kind.kind, meta["name"], namespace))
        if not wait:
            return 0.0
        start = time.monotonic()
        while any(self.api.get(*t) is not None for t in targets):
            if time.monotonic() - start > timeout:
                raise SandboxError("objects were not deleted in time")
            time.sleep(0.05)
        return self.wait_converged(timeout).seconds

    # ------------------------------------------------------------------ the engine's view

    def snapshot(self) -> Snapshot:
        """The API's objects, parsed as the engine does (invalid ones left out).

        Namespaces, Pods, NetworkPolicies, ClusterNetworkPolicies, IsolationPolicies and
        Nodes (every Node of the API, sandbox node or not: ``nodes`` peers select among
        them).
        """
        raw: dict[str, list[JsonObject]] = {}
        kinds = ("Namespace", "Pod", "NetworkPolicy", "Node", "ClusterNetworkPolicy")
        for kind in (*kinds, "IsolationPolicy"):
            try:
                raw[kind] = self.api.list(kind)
            except ApiError as exc:
                if exc.status != 404 or kind not in _OPTIONAL_KINDS:
                    raise
                raw[kind] = []  # a sandbox started without the CRD
        objects: list[ClusterInput] = []
        for items in raw.values():
            for item in items:
                with contextlib.suppress(InvalidObjectError):
                    objects.append(parse_input(item))
        return Snapshot(Cluster.of(objects), raw)

    def problems(self) -> list[str]:
        """Why the sandbox has not converged yet (empty: it has).

        Converged means: every pod on a sandbox node runs with an IP; the published
        NodeRuleSets and PeerSets equal the engine's compile of the API's current
        objects (nothing missing, different or stale); every NodeRuleSet's status
        says ``applied`` for its current ``generation`` (the agent's report); and
        every node's kernel holds exactly the rendering of that compile
        (``Applier.verify``, read-only, in the node's namespace).
        """
        state = self.layout.read_state() or {}
        nodes: dict[str, Any] = state.get("nodes") or {}
        snap = self.snapshot()
        out: list[str] = []
        for pod in snap.raw["Pod"]:
            meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
                continue
            node = spec.get("nodeName")
            if node and node not in nodes:
                continue
            if status.get("phase") != "Running" or not status.get("podIP"):
                out.append(f"pod {meta.get('namespace')}/{meta['name']} is not running yet")
        if out:
            return out
        out += self._service_problems(state, list(snap.cluster.pods.values()))
        if out:
            return out
        compiled = compile_cluster(snap.cluster)
        out += self._published_problems(compiled)
        if out:
            return out
        for node, info in sorted(nodes.items()):
            rules = compiled.node_rule_sets.get(node)
            if rules is None:
                continue
            sets = {name: list(compiled.shards(name)) for name in rules.peer_sets}
            applier = Applier(
                SubprocessExecutor(netns=info["ns"]),
                netns=info["ns"],
                tools=Tools(BACKEND),
                # Converged, no pod is pending: the agents' set of them is empty.
                options=RenderOptions(isolate_new_pods=bool(state.get("isolate_new_pods"))),
            )
            try:
                diff = applier.verify(applier.desire(rules, sets))
            except (CommandError, RefusedError) as exc:
                diff = [str(exc)]
            if diff:
                out.append(f"node {node}: the kernel differs ({len(diff)}): {diff[0]}")
        return out

    def _service_problems(self, state: Mapping[str, Any], pods: list[Pod]) -> list[str]:
        """EndpointSlices written and every node's kube-proxy rules current (the stand-ins).

        The stand-ins publish a digest of the Service and EndpointSlice versions their
        last complete pass programmed; it must equal the API's, and every slice the
        EndpointSlice controller should write must be written.
        """
        if not state.get("services"):
            return []  # a sandbox from before the stand-ins
        services = self.api.list("Service")
        slices = self.api.list("EndpointSlice")
        out: list[str] = []
        written = {object_key(o) for o in slices}
        for obj in services:
            try:
                service = parse_service(obj)
            except InvalidObjectError:
                continue
            for body in desired_slices(service, pods):
                if f"{service.namespace}/{body['metadata']['name']}" not in written:
                    out.append(f"the EndpointSlices of service {service.key} are not written yet")
                    break
        if out:
            return out
        status = self.status().get("services") or {}
        if status.get("digest") != content_digest(services, slices):
            out.append("kube-proxy has not programmed the current Services yet")
        return out

    def _published_problems(self, compiled: CompiledCluster) -> list[str]:
        out: list[str] = []
        published = {o["metadata"]["name"]: o for o in self.api.list("NodeRuleSet")}
        by_node = {str((o.get("spec") or {}).get("node")): o for o in published.values()}
        for node, rules in compiled.node_rule_sets.items():
            obj = by_node.get(node)
            if obj is None:
                out.append(f"NodeRuleSet for {node} is not published yet")
                continue
            try:
                same = node_rule_set_from_dict(obj.get("spec")) == rules
            except ValueError:
                same = False
            if not same:
                out.append(f"NodeRuleSet {node} is not up to date")
                continue
            status = obj.get("status") or {}
            generation = obj["metadata"].get("generation")
            if status.get("applied") is not True or status.get("appliedGeneration") != generation:
                out.append(f"NodeRuleSet {node}: the agent has not applied generation {generation}")
        for node, obj in by_node.items():
            if node not in compiled.node_rule_sets and not _empty_rule_set(obj):
                # The controller keeps an empty rule set for every Node (a node whose
                # pods all left has one); the engine compiles none for it.
                out.append(f"NodeRuleSet {node} is stale")
        peer_sets = {o["metadata"]["name"]: o for o in self.api.list("PeerSet")}
        for name, ps in compiled.peer_sets.items():
            obj = peer_sets.get(name)
            try:
                same = obj is not None and peer_set_from_dict(obj.get("spec")) == ps
            except ValueError:
                same = False
            if not same:
                out.append(f"PeerSet {name} is not up to date")
        for name in peer_sets:
            if name not in compiled.peer_sets:
                out.append(f"PeerSet {name} is stale")
        return out

    def wait_converged(self, timeout: float = 30.0) -> Converged:
        """Wait until every node enforces the API's current objects (see :meth:`problems`)."""
        start = time.monotonic()
        checks = 0
        last: list[str] = []
        while True:
            checks += 1
            last = self.problems()
            if not last:
                return Converged(time.monotonic() - start, checks)
            if time.monotonic() - start > timeout:
                raise SandboxError(f"not converged after {timeout:.0f} s: " + "; ".join(last[:5]))
            time.sleep(0.05)

    # ------------------------------------------------------------------ probes

    def probe(
        self,
        probes: Sequence[tuple[str, str, int, str]],
        timeout: float = PROBE_TIMEOUT,
    ) -> list[bool | None]:
        """Real packets: ``(source, dst_ip, port, protocol)`` each, in parallel.

        A source is a pod (``ns/name``), ``node:NAME`` or ``external:NAME``. True: it
        answered; False: refused or timed out; None: not measured (an unknown source,
        no such protocol in this kernel): unknown, never a denial.
        """
        return self.probe_explained(probes, timeout)[0]

    def probe_explained(
        self,
        probes: Sequence[tuple[str, str, int, str]],
        timeout: float = PROBE_TIMEOUT,
    ) -> tuple[list[bool | None], list[str | None]]:
        """:meth:`probe`, and for each None the supervisor's reason (else None)."""
        if not probes:
            return [], []
        request = {"op": "probe", "probes": [list(p) for p in probes], "timeout": timeout}
        answer = control_call(self.layout, request, timeout=timeout * 4 + 30)
        results: list[bool | None] = list(answer["results"])
        # A supervisor started by an older stockade sends no reasons.
        reasons: list[str | None] = list(answer.get("reasons") or [None] * len(results))
        reasons = [
            (r or "the supervisor gave no reason") if ok is None else None
            for ok, r in zip(results, reasons, strict=True)
        ]
        return results, reasons

    def probe_replies(
        self,
        probes: Sequence[tuple[str, str, int, str]],
        timeout: float = PROBE_TIMEOUT,
    ) -> list[tuple[bool | None, str | None]]:
        """:meth:`probe` with what answered: ``(result, reply)``, reply ``ns/name`` of a pod.

        Through a Service the reply names the backend kube-proxy picked, so a test can
        check that the connection reached the pod it judged.
        """
        if not probes:
            return []
        request = {"op": "probe", "probes": [list(p) for p in probes], "timeout": timeout}
        answer = control_call(self.layout, request, timeout=timeout * 4 + 30)
        results: list[bool | None] = list(answer["results"])
        replies: list[str | None] = list(answer.get("replies") or [None] * len(results))
        return list(zip(results, replies, strict=True))

    def unmeasurable(self, protocol: str) -> str | None:
        """Why no probe over ``protocol`` can be made in this sandbox at all (None: it can).

        The supervisor finds out at start whether the kernel has SCTP sockets.
        """
        state = self.layout.read_state() or {}
        if protocol.upper() == "SCTP" and state.get("has_sctp") is False:
            return "this kernel has no SCTP sockets"
        return None

    def probe_matrix(
        self, port: int = 80, protocol: str = "TCP", family: int | None = None
    ) -> ProbeMatrix:
        """Who reaches whom, from real packets between every ordered pair of pods.

        The pods are the engine's (:meth:`Cluster.active_pods`); each probe goes to
        the destination's address of the source's family, as ``stockade matrix``.
        A cell is None when it could not be measured (see :meth:`measure_matrix`
        for why); callers must not read None as denied.
        """
        return self.measure_matrix(port, protocol, family).matrix

    def measure_matrix(
        self, port: int = 80, protocol: str = "TCP", family: int | None = None
    ) -> ProbeReport:
        """:meth:`probe_matrix` with the reason for every unknown cell."""
        cluster = self.snapshot().cluster
        return self._probe_pods(cluster.active_pods(), port, protocol.upper(), family)

    def _probe_pods(
        self, pods: Sequence[Pod], port: int, protocol: str, family: int | None
    ) -> ProbeReport:
        jobs: list[tuple[str, str, int, str]] = []
        where: list[tuple[str, str]] = []
        report = ProbeReport({s.key: {} for s in pods})
        matrix = report.matrix
        # A pod whose address another pod owns (stockade.ownership) has no path of its
        # own: probing its address would measure the owner. Contested pods are probed.
        owners, _ = resolve(pods)
        for src in pods:
            fam = family or ipaddress.ip_address(src.ips[0]).version
            for dst in pods:
                if not all(_uses(owners[p.key]) for p in (src, dst)):
                    matrix[src.key][dst.key] = False
                    continue
                ip = next((i for i in dst.ips if ipaddress.ip_address(i).version == fam), None)
                if ip is None or not any(ipaddress.ip_address(i).version == fam for i in src.ips):
                    # No address of the family at one end: no path exists, as the
                    # engine says too (stockade matrix --family); not a probe.
                    matrix[src.key][dst.key] = False
                    continue
                jobs.append((src.key, ip, port, protocol))
                where.append((src.key, dst.key))
        missing = self.unmeasurable(protocol)
        if missing is not None:
            # Nothing to send: every probe would be unknown for the same reason.
            results: list[bool | None] = [None] * len(jobs)
            reasons: list[str | None] = [missing] * len(jobs)
        else:
            results, reasons = self.probe_explained(jobs)
        for (s, d), ok, why in zip(where, results, reasons, strict=True):
            matrix[s][d] = ok
            if ok is None:
                report.unknown[(s, d)] = why or "not measured"
        return report

    def matrix(self, port: int, protocol: str = "TCP") -> ProbeMatrix:
        """The e2e driver protocol's name for :meth:`probe_matrix` (None: unknown)."""
        return self.probe_matrix(port, protocol)

    def serving(self) -> dict[str, set[tuple[int, str]]]:
        """What each running pod answers on, as the kubelet stand-in serves it."""
        pods = self.status().get("pods") or {}
        return {k: {(int(p), str(proto)) for p, proto in v["serving"]} for k, v in pods.items()}

    def expected_matrix(
        self, port: int = 80, protocol: str = "TCP", family: int | None = None
    ) -> Matrix:
        """The engine's prediction (``Dataplane``) for the API's current objects.

        A destination that does not listen on the port refuses whatever policy says,
        so the prediction is: policy allows *and* the destination serves the port.
        """
        from stockade.verdict import Dataplane  # noqa: PLC0415

        cluster = self.snapshot().cluster
        engine = Dataplane(cluster).matrix(port, protocol.upper(), family=family)
        serving = self.serving()
        proto = protocol.upper()
        return {
            s: {d: ok and (port, proto) in serving.get(d, set()) for d, ok in row.items()}
            for s, row in engine.items()
        }


_UNKNOWN = "unknown (not measured)"


def _empty_rule_set(obj: Mapping[str, Any]) -> bool:
    try:
        rules = node_rule_set_from_dict(obj.get("spec"))
    except ValueError:
        return False
    return not (
        rules.pods
        or rules.policies
        or rules.peer_sets
        or rules.contested_ips
        or getattr(rules, "cluster_policies", ())
    )


def _word(matrix: Mapping[str, Mapping[str, bool | None]], src: str, dst: str) -> str:
    row = matrix.get(src, {})
    if dst not in row:
        return "missing"
    ok = row[dst]
    return _UNKNOWN if ok is None else "allowed" if ok else "denied"


def _uses(pod: Pod) -> bool:
    """Whether a pod has an address of its own to be probed at (owned or contested)."""
    return bool(pod.ips or pod.contested_ips)


def differences(
    real: Mapping[str, Mapping[str, bool | None]],
    expected: Mapping[str, Mapping[str, bool | None]],
) -> list[str]:
    """One line per pair where real packets and the prediction disagree.

    An unknown cell (None: not measured) is always listed, whatever the other side
    says: it is never a match.
    """
    lines: list[str] = []
    for src in sorted(set(real) | set(expected)):
        for dst in sorted(set(real.get(src, {})) | set(expected.get(src, {}))):
            got, want = _word(real, src, dst), _word(expected, src, dst)
            if got != want or _UNKNOWN in (got, want):
                lines.append(f"{src} -> {dst}: real packets {got}, engine {want}")
    return lines


__all__ = [
    "Converged",
    "ProbeMatrix",
    "ProbeReport",
    "Sandbox",
    "SandboxError",
    "differences",
    "process_start",
]
