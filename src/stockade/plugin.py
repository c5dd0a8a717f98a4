"""``kubectl stockade``: the offline CLI's answers for a live cluster, and sync state.

Installed as the console script ``kubectl-stockade``, which kubectl runs for
``kubectl stockade ...``:

- ``matrix [-n NS | -A] [--port P] [--protocol PROTO] [-o table|json]``: who may
  connect to whom, over the pods of one namespace (default: the context's) or of
  all namespaces;
- ``explain SRC DST --port P [--protocol PROTO]``: the verdict for one connection
  and the policies and rules behind it (``pod`` means ``<namespace>/pod``);
- ``status [-o table|json]``: every node's NodeRuleSet as its agent reports it
  (applied, last sync, lag, error) and on how many nodes each policy is applied.

It reads Namespaces, Pods, NetworkPolicies, ClusterNetworkPolicies
(``policy.networking.k8s.io/v1alpha2``; a cluster without that API is read without
them, with one warning), Nodes and NodeRuleSets with the user's
kubeconfig (:class:`stockade.kube.KubeClient`; ``--kubeconfig``, ``--context``,
``$KUBECONFIG``) and then runs exactly what ``stockade matrix``/``stockade
explain`` run on files (:mod:`stockade.cli`, :mod:`stockade.output`): the compiler
and the dataplane model, so the answer is what the agents enforce once every node
reports its rule set applied. When a node does not, the table says so in a note.

Exit codes: 0 answered, 1 the cluster could not be read, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

from stockade import __version__, cli, output
from stockade.cluster import Cluster, parse_documents
from stockade.errors import InvalidObjectError
from stockade.kube import (
    CLUSTER_NETWORK_POLICIES,
    ENDPOINT_SLICES,
    ISOLATION_POLICIES,
    NAMESPACES,
    NETWORK_POLICIES,
    NODE_RULE_SETS,
    NODES,
    PODS,
    SERVICES,
    JsonObject,
    KubeClient,
    KubeConfig,
    KubeError,
    NotFound,
    Resource,
)
from stockade.lint import policy_warnings
from stockade.safetext import printable
from stockade.services import parse_endpoint_slice, parse_service
from stockade.verdict import Dataplane

EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
PROG = "kubectl stockade"

NO_CNP_API = (
    "no ClusterNetworkPolicy API (policy.networking.k8s.io/v1alpha2) on this cluster: "
    "only NetworkPolicies are evaluated"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- options


def _connection(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument(
        "--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG, ~/.kube)"
    )
    parser.add_argument("--context", default=default, help="kubeconfig context to use")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kubectl stockade``."""
    parser = _Parser(
        prog=PROG,
        description="stockade for a live cluster: reachability, verdicts, sync state.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"stockade {__version__}")
    # Accepted before and after the command (kubectl users write both); the
    # subcommand's value wins, so its default must not overwrite this one.
    _connection(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    matrix = sub.add_parser(
        "matrix",
        help="print which pods may connect to which",
        description="Print the reachability matrix of the pods of a namespace (or all).",
        allow_abbrev=False,
    )
    scope = matrix.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="the namespace's pods (default: the context's)")
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="the pods of every namespace"
    )
    cli.probe_options(matrix, port_required=False)
    matrix.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="default: table"
    )
    matrix.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the table: auto (default) colours only a terminal, honouring NO_COLOR",
    )
    _connection(matrix, argparse.SUPPRESS)

    explain = sub.add_parser(
        "explain",
        help="explain why one connection is allowed or denied",
        description="The verdict for a connection from SRC to DST and the policies and "
        "rules that decide it. SRC and DST are ns/pod, pod (in -n's namespace) or an IP.",
        allow_abbrev=False,
    )
    explain.add_argument("src", metavar="SRC", help="source: ns/pod, pod, or an IP address")
    explain.add_argument("dst", metavar="DST", help="destination: ns/pod, pod, or an IP address")
    explain.add_argument("-n", "--namespace", help="namespace of a bare pod name")
    cli.probe_options(explain, port_required=True)
    explain.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="default: text"
    )
    _connection(explain, argparse.SUPPRESS)

    status = sub.add_parser(
        "status",
        help="every node's rule-set sync state, and each policy's node count",
        description="Each NodeRuleSet as its agent reports it (applied, last sync, lag, "
        "error), then each NetworkPolicy and the number of nodes it is applied on.",
        allow_abbrev=False,
    )
    status.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="default: table"
    )
    _connection(status, argparse.SUPPRESS)
    return parser


