"""The sandbox supervisor: one long-running process that owns the whole sandbox.

``python -m stockade_lab.sandbox.supervisor --state-dir DIR --nodes N [--dual-stack]``
(started in the background by ``stockade sandbox up``):

- builds the network with :class:`stockade_lab.netlab.Lab` (it is the lab's creator, so a
  crashed supervisor's namespaces are removed by the next ``up``/``down``);
- starts the API server emulator, the real controller and one real agent per node
  as child processes (each recorded under ``pids/``, each started through
  ``setpriv --pdeathsig KILL`` so it dies with the supervisor even on SIGKILL);
- runs the kubelet stand-in (:mod:`stockade_lab.sandbox.kubelet`) and the pods'
  servers in its own threads: a pod's sockets must live in a process that lasts;
- while the agent has no API mode, bridges the API to file-mode agents (see
  :class:`FileBridge`);
- answers the control socket (probe, status, add-node, restarts, shutdown).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from stockade.agent.applier import Applier, RefusedError
from stockade.agent.backend import Backend, Tools
from stockade.agent.executor import CommandError, SubprocessExecutor
from stockade.crd import cluster_network_policy_crd, node_rule_set_crd, peer_set_crd
from stockade.crd_isolation import isolation_policy_crd
from stockade.kube import NODE_RULE_SETS, NODES, PEER_SETS, KubeClient, KubeConfig, KubeError
from stockade.kube import Resource as KubeResource
from stockade.ruleset import node_rule_set_from_dict, peer_set_from_dict
from stockade_lab.netlab import Host, Lab, NetlabError, Node, in_netns
from stockade_lab.processes import process_start
from stockade_lab.sandbox import containers
from stockade_lab.sandbox.common import (
    SERVE_PORTS_DEFAULT,
    JsonObject,
    Layout,
    check_node_labels,
    forget_process,
    kubelet_node_labels,
    record_process,
    terminate,
    write_json,
)
from stockade_lab.sandbox.kubelet import Kubelet
from stockade_lab.sandbox.servicectl import ServiceStandIns

log = logging.getLogger("stockade_lab.sandbox")

EXTERNALS: tuple[tuple[str, str, str], ...] = (
    ("ext-1", "203.0.113.10", "2001:db8::10"),
    ("ext-2", "203.0.113.11", "2001:db8::11"),
)
BACKEND: Backend = "nft"
# The emulator's Service range (its --service-cidr) and every pod address of the
# sandbox (kube-proxy's --cluster-cidr: sources outside it are masqueraded).
SERVICE_CIDRS = {4: "10.96.0.0/16", 6: "fd00:10:96::/112"}
CLUSTER_CIDRS = {4: "10.244.0.0/16", 6: "fd00:10:244::/48"}
CRDS = KubeResource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CRD", False)


def pod_cidrs(index: int, dual_stack: bool) -> tuple[str, str | None]:
    """The pod CIDRs of the node with this index (1, 2, ...)."""
    return f"10.244.{index}.0/24", (f"fd00:10:244:{index}::/64" if dual_stack else None)


def console_script(name: str, module: str) -> list[str]:
    """The command of an entry point: the script next to this Python, else ``-m``."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def agent_has_api_mode() -> bool:
    """Whether ``stockade-agent run`` takes ``--kubeconfig`` (the API mode)."""
    from stockade.agent.cli import build_parser  # noqa: PLC0415

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            run = action.choices.get("run")
            if run is not None:
                return any("--kubeconfig" in a.option_strings for a in run._actions)
    return False


