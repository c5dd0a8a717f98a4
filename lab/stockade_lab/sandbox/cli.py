"""``stockade sandbox``: a whole cluster on this machine, in network namespaces.

Exit codes: 0 done; 1 ``probe --expect`` found differences; 2 bad input or the
sandbox could not do what was asked (the reason is on stderr); 3 ``probe`` could not
measure every cell (a protocol this kernel lacks, a source that is gone): the
matrix shows such cells as ``?`` (``null`` in JSON) and stderr says why.

Everything printed for people passes through :func:`stockade.safetext.printable`:
pod, node and namespace names come from the API and may hold control characters.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

from stockade import output
from stockade.cli import port_number, protocol_name
from stockade.safetext import printable
from stockade_lab.sandbox.api import Matrix, Sandbox, differences
from stockade_lab.sandbox.common import DEFAULT_NAME, SERVE_PORTS_DEFAULT, SandboxError

EXIT_DIFF = 1
EXIT_ERROR = 2
EXIT_UNKNOWN = 3
"""``probe``: at least one cell could not be measured (never reported as denied)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``stockade sandbox``."""
    parser = _Parser(
        prog="stockade sandbox",
        description="A cluster on this machine: nodes and pods as network namespaces, an "
        "emulated API server, the real controller and agents (root only).",
    )
    parser.add_argument(
        "--name",
        default=os.environ.get("STOCKADE_SANDBOX", DEFAULT_NAME),
        help="which sandbox (default: $STOCKADE_SANDBOX, else 'default')",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start the sandbox in the background; return when ready")
    up.add_argument("--nodes", type=int, default=2, help="number of nodes (default 2)")
    up.add_argument("--dual-stack", action="store_true", help="IPv6 pod addresses too")
    up.add_argument("-f", "--filename", dest="files", action="append", default=[], metavar="FILE")
    up.add_argument(
        "--serve-ports",
        default=",".join(str(p) for p in SERVE_PORTS_DEFAULT),
        help="ports every pod answers on besides its declared ones (default 80,81)",
    )
    up.add_argument("--agent-mode", choices=("auto", "api", "file"), default="auto")
    up.add_argument(
        "--isolate-new-pods",
        action="store_true",
        help="run the agents with --isolate-new-pods (API mode)",
    )
    up.add_argument(
        "--image",
        default=None,
        help="run the agents and the controller from this image, with the manifests' "
        "security contexts (docs/sandbox.md, 'Image mode')",
    )
    up.add_argument("--timeout", type=float, default=90.0)
    for name, text in (("apply", "create or update objects"), ("delete", "delete objects")):
        p = sub.add_parser(name, help=f"{text}, then wait until every node enforces it")
        p.add_argument(
            "-f", "--filename", dest="files", action="append", required=True, metavar="FILE"
        )
        p.add_argument("--no-wait", action="store_true", help="do not wait for convergence")
        p.add_argument("--timeout", type=float, default=30.0)
    probe = sub.add_parser("probe", help="the reachability matrix from real packets")
    probe.add_argument("--port", type=port_number, default=80)
    probe.add_argument("--protocol", type=protocol_name, default="TCP")
    probe.add_argument("--family", type=int, choices=(4, 6))
    probe.add_argument("-o", "--output", choices=("table", "json"), default="table")
    probe.add_argument(
        "--expect", action="store_true", help="compare with the engine; exit 1 on a difference"
    )
    probe.epilog = (
        "A cell that could not be measured is shown as ? (null in JSON) and the "
        "command exits with 3, saying why on stderr."
    )
    probe.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    wait = sub.add_parser("wait", help="wait until every node enforces the current objects")
    wait.add_argument("--timeout", type=float, default=30.0)
    sub.add_parser("kubeconfig", help="print the path of the sandbox's kubeconfig")
    status = sub.add_parser("status", help="nodes, pods and processes")
    status.add_argument("-o", "--output", choices=("text", "json"), default="text")
    sub.add_parser("down", help="stop and remove everything (also after a crash)")
    node = sub.add_parser("node", help="add or list nodes (Node objects with labels)")
    node_sub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    add = node_sub.add_parser(
        "add", help="add a node: namespace, Node object, agent; its pod CIDR is the next free"
    )
    add.add_argument("node_name", metavar="NAME", nargs="?", help="default node-<n>")
    add.add_argument(
        "--label",
        "-l",
        dest="labels",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_label,
        help="a label of the Node object (repeatable); relabel later with kubectl label node",
    )
    add.add_argument("--no-wait", action="store_true", help="do not wait for convergence")
    add.add_argument("--timeout", type=float, default=30.0)
    node_list = node_sub.add_parser("list", help="the Node objects: labels and addresses")
    node_list.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return parser


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"a label is KEY=VALUE, not {text!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``stockade sandbox ...``."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return _run(args)
    except SandboxError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "up":
        return cmd_up(args)
    sandbox = Sandbox(args.name)
    if args.command == "down":
        for line in sandbox.down() or ["nothing to clean"]:
            print(printable(line))
        return 0
    if args.command == "kubeconfig":
        if not sandbox.is_up():
            raise SandboxError(f"sandbox {args.name!r} is not up")
        print(sandbox.kubeconfig)
        return 0
    if not sandbox.is_up():
        raise SandboxError(f"sandbox {args.name!r} is not up; run `stockade sandbox up`")
    if args.command in ("apply", "delete"):
        act = sandbox.apply if args.command == "apply" else sandbox.delete
        seconds = act(args.files, wait=not args.no_wait, timeout=args.timeout)
        done = "applied" if args.command == "apply" else "deleted"
        if args.no_wait:
            print(f"{done}; not waiting for the nodes")
        else:
            print(f"{done}; every node enforces it after {seconds:.2f} s")
        return 0
    if args.command == "wait":
        result = sandbox.wait_converged(args.timeout)
        print(f"converged after {result.seconds:.2f} s")
        return 0
    if args.command == "status":
        return cmd_status(sandbox, args.output)
    if args.command == "node":
        return cmd_node(sandbox, args)
    return cmd_probe(sandbox, args)


def cmd_node(sandbox: Sandbox, args: argparse.Namespace) -> int:
    """``node add NAME --label k=v`` and ``node list``."""
    if args.node_command == "add":
        info = sandbox.add_node(args.node_name, dict(args.labels))
        cidrs = ", ".join(c for c in (info.get("cidr4"), info.get("cidr6")) if c)
        addresses = ", ".join(ip for ip in (info.get("ip4"), info.get("ip6")) if ip)
        print(printable(f"node {info['node']}: address {addresses}, pods {cidrs}"))
        if not args.no_wait:
            seconds = sandbox.wait_converged(args.timeout).seconds
            print(f"every node enforces the current objects after {seconds:.2f} s")
        return 0
    nodes = sandbox.api.list("Node")
    if args.output == "json":
        print(json.dumps(nodes, indent=2, sort_keys=True))
        return 0
    for obj in sorted(nodes, key=lambda o: str(o["metadata"].get("name"))):
        meta, status = obj["metadata"], obj.get("status") or {}
        labels = ",".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items()))
        addresses = " ".join(
            f"{a.get('type')}={a.get('address')}" for a in status.get("addresses") or []
        )
        print(printable(f"{meta.get('name')}: {addresses or '-'} labels {labels or '-'}"))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Bring the sandbox up, showing each phase as it completes."""
    try:
        ports = [int(p) for p in args.serve_ports.split(",") if p.strip()]
    except ValueError:
        raise SandboxError(f"--serve-ports: not a list of ports: {args.serve_ports!r}") from None
    sandbox = Sandbox(
        args.name,
        nodes=args.nodes,
        dual_stack=args.dual_stack,
        serve_ports=ports,
        agent_mode=args.agent_mode,
        isolate_new_pods=args.isolate_new_pods,
        image=args.image,
    )
    console = Console(stderr=True)
    start = time.monotonic()
    previous: list[tuple[str, float]] = []
    with console.status("starting the sandbox supervisor") as spinner:

        def phase(text: str) -> None:
            now = time.monotonic()
            if previous:
                name, began = previous[-1]
                console.print(f"[green]✓[/] {name} [dim]({now - began:.1f} s)[/]")
            previous.append((text, now))
            spinner.update(text)

        sandbox.up(timeout=args.timeout, on_phase=phase)
    state = sandbox.layout.read_state() or {}
    nodes = state.get("nodes") or {}
    # Values are escaped for rich's markup too: "[red]" in a name stays text.
    console.print(
        f"[bold]sandbox {escape(repr(args.name))} is up[/] in {time.monotonic() - start:.1f} s: "
        f"{len(nodes)} node(s), agents in {_safe(state.get('agent_mode'))} mode"
    )
    for name, info in sorted(nodes.items()):
        cidrs = ", ".join(c for c in (info.get("cidr4"), info.get("cidr6")) if c)
        console.print(f"  {_safe(name)}: address {_safe(info['ip4'])}, pods {_safe(cidrs)}")
    print(printable(f"export KUBECONFIG={sandbox.kubeconfig}"))
    if args.files:
        seconds = sandbox.apply(args.files)
        applied = printable(", ".join(args.files))
        print(f"applied {applied}; every node enforces it after {seconds:.2f} s")
    return 0


