"""Agent benchmarks: full apply, pod churn, unchanged apply and the packet path.

Run from the repository root, as root (everything happens in ``stk-*`` network
namespaces this run creates and removes; the host's namespace is never touched)::

    .venv/bin/python -m bench.agent                  # everything, about 12 minutes
    .venv/bin/python -m bench.agent --backends nft   # skip the legacy backend
    .venv/bin/python -m bench.agent --skip-packet    # no packet-path measurement
    .venv/bin/python -m bench.agent --packet-only    # measurements 4 and 5 only
    .venv/bin/python -m bench.agent --services 0     # no packet path through Services
    .venv/bin/python -m bench.agent --cnps 0         # NetworkPolicies only, no tiers
    .venv/bin/python -m bench.agent --isolation-only # the IsolationPolicy figures only

What is measured, each against a baseline measured in the same run:

1. a full :meth:`Applier.apply` of one node carrying ~2,000 policies and ~50,000
   set members (a synthetic cluster from :mod:`bench.synth` compiled for one
   node) into a fresh namespace, against ``ipset restore`` + ``iptables-restore
   --noflush`` of the same rendered text into a fresh namespace, per backend;
   render time (pure) and the reconcile time (apply minus render) separately;
2. pod churn: one remote pod's IP enters, then leaves, 10 peer sets; the apply must
   not call ``iptables-restore`` and should cost at most 1/100 of a full apply;
3. a second apply of an unchanged state: its time and kernel calls (0 expected);
4. the packet path between two pod namespaces of one node, with 1,000 policies on
   the node (10 of them selecting the server pod) against none: new TCP
   connections per second and bulk throughput (iperf3 when installed); the two
   sides are two labs alike, each keeping its rules, measured in turn;
5. the same through Services (``--services N``, 1,000 by default, 0 skips it): a
   fresh node of the same pods where the sandbox's kube-proxy stand-in
   (:func:`stockade_lab.sandbox.kubeproxy.render_proxy` and ``IptablesRunner``)
   programs N ClusterIP Services from ``10.96.0.0/16`` with their EndpointSlices
   (the measured one selects the server and sits in the middle of
   ``KUBE-SERVICES``; the others select the 330 dummy deployments, two backends
   each), then every connection goes to the measured Service's cluster IP, is
   DNATed in PREROUTING and judged in FORWARD. Its baseline is the no-policy figure
   with the same N Services programmed; the targets are those of measurement 4
   (new connections per second >= 90%, bulk throughput >= 95%).

With ``--cnps N`` (200 by default, 0 skips it), beside the NetworkPolicy-only
figures: measurement 1 again on the same cluster with N ClusterNetworkPolicies and
100 Node objects (:func:`full_params`), and measurement 4 again with N
ClusterNetworkPolicies on the packet-path node (:func:`packet_tiers`: the client's
SYN meets Admin, NetworkPolicy and Baseline rules); same targets.

With ``--isolation N`` (20 by default, 0 skips it; ``--isolation-only`` runs only
this): relabel churn (:func:`measure_isolation_churn`: a pod moved to another group
on a node with N IsolationPolicies, recompiled incrementally and applied; the apply
must not call ``iptables-restore``), and measurement 4 again with N
IsolationPolicies on top of the CNPs (:func:`packet_isolation`); same targets.

Figures are medians of a few repetitions, the two sides of each ratio interleaved.
Results go to ``bench/results/agent.json`` (``--output`` elsewhere); docs/performance.md
("Agent") explains the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import dataclasses
import functools
import gc
import io
import ipaddress
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from bench.engine import parse_all
from bench.provenance import describe, finish, provenance
from bench.synth import (
    GROUP_LABEL,
    NAME_LABEL,
    PROJECT_LABEL,
    Params,
    SynthCluster,
    generate,
    group_value,
)
from stockade.agent.applier import Applier, ApplyReport
from stockade.agent.backend import Backend, Tools
from stockade.agent.executor import SubprocessExecutor
from stockade.agent.iptables import Goto, SetMatch
from stockade.agent.render import RenderedNode, RenderOptions, render
from stockade.cluster import parse_input
from stockade.cnp import parse_cluster_network_policy
from stockade.compiler import Changes, Compiler, compile_cluster, compile_cluster_policy
from stockade.model import parse_pod
from stockade.ruleset import (
    CompiledPolicy,
    CompiledRule,
    LocalPod,
    NodeClusterPolicy,
    NodePolicy,
    NodeRuleSet,
    PeerMatch,
    PeerMember,
    PeerSelector,
    PeerSet,
    PortMatch,
    SelectorRequirement,
)
from stockade.services import (
    EndpointSlice,
    Service,
    desired_slices,
    parse_endpoint_slice,
    parse_service,
    service_backends,
)
from stockade_lab.netlab import Lab, Node, PodNet
from stockade_lab.sandbox.kubeproxy import ProxyNode, ProxyRules, render_proxy
from stockade_lab.sandbox.servicectl import IptablesRunner

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# The synthetic cluster of measurements 1-3: one node, so it carries every policy.
# With this seed it gives 2,001 policies and ~54,000 IPv4 set members on the node.
FULL_PARAMS = Params(pods=8_000, namespaces=200, nodes=1, policies=2_025)
CHURN_SETS = 10
# The tiered figures: the same cluster with 200 ClusterNetworkPolicies (Admin and
# Baseline, bench.synth) and 100 Node objects (the one node with pods, 99 without).
FULL_CNPS = 200
FULL_NODE_OBJECTS = 100

APPLY_TARGET = 1.5  # full apply / baseline, at most
CHURN_TARGET = 0.01  # pod churn apply / full apply, at most
CONN_TARGET = 0.90  # connections per second with policies / without, at least
THROUGHPUT_TARGET = 0.95  # bulk throughput with policies / without, at least

# The packet-path node: 1,000 policies, 10 of them select the server pod.
PACKET_POLICIES = 1_000
SERVER_POLICIES = 10
SERVER_PORT = 8080
IPERF_PORT = 5201
NODE_CIDR = "10.1.0.0/16"
SERVER_IP, CLIENT_IP, OTHER_IP = "10.1.0.2", "10.1.0.3", "10.1.0.4"
# With tiers (--cnps): 200 CNPs on the packet-path node; 10 Admin and 5 Baseline
# select the server, 10 Admin and 10 Baseline the client, the rest the dummy pods.
PACKET_CNPS = 200
SERVER_CNPS = 10
CLIENT_CNPS = 10

# The packet path through Services (measurement 5): 1,000 ClusterIP Services, each
# selecting pods of the packet-path node, programmed by the kube-proxy stand-in.
PACKET_SERVICES = 1_000
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_PORT = 80  # the measured Service's port to SERVER_PORT (and IPERF_PORT to itself)
CLUSTER_CIDR = NODE_CIDR  # kube-proxy's --cluster-cidr: the client is a pod, no masquerade
PACKET_NODE = "pp"

# The IsolationPolicy figures (--isolation N, 0 skips them). Relabel churn: a
# cluster of 10,000 pods on 20 nodes (the measured node has 500) with the CNPs and
# N IsolationPolicies grouping tenant pods by 1,000 values; one pod moves to
# another group (a remote pod, then a local subject), the Compiler recompiles
# incrementally and the applier applies the difference. Packet path: the tiered
# packet-path node with N IsolationPolicies whose subjects are its local pods.
ISOLATION_POLICIES = 20
# The relabels measured (bench keys and words). A remote pod, and a local pod moving
# into a value group the node has and keeps, are set members only (the target: no
# iptables call); a local pod that empties its group (most groups of the node are
# one pod) removes a variant, and its return adds it back: a rule change, reported.
ISOLATION_MOVES = {
    "remote": "a remote pod (peer only) to another group",
    "local_kept": "a local pod into a group the node has, its own kept",
    "local": "a local pod (subject) to another group, its own emptied",
}
ISOLATION_MEMBER_ONLY = ("remote", "local_kept")
ISO_PARAMS = Params(
    pods=10_000,
    namespaces=500,
    nodes=20,
    policies=2_000,
    cnps=FULL_CNPS,
    node_objects=FULL_NODE_OBJECTS,
    isolation_policies=ISOLATION_POLICIES,
    group_values=1_000,
)
# The packet-path node's pods in groups: the server and the client share one;
# each dummy deployment has its own; remote pods of every group fill the sets.
PACKET_GROUP_VALUES = 1_000
PACKET_REMOTE_PODS = 2_000

Shards = Mapping[str, Sequence[PeerSet]]


def median(values: Sequence[float]) -> float:
    """The median (``statistics.median``, typed)."""
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn`` took (after a garbage collection) and its result."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@dataclass
class TimedExecutor(SubprocessExecutor):
    """A :class:`SubprocessExecutor` that also adds up the seconds spent per tool."""

    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        """Run ``argv`` as the parent does; record how long it took."""
        start = time.perf_counter()
        try:
            return super().run(argv, stdin)
        finally:
            tool = argv[0] if argv[0] != "ipset" else f"ipset {argv[1]}"
            self.seconds[tool] = self.seconds.get(tool, 0.0) + time.perf_counter() - start

    def calls(self) -> int:
        """Every subprocess run so far (reads and writes)."""
        return len(self.log)


# ----------------------------------------------------------------------- namespaces


class Namespaces:
    """Bare namespaces for the apply measurements, named after the lab's run.

    ``stk-<run id>-b<n>``: the lab's run record covers them, so a crashed run's
    leftovers are removed by the next lab's start, like the lab's own.
    """

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.count = 0
        self.live: list[str] = []

    def create(self) -> str:
        """A new, empty network namespace."""
        self.count += 1
        name = f"stk-{self.lab.run_id}-b{self.count}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.live.append(name)
        return name

    def delete(self, name: str) -> None:
        """Remove one namespace made by :meth:`create`."""
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        self.live.remove(name)

    @contextlib.contextmanager
    def fresh(self) -> Iterator[str]:
        """A namespace for the ``with`` body, removed after it."""
        name = self.create()
        try:
            yield name
        finally:
            self.delete(name)

    def close(self) -> None:
        """Remove every namespace still alive."""
        for name in list(self.live):
            self.delete(name)


# ----------------------------------------------------------------------- the big node


@dataclass
class NodeState:
    """One node's rule set, its PeerSets and the rendering (rendered once, outside timing)."""

    node: NodeRuleSet
    peer_sets: dict[str, tuple[PeerSet, ...]]
    rendered: RenderedNode
    cluster: SynthCluster

    def shape(self) -> dict[str, int]:
        """Sizes of what the node carries."""
        out = {"policies": len(self.node.policies), "local_pods": len(self.node.pods)}
        out["cluster_policies"] = len(self.node.cluster_policies)
        out["peer_sets"] = len(self.peer_sets)
        for family in (4, 6):
            fam = self.rendered.family(family)
            out[f"v{family}_sets"] = len(fam.ipsets)
            out[f"v{family}_members"] = sum(len(s.members) for s in fam.ipsets)
            out[f"v{family}_chains"] = len(fam.chains)
            out[f"v{family}_rules"] = sum(len(c.rules) for c in fam.chains)
            out[f"v{family}_restore_bytes"] = len(fam.restore_text())
        return out


