"""Hypothesis strategies: small random clusters as raw Kubernetes dicts.

Vocabularies are tiny on purpose, so selectors often match and ipBlocks often
contain pod addresses: collisions are where the semantics are interesting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from stockade.agent.render import INLINE_MAX_RULES

NAMESPACES = ("a", "b", "c")
NODES = ("n1", "n2")
POD_LABELS: Mapping[str, tuple[str, ...]] = {"app": ("web", "db", "api"), "tier": ("front", "back")}
NS_LABELS: Mapping[str, tuple[str, ...]] = {"env": ("prod", "dev"), "team": ("x", "y")}
NAMED_PORTS = (("http", "TCP", (80, 8080)), ("dns", "UDP", (53, 5353)), ("metrics", "TCP", (9090,)))
CIDRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("10.0.0.0/16", ("10.0.1.0/24",)),
    ("10.0.1.0/24", ()),
    ("10.0.2.0/25", ("10.0.2.4/30",)),
    ("192.168.0.0/24", ()),
    ("0.0.0.0/0", ("10.0.0.0/8",)),
    ("203.0.113.0/24", ()),
    ("fd00::/64", ("fd00::100/120",)),
    ("::/0", ()),
)
PROBE_PORTS = (53, 80, 85, 90, 5353, 8080, 9090)
PROTOCOLS = ("TCP", "UDP", "SCTP")
EXTERNAL = ("203.0.113.7", "198.51.100.9", "2001:db8::7")
NODE_IPS = {"n1": ("192.168.0.1", "fd01::1"), "n2": ("192.168.0.2", "fd01::2")}

Raw = dict[str, Any]


def labels(vocab: Mapping[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, str]]:
    """A random subset of the vocabulary's keys, each with one of its values."""
    return st.fixed_dictionaries(
        {}, optional={key: st.sampled_from(values) for key, values in vocab.items()}
    )


@st.composite
def selector(draw: st.DrawFn, vocab: Mapping[str, tuple[str, ...]]) -> Raw:
    """A label selector dict using matchLabels and/or matchExpressions."""
    out: Raw = {}
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(vocab)))
        out["matchLabels"] = {key: draw(st.sampled_from(vocab[key]))}
    exprs = []
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(sorted(vocab)))
        op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
        expr: Raw = {"key": key, "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = draw(
                st.lists(st.sampled_from(vocab[key]), min_size=1, max_size=2, unique=True)
            )
        exprs.append(expr)
    if exprs:
        out["matchExpressions"] = exprs
    return out