def load_config(kubeconfig: str | None, context: str | None) -> KubeConfig:
    """The user's kubeconfig, as kubectl would pick it (in-cluster inside a pod)."""
    if context is None:
        return KubeConfig.load(kubeconfig)
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return KubeConfig.from_file(path or Path.home() / ".kube" / "config", context)


# --------------------------------------------------------------------------- reading


@dataclass
class Snapshot:
    """What was read from the cluster."""

    server: str
    namespaces: list[JsonObject] = field(default_factory=list)
    pods: list[JsonObject] = field(default_factory=list)
    policies: list[JsonObject] = field(default_factory=list)
    # None when the NodeRuleSet resource does not exist (stockade not installed).
    rule_sets: list[JsonObject] | None = None
    # For explain: a Service destination and its endpoints.
    services: list[JsonObject] = field(default_factory=list)
    slices: list[JsonObject] = field(default_factory=list)
    # None when the ClusterNetworkPolicy API does not exist (its CRD not installed).
    cluster_policies: list[JsonObject] | None = field(default_factory=list)
    nodes: list[JsonObject] = field(default_factory=list)
    # IsolationPolicies (empty when their CRD is not installed, stockade's being older).
    isolation_policies: list[JsonObject] = field(default_factory=list)


async def read_snapshot(
    config: KubeConfig,
    *,
    pods: bool = True,
    policies: bool = True,
    rule_sets: bool = True,
    services: bool = False,
) -> Snapshot:
    """List what the command needs (Namespaces, Pods and Nodes, NetworkPolicies and
    ClusterNetworkPolicies, NodeRuleSets, and for ``services`` the Services and
    EndpointSlices)."""
    snap = Snapshot(config.server)
    async with KubeClient(config) as client:

        async def items(resource: Resource) -> list[JsonObject]:
            found, _ = await client.list(resource)
            return found

        async def node_rule_sets() -> list[JsonObject] | None:
            try:
                return await items(NODE_RULE_SETS)
            except NotFound:
                return None

        async def cluster_policies() -> list[JsonObject] | None:
            try:
                return await items(CLUSTER_NETWORK_POLICIES)
            except NotFound:  # the CRD is not installed
                return None

        async def nothing() -> list[JsonObject]:
            return []

        async def isolation_policies() -> list[JsonObject]:
            try:
                return await items(ISOLATION_POLICIES)
            except NotFound:  # an older install, without the CRD
                return []

        # Listed beside the rest (gather's typing stops at six results).
        isolations = asyncio.ensure_future(isolation_policies() if pods and policies else nothing())
        (
            snap.namespaces,
            snap.pods,
            snap.nodes,
            snap.policies,
            snap.cluster_policies,
            snap.rule_sets,
        ) = await asyncio.gather(
            items(NAMESPACES) if pods else nothing(),
            items(PODS) if pods else nothing(),
            items(NODES) if pods else nothing(),
            items(NETWORK_POLICIES) if policies else nothing(),
            cluster_policies() if pods and policies else nothing(),
            node_rule_sets() if rule_sets else nothing(),
        )
        snap.isolation_policies = await isolations
        if services:

            async def optional(resource: Resource) -> list[JsonObject]:
                try:
                    return await items(resource)
                except NotFound:  # an API server without the resource
                    return []

            snap.services, snap.slices = await asyncio.gather(
                optional(SERVICES), optional(ENDPOINT_SLICES)
            )
    return snap


def build_cluster(snap: Snapshot) -> tuple[Cluster, list[str]]:
    """The parsed snapshot, a warning per problem of an object stockade rejects, and
    one per policy rule that can never match (:mod:`stockade.lint`).

    The controller rejects such objects too: a new invalid policy enforces nothing
    (an edited one keeps its last valid version, which the API no longer shows).
    """
    result = parse_documents(
        [
            *snap.namespaces,
            *snap.pods,
            *snap.nodes,
            *snap.policies,
            *(snap.cluster_policies or ()),
            *snap.isolation_policies,
        ]
    )
    warnings = [] if snap.cluster_policies is not None else [NO_CNP_API]
    warnings += [
        f"{line} (ignored, as the controller ignores it)"
        for error in result.errors
        for line in error.lines()
    ]
    warnings += policy_warnings(result.cluster.policies.values())
    warnings += cli.cluster_policy_warnings(result.cluster)
    return result.cluster, warnings


