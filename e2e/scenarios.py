"""The end-to-end scenarios: policies, steps and hand-written expected reachability.

Every expectation here is written by hand from the NetworkPolicy spec (and, where the
spec leaves a choice, ``docs/semantics.md``); none is computed by stockade. Truth
tables are printed the way the upstream netpol suite prints them: rows are sources,
columns destinations, ``.`` allowed and ``X`` denied, for the nine pods of
:mod:`e2e.cluster_model`. The diagonal is always ``.``: a pod can always reach itself
(semantics rule 12; the upstream suite ignores loopback instead).

Policies are plain dicts exactly as ``kubectl apply`` takes them. Those that need
run-time facts (pod IPs in an ``ipBlock``, the addresses of the external hosts) are
built from the driver at run time, as upstream builds them from the pod's status.

Where a scenario mirrors an upstream test, ``upstream`` is that test's name.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from e2e.cluster_model import POD_KEYS, network_policy, pod_manifest
from e2e.driver import ClusterDriver

Doc = dict[str, Any]
Build = Callable[[ClusterDriver], list[Doc]]

# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Expect:
    """The expected reachability on one port and protocol, as a truth table."""

    port: int
    protocol: str
    table: str


@dataclass(frozen=True)
class Probe:
    """One connection from a pod (or a node, ``node:node-1``, from its address: the
    kubelet's traffic) to a pod key, an external host name (``ext-1``) or a node
    (``node:node-1``, at its address, where its host-network pods are)."""

    src: str
    dst: str
    port: int
    protocol: str
    allowed: bool


@dataclass(frozen=True)
class Check:
    """Probe the cluster: full matrices and single probes."""

    matrices: tuple[Expect, ...] = ()
    probes: tuple[Probe, ...] = ()


@dataclass(frozen=True)
class Apply:
    """Create or update objects: fixed ones, or built from the driver at run time."""

    docs: tuple[Doc, ...] = ()
    build: Build | None = None

    def objects(self, driver: ClusterDriver) -> list[Doc]:
        """The objects to send."""
        return list(self.docs) + (self.build(driver) if self.build else [])


@dataclass(frozen=True)
class Delete:
    """Delete objects (kind, namespace and name are what counts)."""

    docs: tuple[Doc, ...]


@dataclass(frozen=True)
class RelabelPod:
    """Set a pod's labels to exactly ``labels``."""

    key: str
    labels: dict[str, str]


@dataclass(frozen=True)
class RelabelNamespace:
    """Set a namespace's labels (its name label stays)."""

    name: str
    labels: dict[str, str]


@dataclass(frozen=True)
class RecreatePod:
    """Delete a pod and create it again, on the same IP where the driver can."""

    key: str


@dataclass(frozen=True)
class RestartAgent:
    """Restart one node's agent."""

    node: str


@dataclass(frozen=True)
class RestartController:
    """Restart the controller."""


@dataclass(frozen=True)
class AddNode:
    """Add a node to the cluster (its Node object with ``labels`` besides the kubelet's)."""

    name: str
    labels: dict[str, str] | None = None


@dataclass(frozen=True)
class RelabelNode:
    """Set a Node's labels (the kubelet's ``kubernetes.io/hostname`` and ``os`` stay)."""

    name: str
    labels: dict[str, str]


@dataclass(frozen=True)
class OpenFlow:
    """Open a TCP connection ``name`` from ``src`` (a pod key) to ``dst`` (a pod key
    or ``node:<name>``) on ``port``, kept open (an echo server serves it) until the
    scenario ends; it must open and carry data now."""

    name: str
    src: str
    dst: str
    port: int


@dataclass(frozen=True)
class CheckFlows:
    """Each open flow still carries data (``True``) or has been cut (``False``).

    A flow the rules now deny is cut: the agent deletes its conntrack entries, so the
    established shortcut no longer lets it through.
    """

    flows: tuple[tuple[str, bool], ...]


Step = (
    Apply
    | Delete
    | RelabelPod
    | RelabelNamespace
    | RecreatePod
    | RestartAgent
    | RestartController
    | AddNode
    | RelabelNode
    | OpenFlow
    | CheckFlows
    | Check
)


@dataclass(frozen=True)
class Scenario:
    """A named sequence of steps; ``engine_bug`` marks a known engine disagreement."""

    name: str
    steps: tuple[Step, ...]
    upstream: str = ""
    engine_bug: str = ""


# --------------------------------------------------------------------------- tables


def parse_table(text: str) -> dict[str, dict[str, bool]]:
    """Parse a truth table: a header of the nine pod keys, then one row per source."""
    lines = [line.split() for line in text.strip().splitlines() if line.strip()]
    keys = list(POD_KEYS)
    if not lines or lines[0] != keys:
        raise ValueError(f"truth table header must be {' '.join(keys)}, got {lines[:1]}")
    rows = lines[1:]
    if [row[0] for row in rows] != keys:
        raise ValueError(f"truth table rows must be {keys}, got {[r[0] for r in rows]}")
    table: dict[str, dict[str, bool]] = {}
    for row in rows:
        src, cells = row[0], row[1:]
        if len(cells) != len(keys) or any(c not in (".", "X") for c in cells):
            raise ValueError(f"truth table row {src}: need {len(keys)} cells of . or X: {cells}")
        table[src] = {dst: cell == "." for dst, cell in zip(keys, cells, strict=True)}
    return table


def format_table(matrix: dict[str, dict[str, bool]], keys: Sequence[str] = POD_KEYS) -> str:
    """A matrix as a truth table (``.`` allowed, ``X`` denied)."""
    lines = ["     " + " ".join(f"{k:>3}" for k in keys)]
    for src in keys:
        cells = " ".join(f"{'.' if matrix[src][dst] else 'X':>3}" for dst in keys)
        lines.append(f"{src:<4} {cells}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- helpers


def np(namespace: str, name: str, spec: Doc) -> Doc:
    """A NetworkPolicy ``namespace/name``."""
    return network_policy(namespace, name, spec)


def tcp(port: int, table: str) -> Expect:
    """Expect ``table`` over TCP ``port``."""
    return Expect(port, "TCP", table)


def udp(port: int, table: str) -> Expect:
    """Expect ``table`` over UDP ``port``."""
    return Expect(port, "UDP", table)


def sctp(port: int, table: str) -> Expect:
    """Expect ``table`` over SCTP ``port``."""
    return Expect(port, "SCTP", table)


def check(*matrices: Expect, probes: Sequence[Probe] = ()) -> Check:
    """A check step."""
    return Check(tuple(matrices), tuple(probes))


def apply(*docs: Doc) -> Apply:
    """Apply fixed objects."""
    return Apply(tuple(docs))


def host_cidr(ip: str) -> str:
    """``ip`` as a one-address CIDR (/32 or /128)."""
    return f"{ip}/{ipaddress.ip_address(ip).max_prefixlen}"


def large_cidr(ip: str) -> str:
    """The /4 holding ``ip``, as upstream's ``makeLargeCIDRForIP`` builds it."""
    return str(ipaddress.ip_network(f"{ip}/4", strict=False))


def everything(ip: str) -> str:
    """Every address of ``ip``'s family."""
    return "0.0.0.0/0" if ipaddress.ip_address(ip).version == 4 else "::/0"


def _all_pods_inside(driver: ClusterDriver, cidr: str) -> None:
    net = ipaddress.ip_network(cidr)
    outside = [k for k in POD_KEYS if ipaddress.ip_address(driver.pod_ip(k)) not in net]
    if outside:
        raise AssertionError(f"the scenario needs every pod inside {cidr}; not: {outside}")


# --------------------------------------------------------------------------- tables used often
# Written out by hand like every other table.

ALL_ALLOWED = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

# Every pod of x isolated for ingress with nothing allowed.
X_INGRESS_DENIED = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   .   .   .   .   .   .
x/b   X   .   X   .   .   .   .   .   .
x/c   X   X   .   .   .   .   .   .   .
y/a   X   X   X   .   .   .   .   .   .
y/b   X   X   X   .   .   .   .   .   .
y/c   X   X   X   .   .   .   .   .   .
z/a   X   X   X   .   .   .   .   .   .
z/b   X   X   X   .   .   .   .   .   .
z/c   X   X   X   .   .   .   .   .   .
"""

# Every pod of x isolated for egress with nothing allowed.
X_EGRESS_DENIED = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   X   X   X   X   X   X
x/b   X   .   X   X   X   X   X   X   X
x/c   X   X   .   X   X   X   X   X   X
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

# Every pod of x isolated both ways with nothing allowed.
X_ALL_DENIED = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   X   X   X   X   X   X
x/b   X   .   X   X   X   X   X   X   X
x/c   X   X   .   X   X   X   X   X   X
y/a   X   X   X   .   .   .   .   .   .
y/b   X   X   X   .   .   .   .   .   .
y/c   X   X   X   .   .   .   .   .   .
z/a   X   X   X   .   .   .   .   .   .
z/b   X   X   X   .   .   .   .   .   .
z/c   X   X   X   .   .   .   .   .   .
"""

# x/a isolated for ingress with nothing allowed (everyone else open).
XA_INGRESS_DENIED = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   X   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   X   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   X   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
"""

# x/a isolated for egress with nothing allowed.
XA_EGRESS_DENIED = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   X   X   X   X   X   X
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

# x/a admits only namespace y.
XA_FROM_Y_ONLY = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   X   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   X   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
"""

# x/a admits only x/b.
XA_FROM_XB_ONLY = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   X   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   X   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
"""

# x/a admits only y/a.
XA_FROM_YA_ONLY = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   X   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   X   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   X   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
"""

# x/a admits pods labelled pod=b of any namespace; x/b and x/c admit nobody.
XA_FROM_ANY_B_REST_OF_X_DENIED = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   .   .   .   .   .   .
x/b   .   .   X   .   .   .   .   .   .
x/c   X   X   .   .   .   .   .   .   .
y/a   X   X   X   .   .   .   .   .   .
y/b   .   X   X   .   .   .   .   .   .
y/c   X   X   X   .   .   .   .   .   .
z/a   X   X   X   .   .   .   .   .   .
z/b   .   X   X   .   .   .   .   .   .
z/c   X   X   X   .   .   .   .   .   .
"""

# x/a admits pods labelled pod=b of any namespace.
XA_FROM_ANY_B = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
"""

# --------------------------------------------------------------------------- policies used often

DENY_INGRESS_X = np("x", "deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
DENY_ALL_X = np("x", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
NS_Y = {"kubernetes.io/metadata.name": "y"}


def _from_any_b() -> Doc:
    return np(
        "x",
        "allow-any-b-to-a",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [
                {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}
            ],
        },
    )


# --------------------------------------------------------------------------- ipBlock builders


def _egress_a_to_yb(d: ClusterDriver) -> list[Doc]:
    return [
        np(
            "x",
            "allow-client-a-via-cidr-egress-rule",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": host_cidr(d.pod_ip("y/b"))}}]}],
            },
        )
    ]


def _egress_a_except_xb(d: ClusterDriver) -> list[Doc]:
    ip = d.pod_ip("x/b")
    _all_pods_inside(d, large_cidr(ip))
    block = {"cidr": large_cidr(ip), "except": [host_cidr(ip)]}
    return [
        np(
            "x",
            "allow-client-a-via-cidr-egress-rule",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": block}]}],
            },
        )
    ]


def _egress_a_to_xb(d: ClusterDriver) -> list[Doc]:
    return [
        np(
            "x",
            "allow-client-a-to-b-via-cidr",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": host_cidr(d.pod_ip("x/b"))}}]}],
            },
        )
    ]


