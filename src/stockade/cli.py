"""The offline ``stockade`` command: reachability matrices and verdict explanations.

Everything is computed from YAML files (the kind ``kubectl get -o yaml`` prints, or
hand-written manifests) with the real compiler and the dataplane model
(:class:`stockade.verdict.Dataplane`), so the answers are the ones the agents would
enforce. Nothing here talks to a cluster.

Exit codes: 0 when an answer was printed (whether the connection is allowed or
not), 2 for bad input (options, files, objects, unknown pods); in the latter case
stdout stays empty and stderr carries one line per problem.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, NoReturn, TextIO

from stockade import __version__, convert_cli, output
from stockade.cluster import SUPPORTED_KINDS, Cluster, UnreadableList, iter_documents, parse_input
from stockade.cnp import ClusterInput, ClusterNetworkPolicy, NodeInfo
from stockade.errors import InvalidObjectError
from stockade.inputs import read_or_report
from stockade.lint import policy_warnings
from stockade.model import PROTOCOLS, Namespace, Pod, object_ref
from stockade.ownership import resolve
from stockade.safetext import bounded, printable, short
from stockade.service_explain import (
    ServiceLookupError,
    cluster_ip_of,
    find_service,
    service_verdict,
)
from stockade.services import EndpointSlice, Service, parse_endpoint_slice, parse_service
from stockade.tier_lint import Overlap, fail_closed_rules, overlaps
from stockade.verdict import Dataplane, Endpoint
from stockade.yamlload import YamlLoadError, load_documents

EXIT_OK = 0
# Kinds read for routing, not policy: a Service destination and its endpoints.
ROUTING_KINDS: dict[str, Callable[[Mapping[str, Any], str], Service | EndpointSlice]] = {
    "Service": parse_service,
    "EndpointSlice": parse_endpoint_slice,
}
EXIT_USAGE = 2


class CliError(Exception):
    """Bad input: every line is printed to stderr and the command exits with 2."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("; ".join(self.lines))


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, as every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- options


def port_number(text: str) -> int:
    """argparse type for ``--port``: an integer 1-65535."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number 1-65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {value}")
    return value


def protocol_name(text: str) -> str:
    """argparse type for ``--protocol``: TCP, UDP or SCTP in any case, returned upper."""
    value = text.upper()
    if value not in PROTOCOLS:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(PROTOCOLS)} (any case), got {text!r}"
        )
    return value


def _common_options(parser: argparse.ArgumentParser, port_required: bool) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML or JSON file of Namespaces, Pods, NetworkPolicies, ClusterNetworkPolicies "
        "and Nodes, - for stdin "
        "(repeatable; multi-document files and kind: List are accepted)",
    )
    probe_options(parser, port_required)


def probe_options(parser: argparse.ArgumentParser, port_required: bool) -> None:
    """``--port``, ``--protocol`` and ``--family``, shared with ``kubectl stockade``."""
    parser.add_argument(
        "--port",
        type=port_number,
        required=port_required,
        default=None if port_required else 80,
        help="destination port, 1-65535" + ("" if port_required else " (default: 80)"),
    )
    parser.add_argument(
        "--protocol",
        type=protocol_name,
        default="TCP",
        help="TCP, UDP or SCTP, any case (default: TCP)",
    )
    parser.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        default=None,
        help="IP family to judge (default: the family of the source's first address)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``stockade`` and its subcommands."""
    parser = _Parser(
        prog="stockade",
        description="Offline NetworkPolicy and ClusterNetworkPolicy analysis from YAML files, "
        "with the same "
        "compiler and rule sets the stockade agents enforce.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"stockade {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    matrix = sub.add_parser(
        "matrix",
        help="print which pods may connect to which",
        description="Print the reachability matrix of every pod that takes part "
        "(has an IP and is not finished; host-network pods count as their node).",
        allow_abbrev=False,
    )
    _common_options(matrix, port_required=False)
    matrix.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="default: table"
    )
    matrix.add_argument(
        "--services",
        action="store_true",
        help="columns are the Services with --port: each cell says whether all, some or "
        "none of the ready backends allow the connection (kube-proxy picks one per "
        "connection)",
    )
    matrix.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the table: auto (default) colours only a terminal, honouring NO_COLOR",
    )

    sandbox = sub.add_parser(
        "sandbox",
        help="a whole cluster on this machine (root): up, apply, probe, down",
        add_help=False,
    )
    sandbox.add_argument("args", nargs=argparse.REMAINDER, help="see stockade sandbox --help")

    explain = sub.add_parser(
        "explain",
        help="explain why one connection is allowed or denied",
        description="Print the verdict for a connection from SRC to DST and the "
        "policies and rules that decide it.",
        allow_abbrev=False,
    )
    explain.add_argument("src", metavar="SRC", help="source: ns/pod, or an IP address")
    explain.add_argument(
        "dst",
        metavar="DST",
        help="destination: ns/pod, an IP address, or a Service: svc/ns/name or its cluster "
        "IP (then --port is the service port, and each backend gets its verdict)",
    )
    _common_options(explain, port_required=True)
    explain.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="default: text"
    )
    convert_cli.add_parser(sub)
    return parser


