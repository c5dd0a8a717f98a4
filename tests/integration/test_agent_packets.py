"""The real agent against real kernels with real packets.

Each test builds a small cluster in network namespaces (:mod:`cluster_lab`), lets
the real :class:`~stockade.agent.applier.Applier` write iptables rules and ipsets
into each node's namespace (``iptables-nft`` or ``iptables-legacy``), sends TCP and
UDP probes between pods, nodes and outside hosts, and compares what got through
with the engine's prediction (``stockade.verdict.Dataplane``).

Everything lives in ``stk-*`` namespaces that the fixtures remove; nothing touches
the host's network namespace.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from stockade.agent.applier import Applier, RefusedError
from stockade.agent.backend import Backend
from stockade.agent.executor import SubprocessExecutor
from stockade.agent.render import RenderOptions
from stockade.cluster import load_files
from stockade.compiler import compile_cluster
from stockade.ruleset import NodeRuleSet, PeerMember
from stockade_lab.netlab import Lab, MissingFeatureError, Place
from tests.integration.cluster_lab import (
    FABRIC4,
    FABRIC6,
    TIMEOUT,
    ClusterLab,
    Raw,
    connect,
    exchange,
    foreign_lines,
    ns_doc,
    pod_doc,
    run_agent,
    save_all,
)
from tests.unit.strategies import SHARED_IPS, cluster_docs

pytestmark = pytest.mark.root

BACKENDS: tuple[Backend, ...] = ("nft", "legacy")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(fabric4=FABRIC4, fabric6=FABRIC6) as lab:
        yield lab


def _make(lab: Lab, backend: Backend, *, cut_conntrack: bool = True) -> Generator[ClusterLab]:
    cl = ClusterLab(lab, backend, cut_conntrack=cut_conntrack)
    try:
        yield cl
    finally:
        cl.cleanup()


@pytest.fixture(params=BACKENDS)
def cl(request: pytest.FixtureRequest, lab: Lab) -> Iterator[ClusterLab]:
    """A cluster lab on each backend."""
    yield from _make(lab, request.param)


@pytest.fixture
def cl_nft(lab: Lab) -> Iterator[ClusterLab]:
    """A cluster lab on the nft backend only (the dynamics tests)."""
    yield from _make(lab, "nft")


# --------------------------------------------------------------------------- the cluster

NAMESPACES = [ns_doc("prod", env="prod", team="x"), ns_doc("dev", env="dev"), ns_doc("other")]
PODS = [
    pod_doc(
        "prod", "web", "n1", "10.0.1.10", "fd00::1:10", {"app": "web"}, [("http", 8080, "TCP")]
    ),
    pod_doc(
        "prod",
        "db",
        "n1",
        "10.0.1.11",
        "fd00::1:11",
        {"app": "db"},
        [("http", 80, "TCP"), ("dns", 53, "UDP")],
    ),
    pod_doc(
        "prod", "api", "n2", "10.0.2.10", "fd00::2:10", {"app": "api"}, [("http", 9090, "TCP")]
    ),
    pod_doc("dev", "web", "n2", "10.0.2.11", None, {"app": "web"}, [("http", 80, "TCP")]),
    pod_doc("dev", "tool", "n1", "10.0.1.13", "fd00::1:13", {"app": "tool"}),
    pod_doc("other", "client", "n1", "10.0.1.12", None, {"app": "client"}),
]
BASE: list[Raw] = NAMESPACES + PODS


def policy(namespace: str, name: str, spec: str) -> Raw:
    """A NetworkPolicy whose spec is YAML text."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": yaml.safe_load(spec),
    }


DENY_INGRESS = policy("prod", "deny", "podSelector: {}\npolicyTypes: [Ingress]")
WEB_TO_DB = policy(
    "prod",
    "db-from-web",
    """
podSelector: {matchLabels: {app: db}}
ingress:
- from: [{podSelector: {matchLabels: {app: web}}}]
""",
)

TOOL_IN = policy("dev", "tool-in", "podSelector: {matchLabels: {app: tool}}")

