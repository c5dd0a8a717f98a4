"""The isolation scenarios: IsolationPolicies (peers by sameness with the subject pod)
over the model of :mod:`e2e.cluster_model`, with hand-written truth tables.

Every expectation is written by hand from the IsolationPolicy peer table
(docs/tiers.md, "IsolationPolicy") and the tier order of :mod:`e2e.tier_scenarios`;
none is computed by stockade. Each direction is judged at its own side (ingress at the
destination): the policies here have ingress rules only, so a cell is allowed when
the destination's rules allow its source. A pod reaching itself is always allowed
(the diagonal).

The model's namespaces play Rancher's stacks and projects: ``x`` is stack_one, ``y``
stack_two, ``z`` stack_three. Labels are set by relabel steps (each keeps the model's
``pod=<name>``).
"""

from __future__ import annotations

from e2e.cluster_model import cluster_network_policy
from e2e.scenarios import (
    Doc,
    RelabelNamespace,
    RelabelPod,
    Scenario,
    Step,
    apply,
    check,
    np,
    tcp,
    udp,
)

DEPARTMENT = "com.rancher.department"
PROJECT = "field.cattle.io/projectId"
ALL_PODS: Doc = {"pods": {"namespaceSelector": {}, "podSelector": {}}}


def isolation_policy(name: str, *ingress: Doc, tier: str = "Admin", priority: int = 100) -> Doc:
    """An IsolationPolicy of every pod of the cluster with ``ingress`` rules."""
    return {
        "apiVersion": "stockade.dev/v1alpha1",
        "kind": "IsolationPolicy",
        "metadata": {"name": name},
        "spec": {
            "tier": tier,
            "priority": priority,
            "subject": {"pods": {"namespaceSelector": {}, "podSelector": {}}},
            "ingress": list(ingress),
        },
    }


def rule(name: str, action: str, *peers: Doc) -> Doc:
    """An ingress rule."""
    return {"name": name, "action": action, "from": list(peers)}


def relabel(key: str, **labels: str) -> RelabelPod:
    """Pod ``key`` with exactly ``labels`` and its model label ``pod=<name>``."""
    return RelabelPod(key, {"pod": key.split("/")[1], **labels})


def labelled(key: str, labels: dict[str, str]) -> RelabelPod:
    """:func:`relabel` with the labels as a map (label keys are not identifiers)."""
    return relabel(key, **labels)


# --------------------------------------------------------------------------- (a) departments

CUPERTINO = {"location": "cupertino"}
PHOENIX = {"location": "phoenix"}


def _department(name: str | None, where: dict[str, str]) -> dict[str, str]:
    return {**where, **({DEPARTMENT: name} if name else {})}


# Rancher's label isolation example: stack_one (x) has qa, engineering and a pod
# without the key; stack_two (y) qa; stack_three (z) engineering, in phoenix.
DEPARTMENT_LABELS: tuple[Step, ...] = (
    labelled("x/a", _department("qa", CUPERTINO)),
    labelled("x/b", _department("engineering", CUPERTINO)),
    labelled("x/c", _department(None, CUPERTINO)),
    labelled("y/a", _department("qa", CUPERTINO)),
    labelled("y/b", _department("qa", CUPERTINO)),
    labelled("y/c", _department("qa", CUPERTINO)),
    labelled("z/a", _department("engineering", PHOENIX)),
    labelled("z/b", _department("engineering", PHOENIX)),
    labelled("z/c", _department("engineering", PHOENIX)),
)

# The environment policy: default deny, allow between containers of one department.
DEPARTMENTS = isolation_policy(
    "rancher-environment",
    rule(
        "policy-0-between-groupby",
        "Accept",
        {"pods": {"sameLabels": [DEPARTMENT], "namespaceSelector": {}}},
    ),
    rule("default-deny", "Deny", ALL_PODS),
)

# qa: x/a, y/a, y/b, y/c; engineering: x/b, z/a, z/b, z/c; x/c has no department:
# it reaches no one and no one reaches it (but itself).
BY_DEPARTMENT = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   X   .   .   .   X   X   X
x/b   X   .   X   X   X   X   .   .   .
x/c   X   X   .   X   X   X   X   X   X
y/a   .   X   X   .   .   .   X   X   X
y/b   .   X   X   .   .   .   X   X   X
y/c   .   X   X   .   .   .   X   X   X
z/a   X   .   X   X   X   X   .   .   .
z/b   X   .   X   X   X   X   .   .   .
z/c   X   .   X   X   X   X   .   .   .
"""

# --------------------------------------------------------------------------- (d) a relabel

# x/c joins qa: qa is x/a, x/c, y/a, y/b, y/c.
X_C_JOINS_QA = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   X   .   .   .   .   X   X   X
x/b   X   .   X   X   X   X   .   .   .
x/c   .   X   .   .   .   .   X   X   X
y/a   .   X   .   .   .   .   X   X   X
y/b   .   X   .   .   .   .   X   X   X
y/c   .   X   .   .   .   .   X   X   X
z/a   X   .   X   X   X   X   .   .   .
z/b   X   .   X   X   X   X   .   .   .
z/c   X   .   X   X   X   X   .   .   .
"""