def full_params(cnps: int = 0) -> Params:
    """The cluster of measurements 1-3, with ``cnps`` ClusterNetworkPolicies."""
    if not cnps:
        return FULL_PARAMS
    return dataclasses.replace(FULL_PARAMS, cnps=cnps, node_objects=FULL_NODE_OBJECTS)


def big_node(options: RenderOptions, cnps: int = 0, params: Params | None = None) -> NodeState:
    """The synthetic one-node cluster of measurements 1-3, compiled and rendered.

    With ``cnps``, the cluster also has that many ClusterNetworkPolicies and
    :data:`FULL_NODE_OBJECTS` Node objects; the measured node is the one with pods.
    """
    cluster = generate(params or full_params(cnps))
    compiled = compile_cluster(parse_all(cluster.objects()))
    node = compiled.node_rule_sets[cluster.node_names[0]]
    by_set = compiled.by_set()
    peer_sets = {name: by_set[name] for name in node.peer_sets}
    return NodeState(node, peer_sets, render(node, peer_sets, options=options), cluster)


def with_churn_pod(state: NodeState, count: int) -> tuple[Shards, str, list[str]]:
    """The PeerSets with one new remote pod in ``count`` plain (hash:ip) sets."""
    ip = state.cluster.allocate_ip(0)
    plain = sorted(
        name for name, shards in state.peer_sets.items() if shards[0].selector.named_port is None
    )
    chosen = plain[:: max(1, len(plain) // count)][:count]
    member = PeerMember("bench/churn-pod", (ip,))
    changed: dict[str, tuple[PeerSet, ...]] = dict(state.peer_sets)
    for name in chosen:
        first, *rest = changed[name]
        changed[name] = (dataclasses.replace(first, members=(*first.members, member)), *rest)
    return changed, ip, chosen


def baseline_load(ex: SubprocessExecutor, rendered: RenderedNode, backend: Backend) -> None:
    """The baseline: the rendered sets and rules loaded raw, nothing compared."""
    tools = Tools(backend)
    ex.run(["ipset", "restore"], rendered.ipset_text(4) + rendered.ipset_text(6))
    ex.run([tools.restore(4), "--noflush"], rendered.restore_text(4))
    ex.run([tools.restore(6), "--noflush"], rendered.restore_text(6))


def new_applier(ns: str, backend: Backend, options: RenderOptions) -> Applier:
    """An applier for ``ns`` with its backend given (detection is a start-up cost)."""
    return Applier(TimedExecutor(netns=ns), netns=ns, options=options, tools=Tools(backend))


def measure_full(
    spaces: Namespaces,
    state: NodeState,
    backend: Backend,
    options: RenderOptions,
    repeats: int,
    console: Console,
) -> dict[str, Any]:
    """Measurement 1 for one backend: baseline and apply interleaved, fresh namespaces."""
    base: list[float] = []
    apply: list[float] = []
    reconcile: list[float] = []
    tools: list[dict[str, float]] = []
    report: ApplyReport | None = None
    for rep in range(repeats):
        with spaces.fresh() as ns:
            ex = SubprocessExecutor(netns=ns)
            seconds, _ = timed(functools.partial(baseline_load, ex, state.rendered, backend))
            base.append(seconds)
        with spaces.fresh() as ns:
            applier = new_applier(ns, backend, options)
            seconds, report = timed(functools.partial(applier.apply, state.node, state.peer_sets))
            assert isinstance(report, ApplyReport)
            assert report.changed
            apply.append(seconds)
            reconcile.append(report.seconds)
            assert isinstance(applier.executor, TimedExecutor)
            tools.append(dict(applier.executor.seconds))
            if rep == 0 and applier.verify():
                raise RuntimeError(f"{backend}: the kernel differs from the applied state")
        console.print(
            f"  {backend} #{rep + 1}: baseline {base[-1]:.2f} s, apply {apply[-1]:.2f} s "
            f"(reconcile {reconcile[-1]:.2f} s)"
        )
    assert report is not None
    per_tool = {k: median([t.get(k, 0.0) for t in tools]) for k in sorted(tools[-1])}
    return {
        "backend": backend,
        "baseline_s": median(base),
        "apply_s": median(apply),
        "reconcile_s": median(reconcile),
        "apply_over_baseline": median(apply) / median(base),
        "reconcile_over_baseline": median(reconcile) / median(base),
        "subprocess_s_by_tool": per_tool,
        "runs": {"baseline_s": base, "apply_s": apply, "reconcile_s": reconcile},
        "ipset_lines": report.ipset_lines,
        "iptables_restores": report.iptables_restores,
    }


def measure_render(state: NodeState, options: RenderOptions, repeats: int) -> dict[str, Any]:
    """Render time of the big node (pure: no kernel)."""
    times = [timed(lambda: render(state.node, state.peer_sets, options=options))[0]]
    times += [
        timed(lambda: render(state.node, state.peer_sets, options=options))[0]
        for _ in range(repeats - 1)
    ]
    return {"render_s": median(times), "runs": times}


def profile_apply(
    spaces: Namespaces, state: NodeState, backend: Backend, options: RenderOptions, top: int
) -> str:
    """cProfile of one full apply into a fresh namespace, by cumulative time."""
    with spaces.fresh() as ns:
        applier = new_applier(ns, backend, options)
        prof = cProfile.Profile()
        prof.enable()
        applier.apply(state.node, state.peer_sets)
        prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top // 2)
    return out.getvalue()


def measure_churn_and_unchanged(
    spaces: Namespaces,
    state: NodeState,
    backend: Backend,
    options: RenderOptions,
    repeats: int,
    console: Console,
) -> dict[str, Any]:
    """Measurements 2 and 3 on one node namespace holding the full state."""
    churned, ip, chosen = with_churn_pod(state, CHURN_SETS)
    with spaces.fresh() as ns:
        applier = new_applier(ns, backend, options)
        ex = applier.executor
        assert isinstance(ex, TimedExecutor)
        applier.apply(state.node, state.peer_sets)
        runs: dict[str, list[dict[str, Any]]] = {"add": [], "remove": [], "unchanged": []}
        steps: list[tuple[str, Shards]] = [("add", churned), ("remove", state.peer_sets)]
        for _ in range(repeats):
            for kind, peer_sets in steps:
                runs[kind].append(_one_apply(applier, ex, state.node, peer_sets, options))
        for _ in range(repeats):
            runs["unchanged"].append(_one_apply(applier, ex, state.node, state.peer_sets, options))
        if applier.verify():
            raise RuntimeError("after churn the kernel differs from the applied state")
        prof = cProfile.Profile()
        prof.enable()
        applier.apply(state.node, churned)
        prof.disable()
        applier.apply(state.node, state.peer_sets)
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(25)
    out: dict[str, Any] = {"pod_ip": ip, "sets": chosen, "profile_add": text.getvalue()}
    for kind, items in runs.items():
        out[kind] = {
            "apply_s": median([r["apply_s"] for r in items]),
            "render_s": median([r["render_s"] for r in items]),
            "reads_s": median([r["reads_s"] for r in items]),
            "subprocess_calls": max(r["subprocess_calls"] for r in items),
            "iptables_calls": max(r["iptables_calls"] for r in items),
            "conntrack_calls": max(r["conntrack_calls"] for r in items),
            "iptables_restores": max(r["iptables_restores"] for r in items),
            "netlink_calls": max(r["netlink_calls"] for r in items),
            "member_changes": max(r["member_changes"] for r in items),
            "changed": all(r["changed"] for r in items),
            "runs": [r["apply_s"] for r in items],
        }
        o = out[kind]
        console.print(
            f"  {kind}: {o['apply_s']:.3f} s (render {o['render_s']:.3f} s), "
            f"{o['subprocess_calls']} subprocesses, {o['iptables_restores']} iptables-restore, "
            f"{o['netlink_calls']} netlink calls"
        )
    return out


def _one_apply(
    applier: Applier,
    ex: TimedExecutor,
    node: NodeRuleSet,
    peer_sets: Shards,
    options: RenderOptions,
) -> dict[str, Any]:
    """One timed apply; what it cost in subprocesses and netlink calls."""
    render_s, _ = timed(lambda: render(node, peer_sets, options=options))
    log_before, netlink_before = len(ex.log), applier.netlink.calls
    seconds_before = dict(ex.seconds)
    seconds, report = timed(lambda: applier.apply(node, peer_sets))
    assert isinstance(report, ApplyReport)
    calls = ex.log[log_before:]
    reads = [k for k in ex.seconds if k.endswith("-save") or k == "ipset save"]
    return {
        "apply_s": seconds,
        "render_s": render_s,
        "reads_s": sum(ex.seconds[k] - seconds_before.get(k, 0.0) for k in reads),
        "changed": report.changed,
        "subprocess_calls": len(calls),
        "iptables_calls": sum(1 for argv in calls if "tables-" in argv[0]),
        "conntrack_calls": sum(1 for argv in calls if argv[0] == "conntrack"),
        "iptables_restores": report.iptables_restores,
        "netlink_calls": applier.netlink.calls - netlink_before,
        "member_changes": report.member_changes,
    }


# ----------------------------------------------------------------------- isolation: relabel churn


@dataclass
class IsolationNode:
    """One node of a cluster with IsolationPolicies, kept by an incremental Compiler."""

    compiler: Compiler
    name: str
    node: NodeRuleSet
    shards: dict[str, dict[str, PeerSet]]  # set name -> shard name -> shard
    cluster: SynthCluster
    pods: dict[str, dict[str, Any]]  # key -> the raw pod as last given

    def peer_sets(self) -> dict[str, tuple[PeerSet, ...]]:
        """The PeerSets the node names, their shards in order."""
        return {
            n: tuple(sorted(self.shards[n].values(), key=lambda ps: ps.shard))
            for n in self.node.peer_sets
        }

    def update(self, raw: dict[str, Any]) -> tuple[float, Changes]:
        """Upsert one object and flush: the seconds it took and what changed."""
        obj = parse_input(raw)
        start = time.perf_counter()
        self.compiler.upsert(obj)
        changes = self.compiler.flush()
        seconds = time.perf_counter() - start
        built = changes.nodes.get(self.name, self.node)
        assert built is not None
        self.node = built
        for shard_name, ps in changes.peer_sets.items():
            if ps is None:
                for by_shard in self.shards.values():
                    by_shard.pop(shard_name, None)
            else:
                self.shards.setdefault(ps.set_name, {})[shard_name] = ps
        return seconds, changes

    def local_groups(self) -> list[str]:
        """The group values of the node's pods, sorted."""
        return sorted(
            {
                p["metadata"]["labels"][GROUP_LABEL]
                for p in self.pods.values()
                if p["spec"]["nodeName"] == self.name and GROUP_LABEL in p["metadata"]["labels"]
            }
        )


def isolation_node(count: int) -> IsolationNode:
    """:data:`ISO_PARAMS` with ``count`` IsolationPolicies, loaded into a Compiler; the
    measured node is the first (every node has about the same number of pods)."""
    cluster = generate(dataclasses.replace(ISO_PARAMS, isolation_policies=count))
    compiler = Compiler()
    for obj in parse_all(cluster.objects()):
        compiler.upsert(obj)
    compiled = compiler.result()
    name = cluster.node_names[0]
    shards: dict[str, dict[str, PeerSet]] = {}
    for shard_name, ps in compiled.peer_sets.items():
        shards.setdefault(ps.set_name, {})[shard_name] = ps
    pods = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in cluster.pods}
    return IsolationNode(compiler, name, compiled.node_rule_sets[name], shards, cluster, pods)


Labels = dict[str, str]


def _relabelled(raw: dict[str, Any], labels: Labels) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    out["metadata"]["labels"] = dict(labels)
    return out


def _running(pod: dict[str, Any]) -> bool:
    return bool(pod["status"].get("phase") == "Running" and "podIP" in pod["status"])


def _mover(state: IsolationNode, local: bool) -> tuple[str, Labels, Labels]:
    """A running pod (on the node, or elsewhere) of a group of the node's pods, and
    its labels with another such group: (pod key, its labels, the moved labels)."""
    groups = state.local_groups()
    for key in sorted(state.pods):
        pod = state.pods[key]
        labels = pod["metadata"]["labels"]
        here = pod["spec"]["nodeName"] == state.name
        if here != local or labels.get(GROUP_LABEL) not in groups or not _running(pod):
            continue
        old = labels[GROUP_LABEL]
        new = next(g for g in groups if g != old)
        return key, dict(labels), {**labels, GROUP_LABEL: new}
    raise RuntimeError("no pod to move between the node's groups")


def _kept_mover(state: IsolationNode) -> tuple[str, Labels, Labels] | None:
    """A local pod that takes the labels of another local pod of its namespace (of
    another group), while a third local pod keeps the labels it leaves: the relabel
    that moves a pod between value groups the node has and keeps. (pod key, its
    labels, the other pod's labels); None when the node has no such pods."""
    by_namespace: dict[str, dict[tuple[tuple[str, str], ...], list[str]]] = {}
    for key in sorted(state.pods):
        pod = state.pods[key]
        if pod["spec"]["nodeName"] != state.name or not _running(pod):
            continue
        labels = tuple(sorted(pod["metadata"]["labels"].items()))
        by_labels = by_namespace.setdefault(pod["metadata"]["namespace"], {})
        by_labels.setdefault(labels, []).append(key)
    for _, by_labels in sorted(by_namespace.items()):
        for labels, keys in sorted(by_labels.items()):
            group = dict(labels).get(GROUP_LABEL)
            if len(keys) < 2 or group is None:
                continue
            for other in sorted(by_labels):
                if dict(other).get(GROUP_LABEL, group) != group:
                    return keys[0], dict(labels), dict(other)
    return None


def _node_isolation_shape(state: IsolationNode, rendered: RenderedNode) -> dict[str, int]:
    iso = [cp for cp in state.node.cluster_policies if cp.variants]
    return {
        "local_pods": len(state.node.pods),
        "cluster_policies": len(state.node.cluster_policies),
        "isolation_policies_expanded": len(iso),
        "sameness_rules": sum(len(v.ingress) + len(v.egress) for cp in iso for v in cp.variants),
        "local_groups": len(state.local_groups()),
        "peer_sets": len(state.node.peer_sets),
        "v4_sets": len(rendered.v4.ipsets),
        "v4_cluster_policy_chains": sum(
            c.name.startswith(("STK-CI-", "STK-CE-")) for c in rendered.v4.chains
        ),
        "v4_rules": sum(len(c.rules) for c in rendered.v4.chains),
    }


def measure_isolation_churn(
    spaces: Namespaces,
    backend: Backend,
    options: RenderOptions,
    repeats: int,
    count: int,
    console: Console,
) -> dict[str, Any]:
    """A pod moved to another group of the node's pods and back, ``repeats`` times:
    a remote pod (a peer of the node's sets only), a local pod taking the labels of
    another local pod while a third keeps its own (:func:`_kept_mover`), then a local
    pod whose group on the node it empties.

    Each move is one Compiler upsert and flush (timed) and one apply of the node's
    new rule set and PeerSets (timed, its kernel calls counted) into a namespace that
    holds the full state.
    """
    console.print(
        f"  building the node: {dataclasses.replace(ISO_PARAMS, isolation_policies=count)}"
    )
    build_s, state = timed(lambda: isolation_node(count))
    assert isinstance(state, IsolationNode)
    out: dict[str, Any] = {"build_s": build_s}
    with spaces.fresh() as ns:
        applier = new_applier(ns, backend, options)
        ex = applier.executor
        assert isinstance(ex, TimedExecutor)
        full_s, report = timed(lambda: applier.apply(state.node, state.peer_sets()))
        assert isinstance(report, ApplyReport)
        assert report.changed
        assert applier.last is not None
        out["shape"] = _node_isolation_shape(state, applier.last.rendered)
        out["full_apply_s"] = full_s
        console.print(f"  full apply {full_s:.2f} s; {out['shape']}")
        movers = {
            "remote": _mover(state, local=False),
            "local": _mover(state, local=True),
            "local_kept": _kept_mover(state),
        }
        for where, mover in movers.items():
            if mover is None:
                console.print(f"  {where}: no such pod on this node")
                continue
            key, old, new = mover
            runs: list[dict[str, Any]] = []
            for _ in range(repeats):
                for labels in (new, old):
                    raw = _relabelled(state.pods[key], labels)
                    state.pods[key] = raw
                    compile_s, changes = state.update(raw)
                    one = _one_apply(applier, ex, state.node, state.peer_sets(), options)
                    one["compile_s"] = compile_s
                    one["node_changed"] = state.name in changes.nodes
                    one["shards_changed"] = len(changes.peer_sets)
                    runs.append(one)
            if applier.verify():
                raise RuntimeError("after the relabels the kernel differs from the applied state")
            figures = {
                "pod": key,
                "groups": [old.get(GROUP_LABEL), new.get(GROUP_LABEL)],
                "moves": len(runs),
                "compile_s": median([r["compile_s"] for r in runs]),
                "apply_s": median([r["apply_s"] for r in runs]),
                "apply_over_full": median([r["apply_s"] for r in runs]) / full_s,
                "iptables_restores": max(r["iptables_restores"] for r in runs),
                "iptables_calls": max(r["iptables_calls"] for r in runs),
                "ipset_subprocesses": max(
                    r["subprocess_calls"] - r["iptables_calls"] - r["conntrack_calls"] for r in runs
                ),
                "netlink_calls": max(r["netlink_calls"] for r in runs),
                "member_changes": max(r["member_changes"] for r in runs),
                "node_rule_set_changed": any(r["node_changed"] for r in runs),
                "shards_changed": max(r["shards_changed"] for r in runs),
                "runs": [r["apply_s"] for r in runs],
            }
            out[where] = figures
            console.print(
                f"  {where} pod {key} {figures['groups'][0]} <-> {figures['groups'][1]}: "
                f"compile {figures['compile_s'] * 1000:.1f} ms, "
                f"apply {figures['apply_s'] * 1000:.1f} ms, {figures['iptables_restores']} "
                f"iptables-restore, {figures['ipset_subprocesses']} ipset subprocesses, "
                f"{figures['netlink_calls']} netlink calls, {figures['member_changes']} "
                "member changes"
            )
    return out


# ----------------------------------------------------------------------- isolation, packet path


def _raw_pod(
    namespace: str, name: str, ip: str, node: str, labels: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "ports": []}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _raw_namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {**labels, NAME_LABEL: name}},
    }