SCENARIOS: dict[str, tuple[list[Raw], list[tuple[int, str, int]]]] = {
    "default-deny-ingress": ([DENY_INGRESS], [(80, "TCP", 4), (53, "UDP", 4)]),
    "allow-by-pod-selector": ([WEB_TO_DB], [(80, "TCP", 4), (53, "UDP", 4)]),
    "allow-by-namespace-selector": (
        [
            policy(
                "prod",
                "db-from-dev",
                """
podSelector: {matchLabels: {app: db}}
ingress:
- from: [{namespaceSelector: {matchLabels: {env: dev}}}]
""",
            )
        ],
        [(80, "TCP", 4)],
    ),
    "namespace-and-pod-selector-in-one-peer": (
        [
            policy(
                "prod",
                "db-from-dev-web",
                """
podSelector: {matchLabels: {app: db}}
ingress:
- from:
  - namespaceSelector: {matchExpressions: [{key: env, operator: In, values: [dev]}]}
    podSelector: {matchLabels: {app: web}}
""",
            ),
            policy(
                "prod",
                "api-from-dev-or-web",
                """
podSelector: {matchLabels: {app: api}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {env: dev}}
  - podSelector: {matchLabels: {app: web}}
""",
            ),
        ],
        [(80, "TCP", 4), (53, "UDP", 4)],
    ),
    "ipblock-with-except": (
        [
            policy(
                "prod",
                "db-from-block",
                """
podSelector: {matchLabels: {app: db}}
ingress:
- from:
  - ipBlock: {cidr: 0.0.0.0/0, except: [10.0.2.0/24, 203.0.113.0/24, 10.0.1.12/32]}
""",
            ),
            policy(
                "other",
                "client-out",
                """
podSelector: {}
policyTypes: [Egress]
egress:
- to:
  - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.10/32]}
  - ipBlock: {cidr: 203.0.113.0/24}
""",
            ),
        ],
        [(80, "TCP", 4), (53, "UDP", 4)],
    ),
    "named-ports": (
        [
            policy(
                "prod",
                "http-in",
                """
podSelector: {}
ingress:
- ports: [{port: http}]
""",
            ),
            policy(
                "other",
                "http-out",
                """
podSelector: {}
policyTypes: [Egress]
egress:
- ports: [{port: http}, {port: dns, protocol: UDP}]
""",
            ),
        ],
        [(80, "TCP", 4), (8080, "TCP", 4), (9090, "TCP", 4), (53, "UDP", 4)],
    ),
    "port-range-endport": (
        [
            policy(
                "prod",
                "range",
                """
podSelector: {}
ingress:
- ports: [{port: 80, endPort: 85}, {protocol: UDP, port: 5353}]
""",
            ),
        ],
        [(80, "TCP", 4), (85, "TCP", 4), (90, "TCP", 4), (5353, "UDP", 4), (53, "UDP", 4)],
    ),
    "egress-default-deny-and-cidr": (
        [
            policy("dev", "deny-out", "podSelector: {}\npolicyTypes: [Egress]"),
            policy(
                "prod",
                "web-out",
                """
podSelector: {matchLabels: {app: web}}
policyTypes: [Egress]
egress:
- to: [{ipBlock: {cidr: 10.0.2.0/24}}, {ipBlock: {cidr: 198.51.100.0/24}}]
  ports: [{port: 80}]
""",
            ),
        ],
        [(80, "TCP", 4), (53, "UDP", 4), (8080, "TCP", 4)],
    ),
    "both-directions": (
        [
            policy(
                "prod",
                "api-both",
                """
podSelector: {matchLabels: {app: api}}
policyTypes: [Ingress, Egress]
ingress:
- from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}]
  ports: [{port: 80}]
egress:
- to: [{podSelector: {matchLabels: {app: db}}}]
- ports: [{port: 53, protocol: UDP}]
""",
            ),
            WEB_TO_DB,
        ],
        [(80, "TCP", 4), (53, "UDP", 4)],
    ),
    "ipv6-dual-stack": (
        [
            policy(
                "prod",
                "v6",
                """
podSelector: {}
ingress:
- from: [{ipBlock: {cidr: "fd00::1:0/112", except: ["fd00::1:13/128"]}}]
- from: [{ipBlock: {cidr: 10.0.0.0/8}}]
  ports: [{port: 53, protocol: UDP}]
- from: [{podSelector: {matchLabels: {app: api}}}]
- from: [{ipBlock: {cidr: "2001:db8::/32"}}]
  ports: [{port: 80}]
""",
            ),
        ],
        [(80, "TCP", 6), (53, "UDP", 6), (80, "TCP", 4), (53, "UDP", 4)],
    ),
}


def _check(cl: ClusterLab, probes: list[tuple[int, str, int]]) -> None:
    failures: list[str] = []
    for port, proto, family in probes:
        failures += cl.differences(port, proto, family)
    assert not failures, "kernel and engine differ:\n" + "\n".join(failures)


