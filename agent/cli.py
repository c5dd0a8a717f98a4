"""``stockade-agent``: apply a node's rule set to the kernel, verify it, clean up.

``run --node NAME`` (or ``$NODE_NAME``) without ``-f`` watches the API server
for the node's NodeRuleSet and the PeerSets it names (:mod:`stockade.agent.watch`).
Every command also reads rule sets from a file (or stdin): NodeRuleSet and PeerSet
objects as the API would hold them (``kind``, ``metadata``, ``spec``), or a
cluster's YAML compiled on the spot for one node (``--cluster FILE --node NAME``).
``--netns`` acts inside a named network namespace (the sandbox and the tests); in a
cluster the agent runs in the node's own.

Exit codes: 0 success; 1 ``verify`` found differences; 2 bad input (a refused rule
set changes nothing); 3 the kernel refused a write.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from stockade.agent.applier import Applier, RefusedError
from stockade.agent.backend import DEFAULT_XTABLES_WAIT, Tools
from stockade.agent.executor import CommandError, SubprocessExecutor
from stockade.agent.health import (
    BIND_ENV,
    LOOPBACK,
    Health,
    default_deadline,
    parse_bind_addresses,
    serve_all,
)
from stockade.agent.metrics import AgentMetrics, parse_counters
from stockade.agent.plan import PlanError
from stockade.agent.render import RenderOptions, RenderOptionsError
from stockade.kube import KubeError
from stockade.ruleset import NodeRuleSet, PeerSet, node_rule_set_from_dict, peer_set_from_dict

log = logging.getLogger("stockade.agent")

EXIT_DIFF = 1
EXIT_INPUT = 2
EXIT_KERNEL = 3


class InputError(ValueError):
    """The rule-set input cannot be used; nothing was changed."""


@dataclass(frozen=True)
class Bundle:
    """One node's rule set and the shards of the peer sets it names."""

    node: NodeRuleSet
    peer_sets: Mapping[str, Sequence[PeerSet]]


def parse_bundle(docs: Sequence[Any], node_name: str | None = None) -> Bundle:
    """NodeRuleSet and PeerSet objects (or bare specs) into a bundle for one node."""
    nodes: list[NodeRuleSet] = []
    shards: dict[str, list[PeerSet]] = {}
    for i, doc in enumerate(d for d in docs if d is not None):
        items: list[Any] = (
            list(doc["items"]) if isinstance(doc, Mapping) and "items" in doc else [doc]
        )
        for item in items:
            kind = item.get("kind") if isinstance(item, Mapping) else None
            spec = item.get("spec", item) if isinstance(item, Mapping) else item
            try:
                if kind == "NodeRuleSet" or (kind is None and "policies" in spec):
                    nodes.append(node_rule_set_from_dict(spec))
                elif kind == "PeerSet" or (kind is None and "members" in spec):
                    ps = peer_set_from_dict(spec)
                    shards.setdefault(ps.set_name, []).append(ps)
                else:
                    raise InputError(f"document {i + 1}: not a NodeRuleSet or PeerSet ({kind})")
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise InputError(
                    f"document {i + 1} ({kind}): spec.{where}: {first['msg']}"
                ) from None
    if node_name is not None:
        nodes = [n for n in nodes if n.node == node_name]
    if len(nodes) != 1:
        which = f" for node {node_name!r}" if node_name else ""
        raise InputError(f"expected exactly one NodeRuleSet{which}, found {len(nodes)}")
    return Bundle(nodes[0], shards)


def compile_bundle(cluster_files: Sequence[str], node_name: str) -> Bundle:
    """Compile a cluster's YAML and take one node's rule set (handy offline)."""
    from stockade.cluster import load_files  # noqa: PLC0415 - only this path needs it
    from stockade.compiler import compile_cluster  # noqa: PLC0415

    loaded = load_files(cluster_files)
    if loaded.errors:
        raise InputError("; ".join(line for e in loaded.errors for line in e.lines()))
    compiled = compile_cluster(loaded.cluster)
    node = compiled.node_rule_sets.get(node_name)
    if node is None:
        raise InputError(f"no pod of the cluster runs on node {node_name!r}")
    by_set = compiled.by_set()
    return Bundle(node, {name: by_set[name] for name in node.peer_sets})