class Supervisor:
    """Everything the sandbox runs, owned by one process."""

    def __init__(
        self,
        layout: Layout,
        nodes: int,
        dual_stack: bool,
        serve_ports: Sequence[int],
        agent_mode: str,
        isolate_new_pods: bool = False,
        image: str | None = None,
    ) -> None:
        self.layout = layout
        # Image mode (stockade_lab.sandbox.containers): agents and controller as containers.
        self.image = image
        self.relays: list[asyncio.AbstractServer] = []
        # Process name -> the name of its container (image mode).
        self.containers: dict[str, str] = {}
        self.isolate_new_pods = isolate_new_pods
        self.node_count = nodes
        self.dual_stack = dual_stack
        self.serve_ports = tuple(serve_ports)
        self.agent_mode = agent_mode
        self.lab: Lab | None = None
        self.labx = ThreadPoolExecutor(1, thread_name_prefix="lab")
        self.probex = ThreadPoolExecutor(128, thread_name_prefix="probe")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.state: JsonObject = {
            "pid": os.getpid(),
            "start": process_start(os.getpid()),
            "phase": "starting the supervisor",
            "dual_stack": dual_stack,
            "nodes": {},
            "externals": {},
            "agent_mode": agent_mode,
            "isolate_new_pods": isolate_new_pods,
            "image": image,
            "serve_ports": list(self.serve_ports),
        }
        self.stop = asyncio.Event()
        self.client: KubeClient | None = None
        self.kubelet: Kubelet | None = None
        self.services: ServiceStandIns | None = None
        self.bridge: FileBridge | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.next_index = 1

    # ------------------------------------------------------------------ state

    def phase(self, text: str) -> None:
        log.info("%s", text)
        self.state["phase"] = text
        write_json(self.layout.state, self.state)

    async def in_lab(self, func: Any, *args: Any) -> Any:
        """Run a Lab mutation on the one thread that mutates the lab."""
        return await asyncio.get_running_loop().run_in_executor(self.labx, func, *args)

    # ------------------------------------------------------------------ processes

    def start_process(self, name: str, argv: list[str]) -> None:
        """Start a child that dies with this process; log to ``logs/<name>.log``."""
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        logfile = open(self.layout.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        full = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        proc = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT
        )
        logfile.close()
        self.procs[name] = proc
        record_process(self.layout, name, proc.pid, argv)
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(argv))

    def stop_process(self, name: str) -> None:
        self.stop_processes([name])

    def stop_processes(self, names: Sequence[str]) -> None:
        """SIGTERM them together, SIGKILL what lingers after 1.5 s; reap; forget.

        (The controller needs about 5 s to exit on SIGTERM once kopf watches
        objects; it keeps no state worth the wait here.)
        """
        procs = {n: self.procs.pop(n) for n in names if n in self.procs}
        # A container outlives its podman client's SIGKILL: remove it for good.
        containers.remove([self.containers.pop(n) for n in names if n in self.containers])
        terminate({n: (p.pid, process_start(p.pid)) for n, p in procs.items()}, grace=1.5)
        for name, proc in procs.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
            forget_process(self.layout, name)

    def start_controller(self) -> None:
        """The controller: a process, or in image mode a container in node-1's namespace."""
        if self.image is None:
            self.start_process("controller", self.controller_argv())
            return
        assert self.lab is not None
        first = self.lab.nodes[min(self.lab.nodes)]
        argv = containers.podman_args(
            containers.read_manifest("controller.yaml"),
            image=self.image,
            name=self._container_name("controller"),
            netns=first.ns,
            host_dirs={},
            args=self._controller_args("/etc/stockade/kubeconfig"),
        )
        self.start_process("controller", self._with_kubeconfig(argv))

    def _container_name(self, process: str) -> str:
        name = f"{self.state.get('run_id', 'run')}-{process}"
        self.containers[process] = name
        return name

    def _controller_args(self, kubeconfig: str) -> list[str]:
        return [
            "--kubeconfig",
            kubeconfig,
            "--flush-interval",
            "50",
            "--metrics-port",
            "0",
            "--standalone",
        ]

    def _with_kubeconfig(self, argv: list[str]) -> list[str]:
        """Mount the sandbox's kubeconfig read-only where the container's args expect it."""
        at = argv.index("run") + 1
        mount = f"--volume={self.layout.kubeconfig}:/etc/stockade/kubeconfig:ro"
        return [*argv[:at], mount, *argv[at:]]

    async def relay_api(self, ns: str) -> None:
        """Listen on 127.0.0.1 in ``ns`` at the API server's port and relay to it.

        Containers in a sandbox namespace reach the API server (on the host's
        loopback) with the sandbox's own kubeconfig, unchanged, and no route leads
        from the namespace to the host's network.
        """
        server = str(
            yaml.safe_load(self.layout.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        )
        port = int(server.rsplit(":", 1)[1].strip("/"))
        with in_netns(ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        sock.setblocking(False)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(OSError):
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self.relays.append(await asyncio.start_server(handle, sock=sock))

    def controller_argv(self) -> list[str]:
        return [
            *console_script("stockade-controller", "stockade.controller.main"),
            *self._controller_args(str(self.layout.kubeconfig)),
        ]

    def agent_argv(self, node: Node) -> list[str]:
        base = [*console_script("stockade-agent", "stockade.agent.cli"), "run"]
        state_dir = self.layout.agent_dir(node.name)
        state_dir.mkdir(parents=True, exist_ok=True)
        common = ["--netns", node.ns, "--backend", BACKEND, "--node", node.name]
        if self.agent_mode == "api":
            return [
                *base,
                *common,
                "--kubeconfig",
                str(self.layout.kubeconfig),
                "--state-dir",
                str(state_dir),
                *(["--isolate-new-pods"] if self.isolate_new_pods else []),
            ]
        assert self.bridge is not None
        bundle = self.bridge.bundle_path(node.name)
        self.bridge.write_initial(node.name)
        return [*base, *common, "-f", str(bundle), "--poll-interval", "0.05"]

    # ------------------------------------------------------------------ building

    async def add_node(
        self, name: str | None = None, labels: Mapping[str, str] | None = None
    ) -> JsonObject:
        """A node: its namespace, servers, kube-proxy, Node object (labels, addresses), agent.

        ``labels`` are added to the Node's ``kubernetes.io/hostname`` and
        ``kubernetes.io/os`` (which they cannot replace).
        """
        assert self.lab is not None
        assert self.client is not None
        extra = check_node_labels(labels)
        name = name or f"node-{self.next_index}"
        if name in self.lab.nodes:
            raise ValueError(f"node {name} exists")
        index = self.next_index
        self.next_index += 1
        cidr4, cidr6 = pod_cidrs(index, self.dual_stack)
        lab = self.lab
        node: Node = await self.in_lab(lambda: lab.add_node(name, pod_cidr4=cidr4, pod_cidr6=cidr6))
        # Nodes answer on the default ports too (host-network pods live there).
        ports = [(p, proto) for p in self.serve_ports for proto in ("TCP", "UDP", "SCTP")]
        await self.in_lab(lambda: lab.serve(node, ports, reply=f"node {name}"))
        if self.kubelet is not None:
            self.kubelet.add_node(node)
        await self.add_proxy(node)
        addresses = [{"type": "InternalIP", "address": node.fabric_ip4}]
        if self.dual_stack:
            addresses.append({"type": "InternalIP", "address": node.fabric_ip6})
        addresses.append({"type": "Hostname", "address": name})
        cidrs = [c for c in (cidr4, cidr6) if c]
        body = {
            "metadata": {"name": name, "labels": {**extra, **kubelet_node_labels(name)}},
            "spec": {"podCIDR": cidr4, "podCIDRs": cidrs},
        }
        try:
            await self.client.create(NODES, body)
        except KubeError:
            # A Node object of that name exists already (made with kubectl before the
            # node): it keeps its labels, with the kubelet's and the ones asked for.
            await self.client.patch_merge(NODES, name, {"metadata": body["metadata"]})
        status = {
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        }
        await self.client.patch_status(NODES, name, status)
        info = {
            "ns": node.ns,
            "ip4": node.fabric_ip4,
            "ip6": node.fabric_ip6 if self.dual_stack else None,
            "cidr4": cidr4,
            "cidr6": cidr6,
        }
        self.state["nodes"][name] = info
        write_json(self.layout.state, self.state)
        if self.agent_mode == "file" and self.bridge is not None:
            self.bridge.nodes[name] = node
        if self.image is None:
            self.start_process(f"agent-{name}", self.agent_argv(node))
        else:
            await self.relay_api(node.ns)
            self.start_process(f"agent-{name}", self.agent_container_argv(node))
        return {"node": name, **info}

    async def add_proxy(self, node: Node) -> None:
        """kube-proxy on the node: a route to the Service range, then its rules.

        Programmed before the node's agent starts, as kube-proxy runs before a policy
        agent in a cluster: kube-proxy prepends its jumps to FORWARD when they are
        missing, and stockade then inserts its own jump above them.
        """
        if self.services is None:
            return
        assert self.lab is not None
        lab = self.lab
        routes = [["ip", "route", "replace", SERVICE_CIDRS[4], "dev", "eth0"]]
        if self.dual_stack:
            routes.append(["ip", "-6", "route", "replace", SERVICE_CIDRS[6], "dev", "eth0"])
        for argv in routes:
            await self.in_lab(lambda argv=argv: lab.run(node, argv))
        self.services.add_node(node.name, node.ns)
        await self.services.sync()

    def agent_container_argv(self, node: Node) -> list[str]:
        """``podman run`` of the agent in the node's namespace, as manifests/agent.yaml says."""
        assert self.image is not None
        state_dir = self.layout.agent_dir(node.name)
        state_dir.mkdir(parents=True, exist_ok=True)
        args = [
            "--node",
            node.name,
            "--backend",
            BACKEND,
            "--kubeconfig",
            "/etc/stockade/kubeconfig",
            "--state-dir",
            "/var/lib/stockade",
            *(["--isolate-new-pods"] if self.isolate_new_pods else []),
        ]
        argv = containers.podman_args(
            containers.read_manifest("agent.yaml"),
            image=self.image,
            name=self._container_name(f"agent-{node.name}"),
            netns=node.ns,
            host_dirs={"/var/lib/stockade": state_dir},
            args=args,
        )
        return self._with_kubeconfig(argv)

    async def add_external(self, name: str, ip4: str, ip6: str | None) -> None:
        host: Host = await self.in_lab(lambda: self.lab.add_external(name, ip4, ip6))  # type: ignore[union-attr]
        ports = [(p, proto) for p in self.serve_ports for proto in ("TCP", "UDP", "SCTP")]
        await self.in_lab(lambda: self.lab.serve(host, ports, reply=f"external {name}"))  # type: ignore[union-attr]
        self.state["externals"][name] = {"ns": host.ns, "ip4": ip4, "ip6": ip6}

    async def start_emulator(self) -> None:
        self.layout.kubeconfig.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "stockade_lab.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--kubeconfig",
            str(self.layout.kubeconfig),
        ]
        self.start_process("emulator", argv)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
                config = yaml.safe_load(self.layout.kubeconfig.read_text())
                if config["clusters"][0]["cluster"]["server"]:
                    break
            if self.procs["emulator"].poll() is not None:
                raise RuntimeError("the API server emulator exited; see logs/emulator.log")
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the API server emulator did not start within 20 s")
        self.client = KubeClient(KubeConfig.load(str(self.layout.kubeconfig)))
        # stockade's own CRDs (IsolationPolicy's included), and the ClusterNetworkPolicy
        # CRD (manifests/cnp-crd.yaml) so that `kubectl apply -f cnp.yaml` works and the
        # controller sees CNPs.
        crds = (node_rule_set_crd(), peer_set_crd(), isolation_policy_crd())
        for crd in (*crds, cluster_network_policy_crd()):
            await self.client.create(CRDS, crd)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            await self.build()
            # A probe request for a whole matrix of 100 pods is ~0.5 MB on one line;
            # asyncio's default line limit is 64 KiB.
            server = await asyncio.start_unix_server(
                self.serve_control, str(self.layout.control), limit=64 * 1024 * 1024
            )
            self.phase("ready")
            self.layout.ready.write_text(str(os.getpid()))
            await self.stop.wait()
            server.close()
        except Exception as exc:
            log.exception("sandbox failed")
            self.layout.failed.write_text(f"{type(exc).__name__}: {exc}\n")
        finally:
            await self.teardown()

    async def build(self) -> None:
        self.phase("creating the network (fabric and external hosts)")
        self.lab = await self.in_lab(lambda: Lab(run_id=self.state.get("run_id")))
        assert self.lab is not None
        self.state["run_id"] = self.lab.run_id
        self.state["has_sctp"] = self.lab.has_sctp
        for name, ip4, ip6 in EXTERNALS:
            await self.add_external(name, ip4, ip6 if self.dual_stack else None)
        self.phase("starting the API server")
        await self.start_emulator()
        assert self.client is not None
        self.kubelet = Kubelet(
            self.client, self.lab, self.in_lab, self.serve_ports, self.dual_stack
        )
        families = (4, 6) if self.dual_stack else (4,)
        self.services = ServiceStandIns(self.client, BACKEND, CLUSTER_CIDRS, families)
        await self.services.start()
        self.state["services"] = {
            "serviceCIDRs": [SERVICE_CIDRS[f] for f in families],
            "clusterCIDRs": [CLUSTER_CIDRS[f] for f in families],
        }
        if self.agent_mode == "file":
            self.bridge = FileBridge(self.client, self.layout)
        if self.image is None:
            self.phase("starting the controller")
            self.start_controller()
        for i in range(self.node_count):
            self.phase(f"creating node-{i + 1} and its agent")
            await self.add_node()
        if self.image is not None:
            self.phase(f"starting the controller from {self.image}")
            self.start_controller()
        self.phase("starting the kubelet stand-in")
        self.tasks.append(asyncio.create_task(self.kubelet.run(), name="kubelet"))
        self.tasks.append(asyncio.create_task(self.services.run(), name="services"))
        if self.bridge is not None:
            self.tasks.append(asyncio.create_task(self.bridge.run(), name="bridge"))

    async def teardown(self) -> None:
        self.state["phase"] = "stopping"
        with contextlib.suppress(OSError):
            write_json(self.layout.state, self.state)
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Everything that talks to the API first, all at once; then the API server.
        log.info("stopping the controller and the agents")
        self.stop_processes([n for n in self.procs if n != "emulator"])
        if self.image is not None:
            containers.remove_leftovers()
        for relay in self.relays:
            relay.close()
        log.info("stopping the API server")
        self.stop_processes(["emulator"])
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        if self.lab is not None:
            log.info("removing the namespaces")
            await self.in_lab(self.lab.close)
        log.info("stopped")
        self.layout.control.unlink(missing_ok=True)
        self.probex.shutdown(wait=False)
        self.labx.shutdown(wait=False)

    # ------------------------------------------------------------------ control socket

    async def serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            line = await reader.readline()
            request = json.loads(line)
            answer = await self.handle(request)
        except Exception as exc:
            log.exception("control request failed")
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        writer.write(json.dumps(answer).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def handle(self, request: JsonObject) -> JsonObject:
        op = request.get("op")
        if op == "status":
            return self.status()
        if op == "probe":
            answers = await self.probe(request["probes"], float(request["timeout"]))
            # "results" as ever (True/False/None); "reasons": why each None is unknown.
            return {
                "results": [a for a, _, _ in answers],
                "reasons": [r for _, r, _ in answers],
                "replies": [t for _, _, t in answers],
            }
        if op == "add_node":
            return await self.add_node(request.get("name"), request.get("labels"))
        if op == "restart_agent":
            node = str(request["node"])
            assert self.lab is not None
            if node not in self.lab.nodes:
                raise ValueError(f"no node {node}")
            self.stop_process(f"agent-{node}")
            where = self.lab.nodes[node]
            argv = (
                self.agent_argv(where) if self.image is None else self.agent_container_argv(where)
            )
            self.start_process(f"agent-{node}", argv)
            return {"restarted": f"agent-{node}"}
        if op == "uninstall":
            return await self.uninstall()
        if op == "restart_controller":
            self.stop_process("controller")
            self.start_controller()
            return {"restarted": "controller"}
        if op == "stop_controller":
            self.stop_process("controller")
            return {"stopped": "controller"}
        if op == "start_controller":
            if "controller" not in self.procs:
                self.start_controller()
            return {"started": "controller"}
        if op == "shutdown":
            self.stop.set()
            return {"stopping": True}
        raise ValueError(f"unknown request {op!r}")

    async def uninstall(self) -> JsonObject:
        """What uninstalling stockade does to each node: stop its agent (which leaves
        its rules in place, fail static), then run ``stockade-agent cleanup`` there,
        as the cleanup DaemonSet of manifests/cleanup/ does."""
        assert self.lab is not None
        self.stop_processes([f"agent-{name}" for name in self.lab.nodes])
        cleaned: dict[str, str] = {}
        for name, node in self.lab.nodes.items():
            argv = [
                *console_script("stockade-agent", "stockade.agent.cli"),
                "cleanup",
                "--netns",
                node.ns,
                "--backend",
                BACKEND,
            ]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"cleanup of {name} failed: {out.decode().strip()}")
            cleaned[name] = out.decode().strip()
        return {"cleaned": cleaned}

    def status(self) -> JsonObject:
        procs = {
            name: {"pid": p.pid, "running": p.poll() is None} for name, p in self.procs.items()
        }
        pods = self.kubelet.describe() if self.kubelet is not None else {}
        services = {
            **(self.state.get("services") or {}),
            **(self.services.describe() if self.services is not None else {}),
        }
        return {**self.state, "processes": procs, "pods": pods, "services": services}

    async def probe(
        self, probes: list[list[Any]], timeout: float
    ) -> list[tuple[bool | None, str | None, str | None]]:
        """Probe ``[src, dst_ip, port, protocol]`` in parallel.

        Each answer is ``(result, reason, reply)``: True answered, False refused or
        timed out, None not measured, with ``reason`` saying why (an unknown source, a
        protocol this kernel lacks, a probe that could not be made). None is never a
        denial. ``reply`` is what answered (a pod's ``ns/name``): through a Service it
        names the backend kube-proxy picked.
        """
        assert self.lab is not None
        assert self.kubelet is not None
        lab = self.lab
        places: list[str | None] = [self.kubelet.namespace_of(str(p[0])) for p in probes]

        def one(
            src: str, ns: str | None, dst: str, port: int, proto: str
        ) -> tuple[bool | None, str | None, str | None]:
            if ns is None:
                why = f"{src} is not a running pod, node or external host of the sandbox"
                return None, why, None
            if proto == "SCTP" and not lab.has_sctp:
                return None, "this kernel has no SCTP sockets", None
            try:
                reply = lab.ask(ns, dst, port, proto, timeout)
            except (NetlabError, ValueError) as exc:
                return None, str(exc), None
            return reply is not None, None, reply

        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(
                self.probex, one, str(p[0]), ns, str(p[1]), int(p[2]), str(p[3]).upper()
            )
            for ns, p in zip(places, probes, strict=True)
        ]
        return list(await asyncio.gather(*futures))