def _nontrivial(cl: ClusterLab, probes: list[tuple[int, str, int]]) -> None:
    """The scenario both allows and denies something between pods (or it proves little)."""
    eps = [e for e in cl.endpoints() if e.pod is not None]
    verdicts = {
        cl.predict(s, d, port, proto, family).allowed
        for port, proto, family in probes
        for s in eps
        for d in eps
        if s.ip(family) and d.ip(family)
    }
    assert verdicts == {True, False}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_matches_engine(cl: ClusterLab, scenario: str) -> None:
    policies, probes = SCENARIOS[scenario]
    reports = cl.set_cluster(BASE + policies)
    assert any(r.changed for r in reports.values())
    assert cl.verify() == {}
    _nontrivial(cl, probes)
    _check(cl, probes)


def test_no_policy_allows_everything(cl: ClusterLab) -> None:
    cl.set_cluster(BASE)
    assert all(
        cl.expected(s.label, d.label, 80, "TCP") for s in cl.endpoints() for d in cl.endpoints()
    )
    _check(cl, [(80, "TCP", 4), (53, "UDP", 4), (80, "TCP", 6)])


# --------------------------------------------------------------------------- random clusters


def _lab_friendly(docs: list[Raw]) -> list[Raw]:
    """Drop what the lab cannot build: host-network pods (they would be their node's
    address), pods without a node, and pods on a shared address (one address cannot
    live in two namespaces of one node; the ownership rule has its own tests)."""

    def buildable(d: Raw) -> bool:
        if d.get("kind") != "Pod":
            return True
        spec, status = d.get("spec", {}), d.get("status", {})
        return (
            not spec.get("hostNetwork")
            and bool(spec.get("nodeName"))
            and status.get("podIP") not in SHARED_IPS
        )

    return [d for d in docs if buildable(d)]


RANDOM_PROBES = [(80, "TCP", 4), (53, "UDP", 4), (8080, "TCP", 4), (80, "TCP", 6)]


@pytest.mark.slow
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(docs=cluster_docs(max_pods=6, max_policies=4))
def test_random_clusters_match_engine(docs: list[Raw]) -> None:
    docs = _lab_friendly(docs)
    with Lab(fabric4=FABRIC4, fabric6=FABRIC6) as lab:
        cl = ClusterLab(lab, "nft")
        try:
            cl.set_cluster(docs, strict=False)
            assert cl.verify() == {}
            failures = [
                line
                for port, proto, family in RANDOM_PROBES
                for line in cl.differences(port, proto, family, timeout=0.3)
            ]
            assert not failures, (
                "kernel and engine differ:\n"
                + "\n".join(failures)
                + "\ncluster:\n"
                + yaml.safe_dump_all(docs)
            )
        finally:
            cl.cleanup()


# --------------------------------------------------------------------------- dynamics


def test_unchanged_state_writes_nothing(cl: ClusterLab) -> None:
    # ipBlocks with /32 excepts: ipset prints those members without the prefix
    state = [*BASE, WEB_TO_DB, DENY_INGRESS, *SCENARIOS["ipblock-with-except"][0]]
    cl.set_cluster(state)
    writes = {n: cl.executor(n).writes for n in cl.nodes}
    again = cl.set_cluster(state)
    assert not any(r.changed for r in again.values())
    assert {n: cl.executor(n).writes for n in cl.nodes} == writes
    assert cl.verify() == {}
    # a fresh agent (a restart) reads, finds nothing to do and writes nothing
    for node in cl.nodes:
        fresh = cl.new_applier(node)
        report = fresh.apply(*cl.bundle(node))
        assert not report.changed, report.differences
        ex = fresh.executor
        assert getattr(ex, "writes", None) == 0
        assert fresh.netlink.calls == 0
        assert fresh.verify() == []


def test_pod_churn_is_member_changes_only(cl_nft: ClusterLab) -> None:
    cl = cl_nft
    cl.set_cluster([*BASE, WEB_TO_DB, DENY_INGRESS])
    newcomer = pod_doc("prod", "web2", "n2", "10.0.2.20", "fd00::2:20", {"app": "web"})
    reports = cl.set_cluster([*BASE, newcomer, WEB_TO_DB, DENY_INGRESS])
    assert sum(r.iptables_restores for r in reports.values()) == 0, reports
    assert sum(r.ipset_lines for r in reports.values()) == 0, reports
    assert reports["n1"].member_changes >= 2  # IPv4 and IPv6 address into the web peer set
    assert cl.verify() == {}
    assert cl.expected("prod/web2", "prod/db", 80, "TCP")
    assert cl.lab.probe(cl.pod("prod/web2"), "10.0.1.11", 80, "TCP", TIMEOUT)
    assert cl.lab.probe(cl.pod("prod/web2"), "fd00::1:11", 80, "TCP", TIMEOUT)
    _check(cl, [(80, "TCP", 4), (80, "TCP", 6)])
    # and away again: members only, and the pod's address is out of the set
    reports = cl.set_cluster([*BASE, WEB_TO_DB, DENY_INGRESS])
    assert sum(r.iptables_restores for r in reports.values()) == 0, reports
    assert cl.verify() == {}