# --------------------------------------------------------------------------- loading


@dataclass
class Loaded:
    """What the files gave: the snapshot, problems (fatal) and warnings (not)."""

    cluster: Cluster
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Services and EndpointSlices: destinations of explain and matrix --services.
    services: list[Service] = field(default_factory=list)
    slices: list[EndpointSlice] = field(default_factory=list)


def load(paths: Iterable[str]) -> Loaded:
    """Read every file and parse its objects, collecting every problem of every file.

    Kinds other than Namespace, Pod, NetworkPolicy, ClusterNetworkPolicy and Node
    (Services, Deployments, ...) are skipped with a warning rather than rejected: real
    manifests mix them in, and they do not change what policy allows. A policy rule
    that can never match (:mod:`stockade.lint`), two ClusterNetworkPolicies whose
    order only their names decide, and a rule that fails closed are warnings too.
    """
    objects: list[ClusterInput] = []
    errors: list[str] = []
    warnings: list[str] = []
    routing: list[Service | EndpointSlice] = []
    for path in paths:
        docs = _read_documents(path, errors)
        if docs is not None:
            _parse_file(path, docs, objects, errors, warnings, routing)
    warnings += _duplicate_warnings(objects)
    cluster = Cluster.of(objects)
    warnings += policy_warnings(cluster.policies.values())
    warnings += pod_warnings(cluster)
    warnings += cluster_policy_warnings(cluster)
    services = [o for o in routing if isinstance(o, Service)]
    slices = [o for o in routing if isinstance(o, EndpointSlice)]
    return Loaded(cluster, errors, warnings, services, slices)


def _read_documents(path: str, errors: list[str]) -> list[Any] | None:
    # Bytes, at most one more than the loader takes (so /dev/zero or an endless pipe
    # is refused, not read forever), decoded by the loader: a file and the same
    # bytes on stdin read the same, with the same messages. "-" is stdin, for
    # `kubectl get pods,netpol -A -o yaml | stockade matrix -f -`.
    data = read_or_report(path, errors)
    if data is None:
        return None
    try:
        return load_documents(data, path)
    except YamlLoadError as exc:
        errors.append(str(exc))
        return None


def _parse_file(
    path: str,
    docs: list[Any],
    objects: list[ClusterInput],
    errors: list[str],
    warnings: list[str],
    routing: list[Service | EndpointSlice],
) -> None:
    for number, doc in enumerate(docs, start=1):
        for item in iter_documents(doc):
            if isinstance(item, UnreadableList):
                errors.append(f"{path}: document {number} ({item.ref}): {item.problem}")
                continue
            if not isinstance(item, Mapping):
                errors.append(f"{path}: document {number}: not a Kubernetes object (a mapping)")
                continue
            kind = item.get("kind")
            if not isinstance(kind, str) or not kind:
                ref = object_ref(item)
                errors.append(
                    f"{path}: document {number} ({ref.name}): kind: required, one of "
                    f"{', '.join(SUPPORTED_KINDS)}"
                )
                continue
            if kind in ROUTING_KINDS:
                # Not policy: what explain and matrix --services resolve a Service
                # destination with. One that does not parse changes no verdict, so it
                # is left out with a warning (as kube-proxy would not route by it).
                try:
                    routing.append(ROUTING_KINDS[kind](item, path))
                except InvalidObjectError as exc:
                    warnings.extend(f"ignoring {line}" for line in exc.lines())
                continue
            if kind not in SUPPORTED_KINDS:
                warnings.append(f"{path}: ignoring {object_ref(item)} (unsupported kind)")
                continue
            try:
                objects.append(parse_input(item, source=path))
            except InvalidObjectError as exc:
                errors.extend(exc.lines())


