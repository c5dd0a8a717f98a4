"""The tier scenarios: ClusterNetworkPolicies (Admin and Baseline tiers) around
NetworkPolicies, over the model of :mod:`e2e.cluster_model`, with hand-written truth tables.

Every expectation here is written by hand from the ClusterNetworkPolicy spec
(``policy.networking.k8s.io/v1alpha2``, network-policy-api v0.2.0) and, where it leaves
a choice, ``docs/tiers.md``; none is computed by stockade. The order, per direction
(egress at the source pod, ingress at the destination pod)::

    Admin tier  (priority ascending, rules in order; Accept / Deny final, Pass leaves)
    -> NetworkPolicy tier (the pod isolated in that direction: decided there, final)
    -> Baseline tier (as Admin; Pass leaves the tier)
    -> allowed

A connection is allowed when both of its sides are. Before any tier: a pod reaching
itself is allowed (the diagonal), a node reaching a pod of its own is allowed and
never judged (the kubelet), a pod reaching its own node is judged by its egress tiers.

The first five scenarios are the ClusterNetworkPolicy examples (``examples/cnp-*.yaml``) on the
model's names: ``x`` plays the ``trusted`` namespace, ``z`` the platform (its ``a``
serving "DNS" on UDP 80) or the ``monitoring`` namespace, ``x`` and ``y`` the
tenants. The external address of the legacy backend is the driver's outside host
``ext-1`` (the sandbox has two outside hosts, 203.0.113.10 and .11). The rest are the
dynamics: a priority changed, rule order changed, Accept flipped to Deny under live
connections, a namespace relabelled into and out of a subject, a node added into a
``nodes`` peer.
"""

from __future__ import annotations

import ipaddress

from e2e.cluster_model import NODES, POD_KEYS, cluster_network_policy, host_network_pod_manifest
from e2e.driver import ClusterDriver
from e2e.scenarios import (
    ALL_ALLOWED,
    AddNode,
    Apply,
    CheckFlows,
    Delete,
    Doc,
    OpenFlow,
    Probe,
    RelabelNamespace,
    RelabelNode,
    Scenario,
    apply,
    check,
    host_cidr,
    large_cidr,
    np,
    tcp,
    udp,
)

# --------------------------------------------------------------------------- helpers

TENANTS = {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["x", "y"]}]}
EVERY_NAMESPACE: Doc = {}
#: The port the live flows use: no model server listens there, an echo server does.
FLOW_PORT = 8080


def ns_sel(name: str) -> Doc:
    """The namespace ``name`` by its model label."""
    return {"matchLabels": {"ns": name}}