ECHO = 7000
WEB4, DB4, CLIENT4, TOOL4 = "10.0.1.10", "10.0.1.11", "10.0.1.12", "10.0.1.13"


def test_established_flow_survives_unrelated_change(cl_nft: ClusterLab) -> None:
    cl = cl_nft
    cl.set_cluster([*BASE, WEB_TO_DB])
    echo = cl.lab.echo_server(cl.pod("prod/db"), ECHO)
    try:
        with connect(cl.lab, cl.pod("prod/web"), DB4, ECHO) as sock:
            assert exchange(sock, b"one\n") == b"one\n"
            reports = cl.set_cluster([*BASE, WEB_TO_DB, TOOL_IN])
            assert reports["n1"].iptables_restores > 0  # a real rule change
            assert exchange(sock, b"two\n") == b"two\n"
            assert exchange(sock, b"three\n") == b"three\n"
    finally:
        echo.close()


@pytest.mark.parametrize("cut", [True, False])
def test_conntrack_cut_of_newly_denied_flows(lab: Lab, cut: bool) -> None:
    gen = _make(lab, "nft", cut_conntrack=cut)
    cl = next(gen)
    try:
        cl.set_cluster(BASE)
        echo = cl.lab.echo_server(cl.pod("prod/db"), ECHO)
        try:
            with (
                connect(cl.lab, cl.pod("other/client"), DB4, ECHO) as denied,
                connect(cl.lab, cl.pod("prod/web"), DB4, ECHO) as allowed,
            ):
                assert exchange(denied, b"a\n") == b"a\n"
                assert exchange(allowed, b"a\n") == b"a\n"
                reports = cl.set_cluster([*BASE, WEB_TO_DB])
                assert not cl.expected("other/client", "prod/db", ECHO, "TCP")
                assert cl.expected("prod/web", "prod/db", ECHO, "TCP")
                assert exchange(allowed, b"b\n") == b"b\n"
                if cut:
                    assert reports["n1"].conntrack_deleted >= 1
                    assert exchange(denied, b"b\n") is None, "a denied flow kept flowing"
                else:
                    # Without the cut, conntrack's ESTABLISHED shortcut keeps the old
                    # flow open although policy now denies it: the reason the option
                    # (and its default, on) exists.
                    assert reports["n1"].conntrack_deleted == 0
                    assert exchange(denied, b"b\n") == b"b\n"
                # new connections follow the policy either way
                assert not cl.lab.probe(cl.pod("other/client"), DB4, 80, "TCP", TIMEOUT)
        finally:
            echo.close()
    finally:
        gen.close()


def _some_set(cl: ClusterLab, node: str, kind: str) -> str:
    applier = cl.appliers[node]
    assert applier.last is not None
    names = [s.name for s in applier.last.rendered.v4.ipsets if s.name.startswith(f"stk-{kind}4")]
    assert names, f"no {kind} set on {node}"
    return names[0]


def test_drift_is_reported_and_repaired(cl: ClusterLab) -> None:
    cl.set_cluster([*BASE, WEB_TO_DB, DENY_INGRESS])
    probes = [(80, "TCP", 4), (80, "TCP", 6)]
    _check(cl, probes)
    # someone flushes our dispatch chain and empties a peer set
    cl.iptables("n1", 4, "-F", "STK-INGRESS")
    cl.iptables("n1", 6, "-F", "STK-INGRESS")
    peers = _some_set(cl, "n1", "peer")
    cl.lab.run(cl.nodes["n1"], ["ipset", "flush", peers])
    # the drift is real: isolated pods are reachable now (and web no longer in the set)
    assert cl.differences(80, "TCP", 4)
    drift = cl.verify()
    assert set(drift) == {"n1"}
    text = "\n".join(drift["n1"])
    assert "IPv4 chain STK-INGRESS: rules differ" in text
    assert "IPv6 chain STK-INGRESS: rules differ" in text
    assert f"set {peers}:" in text
    report = cl.appliers["n1"].resync()
    assert report.changed
    assert cl.verify() == {}
    _check(cl, probes)
    # the FORWARD jump removed: reported and put back
    jump = [
        line
        for line in cl.save("n1", 4).splitlines()
        if line.startswith("-A FORWARD") and line.endswith("-j STK-FORWARD")
    ]
    assert len(jump) == 1
    cl.iptables("n1", 4, "-D", "FORWARD", *shlex.split(jump[0])[2:])
    assert "FORWARD" in "\n".join(cl.verify()["n1"])
    assert cl.differences(80, "TCP", 4)
    cl.appliers["n1"].resync()
    assert cl.verify() == {}
    _check(cl, probes)


