"""kube-proxy's iptables mode, as test equipment: the rules it writes, rendered (pure).

The sandbox has no kube-proxy, so this stand-in writes into each node's namespace
the chains kube-proxy's iptables mode writes (pkg/proxy/iptables in Kubernetes),
with the same names, layout, marks and matches, so that stockade meets in the
sandbox the NAT it meets in a cluster:

- nat ``PREROUTING``/``OUTPUT`` -> ``KUBE-SERVICES``: per cluster IP and port a jump
  to ``KUBE-SVC-<hash>``, which marks for masquerade what does not come from a pod
  (``! -s <cluster CIDR>``) and picks an endpoint at random with the ``statistic``
  match (probability ``1/n``, ``1/(n-1)``, ... as kube-proxy writes them);
  ``KUBE-SEP-<hash>`` marks hairpin traffic (the endpoint reaching itself) for
  masquerade and DNATs to the endpoint;
- the last rule of ``KUBE-SERVICES`` sends traffic to a local address to
  ``KUBE-NODEPORTS``; per node port ``KUBE-EXT-<hash>``: with
  ``externalTrafficPolicy: Cluster`` it marks for masquerade (the backend then sees
  the node's address) and goes to ``KUBE-SVC``; with ``Local`` it keeps the client's
  address and balances over this node's endpoints only (``KUBE-SVL-<hash>``), pods
  and the node itself still going to every endpoint;
- nat ``POSTROUTING`` -> ``KUBE-POSTROUTING``: masquerade what carries ``0x4000``;
- filter: ``KUBE-FORWARD`` (drop INVALID, accept marked and established traffic),
  ``KUBE-SERVICES`` (reject a cluster IP with no endpoints),
  ``KUBE-EXTERNAL-SERVICES`` (reject or drop a node port with no usable endpoint),
  each jumped to from the built-in chains by rules kube-proxy *prepends* when they
  are missing, and never moves afterwards.

Not modelled: session affinity, load balancer IPs and source ranges, external IPs,
topology hints, ``internalTrafficPolicy: Local``, the ``KUBE-PROXY-FIREWALL`` chain,
the ``KUBE-MARK-DROP`` of old releases. None of them changes what the filter
FORWARD hook (where stockade judges) sees for the traffic the tests send.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from stockade.services import Backend, EndpointSlice, Service, ServicePort, service_backends

MASQ_MARK = "0x4000"
TABLES = ("nat", "filter")
KUBE_PREFIX = "KUBE-"

# kube-proxy's own chains, always present (they are flushed and rewritten each sync).
NAT_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")
FILTER_CHAINS = ("KUBE-FORWARD", "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS")


@dataclass(frozen=True, slots=True)
class JumpRule:
    """A rule kube-proxy keeps in a built-in chain: prepended when missing, never moved."""

    table: str
    chain: str
    args: tuple[str, ...]


# In the order kube-proxy ensures them (each prepended, so the last ends up first).
JUMPS: tuple[JumpRule, ...] = (
    JumpRule(
        "filter",
        "INPUT",
        (
            "-m", "conntrack", "--ctstate", "NEW",
            "-m", "comment", "--comment", "kubernetes externally-visible service portals",
            "-j", "KUBE-EXTERNAL-SERVICES",
        ),
    ),
    JumpRule(
        "filter",
        "FORWARD",
        (
            "-m", "conntrack", "--ctstate", "NEW",
            "-m", "comment", "--comment", "kubernetes externally-visible service portals",
            "-j", "KUBE-EXTERNAL-SERVICES",
        ),
    ),
    JumpRule(
        "filter",
        "FORWARD",
        (
            "-m", "conntrack", "--ctstate", "NEW",
            "-m", "comment", "--comment", "kubernetes service portals",
            "-j", "KUBE-SERVICES",
        ),
    ),
    JumpRule(
        "filter",
        "OUTPUT",
        (
            "-m", "conntrack", "--ctstate", "NEW",
            "-m", "comment", "--comment", "kubernetes service portals",
            "-j", "KUBE-SERVICES",
        ),
    ),
    JumpRule(
        "filter",
        "FORWARD",
        ("-m", "comment", "--comment", "kubernetes forwarding rules", "-j", "KUBE-FORWARD"),
    ),
    JumpRule(
        "nat",
        "OUTPUT",
        ("-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"),
    ),
    JumpRule(
        "nat",
        "PREROUTING",
        ("-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"),
    ),
    JumpRule(
        "nat",
        "POSTROUTING",
        ("-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProxyNode:
    """What kube-proxy knows of the node it runs on, for one IP family."""

    name: str
    family: int
    cluster_cidr: str  # every pod address of the cluster (kube-proxy's --cluster-cidr)


@dataclass
class ProxyRules:
    """Desired chains per table: chain name -> rule lines (``-A CHAIN ...``), in order."""

    family: int
    tables: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: {table: {} for table in TABLES}
    )

    def chain(self, table: str, name: str) -> list[str]:
        """The rule list of ``name`` in ``table``, declared if it was not yet."""
        return self.tables[table].setdefault(name, [])

    def add(self, table: str, name: str, *args: str) -> None:
        """Append ``-A name args...`` to the chain."""
        self.chain(table, name).append(" ".join(("-A", name, *(_quote(a) for a in args))))


def _quote(arg: str) -> str:
    return f'"{arg}"' if (" " in arg or not arg) else arg


def _chain_hash(*parts: str) -> str:
    """kube-proxy's naming: base32 of a SHA-256, first 16 characters."""
    digest = hashlib.sha256("".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def _port_name(service: Service, port: ServicePort) -> str:
    return f"{service.namespace}/{service.name}:{port.name}" if port.name else service.key


def _host(ip: str) -> str:
    return f"{ip}/{32 if ipaddress.ip_address(ip).version == 4 else 128}"


def _dnat_target(backend: Backend) -> str:
    if ipaddress.ip_address(backend.ip).version == 6:
        return f"[{backend.ip}]:{backend.port}"
    return f"{backend.ip}:{backend.port}"


def _reject(family: int) -> tuple[str, ...]:
    kind = "icmp-port-unreachable" if family == 4 else "icmp6-port-unreachable"
    return ("-j", "REJECT", "--reject-with", kind)


def _balance(
    rules: ProxyRules,
    chain: str,
    name: str,
    backends: Sequence[Backend],
    seps: Mapping[Backend, str],
) -> None:
    """Random balancing as kube-proxy writes it: 1/n, 1/(n-1), ..., then the last."""
    count = len(backends)
    for i, backend in enumerate(backends):
        comment = ("-m", "comment", "--comment", f"{name} -> {_dnat_target(backend)}")
        if i < count - 1:
            probability = f"{1.0 / (count - i):0.10f}"
            rules.add(
                "nat", chain, *comment, "-m", "statistic", "--mode", "random",
                "--probability", probability, "-j", seps[backend],
            )  # fmt: skip
        else:
            rules.add("nat", chain, *comment, "-j", seps[backend])


def render_proxy(
    node: ProxyNode, services: Iterable[Service], slices: Iterable[EndpointSlice]
) -> ProxyRules:
    """The chains kube-proxy's iptables mode keeps on ``node`` for one family."""
    rules = ProxyRules(node.family)
    for name in NAT_CHAINS:
        rules.chain("nat", name)
    for name in FILTER_CHAINS:
        rules.chain("filter", name)
    rules.add(
        "nat",
        "KUBE-POSTROUTING",
        "-m",
        "mark",
        "!",
        "--mark",
        f"{MASQ_MARK}/{MASQ_MARK}",
        "-j",
        "RETURN",
    )
    rules.add("nat", "KUBE-POSTROUTING", "-j", "MARK", "--xor-mark", MASQ_MARK)
    rules.add(
        "nat", "KUBE-POSTROUTING",
        "-m", "comment", "--comment", "kubernetes service traffic requiring SNAT",
        "-j", "MASQUERADE",
    )  # fmt: skip
    rules.add("nat", "KUBE-MARK-MASQ", "-j", "MARK", "--or-mark", MASQ_MARK)
    rules.add("filter", "KUBE-FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
    rules.add(
        "filter", "KUBE-FORWARD",
        "-m", "comment", "--comment", "kubernetes forwarding rules",
        "-m", "mark", "--mark", f"{MASQ_MARK}/{MASQ_MARK}", "-j", "ACCEPT",
    )  # fmt: skip
    rules.add(
        "filter", "KUBE-FORWARD",
        "-m", "comment", "--comment", "kubernetes forwarding conntrack rule",
        "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT",
    )  # fmt: skip
    all_slices = list(slices)
    for service in sorted(services, key=lambda s: s.key):
        if service.type == "ExternalName":
            continue
        vips = [ip for ip in service.cluster_ips if ipaddress.ip_address(ip).version == node.family]
        if not vips:
            continue
        for port in service.ports:
            _render_port(rules, node, service, port, vips[0], all_slices)
    rules.add(
        "nat", "KUBE-SERVICES",
        "-m", "comment", "--comment",
        "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
        "-m", "addrtype", "--dst-type", "LOCAL", "-j", "KUBE-NODEPORTS",
    )  # fmt: skip
    return rules


def _render_port(
    rules: ProxyRules,
    node: ProxyNode,
    service: Service,
    port: ServicePort,
    vip: str,
    slices: Sequence[EndpointSlice],
) -> None:
    family = node.family
    name = _port_name(service, port)
    proto = port.protocol.lower()
    match = ("-p", proto, "-m", proto, "--dport", str(port.port))
    backends = [
        b
        for b in service_backends(service, port, slices)
        if ipaddress.ip_address(b.ip).version == family
    ]
    node_port = port.node_port if service.type in ("NodePort", "LoadBalancer") else None
    if not backends:
        rules.add(
            "filter", "KUBE-SERVICES", "-d", _host(vip),
            "-m", "comment", "--comment", f"{name} has no endpoints", *match, *_reject(family),
        )  # fmt: skip
        if node_port is not None:
            rules.add(
                "filter", "KUBE-EXTERNAL-SERVICES",
                "-m", "comment", "--comment", f"{name} has no endpoints",
                "-m", "addrtype", "--dst-type", "LOCAL",
                "-p", proto, "-m", proto, "--dport", str(node_port), *_reject(family),
            )  # fmt: skip
        return
    key = f"{name}/{port.protocol}"
    svc_chain = f"KUBE-SVC-{_chain_hash(key)}"
    seps = {b: f"KUBE-SEP-{_chain_hash(key, _dnat_target(b))}" for b in backends}
    rules.add(
        "nat", "KUBE-SERVICES", "-d", _host(vip),
        "-m", "comment", "--comment", f"{name} cluster IP", *match, "-j", svc_chain,
    )  # fmt: skip
    rules.chain("nat", svc_chain)
    rules.add(
        "nat", svc_chain, "!", "-s", node.cluster_cidr, "-d", _host(vip),
        "-m", "comment", "--comment", f"{name} cluster IP", *match, "-j", "KUBE-MARK-MASQ",
    )  # fmt: skip
    _balance(rules, svc_chain, name, backends, seps)
    for backend, sep in seps.items():
        rules.chain("nat", sep)
        rules.add(
            "nat",
            sep,
            "-s",
            _host(backend.ip),
            "-m",
            "comment",
            "--comment",
            name,
            "-j",
            "KUBE-MARK-MASQ",
        )
        rules.add(
            "nat", sep, "-p", proto, "-m", "comment", "--comment", name, "-m", proto,
            "-j", "DNAT", "--to-destination", _dnat_target(backend),
        )  # fmt: skip
    if node_port is None:
        return
    np_match = ("-p", proto, "-m", proto, "--dport", str(node_port))
    local = [b for b in backends if b.node_name == node.name]
    if service.external_traffic_policy == "Local" and not local:
        rules.add(
            "filter", "KUBE-EXTERNAL-SERVICES",
            "-m", "comment", "--comment", f"{name} has no local endpoints",
            "-m", "addrtype", "--dst-type", "LOCAL", *np_match, "-j", "DROP",
        )  # fmt: skip
        return
    ext_chain = f"KUBE-EXT-{_chain_hash(key)}"
    rules.chain("nat", ext_chain)
    rules.add(
        "nat", "KUBE-NODEPORTS", "-m", "comment", "--comment", name, *np_match, "-j", ext_chain
    )
    if service.external_traffic_policy == "Cluster":
        rules.add(
            "nat", ext_chain,
            "-m", "comment", "--comment", f"masquerade traffic for {name} external destinations",
            "-j", "KUBE-MARK-MASQ",
        )  # fmt: skip
        rules.add("nat", ext_chain, "-j", svc_chain)
        return
    svl_chain = f"KUBE-SVL-{_chain_hash(key)}"
    rules.add(
        "nat", ext_chain, "-s", node.cluster_cidr,
        "-m", "comment", "--comment", f"pod traffic for {name} external destinations",
        "-j", svc_chain,
    )  # fmt: skip
    rules.add(
        "nat", ext_chain,
        "-m", "comment", "--comment", f"masquerade LOCAL traffic for {name} external destinations",
        "-m", "addrtype", "--src-type", "LOCAL", "-j", "KUBE-MARK-MASQ",
    )  # fmt: skip
    rules.add(
        "nat", ext_chain,
        "-m", "comment", "--comment", f"route LOCAL traffic for {name} external destinations",
        "-m", "addrtype", "--src-type", "LOCAL", "-j", svc_chain,
    )  # fmt: skip
    rules.add("nat", ext_chain, "-j", svl_chain)
    rules.chain("nat", svl_chain)
    _balance(rules, svl_chain, name, local, seps)


def restore_text(rules: ProxyRules, live_chains: Mapping[str, Iterable[str]]) -> str:
    """``iptables-restore --noflush`` input: rewrite kube-proxy's chains, drop stale ones.

    Every ``KUBE-*`` chain of ``live_chains`` (table -> chain names now in the kernel)
    that is no longer wanted is flushed and deleted, as kube-proxy does; chains of
    anyone else (stockade's ``STK-*`` among them) are never named, so never touched.
    """
    out: list[str] = []
    for table in TABLES:
        wanted = rules.tables[table]
        stale = sorted(
            c for c in live_chains.get(table, ()) if c.startswith(KUBE_PREFIX) and c not in wanted
        )
        out.append(f"*{table}")
        out += [f":{name} - [0:0]" for name in (*wanted, *stale)]
        for lines in wanted.values():
            out += lines
        out += [f"-X {name}" for name in stale]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def live_kube_chains(save_text: str) -> dict[str, set[str]]:
    """The ``KUBE-*`` chains per table in ``iptables-save`` output."""
    chains: dict[str, set[str]] = {}
    table = ""
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and line[1:].startswith(KUBE_PREFIX):
            chains.setdefault(table, set()).add(line[1:].split(" ", 1)[0])
    return chains
