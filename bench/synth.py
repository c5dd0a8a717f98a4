"""A deterministic synthetic cluster, as the raw dicts the Kubernetes API returns.

Two shapes:

* ``realistic``: teams, environments and applications with a realistic label
  vocabulary (``app``, ``tier``, ``team``, ``env``, ``version`` and a few optional
  labels), Deployments of a few replicas, named container ports, and policies that
  mix every selector kind the NetworkPolicy API has: ``matchLabels``,
  ``matchExpressions`` (In, NotIn, Exists, DoesNotExist), the empty pod selector, a
  namespace selector alone, a namespace and a pod selector in one peer, ``ipBlock``
  with ``except``, named ports, ``endPort`` ranges, ingress and egress, and
  default-deny policies.
* ``antrea``: the scenario of Antrea's controller performance test
  ``TestInitXLargeScaleWithSmallNamespaces`` (namespaces of 4 pods and 3 policies:
  a default deny-all and two ``app-N=scale-N`` policies allowing their own label).

Everything is derived from a seeded :class:`random.Random`, so one set of
parameters always gives the same cluster. Pod IPs are unique: each node owns a
pod CIDR carved from 10.0.0.0/8 and its pods take consecutive addresses in it.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import random
import string
from dataclasses import dataclass, field
from typing import Any

Raw = dict[str, Any]

NAME_LABEL = "kubernetes.io/metadata.name"
POD_NET = ipaddress.IPv4Network("10.0.0.0/8")
NODE_NET = ipaddress.IPv4Network("172.16.0.0/12")

TEAMS = (
    "payments", "search", "checkout", "identity", "ads", "analytics", "billing",
    "catalog", "delivery", "growth", "infra", "ml", "mobile", "notifications",
    "orders", "platform", "pricing", "ranking", "risk", "security", "shipping",
    "social", "storage", "support", "web", "media", "maps", "fraud", "ledger",
    "messaging", "partners", "reviews", "loyalty", "inventory", "recs", "trust",
    "data", "edge", "video", "audio",
)  # fmt: skip
ENVS = ("prod", "staging", "dev", "qa")
ENV_WEIGHTS = (0.4, 0.25, 0.25, 0.1)
VERSIONS = ("v1", "v2", "v3")
VERSION_WEIGHTS = (0.6, 0.3, 0.1)

# tier -> ((port name, number, protocol), ...)
TIER_PORTS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "frontend": (("http", 8080, "TCP"), ("metrics", 9090, "TCP")),
    "backend": (("http", 8080, "TCP"), ("grpc", 9000, "TCP"), ("metrics", 9090, "TCP")),
    "db": (("postgres", 5432, "TCP"), ("metrics", 9187, "TCP")),
    "cache": (("redis", 6379, "TCP"), ("metrics", 9121, "TCP")),
    "queue": (("kafka", 9092, "TCP"), ("metrics", 9308, "TCP")),
    "worker": (("metrics", 9090, "TCP"),),
}
TIERS = tuple(TIER_PORTS)
TIER_WEIGHTS = (0.2, 0.35, 0.1, 0.1, 0.05, 0.2)
APP_STEMS = {
    "frontend": ("web", "ui", "portal", "console", "gateway", "storefront", "dashboard"),
    "backend": (
        "api", "auth", "cart", "orders", "users", "profile", "quotes", "accounts",
        "invoices", "payments", "search", "catalog", "pricing", "session", "graph",
    ),
    "db": ("postgres", "pg", "db"),
    "cache": ("redis", "cache"),
    "queue": ("kafka", "events"),
    "worker": ("worker", "indexer", "mailer", "scheduler", "exporter", "sync"),
}  # fmt: skip


@dataclass(frozen=True)
class Params:
    """What to generate."""

    pods: int
    namespaces: int
    nodes: int
    policies: int
    seed: int = 20240601
    shape: str = "realistic"  # or "antrea"
    # ClusterNetworkPolicies (Admin and Baseline) on top of the NetworkPolicies; with
    # any, the cluster also has Node objects (labels, ``status.addresses``).
    cnps: int = 0
    # Node objects to emit when there are CNPs: at least ``nodes``; the extra ones
    # carry no pod (a one-node agent benchmark still has many nodes to select).
    node_objects: int = 0
    # IsolationPolicies (Admin and Baseline, peers by sameness) on top of the rest;
    # with any, tenant pods carry GROUP_LABEL (``group_values`` distinct values, one
    # per Deployment, spread over them) and tenant namespaces PROJECT_LABEL.
    isolation_policies: int = 0
    group_values: int = 0


@dataclass(frozen=True)
class Deployment:
    """A group of identical pods in one namespace."""

    namespace: str
    app: str
    tier: str
    labels: dict[str, str]
    ports: tuple[tuple[str, int, str], ...]
    template_hash: str


@dataclass
class SynthCluster:
    """The generated objects and what is needed to make more of them."""

    params: Params
    namespaces: list[Raw]
    pods: list[Raw]
    policies: list[Raw]
    node_names: list[str]
    block_bits: int
    deployments: dict[str, list[Deployment]] = field(default_factory=dict)
    next_host: list[int] = field(default_factory=list)
    serial: int = 0
    nodes: list[Raw] = field(default_factory=list)
    cluster_policies: list[Raw] = field(default_factory=list)
    isolation_policies: list[Raw] = field(default_factory=list)

    def objects(self) -> list[Raw]:
        """Every object: Nodes, namespaces, pods, NetworkPolicies, CNPs, then
        IsolationPolicies."""
        return [
            *self.nodes,
            *self.namespaces,
            *self.pods,
            *self.policies,
            *self.cluster_policies,
            *self.isolation_policies,
        ]

    def __len__(self) -> int:
        return len(self.objects())

    def allocate_ip(self, node: int) -> str:
        """The next free pod address of ``node``."""
        host = self.next_host[node]
        if host >= (1 << self.block_bits) - 1:
            raise RuntimeError(f"node {node}'s pod CIDR is full")
        self.next_host[node] = host + 1
        base = int(POD_NET.network_address) + (node << self.block_bits)
        return str(ipaddress.IPv4Address(base + host))

    def node_cidr(self, node: int) -> str:
        """The pod CIDR of ``node``."""
        base = int(POD_NET.network_address) + (node << self.block_bits)
        return f"{ipaddress.IPv4Address(base)}/{32 - self.block_bits}"


def _suffix(rng: random.Random, length: int = 5) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=length))


def _node_ip(index: int) -> str:
    return str(ipaddress.IPv4Address(int(NODE_NET.network_address) + 256 + index))


def _pod(
    namespace: str,
    name: str,
    labels: dict[str, str],
    node: str,
    node_index: int,
    ip: str | None,
    ports: tuple[tuple[str, int, str], ...],
    container: str,
    phase: str = "Running",
    sidecar: bool = False,
) -> Raw:
    containers: list[Raw] = [
        {
            "name": container,
            "image": f"registry.example.com/{container}:1.0",
            "ports": [
                {"name": pn, "containerPort": num, "protocol": proto} for pn, num, proto in ports
            ],
        }
    ]
    if sidecar:
        containers.append(
            {
                "name": "istio-proxy",
                "image": "docker.io/istio/proxyv2:1.22.0",
                "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
            }
        )
    status: Raw = {"phase": phase, "hostIP": _node_ip(node_index)}
    if ip is not None:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"nodeName": node, "containers": containers, "restartPolicy": "Always"},
        "status": status,
    }


def _namespace(name: str, labels: dict[str, str]) -> Raw:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {**labels, NAME_LABEL: name}},
    }


def _policy(namespace: str, name: str, spec: Raw) -> Raw:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _split(total: int, parts: int, rng: random.Random, skew: float = 1.5) -> list[int]:
    """``total`` split into ``parts`` positive sizes with a heavy (Pareto) tail."""
    if parts <= 0:
        return []
    if total < parts:
        raise ValueError(f"cannot give {parts} parts at least one of {total}")
    weights = [min(rng.paretovariate(skew), 20.0) for _ in range(parts)]
    scale = (total - parts) / sum(weights)
    sizes = [1 + int(w * scale) for w in weights]
    rest = total - sum(sizes)
    order = sorted(range(parts), key=lambda i: -weights[i])
    i = 0
    while rest > 0:
        sizes[order[i % parts]] += 1
        rest -= 1
        i += 1
    return sizes


def _block_bits(pods: int, nodes: int) -> int:
    per_node = math.ceil(pods / nodes)
    # Room for twice the pods a node starts with (events add pods), at least a /24.
    bits = max(8, math.ceil(math.log2(2 * per_node + 2)))
    if nodes << bits > POD_NET.num_addresses:
        raise ValueError(f"{nodes} nodes of /{32 - bits} do not fit in {POD_NET}")
    return bits


def _node_assignment(pods: int, nodes: int, rng: random.Random) -> list[int]:
    per_node = math.ceil(pods / nodes)
    slots = [n for n in range(nodes) for _ in range(per_node)]
    rng.shuffle(slots)
    return slots[:pods]


def generate(params: Params) -> SynthCluster:
    """Generate the cluster ``params`` describes."""
    if params.shape == "antrea":
        return _antrea(params)
    if params.shape != "realistic":
        raise ValueError(f"unknown shape {params.shape!r}")
    cluster = _realistic(params)
    if params.cnps:
        # A separate generator: the NetworkPolicy-only part is the same cluster
        # whatever the number of CNPs.
        rng = random.Random(params.seed + 13)
        _node_objects(cluster, rng)
        _cluster_network_policies(cluster, rng)
    if params.isolation_policies:
        # Another generator again: the cluster without them is drawn as before (but
        # for the grouping labels its pods and namespaces gain).
        rng = random.Random(params.seed + 29)
        _grouping_labels(cluster, rng)
        _isolation_policies(cluster, rng)
    return cluster


# ----------------------------------------------------------------------- realistic


def _realistic(params: Params) -> SynthCluster:
    rng = random.Random(params.seed)
    nodes = [f"node-{i:05d}" for i in range(params.nodes)]
    bits = _block_bits(params.pods, params.nodes)
    cluster = SynthCluster(params, [], [], [], nodes, bits, next_host=[1] * params.nodes)
    system = ["kube-system", "monitoring", "ingress-nginx"]
    n_user = params.namespaces - len(system)
    if n_user < 1:
        raise ValueError("need at least 4 namespaces")
    teams = list(TEAMS)
    extra = max(0, n_user // 12 - len(teams))
    teams += [f"team-{i}" for i in range(extra)]

    ns_meta: list[tuple[str, dict[str, str]]] = [
        ("kube-system", {"tier": "system"}),
        ("monitoring", {"tier": "system", "team": "infra"}),
        ("ingress-nginx", {"tier": "system", "team": "infra"}),
    ]
    for i in range(n_user):
        team = teams[i % len(teams)]
        env = rng.choices(ENVS, ENV_WEIGHTS)[0]
        labels = {"team": team, "env": env}
        if rng.random() < 0.3:
            labels["istio-injection"] = "enabled"
        if rng.random() < 0.1:
            labels["compliance"] = "pci"
        ns_meta.append((f"{team}-{env}-{i:05d}", labels))
    for name, labels in ns_meta:
        cluster.namespaces.append(_namespace(name, labels))

    # Pods: system namespaces get a fixed share, the rest a heavy-tailed split.
    n_system = min(max(6, params.pods // 200), params.pods // 4)
    sizes = [n_system // 3, n_system // 3, n_system - 2 * (n_system // 3)]
    sizes += _split(params.pods - n_system, n_user, rng)
    assignment = _node_assignment(params.pods, params.nodes, rng)
    slot = 0
    for (ns, ns_labels), size in zip(ns_meta, sizes, strict=True):
        deployments = _deployments(ns, ns_labels, size, rng)
        cluster.deployments[ns] = [d for d, _ in deployments]
        sidecar = ns_labels.get("istio-injection") == "enabled"
        for dep, replicas in deployments:
            for _ in range(replicas):
                node = assignment[slot]
                slot += 1
                cluster.pods.append(_make_pod(cluster, dep, node, rng, sidecar))
    assert slot == params.pods

    _realistic_policies(cluster, ns_meta, sizes, rng)
    return cluster


def _make_pod(
    cluster: SynthCluster, dep: Deployment, node: int, rng: random.Random, sidecar: bool
) -> Raw:
    roll = rng.random()
    phase = "Running"
    ip: str | None = cluster.allocate_ip(node)
    if roll < 0.01:
        phase, ip = "Pending", None
    elif roll < 0.015:
        phase = "Succeeded"
    labels = dict(dep.labels)
    if rng.random() < 0.03:
        labels["canary"] = "true"
    name = f"{dep.app}-{dep.template_hash}-{_suffix(rng)}"
    return _pod(
        dep.namespace,
        name,
        labels,
        cluster.node_names[node],
        node,
        ip,
        dep.ports,
        dep.app,
        phase=phase,
        sidecar=sidecar,
    )


def _deployments(
    ns: str, ns_labels: dict[str, str], size: int, rng: random.Random
) -> list[tuple[Deployment, int]]:
    out: list[tuple[Deployment, int]] = []
    specs: list[tuple[str, str, dict[str, str], tuple[tuple[str, int, str], ...]]] = []
    if ns == "kube-system":
        dns = (("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP"))
        specs = [("coredns", "backend", {"k8s-app": "kube-dns"}, dns)]
    elif ns == "monitoring":
        specs = [("prometheus", "backend", {}, (("web", 9090, "TCP"),))]
    elif ns == "ingress-nginx":
        web = (("http", 80, "TCP"), ("https", 443, "TCP"))
        specs = [("ingress-nginx", "frontend", {"app.kubernetes.io/name": "ingress-nginx"}, web)]
    used: set[str] = set()
    left = size
    while left > 0:
        if specs:
            app, tier, extra, ports = specs[len(out) % len(specs)]
            replicas = left
        else:
            tier = rng.choices(TIERS, TIER_WEIGHTS)[0]
            stem = rng.choice(APP_STEMS[tier])
            app = stem
            n = 2
            while app in used:
                app = f"{stem}-{n}"
                n += 1
            extra = {}
            ports = TIER_PORTS[tier]
            replicas = min(left, max(1, int(rng.paretovariate(1.2))), 40)
        used.add(app)
        labels = {
            "app": app,
            "tier": tier,
            "version": rng.choices(VERSIONS, VERSION_WEIGHTS)[0],
            **extra,
        }
        if "team" in ns_labels:
            labels["team"] = ns_labels["team"]
        if "env" in ns_labels:
            labels["env"] = ns_labels["env"]
        if rng.random() < 0.5:
            labels["monitoring"] = "enabled"
        if rng.random() < 0.4:
            labels["release"] = f"{app}-{rng.randint(1, 30)}"
        dep = Deployment(ns, app, tier, labels, ports, _suffix(rng, 9))
        out.append((dep, replicas))
        left -= replicas
    return out


def _realistic_policies(
    cluster: SynthCluster,
    ns_meta: list[tuple[str, dict[str, str]]],
    sizes: list[int],
    rng: random.Random,
) -> None:
    total = cluster.params.policies
    user = [(name, labels) for name, labels in ns_meta if "team" in labels and "env" in labels]
    teams = sorted({labels["team"] for _, labels in user})
    counts: dict[str, int] = {}

    def add(ns: str, kind: str, spec: Raw) -> bool:
        if len(cluster.policies) >= total:
            return False
        n = counts.get(f"{ns}/{kind}", 0)
        counts[f"{ns}/{kind}"] = n + 1
        name = kind if n == 0 else f"{kind}-{n}"
        cluster.policies.append(_policy(ns, name, spec))
        return True

    # Default-deny policies, the way most clusters start.
    for ns, _ in user:
        roll = rng.random()
        if roll < 0.35:
            add(ns, "default-deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
        elif roll < 0.5:
            add(ns, "default-deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    add("kube-system", "allow-dns", {
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        "ingress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}],
    })  # fmt: skip

    # Then allow policies, more where there are more pods.
    weights = [float(size) for (name, _), size in zip(ns_meta, sizes, strict=True)]
    names = [name for name, _ in ns_meta]
    user_names = {name for name, _ in user}
    ns_labels = dict(ns_meta)
    templates = (
        (_tpl_same_ns_app, 18),
        (_tpl_team_namespaces, 10),
        (_tpl_ns_and_pod, 12),
        (_tpl_expressions, 10),
        (_tpl_monitoring, 8),
        (_tpl_egress_dns_ipblock, 10),
        (_tpl_egress_named_db, 6),
        (_tpl_port_range_ipblock, 5),
        (_tpl_same_namespace, 8),
        (_tpl_from_all_namespaces, 3),
        (_tpl_ns_expressions, 6),
        (_tpl_ingress_controller, 4),
    )
    fns = [t for t, _ in templates]
    tweights = [w for _, w in templates]
    while len(cluster.policies) < total:
        ns = rng.choices(names, weights)[0]
        if ns not in user_names:
            continue
        deps = cluster.deployments[ns]
        tpl = rng.choices(fns, tweights)[0]
        kind, spec = tpl(rng, deps, ns_labels[ns], teams, cluster)
        add(ns, kind, spec)


def _ml(**labels: str) -> Raw:
    return {"matchLabels": dict(labels)}


def _app(dep: Deployment) -> Raw:
    return {"matchLabels": {"app": dep.app}}


Template = tuple[str, Raw]


def _tpl_same_ns_app(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    target, source = rng.choice(deps), rng.choice(deps)
    port: Raw = {"port": target.ports[0][0]} if rng.random() < 0.5 else {"port": target.ports[0][1]}
    return f"allow-{source.app}-to-{target.app}", {
        "podSelector": _app(target),
        "ingress": [{"from": [{"podSelector": _app(source)}], "ports": [port]}],
    }


def _tpl_team_namespaces(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    target = rng.choice(deps)
    team = nsl["team"] if rng.random() < 0.6 else rng.choice(teams)
    return f"allow-team-{team}", {
        "podSelector": _ml(app=target.app, tier=target.tier),
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"namespaceSelector": _ml(team=team)}],
                "ports": [{"protocol": p, "port": n} for _, n, p in target.ports],
            }
        ],
    }


def _tpl_ns_and_pod(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    target = rng.choice(deps)
    tier = rng.choice(("frontend", "backend"))
    nssel = (
        _ml(team=nsl["team"], env=nsl["env"]) if rng.random() < 0.7 else _ml(team=rng.choice(teams))
    )
    return f"allow-{tier}s-of-team", {
        "podSelector": _app(target),
        "ingress": [
            {
                "from": [{"namespaceSelector": nssel, "podSelector": _ml(tier=tier)}],
                "ports": [{"port": target.ports[0][0]}],
            }
        ],
    }


def _tpl_expressions(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    apps = sorted({d.app for d in rng.sample(deps, min(len(deps), 3))})
    return "allow-new-versions", {
        "podSelector": {
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["backend", "db"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ]
        },
        "ingress": [
            {
                "from": [
                    {
                        "podSelector": {
                            "matchExpressions": [
                                {"key": "app", "operator": "In", "values": apps},
                                {"key": "version", "operator": "NotIn", "values": ["v1"]},
                            ]
                        }
                    }
                ],
                "ports": [{"port": 8080}, {"port": 9000}],
            }
        ],
    }


def _tpl_monitoring(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    return "allow-prometheus", {
        "podSelector": {"matchExpressions": [{"key": "monitoring", "operator": "Exists"}]},
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": _ml(**{NAME_LABEL: "monitoring"}),
                        "podSelector": _ml(app="prometheus"),
                    }
                ],
                "ports": [{"port": "metrics"}],
            }
        ],
    }


def _tpl_egress_dns_ipblock(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    target = rng.choice(deps)
    return f"egress-{target.app}", {
        "podSelector": _app(target),
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [
                    {
                        "namespaceSelector": _ml(**{NAME_LABEL: "kube-system"}),
                        "podSelector": _ml(**{"k8s-app": "kube-dns"}),
                    }
                ],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            },
            {
                "to": [
                    {
                        "ipBlock": {
                            "cidr": "0.0.0.0/0",
                            "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                        }
                    }
                ],
                "ports": [{"protocol": "TCP", "port": 443}],
            },
            {"to": [{"podSelector": {}}]},
        ],
    }


def _tpl_egress_named_db(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    db = rng.choice(("postgres", "redis", "kafka"))
    tier = {"postgres": "db", "redis": "cache", "kafka": "queue"}[db]
    return f"egress-{db}", {
        "podSelector": _ml(tier="backend"),
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": _ml(tier=tier)}], "ports": [{"port": db}]}],
    }


def _tpl_port_range_ipblock(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    node = rng.randrange(len(cluster.node_names))
    cidr = cluster.node_cidr(node)
    net = ipaddress.IPv4Network(cidr)
    sub = next(net.subnets(new_prefix=net.prefixlen + 2))
    target = rng.choice(deps)
    return "allow-nodeports", {
        "podSelector": _app(target),
        "ingress": [
            {
                "from": [
                    {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.13.0/24"]}},
                    {"ipBlock": {"cidr": cidr, "except": [str(sub)]}},
                ],
                "ports": [
                    {"protocol": "TCP", "port": 30000, "endPort": 32767},
                    {"protocol": "UDP", "port": 30000, "endPort": 30100},
                ],
            }
        ],
    }


def _tpl_same_namespace(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    return "allow-same-namespace", {
        "podSelector": {},
        "ingress": [{"from": [{"podSelector": {}}]}],
    }


def _tpl_from_all_namespaces(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    target = rng.choice(deps)
    return f"allow-cluster-{target.app}", {
        "podSelector": _app(target),
        "ingress": [
            {
                "from": [{"namespaceSelector": {}}],
                "ports": [{"protocol": p, "port": n} for _, n, p in target.ports[:1]],
            }
        ],
    }


def _tpl_ns_expressions(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    target = rng.choice(deps)
    source = rng.choice(deps)
    if rng.random() < 0.5:
        nssel: Raw = {
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "team", "operator": "In", "values": [nsl["team"]]},
            ]
        }
    else:
        nssel = {
            "matchExpressions": [
                {"key": "team", "operator": "In", "values": [nsl["team"]]},
                {"key": "compliance", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
            ]
        }
    return f"allow-{source.app}-envs", {
        "podSelector": _app(target),
        "ingress": [
            {
                "from": [{"namespaceSelector": nssel, "podSelector": _app(source)}],
                "ports": [{"port": target.ports[0][1]}],
            }
        ],
    }


def _tpl_ingress_controller(
    rng: random.Random, deps: list[Deployment], nsl: dict[str, str], teams: list[str],
    cluster: SynthCluster,
) -> Template:  # fmt: skip
    front = [d for d in deps if d.tier == "frontend"] or deps
    target = rng.choice(front)
    return "allow-ingress-controller", {
        "podSelector": _ml(app=target.app),
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": _ml(**{NAME_LABEL: "ingress-nginx"}),
                        "podSelector": _ml(**{"app.kubernetes.io/name": "ingress-nginx"}),
                    }
                ],
                "ports": [{"port": "http"}],
            }
        ],
    }


# ----------------------------------------------------------------------- cluster policies

CNP_API_VERSION = "policy.networking.k8s.io/v1alpha2"
ZONES = ("zone-a", "zone-b", "zone-c")
INSTANCE_TYPES = ("m5.xlarge", "m5.2xlarge", "c5.4xlarge", "r5.2xlarge")
POOLS = ("general", "general", "general", "compute", "infra")
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
# Addresses outside the cluster that administrators write rules about.
EXTERNAL_NETS = (
    "203.0.113.0/24", "198.51.100.17/32", "192.0.2.0/25", "100.64.0.0/10",
    "192.168.0.0/16", "172.31.250.0/24", "8.8.8.8/32", "1.1.1.1/32",
    "2001:db8::/48", "2001:db8:1::10/128",
)  # fmt: skip
RULES_PER_CNP = 5


def _node_object(name: str, index: int, labels: dict[str, str]) -> Raw:
    addresses: list[Raw] = [
        {"type": "InternalIP", "address": _node_ip(index)},
        {"type": "Hostname", "address": name},
    ]
    if index % 5 == 0:  # some nodes also have an external address
        addresses.append({"type": "ExternalIP", "address": f"198.18.{index // 250}.{index % 250}"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": addresses},
    }


def _node_objects(cluster: SynthCluster, rng: random.Random) -> None:
    """Node objects for every node (and ``node_objects`` in all), labelled as in clouds."""
    count = max(cluster.params.nodes, cluster.params.node_objects)
    for i in range(count):
        name = cluster.node_names[i] if i < len(cluster.node_names) else f"node-{i:05d}"
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "topology.kubernetes.io/zone": ZONES[i % len(ZONES)],
            "node.kubernetes.io/instance-type": rng.choice(INSTANCE_TYPES),
            "pool": rng.choice(POOLS),
        }
        if i < 3:
            labels[CONTROL_PLANE] = ""
        cluster.nodes.append(_node_object(name, i, labels))


def _cnp(
    name: str, tier: str, priority: int, subject: Raw, ingress: list[Raw], egress: list[Raw]
) -> Raw:
    spec: Raw = {"tier": tier, "priority": priority, "subject": subject}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    return {
        "apiVersion": CNP_API_VERSION,
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def _tcp(port: int, end: int | None = None) -> Raw:
    dp: Raw = {"number": port} if end is None else {"range": {"start": port, "end": end}}
    return {"tcp": {"destinationPort": dp}}


def _udp(port: int) -> Raw:
    return {"udp": {"destinationPort": {"number": port}}}


def _sctp(port: int) -> Raw:
    return {"sctp": {"destinationPort": {"number": port}}}


def _named(name: str) -> Raw:
    return {"destinationNamedPort": name}


class _CnpVocabulary:
    """Selectors over the generated cluster's labels, for CNP subjects and peers."""

    def __init__(self, cluster: SynthCluster, rng: random.Random) -> None:
        self.rng = rng
        self.teams = sorted(
            {ns["metadata"]["labels"]["team"] for ns in cluster.namespaces
             if "team" in ns["metadata"]["labels"] and "env" in ns["metadata"]["labels"]}
        )  # fmt: skip
        apps = sorted({d.app for deps in cluster.deployments.values() for d in deps})
        self.apps = apps or ["app"]

    def team(self) -> str:
        team: str = self.rng.choice(self.teams)
        return team

    def subject(self) -> tuple[str, Raw]:
        """A subject and a word for the policy's name."""
        roll = self.rng.random()
        team = self.team()
        if roll < 0.45:
            return f"team-{team}", {"namespaces": _ml(team=team)}
        if roll < 0.6:
            env = self.rng.choice(ENVS)
            return f"{team}-{env}", {"namespaces": _ml(team=team, env=env)}
        if roll < 0.75:
            tier = self.rng.choice(("backend", "frontend", "db"))
            return f"prod-{tier}", {
                "pods": {"namespaceSelector": _ml(env="prod"), "podSelector": _ml(tier=tier)}
            }
        if roll < 0.9:
            apps = sorted(self.rng.sample(self.apps, min(3, len(self.apps))))
            return f"{team}-apps", {
                "pods": {
                    "namespaceSelector": _ml(team=team),
                    "podSelector": {
                        "matchExpressions": [{"key": "app", "operator": "In", "values": apps}]
                    },
                }
            }
        if roll < 0.97:
            return "tenants", {
                "namespaces": {
                    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["system"]}]
                }
            }
        return "everyone", {"namespaces": {}}

    # Each rule maker returns a rule without its action.

    def ingress_rule(self) -> Raw:
        kind = self.rng.randrange(5)
        if kind == 0:
            return {
                "name": "from-prometheus",
                "from": [{"pods": {
                    "namespaceSelector": _ml(**{NAME_LABEL: "monitoring"}),
                    "podSelector": _ml(app="prometheus"),
                }}],
                "protocols": [_named("metrics")],
            }  # fmt: skip
        if kind == 1:
            teams = sorted(self.rng.sample(self.teams, min(3, len(self.teams))))
            return {
                "from": [
                    {"namespaces": {"matchExpressions": [
                        {"key": "team", "operator": "In", "values": teams}]}},
                    {"namespaces": _ml(**{"compliance": "pci"})},
                ],
                "protocols": [_tcp(30000, 32767), _udp(53)],
            }  # fmt: skip
        if kind == 2:
            return {
                "name": "from-dev-frontends",
                "from": [{"pods": {"namespaceSelector": _ml(env="dev"),
                                   "podSelector": _ml(tier="frontend")}}],
                "protocols": [_tcp(5432), _tcp(6379), _sctp(9999)],
            }  # fmt: skip
        if kind == 3:
            return {"from": [{"namespaces": {}}]}
        return {
            "name": "from-ingress-controller",
            "from": [
                {"pods": {
                    "namespaceSelector": _ml(**{NAME_LABEL: "ingress-nginx"}),
                    "podSelector": _ml(**{"app.kubernetes.io/name": "ingress-nginx"}),
                }},
                {"namespaces": _ml(team=self.team())},
            ],
            "protocols": [_named("http"), _tcp(8443)],
        }  # fmt: skip

    def egress_rule(self) -> Raw:
        kind = self.rng.randrange(7)
        if kind == 0:
            return {
                "name": "dns",
                "to": [{"pods": {
                    "namespaceSelector": _ml(**{NAME_LABEL: "kube-system"}),
                    "podSelector": _ml(**{"k8s-app": "kube-dns"}),
                }}],
                "protocols": [_udp(53), _tcp(53)],
            }  # fmt: skip
        if kind == 1:
            nets = sorted(self.rng.sample(EXTERNAL_NETS, self.rng.randint(1, 4)))
            protocols = [_tcp(443)] if self.rng.random() < 0.5 else [_tcp(1024, 65535)]
            return {"name": "external", "to": [{"networks": nets}], "protocols": protocols}
        if kind == 2:
            return {
                "name": "control-plane",
                "to": [{"nodes": {"matchExpressions": [
                    {"key": CONTROL_PLANE, "operator": "Exists"}]}}],
                "protocols": [_tcp(6443), _tcp(10250)],
            }  # fmt: skip
        if kind == 3:
            return {
                "to": [
                    {"nodes": _ml(**{"topology.kubernetes.io/zone": self.rng.choice(ZONES)})},
                    {"nodes": {"matchExpressions": [
                        {"key": "pool", "operator": "In", "values": ["infra", "compute"]}]}},
                    {"networks": [self.rng.choice(EXTERNAL_NETS)]},
                ],
            }  # fmt: skip
        if kind == 4:
            return {
                "to": [{"namespaces": _ml(team=self.team())}],
                "protocols": [_named(self.rng.choice(("grpc", "http")))],
            }
        if kind == 5:
            return {
                "name": "pci-databases",
                "to": [{"pods": {"namespaceSelector": _ml(compliance="pci"),
                                 "podSelector": _ml(tier="db")}}],
                "protocols": [_named("postgres"), _named("redis")],
            }  # fmt: skip
        return {"to": [{"namespaces": {}}, {"networks": ["10.0.0.0/8", "fd00::/8"]}]}


