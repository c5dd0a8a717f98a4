"""``kubectl stockade`` against the API server emulator.

The objects of an example go into the emulator (as the API server would hold them,
status included), the plugin reads them over HTTP with a kubeconfig, and its output
must equal the offline ``stockade`` CLI's on the same objects written to a file:
one engine, one formatter. ``status`` is checked on NodeRuleSets carrying the
statuses agents write.
"""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade import cli, plugin
from stockade.cluster import parse_documents
from stockade.compiler import compile_cluster
from stockade.ruleset import node_rule_set_to_dict
from stockade_lab.emulator import EmulatorThread

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "three-tier.yaml"
NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

pytestmark = [pytest.mark.timeout(60)]

Obj = dict[str, Any]

# One pod in a second namespace, so that -n and -A differ.
OTHER: list[Obj] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}},
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "ops", "labels": {"app": "probe"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox:1.36"}]},
        "status": {"phase": "Running", "hostIP": "172.18.0.2", "podIP": "10.244.1.50"},
    },
]


def _docs() -> list[Obj]:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    return docs + copy.deepcopy(OTHER)


def _stamp(delta: float) -> str:
    return (NOW - timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rule_sets(statuses: dict[str, Obj]) -> list[Obj]:
    """The NodeRuleSets the controller would publish, with the given agent statuses."""
    result = parse_documents(_docs())
    assert not result.errors
    compiled = compile_cluster(result.cluster)
    out = []
    for node, rules in sorted(compiled.node_rule_sets.items()):
        obj: Obj = {
            "apiVersion": "stockade.dev/v1alpha1",
            "kind": "NodeRuleSet",
            "metadata": {"name": node},
            "spec": node_rule_set_to_dict(rules),
        }
        if node in statuses:
            obj["status"] = statuses[node]
        out.append(obj)
    return out


APPLIED = {
    "node-1": {"applied": True, "observedGeneration": 1, "lastSync": _stamp(5)},
    "node-2": {"applied": True, "observedGeneration": 1, "lastSync": _stamp(125)},
}


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorThread]:
    thread = EmulatorThread()
    thread.start()
    try:
        # The ClusterNetworkPolicy CRD too: without it the plugin warns that it
        # evaluates NetworkPolicies only (tests/integration/test_plugin_tiers.py).
        for crds in ("crds.yaml", "cnp-crd.yaml"):
            for crd in yaml.safe_load_all((ROOT / "manifests" / crds).read_text()):
                thread.emulator.put_object(crd)
        for doc in _docs():
            thread.emulator.put_object(doc)
        for rs in _rule_sets(APPLIED):
            thread.emulator.put_object(rs)
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def kubeconfig(emu: EmulatorThread, tmp_path: Path) -> str:
    return str(emu.write_kubeconfig(tmp_path / "kubeconfig", namespace="shop"))


@pytest.fixture
def cluster_file(tmp_path: Path) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(_docs()))
    return str(path)


