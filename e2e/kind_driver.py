"""The kind driver: the end-to-end scenarios against a real cluster, through kubectl.

Needs the cluster ``e2e/kind/up.sh`` makes (kind cluster ``stockade``, context
``kind-stockade``; ``STOCKADE_KIND_CLUSTER`` / ``STOCKADE_KIND_CONTEXT`` choose
others) with stockade installed, and the two external hosts it starts (docker
containers ``stockade-ext-1``/``-2`` on kind's network). Everything goes through
``kubectl --context <that context>``, so no other cluster is ever touched:

- the model's pods (:mod:`e2e.cluster_model`) are created with ``nodeName`` set to the kind
  workers: ``node-1`` is ``<cluster>-worker``, ``node-2`` is ``<cluster>-worker2``;
- probes are ``kubectl exec <pod> -- /agnhost connect IP:PORT --protocol=...
  --timeout=1s`` as the upstream suite runs them; a denial is confirmed by a second
  probe, and a matrix runs its probes in parallel;
- a change counts as enforced once every NodeRuleSet reports its observed
  generation applied, after a short settle for the controller's coalescing
  (``STOCKADE_KIND_SETTLE`` seconds, default 2);
- SCTP is probed only when the nodes' kernel has it (``STOCKADE_SCTP=0/1`` decides).

Pods cannot be recreated on the same IP here (kind's IPAM chooses); ``add_node``
is not possible on a running kind cluster (skipped).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml

from e2e.cluster_model import (
    NAMESPACE_NAME_LABEL,
    NAMESPACES,
    POD_KEYS,
    model_objects,
    namespace_labels,
)
from e2e.driver import Doc, Matrix

SYSTEM_NAMESPACE = "stockade-system"
EXTERNAL = ("stockade-ext-1", "stockade-ext-2")
PROBE_CONTAINER = "cont-80-tcp"


class KindError(RuntimeError):
    """The cluster is missing, unreachable, or did not do what was asked in time."""


class KindDriver:
    """:class:`e2e.driver.ClusterDriver` over kubectl and a kind cluster."""

    def __init__(
        self,
        cluster: str = "stockade",
        context: str | None = None,
        *,
        settle: float = 2.0,
        timeout: float = 180.0,
        parallel: int = 12,
    ) -> None:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise KindError("kubectl is not installed; the kind driver drives the cluster with it")
        self._kubectl = kubectl
        self.cluster = cluster
        self.context = context or f"kind-{cluster}"
        self.settle = settle
        self.timeout = timeout
        self.parallel = parallel
        self._ips: dict[str, str] = {}
        self._docs: dict[str, Doc] = {}  # pods as applied (logical node names)
        nodes = self._json("get", "nodes", what="reach the cluster")
        workers = sorted(
            n["metadata"]["name"]
            for n in nodes["items"]
            if "node-role.kubernetes.io/control-plane" not in n["metadata"].get("labels", {})
        )
        if len(workers) < 2:
            raise KindError(f"{self.context}: needs two worker nodes, found {workers}")
        self.nodes = {"node-1": workers[0], "node-2": workers[1]}
        self._json("-n", SYSTEM_NAMESPACE, "get", "daemonset/stockade-agent", what="find stockade")
        self.sctp = self._detect_sctp(workers)
        self._external = self._external_hosts()

    # ------------------------------------------------------------------ plumbing

    def _run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [self._kubectl, "--context", self.context, *args]
        try:
            proc = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KindError(f"kubectl {' '.join(args)}: no answer in {timeout:.0f}s") from exc
        if check and proc.returncode != 0:
            raise KindError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def _json(self, *args: str, what: str = "") -> Any:
        proc = self._run(*args, "-o", "json", check=False)
        if proc.returncode != 0:
            hint = " (run e2e/kind/up.sh first)" if what else ""
            raise KindError(
                f"cannot {what or 'run kubectl'} with context {self.context}{hint}: "
                f"{proc.stderr.strip()}"
            )
        return json.loads(proc.stdout)

    def _detect_sctp(self, workers: Sequence[str]) -> bool:
        forced = os.environ.get("STOCKADE_SCTP")
        if forced in ("0", "1"):
            return forced == "1"
        docker = shutil.which("docker")
        if docker is None:
            return False
        for node in workers:
            probe = [docker, "exec", node, "test", "-d", "/proc/sys/net/sctp"]
            if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
                return False
        return True

    def _external_hosts(self) -> dict[str, str]:
        docker = shutil.which("docker")
        if docker is None:
            raise KindError("docker is not installed; the external hosts run in docker")
        hosts: dict[str, str] = {}
        for index, name in enumerate(EXTERNAL, start=1):
            fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
            proc = subprocess.run(
                [docker, "inspect", "-f", fmt, name], capture_output=True, text=True, check=False
            )
            ips = proc.stdout.split()
            if proc.returncode != 0 or not ips:
                raise KindError(f"external host {name} is not running: run e2e/kind/up.sh")
            hosts[f"ext-{index}"] = ips[0]
        return hosts

    def _to_cluster(self, doc: Doc) -> Doc:
        """A model object as the cluster takes it: kind node names, SCTP if supported."""
        out = copy.deepcopy(doc)
        if out.get("kind") == "Pod":
            spec = out.setdefault("spec", {})
            spec["nodeName"] = self.nodes.get(spec.get("nodeName", ""), spec.get("nodeName"))
            if not self.sctp:
                spec["containers"] = [
                    c
                    for c in spec.get("containers", [])
                    if all(p.get("protocol") != "SCTP" for p in c.get("ports", []))
                ]
        return out

    def _set_labels(
        self, kind: str, name: str, namespace: str | None, labels: dict[str, str]
    ) -> None:
        ns = ["-n", namespace] if namespace else []
        current = self._json(*ns, "get", kind, name)["metadata"].get("labels") or {}
        changes = [f"{k}={v}" for k, v in sorted(labels.items()) if current.get(k) != v]
        changes += [f"{k}-" for k in sorted(current) if k not in labels]
        if changes:
            self._run(*ns, "label", "--overwrite", kind, name, *changes)

    def _wait_pods_ready(self, keys: Sequence[str]) -> None:
        by_ns: dict[str, list[str]] = {}
        for key in keys:
            ns, name = key.split("/")
            by_ns.setdefault(ns, []).append(f"pod/{name}")
        for ns, pods in by_ns.items():
            self._run(
                "-n",
                ns,
                "wait",
                "--for=condition=Ready",
                *pods,
                f"--timeout={int(self.timeout)}s",
                timeout=self.timeout + 10,
            )

    def _enforced(self) -> None:
        """Wait until every NodeRuleSet reports its current generation applied."""
        time.sleep(self.settle)
        deadline = time.monotonic() + self.timeout
        behind: list[str] = []
        while time.monotonic() < deadline:
            items = self._json("get", "noderulesets")["items"]
            behind = []
            for rs in items:
                status = rs.get("status") or {}
                generation = rs["metadata"].get("generation")
                if not status.get("applied") or status.get("observedGeneration") != generation:
                    behind.append(f"{rs['metadata']['name']}: {status.get('error') or 'pending'}")
            if not behind:
                return
            time.sleep(0.5)
        raise KindError(f"rule sets not applied in {self.timeout:.0f}s: {'; '.join(behind)}")

    # ------------------------------------------------------------------ the protocol

    @property
    def name(self) -> str:
        """``kind``."""
        return "kind"

    def supports_protocol(self, protocol: str) -> bool:
        """TCP and UDP; SCTP when the nodes' kernel has it."""
        return protocol in ("TCP", "UDP") or (protocol == "SCTP" and self.sctp)

    def reset(self) -> None:
        """No policy in x, y, z; model labels; exactly the model's pods, all Ready."""
        model = model_objects(sctp=self.sctp)
        namespaces = [d for d in model if d["kind"] == "Namespace"]
        self._apply_docs(namespaces)
        for ns in NAMESPACES:
            self._run("-n", ns, "delete", "networkpolicy", "--all", "--wait=true")
            self._set_labels("namespace", ns, None, namespace_labels(ns))
        wanted = {
            f"{d['metadata']['namespace']}/{d['metadata']['name']}": d
            for d in model
            if d["kind"] == "Pod"
        }
        present = set()
        for ns in NAMESPACES:
            for pod in self._json("-n", ns, "get", "pods")["items"]:
                key = f"{ns}/{pod['metadata']['name']}"
                if key not in wanted or pod["metadata"].get("deletionTimestamp"):
                    self._run("-n", ns, "delete", "pod", pod["metadata"]["name"], "--wait=true")
                    self._ips.pop(key, None)
                else:
                    present.add(key)
        for key in sorted(present):
            ns, name = key.split("/")
            self._set_labels("pod", name, ns, wanted[key]["metadata"]["labels"])
        missing = [wanted[k] for k in sorted(set(wanted) - present)]
        if missing:
            self._apply_docs(missing)
        self._docs = {k: copy.deepcopy(d) for k, d in wanted.items()}
        self._wait_pods_ready(POD_KEYS)
        self._enforced()

    def _apply_docs(self, docs: Sequence[Doc]) -> None:
        text = yaml.safe_dump_all([self._to_cluster(d) for d in docs])
        proc = self._run("apply", "-f", "-", stdin=text, check=False)
        if proc.returncode != 0:
            raise ValueError(proc.stderr.strip())

    def apply(self, objects: list[Doc]) -> None:
        """``kubectl apply``; labels of Pods and Namespaces then set exactly; wait."""
        self._apply_docs(objects)
        pods = []
        for doc in objects:
            meta = doc.get("metadata") or {}
            if doc.get("kind") == "Namespace":
                labels = dict(meta.get("labels") or {})
                labels[NAMESPACE_NAME_LABEL] = meta["name"]
                self._set_labels("namespace", meta["name"], None, labels)
            elif doc.get("kind") == "Pod":
                key = f"{meta.get('namespace', 'default')}/{meta['name']}"
                self._set_labels("pod", meta["name"], meta.get("namespace"), meta.get("labels", {}))
                self._docs[key] = copy.deepcopy(doc)
                pods.append(key)
        if pods:
            self._wait_pods_ready(pods)
        self._enforced()

    def delete(self, objects: list[Doc]) -> None:
        """``kubectl delete`` each object; wait."""
        for doc in objects:
            meta = doc.get("metadata") or {}
            ns = ["-n", meta["namespace"]] if meta.get("namespace") else []
            kind = str(doc["kind"]).lower()
            self._run(*ns, "delete", kind, meta["name"], "--wait=true")
            if kind == "pod":
                key = f"{meta['namespace']}/{meta['name']}"
                self._ips.pop(key, None)
                self._docs.pop(key, None)
        self._enforced()

    def relabel_pod(self, key: str, labels: dict[str, str]) -> None:
        """``kubectl label`` to exactly ``labels``; wait."""
        ns, name = key.split("/")
        self._set_labels("pod", name, ns, labels)
        if key in self._docs:
            self._docs[key]["metadata"]["labels"] = dict(labels)
        self._enforced()

    def relabel_namespace(self, name: str, labels: dict[str, str]) -> None:
        """``kubectl label`` to exactly ``labels`` plus the name label; wait."""
        self._set_labels("namespace", name, None, {**labels, NAMESPACE_NAME_LABEL: name})
        self._enforced()

    def recreate_pod(self, key: str) -> None:
        """Delete the pod and create it again as it was (kind chooses its new IP)."""
        doc = self._docs[key]
        ns, name = key.split("/")
        self._run("-n", ns, "delete", "pod", name, "--wait=true")
        self._ips.pop(key, None)
        self._apply_docs([doc])
        self._wait_pods_ready([key])
        self._enforced()

    def restart_agent(self, node: str) -> None:
        """Delete the agent pod of ``node``; wait for its replacement and enforcement."""
        self._run(
            "-n",
            SYSTEM_NAMESPACE,
            "delete",
            "pod",
            "-l",
            "app.kubernetes.io/name=stockade-agent",
            f"--field-selector=spec.nodeName={self.nodes.get(node, node)}",
            "--wait=true",
        )
        self._rollout("daemonset/stockade-agent")

    def restart_controller(self) -> None:
        """``kubectl rollout restart`` the controller; wait for it and enforcement."""
        self._run("-n", SYSTEM_NAMESPACE, "rollout", "restart", "deployment/stockade-controller")
        self._rollout("deployment/stockade-controller")

    def _rollout(self, what: str) -> None:
        self._run(
            "-n",
            SYSTEM_NAMESPACE,
            "rollout",
            "status",
            what,
            f"--timeout={int(self.timeout)}s",
            timeout=self.timeout + 10,
        )
        self._enforced()

    def add_node(self, name: str) -> None:
        """Not possible: kind cannot add a node to a running cluster."""
        raise NotImplementedError("kind cannot add a node to a running cluster")

    # ------------------------------------------------------------------ probes

    def pod_ip(self, key: str) -> str:
        """The pod's IP, from its status."""
        if key not in self._ips:
            ns, name = key.split("/")
            ip = self._json("-n", ns, "get", "pod", name)["status"].get("podIP")
            if not ip:
                raise KindError(f"pod {key} has no IP")
            self._ips[key] = ip
        return self._ips[key]

    def probe(self, src: str, dst_ip: str, port: int, protocol: str) -> bool:
        """``agnhost connect`` from ``src``; a denial is confirmed by a second try."""
        return self._connect(src, dst_ip, port, protocol) or self._connect(
            src, dst_ip, port, protocol
        )

    def _connect(self, src: str, dst_ip: str, port: int, protocol: str) -> bool:
        ns, name = src.split("/")
        target = f"[{dst_ip}]:{port}" if ":" in dst_ip else f"{dst_ip}:{port}"
        proc = self._run(
            "-n",
            ns,
            "exec",
            name,
            "-c",
            PROBE_CONTAINER,
            "--",
            "/agnhost",
            "connect",
            target,
            "--timeout=1s",
            f"--protocol={protocol.lower()}",
            check=False,
            timeout=30,
        )
        if proc.returncode == 0:
            return True
        said = proc.stdout + proc.stderr
        if any(word in said for word in ("TIMEOUT", "REFUSED", "OTHER")):
            return False
        raise KindError(f"probe {src} -> {target}/{protocol} failed to run: {said.strip()}")

    def matrix(self, port: int, protocol: str) -> Matrix:
        """Every ordered pair of the model's pods, probed in parallel."""
        keys = list(POD_KEYS)
        ips = {k: self.pod_ip(k) for k in keys}
        pairs = [(s, d) for s in keys for d in keys]
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            results = list(pool.map(lambda p: self.probe(p[0], ips[p[1]], port, protocol), pairs))
        out: Matrix = {s: {} for s in keys}
        for (src, dst), allowed in zip(pairs, results, strict=True):
            out[src][dst] = allowed
        return out

    def external_hosts(self) -> dict[str, str]:
        """The docker containers up.sh started on kind's network."""
        return dict(self._external)

    def close(self) -> None:
        """Leave the cluster as it is (down.sh deletes it)."""


def make_driver() -> KindDriver:
    """The driver for ``$STOCKADE_KIND_CLUSTER`` (default ``stockade``)."""
    return KindDriver(
        cluster=os.environ.get("STOCKADE_KIND_CLUSTER", "stockade"),
        context=os.environ.get("STOCKADE_KIND_CONTEXT") or None,
        settle=float(os.environ.get("STOCKADE_KIND_SETTLE", "2")),
    )