def _duplicate_warnings(objects: Sequence[ClusterInput]) -> list[str]:
    # Cluster.of keeps the last of two objects with one name; say so, since a
    # forgotten copy in another file is an easy way to be surprised.
    seen: set[tuple[str, str]] = set()
    warnings: list[str] = []
    for obj in objects:
        if isinstance(obj, NodeInfo):
            ident = ("Node", obj.name)
        elif isinstance(obj, Namespace | ClusterNetworkPolicy):
            ident = (type(obj).__name__, obj.name)
        else:
            ident = (type(obj).__name__, obj.key)
        if ident in seen:
            warnings.append(f"{ident[0]} {ident[1]} is defined more than once; the last one wins")
        seen.add(ident)
    return warnings


def pod_warnings(cluster: Cluster) -> list[str]:
    """Addresses claimed twice, and port names declared in two containers of a pod."""
    _, conflicts = resolve(cluster.pods.values())
    out = [claim.message() for claim in conflicts]
    for pod in sorted(cluster.pods.values(), key=lambda p: p.key):
        firsts = {(p.name, p.protocol): p.port for p in pod.named_ports}
        for cp in pod.ports:
            first = firsts.get((cp.name, cp.protocol))
            if cp.name and first is not None and cp.port != first:
                out.append(
                    f"Pod {pod.key}: port name {cp.name}/{cp.protocol} is declared more than "
                    f"once; policies use the first, {first}, not {cp.port}"
                )
    return out


def cluster_policy_warnings(cluster: Cluster) -> list[str]:
    """Two ClusterNetworkPolicies whose order only their names decide, and rules that
    fail closed (a ``domainNames`` peer), as the controller's Warning Events say them.

    Two policies of one tier with equal priority that select a common pod and both
    have rules of one direction: the API leaves their order undefined, stockade
    orders them by name (docs/tiers.md, choice 1).
    """
    pods = cluster.active_pods()
    subjects = {
        key: {
            pod.key
            for pod in pods
            if p.subject.selects(cluster.namespace(pod.namespace).labels, pod)
        }
        for key, p in cluster.cluster_policies.items()
    }
    found = overlaps(
        (_Keyed(key, p.tier, p.priority, p.ingress, p.egress), subjects[key])
        for key, p in cluster.cluster_policies.items()
    )
    ways: dict[tuple[str, str], list[Overlap]] = {}
    for overlap in sorted(found):
        ways.setdefault((overlap.first, overlap.second), []).append(overlap)
    out: list[str] = []
    for (a, b), both in ways.items():
        common = sorted(subjects[a] & subjects[b])
        more = f" and {len(common) - 1} more" if len(common) > 1 else ""
        directions = sorted({o.direction for o in both}, key=("ingress", "egress").index)
        first, second = cluster.cluster_policies[a], cluster.cluster_policies[b]
        if first.kind == second.kind:
            kinds = f"{first.kind} {first.name} and {second.name}"
        else:
            kinds = f"{first.kind} {first.name} and {second.kind} {second.name}"
        out.append(
            f"{kinds}: both {both[0].tier} priority "
            f"{both[0].priority} with {' and '.join(directions)} rules, both selecting "
            f"{common[0]}{more}; the API leaves their order undefined, stockade "
            f"orders them by name ({first.name} first)"
        )
    for policy in sorted(cluster.cluster_policies.values(), key=lambda p: (p.name, p.kind_rank)):
        out.extend(
            f"{policy.kind} {policy.name}: {rule.message}" for rule in fail_closed_rules(policy)
        )
    return out


@dataclass(frozen=True, slots=True)
class _Keyed:
    """A tiered policy named by its key, as :func:`stockade.tier_lint.overlaps` wants it."""

    name: str
    tier: str
    priority: int
    ingress: tuple[object, ...]
    egress: tuple[object, ...]