@st.composite
def namespace(draw: st.DrawFn, name: str) -> Raw:
    """A Namespace dict."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": draw(labels(NS_LABELS))},
    }


# Addresses several pods may claim at once (an IP reused while its pod terminates,
# or a stale snapshot): the ownership rule decides (stockade.ownership).
SHARED_IPS = ("10.0.1.250", "10.0.1.251")
TIMESTAMPS = (None, "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z")


@st.composite
def pod(draw: st.DrawFn, index: int) -> Raw:
    """A Pod dict; sometimes host-network, dual-stack, finished, without an IP, without
    a node, on a shared address, terminating, or with a port name in two containers."""
    node = draw(st.sampled_from((*NODES, *NODES, *NODES, None)))
    n = NODES.index(node) + 1 if node is not None else 3
    kind = draw(st.sampled_from(("pod",) * 6 + ("host", "noip", "done", "dual", "shared")))
    status: Raw = {"phase": "Running"}
    if node is not None:
        status["hostIP"] = NODE_IPS[node][0]
    if kind == "host":
        status["podIP"] = NODE_IPS[node][0] if node is not None else "192.168.0.9"
    elif kind == "shared":
        status["podIP"] = draw(st.sampled_from(SHARED_IPS))
    elif kind != "noip":
        status["podIP"] = f"10.0.{n}.{index + 2}"
        if kind == "dual":
            status["podIPs"] = [{"ip": status["podIP"]}, {"ip": f"fd00::{n}:{index + 2}"}]
    if kind == "done":
        status["phase"] = draw(st.sampled_from(("Succeeded", "Failed")))
    if kind == "noip":
        status["phase"] = "Pending"
    containers: list[Raw] = [{"name": "c", "ports": container_ports(draw)}]
    if draw(st.integers(0, 4)) == 0:
        # A second container may declare a name the first has (the API allows it).
        containers.append({"name": "d", "ports": container_ports(draw)})
    meta: Raw = {
        "name": f"p{index}",
        "namespace": draw(st.sampled_from(NAMESPACES)),
        "labels": draw(labels(POD_LABELS)),
    }
    created = draw(st.sampled_from(TIMESTAMPS))
    if created is not None:
        meta["creationTimestamp"] = created
    if draw(st.integers(0, 3)) == 0:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    spec: Raw = {"hostNetwork": kind == "host", "containers": containers}
    if node is not None:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def container_ports(draw: st.DrawFn) -> list[Raw]:
    """Some of the named ports, each name at most once (as the API requires)."""
    ports = []
    for name, proto, numbers in NAMED_PORTS:
        if draw(st.booleans()):
            ports.append(
                {"name": name, "protocol": proto, "containerPort": draw(st.sampled_from(numbers))}
            )
    return ports


@st.composite
def peer(draw: st.DrawFn) -> Raw:
    """One from/to item: podSelector, namespaceSelector, both, or ipBlock."""
    kind = draw(st.sampled_from(("pod", "ns", "both", "ip")))
    if kind == "ip":
        cidr, excepts = draw(st.sampled_from(CIDRS))
        block: Raw = {"cidr": cidr}
        with_except = draw(st.booleans())
        if excepts and with_except:
            block["except"] = list(excepts)
        return {"ipBlock": block}
    out: Raw = {}
    if kind in ("pod", "both"):
        out["podSelector"] = draw(selector(POD_LABELS))
    if kind in ("ns", "both"):
        out["namespaceSelector"] = draw(selector(NS_LABELS))
    return out


@st.composite
def port(draw: st.DrawFn) -> Raw:
    """One ports item: numeric, a range, named, or protocol only."""
    kind = draw(st.sampled_from(("num", "range", "name", "proto")))
    out: Raw = {}
    if draw(st.booleans()):
        out["protocol"] = draw(st.sampled_from(PROTOCOLS))
    if kind == "num":
        out["port"] = draw(st.sampled_from((53, 80, 8080, 9090)))
    elif kind == "range":
        out["port"] = 80
        out["endPort"] = draw(st.sampled_from((80, 85, 90)))
    elif kind == "name":
        name, proto, _ = draw(st.sampled_from(NAMED_PORTS))
        out["port"] = name
        if draw(st.booleans()):
            out["protocol"] = proto
    return out


@st.composite
def rule(draw: st.DrawFn, peers_field: str) -> Raw:
    """An ingress or egress rule; peers and ports are sometimes absent."""
    out: Raw = {}
    if draw(st.booleans()):
        out[peers_field] = draw(st.lists(peer(), max_size=2))
    if draw(st.booleans()):
        out["ports"] = draw(st.lists(port(), max_size=2))
    return out


@st.composite
def policy(draw: st.DrawFn, index: int) -> Raw:
    """A NetworkPolicy dict with random selectors, rules and policyTypes."""
    spec: Raw = {"podSelector": draw(selector(POD_LABELS))}
    if draw(st.booleans()):
        spec["ingress"] = draw(st.lists(rule("from"), max_size=2))
    if draw(st.booleans()):
        spec["egress"] = draw(st.lists(rule("to"), max_size=2))
    types = draw(st.sampled_from((None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types is not None:
        spec["policyTypes"] = types
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"np{index}", "namespace": draw(st.sampled_from(NAMESPACES))},
        "spec": spec,
    }


@st.composite
def cluster_docs(draw: st.DrawFn, max_pods: int = 6, max_policies: int = 4) -> list[Raw]:
    """Namespaces (some undeclared), pods and policies, as raw dicts."""
    docs: list[Raw] = []
    for name in NAMESPACES:
        if draw(st.booleans()):
            docs.append(draw(namespace(name)))
    docs += [draw(pod(i)) for i in range(draw(st.integers(2, max_pods)))]
    docs += [draw(policy(i)) for i in range(draw(st.integers(1, max_policies)))]
    return docs


# --- ClusterNetworkPolicy and Node ---------------------------------------------------

NODE_LABELS: Mapping[str, tuple[str, ...]] = {"role": ("worker", "infra"), "zone": ("z1", "z2")}
CNP_CIDRS = ("10.0.1.0/24", "10.0.0.0/8", "192.168.0.0/24", "203.0.113.0/24", "0.0.0.0/0", "::/0")
CNP_PORTS = ((53, 53), (80, 80), (80, 85), (8080, 9090))


@st.composite
def node(draw: st.DrawFn, name: str) -> Raw:
    """A Node dict with random labels and the node's addresses (sometimes only v4)."""
    v4, v6 = NODE_IPS[name]
    addresses: list[Raw] = [
        {"type": "InternalIP", "address": v4},
        {"type": "Hostname", "address": name},
    ]
    if draw(st.booleans()):
        addresses.append({"type": "InternalIP", "address": v6})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": draw(labels(NODE_LABELS))},
        "status": {"addresses": addresses},
    }


