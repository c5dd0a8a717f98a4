"""Formatting for the CLI: reachability matrices and verdict explanations.

Every function here is pure: it takes data (a matrix, a :class:`~stockade.verdict.Verdict`,
the cluster snapshot for looking up policies) and returns a string. Deciding whether
to colour (is stdout a terminal?) and writing belong to :mod:`stockade.cli`.

Names, labels and every other value that comes from a manifest may hold control
characters (ESC sequences, NUL, a right-to-left override) or rich markup
(``[bold red]``). The human-readable outputs pass them through
:func:`stockade.safetext.printable` and hand them to rich as plain
:class:`~rich.text.Text`, never as markup, so a manifest cannot recolour or rewrite
the reader's terminal. The JSON outputs stay exact: :func:`json.dumps` (with its
default ``ensure_ascii``) writes every such character as a ``\\uXXXX`` escape.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from stockade.cluster import Cluster
from stockade.cnp import ClusterPeer, ClusterRule, ProtocolMatch
from stockade.isolation import KIND as ISOLATION_KIND
from stockade.isolation import SamePeer
from stockade.model import EGRESS, NetworkPolicy, Peer, PolicyPort, Rule
from stockade.safetext import printable
from stockade.service_explain import ServiceVerdict
from stockade.verdict import NETWORK_POLICY_TIER, DirectionVerdict, RuleRef, TierHit, Verdict

# The tiers of one direction, in evaluation order (docs/tiers.md).
TIER_ORDER = ("Admin", NETWORK_POLICY_TIER, "Baseline")

Matrix = Mapping[str, Mapping[str, bool | None]]
"""``{src: {dst: allowed}}``. The engine's cells are True or False; a matrix of real
packets (``stockade sandbox probe``) may also hold None: not measured, unknown."""


# --------------------------------------------------------------------------- matrix


@dataclass(frozen=True, slots=True)
class Glyphs:
    """The cell marks: distinct shapes, so the table reads without colour too."""

    allow: str
    deny: str
    # A cell nobody measured (only real-packet matrices have such cells).
    unknown: str = "?"


UNICODE_GLYPHS = Glyphs("✓", "✗")
# For a stdout whose encoding cannot carry the check marks (LANG=C on old systems).
ASCII_GLYPHS = Glyphs("+", "X")


def matrix_json(matrix: Matrix, port: int, protocol: str) -> str:
    """The matrix as JSON: ``{"port", "protocol", "matrix": {src: {dst: bool}}}``, sorted.

    An unknown cell (None) is ``null``. Names are written exactly; ``json.dumps``
    escapes their control characters (``\\u001b``), so the text is safe to print.
    """
    ordered = {
        src: {dst: matrix[src][dst] for dst in sorted(matrix[src])} for src in sorted(matrix)
    }
    return json.dumps({"port": port, "protocol": protocol, "matrix": ordered}, indent=2)


def matrix_summary(matrix: Matrix, port: int, protocol: str) -> str:
    """One line: how many pods, and how many ordered pairs (self excluded) are allowed.

    When cells are unknown (None, not measured), the line ends with how many.
    """
    pods = len(matrix)
    pairs = [ok for src, row in matrix.items() for dst, ok in row.items() if src != dst]
    allowed = sum(1 for ok in pairs if ok is True)
    unknown = sum(1 for row in matrix.values() for ok in row.values() if ok is None)
    cells = sum(len(row) for row in matrix.values())
    noun = "pod" if pods == 1 else "pods"
    line = (
        f"{pods} {noun}, {allowed} of {len(pairs)} pairs allowed on {printable(protocol)} "
        f"port {port} (a pod to itself not counted)"
    )
    if unknown:
        line += f"; {unknown} of {cells} cells unknown (not measured)"
    return line


def matrix_table(
    matrix: Matrix,
    port: int,
    protocol: str,
    *,
    color: bool,
    glyphs: Glyphs = UNICODE_GLYPHS,
    notes: Sequence[str] = (),
) -> str:
    """The matrix as an aligned table for people, followed by a one-line summary.

    Sources are rows, destinations columns. Pod names can be long, so columns are
    headed by the row numbers instead of names: the table stays narrow for 30 pods.
    With ``color`` False the text carries no ANSI escape codes at all. ``notes``
    are printed as ``note:`` lines after the summary. Pod names and notes are shown
    escaped (:func:`~stockade.safetext.printable`) and never read as rich markup.
    """
    keys = sorted(matrix)
    summary = matrix_summary(matrix, port, protocol)
    if not keys:
        return f"no pods take part (none has an IP address and is running)\n{summary}\n"
    table = _build_table(matrix, keys, glyphs)
    ascii_only = glyphs == ASCII_GLYPHS
    legend = Text.assemble(
        (glyphs.allow, "bold green"), " allowed   ", (glyphs.deny, "bold red"), " denied"
    )
    if any(ok is None for row in matrix.values() for ok in row.values()):
        legend.append("   ")
        legend.append(glyphs.unknown, "bold yellow")
        legend.append(" unknown (not measured)")
    rendered = _render(
        [table, legend], color=color, width=_table_width(keys), ascii_only=ascii_only
    )
    # A title inside the table would be wrapped to the table's width; keep it whole.
    heading = f"{printable(protocol)} port {port}: may the row's pod connect to the column's pod?"
    return f"{heading}\n\n{rendered}{summary}\n" + "".join(f"note: {printable(n)}\n" for n in notes)


# rich's SIMPLE_HEAD (a rule under the header, spaces between columns) in ASCII.
_ASCII_SIMPLE_HEAD = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)

# Beyond this many pods the columns are packed one space apart instead of two.
_ROOMY_UP_TO = 12


def _build_table(matrix: Matrix, keys: Sequence[str], glyphs: Glyphs) -> Table:
    ascii_only = glyphs == ASCII_GLYPHS
    table = Table(
        box=_ASCII_SIMPLE_HEAD if ascii_only else box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        # Packed, the box's one-space separator alone parts the columns, so 30 pods
        # with 40-character names fit about 130 columns; small tables get air.
        padding=(0, 1) if len(keys) <= _ROOMY_UP_TO else 0,
        collapse_padding=True,
    )
    table.add_column("#", justify="right", style="dim")
    table.add_column("from \\ to", no_wrap=True)
    for number in range(1, len(keys) + 1):
        table.add_column(str(number), justify="center", no_wrap=True)
    for number, src in enumerate(keys, start=1):
        cells = [_cell(matrix[src][dst], src == dst, glyphs) for dst in keys]
        # Text, not str: rich would read "[bold red]" in a name as markup.
        table.add_row(str(number), Text(printable(src)), *cells)
    return table


def _cell(allowed: bool | None, self_pair: bool, glyphs: Glyphs) -> Text:
    if allowed is None:
        return Text(glyphs.unknown, style="bold yellow")
    if not allowed:
        return Text(glyphs.deny, style="bold red")
    # A pod reaching itself says nothing about policy; dimmed so the eye skips the
    # diagonal.
    return Text(glyphs.allow, style="dim green" if self_pair else "bold green")


def _table_width(keys: Sequence[str]) -> int:
    # Wide enough that rich never wraps or crops a row; a terminal narrower than
    # the table wraps lines itself, which is still readable, unlike cropped names.
    index = len(str(len(keys)))
    names = max(len(printable(k)) for k in keys)
    return max(80, 2 * index + names + (index + 3) * len(keys) + 16)


def _render(
    renderables: Sequence[Table | Text], *, color: bool, width: int, ascii_only: bool
) -> str:
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        # Explicit on both counts, so FORCE_COLOR/NO_COLOR in the environment and a
        # non-terminal buffer cannot flip the decision made by the caller.
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        width=width,
        highlight=False,
        emoji=False,
        legacy_windows=False,
        safe_box=ascii_only,
    )
    for item in renderables:
        console.print(item)
    return buffer.getvalue()


# --------------------------------------------------------------------------- explain


def verdict_dict(verdict: Verdict, *, tiers: bool = False) -> dict[str, Any]:
    """The verdict as a stable, JSON-ready dict (camelCase keys, fixed order).

    With ``tiers`` (the input has ClusterNetworkPolicies) each direction also says
    which tier step decided, the Pass rules met on the way and the tiers never
    reached; without, the dict is the NetworkPolicy-only one, unchanged.
    """
    return {
        "allowed": verdict.allowed,
        "src": verdict.src,
        "dst": verdict.dst,
        "srcIP": verdict.src_ip,
        "dstIP": verdict.dst_ip,
        "port": verdict.port,
        "protocol": verdict.protocol,
        "egress": _direction_dict(verdict.egress, tiers),
        "ingress": _direction_dict(verdict.ingress, tiers),
        "note": verdict.note,
    }


def _direction_dict(dv: DirectionVerdict | None, tiers: bool = False) -> dict[str, Any] | None:
    if dv is None or (dv.own_node and not tiers):
        # Without tiers a pod's own node is always allowed: decided by the note, as
        # before ClusterNetworkPolicy (docs/cli.md, JSON).
        return None
    out: dict[str, Any] = {
        "pod": dv.pod,
        "isolatedBy": list(dv.isolated_by),
        "allowedBy": [
            {"policy": ref.policy, "direction": ref.direction, "rule": ref.index}
            for ref in dv.allowed_by
        ],
    }
    if tiers:
        out["allowed"] = dv.allowed
        out["tier"] = dv.tier or "Default"
        out["decidedBy"] = _hit_dict(dv.decided_by) if dv.decided_by is not None else None
        out["passed"] = [_hit_dict(hit) for hit in dv.passed]
        out["notReached"] = list(not_reached(dv))
        out["ownNode"] = dv.own_node
    return out


def _hit_dict(hit: TierHit) -> dict[str, Any]:
    return {
        "tier": hit.tier,
        "action": hit.action,
        # A CNP's name; for the NetworkPolicy tier, the isolating policies.
        "policy": hit.policy if hit.rule is not None else None,
        "policies": hit.policy.split(",") if hit.rule is None and hit.policy else [],
        "rule": hit.rule,
        "ruleName": hit.rule_name or None,
        "failClosed": hit.fail_closed,
        # An IsolationPolicy rule matched by sameness: which (e.g. "same value of
        # app (web)"); None otherwise.
        "same": hit.same or None,
    }


def not_reached(dv: DirectionVerdict) -> tuple[str, ...]:
    """The tiers after the one that decided ``dv``: never looked at for this direction."""
    if dv.decided_by is None or dv.decided_by.tier not in TIER_ORDER:
        return ()
    return TIER_ORDER[TIER_ORDER.index(dv.decided_by.tier) + 1 :]


def explain_json(verdict: Verdict, *, tiers: bool = False) -> str:
    """:func:`verdict_dict` as indented JSON."""
    return json.dumps(verdict_dict(verdict, tiers=tiers), indent=2)


def explain_text(verdict: Verdict, cluster: Cluster) -> str:
    """The verdict and its reasons for people.

    ``cluster`` is only read, to describe the endpoints and to show the content of
    each allowing rule; the reasons themselves come from ``verdict`` alone. Every
    line is escaped (:func:`~stockade.safetext.printable`): names, labels and
    values echoed from the manifests cannot reach the terminal raw.
    """
    lines = [_headline(verdict), ""]
    if cluster.cluster_policies:
        lines += _tiered_lines(verdict, cluster)
    elif verdict.note:
        lines.append(f"note: {verdict.note}; no policy is consulted")
    else:
        lines += _direction_lines(verdict.egress, EGRESS, verdict.src, verdict.dst_ip, cluster)
        lines += _direction_lines(verdict.ingress, "Ingress", verdict.dst, verdict.src_ip, cluster)
    # Per line, so the newlines between them stay newlines.
    return "\n".join(printable(line) for line in lines) + "\n"


# ------------------------------------------------------------------ explain with tiers


def _tiered_lines(verdict: Verdict, cluster: Cluster) -> list[str]:
    """Both directions through the Admin, NetworkPolicy and Baseline tiers."""
    if verdict.note and verdict.egress is None and verdict.ingress is None:
        return [f"note: {verdict.note}; {_note_reason(verdict, cluster)}"]
    lines: list[str] = []
    if verdict.note:
        lines.append(f"note: {verdict.note}")
    lines += _tiered_direction(verdict.egress, EGRESS, verdict.src, verdict, cluster)
    if not (verdict.egress is not None and verdict.egress.own_node):
        lines += _tiered_direction(verdict.ingress, "Ingress", verdict.dst, verdict, cluster)
    return lines


def _note_reason(verdict: Verdict, cluster: Cluster) -> str:
    pod = cluster.pods.get(verdict.src)
    if verdict.note.startswith("a pod and its own node"):
        if pod is not None and not pod.host_network:
            return (
                "judged at the node's INPUT hook by the pod's egress tiers: no "
                "ClusterNetworkPolicy or NetworkPolicy selects it for egress, allowed"
            )
        return "the node's own traffic to its pod (OUTPUT) is never judged"
    return "no policy of any tier is consulted"


def _tiered_direction(
    dv: DirectionVerdict | None, direction: str, local: str, verdict: Verdict, cluster: Cluster
) -> list[str]:
    egress = direction == EGRESS
    side = "egress from" if egress else "ingress to"
    way = direction.lower()
    if dv is None:
        pod = cluster.pods.get(local)
        if pod is not None and not pod.host_network:
            why = f"no policy of any tier selects it for {way}: the default allows"
        else:
            why = _unfiltered_reason(local, direction, cluster)
        return [f"{side} {local}: allowed ({why})"]
    lines = [f"{side} {local}: {'allowed' if dv.allowed else 'DENIED'}"]
    if dv.own_node:
        node = cluster.pods[dv.pod].node_name if dv.pod in cluster.pods else ""
        at = f"node {node}'s" if node else "its node's"
        lines.append(
            f"  judged at {at} INPUT hook (a pod to its own node) by the pod's egress tiers"
        )
    for step in dv.passed:
        lines.append(f"  passed: {_hit_text(step, way)}, the rest of the {step.tier} tier skipped")
        lines += [f"    {text}" for text in _same_lines(step)]
        lines += [f"    {text}" for text in _cnp_rule_lines(step, direction, cluster)]
    hit = dv.decided_by
    if hit is None:
        lines.append(
            "  decided by: the default, allowed: no Admin or Baseline rule accepted or denied "
            f"it and no NetworkPolicy isolates it for {way}"
        )
        return lines
    skipped = not_reached(dv)
    tail = f"; {' and '.join(skipped)} {'tier' if len(skipped) == 1 else 'tiers'} not reached"
    lines.append(f"  decided by: {_hit_text(hit, way)}{tail if skipped else ''}")
    if hit.tier != NETWORK_POLICY_TIER:
        lines += [f"    {text}" for text in _same_lines(hit)]
        lines += [f"    {text}" for text in _cnp_rule_lines(hit, direction, cluster)]
        return lines
    lines.append(f"  isolated by: {', '.join(dv.isolated_by)}")
    if dv.own_node:
        lines.append("  a pod's own node is always allowed to a pod NetworkPolicies isolate")
        return lines
    if not dv.allowed_by:
        far = "to" if egress else "from"
        peer_ip = verdict.dst_ip if egress else verdict.src_ip
        lines.append(f"  no {way} rule of these policies allows it {far} {peer_ip}")
        return lines
    for ref in dv.allowed_by:
        lines.append(f"  allowed by: {_rule_name(ref)}")
        lines += [f"    {text}" for text in _rule_lines(ref, cluster.policies)]
    return lines


_SAME_WORD = {"Accept": "allowed", "Deny": "denied", "Pass": "passed"}


def _same_lines(hit: TierHit) -> list[str]:
    """``allowed: same value of com.rancher.department (qa)`` for a match by sameness."""
    if not hit.same:
        return []
    return [f"{_SAME_WORD.get(hit.action, hit.action)}: {hit.same}"]


def policy_label(key: str) -> str:
    """A tiered policy for people: ``cnp 'x'`` or ``isolationpolicy 'x'`` (from its key)."""
    prefix = ISOLATION_KIND + "/"
    if key.startswith(prefix):
        return f"isolationpolicy '{key[len(prefix) :]}'"
    return f"cnp '{key}'"


def _hit_text(hit: TierHit, way: str) -> str:
    """``Admin cnp 'deny-legacy' egress rule 0 (legacy): Deny``, or the NetworkPolicy tier."""
    if hit.rule is None:
        return f"{hit.tier} tier: {hit.action}"
    named = f" ({hit.rule_name})" if hit.rule_name else ""
    text = f"{hit.tier} {policy_label(hit.policy)} {way} rule {hit.rule}{named}: {hit.action}"
    if hit.fail_closed:
        text += " (fails closed: a domainNames peer, not enforced, makes it a Deny all rule)"
    return text


def _cnp_rule_lines(hit: TierHit, direction: str, cluster: Cluster) -> list[str]:
    policy = cluster.cluster_policies.get(hit.policy)
    rules = None
    if policy is not None:
        rules = policy.egress if direction == EGRESS else policy.ingress
    if policy is None or rules is None or hit.rule is None or not 0 <= hit.rule < len(rules):
        return ["(rule not found in the files)"]
    rule = rules[hit.rule]
    far = "to" if direction == EGRESS else "from"
    return [
        f"{far}: {describe_cluster_peers(rule)}",
        f"protocols: {describe_protocols(rule)}",
    ]


def describe_cluster_peers(rule: ClusterRule) -> str:
    """A ClusterNetworkPolicy rule's ``from``/``to`` in words."""
    return "; ".join(describe_cluster_peer(peer) for peer in rule.peers)