# Then x/a moves to engineering: qa is x/c, y/a, y/b, y/c; engineering x/a, x/b, z.
X_A_MOVES_TO_ENGINEERING = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   X   X   X   X   .   .   .
x/b   .   .   X   X   X   X   .   .   .
x/c   X   X   .   .   .   .   X   X   X
y/a   X   X   .   .   .   .   X   X   X
y/b   X   X   .   .   .   .   X   X   X
y/c   X   X   .   .   .   .   X   X   X
z/a   .   .   X   X   X   X   .   .   .
z/b   .   .   X   X   X   X   .   .   .
z/c   .   .   X   X   X   X   .   .   .
"""

# --------------------------------------------------------------------------- (b) stacks

# within: stack (a stack is a namespace): default deny, allow within the stack.
STACKS = isolation_policy(
    "rancher-stacks",
    rule("policy-0-within-stack", "Accept", {"namespaces": {"sameAs": "Self"}}),
    rule("default-deny", "Deny", ALL_PODS),
)

SAME_NAMESPACE = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   X   X   X   X   X   X
x/b   .   .   .   X   X   X   X   X   X
x/c   .   .   .   X   X   X   X   X   X
y/a   X   X   X   .   .   .   X   X   X
y/b   X   X   X   .   .   .   X   X   X
y/c   X   X   X   .   .   .   X   X   X
z/a   X   X   X   X   X   X   .   .   .
z/b   X   X   X   X   X   X   .   .   .
z/c   X   X   X   X   X   X   .   .   .
"""

# within: service: the same workload label, in the same stack (namespace).
SERVICES = isolation_policy(
    "rancher-stacks",
    rule("policy-0-within-service", "Accept", {"pods": {"sameLabels": ["app"]}}),
    rule("default-deny", "Deny", ALL_PODS),
)
SERVICE_LABELS: tuple[Step, ...] = (
    relabel("x/a", app="web"),
    relabel("x/b", app="web"),
    relabel("x/c", app="db"),
    relabel("y/a", app="web"),
    relabel("y/b", app="db"),
    relabel("y/c", app="db"),
    relabel("z/a", app="web"),
    relabel("z/b"),
    relabel("z/c", app="web"),
)

# web in x: a, b; db in y: b, c; web in z: a, c. The same app in another namespace
# (x/a and y/a, both web) is another service; z/b has no app label.
SAME_SERVICE = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   X   X   X   X   X   X   X
x/b   .   .   X   X   X   X   X   X   X
x/c   X   X   .   X   X   X   X   X   X
y/a   X   X   X   .   X   X   X   X   X
y/b   X   X   X   X   .   .   X   X   X
y/c   X   X   X   X   .   .   X   X   X
z/a   X   X   X   X   X   X   .   X   .
z/b   X   X   X   X   X   X   X   .   X
z/c   X   X   X   X   X   X   .   X   .
"""

# --------------------------------------------------------------------------- (c) projects

# Projects by Rancher's label, and a neutral tenant key that groups otherwise.
PROJECT_LABELS: tuple[Step, ...] = (
    RelabelNamespace("x", {"ns": "x", PROJECT: "p-1", "tenant": "acme"}),
    RelabelNamespace("y", {"ns": "y", PROJECT: "p-1", "tenant": "globex"}),
    RelabelNamespace("z", {"ns": "z", PROJECT: "p-2", "tenant": "globex"}),
)


def projects(key: str) -> Doc:
    """Isolated between projects (by namespace label ``key``), open inside: the same
    project is passed to the NetworkPolicy tier (so a team may narrow its own
    namespace), everything else is denied."""
    return isolation_policy(
        "projects",
        rule("same-project", "Pass", {"namespaces": {"sameLabels": [key]}}),
        rule("other-projects", "Deny", ALL_PODS),
    )


# Team x narrows its own namespace: only x/a may reach its pods.
X_ONLY_FROM_A = np(
    "x",
    "only-from-a",
    {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]},
)

# Projects p-1 = {x, y}, p-2 = {z}. To x: x/a only (its NetworkPolicy; y is passed
# to it and refused there; z is denied). To y: x and y (passed, no NetworkPolicy in
# y). To z: z only.
BY_PROJECT = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   X   X   X
x/b   X   .   X   .   .   .   X   X   X
x/c   X   X   .   .   .   .   X   X   X
y/a   X   X   X   .   .   .   X   X   X
y/b   X   X   X   .   .   .   X   X   X
y/c   X   X   X   .   .   .   X   X   X
z/a   X   X   X   X   X   X   .   .   .
z/b   X   X   X   X   X   X   .   .   .
z/c   X   X   X   X   X   X   .   .   .
"""