def _safe(value: object) -> str:
    """``value`` for rich's console: control characters and markup escaped."""
    return escape(printable(str(value)))


def cmd_status(sandbox: Sandbox, mode: str) -> int:
    """Print the supervisor's view."""
    state = sandbox.status()
    if mode == "json":
        # json.dumps escapes control characters (ensure_ascii): exact and safe.
        print(json.dumps(state, indent=2, sort_keys=True))
        return 0
    lines = [
        f"sandbox {sandbox.name!r}: {state.get('phase')}, run id {state.get('run_id')}",
        f"kubeconfig: {sandbox.kubeconfig}",
    ]
    for name, info in sorted((state.get("nodes") or {}).items()):
        lines.append(f"node {name}: {info['ip4']} pods {info['cidr4']} (namespace {info['ns']})")
    for name, info in sorted((state.get("externals") or {}).items()):
        ip6 = f", {info['ip6']}" if info.get("ip6") else ""
        lines.append(f"external {name}: {info['ip4']}{ip6}")
    for name, info in sorted((state.get("processes") or {}).items()):
        word = "running" if info["running"] else "EXITED"
        lines.append(f"process {name}: pid {info['pid']} {word}")
    for key, info in sorted((state.get("pods") or {}).items()):
        lines.append(f"pod {key}: {', '.join(info['ips'])} on {info['node']}")
    problems = sandbox.problems()
    lines.append("converged" if not problems else "not converged: " + "; ".join(problems[:3]))
    # Pod names and problems come from the API: escaped, line by line.
    for line in lines:
        print(printable(line))
    return 0