def _plant_foreign(cl: ClusterLab, node: str) -> None:
    for family in (4, 6):
        src = "192.0.2.0/24" if family == 4 else "2001:db8:ffff::/48"
        cl.iptables(node, family, "-N", "KUBE-FOO")
        cl.iptables(node, family, "-A", "KUBE-FOO", "-s", src, "-j", "DROP")
        cl.iptables(
            node,
            family,
            "-A",
            "FORWARD",
            "-m",
            "comment",
            "--comment",
            "kubernetes forwarding rules",
            "-j",
            "KUBE-FOO",
        )
        cl.iptables(node, family, "-A", "FORWARD", "-s", src, "-j", "ACCEPT")
    cl.lab.run(cl.nodes[node], ["ipset", "create", "kube-foo", "hash:ip"])
    cl.lab.run(cl.nodes[node], ["ipset", "add", "kube-foo", "192.0.2.1"])


def test_foreign_rules_untouched(cl: ClusterLab) -> None:
    for node in cl.nodes:
        _plant_foreign(cl, node)
    before = {n: save_all(cl.lab, v) for n, v in cl.nodes.items()}
    assert any("KUBE-FOO" in line for line in before["n1"][f"iptables-{cl.backend}-save"])

    def foreign_now() -> dict[str, dict[str, list[str]]]:
        return {n: foreign_lines(save_all(cl.lab, v)) for n, v in cl.nodes.items()}

    expected = {n: foreign_lines(state) for n, state in before.items()}
    cl.set_cluster([*BASE, WEB_TO_DB, DENY_INGRESS])
    assert foreign_now() == expected
    # our jump sits first in FORWARD, before the foreign rules
    forward = [line for line in cl.save("n1", 4).splitlines() if line.startswith("-A FORWARD")]
    assert forward[0].endswith("-j STK-FORWARD"), forward
    _check(cl, [(80, "TCP", 4)])
    cl.iptables("n1", 4, "-F", "STK-INGRESS")
    cl.appliers["n1"].resync()
    assert foreign_now() == expected
    cl.set_cluster([*BASE, WEB_TO_DB])
    assert foreign_now() == expected
    cl.cleanup()
    assert {n: save_all(cl.lab, v) for n, v in cl.nodes.items()} == before


def test_cleanup_leaves_the_node_as_found(cl: ClusterLab) -> None:
    # A node as a cluster has it: the filter table exists (kube-proxy's rules).
    for node in cl.nodes:
        _plant_foreign(cl, node)
    before = {n: save_all(cl.lab, v) for n, v in cl.nodes.items()}
    cl.set_cluster([*BASE, WEB_TO_DB, DENY_INGRESS, *SCENARIOS["named-ports"][0]])
    during = save_all(cl.lab, cl.nodes["n1"])
    assert any("STK-" in line for line in during[f"iptables-{cl.backend}-save"])
    assert any("stk-" in line for line in during["ipset"])
    cl.cleanup()
    after = {n: save_all(cl.lab, v) for n, v in cl.nodes.items()}
    assert after == before
    # connectivity is back to "no policy"
    cl.set_cluster(BASE)
    cl.cleanup()
    _check(cl, [(80, "TCP", 4)])


def test_cleanup_of_a_pristine_node(cl: ClusterLab) -> None:
    """A namespace that never had a filter table keeps only empty built-in chains."""
    before = save_all(cl.lab, cl.nodes["n1"])
    cl.set_cluster([*BASE, WEB_TO_DB])
    cl.cleanup()
    after = save_all(cl.lab, cl.nodes["n1"])
    assert after["ipset"] == before["ipset"]
    for tool, lines in after.items():
        extra = [line for line in lines if line not in before[tool]]
        assert all(
            line in ("*filter", "COMMIT") or (line.startswith(":") and "STK" not in line)
            for line in extra
        ), (tool, extra)
        assert not [line for line in lines if line.startswith("-A")], (tool, lines)