def packet_isolation(
    count: int, dummy_deployments: Sequence[tuple[str, ...]]
) -> tuple[list[NodeClusterPolicy], dict[str, tuple[PeerSet, ...]], dict[str, int]]:
    """``count`` IsolationPolicies on the packet-path node, compiled by the Compiler.

    The policies are :mod:`bench.synth`'s (every form of sameness peer; subjects
    mostly every tenant namespace). The node's pods (namespace ``bench``, a tenant
    namespace of the prod env with a project) are the server, the client and the
    dummy deployments, each in a group of its own; :data:`PACKET_REMOTE_PODS` remote
    pods in 50 namespaces (10 projects) spread over every group fill the sets. The
    client is not in the server's group (the same namespace and project let it in),
    and the server's group rule comes last among its policy's (subject rules sort by
    their first pod): its SYN is judged by every group rule of the server's chains.
    """
    synth = generate(
        Params(
            pods=600,
            namespaces=40,
            nodes=3,
            policies=0,
            isolation_policies=count,
            group_values=PACKET_GROUP_VALUES,
        )
    )
    ns_labels = {"team": "payments", "env": "prod", PROJECT_LABEL: "p-0000"}
    raws: list[dict[str, Any]] = [_raw_namespace("bench", ns_labels)]
    for n in range(50):
        labels = {"team": "payments", "env": "prod", PROJECT_LABEL: f"p-{n % 10:04d}"}
        raws.append(_raw_namespace(f"remote-{n:02d}", labels))
    common = {"team": "payments", "env": "prod"}
    last = group_value(PACKET_GROUP_VALUES - 1)
    raws.append(
        _raw_pod("bench", "server", SERVER_IP, PACKET_NODE,
                 {"app": "server", "tier": "backend", GROUP_LABEL: last, **common})
    )  # fmt: skip
    raws.append(
        _raw_pod("bench", "client", CLIENT_IP, PACKET_NODE,
                 {"app": "client", "tier": "frontend", GROUP_LABEL: group_value(0), **common})
    )  # fmt: skip
    for d, names in enumerate(dummy_deployments):
        for k, key in enumerate(names):
            ip = str(ipaddress.IPv4Address("10.1.1.0") + 2 * d + k)
            labels = {"app": f"dep{d:03d}", "tier": "backend", **common}
            labels[GROUP_LABEL] = group_value(1 + d % (PACKET_GROUP_VALUES - 1))
            raws.append(_raw_pod("bench", key.split("/")[1], ip, PACKET_NODE, labels))
    remote = ipaddress.IPv4Address("10.4.0.0")
    for r in range(PACKET_REMOTE_PODS):
        labels = {"app": f"r{r % 200}", "tier": "backend", **common}
        labels[GROUP_LABEL] = group_value(r % PACKET_GROUP_VALUES)
        raws.append(_raw_pod(f"remote-{r % 50:02d}", f"r{r}", str(remote + r), "remote", labels))
    raws.extend(synth.isolation_policies)
    compiled = compile_cluster([parse_input(raw) for raw in raws])
    node = compiled.node_rule_sets[PACKET_NODE]
    by_set = compiled.by_set()
    peer_sets = {name: by_set[name] for name in node.peer_sets}
    rules = [r for cp in node.cluster_policies for r in (*cp.policy.ingress, *cp.policy.egress)]
    same = [r for cp in node.cluster_policies for v in cp.variants for r in (*v.ingress, *v.egress)]
    shape = {
        "isolation_policies": len(node.cluster_policies),
        "isolation_rules": len(rules) + len(same),
        "isolation_sameness_rules": len(same),
        "isolation_peer_sets": len(peer_sets),
        "isolation_set_members": sum(
            len(ps.members) for shards in peer_sets.values() for ps in shards
        ),
    }
    return list(node.cluster_policies), peer_sets, shape