def _often_all(vocab: Mapping[str, tuple[str, ...]]) -> st.SearchStrategy[Raw]:
    """A selector that is empty (selects everything) half the time, so tiers often meet."""
    return st.one_of(st.just({}), selector(vocab))


@st.composite
def cnp_peer(draw: st.DrawFn, egress: bool) -> Raw:
    """One from/to item of a ClusterNetworkPolicy (domainNames rarely)."""
    kinds = ("namespaces", "pods") + (
        ("networks", "networks", "nodes", "domainNames") if egress else ()
    )
    kind = draw(st.sampled_from(kinds))
    if kind == "namespaces":
        return {"namespaces": draw(_often_all(NS_LABELS))}
    if kind == "pods":
        return {
            "pods": {
                "namespaceSelector": draw(_often_all(NS_LABELS)),
                "podSelector": draw(_often_all(POD_LABELS)),
            }
        }
    if kind == "networks":
        return {
            "networks": draw(
                st.lists(st.sampled_from(CNP_CIDRS), min_size=1, max_size=2, unique=True)
            )
        }
    if kind == "nodes":
        return {"nodes": draw(_often_all(NODE_LABELS))}
    return {"domainNames": ["example.com"]}


@st.composite
def cnp_protocol(draw: st.DrawFn, named_ok: bool) -> Raw:
    """One protocols item: a port or range of a protocol, or a named port."""
    if named_ok and draw(st.integers(0, 3)) == 0:
        return {"destinationNamedPort": draw(st.sampled_from([n for n, _, _ in NAMED_PORTS]))}
    start, end = draw(st.sampled_from(CNP_PORTS))
    dest: Raw = {"number": start} if start == end else {"range": {"start": start, "end": end}}
    return {draw(st.sampled_from(("tcp", "udp", "sctp"))): {"destinationPort": dest}}


@st.composite
def cnp_rule(draw: st.DrawFn, egress: bool) -> Raw:
    """A ClusterNetworkPolicy rule with an action, peers and sometimes protocols."""
    peers = draw(st.lists(cnp_peer(egress), min_size=1, max_size=2))
    out: Raw = {
        "action": draw(st.sampled_from(("Accept", "Deny", "Pass"))),
        ("to" if egress else "from"): peers,
    }
    if draw(st.booleans()):
        out["name"] = f"r{draw(st.integers(0, 9))}"
    if draw(st.booleans()):
        # The CEL rule: no named port with an address peer.
        named_ok = not any(set(p) & {"networks", "nodes", "domainNames"} for p in peers)
        out["protocols"] = draw(st.lists(cnp_protocol(named_ok), min_size=1, max_size=2))
    return out


@st.composite
def cluster_network_policy(draw: st.DrawFn, index: int) -> Raw:
    """A ClusterNetworkPolicy dict; priorities from a small set, so ties happen."""
    if draw(st.booleans()):
        subject: Raw = {"namespaces": draw(_often_all(NS_LABELS))}
    else:
        subject = {
            "pods": {
                "namespaceSelector": draw(_often_all(NS_LABELS)),
                "podSelector": draw(_often_all(POD_LABELS)),
            }
        }
    spec: Raw = {
        "tier": draw(st.sampled_from(("Admin", "Baseline"))),
        "priority": draw(st.sampled_from((0, 1, 5))),
        "subject": subject,
    }
    if draw(st.booleans()):
        spec["ingress"] = draw(st.lists(cnp_rule(False), min_size=1, max_size=2))
    if draw(st.booleans()):
        spec["egress"] = draw(st.lists(cnp_rule(True), min_size=1, max_size=2))
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": f"cnp{index}"},
        "spec": spec,
    }