def _run(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------------- matrix


@pytest.mark.parametrize("port", ["80", "5432", "8080"])
@pytest.mark.parametrize("fmt", [["-o", "table", "--color", "never"], ["-o", "json"]])
def test_matrix_all_namespaces_equals_the_offline_cli(
    kubeconfig: str,
    cluster_file: str,
    port: str,
    fmt: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, live, err = _run(
        plugin.main, ["matrix", "-A", "--port", port, "--kubeconfig", kubeconfig, *fmt], capsys
    )
    assert code == 0, err
    assert err == ""
    code, offline, _ = _run(cli.main, ["matrix", "-f", cluster_file, "--port", port, *fmt], capsys)
    assert code == 0
    assert live == offline


def test_matrix_of_one_namespace_is_the_offline_matrix_restricted(
    kubeconfig: str, cluster_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """-n shop (and the context's namespace, shop here) show shop's pods only."""
    _, offline, _ = _run(
        cli.main, ["matrix", "-f", cluster_file, "--port", "80", "-o", "json"], capsys
    )
    full = json.loads(offline)["matrix"]
    assert "ops/probe" in full
    want = {s: {d: ok for d, ok in row.items() if d.startswith("shop/")} for s, row in full.items()}
    want = {s: row for s, row in want.items() if s.startswith("shop/")}
    for scope in (["-n", "shop"], []):
        code, live, err = _run(
            plugin.main, ["--kubeconfig", kubeconfig, "matrix", *scope, "-o", "json"], capsys
        )
        assert code == 0, err
        assert json.loads(live)["matrix"] == want


def test_matrix_notes_a_node_that_has_not_applied(
    emu: EmulatorThread, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = {**APPLIED, "node-2": {"applied": False, "error": "peer set ps-1 is missing"}}
    try:
        for rs in _rule_sets(failed):
            emu.emulator.put_object(rs)
        code, live, _ = _run(
            plugin.main, ["matrix", "--kubeconfig", kubeconfig, "--color", "never"], capsys
        )
        assert code == 0
        assert "note: node node-2: rule set failed" in live
        assert "node-1" not in live.split("note:", 1)[1]
    finally:
        for rs in _rule_sets(APPLIED):
            emu.emulator.put_object(rs)


# --------------------------------------------------------------------------- explain


@pytest.mark.parametrize("output", ["text", "json"])
@pytest.mark.parametrize(
    ("src", "dst", "port"),
    [
        ("shop/web", "shop/db", "5432"),
        ("shop/backend", "shop/db", "5432"),
        ("ops/probe", "shop/web", "80"),
    ],
)
def test_explain_equals_the_offline_cli(
    kubeconfig: str,
    cluster_file: str,
    src: str,
    dst: str,
    port: str,
    output: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["explain", src, dst, "--port", port, "-o", output]
    code, live, err = _run(plugin.main, [*argv, "--kubeconfig", kubeconfig], capsys)
    assert code == 0, err
    code, offline, _ = _run(cli.main, [*argv, "-f", cluster_file], capsys)
    assert code == 0
    assert live == offline


def test_explain_takes_bare_pod_names_in_the_namespace(
    kubeconfig: str, cluster_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, offline, _ = _run(
        cli.main,
        ["explain", "-f", cluster_file, "shop/web", "10.244.2.30", "--port", "5432"],
        capsys,
    )
    for argv in (["web", "10.244.2.30"], ["-n", "shop", "web", "10.244.2.30"]):
        code, live, err = _run(
            plugin.main, ["explain", *argv, "--port", "5432", "--kubeconfig", kubeconfig], capsys
        )
        assert code == 0, err
        assert live == offline


def test_explain_unknown_pod_is_bad_input(
    kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        plugin.main,
        ["explain", "nope", "shop/db", "--port", "1", "--kubeconfig", kubeconfig],
        capsys,
    )
    assert code == 2
    assert out == ""
    assert "SRC shop/nope: unknown pod" in err


# --------------------------------------------------------------------------- status


def test_status_reports_each_node_and_policy(
    emu: EmulatorThread, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = {
        "node-1": APPLIED["node-1"],
        "node-2": {"applied": False, "observedGeneration": 1, "error": "KernelError: boom"},
    }
    try:
        for rs in _rule_sets(failed):
            emu.emulator.put_object(rs)
        code = plugin.main(["status", "-o", "json", "--kubeconfig", kubeconfig], now=NOW)
        report = json.loads(capsys.readouterr().out)
        assert code == 0
        nodes = {n["node"]: n for n in report["nodes"]}
        assert nodes["node-1"]["state"] == "applied"
        assert nodes["node-1"]["lagSeconds"] == 5
        assert nodes["node-2"]["state"] == "failed"
        assert nodes["node-2"]["error"] == "KernelError: boom"
        assert nodes["node-2"]["lagSeconds"] is None
        specs = {rs["metadata"]["name"]: rs["spec"] for rs in _rule_sets({})}
        for name, spec in specs.items():
            assert nodes[name]["policies"] == len(spec["policies"])
        policies = {p["policy"]: p for p in report["policies"]}
        expected: dict[str, list[str]] = {}
        for name, spec in specs.items():
            for pol in spec["policies"]:
                expected.setdefault(pol["policy"]["name"], []).append(name)
        for name, where in expected.items():
            assert policies[name]["nodeNames"] == sorted(where)
            assert policies[name]["applied"] == where.count("node-1")
        assert set(policies) == {
            f"shop/{n}"
            for n in (
                "default-deny-ingress",
                "web-allow-http",
                "backend-allow-web",
                "db-allow-backend",
            )
        }

        code = plugin.main(["status", "--kubeconfig", kubeconfig], now=NOW)
        text = capsys.readouterr().out
        assert code == 0
        assert text.splitlines()[0].split() == [
            "NODE", "STATE", "POLICIES", "PODS", "LAST-SYNC", "LAG", "ERROR",
        ]  # fmt: skip
        assert "1 of 2 nodes applied" in text
        assert "KernelError: boom" in text
    finally:
        for rs in _rule_sets(APPLIED):
            emu.emulator.put_object(rs)


def test_status_lag_in_the_table(kubeconfig: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = plugin.main(["status", "--kubeconfig", kubeconfig], now=NOW)
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:3]}
    assert code == 0
    assert rows["node-1"][5] == "5s"
    assert rows["node-2"][5] == "2m5s"


# --------------------------------------------------------------------------- errors


def test_unreachable_cluster_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    code, out, err = _run(plugin.main, ["status", "--kubeconfig", str(path)], capsys)
    assert code == 1
    assert out == ""
    assert err.startswith(f"error: cannot read the cluster at http://127.0.0.1:{port}")


def test_unknown_context_is_bad_input(kubeconfig: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        plugin.main, ["matrix", "--kubeconfig", kubeconfig, "--context", "nope"], capsys
    )
    assert code == 2
    assert "no context 'nope'" in err