# --------------------------------------------------------------------------- matrix/explain


def enforcement_notes(rule_sets: Sequence[JsonObject] | None, nodes: set[str]) -> list[str]:
    """Notes for the nodes among ``nodes`` whose agents do not report their rules applied."""
    if rule_sets is None:
        return ["no NodeRuleSet resource: stockade is not installed, nothing is enforced"]
    notes = []
    for rs in sorted(rule_sets, key=_name):
        node = str((rs.get("spec") or {}).get("node") or _name(rs))
        if node not in nodes:
            continue
        state = sync_state(rs)
        if state != "applied":
            notes.append(
                f"node {node}: rule set {state} (kubectl stockade status); "
                "its pods may still be under older rules"
            )
    return notes


def run_matrix(
    args: argparse.Namespace,
    cluster: Cluster,
    rule_sets: Sequence[JsonObject] | None,
    namespace: str,
    stdout: TextIO,
) -> str:
    """The ``matrix`` command's output: :mod:`stockade.output`'s, as ``stockade matrix``."""
    shown = [p for p in cluster.active_pods() if args.all_namespaces or p.namespace == namespace]
    matrix = Dataplane(cluster).matrix(args.port, args.protocol, pods=shown, family=args.family)
    if args.output == "json":
        return output.matrix_json(matrix, args.port, args.protocol) + "\n"
    view = replace(cluster, pods={p.key: p for p in shown})
    notes = cli._family_notes(view, args.family) + cli.host_network_notes(view)
    notes += enforcement_notes(rule_sets, {p.node_name for p in shown if p.node_name})
    glyphs = output.UNICODE_GLYPHS if cli._can_encode(stdout, "✓✗─") else output.ASCII_GLYPHS
    return output.matrix_table(
        matrix,
        args.port,
        args.protocol,
        color=cli._use_color(args.color, stdout),
        glyphs=glyphs,
        notes=notes,
    )


def qualify(endpoint: str, namespace: str) -> str:
    """``pod`` -> ``namespace/pod``; ``ns/pod`` and IP addresses stay as they are."""
    if "/" in endpoint:
        return endpoint
    try:
        ipaddress.ip_address(endpoint)
    except ValueError:
        return f"{namespace}/{endpoint}"
    return endpoint


def run_explain(
    args: argparse.Namespace, cluster: Cluster, namespace: str, snap: Snapshot | None = None
) -> str:
    """``stockade explain``'s output (raises :class:`cli.CliError` for bad endpoints).

    A destination ``svc/ns/name`` or a cluster IP is resolved with the cluster's
    Services and EndpointSlices (``snap``), one verdict per ready backend.
    """
    offline = argparse.Namespace(**vars(args))
    offline.src, offline.dst = qualify(args.src, namespace), qualify(args.dst, namespace)
    loaded = cli.Loaded(cluster)
    if snap is not None:
        for obj in snap.services:
            with contextlib.suppress(InvalidObjectError):  # kube-proxy skips it too
                loaded.services.append(parse_service({"kind": "Service", **obj}))
        for obj in snap.slices:
            with contextlib.suppress(InvalidObjectError):
                loaded.slices.append(parse_endpoint_slice({"kind": "EndpointSlice", **obj}))
    return cli.run_explain(offline, loaded)