# Tenants acme = {x}, globex = {y, z}: x reaches only itself (x/a all of x), y and z
# reach each other.
BY_TENANT = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   X   X   X   X   X   X
x/b   X   .   X   X   X   X   X   X   X
x/c   X   X   .   X   X   X   X   X   X
y/a   X   X   X   .   .   .   .   .   .
y/b   X   X   X   .   .   .   .   .   .
y/c   X   X   X   .   .   .   .   .   .
z/a   X   X   X   .   .   .   .   .   .
z/b   X   X   X   .   .   .   .   .   .
z/c   X   X   X   .   .   .   .   .   .
"""

# --------------------------------------------------------------------------- (e) linked services

# Rancher's "between linked services" compares no label: a link is an ordinary
# ClusterNetworkPolicy rule between two selectors (examples/cnp-linked-services.yaml):
# db accepts web, and nothing else.
LINK_LABELS: tuple[Step, ...] = (
    relabel("x/a", app="web"),
    relabel("x/b", app="db"),
    relabel("x/c", app="worker"),
)
LINKED = cluster_network_policy(
    "db-linked-from-web",
    {
        "tier": "Admin",
        "priority": 20,
        "subject": {
            "pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}
        },
        "ingress": [
            rule(
                "link-web-db",
                "Accept",
                {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}},
            ),
            rule("default-deny", "Deny", ALL_PODS),
        ],
    },
)

# Only x/a (web) reaches x/b (db); everything else is open.
DB_FROM_WEB_ONLY = """
     x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a   .   .   .   .   .   .   .   .   .
x/b   .   .   .   .   .   .   .   .   .
x/c   .   X   .   .   .   .   .   .   .
y/a   .   X   .   .   .   .   .   .   .
y/b   .   X   .   .   .   .   .   .   .
y/c   .   X   .   .   .   .   .   .   .
z/a   .   X   .   .   .   .   .   .   .
z/b   .   X   .   .   .   .   .   .   .
z/c   .   X   .   .   .   .   .   .   .
"""

# --------------------------------------------------------------------------- the scenarios

ISOLATION_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "isolation-rancher-departments-label-isolation",
        steps=(
            *DEPARTMENT_LABELS,
            apply(DEPARTMENTS),
            check(tcp(80, BY_DEPARTMENT), udp(81, BY_DEPARTMENT)),
        ),
    ),
    Scenario(
        "isolation-rancher-stack-then-service",
        steps=(
            *SERVICE_LABELS,
            apply(STACKS),
            check(tcp(80, SAME_NAMESPACE), udp(80, SAME_NAMESPACE)),
            apply(SERVICES),
            check(tcp(80, SAME_SERVICE), udp(81, SAME_SERVICE)),
        ),
    ),
    Scenario(
        "isolation-projects-then-tenants-narrowed-by-a-team",
        steps=(
            *PROJECT_LABELS,
            apply(projects(PROJECT), X_ONLY_FROM_A),
            check(tcp(80, BY_PROJECT), udp(81, BY_PROJECT)),
            apply(projects("tenant")),
            check(tcp(80, BY_TENANT)),
        ),
    ),
    Scenario(
        "isolation-relabel-moves-a-pod-between-departments",
        steps=(
            *DEPARTMENT_LABELS,
            apply(DEPARTMENTS),
            check(tcp(80, BY_DEPARTMENT)),
            labelled("x/c", _department("qa", CUPERTINO)),
            check(tcp(80, X_C_JOINS_QA)),
            labelled("x/a", _department("engineering", CUPERTINO)),
            check(tcp(80, X_A_MOVES_TO_ENGINEERING), udp(81, X_A_MOVES_TO_ENGINEERING)),
        ),
    ),
    Scenario(
        "isolation-linked-services-as-a-rule-between-two-selectors",
        steps=(
            *LINK_LABELS,
            apply(LINKED),
            check(tcp(80, DB_FROM_WEB_ONLY), udp(81, DB_FROM_WEB_ONLY)),
        ),
    ),
)
