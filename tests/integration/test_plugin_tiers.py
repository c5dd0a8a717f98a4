"""``kubectl stockade`` with ClusterNetworkPolicies and Nodes, against the API server
emulator.

The objects of the tier examples (tests/unit/test_cli_tiers.py) go into the emulator
with the ClusterNetworkPolicy CRD installed; the plugin lists ClusterNetworkPolicies
and Nodes over HTTP and its answers must equal the offline CLI's on the same objects
in a file. Without the CRD (404) the plugin carries on with NetworkPolicies only and
says so once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade import cli, plugin
from stockade_lab.emulator import EmulatorThread
from tests.unit.test_cli_tiers import BASELINE, NODES, PASS, WARN

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.timeout(60)]

Obj = dict[str, Any]
SCENARIOS = {"baseline": BASELINE, "nodes": NODES, "pass": PASS}
PAIRS = {
    "baseline": [
        ("team-a/client", "team-a/api", "80"),
        ("team-b/api", "team-a/api", "80"),
        ("team-a/client", "team-b/api", "80"),
    ],
    "nodes": [
        ("tenant-a/app", "172.18.0.2", "10250"),
        ("172.18.0.2", "tenant-a/app", "8080"),
        ("tenant-a/app", "monitoring/node-exporter", "9100"),
    ],
    "pass": [
        ("monitoring/prometheus", "team-a/api", "9090"),
        ("monitoring/prometheus", "team-b/api", "9090"),
        ("team-a/api", "team-b/api", "9090"),
    ],
}


def _docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def _start(docs: list[Obj], *, cnp_crd: bool = True) -> EmulatorThread:
    thread = EmulatorThread()
    thread.start()
    files = ["crds.yaml", "cnp-crd.yaml"] if cnp_crd else ["crds.yaml"]
    for name in files:
        for crd in yaml.safe_load_all((ROOT / "manifests" / name).read_text()):
            thread.emulator.put_object(crd)
    declared = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    for ns in sorted({d["metadata"].get("namespace") for d in docs} - declared - {None}):
        # The API server wants the namespace first; the files leave it implicit.
        thread.emulator.put_object(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        )
    for doc in docs:
        if doc["kind"] == "ClusterNetworkPolicy" and not cnp_crd:
            continue  # an API server without the CRD has none
        thread.emulator.put_object(doc)
    return thread


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> Iterator[tuple[str, EmulatorThread]]:
    name = str(request.param)
    thread = _start(_docs(SCENARIOS[name]))
    try:
        yield name, thread
    finally:
        thread.stop()


def _kubeconfig(emu: EmulatorThread, tmp_path: Path) -> str:
    return str(emu.write_kubeconfig(tmp_path / "kubeconfig", namespace="default"))


def _file(tmp_path: Path, docs: list[Obj]) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def _run(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("fmt", [["-o", "table", "--color", "never"], ["-o", "json"]])
def test_matrix_equals_the_offline_cli(
    scenario: tuple[str, EmulatorThread],
    tmp_path: Path,
    fmt: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, emu = scenario
    kubeconfig = _kubeconfig(emu, tmp_path)
    offline_file = _file(tmp_path, _docs(SCENARIOS[name]))
    for port in ("80", "9090", "9100"):
        argv = ["matrix", "--port", port, *fmt]
        code, live, err = _run(plugin.main, [*argv, "-A", "--kubeconfig", kubeconfig], capsys)
        assert code == 0, err
        # No NodeRuleSets in this emulator: the plugin says nothing is enforced.
        assert "ClusterNetworkPolicy" not in err
        code, offline, _ = _run(cli.main, [*argv, "-f", offline_file], capsys)
        assert code == 0
        if fmt[1] == "table":
            live = live.replace(
                "note: no NodeRuleSet resource: stockade is not installed, nothing is enforced\n",
                "",
            )
        assert live == offline


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_explain_equals_the_offline_cli(
    scenario: tuple[str, EmulatorThread],
    tmp_path: Path,
    fmt: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, emu = scenario
    kubeconfig = _kubeconfig(emu, tmp_path)
    offline_file = _file(tmp_path, _docs(SCENARIOS[name]))
    for src, dst, port in PAIRS[name]:
        argv = ["explain", src, dst, "--port", port, "-o", fmt]
        code, live, err = _run(plugin.main, [*argv, "--kubeconfig", kubeconfig], capsys)
        assert (code, err) == (0, "")
        code, offline, _ = _run(cli.main, [*argv, "-f", offline_file], capsys)
        assert code == 0
        assert live == offline, (src, dst)
        # The offline output is checked line by line in test_cli_tiers: the live
        # one is that, so the CNPs and Nodes were read and evaluated.


def test_warnings_of_the_live_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Equal priorities and fail-closed rules are warned about, as by the offline CLI."""
    docs = [d for d in _docs(WARN) if d["kind"] != "Node"]  # no duplicates in an API
    emu = _start(docs)
    try:
        kubeconfig = _kubeconfig(emu, tmp_path)
        code, live, err = _run(
            plugin.main, ["matrix", "-A", "-o", "json", "--kubeconfig", kubeconfig], capsys
        )
    finally:
        emu.stop()
    assert code == 0
    assert json.loads(live)["matrix"] == {
        "demo/a": {"demo/a": True, "demo/b": False},
        "demo/b": {"demo/a": False, "demo/b": True},
    }
    warnings = err.splitlines()
    assert len(warnings) == 2, err
    assert warnings[0].startswith("warning: ClusterNetworkPolicy alpha and zeta: both Admin")
    assert warnings[1].startswith(
        "warning: ClusterNetworkPolicy external-names: egress rule 0 (no\\x1b[31mexample)"
    )


def test_without_the_cluster_network_policy_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No CRD: the list is a 404; NetworkPolicies only, said once on stderr."""
    docs = _docs(PASS)
    emu = _start(docs, cnp_crd=False)
    try:
        kubeconfig = _kubeconfig(emu, tmp_path)
        code, live, err = _run(
            plugin.main,
            ["matrix", "-A", "--port", "9090", "-o", "json", "--kubeconfig", kubeconfig],
            capsys,
        )
        assert code == 0
        assert err.splitlines() == [f"warning: {plugin.NO_CNP_API}"]
        without = [d for d in docs if d["kind"] != "ClusterNetworkPolicy"]
        code, offline, _ = _run(
            cli.main,
            ["matrix", "-f", _file(tmp_path, without), "--port", "9090", "-o", "json"],
            capsys,
        )
        assert live == offline
        code, _, err = _run(
            plugin.main,
            [
                "explain",
                "monitoring/prometheus",
                "team-a/api",
                "--port",
                "9090",
                "--kubeconfig",
                kubeconfig,
            ],
            capsys,
        )
        assert code == 0
        assert err.splitlines() == [f"warning: {plugin.NO_CNP_API}"]
    finally:
        emu.stop()