def describe_cluster_peer(peer: ClusterPeer) -> str:
    """One ClusterNetworkPolicy peer in words, e.g. ``namespaces team=a``."""
    if isinstance(peer, SamePeer):
        return describe_same_peer(peer)
    if peer.namespaces is not None:
        sel = peer.namespaces
        return "all pods in all namespaces" if sel.is_empty else f"all pods in namespaces {sel}"
    if peer.pods is not None:
        pods, ns = peer.pods.pod_selector, peer.pods.namespace_selector
        what = "all pods" if pods.is_empty else f"pods {pods}"
        where = "all namespaces" if ns.is_empty else f"namespaces {ns}"
        return f"{what} in {where}"
    if peer.networks:
        return f"networks {', '.join(str(n) for n in peer.networks)}"
    if peer.nodes is not None:
        sel = peer.nodes
        return "all nodes" if sel.is_empty else f"nodes {sel}"
    return f"domainNames {', '.join(peer.domain_names)} (not enforced)"


def describe_same_peer(peer: SamePeer) -> str:
    """An IsolationPolicy peer by sameness in words, e.g. ``pods with the same app``."""
    if peer.scope == "namespaces" and not peer.keys:
        return "all pods in the same namespace"
    keys = ", ".join(peer.keys)
    if peer.scope == "namespaces":
        return f"all pods in namespaces with the same {keys}"
    what = "pods" if peer.also is None or peer.also.is_empty else f"pods {peer.also}"
    if peer.in_namespaces is None:
        where = "the same namespace"
    elif peer.in_namespaces.is_empty:
        where = "all namespaces"
    else:
        where = f"namespaces {peer.in_namespaces}"
    return f"{what} with the same {keys} in {where}"