# --------------------------------------------------------------------------- status


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def sync_state(rs: Mapping[str, Any]) -> str:
    """``applied``, ``pending`` (a newer spec not yet looked at), ``failed`` or ``unknown``."""
    status = rs.get("status") or {}
    if not status:
        return "unknown"
    generation = (rs.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return "pending"
    return "applied" if status.get("applied") else "failed"


def status_report(
    rule_sets: Sequence[JsonObject], policies: Sequence[JsonObject], now: datetime
) -> dict[str, Any]:
    """The ``status`` data: one entry per node, one per policy (pure)."""
    nodes: list[dict[str, Any]] = []
    on_nodes: dict[str, list[str]] = {}
    applied_on: dict[str, int] = {}
    for rs in sorted(rule_sets, key=_name):
        spec, status = rs.get("spec") or {}, rs.get("status") or {}
        node = str(spec.get("node") or _name(rs))
        last = _parse_time(status.get("lastSync"))
        state = sync_state(rs)
        nodes.append(
            {
                "node": node,
                "state": state,
                "applied": bool(status.get("applied")),
                "lastSync": status.get("lastSync"),
                "lagSeconds": round((now - last).total_seconds(), 3) if last else None,
                "error": status.get("error"),
                "policies": len(spec.get("policies") or []),
                "pods": len(spec.get("pods") or []),
                "generation": (rs.get("metadata") or {}).get("generation"),
                "observedGeneration": status.get("observedGeneration"),
            }
        )
        for entry in spec.get("policies") or []:
            # spec.policies[] is {policy: CompiledPolicy, targets: [local pods]}.
            name = str((entry.get("policy") or {}).get("name"))
            on_nodes.setdefault(name, []).append(node)
            applied_on[name] = applied_on.get(name, 0) + (state == "applied")
    names = set(on_nodes) | {
        f"{(p.get('metadata') or {}).get('namespace')}/{_name(p)}" for p in policies
    }
    report = [
        {
            "policy": name,
            "nodes": len(on_nodes.get(name, [])),
            "applied": applied_on.get(name, 0),
            "nodeNames": sorted(on_nodes.get(name, [])),
        }
        for name in sorted(names)
    ]
    return {"nodes": nodes, "policies": report}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60}s"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    return f"{s // 86400}d"


def columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns three spaces apart, as ``kubectl get`` prints them.

    Every cell is escaped (:func:`~stockade.safetext.printable`): names, states and
    agents' error messages come from the cluster and must not reach the terminal raw.
    """
    table = [[printable(c) for c in r] for r in (header, *rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(lines) + "\n"


def status_text(report: Mapping[str, Any]) -> str:
    """The ``status`` report for people."""
    nodes = report["nodes"]
    if not nodes:
        text = "no NodeRuleSets: no policy selects a scheduled pod yet\n"
    else:
        text = columns(
            ("NODE", "STATE", "POLICIES", "PODS", "LAST-SYNC", "LAG", "ERROR"),
            [
                (
                    n["node"],
                    n["state"],
                    str(n["policies"]),
                    str(n["pods"]),
                    n["lastSync"] or "-",
                    _age(n["lagSeconds"]),
                    n["error"] or "",
                )
                for n in nodes
            ],
        )
        behind = sum(1 for n in nodes if n["state"] != "applied")
        text += f"{len(nodes) - behind} of {len(nodes)} nodes applied\n"
    policies = report["policies"]
    if policies:
        text += "\n" + columns(
            ("POLICY", "NODES", "APPLIED"),
            [(p["policy"], str(p["nodes"]), str(p["applied"])) for p in policies],
        )
    return text


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None, *, now: datetime | None = None) -> int:
    """Run ``kubectl stockade``; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        config = load_config(args.kubeconfig, args.context)
    except (KubeError, OSError) as exc:
        print(f"error: cannot load the kubeconfig: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    status = args.command == "status"
    try:
        snap = asyncio.run(
            read_snapshot(
                config,
                pods=not status,
                rule_sets=args.command != "explain",
                services=args.command == "explain",
            )
        )
    except KubeError as exc:
        reason = printable(f"{config.server}: {exc}")
        print(f"error: cannot read the cluster at {reason}", file=sys.stderr)
        return EXIT_API
    finally:
        config.cleanup()
    namespace = getattr(args, "namespace", None) or config.namespace
    try:
        if status:
            if snap.rule_sets is None:
                raise cli.CliError(["no NodeRuleSet resource: is stockade installed?"])
            report = status_report(snap.rule_sets, snap.policies, now or datetime.now(UTC))
            if args.output == "json":
                text = json.dumps(report, indent=2) + "\n"
            else:
                text = status_text(report)
        else:
            cluster, warnings = build_cluster(snap)
            for line in warnings:
                print(f"warning: {printable(line)}", file=sys.stderr)
            if args.command == "matrix":
                text = run_matrix(args, cluster, snap.rule_sets, namespace, sys.stdout)
            else:
                text = run_explain(args, cluster, namespace, snap)
    except cli.CliError as exc:
        for line in exc.lines:
            print(f"error: {printable(line)}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(text)
    sys.stdout.flush()
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