# --------------------------------------------------------------------------- commands


def resolve_endpoint(text: str, cluster: Cluster, role: str) -> Endpoint:
    """``ns/pod`` to the pod, or an IP address to the pod that has it, else the address.

    Raises :class:`CliError` for an unknown pod or something that is neither.
    """
    try:
        address = str(ipaddress.ip_address(text))
    except ValueError:
        return _resolve_pod(text, cluster, role)
    owners, _ = resolve(cluster.pods.values())
    for pod in sorted(owners.values(), key=lambda p: p.key):
        # A host-network pod shares its node's address, so the address names the
        # node, not that pod; only an ordinary pod owns its address, and of two
        # pods claiming one address only its owner (stockade.ownership).
        if pod.active and not pod.host_network and address in pod.ips:
            return cluster.pods[pod.key]
    return address


def _resolve_pod(text: str, cluster: Cluster, role: str) -> Pod:
    if _is_cidr(text):
        # A namespace name has no dots, so "10.0.0.0/8" cannot be ns/pod.
        raise CliError([f"{role} {short(text)}: a single address, not a CIDR"])
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        hint = "expected ns/pod or an IP address"
        raise CliError([f"{role} {short(text)}: {hint}{_did_you_mean(text, cluster)}"])
    pod = cluster.pods.get(text)
    if pod is None:
        known = sorted(p.name for p in cluster.pods.values() if p.namespace == namespace)
        shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
        where = (
            f"pods in namespace {bounded(namespace)}: {shown}"
            if known
            else f"no pods in namespace {bounded(namespace)} in the files"
        )
        raise CliError([f"{role} {bounded(text)}: unknown pod ({where})"])
    return pod


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _did_you_mean(text: str, cluster: Cluster) -> str:
    matches = sorted(p.key for p in cluster.pods.values() if p.name == text)
    return f" (did you mean {' or '.join(matches)}?)" if matches else ""


def run_matrix(args: argparse.Namespace, cluster: Cluster, stdout: TextIO) -> str:
    """The ``matrix`` command's output."""
    matrix = Dataplane(cluster).matrix(args.port, args.protocol, family=args.family)
    if args.output == "json":
        return output.matrix_json(matrix, args.port, args.protocol) + "\n"
    glyphs = output.UNICODE_GLYPHS if _can_encode(stdout, "✓✗─") else output.ASCII_GLYPHS
    color = _use_color(args.color, stdout)
    notes = _family_notes(cluster, args.family) + host_network_notes(cluster)
    return output.matrix_table(
        matrix, args.port, args.protocol, color=color, glyphs=glyphs, notes=notes
    )


def _family_notes(cluster: Cluster, family: int | None) -> list[str]:
    # Such pods show as denied everywhere, even to themselves: say why.
    if family is None:
        return []
    lacking = [
        p.key
        for p in cluster.active_pods()
        if all(ipaddress.ip_address(ip).version != family for ip in p.ips)
    ]
    if not lacking:
        return []
    return [f"no IPv{family} address, so no IPv{family} path: {', '.join(lacking)}"]


def host_network_notes(cluster: Cluster) -> list[str]:
    """Where each host-network pod of the matrix is: at its node's address."""
    out = []
    for pod in cluster.active_pods():
        if not pod.host_network:
            continue
        node = f"node {pod.node_name}'s" if pod.node_name else "its node's"
        out.append(
            f"{pod.key} is on the host network: shown at {node} address {', '.join(pod.ips)}, "
            "judged as the node (no pods or namespaces peer matches it)"
        )
    return out


def run_explain(args: argparse.Namespace, loaded: Loaded) -> str:
    """The ``explain`` command's output (a Service destination: one verdict per backend)."""
    cluster = loaded.cluster
    try:
        target = find_service(args.dst, loaded.services, args.family)
    except ServiceLookupError as exc:
        raise CliError([str(exc)]) from None
    if target is not None:
        return _explain_service(args, loaded, *target)
    problems: list[str] = []
    ends: list[Endpoint] = []
    for text, role in ((args.src, "SRC"), (args.dst, "DST")):
        try:
            ends.append(resolve_endpoint(text, cluster, role))
        except CliError as exc:
            problems += exc.lines
    if problems:
        raise CliError(problems)
    verdict = Dataplane(cluster).verdict(ends[0], ends[1], args.port, args.protocol, args.family)
    if args.output == "json":
        return output.explain_json(verdict, tiers=bool(cluster.cluster_policies)) + "\n"
    return output.explain_text(verdict, cluster)