@st.composite
def tiered_cluster_docs(
    draw: st.DrawFn, max_pods: int = 6, max_policies: int = 3, max_cnps: int = 3
) -> list[Raw]:
    """A cluster of :func:`cluster_docs`, plus Nodes (some) and ClusterNetworkPolicies."""
    docs: list[Raw] = []
    for name in NAMESPACES:
        if draw(st.booleans()):
            docs.append(draw(namespace(name)))
    docs += [draw(pod(i)) for i in range(draw(st.integers(2, max_pods)))]
    docs += [draw(policy(i)) for i in range(draw(st.integers(0, max_policies)))]
    docs += [draw(node(name)) for name in NODES if draw(st.booleans())]
    docs += [draw(cluster_network_policy(i)) for i in range(draw(st.integers(1, max_cnps)))]
    return docs


# How far the renderer inlines policies into group chains (0: never; the rest: up to
# that many rules), so properties cover the jumped, the inlined and the mixed layouts.
INLINE_CHOICES = st.sampled_from([0, 1, 3, INLINE_MAX_RULES])


@st.composite
def same_peer(draw: st.DrawFn) -> Raw:
    """One peer by sameness of an IsolationPolicy, over the small label vocabularies."""
    kind = draw(st.sampled_from(("self", "ns-labels", "pod-labels")))
    if kind == "self":
        return {"namespaces": {draw(st.sampled_from(("sameAs", "match"))): "Self"}}
    if kind == "ns-labels":
        keys = draw(
            st.lists(st.sampled_from(sorted(NS_LABELS)), min_size=1, max_size=2, unique=True)
        )
        return {"namespaces": {"sameLabels": keys}}
    keys = draw(st.lists(st.sampled_from(sorted(POD_LABELS)), min_size=1, max_size=2, unique=True))
    pods: Raw = {"sameLabels": keys}
    if draw(st.booleans()):
        pods["namespaceSelector"] = draw(_often_all(NS_LABELS))
    if draw(st.integers(0, 3)) == 0:
        pods["podSelector"] = draw(selector(POD_LABELS))
    return {"pods": pods}


@st.composite
def isolation_rule(draw: st.DrawFn, egress: bool) -> Raw:
    """A rule of an IsolationPolicy: a ClusterNetworkPolicy rule, often with sameness."""
    rule = draw(cnp_rule(egress))
    field = "to" if egress else "from"
    same: list[Raw] = draw(st.lists(same_peer(), min_size=1, max_size=2))
    only_same: bool = draw(st.booleans())
    if only_same:
        rule[field] = same  # by sameness only
    else:
        rule[field] = [*rule[field], *same][:3]
    if "protocols" in rule and any(
        set(p) & {"networks", "nodes", "domainNames"} for p in rule[field]
    ):
        rule["protocols"] = [p for p in rule["protocols"] if "destinationNamedPort" not in p]
        if not rule["protocols"]:
            del rule["protocols"]
    return rule


@st.composite
def isolation_policy(draw: st.DrawFn, index: int) -> Raw:
    """An IsolationPolicy dict, named like the CNPs at times (their order is a tie-break)."""
    doc = draw(cluster_network_policy(index))
    spec = doc["spec"]
    for direction, egress in (("ingress", False), ("egress", True)):
        if direction in spec or draw(st.booleans()):
            spec[direction] = draw(st.lists(isolation_rule(egress), min_size=1, max_size=3))
    name = draw(st.sampled_from((f"cnp{index}", f"iso{index}")))
    return {
        "apiVersion": "stockade.dev/v1alpha1",
        "kind": "IsolationPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


@st.composite
def isolation_cluster_docs(
    draw: st.DrawFn, max_pods: int = 8, max_policies: int = 2, max_cnps: int = 2, max_isops: int = 2
) -> list[Raw]:
    """:func:`tiered_cluster_docs` (maybe no CNP) plus IsolationPolicies with sameness."""
    docs: list[Raw] = []
    for name in NAMESPACES:
        if draw(st.booleans()):
            docs.append(draw(namespace(name)))
    docs += [draw(pod(i)) for i in range(draw(st.integers(2, max_pods)))]
    docs += [draw(policy(i)) for i in range(draw(st.integers(0, max_policies)))]
    docs += [draw(node(name)) for name in NODES if draw(st.booleans())]
    docs += [draw(cluster_network_policy(i)) for i in range(draw(st.integers(0, max_cnps)))]
    docs += [draw(isolation_policy(i)) for i in range(draw(st.integers(1, max_isops)))]
    return docs