def read_bundle(args: argparse.Namespace) -> Bundle:
    """The bundle named by the command line (``-f`` or ``--cluster``)."""
    if args.cluster:
        if not args.node:
            raise InputError("--cluster needs --node")
        return compile_bundle(args.cluster, args.node)
    if not args.file:
        raise InputError("give -f FILE (or - for stdin), or --cluster FILE --node NAME")
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise InputError(f"{args.file}: not valid YAML or JSON: {exc}") from None
    return parse_bundle(docs, args.node)


def make_applier(args: argparse.Namespace, families: tuple[int, ...] | None = None) -> Applier:
    """An applier configured from the command line (``families``: None detects them)."""
    options = RenderOptions(
        drop_action="REJECT" if args.reject else "DROP",
        log_denied=args.log_denied is not None,
        log_mode=(args.log_denied or "nflog").upper(),  # type: ignore[arg-type]
        mark_mask=args.mark_mask,
        isolate_new_pods=getattr(args, "isolate_new_pods", False),
    )
    tools = Tools(args.backend) if args.backend else None
    return Applier(
        SubprocessExecutor(netns=args.netns),
        netns=args.netns,
        options=options,
        tools=tools,
        cut_conntrack=not args.no_conntrack_cut,
        xtables_wait=args.xtables_wait,
        families=families,
    )