def describe_protocols(rule: ClusterRule) -> str:
    """A ClusterNetworkPolicy rule's ``protocols`` in words, e.g. ``UDP 53, TCP 53``."""
    if not rule.protocols:
        return "all traffic"
    return ", ".join(describe_protocol(p) for p in rule.protocols)


def describe_protocol(pm: ProtocolMatch) -> str:
    """One ``protocols`` item in words: a number, a range or a named port."""
    if pm.named_port is not None:
        return f"{pm.named_port} (named port)"
    if pm.end_port and pm.end_port != pm.port:
        return f"{pm.protocol} {pm.port}-{pm.end_port}"
    return f"{pm.protocol} {pm.port}"


def _headline(v: Verdict) -> str:
    outcome = "ALLOWED" if v.allowed else "DENIED"
    src = f"{v.src} ({v.src_ip})" if v.src_ip and v.src_ip != v.src else v.src
    dst = f"{v.dst} ({v.dst_ip})" if v.dst_ip and v.dst_ip != v.dst else v.dst
    return f"{outcome}: {src} -> {dst} on {v.protocol} port {v.port}"


def _direction_lines(
    dv: DirectionVerdict | None, direction: str, local: str, peer_ip: str | None, cluster: Cluster
) -> list[str]:
    side = "egress from" if direction == EGRESS else "ingress to"
    if dv is None:
        return [f"{side} {local}: allowed ({_unfiltered_reason(local, direction, cluster)})"]
    lines = [
        f"{side} {local}: {'allowed' if dv.allowed else 'DENIED'}",
        f"  isolated by: {', '.join(dv.isolated_by)}",
    ]
    if not dv.allowed_by:
        far = "to" if direction == EGRESS else "from"
        lines.append(f"  no {direction.lower()} rule of these policies allows it {far} {peer_ip}")
        return lines
    for ref in dv.allowed_by:
        lines.append(f"  allowed by: {_rule_name(ref)}")
        lines += [f"    {text}" for text in _rule_lines(ref, cluster.policies)]
    return lines