def _ingress_a_except_ya(d: ClusterDriver) -> list[Doc]:
    ip = d.pod_ip("y/a")
    _all_pods_inside(d, large_cidr(ip))
    return [
        np(
            "x",
            "allow-cidr-except-y-a",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": large_cidr(ip), "except": [host_cidr(ip)]}}]}
                ],
            },
        )
    ]


def _ingress_a_from_ext1(d: ClusterDriver) -> list[Doc]:
    ext = d.external_hosts()["ext-1"]
    return [
        np(
            "x",
            "allow-from-ext-1-only",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": host_cidr(ext)}}]}],
            },
        )
    ]


def _egress_a_everything_but_ext2(d: ClusterDriver) -> list[Doc]:
    ext2 = d.external_hosts()["ext-2"]
    block = {"cidr": everything(ext2), "except": [host_cidr(ext2)]}
    return [
        np(
            "x",
            "allow-egress-all-but-ext-2",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": block}]}],
            },
        )
    ]


def _egress_a_to_ext1_tcp80(d: ClusterDriver) -> list[Doc]:
    ext1 = d.external_hosts()["ext-1"]
    return [
        np(
            "x",
            "allow-egress-ext-1-tcp-80",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"ipBlock": {"cidr": host_cidr(ext1)}}],
                        "ports": [{"protocol": "TCP", "port": 80}],
                    }
                ],
            },
        )
    ]


