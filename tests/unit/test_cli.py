"""The offline CLI: output shapes, colour handling, explanations and bad input."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade import __version__, output
from stockade.cli import main

ROOT = Path(__file__).resolve().parents[2]
THREE_TIER = str(ROOT / "examples" / "three-tier.yaml")

ANSI = "\x1b["

POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}
spec: {{nodeName: {node}}}
status: {{podIP: {ip}, hostIP: {host}}}
"""

DENY_B = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-from-a, namespace: demo}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: a}}}]
      ports: [{protocol: UDP, port: 53}]
"""


def _pod(name: str, ip: str, node: str = "n1", ns: str = "demo", host: str = "172.18.0.2") -> str:
    return POD.format(name=name, ns=ns, node=node, ip=ip, host=host)


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = _run(capsys, *argv, "-o", "json")
    assert (code, err) == (0, "")
    return json.loads(out)


# --------------------------------------------------------------------------- matrix


def test_matrix_json_exact_shape(capsys: pytest.CaptureFixture[str]) -> None:
    """Keys, types, order: sources outer, destinations inner, both sorted."""
    code, out, err = _run(capsys, "matrix", "-f", THREE_TIER, "--port", "8080", "-o", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert list(data) == ["port", "protocol", "matrix"]
    assert data["port"] == 8080
    assert data["protocol"] == "TCP"
    pods = ["shop/backend", "shop/db", "shop/web"]
    assert list(data["matrix"]) == pods
    for src in pods:
        assert list(data["matrix"][src]) == pods
        assert data["matrix"][src][src] is True
    assert data["matrix"]["shop/web"]["shop/backend"] is True
    assert data["matrix"]["shop/db"]["shop/backend"] is False


def test_matrix_defaults_to_tcp_80(capsys: pytest.CaptureFixture[str]) -> None:
    data = _json(capsys, "matrix", "-f", THREE_TIER)
    assert (data["port"], data["protocol"]) == (80, "TCP")


@pytest.mark.parametrize("spelling", ["udp", "Udp", "UDP"])
def test_protocol_is_case_insensitive(capsys: pytest.CaptureFixture[str], spelling: str) -> None:
    data = _json(capsys, "matrix", "-f", THREE_TIER, "--protocol", spelling, "--port", "53")
    assert data["protocol"] == "UDP"


def test_table_piped_has_no_ansi(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Captured stdout is not a terminal: no escape codes, even if FORCE_COLOR is set."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    code, out, err = _run(capsys, "matrix", "-f", THREE_TIER, "--port", "5432")
    assert (code, err) == (0, "")
    assert ANSI not in out
    assert "TCP port 5432" in out
    lines = out.splitlines()
    backend = next(line for line in lines if "shop/backend" in line)
    web = next(line for line in lines if "shop/web" in line)
    # Columns are backend, db, web: backend reaches db and itself, web only itself.
    assert backend.split()[-3:] == ["✓", "✓", "✗"]
    assert web.split()[-3:] == ["✗", "✗", "✓"]
    assert lines[-1].startswith("3 pods, 1 of 6 pairs allowed on TCP port 5432")


def test_table_color_always(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "matrix", "-f", THREE_TIER, "--color", "always")
    assert code == 0
    assert ANSI in out


def test_table_auto_color_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the table is coloured, unless NO_COLOR is set."""

    class Terminal(io.StringIO):
        encoding = "utf-8"

        def isatty(self) -> bool:
            return True

    for no_color, expect_ansi in (("", True), ("1", False)):
        monkeypatch.setenv("NO_COLOR", no_color)
        monkeypatch.setenv("TERM", "xterm")
        term = Terminal()
        monkeypatch.setattr("sys.stdout", term)
        assert main(["matrix", "-f", THREE_TIER]) == 0
        assert (ANSI in term.getvalue()) is expect_ansi