_ACTION_WEIGHTS = {
    "Admin": (("Accept", "Deny", "Pass"), (0.4, 0.35, 0.25)),
    "Baseline": (("Accept", "Deny", "Pass"), (0.45, 0.45, 0.1)),
}


def _cluster_network_policies(cluster: SynthCluster, rng: random.Random) -> None:
    """``params.cnps`` ClusterNetworkPolicies, half Admin and half Baseline, 5 rules each.

    Subjects are a team's namespaces (alone or with an env), the prod pods of a tier,
    a few apps of a team, every tenant namespace, or (rarely) every namespace; rules
    mix every peer kind (namespaces, pods, networks of both families, nodes) and
    every protocol form (TCP/UDP/SCTP numbers, ranges, named ports, none), with
    Accept, Deny and Pass. Priorities are spread over 0..1000 (some are equal).
    """
    vocab = _CnpVocabulary(cluster, rng)
    for i in range(cluster.params.cnps):
        tier = "Admin" if i % 2 == 0 else "Baseline"
        word, subject = vocab.subject()
        n_ingress = rng.choice((0, 1, 2, 2, 3, 3, 4, 5))
        actions, weights = _ACTION_WEIGHTS[tier]
        ingress: list[Raw] = []
        egress: list[Raw] = []
        for r in range(RULES_PER_CNP):
            rule = vocab.ingress_rule() if r < n_ingress else vocab.egress_rule()
            rule = {"action": rng.choices(actions, weights)[0], **rule}
            (ingress if r < n_ingress else egress).append(rule)
        name = f"{tier.lower()}-{word}-{i:04d}"
        cluster.cluster_policies.append(
            _cnp(name, tier, rng.randrange(0, 1001), subject, ingress, egress)
        )