def side_by_side(left: str, right: str, gap: int = 6) -> str:
    """Two blocks of text next to each other."""
    a, b = left.rstrip("\n").splitlines(), right.rstrip("\n").splitlines()
    width = max((len(_plain(line)) for line in a), default=0)
    lines = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else ""
        y = b[i] if i < len(b) else ""
        lines.append(x + " " * (width - len(_plain(x)) + gap) + y)
    return "\n".join(lines) + "\n"


def _plain(text: str) -> str:
    import re  # noqa: PLC0415

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def cmd_probe(sandbox: Sandbox, args: argparse.Namespace) -> int:
    """Probe every ordered pod pair; with --expect compare with the engine.

    A cell that could not be measured is unknown (``?``, JSON ``null``), never
    denied; any such cell makes the exit code :data:`EXIT_UNKNOWN`, with one
    ``error:`` line saying why. A protocol the kernel lacks fails before probing.
    """
    missing = sandbox.unmeasurable(args.protocol)
    if missing is not None:
        print(f"error: {args.protocol} cannot be measured: {printable(missing)}", file=sys.stderr)
        return EXIT_UNKNOWN
    start = time.monotonic()
    report = sandbox.measure_matrix(args.port, args.protocol, args.family)
    real = report.matrix
    seconds = time.monotonic() - start
    expected: Matrix | None = None
    if args.expect:
        expected = sandbox.expected_matrix(args.port, args.protocol, args.family)
    if args.output == "json":
        sys.stdout.write(output.matrix_json(real, args.port, args.protocol) + "\n")
    else:
        color = args.color == "always" or (
            args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        )
        table = output.matrix_table(real, args.port, args.protocol, color=color)
        if expected is None:
            sys.stdout.write(table)
        else:
            predicted = output.matrix_table(expected, args.port, args.protocol, color=color)
            sys.stdout.write(
                side_by_side(
                    "REAL PACKETS\n" + table.split("\n", 2)[2],
                    "ENGINE PREDICTION\n" + predicted.split("\n", 2)[2],
                )
            )
        print(f"({len(real) ** 2} probes in {seconds:.2f} s)")
    code = 0
    if expected is not None:
        diff = differences(real, expected)
        stream = sys.stderr if args.output == "json" else sys.stdout
        for line in diff:
            print(f"difference: {printable(line)}", file=stream)
        if diff:
            code = EXIT_DIFF
        else:
            print("real packets match the engine's prediction", file=stream)
    if report.unknown:
        # Unknown outranks a difference: the matrix itself is incomplete.
        print(f"error: {printable(report.why())}", file=sys.stderr)
        return EXIT_UNKNOWN
    return code