def _rule_name(ref: RuleRef) -> str:
    # The field path, as in error messages: unambiguous about counting from 0.
    return f"{ref.policy}, spec.{ref.direction.lower()}[{ref.index}]"


def _unfiltered_reason(endpoint: str, direction: str, cluster: Cluster) -> str:
    pod = cluster.pods.get(endpoint)
    if pod is None:
        node = _node_of_address(endpoint, cluster)
        what = f"the address of node {node}" if node else "not a pod in the files"
        return f"{what}: no {direction.lower()} policy of its own"
    if pod.host_network:
        return "a host-network pod, judged as its node's address: no policy selects it"
    return f"not isolated: no policy selects it for {direction.lower()}"


def _node_of_address(address: str, cluster: Cluster) -> str:
    for pod in cluster.pods.values():
        if address in pod.host_ips or (pod.host_network and address in pod.ips):
            return pod.node_name
    return ""


def _rule_lines(ref: RuleRef, policies: Mapping[str, NetworkPolicy]) -> list[str]:
    policy = policies.get(ref.policy)
    rules = None
    if policy is not None:
        rules = policy.egress if ref.direction == EGRESS else policy.ingress
    if policy is None or rules is None or not 0 <= ref.index < len(rules):
        # Only if the verdict came from another snapshot than the cluster given.
        return ["(rule not found in the files)"]
    rule = rules[ref.index]
    far = "to" if ref.direction == EGRESS else "from"
    return [f"{far}: {describe_peers(rule, policy.namespace)}", f"ports: {describe_ports(rule)}"]