# ----------------------------------------------------------------------- isolation policies

ISOLATION_API_VERSION = "stockade.dev/v1alpha1"
GROUP_LABEL = "group"  # on tenant pods: ``params.group_values`` distinct values
PROJECT_LABEL = "project"  # on tenant namespaces: about one project per 5 namespaces
NAMESPACES_PER_PROJECT = 5


def group_value(n: int) -> str:
    """The ``n``-th value of :data:`GROUP_LABEL`."""
    return f"g-{n:04d}"


def _grouping_labels(cluster: SynthCluster, rng: random.Random) -> None:
    """Tenant pods get :data:`GROUP_LABEL`, tenant namespaces :data:`PROJECT_LABEL`.

    Values go round-robin over the shuffled Deployments (every replica of one has
    the same value; every value is used when there are at least as many
    Deployments), and over the shuffled tenant namespaces for projects.
    """
    values = cluster.params.group_values
    if values < 1:
        raise ValueError("isolation_policies need group_values >= 1")
    tenants = [ns for ns in cluster.namespaces if ns["metadata"]["labels"].get("tier") != "system"]
    names = [ns["metadata"]["name"] for ns in tenants]
    rng.shuffle(tenants)
    projects = max(1, len(tenants) // NAMESPACES_PER_PROJECT)
    for i, ns in enumerate(tenants):
        ns["metadata"]["labels"][PROJECT_LABEL] = f"p-{i % projects:04d}"
    deployments = [(ns, dep.app) for ns in names for dep in cluster.deployments.get(ns, [])]
    rng.shuffle(deployments)
    group = {dep: group_value(i % values) for i, dep in enumerate(deployments)}
    for pod in cluster.pods:
        meta = pod["metadata"]
        value = group.get((meta["namespace"], meta["labels"].get("app", "")))
        if value is not None:
            meta["labels"][GROUP_LABEL] = value


_TENANTS: Raw = {
    "namespaces": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["system"]}]}
}
_ALL_PODS: Raw = {"pods": {"namespaceSelector": {}, "podSelector": {}}}