def _explain_service(args: argparse.Namespace, loaded: Loaded, svc: Service, ip: str) -> str:
    src = resolve_endpoint(args.src, loaded.cluster, "SRC")
    plane = Dataplane(loaded.cluster)
    try:
        result = service_verdict(
            plane, loaded.cluster, src, svc, ip, args.port, args.protocol, loaded.slices
        )
    except ServiceLookupError as exc:
        raise CliError([str(exc)]) from None
    if args.output == "json":
        tiers = bool(loaded.cluster.cluster_policies)
        return output.service_explain_json(result, tiers=tiers) + "\n"
    return output.service_explain_text(result, loaded.cluster)


def run_service_matrix(args: argparse.Namespace, loaded: Loaded, stdout: TextIO) -> str:
    """``matrix --services``: every pod to every Service with the port, per backend."""
    plane = Dataplane(loaded.cluster)
    rows = sorted(loaded.cluster.active_pods(), key=lambda p: p.key)
    columns = [
        s
        for s in sorted(loaded.services, key=lambda s: s.key)
        if s.find_port(args.port, args.protocol) is not None
        and s.type != "ExternalName"
        and not s.headless
    ]
    cells: dict[str, dict[str, str]] = {}
    for pod in rows:
        cells[pod.key] = {}
        for svc in columns:
            ip = cluster_ip_of(svc, args.family)
            if ip is None:
                cells[pod.key][svc.key] = "refused"
                continue
            result = service_verdict(
                plane, loaded.cluster, pod, svc, ip, args.port, args.protocol, loaded.slices
            )
            cells[pod.key][svc.key] = result.outcome
    if args.output == "json":
        return output.service_matrix_json(cells, args.port, args.protocol) + "\n"
    return output.service_matrix_text(cells, args.port, args.protocol)


def _use_color(mode: str, stream: TextIO) -> bool:
    if mode != "auto":
        return mode == "always"
    # https://no-color.org: any non-empty NO_COLOR disables colour.
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


def _can_encode(stream: TextIO, sample: str) -> bool:
    try:
        sample.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


# Commands other installed packages add to ``stockade`` (the sandbox comes with the
# lab): found by entry point, so the product never imports them.
EXTENSION_GROUP = "stockade.commands"


def run_extension(name: str, argv: list[str]) -> int:
    """Run the command ``name`` that an installed package registers in EXTENSION_GROUP.

    Not installed (the runtime image ships without the lab): a clear error, exit 2.
    """
    found = [ep for ep in entry_points(group=EXTENSION_GROUP) if ep.name == name]
    if not found:
        print(
            f"stockade: the {name} command is not installed here (it comes with the "
            "development set-up: scripts/setup.sh)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    command: Callable[[list[str]], int] = found[0].load()
    return command(argv)


def main(argv: list[str] | None = None) -> int:
    """Run ``stockade``; returns the exit code (0 answered, 2 bad input)."""
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["sandbox"]:
        return run_extension("sandbox", args_in[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        # --help, --version and usage errors; return the code rather than exit, so
        # that callers (tests, the kubectl plugin) get an int as from any command.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "convert":
        return convert_cli.main(args)
    loaded = load(args.files)
    # Warnings and errors echo names and values from the files: escaped, so a
    # manifest cannot write control sequences to the user's terminal.
    for line in loaded.warnings:
        print(f"warning: {printable(line)}", file=sys.stderr)
    try:
        if loaded.errors:
            raise CliError(loaded.errors)
        if args.command == "matrix" and args.services:
            text = run_service_matrix(args, loaded, sys.stdout)
        elif args.command == "matrix":
            text = run_matrix(args, loaded.cluster, sys.stdout)
        else:
            text = run_explain(args, loaded)
    except CliError as exc:
        for line in exc.lines:
            print(f"error: {printable(line)}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(text)
    sys.stdout.flush()
    return EXIT_OK
