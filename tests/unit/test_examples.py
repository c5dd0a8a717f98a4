"""The bundled examples give exactly the matrices their header comments promise.

Each expectation is written out by hand, pair by pair; the CLI (compiled rule sets,
through ``stockade matrix -o json``) and the independent reference evaluator must
both produce it.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from stockade.cli import load, main
from stockade_lab import reference

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

Grid = dict[str, dict[str, bool]]

T, F = True, False

THREE_TIER_80: Grid = {
    "shop/backend": {"shop/backend": T, "shop/db": F, "shop/web": T},
    "shop/db": {"shop/backend": F, "shop/db": T, "shop/web": T},
    "shop/web": {"shop/backend": F, "shop/db": F, "shop/web": T},
}
THREE_TIER_8080: Grid = {
    "shop/backend": {"shop/backend": T, "shop/db": F, "shop/web": F},
    "shop/db": {"shop/backend": F, "shop/db": T, "shop/web": F},
    "shop/web": {"shop/backend": T, "shop/db": F, "shop/web": T},
}
THREE_TIER_5432: Grid = {
    "shop/backend": {"shop/backend": T, "shop/db": T, "shop/web": F},
    "shop/db": {"shop/backend": F, "shop/db": T, "shop/web": F},
    "shop/web": {"shop/backend": F, "shop/db": F, "shop/web": T},
}
# No policy opens UDP anywhere in shop, so only the diagonal remains.
THREE_TIER_UDP_5432: Grid = {
    "shop/backend": {"shop/backend": T, "shop/db": F, "shop/web": F},
    "shop/db": {"shop/backend": F, "shop/db": T, "shop/web": F},
    "shop/web": {"shop/backend": F, "shop/db": F, "shop/web": T},
}
DEFAULT_DENY: Grid = {
    "locked/a": {"locked/a": T, "locked/b": F, "open/c": F, "open/d": F},
    "locked/b": {"locked/a": F, "locked/b": T, "open/c": F, "open/d": F},
    "open/c": {"locked/a": F, "locked/b": F, "open/c": T, "open/d": T},
    "open/d": {"locked/a": F, "locked/b": F, "open/c": T, "open/d": T},
}
SAME_NAMESPACE: Grid = {
    "team-a/api": {"team-a/api": T, "team-a/worker": T, "team-b/api": F, "team-b/worker": F},
    "team-a/worker": {"team-a/api": T, "team-a/worker": T, "team-b/api": F, "team-b/worker": F},
    "team-b/api": {"team-a/api": F, "team-a/worker": F, "team-b/api": T, "team-b/worker": T},
    "team-b/worker": {"team-a/api": F, "team-a/worker": F, "team-b/api": T, "team-b/worker": T},
}
EXTERNAL_80: Grid = {
    "tools/debug": {"tools/debug": T, "web/cache": T, "web/frontend": T},
    "web/cache": {"tools/debug": T, "web/cache": T, "web/frontend": T},
    "web/frontend": {"tools/debug": T, "web/cache": T, "web/frontend": T},
}
EXTERNAL_443: Grid = {
    "tools/debug": {"tools/debug": T, "web/cache": T, "web/frontend": F},
    "web/cache": {"tools/debug": T, "web/cache": T, "web/frontend": F},
    "web/frontend": {"tools/debug": T, "web/cache": T, "web/frontend": T},
}

# ClusterNetworkPolicy examples (docs/tiers.md): the tiers decide.
ALL_OPEN_LEGACY: Grid = {
    "shop/web": {"shop/web": T, "tools/debug": T, "trusted/app": T},
    "tools/debug": {"shop/web": T, "tools/debug": T, "trusted/app": T},
    "trusted/app": {"shop/web": T, "tools/debug": T, "trusted/app": T},
}
_DNS, _METRICS = "kube-system/coredns", "kube-system/metrics-server"
TENANT_DNS_53: Grid = {
    _DNS: {_DNS: T, _METRICS: T, "tenant-a/app": T, "tenant-b/app": T},
    _METRICS: {_DNS: T, _METRICS: T, "tenant-a/app": T, "tenant-b/app": T},
    "tenant-a/app": {_DNS: T, _METRICS: F, "tenant-a/app": T, "tenant-b/app": T},
    "tenant-b/app": {_DNS: T, _METRICS: F, "tenant-a/app": T, "tenant-b/app": T},
}
TENANT_DNS_443: Grid = {
    _DNS: {_DNS: T, _METRICS: T, "tenant-a/app": T, "tenant-b/app": T},
    _METRICS: {_DNS: T, _METRICS: T, "tenant-a/app": T, "tenant-b/app": T},
    "tenant-a/app": {_DNS: F, _METRICS: F, "tenant-a/app": T, "tenant-b/app": T},
    "tenant-b/app": {_DNS: F, _METRICS: F, "tenant-a/app": T, "tenant-b/app": T},
}
BASELINE_DENY: Grid = {
    "team-a/api": {"team-a/api": T, "team-a/worker": T, "team-b/api": F, "team-b/worker": F},
    "team-a/worker": {"team-a/api": T, "team-a/worker": T, "team-b/api": F, "team-b/worker": F},
    "team-b/api": {"team-a/api": F, "team-a/worker": F, "team-b/api": T, "team-b/worker": F},
    "team-b/worker": {"team-a/api": F, "team-a/worker": F, "team-b/api": F, "team-b/worker": T},
}
_EXPORTER = "monitoring/node-exporter"
DENY_NODES: Grid = {
    _EXPORTER: {_EXPORTER: T, "tenant-a/app": T, "tenant-b/app": T},
    "tenant-a/app": {_EXPORTER: F, "tenant-a/app": T, "tenant-b/app": T},
    "tenant-b/app": {_EXPORTER: F, "tenant-a/app": T, "tenant-b/app": T},
}
_PROM = "monitoring/prometheus"
PASS_9090: Grid = {
    _PROM: {_PROM: T, "tenant-a/app": T, "tenant-b/app": T},
    "tenant-a/app": {_PROM: T, "tenant-a/app": T, "tenant-b/app": F},
    "tenant-b/app": {_PROM: T, "tenant-a/app": F, "tenant-b/app": T},
}
PASS_80: Grid = {
    _PROM: {_PROM: T, "tenant-a/app": F, "tenant-b/app": T},
    "tenant-a/app": {_PROM: T, "tenant-a/app": T, "tenant-b/app": F},
    "tenant-b/app": {_PROM: T, "tenant-a/app": F, "tenant-b/app": T},
}

# IsolationPolicy examples (docs/isolation.md): peers by sameness with the subject.
_S1Q, _S1E, _S1P = "stack-one/qa", "stack-one/eng", "stack-one/plain"
_S2Q, _S3E = "stack-two/qa", "stack-three/eng"
DEPARTMENTS: Grid = {
    _S1E: {_S1E: T, _S1P: F, _S1Q: F, _S3E: T, _S2Q: F},
    _S1P: {_S1E: F, _S1P: T, _S1Q: F, _S3E: F, _S2Q: F},
    _S1Q: {_S1E: F, _S1P: F, _S1Q: T, _S3E: F, _S2Q: T},
    _S3E: {_S1E: T, _S1P: F, _S1Q: F, _S3E: T, _S2Q: F},
    _S2Q: {_S1E: F, _S1P: F, _S1Q: T, _S3E: F, _S2Q: T},
}
_BW, _DB, _W1, _W2 = "blog/web", "shop/db", "shop/web-1", "shop/web-2"
WITHIN_STACK: Grid = {
    _BW: {_BW: T, _DB: F, _W1: F, _W2: F},
    _DB: {_BW: F, _DB: T, _W1: T, _W2: T},
    _W1: {_BW: F, _DB: T, _W1: T, _W2: T},
    _W2: {_BW: F, _DB: T, _W1: T, _W2: T},
}
WITHIN_SERVICE: Grid = {
    _BW: {_BW: T, _DB: F, _W1: F, _W2: F},
    _DB: {_BW: F, _DB: T, _W1: F, _W2: F},
    _W1: {_BW: F, _DB: F, _W1: T, _W2: T},
    _W2: {_BW: F, _DB: F, _W1: T, _W2: T},
}
_OPS, _WA, _WB = "ops/app", "web-a/app", "web-b/app"
PROJECTS: Grid = {
    _OPS: {_OPS: T, _WA: F, _WB: F},
    _WA: {_OPS: F, _WA: T, _WB: F},
    _WB: {_OPS: F, _WA: T, _WB: T},
}
_AD, _AW, _GX, _DNS2 = "acme-db/app", "acme-web/app", "globex/app", "kube-system/dns"
TENANTS: Grid = {
    _AD: {_AD: T, _AW: T, _GX: F, _DNS2: T},
    _AW: {_AD: T, _AW: T, _GX: F, _DNS2: T},
    _GX: {_AD: F, _AW: F, _GX: T, _DNS2: T},
    _DNS2: {_AD: F, _AW: F, _GX: F, _DNS2: T},
}
_LDB, _LWEB, _LWK = "shop/db", "shop/web", "shop/worker"
LINKED: Grid = {
    _LDB: {_LDB: T, _LWEB: T, _LWK: T},
    _LWEB: {_LDB: T, _LWEB: T, _LWK: T},
    _LWK: {_LDB: F, _LWEB: T, _LWK: T},
}

# The Rancher departments' pods, without the converted policy: nothing isolates them.
_RANCHER = (
    "stack-one/engineering",
    "stack-one/qa",
    "stack-one/unlabelled",
    "stack-three/engineering",
    "stack-two/qa",
)
RANCHER_OPEN: Grid = {s: dict.fromkeys(_RANCHER, T) for s in _RANCHER}
# With it (`stockade convert rancher-network -f examples/rancher-network.json`): only
# the same department, across namespaces; the pod without one reaches only itself.
_RE1, _RQ1, _RU1, _RE3, _RQ2 = _RANCHER
RANCHER_BY_DEPARTMENT: Grid = {
    _RE1: {_RE1: T, _RQ1: F, _RU1: F, _RE3: T, _RQ2: F},
    _RQ1: {_RE1: F, _RQ1: T, _RU1: F, _RE3: F, _RQ2: T},
    _RU1: {_RE1: F, _RQ1: F, _RU1: T, _RE3: F, _RQ2: F},
    _RE3: {_RE1: T, _RQ1: F, _RU1: F, _RE3: T, _RQ2: F},
    _RQ2: {_RE1: F, _RQ1: T, _RU1: F, _RE3: F, _RQ2: T},
}

CASES: list[tuple[str, int, str, Grid]] = [
    ("three-tier.yaml", 80, "TCP", THREE_TIER_80),
    ("three-tier.yaml", 8080, "TCP", THREE_TIER_8080),
    ("three-tier.yaml", 5432, "TCP", THREE_TIER_5432),
    ("three-tier.yaml", 5432, "UDP", THREE_TIER_UDP_5432),
    ("default-deny.yaml", 80, "TCP", DEFAULT_DENY),
    ("default-deny.yaml", 53, "UDP", DEFAULT_DENY),
    ("allow-same-namespace.yaml", 80, "TCP", SAME_NAMESPACE),
    ("allow-same-namespace.yaml", 9000, "SCTP", SAME_NAMESPACE),
    ("allow-external-80.yaml", 80, "TCP", EXTERNAL_80),
    ("allow-external-80.yaml", 443, "TCP", EXTERNAL_443),
    ("cnp-legacy-backend.yaml", 443, "TCP", ALL_OPEN_LEGACY),
    ("cnp-tenant-dns.yaml", 53, "UDP", TENANT_DNS_53),
    ("cnp-tenant-dns.yaml", 53, "TCP", TENANT_DNS_53),
    ("cnp-tenant-dns.yaml", 443, "TCP", TENANT_DNS_443),
    ("cnp-baseline-deny.yaml", 80, "TCP", BASELINE_DENY),
    ("cnp-baseline-deny.yaml", 53, "UDP", BASELINE_DENY),
    ("cnp-deny-nodes.yaml", 9100, "TCP", DENY_NODES),
    ("cnp-deny-nodes.yaml", 10250, "TCP", DENY_NODES),
    ("cnp-pass-monitoring.yaml", 9090, "TCP", PASS_9090),
    ("cnp-pass-monitoring.yaml", 80, "TCP", PASS_80),
    ("cnp-linked-services.yaml", 80, "TCP", LINKED),
    ("cnp-linked-services.yaml", 53, "UDP", LINKED),
    ("isolation-rancher-departments.yaml", 80, "TCP", DEPARTMENTS),
    ("isolation-rancher-departments.yaml", 53, "UDP", DEPARTMENTS),
    ("isolation-rancher-stack.yaml", 80, "TCP", WITHIN_STACK),
    ("isolation-rancher-service.yaml", 80, "TCP", WITHIN_SERVICE),
    ("isolation-rancher-service.yaml", 9000, "SCTP", WITHIN_SERVICE),
    ("isolation-projects.yaml", 80, "TCP", PROJECTS),
    ("isolation-tenants.yaml", 80, "TCP", TENANTS),
    ("isolation-tenants.yaml", 53, "UDP", TENANTS),
    ("rancher-departments.yaml", 80, "TCP", RANCHER_OPEN),
]


def _cli_matrix(capsys: pytest.CaptureFixture[str], name: str, port: int, protocol: str) -> Any:
    argv = ["matrix", "-f", str(EXAMPLES / name), "--port", str(port), "--protocol", protocol]
    code = main([*argv, "-o", "json"])
    captured = capsys.readouterr()
    assert (code, captured.err) == (0, "")
    return json.loads(captured.out)


@pytest.mark.parametrize(
    ("name", "port", "protocol", "expected"),
    CASES,
    ids=[f"{name}-{protocol}-{port}" for name, port, protocol, _ in CASES],
)
def test_example_matrix(
    capsys: pytest.CaptureFixture[str], name: str, port: int, protocol: str, expected: Grid
) -> None:
    """The CLI (compiled rule sets) gives the hand-written matrix."""
    result = _cli_matrix(capsys, name, port, protocol)
    assert result == {"port": port, "protocol": protocol, "matrix": expected}


@pytest.mark.parametrize(
    ("name", "port", "protocol", "expected"),
    CASES,
    ids=[f"{name}-{protocol}-{port}" for name, port, protocol, _ in CASES],
)
def test_example_matrix_reference(name: str, port: int, protocol: str, expected: Grid) -> None:
    """The independent reference evaluator agrees with the hand-written matrix."""
    loaded = load([str(EXAMPLES / name)])
    assert (loaded.errors, loaded.warnings) == ([], [])
    cluster = loaded.cluster
    cnps, nodes = cluster.cluster_policies.values(), cluster.nodes.values()
    pods = cluster.active_pods()
    got = {
        s.key: {
            d.key: reference.allowed_with_tiers(cluster, cnps, nodes, s, d, port, protocol)
            for d in pods
        }
        for s in pods
    }
    assert got == expected


def test_every_example_is_covered() -> None:
    """A new example file needs an expectation here."""
    files = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert files == {name for name, _, _, _ in CASES}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_has_header(path: Path) -> None:
    """Every example opens with a comment that names it and states the outcome."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith(f"# {path.name}: ")
    assert "# Expected outcome" in text