def cnp(
    name: str,
    tier: str,
    priority: int,
    namespaces: Doc,
    *,
    ingress: list[Doc] | None = None,
    egress: list[Doc] | None = None,
) -> Doc:
    """A ClusterNetworkPolicy whose subject is the pods of the ``namespaces`` selected."""
    spec: Doc = {"tier": tier, "priority": priority, "subject": {"namespaces": namespaces}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return cluster_network_policy(name, spec)


def rule_to(action: str, *peers: Doc, name: str = "", protocols: list[Doc] | None = None) -> Doc:
    """An egress rule."""
    rule: Doc = {"action": action, "to": list(peers)}
    if name:
        rule["name"] = name
    if protocols is not None:
        rule["protocols"] = protocols
    return rule


def rule_from(action: str, *peers: Doc, name: str = "") -> Doc:
    """An ingress rule."""
    rule: Doc = {"action": action, "from": list(peers)}
    if name:
        rule["name"] = name
    return rule


def P(src: str, dst: str, port: int, protocol: str, allowed: bool) -> Probe:
    """A probe (short, for the long probe lists)."""
    return Probe(src, dst, port, protocol, allowed)


# --------------------------------------------------------------------------- 1. legacy backend


def _legacy_backend(priority_of_accept: int) -> Apply:
    """``ext-1`` is the legacy backend: x (the trusted namespace) accepted at
    ``priority_of_accept``, everyone denied at 20."""

    def build(driver: ClusterDriver) -> list[Doc]:
        legacy = host_cidr(driver.external_hosts()["ext-1"])
        return [
            cnp(
                "allow-trusted-to-legacy",
                "Admin",
                priority_of_accept,
                ns_sel("x"),
                egress=[rule_to("Accept", {"networks": [legacy]}, name="legacy-backend")],
            ),
            cnp(
                "deny-legacy",
                "Admin",
                20,
                EVERY_NAMESPACE,
                egress=[rule_to("Deny", {"networks": [legacy]}, name="legacy-backend")],
            ),
        ]

    return Apply(build=build)


LEGACY_PROBES_ACCEPT_FIRST = (
    # x's Accept (priority 10) is met before the Deny (20): x reaches the backend.
    P("x/a", "ext-1", 80, "TCP", True),
    P("x/b", "ext-1", 81, "TCP", True),
    P("x/c", "ext-1", 80, "UDP", True),
    # Everyone else meets only the Deny.
    P("y/a", "ext-1", 80, "TCP", False),
    P("y/b", "ext-1", 81, "UDP", False),
    P("z/c", "ext-1", 80, "TCP", False),
    P("z/b", "ext-1", 80, "UDP", False),
    # Another outside address is nobody's rule: allowed.
    P("y/a", "ext-2", 80, "TCP", True),
    P("z/b", "ext-2", 81, "UDP", True),
)

# --------------------------------------------------------------------------- 2. tenants and DNS

# The platform is z; its z/a serves "DNS" on UDP 80. Tenants x and y: UDP 80 to z/a
# accepted (priority 10), everything else of z denied (20). z itself is no subject.
TENANTS_TO_DNS = cnp(
    "tenants-to-dns",
    "Admin",
    10,
    TENANTS,
    egress=[
        rule_to(
            "Accept",
            {
                "pods": {
                    "namespaceSelector": ns_sel("z"),
                    "podSelector": {"matchLabels": {"pod": "a"}},
                }
            },
            name="dns",
            protocols=[{"udp": {"destinationPort": {"number": 80}}}],
        )
    ],
)
TENANTS_NOT_PLATFORM = cnp(
    "tenants-not-platform",
    "Admin",
    20,
    TENANTS,
    egress=[rule_to("Deny", {"namespaces": ns_sel("z")}, name="platform")],
)

# Tenants (x, y rows) reach no pod of z; z reaches everyone.
TENANTS_NOT_Z = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   X   X   X
x/b   .   .   .   .   .   .   X   X   X
x/c   .   .   .   .   .   .   X   X   X
y/a   .   .   .   .   .   .   X   X   X
y/b   .   .   .   .   .   .   X   X   X
y/c   .   .   .   .   .   .   X   X   X
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

# UDP 80: the tenants reach z/a (the Accept) and no other pod of z (the Deny).
TENANTS_DNS_ONLY = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   X   X
x/b   .   .   .   .   .   .   .   X   X
x/c   .   .   .   .   .   .   .   X   X
y/a   .   .   .   .   .   .   .   X   X
y/b   .   .   .   .   .   .   .   X   X
y/c   .   .   .   .   .   .   .   X   X
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

# --------------------------------------------------------------------------- 3. baseline deny

BASELINE_DEFAULT_DENY = cnp(
    "default-deny",
    "Baseline",
    0,
    EVERY_NAMESPACE,
    ingress=[rule_from("Deny", {"namespaces": EVERY_NAMESPACE}, name="deny-all")],
)
X_ALLOWS_OWN_NAMESPACE = np(
    "x", "allow-same-namespace", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
)

# x's pods are isolated by their NetworkPolicy (admits x): it decides, the Baseline
# deny is never reached for them. y's and z's pods meet the Baseline deny: only
# themselves (the diagonal).
BASELINE_DENY_X_OPEN_TO_ITSELF = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   X   X   X   X   X   X
x/b   .   .   .   X   X   X   X   X   X
x/c   .   .   .   X   X   X   X   X   X
y/a   X   X   X   .   X   X   X   X   X
y/b   X   X   X   X   .   X   X   X   X
y/c   X   X   X   X   X   .   X   X   X
z/a   X   X   X   X   X   X   .   X   X
z/b   X   X   X   X   X   X   X   .   X
z/c   X   X   X   X   X   X   X   X   .
"""

# Only the Baseline deny: every pod reaches itself only.
ONLY_SELF = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   X   X   X   X   X   X
x/b   X   .   X   X   X   X   X   X   X
x/c   X   X   .   X   X   X   X   X   X
y/a   X   X   X   .   X   X   X   X   X
y/b   X   X   X   X   .   X   X   X   X
y/c   X   X   X   X   X   .   X   X   X
z/a   X   X   X   X   X   X   .   X   X
z/b   X   X   X   X   X   X   X   .   X
z/c   X   X   X   X   X   X   X   X   .
"""

BASELINE_NODE_PROBES = (
    # A node to a pod of its own (the kubelet): allowed before any tier.
    P("node:node-1", "y/a", 80, "TCP", True),
    P("node:node-2", "x/b", 80, "TCP", True),
    P("node:node-1", "x/c", 81, "UDP", True),
    # Another node's address is no `namespaces` peer: the Baseline deny does not
    # match it, and y/b is not isolated by any NetworkPolicy: allowed.
    P("node:node-1", "y/b", 80, "TCP", True),
    P("node:node-2", "z/a", 81, "UDP", True),
    # x/b is isolated by its NetworkPolicy, which admits only x's pods: another
    # node's address is not one of them (NetworkPolicy semantics, not a tier).
    P("node:node-1", "x/b", 80, "TCP", False),
)

# --------------------------------------------------------------------------- 4. node network

DENY_NODE_NETWORK = cnp(
    "deny-node-network",
    "Admin",
    10,
    TENANTS,
    egress=[rule_to("Deny", {"nodes": {}}, name="nodes")],
)
# z/h: a host-network pod on node-2 (at node-2's address), serving 9090 TCP and UDP.
HOST_POD = host_network_pod_manifest("z/h", "node-2", ports=((9090, "TCP"), (9090, "UDP")))

NODE_NETWORK_PROBES = (
    # Tenants to a node: denied, their own (INPUT) as another (FORWARD).
    P("x/a", "node:node-1", 80, "TCP", False),
    P("x/a", "node:node-2", 80, "TCP", False),
    P("x/b", "node:node-2", 81, "TCP", False),
    P("y/c", "node:node-1", 80, "UDP", False),
    P("y/b", "node:node-1", 81, "UDP", False),
    # The host-network pod is at node-2's address: the `nodes` peer matches it.
    P("x/a", "z/h", 9090, "TCP", False),
    P("x/b", "z/h", 9090, "UDP", False),
    P("y/c", "z/h", 9090, "TCP", False),
    # z is not a subject: its pods reach the nodes and the host-network pod.
    P("z/a", "node:node-1", 80, "TCP", True),
    P("z/c", "node:node-2", 81, "UDP", True),
    P("z/b", "z/h", 9090, "TCP", True),
    P("z/a", "z/h", 9090, "UDP", True),
    # The kubelet's traffic: a node to its own pods (never judged) and another
    # node's address to a pod (ingress: nothing denies it) both work.
    P("node:node-1", "x/a", 80, "TCP", True),
    P("node:node-2", "x/b", 80, "TCP", True),
    P("node:node-1", "y/c", 81, "UDP", True),
    P("node:node-1", "x/b", 80, "TCP", True),
    P("node:node-2", "y/a", 81, "TCP", True),
    # The host-network pod sends from node-2's address: to pods, allowed.
    P("z/h", "x/b", 80, "TCP", True),
    P("z/h", "y/a", 80, "UDP", True),
)

# --------------------------------------------------------------------------- 5. Pass

# z plays `monitoring`: for the tenants' pods, ingress from z is passed to the
# NetworkPolicy tier (priority 5); everything else is denied (10). x has a
# NetworkPolicy admitting z on TCP 81 only; y has none.
MONITORING_PASS = cnp(
    "monitoring-pass",
    "Admin",
    5,
    TENANTS,
    ingress=[rule_from("Pass", {"namespaces": ns_sel("z")}, name="monitoring")],
)
ISOLATE_TENANTS = cnp(
    "isolate-tenants",
    "Admin",
    10,
    TENANTS,
    ingress=[rule_from("Deny", {"namespaces": EVERY_NAMESPACE}, name="everyone-else")],
)
X_ALLOWS_METRICS = np(
    "x",
    "allow-metrics",
    {
        "podSelector": {},
        "ingress": [
            {
                "from": [{"namespaceSelector": ns_sel("z")}],
                "ports": [{"protocol": "TCP", "port": 81}],
            }
        ],
    },
)

# Port 80 (and UDP 81): tenants reach no tenant (the Deny; even their own namespace),
# only themselves; z passes: x's NetworkPolicy admits it on TCP 81 only (denied here),
# y has no NetworkPolicy and no Baseline rule (allowed). z is no subject: open.
PASS_PORT_80 = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   X   X   X   .   .   .
x/b   X   .   X   X   X   X   .   .   .
x/c   X   X   .   X   X   X   .   .   .
y/a   X   X   X   .   X   X   .   .   .
y/b   X   X   X   X   .   X   .   .   .
y/c   X   X   X   X   X   .   .   .   .
z/a   X   X   X   .   .   .   .   .   .
z/b   X   X   X   .   .   .   .   .   .
z/c   X   X   X   .   .   .   .   .   .
"""

# TCP 81: as port 80, but x's NetworkPolicy admits z on it.
PASS_TCP_81 = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   X   X   X   .   .   .
x/b   X   .   X   X   X   X   .   .   .
x/c   X   X   .   X   X   X   .   .   .
y/a   X   X   X   .   X   X   .   .   .
y/b   X   X   X   X   .   X   .   .   .
y/c   X   X   X   X   X   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

# Without the Pass, z meets the Deny too: the tenants are reached by nobody but themselves.
TENANTS_ISOLATED = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   X   X   X   .   .   .
x/b   X   .   X   X   X   X   .   .   .
x/c   X   X   .   X   X   X   .   .   .
y/a   X   X   X   .   X   X   .   .   .
y/b   X   X   X   X   .   X   .   .   .
y/c   X   X   X   X   X   .   .   .   .
z/a   X   X   X   X   X   X   .   .   .
z/b   X   X   X   X   X   X   .   .   .
z/c   X   X   X   X   X   X   .   .   .
"""

# --------------------------------------------------------------------------- dynamics


def _accept_x_to_z(priority: int) -> Doc:
    return cnp(
        "accept-x-to-z",
        "Admin",
        priority,
        ns_sel("x"),
        egress=[rule_to("Accept", {"namespaces": ns_sel("z")})],
    )


def _deny_to_z(priority: int) -> Doc:
    return cnp(
        "deny-to-z",
        "Admin",
        priority,
        EVERY_NAMESPACE,
        egress=[rule_to("Deny", {"namespaces": ns_sel("z")})],
    )


# The Accept for x comes first: x reaches z; y and z (z's own pods, egress is the
# source's) meet the Deny. The diagonal stays open.
Z_DENIED_EXCEPT_FROM_X = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   X   X   X
y/b   .   .   .   .   .   .   X   X   X
y/c   .   .   .   .   .   .   X   X   X
z/a   .   .   .   .   .   .   .   X   X
z/b   .   .   .   .   .   .   X   .   X
z/c   .   .   .   .   .   .   X   X   .
"""

# The Deny comes first for everyone, x included.
Z_DENIED = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   X   X   X
x/b   .   .   .   .   .   .   X   X   X
x/c   .   .   .   .   .   .   X   X   X
y/a   .   .   .   .   .   .   X   X   X
y/b   .   .   .   .   .   .   X   X   X
y/c   .   .   .   .   .   .   X   X   X
z/a   .   .   .   .   .   .   .   X   X
z/b   .   .   .   .   .   .   X   .   X
z/c   .   .   .   .   .   .   X   X   .
"""

ACCEPT_ZB = rule_to(
    "Accept",
    {"pods": {"namespaceSelector": ns_sel("z"), "podSelector": {"matchLabels": {"pod": "b"}}}},
    name="z-b",
)
DENY_Z = rule_to("Deny", {"namespaces": ns_sel("z")}, name="z")


def _ordered(*rules: Doc) -> Doc:
    return cnp("ordered", "Admin", 10, ns_sel("y"), egress=list(rules))


# Accept z/b, then Deny z: y reaches z/b only of z.
Y_REACHES_ZB_ONLY_OF_Z = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   X   .   X
y/b   .   .   .   .   .   .   X   .   X
y/c   .   .   .   .   .   .   X   .   X
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

# Deny z first: the Accept of z/b is never reached.
Y_REACHES_NO_Z = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   X   X   X
y/b   .   .   .   .   .   .   X   X   X
y/c   .   .   .   .   .   .   X   X   X
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

Y_EGRESS_ISOLATED = np("y", "deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})


def _flip(action: str) -> Doc:
    return cnp(
        "flip", "Admin", 10, ns_sel("y"), egress=[rule_to(action, {"namespaces": ns_sel("x")})]
    )


# y is isolated for egress by a NetworkPolicy that allows nothing, but the Admin
# Accept to x is met first and ends y's egress evaluation: y reaches x only (and
# itself). The other rows are untouched.
Y_REACHES_X_ONLY = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   X   X   X   X   X
y/b   .   .   .   X   .   X   X   X   X
y/c   .   .   .   X   X   .   X   X   X
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

# The Accept flipped to Deny: y reaches nobody but itself (x by the Deny, the rest by
# its NetworkPolicy).
Y_REACHES_NOBODY = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   X   X   X   .   X   X   X   X   X
y/b   X   X   X   X   .   X   X   X   X
y/c   X   X   X   X   X   .   X   X   X
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

TENANT_TO_Z_DENIED = cnp(
    "tenants-not-z",
    "Admin",
    10,
    {"matchLabels": {"tenant": "true"}},
    egress=[rule_to("Deny", {"namespaces": ns_sel("z")})],
)

# x labelled tenant=true: x's pods are subjects and reach no pod of z.
X_NOT_Z = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   X   X   X
x/b   .   .   .   .   .   .   X   X   X
x/c   .   .   .   .   .   .   X   X   X
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

# y labelled tenant=true (x no more).
Y_NOT_Z = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   .   .   .   .   .   .   .   .
y/a   .   .   .   .   .   .   X   X   X
y/b   .   .   .   .   .   .   X   X   X
y/c   .   .   .   .   .   .   X   X   X
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

DENY_RESTRICTED_NODES = cnp(
    "deny-restricted-nodes",
    "Admin",
    10,
    EVERY_NAMESPACE,
    egress=[rule_to("Deny", {"nodes": {"matchLabels": {"zone": "restricted"}}}, name="restricted")],
)
HOST_POD_NODE_3 = host_network_pod_manifest("z/h3", "node-3", ports=((9090, "TCP"), (9090, "UDP")))


# --------------------------------------------------------------------------- more interactions

X_INGRESS_ISOLATED = np("x", "deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
Y_ACCEPTS_X = cnp(
    "y-may-reach-x",
    "Admin",
    10,
    ns_sel("y"),
    egress=[rule_to("Accept", {"namespaces": ns_sel("x")})],
)
X_ADMITS_Z = cnp(
    "x-admits-z",
    "Admin",
    20,
    ns_sel("x"),
    ingress=[rule_from("Accept", {"namespaces": ns_sel("z")})],
)

# x admits z only (besides each pod itself): for the Admin scenario, y's egress Accept
# does not open x's ingress (its NetworkPolicy still denies y and x) while x's own
# ingress Accept from z overrules that NetworkPolicy; for the Baseline one, z is
# passed (to the default allow) and everyone else meets the Baseline deny.
X_ADMITS_ONLY_Z = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   .   .   .   .   .   .
x/b   X   .   X   .   .   .   .   .   .
x/c   X   X   .   .   .   .   .   .   .
y/a   X   X   X   .   .   .   .   .   .
y/b   X   X   X   .   .   .   .   .   .
y/c   X   X   X   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

# x admits nobody but each pod itself.
X_ADMITS_NOBODY = """
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

BASELINE_PASS_FROM_Z = cnp(
    "pass-from-z",
    "Baseline",
    5,
    ns_sel("x"),
    ingress=[rule_from("Pass", {"namespaces": ns_sel("z")})],
)
BASELINE_DENY_INTO_X = cnp(
    "deny-into-x",
    "Baseline",
    10,
    ns_sel("x"),
    ingress=[rule_from("Deny", {"namespaces": EVERY_NAMESPACE})],
)
ADMIN_DENY_Z_INTO_X = cnp(
    "admin-deny-z-into-x",
    "Admin",
    10,
    ns_sel("x"),
    ingress=[rule_from("Deny", {"namespaces": ns_sel("z")})],
)

BASELINE_DENY_NODES = cnp(
    "baseline-deny-nodes", "Baseline", 10, EVERY_NAMESPACE, egress=[rule_to("Deny", {"nodes": {}})]
)
BASELINE_NODES_PROBES = (
    # Pods with no NetworkPolicy meet the Baseline deny: own node (INPUT) and another.
    P("x/a", "node:node-1", 80, "TCP", False),
    P("x/b", "node:node-1", 80, "TCP", False),
    P("z/c", "node:node-2", 81, "UDP", False),
    # y is isolated for egress by its NetworkPolicy: that tier decides, finally, and
    # it always allows a pod its own node; the Baseline deny is never reached.
    P("y/a", "node:node-1", 80, "TCP", True),
    P("y/b", "node:node-2", 80, "UDP", True),
    P("y/c", "node:node-1", 81, "TCP", True),
    # Another node is not allowed by y's NetworkPolicy (it allows nothing).
    P("y/a", "node:node-2", 80, "TCP", False),
    # The kubelet reaches its pods.
    P("node:node-1", "y/a", 80, "TCP", True),
    P("node:node-2", "x/b", 80, "TCP", True),
)


def _networks_around_z_b(driver: ClusterDriver) -> list[Doc]:
    """x: Accept to z/b's address (a /32), then Deny to the /4 holding every pod."""
    pods = large_cidr(driver.pod_ip("x/a"))
    inside = ipaddress.ip_network(pods)
    outside = [k for k in POD_KEYS if ipaddress.ip_address(driver.pod_ip(k)) not in inside]
    if outside:
        raise AssertionError(f"the scenario needs every pod inside {pods}; not: {outside}")
    for other in [*driver.external_hosts().values(), *(driver.node_ip(n) for n in NODES)]:
        if ipaddress.ip_address(other) in inside:
            raise AssertionError(f"the scenario needs {other} outside {pods}")
    zb = host_cidr(driver.pod_ip("z/b"))
    return [
        cnp("x-to-z-b", "Admin", 10, ns_sel("x"), egress=[rule_to("Accept", {"networks": [zb]})]),
        cnp("x-not-pods", "Admin", 20, ns_sel("x"), egress=[rule_to("Deny", {"networks": [pods]})]),
    ]


# x reaches z/b (its /32 Accepted first) and, besides itself, no other pod (the /4
# Deny covers every pod address); the other rows are untouched.
X_REACHES_ZB_ONLY = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   X   X   X   X   .   X
x/b   X   .   X   X   X   X   X   .   X
x/c   X   X   .   X   X   X   X   .   X
y/a   .   .   .   .   .   .   .   .   .
y/b   .   .   .   .   .   .   .   .   .
y/c   .   .   .   .   .   .   .   .   .
z/a   .   .   .   .   .   .   .   .   .
z/b   .   .   .   .   .   .   .   .   .
z/c   .   .   .   .   .   .   .   .   .
"""

# --------------------------------------------------------------------------- the scenarios

TIER_SCENARIOS: tuple[Scenario, ...] = (
    # ---- the examples of examples/cnp-*.yaml ------------------------------------
    Scenario(
        "tier-legacy-backend-accept-before-deny",
        steps=(
            _legacy_backend(priority_of_accept=10),
            # Only ext-1 is in a rule: pods reach each other as before.
            check(tcp(80, ALL_ALLOWED), udp(81, ALL_ALLOWED), probes=LEGACY_PROBES_ACCEPT_FIRST),
        ),
    ),
    Scenario(
        "tier-tenants-reach-dns-and-nothing-else-of-the-platform",
        steps=(
            apply(TENANTS_TO_DNS, TENANTS_NOT_PLATFORM),
            check(
                # The Accept is for UDP 80 only: TCP 80 and port 81 meet the Deny.
                tcp(80, TENANTS_NOT_Z),
                udp(80, TENANTS_DNS_ONLY),
                tcp(81, TENANTS_NOT_Z),
                udp(81, TENANTS_NOT_Z),
            ),
        ),
    ),
    Scenario(
        "tier-baseline-default-deny-opened-by-network-policy",
        steps=(
            apply(BASELINE_DEFAULT_DENY, X_ALLOWS_OWN_NAMESPACE),
            check(
                tcp(80, BASELINE_DENY_X_OPEN_TO_ITSELF),
                udp(81, BASELINE_DENY_X_OPEN_TO_ITSELF),
                probes=BASELINE_NODE_PROBES,
            ),
            # Without x's NetworkPolicy, x meets the Baseline deny like everyone.
            Delete((X_ALLOWS_OWN_NAMESPACE,)),
            check(tcp(80, ONLY_SELF), udp(80, ONLY_SELF)),
        ),
    ),
    Scenario(
        "tier-egress-to-node-network-denied-kubelet-still-works",
        steps=(
            apply(HOST_POD, DENY_NODE_NETWORK),
            # `nodes` matches node addresses only: pod-to-pod is untouched.
            check(tcp(80, ALL_ALLOWED), udp(80, ALL_ALLOWED), probes=NODE_NETWORK_PROBES),
        ),
    ),
    Scenario(
        "tier-admin-pass-hands-decision-to-network-policy",
        steps=(
            apply(MONITORING_PASS, ISOLATE_TENANTS, X_ALLOWS_METRICS),
            check(
                tcp(80, PASS_PORT_80),
                tcp(81, PASS_TCP_81),
                udp(80, PASS_PORT_80),
                # x's NetworkPolicy admits TCP 81, not UDP 81.
                udp(81, PASS_PORT_80),
            ),
            Delete((MONITORING_PASS,)),
            check(tcp(81, TENANTS_ISOLATED), udp(80, TENANTS_ISOLATED)),
        ),
    ),
    # ---- more tier interactions -------------------------------------------------------
    Scenario(
        "tier-accept-ends-only-its-own-side",
        steps=(
            apply(X_INGRESS_ISOLATED, Y_ACCEPTS_X, X_ADMITS_Z),
            check(tcp(80, X_ADMITS_ONLY_Z), udp(81, X_ADMITS_ONLY_Z)),
        ),
    ),
    Scenario(
        "tier-baseline-pass-skips-the-rest-of-baseline",
        steps=(
            apply(BASELINE_PASS_FROM_Z, BASELINE_DENY_INTO_X),
            check(tcp(80, X_ADMITS_ONLY_Z), udp(80, X_ADMITS_ONLY_Z)),
            # The Admin tier comes before any Baseline Pass.
            apply(ADMIN_DENY_Z_INTO_X),
            check(tcp(81, X_ADMITS_NOBODY), udp(81, X_ADMITS_NOBODY)),
        ),
    ),
    Scenario(
        "tier-baseline-deny-to-nodes-spares-network-policy-isolated-pods",
        steps=(
            apply(Y_EGRESS_ISOLATED, BASELINE_DENY_NODES),
            # y's NetworkPolicy denies it every pod; nodes are no pods: nobody else changes.
            check(
                tcp(80, Y_REACHES_NOBODY), udp(81, Y_REACHES_NOBODY), probes=BASELINE_NODES_PROBES
            ),
        ),
    ),
    Scenario(
        "tier-networks-match-pod-addresses",
        steps=(
            Apply(build=_networks_around_z_b),
            check(
                tcp(80, X_REACHES_ZB_ONLY),
                udp(81, X_REACHES_ZB_ONLY),
                # Outside the /4: an outside host and the nodes are not denied.
                probes=(
                    P("x/a", "ext-1", 80, "TCP", True),
                    P("x/b", "node:node-1", 80, "TCP", True),
                    P("x/c", "node:node-1", 81, "UDP", True),
                ),
            ),
        ),
    ),
    # ---- dynamics -------------------------------------------------------------------
    Scenario(
        "tier-priority-changed-swaps-the-winner",
        steps=(
            apply(_accept_x_to_z(10), _deny_to_z(20)),
            check(tcp(80, Z_DENIED_EXCEPT_FROM_X), udp(81, Z_DENIED_EXCEPT_FROM_X)),
            # The Accept moved behind the Deny: x is denied z too.
            apply(_accept_x_to_z(30)),
            check(tcp(80, Z_DENIED), udp(81, Z_DENIED)),
            # The Deny moved behind the Accept again.
            apply(_deny_to_z(40)),
            check(tcp(80, Z_DENIED_EXCEPT_FROM_X), udp(80, Z_DENIED_EXCEPT_FROM_X)),
        ),
    ),
    Scenario(
        "tier-legacy-backend-priority-changed",
        steps=(
            _legacy_backend(priority_of_accept=10),
            check(probes=(P("x/a", "ext-1", 80, "TCP", True), P("y/b", "ext-1", 80, "TCP", False))),
            # The Accept at 30 comes after the Deny at 20: x is denied too.
            _legacy_backend(priority_of_accept=30),
            check(
                tcp(80, ALL_ALLOWED),
                probes=(
                    P("x/a", "ext-1", 80, "TCP", False),
                    P("x/b", "ext-1", 81, "UDP", False),
                    P("y/b", "ext-1", 80, "TCP", False),
                    P("x/c", "ext-2", 80, "TCP", True),
                ),
            ),
        ),
    ),
    Scenario(
        "tier-rule-order-changed-within-a-policy",
        steps=(
            apply(_ordered(ACCEPT_ZB, DENY_Z)),
            check(tcp(80, Y_REACHES_ZB_ONLY_OF_Z), udp(81, Y_REACHES_ZB_ONLY_OF_Z)),
            apply(_ordered(DENY_Z, ACCEPT_ZB)),
            check(tcp(80, Y_REACHES_NO_Z), udp(81, Y_REACHES_NO_Z)),
            apply(_ordered(ACCEPT_ZB, DENY_Z)),
            check(tcp(81, Y_REACHES_ZB_ONLY_OF_Z), udp(80, Y_REACHES_ZB_ONLY_OF_Z)),
        ),
    ),
    Scenario(
        "tier-accept-flipped-to-deny-cuts-established-flows",
        steps=(
            apply(Y_EGRESS_ISOLATED, _flip("Accept")),
            check(tcp(80, Y_REACHES_X_ONLY), udp(80, Y_REACHES_X_ONLY)),
            OpenFlow("y-to-x-cross-node", "y/a", "x/b", FLOW_PORT),
            OpenFlow("y-to-x-same-node", "y/c", "x/a", FLOW_PORT),
            OpenFlow("z-to-x-bystander", "z/a", "x/c", FLOW_PORT),
            OpenFlow("x-to-y-reverse", "x/a", "y/b", FLOW_PORT),
            apply(_flip("Deny")),
            # y's flows to x are now denied and cut; z is no subject; x -> y was never
            # y's egress (its replies are part of x's connection): it lives on.
            CheckFlows(
                (
                    ("y-to-x-cross-node", False),
                    ("y-to-x-same-node", False),
                    ("z-to-x-bystander", True),
                    ("x-to-y-reverse", True),
                )
            ),
            check(tcp(80, Y_REACHES_NOBODY), udp(80, Y_REACHES_NOBODY)),
            apply(_flip("Accept")),
            check(tcp(81, Y_REACHES_X_ONLY)),
            OpenFlow("y-to-x-again", "y/b", "x/a", FLOW_PORT),
            CheckFlows((("y-to-x-again", True), ("z-to-x-bystander", True))),
        ),
    ),
    Scenario(
        "tier-namespace-relabelled-into-and-out-of-a-subject",
        steps=(
            apply(TENANT_TO_Z_DENIED),
            # No namespace has tenant=true: nobody is a subject.
            check(tcp(80, ALL_ALLOWED)),
            RelabelNamespace("x", {"ns": "x", "tenant": "true"}),
            check(tcp(80, X_NOT_Z), udp(81, X_NOT_Z)),
            RelabelNamespace("y", {"ns": "y", "tenant": "true"}),
            check(tcp(80, TENANTS_NOT_Z)),
            RelabelNamespace("x", {"ns": "x"}),
            check(tcp(80, Y_NOT_Z), udp(80, Y_NOT_Z)),
            RelabelNamespace("y", {"ns": "y"}),
            check(tcp(81, ALL_ALLOWED)),
        ),
    ),
    Scenario(
        "tier-node-added-joins-the-node-peer",
        steps=(
            apply(DENY_RESTRICTED_NODES),
            # No node is zone=restricted yet.
            check(
                tcp(80, ALL_ALLOWED),
                probes=(
                    P("x/a", "node:node-1", 80, "TCP", True),
                    P("x/b", "node:node-1", 80, "TCP", True),
                ),
            ),
            AddNode("node-3", {"zone": "restricted"}),
            Apply((HOST_POD_NODE_3,)),
            check(
                tcp(80, ALL_ALLOWED),
                probes=(
                    # node-3 matches: its address (and its host-network pod) is denied.
                    P("x/a", "node:node-3", 80, "TCP", False),
                    P("y/b", "node:node-3", 81, "UDP", False),
                    P("z/c", "z/h3", 9090, "TCP", False),
                    P("x/b", "z/h3", 9090, "UDP", False),
                    # node-1 and node-2 still do not match.
                    P("x/a", "node:node-1", 80, "TCP", True),
                    P("x/a", "node:node-2", 80, "TCP", True),
                ),
            ),
            RelabelNode("node-1", {"zone": "restricted"}),
            check(
                probes=(
                    # node-1 joined: its own pods (INPUT) and others (FORWARD) denied.
                    P("x/a", "node:node-1", 80, "TCP", False),
                    P("x/b", "node:node-1", 80, "UDP", False),
                    P("x/a", "node:node-2", 80, "TCP", True),
                    # The kubelet still reaches its pods.
                    P("node:node-1", "x/a", 80, "TCP", True),
                    P("node:node-1", "y/c", 81, "UDP", True),
                ),
            ),
            RelabelNode("node-3", {}),
            check(
                probes=(
                    P("x/a", "node:node-3", 80, "TCP", True),
                    P("z/c", "z/h3", 9090, "TCP", True),
                    P("x/a", "node:node-1", 80, "TCP", False),
                ),
            ),
        ),
    ),
)