def _same_group(**extra: Raw) -> Raw:
    return {"pods": {"sameLabels": [GROUP_LABEL], "namespaceSelector": {}, **extra}}


def _isolation_rules(kind: int, rng: random.Random) -> tuple[list[Raw], list[Raw]]:
    """The ingress and egress rules of one IsolationPolicy of ``kind`` (0-4)."""
    same_ns: Raw = {"namespaces": {"sameAs": "Self"}}
    same_project: Raw = {"namespaces": {"sameLabels": [PROJECT_LABEL]}}
    if kind == 0:  # departments across the cluster, the rest of the namespace passed
        return [
            {"name": "same-group", "action": "Accept", "from": [_same_group()]},
            {"name": "same-namespace", "action": "Pass", "from": [same_ns]},
            {"name": "others", "action": "Deny", "from": [_ALL_PODS]},
        ], []
    if kind == 1:  # projects: open inside, closed between
        return [
            {"name": "same-project", "action": "Pass", "from": [same_project]},
            {"name": "other-projects", "action": "Deny", "from": [_ALL_PODS]},
        ], [
            {"name": "to-group", "action": "Accept", "to": [_same_group()],
             "protocols": [_tcp(8080), _named("grpc")]},
        ]  # fmt: skip
    if kind == 2:  # a service (same group in the namespace), and its tier in the project
        return [
            {"name": "same-service", "action": "Accept",
             "from": [{"pods": {"sameLabels": [GROUP_LABEL]}}],
             "protocols": [_named("http"), _tcp(9000)]},
            {"name": "same-env", "action": rng.choice(("Pass", "Accept")),
             "from": [{"pods": {"sameLabels": ["env", "tier"],
                                "namespaceSelector": _ml(team=rng.choice(TEAMS[:8]))}}]},
        ], [
            {"name": "no-other-groups-db", "action": "Deny",
             "to": [_same_group(podSelector=_ml(tier="db")), same_project],
             "protocols": [_named("postgres")]},
        ]  # fmt: skip
    if kind == 3:  # egress kept in the department and the project
        return [], [
            {"name": "group-or-project", "action": "Accept", "to": [_same_group(), same_project]},
            {"name": "namespace", "action": "Pass", "to": [same_ns]},
            {"name": "dns", "action": "Accept",
             "to": [{"pods": {"namespaceSelector": _ml(**{NAME_LABEL: "kube-system"}),
                              "podSelector": _ml(**{"k8s-app": "kube-dns"})}}],
             "protocols": [_udp(53), _tcp(53)]},
            {"name": "rest", "action": "Deny", "to": [_ALL_PODS]},
        ]  # fmt: skip
    return [  # namespaces of the same team label and env, by namespace sameness
        {"name": "same-team-env", "action": "Accept",
         "from": [{"namespaces": {"sameLabels": ["team", "env"]}}]},
        {"name": "same-project-metrics", "action": "Accept", "from": [same_project],
         "protocols": [_named("metrics")]},
    ], []  # fmt: skip