def describe_peers(rule: Rule, namespace: str) -> str:
    """The rule's ``from``/``to`` in words; ``namespace`` is the policy's own."""
    if not rule.peers:
        return "anyone (no peers listed: every pod and address)"
    return "; ".join(describe_peer(peer, namespace) for peer in rule.peers)


def describe_peer(peer: Peer, namespace: str) -> str:
    """One ``from``/``to`` item in words, e.g. ``pods app=web in namespace shop``."""
    if peer.ip_block is not None:
        block = peer.ip_block
        text = f"ipBlock {block.cidr}"
        if block.excepts:
            text += f" except {', '.join(str(e) for e in block.excepts)}"
        return text
    sel = peer.pod_selector
    pods = "all pods" if sel is None or sel.is_empty else f"pods {sel}"
    ns_sel = peer.namespace_selector
    if ns_sel is None:
        return f"{pods} in namespace {namespace}"
    if ns_sel.is_empty:
        return f"{pods} in all namespaces"
    return f"{pods} in namespaces {ns_sel}"


def describe_ports(rule: Rule) -> str:
    """The rule's ``ports`` in words, e.g. ``TCP 8080, UDP 53``."""
    if not rule.ports:
        return "all ports and protocols"
    return ", ".join(describe_port(p) for p in rule.ports)