class FileBridge:
    """Feeds file-mode agents from the API until the agent watches the API itself.

    Every 50 ms it lists NodeRuleSets and PeerSets, writes each node's bundle
    (its NodeRuleSet, or an empty one, plus the PeerSets it names) atomically where
    that node's ``stockade-agent run -f`` polls, and once the node's kernel matches
    the bundle (``Applier.verify``, read-only) writes the NodeRuleSet status the
    agent would write: ``applied``, ``appliedGeneration``, ``lastSync``, counts.
    """

    def __init__(self, client: KubeClient, layout: Layout) -> None:
        self.client = client
        self.layout = layout
        self.nodes: dict[str, Node] = {}
        self.written: dict[str, str] = {}
        self.pending: dict[str, tuple[JsonObject | None, str]] = {}

    def bundle_path(self, node: str) -> Path:
        return self.layout.agent_dir(node) / "bundle.yaml"

    def _write(self, node: str, text: str) -> None:
        path = self.bundle_path(node)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(path)
        self.written[node] = text

    def write_initial(self, node: str) -> None:
        if node not in self.written:
            self._write(node, yaml.safe_dump(_empty_rule_set(node)))

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bridge: sync failed; retrying")
                await asyncio.sleep(0.5)
            await asyncio.sleep(0.05)

    async def sync(self) -> None:
        rule_sets, _ = await self.client.list(NODE_RULE_SETS)
        peer_sets, _ = await self.client.list(PEER_SETS)
        by_node = {str((o.get("spec") or {}).get("node")): o for o in rule_sets}
        shards: dict[str, list[JsonObject]] = {}
        for ps in peer_sets:
            shards.setdefault(str((ps.get("spec") or {}).get("setName")), []).append(ps)
        for node in list(self.nodes):
            obj = by_node.get(node)
            docs: list[Any] = [obj if obj is not None else _empty_rule_set(node)]
            for name in (obj or {}).get("spec", {}).get("peerSets") or []:
                docs.extend(shards.get(name, []))
            clean = [{"kind": d.get("kind"), "spec": d.get("spec")} for d in docs]
            text = yaml.safe_dump_all(clean, sort_keys=True)
            if text != self.written.get(node):
                self._write(node, text)
                self.pending[node] = (obj, text)
        for node, (obj, text) in list(self.pending.items()):
            if obj is None:
                self.pending.pop(node)
                continue
            matches = await asyncio.get_running_loop().run_in_executor(
                None, _kernel_matches, self.nodes[node].ns, text
            )
            if matches and self.pending.get(node, (None, ""))[1] == text:
                self.pending.pop(node)
                spec = obj.get("spec") or {}
                status = {
                    "applied": True,
                    "appliedGeneration": (obj.get("metadata") or {}).get("generation"),
                    "lastSync": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "policies": len(spec.get("policies") or []),
                    "pods": len(spec.get("pods") or []),
                }
                with contextlib.suppress(KubeError):
                    await self.client.patch_status(NODE_RULE_SETS, obj["metadata"]["name"], status)