# ----------------------------------------------------------------------- tiers on the packet path


def _cnp_raw(
    name: str, tier: str, priority: int, subject: dict[str, Any], **rules: list[dict[str, Any]]
) -> dict[str, Any]:
    spec: dict[str, Any] = {"tier": tier, "priority": priority, "subject": subject, **rules}
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"tcp": {"destinationPort": {"number": p}}} for p in ports]


_DNS = [{"udp": {"destinationPort": {"number": 53}}}]


def _named(name: str) -> dict[str, Any]:
    return {"destinationNamedPort": name}


_BENCH_NS = {"matchLabels": {"kubernetes.io/metadata.name": "bench"}}


def _app_pods(app: str) -> dict[str, Any]:
    return {"pods": {"namespaceSelector": _BENCH_NS, "podSelector": {"matchLabels": {"app": app}}}}


def _team(team: str) -> dict[str, Any]:
    return {"namespaces": {"matchLabels": {"team": team}}}


def measured_cluster_policies() -> list[tuple[dict[str, Any], str]]:
    """The CNPs that select the server or the client, each with the pod it selects.

    The client's SYN meets every tier: the client's 10 Admin egress policies (none
    matches the server; the first denies the third pod's address, which the checks
    verify), no NetworkPolicy isolates the client for egress, then its 10 Baseline
    egress policies (the last accepts the pod network). At the server, 10 Admin
    ingress policies, the last of which passes the client to NetworkPolicy, where
    the server's last policy allows it (the Baseline ones are never reached).
    """
    out: list[tuple[dict[str, Any], str]] = []
    server = {
        "pods": {"namespaceSelector": _BENCH_NS, "podSelector": {"matchLabels": {"app": "server"}}}
    }
    client = {
        "pods": {"namespaceSelector": _BENCH_NS, "podSelector": {"matchLabels": {"app": "client"}}}
    }
    for s in range(SERVER_CNPS):
        ingress = [
            {"action": "Deny", "from": [_team(f"t{s}")], "protocols": _tcp(SERVER_PORT)},
            {"action": "Accept", "from": [_app_pods(f"r{s}")], "protocols": _tcp(9000 + s)},
            {"action": "Deny", "from": [{"namespaces": {}}], "protocols": _tcp(22, 2379)},
            {"action": "Accept", "from": [_app_pods("prometheus")],
             "protocols": [{"destinationNamedPort": "metrics"}]},
        ]  # fmt: skip
        last = (
            {
                "action": "Pass",
                "from": [_app_pods("client")],
                "protocols": _tcp(SERVER_PORT, IPERF_PORT),
            }
            if s == SERVER_CNPS - 1
            else {"action": "Pass", "from": [_team("platform")]}
        )
        ingress.append(last)
        out.append(
            (
                _cnp_raw(f"bench-server-admin-{s}", "Admin", 100 + s, server, ingress=ingress),
                "server",
            )
        )
    egress: list[dict[str, Any]]
    for s in range(SERVER_CNPS // 2):
        ingress = [
            {"action": "Pass", "from": [_team("platform")], "protocols": _tcp(SERVER_PORT)},
            {"action": "Deny", "from": [{"namespaces": {}}]},
        ]
        egress = [
            {"action": "Deny", "to": [{"nodes": {"matchLabels": {"pool": "infra"}}}]},
            {"action": "Accept", "to": [_app_pods("kube-dns")], "protocols": _DNS},
            {"action": "Deny", "to": [{"networks": ["0.0.0.0/0", "::/0"]}]},
        ]  # fmt: skip
        out.append(
            (
                _cnp_raw(
                    f"bench-server-baseline-{s}",
                    "Baseline",
                    900 + s,
                    server,
                    ingress=ingress,
                    egress=egress,
                ),
                "server",
            )
        )
    for c in range(CLIENT_CNPS):
        first = f"{OTHER_IP}/32" if c == 0 else "203.0.113.0/24"
        egress = [
            {"action": "Deny", "to": [{"networks": [first]}]},
            {"action": "Deny", "to": [{"nodes": {"matchExpressions": [
                {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}}],
             "protocols": _tcp(6443, 10250)},
            {"action": "Accept", "to": [_app_pods("kube-dns")], "protocols": _DNS},
            {"action": "Pass", "to": [_team(f"t{c}")], "protocols": [_named("grpc")]},
            {"action": "Deny", "to": [_app_pods(f"r{c}")], "protocols": _tcp(5432)},
        ]  # fmt: skip
        out.append(
            (_cnp_raw(f"bench-client-admin-{c}", "Admin", 200 + c, client, egress=egress), "client")
        )
    for c in range(CLIENT_CNPS):
        egress = [
            {"action": "Deny", "to": [{"networks": ["198.51.100.0/24"]}], "protocols": _tcp(443)},
            {"action": "Deny", "to": [{"nodes": {"matchLabels": {"pool": "infra"}}}]},
            {"action": "Pass", "to": [_team(f"t{c}")]},
            {"action": "Deny", "to": [_app_pods(f"r{c}")], "protocols": _tcp(6379)},
            {"action": "Accept", "to": [{"networks": [NODE_CIDR]}]}
            if c == CLIENT_CNPS - 1
            else {"action": "Deny", "to": [{"networks": ["192.0.2.0/24"]}]},
        ]  # fmt: skip
        out.append(
            (
                _cnp_raw(f"bench-client-baseline-{c}", "Baseline", 800 + c, client, egress=egress),
                "client",
            )
        )
    return out


def packet_tiers(
    count: int, dummy_deployments: Sequence[tuple[str, ...]]
) -> tuple[list[NodeClusterPolicy], dict[str, tuple[PeerSet, ...]], dict[str, int]]:
    """``count`` ClusterNetworkPolicies for the packet-path node, and their PeerSets.

    The CNPs that select the server and the client come from
    :func:`measured_cluster_policies`; the rest are the synthetic cluster's CNPs
    (:mod:`bench.synth`: every peer kind, protocol form and action, 5 rules each),
    each given one of the dummy deployments as its subjects. Every CNP is a raw
    object parsed by :func:`parse_cluster_network_policy` and compiled by
    :func:`compile_cluster_policy`; the PeerSets its rules name get synthetic
    members: 25 remote pod addresses (with a port for a named-port set), 3 node
    addresses for a ``nodes`` set, and the client (with 24 others) for the set of
    ``app=client`` pods.
    """
    measured = measured_cluster_policies()
    if count < len(measured):
        raise ValueError(f"at least {len(measured)} CNPs (those of the measured pods)")
    synth = generate(
        Params(pods=600, namespaces=40, nodes=3, policies=0, cnps=count - len(measured))
    )
    raws: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        (raw, (f"bench/{who}",)) for raw, who in measured
    ]
    for i, raw in enumerate(synth.cluster_policies):
        raws.append((raw, dummy_deployments[(7 * i) % len(dummy_deployments)]))
    selectors: dict[str, PeerSelector] = {}
    policies: list[NodeClusterPolicy] = []
    for raw, targets in raws:
        compiled, sets = compile_cluster_policy(parse_cluster_network_policy(raw))
        selectors.update(sets)
        policies.append(NodeClusterPolicy(compiled, tuple(sorted(targets))))
    policies.sort(key=lambda p: p.policy.order)
    base = int(ipaddress.IPv4Address("10.3.0.0"))
    peer_sets: dict[str, tuple[PeerSet, ...]] = {}
    (client_set,) = (
        name
        for name, sel in selectors.items()
        if any(r.key == "app" and r.values == ("client",) for r in sel.pod_selector)
    )
    for n, (name, selector) in enumerate(sorted(selectors.items())):
        members: list[PeerMember]
        if selector.node_selector is not None:
            members = [
                PeerMember(f"node-{k}", (str(ipaddress.IPv4Address(0xAC100100 + 8 * n + k)),))
                for k in range(3)
            ]
        else:
            port = 9000 + n % 100 if selector.named_port is not None else None
            ips = [str(ipaddress.IPv4Address(base + 25 * n + j)) for j in range(25)]
            if name == client_set:
                ips[0] = CLIENT_IP
            members = [PeerMember(f"bench/m{n}-{j}", (ip,), port) for j, ip in enumerate(ips)]
        peer_sets[name] = (PeerSet(f"{name}-0", name, selector, 0, 1, tuple(members)),)
    shape = {
        "cnps": len(policies),
        "admin": sum(p.policy.tier == "Admin" for p in policies),
        "baseline": sum(p.policy.tier == "Baseline" for p in policies),
        "cnp_rules": sum(len(p.policy.ingress) + len(p.policy.egress) for p in policies),
        "cnp_peer_sets": len(peer_sets),
        "cnp_node_sets": sum(ps[0].selector.node_selector is not None for ps in peer_sets.values()),
    }
    return policies, peer_sets, shape


# ----------------------------------------------------------------------- packet path


def packet_ruleset(
    cnps: int = 0, isolation: int = 0
) -> tuple[NodeRuleSet, dict[str, tuple[PeerSet, ...]], dict[str, int]]:
    """1,000 policies on one node; 10 select the server pod, the last of them allows us.

    With ``cnps``, that many ClusterNetworkPolicies too (:func:`packet_tiers`): the
    client becomes a local pod (CNPs select it), the rest select the dummy pods.
    With ``isolation``, that many IsolationPolicies too (:func:`packet_isolation`),
    in evaluation order with the CNPs; the client is a local pod (a subject).

    The other 990 select 330 dummy deployments (2 local pods each, 3 policies each),
    so the node has ~331 ingress and ~330 egress policy groups: the client's SYN
    takes one lookup in the egress dispatch (the client is not isolated) and walks
    the ingress dispatch tree down to the server's group, then the server's 10
    policy chains.
    """
    base = ipaddress.IPv4Address("10.2.0.0")
    peer_sets: dict[str, tuple[PeerSet, ...]] = {}

    def peer_set(name: str, ips: Sequence[str]) -> str:
        selector = PeerSelector(
            pod_selector=(SelectorRequirement("app", "In", (name,)),), namespace="bench"
        )
        members = tuple(PeerMember(f"bench/{name}-{i}", (ip,)) for i, ip in enumerate(ips))
        peer_sets[name] = (PeerSet(f"{name}-0", name, selector, 0, 1, members),)
        return name

    remote = [
        peer_set(f"ps-r{i:03d}", [str(base + 25 * i + j) for j in range(25)]) for i in range(200)
    ]
    clients = peer_set("ps-clients", [CLIENT_IP, *(str(base + 60_000 + j) for j in range(24))])
    dns = PeerMatch(cidr="10.96.0.10/32")

    def rule(peer: PeerMatch, *ports: int, proto: str = "TCP") -> CompiledRule:
        return CompiledRule((peer,), tuple(PortMatch(proto, p) for p in ports))

    pods: list[LocalPod] = [LocalPod("bench/server", (SERVER_IP,))]
    policies: list[NodePolicy] = []
    dummy = ipaddress.IPv4Address("10.1.1.0")
    n_deploy = (PACKET_POLICIES - SERVER_POLICIES) // 3
    deployments: list[tuple[str, ...]] = []
    for d in range(n_deploy):
        names = tuple(f"bench/dep{d:03d}-{k}" for k in range(2))
        deployments.append(names)
        pods += [LocalPod(n, (str(dummy + 2 * d + k),)) for k, n in enumerate(names)]
        for k in range(3):
            i = 3 * d + k
            ingress: tuple[CompiledRule, ...] = (
                rule(PeerMatch(peer_set=remote[i % 200]), 8000 + i % 50),
                rule(PeerMatch(peer_set=remote[(i * 7) % 200]), 9090, 9091),
            )
            egress: tuple[CompiledRule, ...] | None = None
            if k == 2:
                egress = (
                    rule(PeerMatch(peer_set=remote[(i * 13) % 200]), 5432),
                    rule(dns, 53, proto="UDP"),
                )
            pol = CompiledPolicy(f"bench/pol-{i:04d}", f"p{i:04d}", ingress, egress)
            policies.append(NodePolicy(pol, names))
    for s in range(SERVER_POLICIES):
        if s == SERVER_POLICIES - 1:  # sorts last: every other server policy is tried first
            ingress = (rule(PeerMatch(peer_set=clients), SERVER_PORT, IPERF_PORT),)
        else:
            ingress = (rule(PeerMatch(peer_set=remote[s]), 9000 + s),)
        pol = CompiledPolicy(f"bench/server-{s}", f"s{s:04d}", ingress, None)
        policies.append(NodePolicy(pol, ("bench/server",)))
    cluster_policies: tuple[NodeClusterPolicy, ...] = ()
    tier_shape: dict[str, int] = {}
    if cnps:
        tiers, tier_sets, tier_shape = packet_tiers(cnps, deployments)
        cluster_policies = tuple(tiers)
        peer_sets.update(tier_sets)
    if isolation:
        iso, iso_sets, iso_shape = packet_isolation(isolation, deployments)
        cluster_policies = tuple(sorted((*cluster_policies, *iso), key=lambda p: p.policy.order))
        for name, shards in iso_sets.items():
            peer_sets.setdefault(name, shards)  # a set the CNPs have keeps its members
        tier_shape |= iso_shape
    if cnps or isolation:
        pods.append(LocalPod("bench/client", (CLIENT_IP,)))
    node = NodeRuleSet(
        "bench",
        tuple(sorted(pods, key=lambda p: p.name)),
        tuple(policies),
        tuple(sorted(peer_sets)),
        cluster_policies=cluster_policies,
    )
    shape = {
        "policies": len(policies),
        "server_policies": SERVER_POLICIES,
        "local_pods": len(pods),
        "peer_set_members": sum(len(ps[0].members) for ps in peer_sets.values()),
        **tier_shape,
    }
    return node, peer_sets, shape


def _dispatch_lookups(rendered: RenderedNode, start: str, ip: str) -> tuple[int, str]:
    """Set lookups a NEW packet of ``ip`` makes in a dispatch tree, and where it ends.

    Walks the v4 rules from ``start`` (STK-INGRESS or STK-EGRESS; with tiers
    STK-T-INGRESS or STK-T-EGRESS): each dispatch rule is one set lookup; a match
    goes to a tree node (walk on), a group or path chain, or RETURN.
    """
    chains = {c.name: c for c in rendered.v4.chains}
    members = {s.name: {m.value for m in s.members} for s in rendered.v4.ipsets}
    lookups, chain = 0, start
    while True:
        for rule in chains[chain].rules:
            (match,) = rule.matches
            assert isinstance(match, SetMatch)
            lookups += 1
            if (ip in members[match.set_name]) != match.negate:
                if isinstance(rule.action, Goto):
                    chain = rule.action.chain
                    break
                return lookups, "RETURN"
        else:
            return lookups, "end of " + chain
        if not chain.startswith(("STK-IT-", "STK-ET-", "STK-TIT-", "STK-TET-")):
            return lookups, chain


def _tier_shape(rendered: RenderedNode) -> dict[str, int]:
    """Sizes of the v4 tier chains (groups, paths, per-CNP chains, STK-INPUT)."""
    chains = rendered.v4.chains
    prefixes = (
        "STK-AE",
        "STK-AI",
        "STK-B",
        "STK-T",
        "STK-CE-",
        "STK-CI-",
        "STK-INPUT",
        "STK-PASS",
    )
    tier = [c for c in chains if c.name.startswith(prefixes)]
    return {
        "v4_tier_chains": len(tier),
        "v4_tier_rules": sum(len(c.rules) for c in tier),
    }


def _dispatch_shape(rendered: RenderedNode) -> dict[str, int]:
    """Sizes of the v4 dispatch trees, and the set lookups of the measured SYN.

    With tiers, one tree per direction leads to the pods' paths through the tiers
    (``STK-T-*``, docs/dataplane.md): the client, a subject, has one too.
    """
    chains = rendered.v4.chains
    tiered = rendered.input_jump is not None
    prefix = "STK-T" if tiered else "STK-"
    ingress_lookups, landed = _dispatch_lookups(
        rendered, "STK-T-INGRESS" if tiered else "STK-INGRESS", SERVER_IP
    )
    assert landed.startswith(f"{prefix}IG-"), landed
    egress_lookups, passed = _dispatch_lookups(
        rendered, "STK-T-EGRESS" if tiered else "STK-EGRESS", CLIENT_IP
    )
    # Without tiers the client is not isolated for egress; with them it is a subject.
    assert passed.startswith("STK-TEG-") if tiered else passed == "RETURN", passed
    return {
        "v4_rules": sum(len(c.rules) for c in chains),
        "ingress_groups": sum(c.name.startswith("STK-IG-") for c in chains),
        "egress_groups": sum(c.name.startswith("STK-EG-") for c in chains),
        "ingress_tree_chains": 1 + sum(c.name.startswith(f"{prefix}IT-") for c in chains),
        "egress_tree_chains": 1 + sum(c.name.startswith(f"{prefix}ET-") for c in chains),
        "syn_ingress_lookups": ingress_lookups,
        "syn_egress_lookups": egress_lookups,
    }


@dataclass(frozen=True)
class PacketServices:
    """The Services of measurement 5, their EndpointSlices and the one measured."""

    services: tuple[Service, ...]
    slices: tuple[EndpointSlice, ...]
    measured: Service

    @property
    def vip(self) -> str:
        """The measured Service's cluster IP (the probes' destination)."""
        return self.measured.cluster_ips[0]

    def rules(self, node: str = PACKET_NODE) -> ProxyRules:
        """kube-proxy's IPv4 chains for ``node`` (pure)."""
        return render_proxy(ProxyNode(node, 4, CLUSTER_CIDR), self.services, self.slices)


def _bench_pod(name: str, ip: str, app: str, ports: Sequence[int]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": app}},
        "spec": {
            "nodeName": PACKET_NODE,
            "containers": [{"name": "app", "ports": [{"containerPort": p} for p in ports]}],
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def packet_services(count: int = PACKET_SERVICES) -> PacketServices:
    """``count`` ClusterIP Services over the packet-path node's pods (pure).

    The measured Service (``svc-<count/2>``, so half of ``KUBE-SERVICES`` comes before
    it, as for a Service anywhere in kube-proxy's unordered chain) selects the server
    pod: port 80 to 8080, and the bulk port to itself. Every other Service selects one
    of the 330 dummy deployments of :func:`packet_ruleset` (two backends, so the
    ``statistic`` balancing is there too); every fourth has a second port. Cluster
    IPs are ``10.96.1.0`` on, in the emulator's range 10.96.0.0/16; the EndpointSlices
    are what the sandbox's controller stand-in writes (:func:`desired_slices`).
    """
    if count < 1:
        raise ValueError("at least one Service")
    n_deploy = (PACKET_POLICIES - SERVER_POLICIES) // 3
    dummy = ipaddress.IPv4Address("10.1.1.0")
    raw_pods = [_bench_pod("server", SERVER_IP, "server", (SERVER_PORT, IPERF_PORT))]
    for d in range(n_deploy):
        raw_pods += [
            _bench_pod(f"dep{d:03d}-{k}", str(dummy + 2 * d + k), f"dep{d:03d}", ())
            for k in range(2)
        ]
    pods = [parse_pod(obj) for obj in raw_pods]
    network = ipaddress.IPv4Network(SERVICE_CIDR)
    first = network.network_address + 256
    measured_index = count // 2
    services: list[Service] = []
    slices: list[EndpointSlice] = []
    for i in range(count):
        ports: list[dict[str, Any]]
        if i == measured_index:
            selector = {"app": "server"}
            ports = [
                {"name": "http", "port": SERVICE_PORT, "targetPort": SERVER_PORT},
                {"name": "bulk", "port": IPERF_PORT, "targetPort": IPERF_PORT},
            ]
        else:
            selector = {"app": f"dep{i % n_deploy:03d}"}
            ports = [{"name": "http", "port": SERVICE_PORT, "targetPort": 8000 + i % 50}]
            if i % 4 == 0:
                ports.append({"name": "metrics", "port": 9090, "targetPort": 9090})
        vip = first + i
        assert vip in network
        obj = {
            "metadata": {"name": f"svc-{i:04d}", "namespace": "bench", "uid": f"uid-{i}"},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": str(vip),
                "clusterIPs": [str(vip)],
                "selector": selector,
                "ports": ports,
            },
        }
        service = parse_service(obj)
        services.append(service)
        slices += [parse_endpoint_slice(body) for body in desired_slices(service, pods)]
    return PacketServices(tuple(services), tuple(slices), services[measured_index])


def _services_shape(svc: PacketServices, rules: ProxyRules) -> dict[str, int]:
    """Sizes of what the kube-proxy stand-in wrote, and where the measured SYN goes."""
    nat = rules.tables["nat"]
    entries = nat["KUBE-SERVICES"]
    position = next(i for i, line in enumerate(entries) if f"-d {svc.vip}/32 " in line)
    (http,) = (p for p in svc.measured.ports if p.port == SERVICE_PORT)
    backends = service_backends(svc.measured, http, svc.slices)
    assert [(b.ip, b.port) for b in backends] == [(SERVER_IP, SERVER_PORT)], backends
    return {
        "services": len(svc.services),
        "service_ports": sum(len(s.ports) for s in svc.services),
        "endpoint_slices": len(svc.slices),
        "kube_services_rules": len(entries),
        "nat_chains": len(nat),
        "nat_rules": sum(len(lines) for lines in nat.values()),
        "filter_rules": sum(len(lines) for lines in rules.tables["filter"].values()),
        "measured_rule_position": position + 1,
    }


CONNECT_LOOP = """
import socket, sys, time
dst, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
count, end = 0, time.perf_counter() + seconds
start = time.perf_counter()
while time.perf_counter() < end:
    s = socket.create_connection((dst, port), timeout=2)
    while s.recv(4096):
        pass
    s.close()
    count += 1
print(count, time.perf_counter() - start)
"""


def connection_rate(
    lab: Lab, client: PodNet, seconds: float, dst: str = SERVER_IP, port: int = SERVER_PORT
) -> float:
    """New TCP connections per second from ``client`` to the server (connect, read, close)."""
    argv = [sys.executable, "-c", CONNECT_LOOP, dst, str(port), str(seconds)]
    out = lab.run(client, argv).stdout.split()
    return int(out[0]) / float(out[1])


def iperf_throughput(lab: Lab, client: PodNet, seconds: float, dst: str = SERVER_IP) -> float:
    """Bulk TCP throughput from ``client`` to the server (iperf3), in bits per second."""
    argv = ["iperf3", "-c", dst, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"]
    for attempt in range(3):
        proc = lab.run(client, argv, check=False)
        if proc.returncode == 0:
            data = json.loads(proc.stdout)
            return float(data["end"]["sum_received"]["bits_per_second"])
        time.sleep(0.5 * (attempt + 1))  # the server may still be busy with the last test
    raise RuntimeError(f"iperf3 failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")


def socket_throughput(lab: Lab, client: PodNet, seconds: float, dst: str = SERVER_IP) -> float:
    """Bulk TCP throughput without iperf3: a sender in ``client``, a sink on the server."""
    code = (
        "import socket, sys, time\n"
        "s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n"
        "buf, sent = b'x' * 262144, 0\n"
        "start = time.perf_counter(); end = start + float(sys.argv[3])\n"
        "while time.perf_counter() < end:\n"
        "    sent += s.send(buf)\n"
        "s.shutdown(socket.SHUT_WR); s.recv(1); s.close()\n"
        "print(sent * 8 / (time.perf_counter() - start))\n"
    )
    argv = [sys.executable, "-c", code, dst, str(IPERF_PORT), str(seconds)]
    return float(lab.run(client, argv).stdout.strip())


def measure_packet_path(
    backend: Backend,
    options: RenderOptions,
    repeats: int,
    conn_seconds: float,
    bulk_seconds: float,
    console: Console,
    services: int = 0,
    cnps: int = 0,
    isolation: int = 0,
) -> dict[str, Any]:
    """Measurement 4 (``services`` 0) or 5: conn/s and throughput, 1,000 policies vs none.

    Two labs alike (same addresses, pods and servers), each given its rules once: no
    policy in one, the policies in the other; their runs interleave. With
    ``services``, that many Services are programmed by the kube-proxy stand-in
    into both, and every connection goes to a cluster IP. With ``cnps``, the
    policies' node also carries that many ClusterNetworkPolicies
    (:func:`packet_tiers`), and with ``isolation`` that many IsolationPolicies
    (:func:`packet_isolation`).

    Each side keeps its rules for the whole measurement, as a node does: until
    the IsolationPolicy work the one lab switched between the two rule sets before
    every run, and the runs right after a switch measured the apply's aftermath
    too (88% where the steady state gave 93%, side by side; docs/performance.md).
    """
    rules, peer_sets, shape = packet_ruleset(cnps, isolation)
    empty = NodeRuleSet("bench", (), (), ())
    with contextlib.ExitStack() as stack:
        sides = {
            kind: _packet_side(stack, backend, options, services) for kind in ("none", "policies")
        }
        sides["none"].applier.apply(empty, {})
        sides["policies"].applier.apply(rules, peer_sets)
        last = sides["policies"].applier.last
        assert last is not None
        shape |= _dispatch_shape(last.rendered)
        shape |= _tier_shape(last.rendered) if cnps or isolation else {}
        checks = _packet_checks(sides, backend, cnps=cnps, services=services)
        for side in sides.values():
            side.warm()
        conn, thr = _interleaved(
            repeats,
            lambda kind: sides[kind].connection_rate(conn_seconds),
            lambda kind: sides[kind].throughput(bulk_seconds),
            console,
        )
    out: dict[str, Any] = {
        "backend": backend,
        "cnps": cnps,
        "isolation": isolation,
        "shape": shape,
        "checks": checks,
        "destination": f"{sides['policies'].dst}:{sides['policies'].port}",
        "bulk_tool": "iperf3" if sides["policies"].iperf else "python socket sender",
        "conn_per_s": {k: median(v) for k, v in conn.items()},
        "conn_ratio": median(conn["policies"]) / median(conn["none"]),
        "throughput_bps": {k: median(v) for k, v in thr.items()},
        "throughput_ratio": median(thr["policies"]) / median(thr["none"]),
        "runs": {"conn_per_s": conn, "throughput_bps": thr},
        # Information only (the targets use the ratio of the medians): the median of
        # the per-repetition ratios, each of two back-to-back runs, less sensitive to
        # a machine whose load drifts during the run.
        "paired_ratio_median": {
            "conn": median([a / b for a, b in zip(conn["policies"], conn["none"], strict=True)]),
            "throughput": median(
                [a / b for a, b in zip(thr["policies"], thr["none"], strict=True)]
            ),
        },
        "conn_seconds": conn_seconds,
        "bulk_seconds": bulk_seconds,
    }
    if services:
        out["services"] = sides["policies"].services_shape
    return out


@dataclass
class _PacketSide:
    """One lab of the packet path: the node, its three pods, the servers and the
    applier (cleaned up with the lab)."""

    lab: Lab
    node: Node
    client: PodNet
    other: PodNet
    applier: Applier
    # Where the probes go: the server itself, or the measured Service's cluster IP.
    dst: str
    port: int
    services_shape: dict[str, int]
    iperf: str | None  # iperf3's path, or None: a Python socket sender instead

    def connection_rate(self, seconds: float) -> float:
        """New TCP connections per second from the client to ``dst``."""
        return connection_rate(self.lab, self.client, seconds, self.dst, self.port)

    def throughput(self, seconds: float) -> float:
        """Bulk TCP throughput from the client, in bits per second."""
        bulk = iperf_throughput if self.iperf else socket_throughput
        return bulk(self.lab, self.client, seconds, self.dst)

    def warm(self) -> None:
        """One connection first: the neighbour entries and the server are ready."""
        self.lab.ask(self.client, self.dst, self.port)


def _packet_side(
    stack: contextlib.ExitStack, backend: Backend, options: RenderOptions, services: int
) -> _PacketSide:
    lab = stack.enter_context(Lab())
    node = lab.add_node(PACKET_NODE, pod_cidr4=NODE_CIDR)
    server = lab.add_pod(node, "srv", SERVER_IP)
    client = lab.add_pod(node, "cli", CLIENT_IP)
    other = lab.add_pod(node, "oth", OTHER_IP)
    lab.run(client, ["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"])
    lab.serve(server, [(SERVER_PORT, "TCP")], reply="ok")
    # With tiers, the client's first Admin policy denies the third pod: a check.
    lab.serve(other, [(SERVER_PORT, "TCP")], reply="ok")
    dst, port = SERVER_IP, SERVER_PORT
    services_shape: dict[str, int] = {}
    if services:
        dst, services_shape = program_services(node, backend, services)
        port = SERVICE_PORT
    iperf = shutil.which("iperf3")
    sink = start_sink(lab, server, iperf)
    stack.callback(sink.wait, timeout=10)
    stack.callback(sink.terminate)
    applier = Applier(
        SubprocessExecutor(netns=node.ns), netns=node.ns, options=options, tools=Tools(backend)
    )
    stack.callback(applier.cleanup)
    return _PacketSide(lab, node, client, other, applier, dst, port, services_shape, iperf)


def _packet_checks(
    sides: Mapping[str, _PacketSide], backend: Backend, *, cnps: int, services: int
) -> dict[str, bool]:
    """The rules must really enforce: with them the client is allowed and a third pod
    is not; without, both are; through a Service, the reply must come from the
    server (the DNAT works). Raises when they do not."""
    pol, none = sides["policies"], sides["none"]
    checks = {
        "client_allowed": pol.lab.ask(pol.client, pol.dst, pol.port) == "ok",
        "other_denied": not pol.lab.probe(pol.other, pol.dst, pol.port, timeout=0.5),
        "other_allowed_without_policies": none.lab.ask(none.other, none.dst, none.port) == "ok",
    }
    if cnps:
        checks["client_to_other_denied_by_admin"] = not _client_reaches_other(pol.lab, pol.client)
        checks["client_to_other_allowed_without"] = _client_reaches_other(none.lab, none.client)
    if services:
        # The rules kube-proxy prepends are still there after stockade's applies.
        checks["kube_proxy_jumps_present"] = all(
            "-j KUBE-SERVICES" in IptablesRunner(backend).save(side.node.ns, 4)
            for side in sides.values()
        )
    if not all(checks.values()):
        raise RuntimeError(f"the packet-path rules do not behave: {checks}")
    return checks


def program_services(node: Node, backend: Backend, count: int) -> tuple[str, dict[str, int]]:
    """Write ``count`` Services into the node as kube-proxy would; the measured cluster IP."""
    svc = packet_services(count)
    rules = svc.rules(PACKET_NODE)
    seconds, _ = timed(lambda: IptablesRunner(backend).apply(node.ns, 4, rules))
    shape = _services_shape(svc, rules)
    shape["program_ms"] = round(seconds * 1000)
    return svc.vip, shape


def start_sink(lab: Lab, server: PodNet, iperf: str | None) -> subprocess.Popen[bytes]:
    """The bulk-throughput server in ``server`` (iperf3 or a Python sink), listening."""
    if iperf:
        argv = ["ip", "netns", "exec", server.ns, iperf, "-s", "-p", str(IPERF_PORT)]
    else:
        code = (
            "import socket\n"
            f"l = socket.create_server(('0.0.0.0', {IPERF_PORT}))\n"
            "while True:\n"
            "    c, _ = l.accept()\n"
            "    while c.recv(1 << 20):\n"
            "        pass\n"
            "    c.close()\n"
        )
        argv = ["ip", "netns", "exec", server.ns, sys.executable, "-c", code]
    sink = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            listening = lab.run(server, ["ss", "-Hltn", f"sport = :{IPERF_PORT}"]).stdout
            if listening.strip():
                break
            time.sleep(0.1)
    except BaseException:
        sink.terminate()
        sink.wait(timeout=10)
        raise
    return sink


def _client_reaches_other(lab: Lab, client: PodNet) -> bool:
    """Whether the third pod answers the client (the client's first Admin CNP denies it)."""
    return lab.ask(client, OTHER_IP, SERVER_PORT, timeout=0.5) == "ok"


def _interleaved(
    repeats: int,
    conn_rate: Callable[[str], float],
    throughput: Callable[[str], float],
    console: Console,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Connections per second and throughput of each side ("none", "policies"),
    interleaved, the order reversed every other repetition."""
    conn: dict[str, list[float]] = {"policies": [], "none": []}
    thr: dict[str, list[float]] = {"policies": [], "none": []}
    order = ["none", "policies"]
    for rep in range(repeats):
        for kind in order if rep % 2 == 0 else reversed(order):
            conn[kind].append(conn_rate(kind))
            thr[kind].append(throughput(kind))
        console.print(
            f"  #{rep + 1}: conn/s none {conn['none'][-1]:,.0f} policies "
            f"{conn['policies'][-1]:,.0f}; Gbit/s none {thr['none'][-1] / 1e9:.2f} "
            f"policies {thr['policies'][-1] / 1e9:.2f}"
        )
    return conn, thr


# ----------------------------------------------------------------------- reporting


def _verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]MISS[/red]"


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def report_table(result: dict[str, Any]) -> Table:
    """Every figure with its baseline, ratio, target and verdict."""
    table = Table(title="stockade agent benchmark")
    for col in ("measurement", "figure", "baseline", "ratio", "target", "result"):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    for full in result.get("full_apply", []):
        b = full["backend"]
        base = full["baseline_s"]
        table.add_row(
            f"full apply ({b})",
            _s(full["apply_s"]),
            _s(base),
            f"{full['apply_over_baseline']:.2f}x",
            f"<= {APPLY_TARGET}x",
            _verdict(full["apply_over_baseline"] <= APPLY_TARGET),
        )
        table.add_row(
            f"  apply minus render ({b})",
            _s(full["reconcile_s"]),
            _s(base),
            f"{full['reconcile_over_baseline']:.2f}x",
            f"<= {APPLY_TARGET}x",
            _verdict(full["reconcile_over_baseline"] <= APPLY_TARGET),
        )
    if result.get("full_apply"):
        first = result["full_apply"][0]
        inside = first["apply_s"] - first["reconcile_s"]
        table.add_row(
            f"render inside apply ({first['backend']})", _s(inside), _s(first["apply_s"]),
            f"{inside / first['apply_s']:.0%} of apply", "", "info",
        )  # fmt: skip
        table.add_row("render alone (pure)", _s(result["render"]["render_s"]), "", "", "", "info")
    for full in result.get("full_apply_tiers", []):
        b = full["backend"]
        on_node = result.get("node_tiers", {}).get("cluster_policies", "?")
        table.add_row(
            f"full apply, + {result.get('cnps', '?')} CNPs, {on_node} on the node ({b})",
            _s(full["apply_s"]),
            _s(full["baseline_s"]),
            f"{full['apply_over_baseline']:.2f}x",
            f"<= {APPLY_TARGET}x",
            _verdict(full["apply_over_baseline"] <= APPLY_TARGET),
        )
        table.add_row(
            f"  apply minus render, + CNPs ({b})",
            _s(full["reconcile_s"]),
            _s(full["baseline_s"]),
            f"{full['reconcile_over_baseline']:.2f}x",
            "",
            "info",
        )
    if result.get("render_tiers"):
        table.add_row(
            "render alone, + CNPs (pure)",
            _s(result["render_tiers"]["render_s"]),
            "",
            "",
            "",
            "info",
        )
    churn = result.get("churn")
    if churn:
        full_s = first["apply_s"]
        for kind in ("add", "remove"):
            c = churn[kind]
            table.add_row(
                f"pod churn: {kind} ({CHURN_SETS} sets)",
                _s(c["apply_s"]),
                _s(full_s),
                f"{c['apply_s'] / full_s:.1%}",
                f"<= {CHURN_TARGET:.0%}",
                _verdict(c["apply_s"] <= CHURN_TARGET * full_s),
            )
            table.add_row(
                "  a full render (skipped) / kernel reads",
                f"{_s(c['render_s'])} / {_s(c['reads_s'])}",
                "", "", "", "info",
            )  # fmt: skip
            table.add_row(
                "  iptables-restore calls",
                str(c["iptables_restores"]),
                "",
                "",
                "0",
                _verdict(c["iptables_restores"] == 0),
            )
            table.add_row(
                "  other kernel calls",
                f"{c['iptables_calls']} iptables-save, "
                f"{c['subprocess_calls'] - c['iptables_calls'] - c['conntrack_calls']} ipset, "
                f"{c['conntrack_calls']} conntrack -L, {c['netlink_calls']} netlink",
                "", "", "", "info",
            )  # fmt: skip
        u = churn["unchanged"]
        table.add_row(
            "unchanged apply", _s(u["apply_s"]), _s(full_s),
            f"{u['apply_s'] / full_s:.1%}", "", "info",
        )  # fmt: skip
        kernel = u["subprocess_calls"] + u["netlink_calls"]
        table.add_row("  kernel calls", str(kernel), "", "", "0", _verdict(kernel == 0))
    _isolation_churn_rows(table, result.get("isolation_churn"))
    packet = [(pp, "") for pp in result.get("packet_path", [])]
    for pp in result.get("packet_path_tiers", []):
        packet.append((pp, f" + {pp['shape']['cnps']} CNPs"))
    for pp in result.get("packet_path_services", []):
        packet.append((pp, f" via {pp['services']['services']:,} Services"))
    for pp in result.get("packet_path_isolation", []):
        packet.append((pp, f" + {pp['cnps']} CNPs + {pp['isolation']} IsolationPolicies"))
    for pp, via in packet:
        c, t = pp["conn_per_s"], pp["throughput_bps"]
        table.add_row(
            f"new TCP conn/s, {pp['shape']['policies']} policies{via} ({pp['backend']})",
            f"{c['policies']:,.0f}/s",
            f"{c['none']:,.0f}/s",
            f"{pp['conn_ratio']:.1%}",
            f">= {CONN_TARGET:.0%}",
            _verdict(pp["conn_ratio"] >= CONN_TARGET),
        )
        table.add_row(
            f"bulk TCP{via}, {pp['bulk_tool']} ({pp['backend']})",
            f"{t['policies'] / 1e9:.2f} Gbit/s",
            f"{t['none'] / 1e9:.2f} Gbit/s",
            f"{pp['throughput_ratio']:.1%}",
            f">= {THROUGHPUT_TARGET:.0%}",
            _verdict(pp["throughput_ratio"] >= THROUGHPUT_TARGET),
        )
    return table


def _isolation_churn_rows(table: Table, churn: dict[str, Any] | None) -> None:
    """The relabel churn rows (a pod moved to another group), if measured."""
    if not churn:
        return
    full_s = churn["full_apply_s"]
    for where, what in ISOLATION_MOVES.items():
        c = churn.get(where)
        if c is None:
            continue
        table.add_row(
            f"relabel churn: {what} ({churn['backend']})",
            _s(c["apply_s"]),
            _s(full_s),
            f"{c['apply_over_full']:.1%} of full apply",
            "",
            "info",
        )
        targeted = where in ISOLATION_MEMBER_ONLY
        table.add_row(
            "  iptables calls (save and restore)",
            str(c["iptables_calls"]),
            "",
            "",
            "0" if targeted else "",
            _verdict(c["iptables_calls"] == 0) if targeted else "info",
        )
        table.add_row(
            "  ipset work / compile",
            f"{c['member_changes']} member changes, {c['netlink_calls']} netlink, "
            f"{c['ipset_subprocesses']} ipset subprocesses, {c['iptables_calls']} iptables "
            "(save and restore); "
            f"compile {_s(c['compile_s'])}",
            "", "", "", "info",
        )  # fmt: skip


def checks(result: dict[str, Any]) -> dict[str, bool]:
    """The targets, pass or miss."""
    out = {
        f"full_apply_{f['backend']}": f["apply_over_baseline"] <= APPLY_TARGET
        for f in result.get("full_apply", [])
    }
    churn = result.get("churn")
    if churn:
        full_s = result["full_apply"][0]["apply_s"]
        for kind in ("add", "remove"):
            out[f"churn_{kind}_time"] = churn[kind]["apply_s"] <= CHURN_TARGET * full_s
            out[f"churn_{kind}_no_iptables_restore"] = churn[kind]["iptables_restores"] == 0
        u = churn["unchanged"]
        out["unchanged_no_kernel_calls"] = u["subprocess_calls"] + u["netlink_calls"] == 0
    for pp in result.get("packet_path", []):
        out[f"conn_rate_{pp['backend']}"] = pp["conn_ratio"] >= CONN_TARGET
        out[f"throughput_{pp['backend']}"] = pp["throughput_ratio"] >= THROUGHPUT_TARGET
    for f in result.get("full_apply_tiers", []):
        out[f"full_apply_tiers_{f['backend']}"] = f["apply_over_baseline"] <= APPLY_TARGET
    for pp in result.get("packet_path_tiers", []):
        out[f"conn_rate_tiers_{pp['backend']}"] = pp["conn_ratio"] >= CONN_TARGET
        out[f"throughput_tiers_{pp['backend']}"] = pp["throughput_ratio"] >= THROUGHPUT_TARGET
    for pp in result.get("packet_path_services", []):
        out[f"conn_rate_services_{pp['backend']}"] = pp["conn_ratio"] >= CONN_TARGET
        out[f"throughput_services_{pp['backend']}"] = pp["throughput_ratio"] >= THROUGHPUT_TARGET
    iso = result.get("isolation_churn")
    if iso:
        for where in ISOLATION_MEMBER_ONLY:
            if where in iso:
                out[f"isolation_relabel_{where}_no_iptables_call"] = (
                    iso[where]["iptables_calls"] == 0
                )
    for pp in result.get("packet_path_isolation", []):
        out[f"conn_rate_isolation_{pp['backend']}"] = pp["conn_ratio"] >= CONN_TARGET
        out[f"throughput_isolation_{pp['backend']}"] = pp["throughput_ratio"] >= THROUGHPUT_TARGET
    return out


# ----------------------------------------------------------------------- main


def _check_args(args: argparse.Namespace) -> list[Backend]:
    """The backends to measure; SystemExit for options that do not go together."""
    backends: list[Backend] = []
    for name in args.backends.split(","):
        if name not in ("nft", "legacy"):
            raise SystemExit(f"unknown backend {name!r}")
        backends.append("nft" if name == "nft" else "legacy")
    if args.services < 0:
        raise SystemExit("--services must be 0 or more")
    if args.packet_only and args.skip_packet:
        raise SystemExit("--packet-only and --skip-packet leave nothing to measure")
    if args.cnps < 0 or args.isolation < 0:
        raise SystemExit("--cnps and --isolation must be 0 or more")
    if args.isolation_only and not args.isolation:
        raise SystemExit("--isolation-only needs --isolation N (N > 0)")
    return backends


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement; print the table; return the JSON result."""
    console = Console(width=None if sys.stdout.isatty() else 130)
    if os.geteuid() != 0:
        raise SystemExit("bench.agent needs root (network namespaces)")
    backends = _check_args(args)
    options = RenderOptions()
    started = time.perf_counter()
    result: dict[str, Any] = {
        **provenance(),
        "params": dataclasses.asdict(FULL_PARAMS),
        "cnps": args.cnps,
        "isolation": args.isolation,
        "isolation_only": args.isolation_only,
        "repeats": args.repeats,
        "packet_only": args.packet_only,
        "targets": {
            "apply_over_baseline": APPLY_TARGET,
            "churn_fraction_of_full": CHURN_TARGET,
            "conn_ratio": CONN_TARGET,
            "throughput_ratio": THROUGHPUT_TARGET,
        },
    }
    if args.isolation_only:
        console.print("[bold]stockade agent benchmark[/bold]: the IsolationPolicy figures only")
        _isolation_measurements(result, backends, options, args, console)
    elif not args.packet_only:
        console.print(f"[bold]stockade agent benchmark[/bold]: {FULL_PARAMS}")
        gen_s, state = timed(lambda: big_node(options))
        assert isinstance(state, NodeState)
        shape = state.shape()
        result["node"] = shape
        console.print(f"node built and rendered in {gen_s:.1f} s: {shape}")
        tiered = _tiered_node(result, options, args.cnps, console)
        with Lab() as lab:
            spaces = Namespaces(lab)
            try:
                _apply_measurements(result, spaces, state, backends, options, args, console)
                if tiered is not None:
                    _tier_apply_measurements(
                        result, spaces, tiered, backends, options, args, console
                    )
                if args.isolation:
                    console.print(f"relabel churn with IsolationPolicies, {backends[0]} ...")
                    result["isolation_churn"] = measure_isolation_churn(
                        spaces, backends[0], options, args.repeats, args.isolation, console
                    )
                    result["isolation_churn"]["backend"] = backends[0]
            finally:
                spaces.close()
    else:
        console.print("[bold]stockade agent benchmark[/bold]: the packet path only")
    if not args.isolation_only:
        _packet_measurements(result, [] if args.skip_packet else backends, options, args, console)
    result["pass"] = checks(result)
    result["total_s"] = time.perf_counter() - started
    console.print(report_table(result))
    console.print(f"total {result['total_s']:.0f} s")
    finish(result)
    console.print(describe(result), markup=False, highlight=False)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {out}")
    return result


def _isolation_measurements(
    result: dict[str, Any],
    backends: Sequence[Backend],
    options: RenderOptions,
    args: argparse.Namespace,
    console: Console,
) -> None:
    """The IsolationPolicy figures only: relabel churn, and the packet path."""
    with Lab() as lab:
        spaces = Namespaces(lab)
        try:
            console.print(f"relabel churn with IsolationPolicies, {backends[0]} ...")
            result["isolation_churn"] = measure_isolation_churn(
                spaces, backends[0], options, args.repeats, args.isolation, console
            )
            result["isolation_churn"]["backend"] = backends[0]
        finally:
            spaces.close()
    result["packet_path_isolation"] = []
    for backend in [] if args.skip_packet else backends:
        result["packet_path_isolation"].append(_packet_isolation(backend, options, args, console))


def _packet_isolation(
    backend: Backend, options: RenderOptions, args: argparse.Namespace, console: Console
) -> dict[str, Any]:
    console.print(
        f"packet path with {args.cnps} ClusterNetworkPolicies and {args.isolation} "
        f"IsolationPolicies, {backend} ..."
    )
    pp = measure_packet_path(
        backend,
        options,
        args.packet_repeats,
        args.conn_seconds,
        args.bulk_seconds,
        console,
        cnps=args.cnps,
        isolation=args.isolation,
    )
    console.print(f"  {pp['checks']}; {pp['shape']}")
    return pp


def _packet_measurements(
    result: dict[str, Any],
    backends: Sequence[Backend],
    options: RenderOptions,
    args: argparse.Namespace,
    console: Console,
) -> None:
    """Measurements 4 and 5 (and 4 with tiers) into ``result``."""
    result["packet_path"] = []
    result["packet_path_services"] = []
    result["packet_path_tiers"] = []
    result["packet_path_isolation"] = []
    for backend in backends:
        console.print(f"packet path, {backend} ...")
        pp = measure_packet_path(
            backend, options, args.packet_repeats, args.conn_seconds, args.bulk_seconds, console
        )
        result["packet_path"].append(pp)
        if args.cnps:
            console.print(f"packet path with {args.cnps} ClusterNetworkPolicies, {backend} ...")
            pp = measure_packet_path(
                backend,
                options,
                args.packet_repeats,
                args.conn_seconds,
                args.bulk_seconds,
                console,
                cnps=args.cnps,
            )
            console.print(f"  {pp['checks']}; {pp['shape']}")
            result["packet_path_tiers"].append(pp)
        if args.isolation:
            result["packet_path_isolation"].append(
                _packet_isolation(backend, options, args, console)
            )
        if args.services:
            console.print(f"packet path through {args.services:,} Services, {backend} ...")
            pp = measure_packet_path(
                backend,
                options,
                args.packet_repeats,
                args.conn_seconds,
                args.bulk_seconds,
                console,
                services=args.services,
            )
            console.print(f"  {pp['destination']}: {pp['services']}")
            result["packet_path_services"].append(pp)


def _apply_measurements(
    result: dict[str, Any],
    spaces: Namespaces,
    state: NodeState,
    backends: Sequence[Backend],
    options: RenderOptions,
    args: argparse.Namespace,
    console: Console,
) -> None:
    """Measurements 1-3 into ``result``."""
    console.print("render (pure) ...")
    result["render"] = measure_render(state, options, args.repeats)
    result["full_apply"] = []
    for backend in backends:
        console.print(f"full apply vs baseline, {backend} ...")
        full = measure_full(spaces, state, backend, options, args.repeats, console)
        result["full_apply"].append(full)
    console.print(f"pod churn and unchanged apply, {backends[0]} ...")
    result["churn"] = measure_churn_and_unchanged(
        spaces, state, backends[0], options, args.repeats, console
    )
    if not args.no_profile and any(
        f["apply_over_baseline"] > APPLY_TARGET for f in result["full_apply"]
    ):
        console.print("over target: profiling one full apply ...")
        result["profile"] = profile_apply(spaces, state, backends[0], options, 30)
        console.print(result["profile"], markup=False, highlight=False)


def _tiered_node(
    result: dict[str, Any], options: RenderOptions, cnps: int, console: Console
) -> NodeState | None:
    """The big node with ``cnps`` ClusterNetworkPolicies (None for 0); its shape recorded."""
    if not cnps:
        return None
    console.print(f"with {cnps} ClusterNetworkPolicies: {full_params(cnps)}")
    gen_s, tiered = timed(lambda: big_node(options, cnps))
    assert isinstance(tiered, NodeState)
    result["node_tiers"] = tiered.shape()
    console.print(f"tiered node built and rendered in {gen_s:.1f} s: {result['node_tiers']}")
    return tiered


def _tier_apply_measurements(
    result: dict[str, Any],
    spaces: Namespaces,
    state: NodeState,
    backends: Sequence[Backend],
    options: RenderOptions,
    args: argparse.Namespace,
    console: Console,
) -> None:
    """Measurement 1 again on the node with ClusterNetworkPolicies."""
    console.print("render with tiers (pure) ...")
    result["render_tiers"] = measure_render(state, options, args.repeats)
    result["full_apply_tiers"] = []
    for backend in backends:
        console.print(f"full apply vs baseline with tiers, {backend} ...")
        full = measure_full(spaces, state, backend, options, args.repeats, console)
        result["full_apply_tiers"].append(full)
    if not args.no_profile and any(
        f["apply_over_baseline"] > APPLY_TARGET for f in result["full_apply_tiers"]
    ):
        console.print("over target: profiling one full apply with tiers ...")
        result["profile_tiers"] = profile_apply(spaces, state, backends[0], options, 30)
        console.print(result["profile_tiers"], markup=False, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.agent", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--backends", default="nft,legacy", help="comma-separated: nft,legacy")
    parser.add_argument("--repeats", type=int, default=3, help="apply measurements, median")
    parser.add_argument("--packet-repeats", type=int, default=7, help="packet path, median")
    parser.add_argument("--conn-seconds", type=float, default=2.0, help="per connection loop")
    parser.add_argument("--bulk-seconds", type=float, default=3.0, help="per throughput run")
    parser.add_argument("--skip-packet", action="store_true", help="skip the packet path")
    parser.add_argument(
        "--packet-only", action="store_true", help="only the packet path (measurements 4-5)"
    )
    parser.add_argument(
        "--services",
        type=int,
        default=PACKET_SERVICES,
        help="Services of measurement 5 (the packet path through cluster IPs); 0 skips it",
    )
    parser.add_argument(
        "--cnps",
        type=int,
        default=FULL_CNPS,
        help="ClusterNetworkPolicies of the tiered figures (full apply and packet path, "
        "beside the NetworkPolicy-only ones); 0 skips them",
    )
    parser.add_argument(
        "--isolation",
        type=int,
        default=ISOLATION_POLICIES,
        help="IsolationPolicies of the isolation figures (relabel churn, and the packet "
        "path on top of the CNPs); 0 skips them",
    )
    parser.add_argument(
        "--isolation-only",
        action="store_true",
        help="only the IsolationPolicy figures (relabel churn, packet path)",
    )
    parser.add_argument("--no-profile", action="store_true", help="never profile")
    parser.add_argument("--output", default=str(RESULTS / "agent.json"), help="the JSON result")
    args = parser.parse_args(argv)
    result = run(args)
    return 0 if all(result["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