def test_ascii_glyphs_when_the_stream_cannot_encode_check_marks() -> None:
    matrix = {"a/x": {"a/x": True, "a/y": False}, "a/y": {"a/x": True, "a/y": True}}
    text = output.matrix_table(matrix, 80, "TCP", color=False, glyphs=output.ASCII_GLYPHS)
    assert text.isascii()
    assert "X" in text
    assert "2 pods, 1 of 2 pairs allowed" in text


def test_table_with_no_pods(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "empty.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    code, out, _ = _run(capsys, "matrix", "-f", path)
    assert code == 0
    assert "0 pods, 0 of 0 pairs allowed" in out


def test_matrix_includes_host_network_pods_and_skips_inactive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = [
        _pod("a", "10.0.0.1"),
        _pod("node-agent", "172.18.0.2").replace("spec: {", "spec: {hostNetwork: true, "),
        _pod("done", "10.0.0.9").replace("status: {", "status: {phase: Succeeded, "),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: pending, namespace: demo}\n",
    ]
    path = _write(tmp_path, "pods.yaml", "---\n".join(docs))
    data = _json(capsys, "matrix", "-f", path)
    assert list(data["matrix"]) == ["demo/a", "demo/node-agent"]


# --------------------------------------------------------------------------- loading


def test_multi_document_and_list_files_load_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `kind: List` (kubectl get -o yaml) gives the same result as separate documents."""
    docs = [_pod("a", "10.0.0.1"), _pod("b", "10.0.0.2", node="n2"), DENY_B]
    multi = _write(tmp_path, "multi.yaml", "---\n".join(docs))
    listing = {"apiVersion": "v1", "kind": "List", "items": [yaml.safe_load(d) for d in docs]}
    # Block style, the way kubectl prints it.
    as_list = _write(tmp_path, "list.yaml", yaml.safe_dump(listing, default_flow_style=False))
    for port, a_to_b in (("53", True), ("54", False)):
        argv = ("--port", port, "--protocol", "UDP")
        from_multi = _json(capsys, "matrix", "-f", multi, *argv)
        assert from_multi == _json(capsys, "matrix", "-f", as_list, *argv)
        assert from_multi["matrix"] == {
            "demo/a": {"demo/a": True, "demo/b": a_to_b},
            "demo/b": {"demo/a": True, "demo/b": True},
        }


def test_objects_split_across_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pods = _write(tmp_path, "pods.yaml", _pod("a", "10.0.0.1") + "---\n" + _pod("b", "10.0.0.2"))
    policy = _write(tmp_path, "policy.yaml", DENY_B)
    data = _json(capsys, "matrix", "-f", pods, "-f", policy, "--port", "80")
    assert data["matrix"]["demo/a"]["demo/b"] is False


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(_pod("a", "10.0.0.1")))
    data = _json(capsys, "matrix", "-f", "-")
    assert data["matrix"] == {"demo/a": {"demo/a": True}}


def test_unsupported_kinds_are_skipped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\n"
    deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: demo}\n"
    path = _write(tmp_path, "mixed.yaml", "---\n".join([service, _pod("a", "10.0.0.1"), deploy]))
    code, out, err = _run(capsys, "matrix", "-f", path, "-o", "json")
    assert code == 0
    assert json.loads(out)["matrix"] == {"demo/a": {"demo/a": True}}
    # A Service is read (explain can take it as a destination); this one has no spec.
    assert err.splitlines() == [
        f"warning: ignoring {path}: Service demo/web: spec: required",
        f"warning: {path}: ignoring Deployment demo/api (unsupported kind)",
    ]


def test_duplicate_objects_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = _write(tmp_path, "one.yaml", _pod("a", "10.0.0.1"))
    two = _write(tmp_path, "two.yaml", _pod("a", "10.0.0.2"))
    code, _, err = _run(capsys, "matrix", "-f", one, "-f", two)
    assert code == 0
    assert "Pod demo/a is defined more than once; the last one wins" in err


def test_rule_matching_nothing_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    never = """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: never, namespace: demo}
    spec:
      podSelector: {}
      ingress:
        - from:
            - podSelector:
                matchLabels: {app: a}
                matchExpressions: [{key: app, operator: NotIn, values: [a]}]
    """
    path = _write(tmp_path, "never.yaml", textwrap.dedent(never) + "---\n" + _pod("a", "10.0.0.1"))
    code, out, err = _run(capsys, "matrix", "-f", path, "-o", "json")
    assert code == 0
    assert json.loads(out)["matrix"] == {"demo/a": {"demo/a": True}}
    assert err.splitlines() == [
        "warning: NetworkPolicy demo/never: ingress rule 0: every peer is impossible: peer 0 "
        "podSelector requires app In [a] and app NotIn [a]; this rule allows nothing"
    ]


# --------------------------------------------------------------------------- explain


def test_explain_text_names_policy_rule_and_content(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys, "explain", "-f", THREE_TIER, "shop/backend", "shop/db", "--port", "5432"
    )
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == (
        "ALLOWED: shop/backend (10.244.2.20) -> shop/db (10.244.2.30) on TCP port 5432"
    )
    assert "isolated by: shop/db-allow-backend, shop/default-deny-ingress" in out
    assert "allowed by: shop/db-allow-backend, spec.ingress[0]" in out
    assert "from: pods app=backend in namespace shop" in out
    assert "ports: TCP 5432" in out
    assert "egress from shop/backend: allowed (not isolated" in out


def test_explain_text_denied(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "explain", "-f", THREE_TIER, "shop/web", "shop/db", "--port", "5432"
    )
    assert code == 0
    assert out.startswith("DENIED: shop/web")
    assert "ingress to shop/db: DENIED" in out
    assert "no ingress rule of these policies allows it from 10.244.1.10" in out


def test_explain_json_exact(capsys: pytest.CaptureFixture[str]) -> None:
    data = _json(capsys, "explain", "-f", THREE_TIER, "shop/web", "shop/backend", "--port", "8080")
    assert data == {
        "allowed": True,
        "src": "shop/web",
        "dst": "shop/backend",
        "srcIP": "10.244.1.10",
        "dstIP": "10.244.2.20",
        "port": 8080,
        "protocol": "TCP",
        "egress": None,
        "ingress": {
            "pod": "shop/backend",
            "isolatedBy": ["shop/backend-allow-web", "shop/default-deny-ingress"],
            "allowedBy": [{"policy": "shop/backend-allow-web", "direction": "Ingress", "rule": 0}],
        },
        "note": "",
    }


def test_explain_egress_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    egress = """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: dns-only, namespace: demo}
    spec:
      podSelector: {matchLabels: {app: a}}
      egress:
        - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.9.0.0/16]}}]
          ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 8000, endPort: 8080}]
    """
    path = _write(tmp_path, "eg.yaml", _pod("a", "10.0.0.1") + "---\n" + textwrap.dedent(egress))
    data = _json(capsys, "explain", "-f", path, "demo/a", "10.1.2.3", "--port", "8042")
    assert data["egress"] == {
        "pod": "demo/a",
        "isolatedBy": ["demo/dns-only"],
        "allowedBy": [{"policy": "demo/dns-only", "direction": "Egress", "rule": 0}],
    }
    assert data["ingress"] is None
    code, out, _ = _run(capsys, "explain", "-f", path, "demo/a", "10.1.2.3", "--port", "8042")
    assert code == 0
    assert "to: ipBlock 10.0.0.0/8 except 10.9.0.0/16" in out
    assert "ports: UDP 53, TCP 8000-8080" in out
    assert "ingress to 10.1.2.3: allowed (not a pod in the files" in out


def test_explain_own_node_note(capsys: pytest.CaptureFixture[str]) -> None:
    data = _json(capsys, "explain", "-f", THREE_TIER, "shop/web", "172.18.0.2", "--port", "22")
    assert data["allowed"] is True
    assert data["note"] == "a pod and its own node (node-1)"
    assert (data["egress"], data["ingress"]) == (None, None)


def test_explain_ip_of_a_pod_means_the_pod(capsys: pytest.CaptureFixture[str]) -> None:
    data = _json(capsys, "explain", "-f", THREE_TIER, "10.244.2.20", "shop/db", "--port", "5432")
    assert (data["src"], data["allowed"]) == ("shop/backend", True)


def test_explain_family_without_addresses(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("explain", "-f", THREE_TIER, "shop/web", "shop/db", "--port", "80", "--family", "6")
    data = _json(capsys, *argv)
    assert (data["allowed"], data["note"]) == (False, "no IPv6 path")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--version")
    assert (code, out) == (0, f"stockade {__version__}\n")


# --------------------------------------------------------------------------- bad input

BAD_POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: demo}
spec:
  podSelector: {}
  ingress:
    - from: [{ipBlock: {cidr: 10.0.0.0/33}}]
      ports: [{port: 70000}]
"""