def describe_port(port: PolicyPort) -> str:
    """One ``ports`` item in words: a number, a range, a named port, or all ports."""
    if port.name is not None:
        return f"{port.protocol} {port.name} (named port)"
    if port.port is None:
        return f"{port.protocol} (all ports)"
    if port.end_port is not None and port.end_port != port.port:
        return f"{port.protocol} {port.port}-{port.end_port}"
    return f"{port.protocol} {port.port}"


# --------------------------------------------------------------------------- Services

_OUTCOME_MARK = {"all": ".", "none": "X", "some": "~", "refused": "-"}
SERVICE_LEGEND = (
    ". every ready backend allows   X none does   ~ some do (kube-proxy picks one per "
    "connection)   - no ready backend (refused)"
)


def service_explain_dict(result: ServiceVerdict, *, tiers: bool = False) -> dict[str, Any]:
    """A Service destination's verdicts as a stable, JSON-ready dict."""
    return {
        "service": result.service.key,
        "clusterIP": result.cluster_ip,
        "port": result.port.port,
        "portName": result.port.name,
        "protocol": result.port.protocol,
        "outcome": result.outcome,
        "allowedBackends": result.allowed_count,
        "endpointsDerived": result.derived,
        "notes": list(result.notes),
        "backends": [
            {
                "pod": b.backend.pod or None,
                "node": b.backend.node_name or None,
                "ip": b.backend.ip,
                "port": b.backend.port,
                "verdict": verdict_dict(b.verdict, tiers=tiers),
            }
            for b in result.backends
        ],
    }