def test_agent_restart_during_probe_loop(cl_nft: ClusterLab, tmp_path: Path) -> None:
    """Fresh agents (in-process and the real command) take over while probes run.

    Between restarts the state alternates between A and B (B adds a policy for
    dev/tool: a new group, new chains, so a real iptables-restore), and the probed
    pairs have the same verdict in both: none of them may flip at any moment.
    """
    cl = cl_nft
    state_a = [*BASE, WEB_TO_DB, DENY_INGRESS]
    state_b = [*state_a, TOOL_IN]
    cl.set_cluster(state_a)
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump_all(state_a))
    web, client, api = cl.pod("prod/web"), cl.pod("other/client"), cl.pod("prod/api")
    allowed: list[tuple[Place, str, int, str]] = [
        (web, DB4, 80, "TCP"),
        (web, "fd00::1:11", 53, "UDP"),
        (client, "10.0.2.11", 80, "TCP"),  # dev/web: not isolated
        (api, CLIENT4, 53, "UDP"),  # other/client: not isolated
    ]
    denied: list[tuple[Place, str, int, str]] = [
        (client, DB4, 80, "TCP"),
        (api, DB4, 53, "UDP"),
        (client, WEB4, 80, "TCP"),
        (web, "10.0.2.10", 80, "TCP"),
    ]
    pairs = [("prod/web", "prod/db"), ("other/client", "dev/web"), ("prod/api", "other/client")]
    for docs in (state_b, state_a):
        cl.set_cluster(docs)
        assert all(cl.expected(s, d, 80, "TCP") for s, d in pairs)
        assert not cl.expected("other/client", "prod/db", 80, "TCP")
        assert not cl.expected("prod/web", "prod/api", 80, "TCP")
    for src, dst, port, proto in allowed:
        assert cl.lab.probe(src, dst, port, proto, TIMEOUT), (src, dst)
    stop = threading.Event()
    wrong: list[str] = []
    rounds = {"allowed": 0, "denied": 0}

    def loop(kind: str, probes: list[tuple[Place, str, int, str]], want: bool) -> None:
        while not stop.is_set():
            got = cl.lab.probe_many(probes, timeout=0.3)
            wrong.extend(
                f"{kind} {p[1:]}: {g}" for p, g in zip(probes, got, strict=True) if g != want
            )
            rounds[kind] += 1
            time.sleep(0.02)

    threads = [
        threading.Thread(target=loop, args=("allowed", allowed, True)),
        threading.Thread(target=loop, args=("denied", denied, False)),
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        changes = 0
        for docs in (state_b, state_a, state_b, state_a):
            cl.appliers = {node: cl.new_applier(node) for node in cl.nodes}  # restarted
            reports = cl.set_cluster(docs)
            changes += sum(r.iptables_restores for r in reports.values())
        assert changes >= 4  # every switch rewrote chains
        for node, v in cl.nodes.items():  # the real command, as a fresh process
            proc = run_agent(
                "apply", "--cluster", str(cluster_file), "--node", node, "--netns", v.ns
            )
            assert proc.returncode == 0, proc.stderr
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not wrong, wrong
    assert rounds["allowed"] >= 5
    assert rounds["denied"] >= 2
    assert cl.verify() == {}


def test_refused_rule_set_keeps_the_last_state(cl: ClusterLab) -> None:
    cl.set_cluster([*BASE, WEB_TO_DB, DENY_INGRESS])
    before = {n: save_all(cl.lab, v) for n, v in cl.nodes.items()}
    node, peer_sets = cl.bundle("n1")
    assert node.peer_sets
    applier = cl.appliers["n1"]
    writes = cl.executor("n1").writes
    with pytest.raises(RefusedError, match="peer sets missing"):
        applier.apply(node, {})  # the rules name PeerSets that are not given
    bad = NodeRuleSet(node.node, node.pods[:0], node.policies, node.peer_sets)
    with pytest.raises(RefusedError):
        applier.apply(bad, peer_sets)  # targets that are not among the node's pods
    assert cl.executor("n1").writes == writes
    assert {n: save_all(cl.lab, v) for n, v in cl.nodes.items()} == before
    assert cl.verify() == {}
    _check(cl, [(80, "TCP", 4), (53, "UDP", 4)])
    # and the agent still takes a good rule set afterwards
    cl.set_cluster([*BASE, WEB_TO_DB])
    assert cl.verify() == {}


SCTP_POLICY = policy(
    "prod",
    "sctp-in",
    """
podSelector: {matchLabels: {app: db}}
ingress:
- from: [{podSelector: {matchLabels: {app: web}}}]
  ports: [{protocol: SCTP, port: 132}, {protocol: TCP, port: 80}]
""",
)


def test_sctp_rules_are_loaded(cl: ClusterLab) -> None:
    cl.set_cluster([*BASE, SCTP_POLICY])
    assert cl.verify() == {}
    for family in (4, 6):
        saved = cl.save("n1", family)
        sctp = [line for line in saved.splitlines() if "-p sctp" in line]
        assert sctp, saved
        assert any("--dport 132" in line for line in sctp), sctp
    _check(cl, [(80, "TCP", 4)])


def test_sctp_packets(cl_nft: ClusterLab) -> None:
    cl = cl_nft
    cl.set_cluster([*BASE, SCTP_POLICY])
    try:
        cl.lab.ask(cl.pod("prod/web"), DB4, 132, "SCTP", TIMEOUT)
    except MissingFeatureError as exc:
        pytest.skip(f"SCTP packet probes need the kernel feature {exc.feature!r}: {exc}")
    _check(cl, [(132, "SCTP", 4), (132, "SCTP", 6)])  # pragma: no cover - needs SCTP


# --------------------------------------------------------------------------- the CLI


def test_cli_apply_verify_cleanup(lab: Lab, tmp_path: Path) -> None:
    cl = ClusterLab(lab, "nft")  # the appliers stay unused: the CLI does the work
    docs: list[Any] = [*BASE, WEB_TO_DB, DENY_INGRESS]
    cl.set_cluster([*NAMESPACES, *PODS])  # pods in the lab, no policy applied
    cl.cleanup()
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump_all(docs))
    for node, v in cl.nodes.items():
        proc = run_agent("apply", "--cluster", str(cluster_file), "--node", node, "--netns", v.ns)
        assert proc.returncode == 0, proc.stderr
        assert f"applied node {node}" in proc.stdout
    # the engine's view of the same file (the in-process agent applies nothing here)
    cl.cluster = load_files([cluster_file]).cluster
    cl.compiled = compile_cluster(cl.cluster)
    _check(cl, [(80, "TCP", 4), (80, "TCP", 6)])
    ns1 = cl.nodes["n1"].ns
    args = ["--cluster", str(cluster_file), "--node", "n1", "--netns", ns1]
    proc = run_agent("verify", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "matches" in proc.stdout
    lab.run(ns1, ["iptables-nft", "-F", "STK-INGRESS"])
    proc = run_agent("verify", *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "STK-INGRESS: rules differ" in proc.stdout
    assert run_agent("apply", *args).returncode == 0
    assert run_agent("verify", *args).returncode == 0
    for v in cl.nodes.values():
        proc = run_agent("cleanup", "--netns", v.ns)
        assert proc.returncode == 0, proc.stderr
        state = save_all(lab, v)
        assert not [line for lines in state.values() for line in lines if "STK-" in line]
        assert not [line for line in state["ipset"] if "stk-" in line]
    assert run_agent("verify", *args).returncode == 1
    # a refused input changes nothing and exits 2
    missing = str(tmp_path / "missing.yaml")
    proc = run_agent("apply", "--cluster", missing, "--node", "n1", "--netns", ns1)
    assert proc.returncode == 2


def test_isolate_new_pods_by_set_members_only(cl_nft: ClusterLab) -> None:
    """A pending pod (--isolate-new-pods) is cut off both ways, by netlink alone."""
    cl = cl_nft
    n1 = cl.nodes["n1"].ns
    cl.appliers["n1"] = Applier(
        SubprocessExecutor(netns=n1),
        netns=n1,
        tools=cl.tools,
        options=RenderOptions(isolate_new_pods=True),
    )
    cl.set_cluster([*BASE, WEB_TO_DB])
    client, dev_web = cl.pod("other/client"), "10.0.2.11"
    assert cl.lab.probe(client, dev_web, 80, "TCP", TIMEOUT)
    echo = cl.lab.echo_server(cl.pod("dev/tool"), ECHO)
    try:
        with connect(cl.lab, client, TOOL4, ECHO) as sock:
            assert exchange(sock, b"a\n") == b"a\n"
            rules, sets = cl.bundle("n1")
            report = cl.appliers["n1"].apply(rules, sets, {CLIENT4: "other/client"})
            assert report.iptables_restores == 0, report
            assert report.ipset_lines == 0, report
            assert report.member_changes == 1
            assert report.conntrack_deleted >= 1
            assert exchange(sock, b"b\n") is None, "a pending pod's flow kept flowing"
        assert cl.verify() == {}
        assert not cl.lab.probe(client, dev_web, 80, "TCP", TIMEOUT)
        assert not cl.lab.probe(cl.pod("dev/web"), CLIENT4, 80, "TCP", TIMEOUT)
        assert not cl.lab.probe(cl.pod("dev/tool"), CLIENT4, 80, "TCP", TIMEOUT)
        # Everyone else is as before.
        assert cl.lab.probe(cl.pod("dev/tool"), dev_web, 80, "TCP", TIMEOUT)
        assert cl.lab.probe(cl.pod("prod/web"), DB4, 80, "TCP", TIMEOUT)
        # Covered: members only again, and the engine's verdicts are back.
        report = cl.appliers["n1"].apply(rules, sets, {})
        assert report.iptables_restores == 0, report
        assert report.member_changes == 1, report
        assert cl.verify() == {}
        assert cl.lab.probe(client, dev_web, 80, "TCP", TIMEOUT)
        _check(cl, [(80, "TCP", 4)])
    finally:
        echo.close()


def test_a_peer_set_outgrowing_maxelem_is_swapped_for_a_bigger_one(cl_nft: ClusterLab) -> None:
    """70,000 members (ipset's usual maxelem is 65,536): grown by a twin and swap."""
    cl = cl_nft
    cl.set_cluster([*BASE, WEB_TO_DB])
    rules, sets = cl.bundle("n1")
    (name,) = rules.peer_sets
    shard = sets[name][0]
    extra = tuple(
        PeerMember(f"big/p{i}", (f"10.{128 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}",))
        for i in range(70_000)
    )
    big = replace(shard, members=(*shard.members, *extra))
    applier = cl.appliers["n1"]
    assert applier.last is not None
    (peer4,) = [s for s in applier.last.rendered.v4.ipsets if s.name.startswith("stk-peer4-")]
    # A twin left behind by a crash, with another maxelem, does not get in the way.
    cl.executor("n1").run(
        ["ipset", "create", f"{peer4.name}-tmp", "hash:ip", "family", "inet", "maxelem", "4"]
    )
    report = applier.apply(rules, {name: [big]})
    assert report.ipset_lines > 70_000, report  # filled as a twin, swapped in
    assert any("outgrows maxelem 65536" in d for d in report.differences), report.differences
    assert cl.verify() == {}
    header = cl.executor("n1").run(["ipset", "list", "-t", peer4.name])
    assert "maxelem 262144" in header
    assert "Number of entries: 70001" in header
    # Policy still holds: web reaches db, a pod outside the set does not.
    assert cl.lab.probe(cl.pod("prod/web"), DB4, 80, "TCP", TIMEOUT)
    assert not cl.lab.probe(cl.pod("other/client"), DB4, 80, "TCP", TIMEOUT)
    # Shrinking by 70,000 is a twin and swap too, sized to the content again.
    report = applier.apply(rules, {name: [shard]})
    assert report.iptables_restores == 0, report
    assert cl.verify() == {}
    assert "maxelem 65536" in cl.executor("n1").run(["ipset", "list", "-t", peer4.name])


def test_conntrack_listing_by_tool_equals_the_netlink_dump(cl_nft: ClusterLab) -> None:
    cl = cl_nft
    cl.set_cluster(BASE)
    table = cl.appliers["n1"].conntrack
    assert table.runner is not None, "the conntrack tool is installed here (scripts/setup.sh)"
    echo = cl.lab.echo_server(cl.pod("prod/db"), ECHO)
    try:
        with connect(cl.lab, cl.pod("other/client"), DB4, ECHO) as sock:
            assert exchange(sock, b"a\n") == b"a\n"
            assert cl.lab.probe(cl.pod("prod/web"), "fd00::2:10", 80, "TCP", TIMEOUT)
            by_tool, by_netlink = table.flows(), table.netlink_flows()
            assert set(by_tool) == set(by_netlink)
            assert any(f.src == CLIENT4 and f.dst == DB4 and f.dport == ECHO for f in by_tool)
            assert any(f.family == 6 and f.dst == "fd00::2:10" for f in by_tool)
    finally:
        echo.close()