def _bad_files(tmp_path: Path) -> dict[str, str]:
    """The files the bad-input cases refer to, by placeholder name."""
    return {
        "dir": str(tmp_path),
        "pods": _write(tmp_path, "pods.yaml", _pod("a", "10.0.0.1")),
        "policy": _write(tmp_path, "policy.yaml", BAD_POLICY),
        "syntax": _write(tmp_path, "syntax.yaml", "kind: Pod\nmetadata:\n  name: x\n   ns: y\n"),
        "scalar": _write(tmp_path, "scalar.yaml", "- a list\n---\n" + _pod("a", "10.0.0.1")),
        "nokind": _write(tmp_path, "nokind.yaml", "metadata: {name: lost}\n"),
        "badip": _write(tmp_path, "badip.yaml", _pod("a", "10.0.0.300")),
        "missing": str(tmp_path / "missing.yaml"),
    }


# name -> (argv, one fragment per expected stderr line, in order); {placeholders}
# are the files of _bad_files.
BAD_INPUT: dict[str, tuple[list[str], list[str]]] = {
    "invalid policy": (
        ["matrix", "-f", "{policy}"],
        [
            "{policy}: NetworkPolicy demo/broken: spec.ingress[0].from[0].ipBlock.cidr:",
            "{policy}: NetworkPolicy demo/broken: spec.ingress[0].ports[0].port:",
        ],
    ),
    "invalid pod": (["matrix", "-f", "{badip}"], ["{badip}: Pod demo/a: status.podIP:"]),
    "missing file": (["matrix", "-f", "{missing}"], ["{missing}: no such file"]),
    "directory": (["matrix", "-f", "{dir}"], ["{dir}: is a directory"]),
    "yaml syntax": (
        ["matrix", "-f", "{syntax}"],
        ["{syntax}: line 4, column 6: not valid YAML"],
    ),
    "not a mapping": (
        ["matrix", "-f", "{scalar}"],
        ["{scalar}: document 1: not a Kubernetes object"],
    ),
    "no kind": (["matrix", "-f", "{nokind}"], ["{nokind}: document 1 (lost): kind: required"]),
    "every problem of every file": (
        ["matrix", "-f", "{policy}", "-f", "{missing}", "-f", "{syntax}"],
        ["{policy}: ", "{policy}: ", "{missing}: ", "{syntax}: "],
    ),
    "unknown pod": (
        ["explain", "-f", "{pods}", "demo/zz", "demo/a", "--port", "80"],
        ["SRC demo/zz: unknown pod (pods in namespace demo: a)"],
    ),
    "unknown namespace and bare name": (
        ["explain", "-f", "{pods}", "a", "nowhere/a", "--port", "80"],
        [
            "SRC 'a': expected ns/pod or an IP address (did you mean demo/a?)",
            "DST nowhere/a: unknown pod (no pods in namespace nowhere in the files)",
        ],
    ),
    "cidr as endpoint": (
        ["explain", "-f", "{pods}", "10.0.0.0/8", "demo/a", "--port", "80"],
        ["SRC '10.0.0.0/8': a single address, not a CIDR"],
    ),
    "port zero": (["matrix", "-f", "{pods}", "--port", "0"], ["argument --port: must be between"]),
    "port too big": (
        ["matrix", "-f", "{pods}", "--port", "65536"],
        ["argument --port: must be between 1 and 65535, got 65536"],
    ),
    "port not a number": (
        ["explain", "-f", "{pods}", "demo/a", "demo/a", "--port", "http"],
        ["argument --port: must be a number 1-65535, got 'http'"],
    ),
    "explain without port": (
        ["explain", "-f", "{pods}", "demo/a", "demo/a"],
        ["the following arguments are required: --port"],
    ),
    "bad protocol": (
        ["matrix", "-f", "{pods}", "--protocol", "icmp"],
        ["argument --protocol: must be one of TCP, UDP, SCTP (any case), got 'icmp'"],
    ),
    "bad family": (["matrix", "-f", "{pods}", "--family", "5"], ["argument --family"]),
    "no command": ([], ["the following arguments are required: COMMAND"]),
    "no file": (["matrix"], ["the following arguments are required: -f/--filename"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """Exit 2, nothing on stdout, one "error:" line per problem naming where it is."""
    files = _bad_files(tmp_path)
    argv, fragments = BAD_INPUT[case]
    code, out, err = _run(capsys, *(arg.format(**files) for arg in argv))
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == len(fragments), err
    for line, fragment in zip(lines, fragments, strict=True):
        assert line.startswith("error: ")
        assert fragment.format(**files) in line


def test_matrix_family_without_addresses(capsys: pytest.CaptureFixture[str]) -> None:
    """IPv4-only pods have no IPv6 path to others (a pod still reaches itself)."""
    data = _json(capsys, "matrix", "-f", THREE_TIER, "--family", "6")
    assert data["matrix"]["shop/db"]["shop/db"] is True
    assert data["matrix"]["shop/web"]["shop/db"] is False
    code, out, _ = _run(capsys, "matrix", "-f", THREE_TIER, "--family", "6")
    assert code == 0
    assert out.splitlines()[-1] == (
        "note: no IPv6 address, so no IPv6 path: shop/backend, shop/db, shop/web"
    )


def test_ascii_stdout_gets_ascii_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stdout that cannot encode the check marks gets + and X instead of failing."""

    class AsciiPipe(io.StringIO):
        encoding = "ascii"

    pipe = AsciiPipe()
    monkeypatch.setattr("sys.stdout", pipe)
    assert main(["matrix", "-f", THREE_TIER, "--port", "5432"]) == 0
    text = pipe.getvalue()
    assert text.isascii()
    assert "1  shop/backend  +  +  X" in text


def test_cluster_network_policies_are_evaluated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ClusterNetworkPolicy takes part in the verdicts; an invalid one is an error,
    as an invalid NetworkPolicy is (never half-used, never silently left out)."""
    good = (
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n"
        "metadata: {name: deny-legacy}\n"
        "spec: {tier: Admin, priority: 10, subject: {namespaces: {}},\n"
        "  egress: [{action: Deny, to: [{networks: [10.0.0.2/32]}]}]}\n"
    )
    bad = (
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n"
        "metadata: {name: bad}\nspec: {tier: Middle, priority: 10, subject: {namespaces: {}}}\n"
    )
    pods = [_pod("a", "10.0.0.1"), _pod("b", "10.0.0.2")]
    path = _write(tmp_path, "cnp.yaml", "---\n".join([good, *pods]))
    code, out, err = _run(capsys, "matrix", "-f", path, "-o", "json")
    assert (code, err) == (0, "")
    assert json.loads(out)["matrix"] == {
        "demo/a": {"demo/a": True, "demo/b": False},
        "demo/b": {"demo/a": True, "demo/b": True},
    }
    broken = _write(tmp_path, "bad.yaml", "---\n".join([good, bad, *pods]))
    code, out, err = _run(capsys, "matrix", "-f", broken, "-o", "json")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"error: {broken}: ClusterNetworkPolicy bad: spec.tier: must be Admin or Baseline, "
        "got 'Middle'"
    ]