def service_explain_json(result: ServiceVerdict, *, tiers: bool = False) -> str:
    """:func:`service_explain_dict` as indented JSON."""
    return json.dumps(service_explain_dict(result, tiers=tiers), indent=2)


def service_explain_text(result: ServiceVerdict, cluster: Cluster) -> str:
    """Per backend, the ordinary explanation; then the summary. Every line escaped."""
    svc, sp = result.service, result.port
    lines = [
        f"Service {svc.key} {result.cluster_ip}:{sp.port}/{sp.protocol}"
        + (f" (port {sp.name})" if sp.name else "")
        + f": {len(result.backends)} ready backend(s); stockade judges each connection "
        "on the backend kube-proxy sends it to",
    ]
    lines += [f"note: {n}" for n in result.notes]
    text = "\n".join(printable(line) for line in lines) + "\n"
    for i, b in enumerate(result.backends, start=1):
        where = f" on {b.backend.node_name}" if b.backend.node_name else ""
        at = f"{b.backend.ip}:{b.backend.port}"
        head = f"backend {i}: {b.backend.pod or b.backend.ip}{where}, {at}"
        text += "\n" + printable(head) + "\n"
        text += "".join(f"  {line}\n" for line in explain_text(b.verdict, cluster).splitlines())
    return text + "\n" + printable(f"summary: {result.summary()}") + "\n"


def service_matrix_json(cells: Mapping[str, Mapping[str, str]], port: int, protocol: str) -> str:
    """``matrix --services -o json``: outcome per source pod and service."""
    payload = {"port": port, "protocol": protocol, "outcomes": cells}
    return json.dumps(payload, indent=2, sort_keys=True)


def service_matrix_text(cells: Mapping[str, Mapping[str, str]], port: int, protocol: str) -> str:
    """Rows are source pods, columns services; a legend explains the marks."""
    rows = sorted(cells)
    columns = sorted({c for row in cells.values() for c in row})
    if not rows or not columns:
        return f"no Service with port {port}/{protocol} (or no pod) in the files\n"
    width = max(len(r) for r in rows)
    lines = [f"{port}/{protocol}, rows: source pods, columns: Services"]
    lines += [f"  [{i}] {c}" for i, c in enumerate(columns, start=1)]
    lines.append(" " * width + " " + " ".join(f"{i:>3}" for i in range(1, len(columns) + 1)))
    for r in rows:
        marks = " ".join(f"{_OUTCOME_MARK[cells[r][c]]:>3}" for c in columns)
        lines.append(f"{r:<{width}} {marks}")
    lines.append(SERVICE_LEGEND)
    return "\n".join(printable(line) for line in lines) + "\n"