def _isolation_policies(cluster: SynthCluster, rng: random.Random) -> None:
    """``params.isolation_policies`` IsolationPolicies, alternately Admin and Baseline.

    Rules by sameness of every form (pods ``sameLabels`` on :data:`GROUP_LABEL`
    across the cluster, in the namespace, with a podSelector, on two keys;
    namespaces ``sameLabels`` on :data:`PROJECT_LABEL` and on team and env;
    namespaces ``sameAs: Self``) mixed with ordinary peers, Accept, Deny and Pass.
    Subjects are mostly every tenant namespace, sometimes one team's or the prod pods.
    """
    teams = sorted(
        {ns["metadata"]["labels"]["team"] for ns in cluster.namespaces
         if ns["metadata"]["labels"].get("tier") != "system" and "team" in ns["metadata"]["labels"]}
    ) or ["infra"]  # fmt: skip
    for i in range(cluster.params.isolation_policies):
        tier = "Admin" if i % 2 == 0 else "Baseline"
        kind = (i // 2) % 5
        roll = rng.random()
        if roll < 0.7:
            word, subject = "tenants", _TENANTS
        elif roll < 0.85:
            team = rng.choice(teams)
            word, subject = f"team-{team}", {"namespaces": _ml(team=team)}
        else:
            word = "prod"
            subject = {"pods": {"namespaceSelector": _ml(env="prod"), "podSelector": {}}}
        ingress, egress = _isolation_rules(kind, rng)
        spec: Raw = {"tier": tier, "priority": rng.randrange(0, 1001), "subject": subject}
        if ingress:
            spec["ingress"] = ingress
        if egress:
            spec["egress"] = egress
        cluster.isolation_policies.append(
            {
                "apiVersion": ISOLATION_API_VERSION,
                "kind": "IsolationPolicy",
                "metadata": {"name": f"{tier.lower()}-isolate-{word}-{i:04d}"},
                "spec": spec,
            }
        )


# ----------------------------------------------------------------------- antrea


def _antrea(params: Params) -> SynthCluster:
    """Antrea's ``getXLargeScaleWithSmallNamespaces``, scaled by ``params.namespaces``.

    ``params.pods`` and ``params.policies`` must be 4 and 3 per namespace.
    """
    if params.pods != 4 * params.namespaces or params.policies != 3 * params.namespaces:
        raise ValueError("the antrea shape has 4 pods and 3 policies per namespace")
    rng = random.Random(params.seed)
    nodes = [f"node-{i:05d}" for i in range(params.nodes)]
    bits = _block_bits(params.pods, params.nodes)
    cluster = SynthCluster(params, [], [], [], nodes, bits, next_host=[1] * params.nodes)
    l1 = {"app-1": "scale-1"}
    l2 = {"app-2": "scale-2"}
    for _ in range(params.namespaces):
        ns = _suffix(rng, 8)
        while ns in cluster.deployments:
            ns = _suffix(rng, 8)
        cluster.namespaces.append(_namespace(ns, {"app": ns}))
        cluster.deployments[ns] = [
            Deployment(ns, "app-1", "", l1, (), ""),
            Deployment(ns, "app-2", "", l2, (), ""),
        ]
        for name, spec in (("default-deny-all", {}), ("np-1", l1), ("np-2", l2)):
            body: Raw = {"podSelector": _ml(**spec), "policyTypes": ["Ingress", "Egress"]}
            if spec:
                body["ingress"] = [{"from": [{"podSelector": _ml(**spec)}]}]
            cluster.policies.append(_policy(ns, name, body))
        for i, labels in enumerate((l1, l1, l2, l2)):
            # Antrea picks a random node among 1,000 for each pod.
            node = rng.randrange(params.nodes)
            ip = cluster.allocate_ip(node)
            cluster.pods.append(_pod(ns, f"pod{i + 1}", labels, nodes[node], node, ip, (), "app"))
    return cluster


# ----------------------------------------------------------------------- events


class EventMaker:
    """Distinct, valid change events against a generated cluster.

    Each method returns raw objects (or keys) and updates its own view, so events
    can be applied one after another.
    """

    def __init__(self, cluster: SynthCluster, seed: int = 7) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.pods: dict[str, Raw] = {_key(p): p for p in cluster.pods}
        self.namespaces: dict[str, Raw] = {n["metadata"]["name"]: n for n in cluster.namespaces}
        self.policies: dict[str, Raw] = {_key(p): p for p in cluster.policies}
        self._pods_by_ns: dict[str, list[str]] = {}
        for key, pod in self.pods.items():
            self._pods_by_ns.setdefault(pod["metadata"]["namespace"], []).append(key)
        self._policies_by_ns: dict[str, list[str]] = {}
        for key, pol in self.policies.items():
            self._policies_by_ns.setdefault(pol["metadata"]["namespace"], []).append(key)
        self._used: set[str] = set()
        self._serial = 0
        self.cluster_policies: dict[str, Raw] = {
            c["metadata"]["name"]: c for c in cluster.cluster_policies
        }
        self.nodes: dict[str, Raw] = {n["metadata"]["name"]: n for n in cluster.nodes}
        self._cnp_serial = 0
        self._groups: list[str] | None = None
        self._grouped: list[str] = []

    def _fresh(self, pool: list[str]) -> str:
        for _ in range(10_000):
            key = self.rng.choice(pool)
            if key not in self._used:
                self._used.add(key)
                return key
        raise RuntimeError("ran out of distinct objects for events")

    def pod_added(self) -> Raw:
        """A new replica of an existing pod's Deployment, on a random node."""
        template = self.pods[self._fresh(sorted(self.pods))]
        pod = copy.deepcopy(template)
        node = self.rng.randrange(len(self.cluster.node_names))
        ip = self.cluster.allocate_ip(node)
        self._serial += 1
        pod["metadata"]["name"] = f"{template['metadata']['name']}-new{self._serial}"
        pod["spec"]["nodeName"] = self.cluster.node_names[node]
        pod["status"] = {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": _node_ip(node),
        }
        key = _key(pod)
        self.pods[key] = pod
        self._used.add(key)
        return pod

    def pod_relabelled(self) -> Raw:
        """An existing pod takes the labels of another pod of its namespace.

        When every pod of the namespace looks the same, it gains ``canary=true``
        (or loses it).
        """
        key = self._fresh(sorted(self.pods))
        pod = copy.deepcopy(self.pods[key])
        ns = pod["metadata"]["namespace"]
        labels = pod["metadata"].get("labels", {})
        siblings = [self.pods[k] for k in self._pods_by_ns.get(ns, []) if k in self.pods]
        others = [
            p["metadata"].get("labels", {})
            for p in siblings
            if p["metadata"].get("labels", {}) != labels
        ]
        if others:
            pod["metadata"]["labels"] = dict(self.rng.choice(others))
        elif "canary" in labels:
            del pod["metadata"]["labels"]["canary"]
        else:
            pod["metadata"]["labels"] = {**labels, "canary": "true"}
        self.pods[key] = pod
        return pod

    def pod_regrouped(self) -> Raw:
        """An existing pod with :data:`GROUP_LABEL` takes another value of it (the
        value of another pod, so the group it joins exists)."""
        if self._groups is None:
            self._groups = sorted(
                {p["metadata"]["labels"][GROUP_LABEL] for p in self.pods.values()
                 if GROUP_LABEL in p["metadata"].get("labels", {})}
            )  # fmt: skip
            self._grouped = sorted(
                k for k, p in self.pods.items() if GROUP_LABEL in p["metadata"].get("labels", {})
            )
        if len(self._groups) < 2 or not self._grouped:
            raise RuntimeError("the cluster has no pods in two groups to move between")
        key = self._fresh([k for k in self._grouped if k in self.pods])
        pod = copy.deepcopy(self.pods[key])
        labels = pod["metadata"]["labels"]
        old = labels[GROUP_LABEL]
        labels[GROUP_LABEL] = self.rng.choice([g for g in self._groups if g != old])
        self.pods[key] = pod
        return pod

    def pod_deleted(self) -> str:
        """The key of an existing pod to delete."""
        key = self._fresh(sorted(self.pods))
        del self.pods[key]
        return key

    def namespace_relabelled(self) -> Raw:
        """A namespace takes the labels of another namespace (its name label kept)."""
        names = sorted(self.namespaces)
        name = self._fresh(names)
        ns = copy.deepcopy(self.namespaces[name])
        labels = ns["metadata"].get("labels", {})
        for _ in range(100):
            other = self.namespaces[self.rng.choice(names)]["metadata"].get("labels", {})
            new = {**other, NAME_LABEL: name}
            if new != labels:
                break
        else:
            new = {**labels, "relabelled": "true"}
        ns["metadata"]["labels"] = new
        self.namespaces[name] = ns
        return ns

    def policy_changed(self) -> Raw:
        """An existing policy edited: its ports, its target, or a new ingress peer."""
        key = self._fresh(sorted(self.policies))
        pol = copy.deepcopy(self.policies[key])
        spec = pol["spec"]
        ns = pol["metadata"]["namespace"]
        how = self._serial % 3
        self._serial += 1
        if how == 0:
            # Another port on every rule (or a first rule with one).
            rules = spec.get("ingress") or []
            if not rules:
                rules = [{}]
            for rule in rules:
                rule.setdefault("ports", []).append({"protocol": "TCP", "port": 8443})
            spec["ingress"] = rules
            if "policyTypes" in spec and "Ingress" not in spec["policyTypes"]:
                spec["policyTypes"].append("Ingress")
        elif how == 1:
            # Retarget: the pod selector of a sibling policy, or one app of the namespace.
            candidates = [
                self.policies[k]["spec"].get("podSelector", {})
                for k in self._policies_by_ns.get(ns, [])
            ]
            candidates = [c for c in candidates if c != spec.get("podSelector")]
            if candidates:
                spec["podSelector"] = copy.deepcopy(self.rng.choice(candidates))
            else:
                spec["podSelector"] = self._some_pod_selector(ns)
        else:
            # A new peer in the first ingress rule: pods of one app of the namespace.
            rules = spec.get("ingress") or [{}]
            rules[0].setdefault("from", []).append({"podSelector": self._some_pod_selector(ns)})
            spec["ingress"] = rules
            if "policyTypes" in spec and "Ingress" not in spec["policyTypes"]:
                spec["policyTypes"].append("Ingress")
        self.policies[key] = pol
        return pol

    def cluster_policy_changed(self) -> Raw:
        """An existing CNP edited, in turn: its priority, an action flipped, a peer
        added to its first rule, or its rules reordered (the same CNP may come again).
        """
        if not self.cluster_policies:
            raise RuntimeError("the cluster has no ClusterNetworkPolicy")
        name = self.rng.choice(sorted(self.cluster_policies))
        cnp = copy.deepcopy(self.cluster_policies[name])
        spec = cnp["spec"]
        how = self._cnp_serial % 4
        self._cnp_serial += 1
        rules: list[Raw] = spec.get("ingress") or spec["egress"]
        if how == 0:
            old = spec["priority"]
            spec["priority"] = (old + self.rng.randint(1, 1000)) % 1001
        elif how == 1:
            rule = self.rng.choice(rules)
            flip = {"Accept": "Deny", "Deny": "Pass", "Pass": "Accept"}
            rule["action"] = flip[rule["action"]]
        elif how == 2:
            team = self.rng.choice(
                sorted({ns["metadata"]["labels"].get("team", "infra")
                        for ns in self.namespaces.values()})
            )  # fmt: skip
            peers = rules[0].get("from", rules[0].get("to"))
            assert isinstance(peers, list)
            if len(peers) < 25:
                peers.append({"namespaces": {"matchLabels": {"team": team, "env": "qa"}}})
            else:
                peers.pop()
        else:
            rules.reverse()
            if len(rules) == 1:
                rules[0]["action"] = "Pass" if rules[0]["action"] != "Pass" else "Deny"
        self.cluster_policies[name] = cnp
        return cnp

    def node_relabelled(self) -> Raw:
        """A Node moves to another pool (its labels change; node peer sets follow)."""
        if not self.nodes:
            raise RuntimeError("the cluster has no Node objects")
        name = self.rng.choice(sorted(self.nodes))
        node = copy.deepcopy(self.nodes[name])
        labels = node["metadata"]["labels"]
        pools = [p for p in ("general", "compute", "infra", "gpu") if p != labels.get("pool")]
        labels["pool"] = self.rng.choice(pools)
        self.nodes[name] = node
        return node

    def _some_pod_selector(self, ns: str) -> Raw:
        pods = self._pods_by_ns.get(ns)
        if not pods:
            return {"matchLabels": {"relabelled": "true"}}
        labels = self.pods.get(self.rng.choice(pods), {}).get("metadata", {}).get("labels", {})
        key = "app" if "app" in labels else (sorted(labels) or ["relabelled"])[0]
        return {"matchLabels": {key: labels.get(key, "true")}}


def _key(obj: Raw) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}"