def protocol_variant(base: Scenario, protocol: str, also: Sequence[Expect] = ()) -> Scenario:
    """``base``, a TCP scenario of the upstream suite, over ``protocol`` instead.

    Every TCP port of its policies and every TCP expectation becomes ``protocol``
    (the truth tables stay the hand-written ones of ``base``); ``also`` adds
    expectations to its last check (that the other protocol stays closed, say). The
    upstream suite runs the same tests over UDP and SCTP this way.
    """
    steps = [_step_over(step, protocol) for step in base.steps]
    if also:
        last = max(i for i, step in enumerate(steps) if isinstance(step, Check))
        final = steps[last]
        assert isinstance(final, Check)
        steps[last] = Check((*final.matrices, *also), final.probes)
    return Scenario(
        f"{protocol.lower()}-{base.name}",
        tuple(steps),
        upstream=f"{base.upstream} ({protocol})",
    )


def _step_over(step: Step, protocol: str) -> Step:
    if isinstance(step, Apply):
        assert step.build is None, "a built step has no fixed policies to translate"
        return Apply(tuple(_doc_over(doc, protocol) for doc in step.docs))
    if isinstance(step, Check):
        matrices = tuple(
            Expect(e.port, protocol, e.table) if e.protocol == "TCP" else e for e in step.matrices
        )
        probes = tuple(
            dataclasses.replace(p, protocol=protocol) if p.protocol == "TCP" else p
            for p in step.probes
        )
        return Check(matrices, probes)
    return step