def _empty_rule_set(node: str) -> JsonObject:
    return {
        "kind": "NodeRuleSet",
        "spec": {"node": node, "pods": [], "policies": [], "peerSets": []},
    }


def _kernel_matches(ns: str, text: str) -> bool:
    """Whether the kernel of ``ns`` holds exactly the rendering of a bundle."""
    docs = list(yaml.safe_load_all(text))
    node = node_rule_set_from_dict(docs[0]["spec"])
    sets: dict[str, list[Any]] = {}
    for doc in docs[1:]:
        ps = peer_set_from_dict(doc["spec"])
        sets.setdefault(ps.set_name, []).append(ps)
    applier = Applier(SubprocessExecutor(netns=ns), netns=ns, tools=Tools(BACKEND))
    try:
        return not applier.verify(applier.desire(node, sets))
    except (CommandError, RefusedError):
        return False


def _ports(text: str) -> list[int]:
    ports = [int(p) for p in text.split(",") if p.strip()]
    for p in ports:
        if not 1 <= p <= 65535:
            raise argparse.ArgumentTypeError(f"bad port {p}")
    return ports


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the supervisor process."""
    parser = argparse.ArgumentParser(prog="python -m stockade_lab.sandbox.supervisor")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--dual-stack", action="store_true")
    parser.add_argument("--serve-ports", type=_ports, default=list(SERVE_PORTS_DEFAULT))
    parser.add_argument("--agent-mode", choices=("auto", "api", "file"), default="auto")
    parser.add_argument("--isolate-new-pods", action="store_true")
    parser.add_argument("--image", default=None, help="run agents and controller from IMAGE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    mode = args.agent_mode
    if mode == "auto":
        mode = "api" if agent_has_api_mode() else "file"
    layout = Layout(args.state_dir)
    ipaddress.ip_address("127.0.0.1")  # the API server listens on loopback only
    if args.isolate_new_pods and mode != "api":
        parser.error("--isolate-new-pods needs the agents' API mode")
    if args.image and mode != "api":
        parser.error("--image needs the agents' API mode")
    supervisor = Supervisor(
        layout,
        args.nodes,
        args.dual_stack,
        args.serve_ports,
        mode,
        args.isolate_new_pods,
        args.image,
    )
    asyncio.run(supervisor.run())
    return 1 if layout.failed.exists() else 0


if __name__ == "__main__":
    sys.exit(main())