def cmd_apply(args: argparse.Namespace) -> int:
    """Apply once."""
    bundle = read_bundle(args)
    applier = make_applier(args)
    report = applier.apply(bundle.node, bundle.peer_sets)
    for line in report.differences:
        print(line)
    print(
        f"applied node {bundle.node.node}: {len(report.differences)} difference(s) fixed, "
        f"{report.conntrack_deleted} connection(s) cut, {report.seconds * 1000:.1f} ms"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Print the differences between the kernel and the rule set; exit 1 if any."""
    bundle = read_bundle(args)
    applier = make_applier(args)
    differences = applier.verify(applier.desire(bundle.node, bundle.peer_sets))
    for line in differences:
        print(line)
    if differences:
        print(f"{len(differences)} difference(s) from node {bundle.node.node}'s rule set")
        return EXIT_DIFF
    print(f"the kernel matches node {bundle.node.node}'s rule set")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Remove every chain, rule and set stockade owns."""
    report = make_applier(args).cleanup()
    for line in report.differences:
        print(line)
    print(f"removed stockade's chains and {report.destroyed_sets} set(s)")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """Print what would be programmed (restore text and sets), touching nothing."""
    bundle = read_bundle(args)
    # Offline: both families, whatever this machine has (nothing is detected or read).
    desired = make_applier(args, families=(4, 6)).desire(bundle.node, bundle.peer_sets)
    for family in (4, 6):
        if args.family in (None, family):
            print(f"# IPv{family} iptables-restore --noflush input")
            print(desired.rendered.restore_text(family), end="")
            print(f"# IPv{family} ipsets")
            print(desired.rendered.ipset_text(family), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Watch the API (--node) or a file (-f), apply changes, resync until stopped."""
    node = args.node or os.environ.get("NODE_NAME")
    if not args.file and not args.cluster and node:
        return run_api(args, node)
    if args.isolate_new_pods:
        raise InputError("--isolate-new-pods needs the API mode (--node without -f/--cluster)")
    applier = make_applier(args)
    metrics = AgentMetrics()
    health = _serve_health(args, metrics)
    _detect_families(applier, metrics, health)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    source = Path(args.file) if args.file and args.file != "-" else None
    seen: float | None = None
    next_resync = 0.0
    while not stop:
        mtime = source.stat().st_mtime if source and source.exists() else 0.0
        now = time.monotonic()
        try:
            if mtime != seen:
                seen = mtime
                bundle = read_bundle(args)
                report = applier.apply(bundle.node, bundle.peer_sets)
                metrics.record(report, applier.last.rendered if applier.last else None, time.time())
            elif now >= next_resync:
                report = applier.resync()
                metrics.record(report, applier.last.rendered if applier.last else None, time.time())
                next_resync = now + args.resync_interval
                _record_counters(applier, metrics)
        except (InputError, RefusedError) as exc:
            metrics.errors.labels("refused").inc()
            log.error("%s; keeping the last applied state", exc)
        except (CommandError, PlanError) as exc:
            metrics.errors.labels("kernel").inc()
            log.error("apply failed: %s; will retry", exc)
            seen = None
        health.beat(applied_from="file" if applier.last else None, last_sync=metrics.last_sync)
        time.sleep(args.poll_interval)
    return 0


def run_api(args: argparse.Namespace, node: str) -> int:
    """The API mode of ``run``: watch NodeRuleSet/<node> and the PeerSets, until stopped."""
    from stockade.agent.watch import AgentWatcher, WatchOptions  # noqa: PLC0415
    from stockade.kube import KubeClient, KubeConfig  # noqa: PLC0415

    config = KubeConfig.load(args.kubeconfig)
    applier = make_applier(args)
    metrics = AgentMetrics()
    health = _serve_health(args, metrics)
    _detect_families(applier, metrics, health)
    options = WatchOptions(
        node=node,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        resync_interval=args.resync_interval,
        restore_after=args.restore_after,
    )

    async def main() -> None:
        client = KubeClient(config, timeout=args.api_timeout)
        watcher = AgentWatcher(
            client,
            applier,
            options,
            metrics,
            after_resync=lambda: _record_counters(applier, metrics),
            health=health,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, watcher.stop)
        log.info("watching NodeRuleSet %s and the PeerSets at %s", node, config.server)
        try:
            await watcher.run()
        finally:
            await client.close()
            config.cleanup()

    asyncio.run(main())
    return 0


def bind_addresses(args: argparse.Namespace) -> list[str]:
    """Where to serve: ``--bind-address``, else ``$STOCKADE_BIND_ADDRESS``, else loopback.

    The DaemonSet sets the variable from the downward API (``status.hostIPs``): the
    node's own addresses, one socket each, rather than every interface.
    """
    given = args.bind_address or [os.environ.get(BIND_ENV, "")]
    try:
        hosts = parse_bind_addresses(given)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if not hosts:
        log.warning(
            "no --bind-address and no $%s: serving /metrics, /healthz and /readyz on %s only",
            BIND_ENV,
            LOOPBACK,
        )
        hosts = [LOOPBACK]
    return hosts


def _serve_health(args: argparse.Namespace, metrics: AgentMetrics) -> Health:
    """The loop's health, served with the metrics on --metrics-port (unless 0)."""
    health = Health(args.liveness_deadline or default_deadline(args.resync_interval))
    if args.metrics_port:
        serve_all(health, metrics.registry, args.metrics_port, bind_addresses(args))
    return health


def _detect_families(applier: Applier, metrics: AgentMetrics, health: Health) -> None:
    """Detect the node's IP families at start (logged by the applier) and show them."""
    families = applier.families
    for family in (4, 6):
        metrics.families.labels(str(family)).set(1 if family in families else 0)
    health.set_families([f"IPv{f}" for f in families])


def _record_counters(applier: Applier, metrics: AgentMetrics) -> None:
    if applier.last is None:
        return
    groups: dict[str, str] = {}
    for fam in (applier.last.rendered.v4, applier.last.rendered.v6):
        for chain in fam.chains:
            for rule in chain.rules:
                target = getattr(rule.action, "chain", None)
                if target and rule.comment and ":" in rule.comment:
                    groups[target] = rule.comment.split(": ", 1)[-1]
    for family in applier.families:
        out = applier.executor.run([applier.tools.save(family), "-c", "-t", "filter"])
        metrics.record_counters(parse_counters(out), groups)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"error: {self.prog}: {message}\n")


def _mask(text: str) -> int:
    return int(text, 0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``stockade-agent``."""
    parser = _Parser(prog="stockade-agent", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = _Parser(add_help=False)
    common.add_argument("--netns", help="act inside this network namespace")
    common.add_argument("--backend", choices=("legacy", "nft"), help="skip detection")
    common.add_argument("--reject", action="store_true", help="REJECT instead of DROP")
    common.add_argument("--log-denied", choices=("nflog", "log"), help="log denied packets")
    common.add_argument("--mark-mask", type=_mask, default=0x70000, help="mark bits to use")
    common.add_argument(
        "--no-conntrack-cut",
        action="store_true",
        help="keep established flows that a change denies",
    )
    common.add_argument(
        "--xtables-wait",
        type=int,
        default=DEFAULT_XTABLES_WAIT,
        metavar="S",
        help="seconds iptables-restore waits for the xtables lock (legacy backend; "
        f"kube-proxy's value, {DEFAULT_XTABLES_WAIT}, by default; 0: fail at once)",
    )
    common.add_argument("-v", "--verbose", action="store_true")
    source = _Parser(add_help=False)
    source.add_argument("-f", "--file", help="NodeRuleSet and PeerSet objects; - for stdin")
    source.add_argument("--cluster", action="append", help="cluster YAML to compile instead")
    source.add_argument(
        "--node", help="the node (required with --cluster; run: API mode, default $NODE_NAME)"
    )
    for name, func, parents in (
        ("apply", cmd_apply, [common, source]),
        ("verify", cmd_verify, [common, source]),
        ("render", cmd_render, [common, source]),
        ("cleanup", cmd_cleanup, [common]),
        ("run", cmd_run, [common, source]),
    ):
        p = sub.add_parser(name, parents=parents, help=(func.__doc__ or "").split("\n")[0])
        p.set_defaults(func=func)
        if name == "render":
            p.add_argument("--family", type=int, choices=(4, 6))
        if name == "run":
            p.add_argument("--resync-interval", type=float, default=30.0)
            p.add_argument("--poll-interval", type=float, default=1.0)
            p.add_argument(
                "--metrics-port",
                type=int,
                default=0,
                help="/metrics, /healthz, /readyz (0: off; the DaemonSet's is 9977)",
            )
            p.add_argument(
                "--bind-address",
                "--metrics-host",
                action="append",
                metavar="IP[,IP]",
                help="address(es) to serve them on, one socket each (repeatable, or "
                f"comma-separated; default ${BIND_ENV}, else {LOOPBACK}; '::' is every "
                "address of both families, '0.0.0.0' every IPv4 one)",
            )
            p.add_argument(
                "--liveness-deadline",
                type=float,
                default=0.0,
                metavar="S",
                help="/healthz fails when the loop made no round in S seconds "
                "(default: 3 resync intervals, at least 60)",
            )
            p.add_argument("--kubeconfig", help="API mode: kubeconfig (default: in-cluster)")
            p.add_argument(
                "--state-dir",
                default="/var/lib/stockade",
                help="API mode: keep the last applied bundle here ('' for nowhere)",
            )
            p.add_argument(
                "--restore-after",
                type=float,
                default=3.0,
                help="API mode: apply the saved bundle if nothing came from the API by then",
            )
            p.add_argument(
                "--isolate-new-pods",
                action="store_true",
                help="API mode: deny all traffic of a pod on this node until its rule set "
                "lists it (watches the node's Pods)",
            )
            p.add_argument("--api-timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stockade-agent``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "run" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        code: int = args.func(args)
    except (InputError, RefusedError, RenderOptionsError, OSError, KubeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (CommandError, PlanError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_KERNEL
    return code


if __name__ == "__main__":
    sys.exit(main())