def _doc_over(doc: Any, protocol: str) -> Any:
    if isinstance(doc, dict):
        return {
            k: protocol if k == "protocol" and v == "TCP" else _doc_over(v, protocol)
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [_doc_over(v, protocol) for v in doc]
    return doc


def _pods_on_node_3(d: ClusterDriver) -> list[Doc]:
    has_sctp = d.supports_protocol("SCTP")
    return [
        pod_manifest("y/d", labels={"pod": "b"}, node="node-3", sctp=has_sctp),
        pod_manifest("x/d", labels={"pod": "a"}, node="node-3", sctp=has_sctp),
    ]


# --------------------------------------------------------------------------- the scenarios

SCENARIOS: tuple[Scenario, ...] = (
    # ---- default deny / allow all ------------------------------------------------
    Scenario(
        "default-deny-ingress",
        upstream="should support a 'default-deny-ingress' policy",
        steps=(apply(DENY_INGRESS_X), check(tcp(80, X_INGRESS_DENIED))),
    ),
    Scenario(
        "default-deny-all",
        upstream="should support a 'default-deny-all' policy",
        steps=(
            apply(DENY_ALL_X),
            check(
                tcp(80, X_ALL_DENIED),
                probes=(
                    Probe("x/a", "ext-1", 80, "TCP", False),
                    Probe("y/a", "ext-1", 80, "TCP", True),
                ),
            ),
        ),
    ),
    Scenario(
        "default-deny-egress",
        upstream="should support a 'default-deny-egress' policy",
        steps=(
            apply(np("x", "deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})),
            check(
                tcp(80, X_EGRESS_DENIED),
                udp(81, X_EGRESS_DENIED),
                probes=(
                    Probe("x/b", "ext-1", 80, "TCP", False),
                    Probe("x/c", "ext-2", 81, "UDP", False),
                    Probe("z/c", "ext-2", 81, "UDP", True),
                ),
            ),
        ),
    ),
    Scenario(
        "allow-all",
        upstream="should support allow-all policy",
        steps=(
            apply(np("x", "allow-all", {"podSelector": {}, "ingress": [{}]})),
            check(tcp(80, ALL_ALLOWED), tcp(81, ALL_ALLOWED), udp(80, ALL_ALLOWED)),
        ),
    ),
    Scenario(
        "deny-ingress-from-other-namespaces",
        upstream="should deny ingress from pods on other namespaces",
        steps=(
            apply(
                np(
                    "x",
                    "deny-empty-policy",
                    {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
                )
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   X   X   X   .   .   .   .   .   .
y/b   X   X   X   .   .   .   .   .   .
y/c   X   X   X   .   .   .   .   .   .
z/a   X   X   X   .   .   .   .   .   .
z/b   X   X   X   .   .   .   .   .   .
z/c   X   X   X   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    # ---- pod and namespace selectors --------------------------------------------
    Scenario(
        "from-pods-within-server-namespace-podselector",
        upstream="should enforce policy to allow traffic from pods within server namespace "
        "based on PodSelector",
        steps=(
            apply(
                np(
                    "x",
                    "x-a-allows-x-b",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                    },
                )
            ),
            check(tcp(80, XA_FROM_XB_ONLY)),
        ),
    ),
    Scenario(
        "podselector-matchexpressions",
        upstream="should enforce policy based on PodSelector with MatchExpressions",
        steps=(
            apply(
                np(
                    "x",
                    "x-a-allows-x-b",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "podSelector": {
                                            "matchExpressions": [
                                                {"key": "pod", "operator": "In", "values": ["b"]}
                                            ]
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                )
            ),
            check(tcp(80, XA_FROM_XB_ONLY)),
        ),
    ),
    Scenario(
        "ingress-for-a-target",
        upstream="should enforce policy to allow ingress traffic for a target",
        steps=(
            apply(
                DENY_INGRESS_X,
                np(
                    "x",
                    "allow-all-to-a",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}}]}],
                    },
                ),
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   .   .   .   .   .   .
x/b   .   .   X   .   .   .   .   .   .
x/c   .   X   .   .   .   .   .   .   .
y/a   .   X   X   .   .   .   .   .   .
y/b   .   X   X   .   .   .   .   .   .
y/c   .   X   X   .   .   .   .   .   .
z/a   .   X   X   .   .   .   .   .   .
z/b   .   X   X   .   .   .   .   .   .
z/c   .   X   X   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "ingress-from-pods-in-all-namespaces",
        upstream="should enforce policy to allow ingress traffic from pods in all namespaces",
        steps=(
            apply(
                np(
                    "x",
                    "allow-from-another-ns",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {}}}]}],
                    },
                )
            ),
            check(tcp(80, ALL_ALLOWED)),
        ),
    ),
    Scenario(
        "only-from-different-namespace-namespaceselector",
        upstream="should enforce policy to allow traffic only from a different namespace, "
        "based on NamespaceSelector",
        steps=(
            apply(
                np(
                    "x",
                    "allow-client-a-via-ns-selector",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}
                        ],
                    },
                )
            ),
            check(tcp(80, XA_FROM_Y_ONLY)),
        ),
    ),
    Scenario(
        "namespaceselector-matchexpressions",
        upstream="should enforce policy based on NamespaceSelector with MatchExpressions",
        steps=(
            apply(
                np(
                    "x",
                    "allow-ns-y-match-selector",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {
                                            "matchExpressions": [
                                                {"key": "ns", "operator": "In", "values": ["y"]}
                                            ]
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                )
            ),
            check(tcp(80, XA_FROM_Y_ONLY)),
        ),
    ),
    Scenario(
        "namespaceselector-matchlabels-default-label",
        upstream="should enforce policy to allow traffic based on NamespaceSelector with "
        "MatchLabels using default ns label",
        steps=(
            apply(
                np(
                    "x",
                    "allow-client-a-via-ns-selector-for-immutable-ns-label",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": NS_Y}}]}],
                    },
                )
            ),
            check(tcp(80, XA_FROM_Y_ONLY)),
        ),
    ),
    Scenario(
        "namespaceselector-matchexpressions-default-label-egress",
        upstream="should enforce policy based on NamespaceSelector with MatchExpressions "
        "using default ns label",
        steps=(
            apply(
                np(
                    "x",
                    "allow-ns-y-match-selector-for-immutable-ns-label",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "policyTypes": ["Egress"],
                        "egress": [
                            {
                                "to": [
                                    {
                                        "namespaceSelector": {
                                            "matchExpressions": [
                                                {
                                                    "key": "kubernetes.io/metadata.name",
                                                    "operator": "NotIn",
                                                    "values": ["y"],
                                                }
                                            ]
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                )
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   X   X   X   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "podselector-or-namespaceselector",
        upstream="should enforce policy based on PodSelector or NamespaceSelector",
        steps=(
            apply(
                np(
                    "x",
                    "allow-ns-y-match-selector",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {
                                            "matchExpressions": [
                                                {"key": "ns", "operator": "NotIn", "values": ["x"]}
                                            ]
                                        }
                                    },
                                    {"podSelector": {"matchLabels": {"pod": "b"}}},
                                ]
                            }
                        ],
                    },
                )
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "podselector-and-namespaceselector",
        upstream="should enforce policy based on PodSelector and NamespaceSelector",
        steps=(
            apply(
                np(
                    "x",
                    "allow-ns-y-podselector-and-nsselector",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {
                                            "matchExpressions": [
                                                {"key": "ns", "operator": "NotIn", "values": ["x"]}
                                            ]
                                        },
                                        "podSelector": {"matchLabels": {"pod": "b"}},
                                    }
                                ]
                            }
                        ],
                    },
                )
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   X   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "multiple-podselectors-and-namespaceselectors",
        upstream="should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
        steps=(
            apply(
                np(
                    "x",
                    "allow-ns-y-z-pod-b-c",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {
                                            "matchExpressions": [
                                                {"key": "ns", "operator": "NotIn", "values": ["x"]}
                                            ]
                                        },
                                        "podSelector": {
                                            "matchExpressions": [
                                                {
                                                    "key": "pod",
                                                    "operator": "In",
                                                    "values": ["b", "c"],
                                                }
                                            ]
                                        },
                                    }
                                ]
                            }
                        ],
                    },
                )
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   X   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "any-podselectors",
        upstream="should enforce policy based on any PodSelectors",
        steps=(
            apply(
                np(
                    "x",
                    "allow-ns-x-pod-b-c",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [
                                    {"podSelector": {"matchLabels": {"pod": "b"}}},
                                    {"podSelector": {"matchLabels": {"pod": "c"}}},
                                ]
                            }
                        ],
                    },
                )
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   X   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   X   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "only-from-pod-in-different-namespace",
        upstream="should enforce policy to allow traffic only from a pod in a different "
        "namespace based on PodSelector and NamespaceSelector",
        steps=(
            apply(
                np(
                    "x",
                    "allow-ns-y-pod-a-via-namespace-pod-selector",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {"matchLabels": NS_Y},
                                        "podSelector": {"matchLabels": {"pod": "a"}},
                                    }
                                ]
                            }
                        ],
                    },
                )
            ),
            check(tcp(80, XA_FROM_YA_ONLY)),
        ),
    ),
    # ---- ports and protocols ----------------------------------------------------------
    Scenario(
        "ports",
        upstream="should enforce policy based on Ports",
        steps=(
            apply(
                np(
                    "x",
                    "allow-client-a-via-ns-selector",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [{"namespaceSelector": {"matchLabels": NS_Y}}],
                                "ports": [{"port": 81, "protocol": "TCP"}],
                            }
                        ],
                    },
                )
            ),
            check(tcp(81, XA_FROM_Y_ONLY), tcp(80, XA_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "stacked-policies-overlapping-podselectors",
        upstream="should enforce multiple, stacked policies with overlapping podSelectors",
        steps=(
            apply(
                np(
                    "x",
                    "allow-client-a-via-ns-selector",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [{"namespaceSelector": {"matchLabels": NS_Y}}],
                                "ports": [{"port": 81, "protocol": "TCP"}],
                            }
                        ],
                    },
                )
            ),
            check(tcp(81, XA_FROM_Y_ONLY), tcp(80, XA_INGRESS_DENIED)),
            apply(
                np(
                    "x",
                    "allow-client-a-via-ns-selector-80",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [{"namespaceSelector": {"matchLabels": NS_Y}}],
                                "ports": [{"port": 80, "protocol": "TCP"}],
                            }
                        ],
                    },
                )
            ),
            check(tcp(81, XA_FROM_Y_ONLY), tcp(80, XA_FROM_Y_ONLY)),
        ),
    ),
    Scenario(
        "ingress-on-one-named-port",
        upstream="should allow ingress access on one named port",
        steps=(
            apply(
                np(
                    "x",
                    "allow-all",
                    {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]},
                )
            ),
            # serve-81-tcp is declared for TCP only: UDP 81 stays closed.
            check(tcp(81, ALL_ALLOWED), tcp(80, X_INGRESS_DENIED), udp(81, X_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "ingress-from-namespace-on-one-named-port",
        upstream="should allow ingress access from namespace on one named port",
        steps=(
            apply(
                np(
                    "x",
                    "allow-client-a-via-ns-selector-80",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [{"namespaceSelector": {"matchLabels": NS_Y}}],
                                "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}],
                            }
                        ],
                    },
                )
            ),
            check(tcp(80, XA_FROM_Y_ONLY), tcp(81, XA_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "egress-on-one-named-port",
        upstream="should allow egress access on one named port",
        steps=(
            apply(
                np(
                    "x",
                    "allow-egress",
                    {
                        "podSelector": {},
                        "policyTypes": ["Egress"],
                        "egress": [{"ports": [{"port": "serve-80-tcp"}]}],
                    },
                )
            ),
            check(
                tcp(80, ALL_ALLOWED),
                tcp(81, X_EGRESS_DENIED),
                # An address outside the cluster declares no named port (semantics.md).
                probes=(
                    Probe("x/a", "ext-1", 80, "TCP", False),
                    Probe("y/a", "ext-1", 80, "TCP", True),
                ),
            ),
        ),
    ),
    Scenario(
        "named-port-udp",
        steps=(
            apply(
                np(
                    "x",
                    "allow-serve-80-udp",
                    {
                        "podSelector": {},
                        "ingress": [{"ports": [{"protocol": "UDP", "port": "serve-80-udp"}]}],
                    },
                )
            ),
            check(udp(80, ALL_ALLOWED), tcp(80, X_INGRESS_DENIED), udp(81, X_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "named-port-protocol-must-match-declared",
        steps=(
            # protocol defaults to TCP and no container declares serve-80-udp for TCP.
            apply(
                np(
                    "x",
                    "allow-serve-80-udp-as-tcp",
                    {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-udp"}]}]},
                )
            ),
            check(udp(80, X_INGRESS_DENIED), tcp(80, X_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "ingress-any-port-on-a-specific-protocol",
        upstream="should enforce ingress policy allowing any port traffic to a server on a "
        "specific protocol",
        steps=(
            apply(
                np(
                    "x",
                    "allow-ingress-by-proto",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [{"ports": [{"protocol": "TCP"}]}],
                    },
                )
            ),
            check(tcp(80, ALL_ALLOWED), tcp(81, ALL_ALLOWED), udp(80, XA_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "tcp-denied-when-policy-allows-only-udp",
        upstream="should not allow access by TCP when a policy specifies only UDP",
        steps=(
            apply(
                np(
                    "x",
                    "allow-only-udp-ingress-on-port-81",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}],
                    },
                )
            ),
            check(tcp(81, XA_INGRESS_DENIED), udp(81, ALL_ALLOWED), udp(80, XA_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "sctp-is-not-tcp",
        upstream="should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if "
        "the plugin doesn't support SCTP",
        steps=(
            apply(
                DENY_INGRESS_X,
                np(
                    "x",
                    "allow-only-sctp-ingress-on-port-81",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [{"ports": [{"port": 81, "protocol": "SCTP"}]}],
                    },
                ),
            ),
            check(
                tcp(81, X_INGRESS_DENIED),
                sctp(
                    81,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   .   .   .   .   .   .
x/b   .   .   X   .   .   .   .   .   .
x/c   .   X   .   .   .   .   .   .   .
y/a   .   X   X   .   .   .   .   .   .
y/b   .   X   X   .   .   .   .   .   .
y/c   .   X   X   .   .   .   .   .   .
z/a   .   X   X   .   .   .   .   .   .
z/b   .   X   X   .   .   .   .   .   .
z/c   .   X   X   .   .   .   .   .   .
""",
                ),
            ),
        ),
    ),
    Scenario(
        "sctp-policy-isolates-its-pods",
        upstream="should properly isolate pods that are selected by a policy allowing SCTP, "
        "even if the plugin doesn't support SCTP",
        steps=(
            apply(
                np(
                    "x",
                    "allow-only-sctp-ingress-on-port-80",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}],
                    },
                )
            ),
            check(
                tcp(81, XA_INGRESS_DENIED),
                tcp(80, XA_INGRESS_DENIED),
                sctp(80, ALL_ALLOWED),
                sctp(81, XA_INGRESS_DENIED),
            ),
        ),
    ),
    Scenario(
        "endport-ingress-range",
        upstream="should allow ingress/egress based on port ranges (endPort)",
        steps=(
            apply(
                np(
                    "x",
                    "allow-tcp-75-to-80",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [{"ports": [{"protocol": "TCP", "port": 75, "endPort": 80}]}],
                    },
                )
            ),
            # The range is inclusive: 80 is in, 81 is out.
            check(tcp(80, ALL_ALLOWED), tcp(81, XA_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "endport-egress-range",
        upstream="should allow ingress/egress based on port ranges (endPort)",
        steps=(
            apply(
                np(
                    "x",
                    "allow-egress-udp-81-to-85",
                    {
                        "podSelector": {},
                        "policyTypes": ["Egress"],
                        "egress": [{"ports": [{"protocol": "UDP", "port": 81, "endPort": 85}]}],
                    },
                )
            ),
            check(udp(81, ALL_ALLOWED), udp(80, X_EGRESS_DENIED), tcp(81, X_EGRESS_DENIED)),
        ),
    ),
    # ---- egress -----------------------------------------------------------------------
    Scenario(
        "deny-egress-podselector",
        upstream="should deny egress from pods based on PodSelector",
        steps=(
            apply(
                np(
                    "x",
                    "deny-egress-pod-a",
                    {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]},
                )
            ),
            check(tcp(80, XA_EGRESS_DENIED)),
        ),
    ),
    Scenario(
        "deny-egress-all-pods-in-namespace",
        upstream="should deny egress from all pods in a namespace",
        steps=(
            apply(np("x", "deny-egress-ns-x", {"podSelector": {}, "policyTypes": ["Egress"]})),
            check(tcp(80, X_EGRESS_DENIED)),
        ),
    ),
    Scenario(
        "ingress-and-egress-together",
        upstream="should work with Ingress, Egress specified together",
        steps=(
            apply(
                np(
                    "x",
                    "allow-client-a-via-pod-selector",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "policyTypes": ["Egress", "Ingress"],
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                        "egress": [{"ports": [{"port": 80}]}],
                    },
                )
            ),
            check(
                tcp(80, XA_FROM_XB_ONLY),
                tcp(
                    81,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   X   X   X   X   X   X
x/b   .   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   X   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   X   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
""",
                ),
            ),
        ),
    ),
    Scenario(
        "egress-denied-on-client-side-even-if-server-allows",
        upstream="should support denying of egress traffic on the client side (even if the "
        "server explicitly allows this traffic)",
        steps=(
            apply(
                np(
                    "x",
                    "allow-to-ns-y-pod-a",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "policyTypes": ["Egress"],
                        "egress": [
                            {
                                "to": [
                                    {
                                        "namespaceSelector": {"matchLabels": NS_Y},
                                        "podSelector": {"matchLabels": {"pod": "a"}},
                                    }
                                ]
                            }
                        ],
                    },
                ),
                *(
                    np(
                        "y",
                        f"allow-from-xa-on-y{target}-match-selector",
                        {
                            "podSelector": {"matchLabels": {"pod": target}},
                            "policyTypes": ["Ingress"],
                            "ingress": [
                                {
                                    "from": [
                                        {
                                            "namespaceSelector": {
                                                "matchLabels": {"kubernetes.io/metadata.name": "x"}
                                            },
                                            "podSelector": {"matchLabels": {"pod": "a"}},
                                        }
                                    ]
                                }
                            ],
                        },
                    )
                    for target in ("a", "b")
                ),
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   .   X   X   X   X   X
x/b   .   .   .   X   X   .   .   .   .
x/c   .   .   .   X   X   .   .   .   .
y/a   .   .   .   .   X   .   .   .   .
y/b   .   .   .   X   .   .   .   .   .
y/c   .   .   .   X   X   .   .   .   .
z/a   .   .   .   X   X   .   .   .   .
z/b   .   .   .   X   X   .   .   .   .
z/c   .   .   .   X   X   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "egress-to-server-in-other-namespace-podselector-and-namespaceselector",
        upstream="should enforce egress policy allowing traffic to a server in a different "
        "namespace based on PodSelector and NamespaceSelector",
        steps=(
            apply(
                np(
                    "x",
                    "allow-to-ns-y-pod-a",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "policyTypes": ["Egress"],
                        "egress": [
                            {
                                "to": [
                                    {
                                        "namespaceSelector": {"matchLabels": NS_Y},
                                        "podSelector": {"matchLabels": {"pod": "a"}},
                                    }
                                ]
                            }
                        ],
                    },
                )
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   .   X   X   X   X   X
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "ingress-and-egress-controlled-independently",
        upstream="should enforce policies to check ingress and egress policies can be "
        "controlled independently based on PodSelector",
        steps=(
            apply(
                np(
                    "x",
                    "allow-egress-for-target",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "policyTypes": ["Egress"],
                        "egress": [{}],
                    },
                )
            ),
            check(tcp(80, ALL_ALLOWED)),
            apply(
                np(
                    "x",
                    "deny-ingress-via-label-selector",
                    {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]},
                )
            ),
            check(tcp(80, XA_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "multiple-ingress-policies-allow-all-takes-precedence",
        upstream="should enforce multiple ingress policies with ingress allow-all policy "
        "taking precedence",
        steps=(
            apply(
                np(
                    "x",
                    "allow-ingress-port-80",
                    {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]},
                )
            ),
            check(tcp(81, X_INGRESS_DENIED), tcp(80, ALL_ALLOWED)),
            apply(np("x", "allow-ingress", {"podSelector": {}, "ingress": [{}]})),
            check(tcp(81, ALL_ALLOWED)),
        ),
    ),
    Scenario(
        "multiple-egress-policies-allow-all-takes-precedence",
        upstream="should enforce multiple egress policies with egress allow-all policy "
        "taking precedence",
        steps=(
            apply(
                np(
                    "x",
                    "allow-egress-port-80",
                    {
                        "podSelector": {},
                        "policyTypes": ["Egress"],
                        "egress": [{"ports": [{"port": 80}]}],
                    },
                )
            ),
            check(tcp(81, X_EGRESS_DENIED), tcp(80, ALL_ALLOWED)),
            apply(
                np(
                    "x",
                    "allow-egress",
                    {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
                )
            ),
            check(tcp(81, ALL_ALLOWED)),
        ),
    ),
    # ---- ipBlock ------------------------------------------------------------------------
    Scenario(
        "egress-to-server-in-cidr-block",
        upstream="should allow egress access to server in CIDR block",
        steps=(
            Apply(build=_egress_a_to_yb),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   X   .   X   X   X   X
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
""",
                ),
                probes=(Probe("x/a", "ext-1", 80, "TCP", False),),
            ),
        ),
    ),
    Scenario(
        "egress-cidr-except-clause",
        upstream="should enforce except clause while egress access to server in CIDR block",
        steps=(
            Apply(build=_egress_a_except_xb),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "ip-in-both-cidr-and-except-is-allowed-by-another-policy",
        upstream="should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
        steps=(
            Apply(build=_egress_a_except_xb),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
""",
                )
            ),
            # A second policy allows exactly the excepted address: the union allows it.
            Apply(build=_egress_a_to_xb),
            check(tcp(80, ALL_ALLOWED)),
            # Without the wide block only x/b remains.
            Delete((np("x", "allow-client-a-via-cidr-egress-rule", {}),)),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   X   X   X   X   X   X   X
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "ingress-cidr-except-pod",
        steps=(
            Apply(build=_ingress_a_except_ya),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "ingress-ipblock-of-outside-host-admits-no-pod",
        steps=(Apply(build=_ingress_a_from_ext1), check(tcp(80, XA_INGRESS_DENIED))),
    ),
    Scenario(
        "egress-everything-except-one-external-host",
        steps=(
            Apply(build=_egress_a_everything_but_ext2),
            check(
                tcp(80, ALL_ALLOWED),
                probes=(
                    Probe("x/a", "ext-1", 80, "TCP", True),
                    Probe("x/a", "ext-2", 80, "TCP", False),
                    Probe("x/a", "ext-2", 81, "UDP", False),
                    Probe("x/a", "ext-1", 81, "UDP", True),
                    Probe("x/b", "ext-2", 80, "TCP", True),
                ),
            ),
        ),
    ),
    Scenario(
        "egress-to-one-external-host-on-one-port",
        steps=(
            Apply(build=_egress_a_to_ext1_tcp80),
            check(
                tcp(80, XA_EGRESS_DENIED),
                probes=(
                    Probe("x/a", "ext-1", 80, "TCP", True),
                    Probe("x/a", "ext-1", 81, "TCP", False),
                    Probe("x/a", "ext-1", 80, "UDP", False),
                    Probe("x/a", "ext-2", 80, "TCP", False),
                    Probe("x/c", "ext-2", 80, "TCP", True),
                ),
            ),
        ),
    ),
    # ---- dynamics -----------------------------------------------------------------------
    Scenario(
        "updated-policy",
        upstream="should enforce updated policy",
        steps=(
            apply(np("x", "allow-all-mutate-to-deny-all", {"podSelector": {}, "ingress": [{}]})),
            check(tcp(81, ALL_ALLOWED)),
            apply(np("x", "allow-all-mutate-to-deny-all", {"podSelector": {}, "ingress": []})),
            check(tcp(81, X_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "updated-policy-peer-changes",
        steps=(
            apply(
                np(
                    "x",
                    "a-allows-one-pod",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                    },
                )
            ),
            check(tcp(80, XA_FROM_XB_ONLY)),
            apply(
                np(
                    "x",
                    "a-allows-one-pod",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}],
                    },
                )
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   X   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   X   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   X   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "updated-policy-changes-targets-and-direction",
        steps=(
            apply(
                np(
                    "x",
                    "isolate-one-pod",
                    {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]},
                )
            ),
            check(tcp(80, XA_INGRESS_DENIED)),
            apply(
                np(
                    "x",
                    "isolate-one-pod",
                    {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]},
                )
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   X   .   .   .   .   .   .   .
y/a   .   X   .   .   .   .   .   .   .
y/b   .   X   .   .   .   .   .   .   .
y/c   .   X   .   .   .   .   .   .   .
z/a   .   X   .   .   .   .   .   .   .
z/b   .   X   .   .   .   .   .   .   .
z/c   .   X   .   .   .   .   .   .   .
""",
                )
            ),
            apply(
                np(
                    "x",
                    "isolate-one-pod",
                    {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"]},
                )
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   X   .   X   X   X   X   X   X   X
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "shared-peer-selector-survives-deleting-one-policy",
        steps=(
            *(
                apply(
                    np(
                        "x",
                        f"{target}-allows-b",
                        {
                            "podSelector": {"matchLabels": {"pod": target}},
                            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                        },
                    )
                )
                for target in ("a", "c")
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   X   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   X   .   X   .   .   .   .   .   .
y/b   X   .   X   .   .   .   .   .   .
y/c   X   .   X   .   .   .   .   .   .
z/a   X   .   X   .   .   .   .   .   .
z/b   X   .   X   .   .   .   .   .   .
z/c   X   .   X   .   .   .   .   .   .
""",
                )
            ),
            Delete((np("x", "a-allows-b", {}),)),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   X   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   X   .   .   .   .   .   .
y/b   .   .   X   .   .   .   .   .   .
y/c   .   .   X   .   .   .   .   .   .
z/a   .   .   X   .   .   .   .   .   .
z/b   .   .   X   .   .   .   .   .   .
z/c   .   .   X   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "namespace-relabelled-with-pod-selector-in-one-peer",
        steps=(
            apply(
                np(
                    "x",
                    "allow-b-of-ns-label-y",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {"matchLabels": {"ns": "y"}},
                                        "podSelector": {"matchLabels": {"pod": "b"}},
                                    }
                                ]
                            }
                        ],
                    },
                )
            ),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   X   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   X   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
""",
                )
            ),
            RelabelNamespace("z", {"ns": "y"}),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   X   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "stop-enforcing-after-delete",
        upstream="should stop enforcing policies after they are deleted",
        steps=(
            apply(DENY_ALL_X),
            check(tcp(80, X_ALL_DENIED)),
            Delete((DENY_ALL_X,)),
            check(tcp(80, ALL_ALLOWED), udp(81, ALL_ALLOWED)),
        ),
    ),
    Scenario(
        "ingress-from-updated-namespace",
        upstream="should allow ingress access from updated namespace",
        steps=(
            apply(
                np(
                    "x",
                    "allow-client-a-via-ns-selector",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {"from": [{"namespaceSelector": {"matchLabels": {"ns2": "updated"}}}]}
                        ],
                    },
                )
            ),
            check(tcp(80, XA_INGRESS_DENIED)),
            RelabelNamespace("y", {"ns": "y", "ns2": "updated"}),
            check(tcp(80, XA_FROM_Y_ONLY)),
        ),
    ),
    Scenario(
        "namespace-relabelled-moves-access",
        steps=(
            apply(
                np(
                    "x",
                    "allow-from-ns-label-y",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}
                        ],
                    },
                )
            ),
            check(tcp(80, XA_FROM_Y_ONLY)),
            RelabelNamespace("y", {"ns": "y-old"}),
            RelabelNamespace("z", {"ns": "y"}),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   X   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   X   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "ingress-from-updated-pod",
        upstream="should allow ingress access from updated pod",
        steps=(
            apply(
                np(
                    "x",
                    "allow-client-a-via-pod-selector",
                    {
                        "podSelector": {"matchLabels": {"pod": "a"}},
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "podSelector": {
                                            "matchLabels": {"pod": "b", "pod2": "updated"}
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                )
            ),
            check(tcp(80, XA_INGRESS_DENIED)),
            RelabelPod("x/b", {"pod": "b", "pod2": "updated"}),
            check(tcp(80, XA_FROM_XB_ONLY)),
            RelabelPod("x/b", {"pod": "b"}),
            check(tcp(80, XA_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "deny-ingress-to-updated-pod",
        upstream="should deny ingress access to updated pod",
        steps=(
            apply(
                np(
                    "x",
                    "deny-ingress-via-label-selector",
                    {
                        "podSelector": {"matchLabels": {"target": "isolated"}},
                        "policyTypes": ["Ingress"],
                    },
                )
            ),
            check(tcp(80, ALL_ALLOWED)),
            RelabelPod("x/a", {"pod": "a", "target": "isolated"}),
            check(tcp(80, XA_INGRESS_DENIED)),
            RelabelPod("x/a", {"pod": "a"}),
            check(tcp(80, ALL_ALLOWED)),
        ),
    ),
    Scenario(
        "pod-recreated-on-same-ip",
        steps=(
            apply(DENY_INGRESS_X, _from_any_b()),
            check(tcp(80, XA_FROM_ANY_B_REST_OF_X_DENIED)),
            # A peer (cross-node to x/a) and then a target go away and come back.
            RecreatePod("y/b"),
            check(tcp(80, XA_FROM_ANY_B_REST_OF_X_DENIED)),
            RecreatePod("x/a"),
            check(tcp(80, XA_FROM_ANY_B_REST_OF_X_DENIED)),
        ),
    ),
    Scenario(
        "pod-relabelled-out-of-and-back-into-a-target",
        steps=(
            apply(
                np(
                    "x",
                    "deny-ingress-pod-a",
                    {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]},
                )
            ),
            check(tcp(80, XA_INGRESS_DENIED)),
            RelabelPod("x/a", {"pod": "a2"}),
            check(tcp(80, ALL_ALLOWED)),
            RelabelPod("x/a", {"pod": "a"}),
            check(tcp(80, XA_INGRESS_DENIED)),
        ),
    ),
    Scenario(
        "agent-restarted",
        steps=(
            apply(DENY_INGRESS_X, _from_any_b()),
            check(tcp(80, XA_FROM_ANY_B_REST_OF_X_DENIED)),
            # Probed right after each restart: the kernel state must hold meanwhile.
            RestartAgent("node-1"),
            check(tcp(80, XA_FROM_ANY_B_REST_OF_X_DENIED)),
            RestartAgent("node-2"),
            check(tcp(80, XA_FROM_ANY_B_REST_OF_X_DENIED)),
            # The restarted agents follow later changes.
            Delete((DENY_INGRESS_X,)),
            check(tcp(80, XA_FROM_ANY_B)),
        ),
    ),
    Scenario(
        "controller-restarted",
        steps=(
            apply(DENY_INGRESS_X, _from_any_b()),
            check(tcp(80, XA_FROM_ANY_B_REST_OF_X_DENIED)),
            RestartController(),
            check(tcp(80, XA_FROM_ANY_B_REST_OF_X_DENIED)),
            # The restarted controller follows later changes.
            Delete((DENY_INGRESS_X,)),
            check(tcp(80, XA_FROM_ANY_B)),
            RelabelPod("z/b", {"pod": "b-off"}),
            check(
                tcp(
                    80,
                    """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   X   .   .   .   .   .   .   .   .
y/a   X   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   X   .   .   .   .   .   .   .   .
z/a   X   .   .   .   .   .   .   .   .
z/b   X   .   .   .   .   .   .   .   .
z/c   X   .   .   .   .   .   .   .   .
""",
                )
            ),
        ),
    ),
    Scenario(
        "node-added",
        steps=(
            apply(_from_any_b()),
            check(tcp(80, XA_FROM_ANY_B)),
            AddNode("node-3"),
            # y/d is labelled pod=b (a peer), x/d pod=a (a target), both on node-3.
            Apply(build=_pods_on_node_3),
            check(
                tcp(80, XA_FROM_ANY_B),
                probes=(
                    Probe("y/d", "x/a", 80, "TCP", True),
                    Probe("x/d", "x/a", 80, "TCP", False),
                    Probe("x/c", "x/d", 80, "TCP", False),
                    Probe("y/b", "x/d", 80, "TCP", True),
                    Probe("y/d", "x/d", 80, "TCP", True),
                    Probe("x/a", "y/d", 80, "TCP", True),
                    Probe("x/d", "y/a", 81, "UDP", True),
                ),
            ),
        ),
    ),
)

_UPSTREAM_BY_NAME = {s.name: s for s in SCENARIOS}

# The upstream suite's UDP and SCTP runs of its TCP tests, generated from them.
SCENARIOS += (
    protocol_variant(_UPSTREAM_BY_NAME["default-deny-ingress"], "UDP"),
    protocol_variant(_UPSTREAM_BY_NAME["ports"], "UDP", also=(tcp(81, XA_INGRESS_DENIED),)),
    protocol_variant(_UPSTREAM_BY_NAME["only-from-pod-in-different-namespace"], "UDP"),
    protocol_variant(_UPSTREAM_BY_NAME["default-deny-ingress"], "SCTP"),
    protocol_variant(_UPSTREAM_BY_NAME["ports"], "SCTP"),
    protocol_variant(_UPSTREAM_BY_NAME["only-from-pod-in-different-namespace"], "SCTP"),
)