def _documented_commands() -> list[str]:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^\s*(stockade (?:matrix|explain|convert) .+)$", readme, flags=re.MULTILINE)


def test_readme_documents_every_example() -> None:
    """examples/README.md shows a command for each example file."""
    commands = " ".join(_documented_commands())
    for path in EXAMPLES.glob("*.yaml"):
        assert f"examples/{path.name}" in commands


@pytest.mark.parametrize("command", _documented_commands())
def test_readme_commands_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """Every command shown in examples/README.md runs as written, from the repo root;
    in a pipeline (``stockade ... | stockade ...``) each command reads the one before."""
    monkeypatch.chdir(ROOT)
    for stage in command.split(" | "):
        argv = shlex.split(stage)
        assert argv[0] == "stockade"
        assert main(argv[1:]) == 0
        captured = capsys.readouterr()
        assert captured.out
        assert captured.err == ""
        monkeypatch.setattr("sys.stdin", io.StringIO(captured.out))


def test_converted_rancher_example(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy converted from rancher-network.json, with rancher-departments.yaml,
    gives the department matrix (compiled rule sets and the reference evaluator)."""
    assert main(["convert", "rancher-network", "-f", str(EXAMPLES / "rancher-network.json")]) == 0
    policy = capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(policy))
    cluster_file = str(EXAMPLES / "rancher-departments.yaml")
    assert main(["matrix", "-f", "-", "-f", cluster_file, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["matrix"] == RANCHER_BY_DEPARTMENT
    monkeypatch.setattr("sys.stdin", io.StringIO(policy))
    loaded = load(["-", cluster_file])
    assert (loaded.errors, loaded.warnings) == ([], [])
    cluster = loaded.cluster
    cnps, nodes = cluster.cluster_policies.values(), cluster.nodes.values()
    pods = cluster.active_pods()
    got = {
        s.key: {
            d.key: reference.allowed_with_tiers(cluster, cnps, nodes, s, d, 80, "TCP") for d in pods
        }
        for s in pods
    }
    assert got == RANCHER_BY_DEPARTMENT


@pytest.mark.parametrize(("port", "allowed"), [(80, True), (443, False)])
def test_external_address_to_frontend(
    capsys: pytest.CaptureFixture[str], port: int, allowed: bool
) -> None:
    """The outside world reaches web/frontend on TCP 80 only, by the ipBlock rule."""
    path = str(EXAMPLES / "allow-external-80.yaml")
    argv = ["explain", "-f", path, "203.0.113.7", "web/frontend", "--port", str(port)]
    assert main([*argv, "-o", "json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["allowed"] is allowed
    assert verdict["egress"] is None
    rules = [{"policy": "web/allow-external-80", "direction": "Ingress", "rule": 0}]
    assert verdict["ingress"]["allowedBy"] == (rules if allowed else [])


def test_node_reaches_its_own_pod(capsys: pytest.CaptureFixture[str]) -> None:
    """db is closed to all but backend, yet its own node (172.18.0.3) reaches it."""
    path = str(EXAMPLES / "three-tier.yaml")
    assert main(["explain", "-f", path, "172.18.0.3", "shop/db", "--port", "5432"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ALLOWED")
    assert "a pod and its own node (node-2)" in out


LEGACY = str(EXAMPLES / "cnp-legacy-backend.yaml")


@pytest.mark.parametrize(
    ("src", "dst", "allowed"),
    [
        ("trusted/app", "203.0.113.50", True),
        ("shop/web", "203.0.113.50", False),
        ("tools/debug", "203.0.113.50", False),
        ("shop/web", "203.0.113.51", True),
    ],
)
def test_legacy_backend_is_denied_to_all_but_trusted(
    capsys: pytest.CaptureFixture[str], src: str, dst: str, allowed: bool
) -> None:
    """The Accept at priority 10 runs before the Deny at priority 20."""
    assert main(["explain", "-f", LEGACY, src, dst, "--port", "443", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["allowed"] is allowed


@pytest.mark.parametrize(
    ("src", "dst", "allowed"),
    [
        ("tenant-a/app", "172.18.0.2", False),  # its own node, judged at INPUT
        ("tenant-a/app", "172.18.0.3", False),
        ("172.18.0.2", "tenant-a/app", True),  # the kubelet reaches its pod
        ("172.18.0.3", "tenant-a/app", True),
    ],
)
def test_tenants_are_denied_the_node_network(
    capsys: pytest.CaptureFixture[str], src: str, dst: str, allowed: bool
) -> None:
    """A `nodes` peer denies every node address, the pod's own node included."""
    path = str(EXAMPLES / "cnp-deny-nodes.yaml")
    assert main(["explain", "-f", path, src, dst, "--port", "10250", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["allowed"] is allowed
