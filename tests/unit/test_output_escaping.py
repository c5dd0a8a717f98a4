"""No human-readable output prints a manifest's control characters or rich markup raw.

Names, labels and namespaces below carry an ESC colour sequence, a clear-screen
sequence, a terminal-title (OSC) sequence, NUL, a right-to-left override and rich
markup. The model objects are built directly, bypassing validation, as a live
cluster or a future parser change could hand them to the outputs.

With colour on, rich legitimately writes ESC for its own styles, so the checks are
on what could only have come from a name: the exact sequences planted in the
names, and any control character left once rich's own SGR codes are removed.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest

from stockade import output, plugin
from stockade.cli import main
from stockade.cluster import Cluster
from stockade.model import NAMESPACE_NAME_LABEL, Namespace, NetworkPolicy, Peer, Pod, Rule
from stockade.selectors import LabelSelector, Requirement
from stockade.verdict import Dataplane

RED = "\x1b[31m"  # rich writes "bold red" as ESC[1;31m, never this exact sequence
CLEAR = "\x1b[2J"
TITLE = "\x1b]0;pwned\x07"
NUL = "\x00"
RLO = "\u202e"
MARKUP = "[bold red]"
PLANTED = (RED, CLEAR, TITLE, NUL, RLO)

EVIL_NS = f"ns{RED}x"
EVIL_POD = f"{MARKUP}web{RLO}gnp.exe"
EVIL_DB = f"db{NUL}{CLEAR}[bold]"
EVIL_POLICY = f"allow{TITLE}"
EVIL_LABEL = f"v{RED}{RLO}"

# rich's own SGR codes (colour on): ESC [ digits and semicolons m.
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def _raw_controls(text: str, *, color: bool) -> list[str]:
    """Every planted sequence and every unsafe character (but newline) in ``text``.

    With ``color`` rich's SGR codes are removed first, but only after the planted
    sequences were looked for in the text as printed.
    """
    found = [seq for seq in PLANTED if seq in text]
    rest = _SGR.sub("", text) if color else text
    found += [repr(c) for c in rest if (ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F or c == RLO]
    return found


def test_the_detector_catches_raw_names() -> None:
    # So the assertions below can fail: unescaped names are caught in both modes.
    for name in (EVIL_NS, EVIL_POD, EVIL_DB, EVIL_POLICY, EVIL_LABEL):
        assert _raw_controls(f"x {name} y\n", color=False), name
        assert _raw_controls(f"\x1b[1;31mx\x1b[0m {name}\n", color=True), name
    assert _raw_controls("\x1b[1;31m+\x1b[0m ok\n", color=True) == []


def _selector(key: str, value: str) -> LabelSelector:
    return LabelSelector((Requirement(key, "In", (value,)),))


def _cluster() -> Cluster:
    labels = MappingProxyType({"app": EVIL_LABEL})
    namespace = Namespace(
        EVIL_NS, MappingProxyType({NAMESPACE_NAME_LABEL: EVIL_NS, "team": EVIL_LABEL})
    )
    web = Pod(EVIL_NS, EVIL_POD, labels, "node-1", ("10.0.0.1",))
    db = Pod(EVIL_NS, EVIL_DB, MappingProxyType({"app": "db"}), "node-1", ("10.0.0.2",))
    policy = NetworkPolicy(
        namespace=EVIL_NS,
        name=EVIL_POLICY,
        pod_selector=_selector("app", "db"),
        ingress=(Rule(peers=(Peer(pod_selector=_selector("app", EVIL_LABEL)),)),),
        egress=None,
    )
    return Cluster.of([namespace, web, db, policy])


@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("glyphs", [output.UNICODE_GLYPHS, output.ASCII_GLYPHS])
def test_matrix_table_escapes_names_and_markup(color: bool, glyphs: output.Glyphs) -> None:
    cluster = _cluster()
    matrix = Dataplane(cluster).matrix(80, "TCP")
    notes = [f"node {EVIL_DB}: rule set pending"]
    text = output.matrix_table(matrix, 80, "TCP", color=color, glyphs=glyphs, notes=notes)
    assert _raw_controls(text, color=color) == []
    if not color:
        assert "\x1b" not in text
    # The names are there, escaped, and the markup is shown as written.
    assert "ns\\x1b[31mx/[bold red]web\\u202egnp.exe" in text
    assert "db\\x00\\x1b[2J[bold]" in text
    assert "note: node db\\x00\\x1b[2J[bold]: rule set pending" in text


def test_matrix_table_shows_unknown_cells() -> None:
    matrix: dict[str, dict[str, bool | None]] = {
        "a/x": {"a/x": None, "a/y": True},
        "a/y": {"a/x": False, "a/y": True},
    }
    text = output.matrix_table(matrix, 80, "SCTP", color=False)
    assert "?" in text
    assert "? unknown (not measured)" in text
    assert "1 of 2 pairs allowed" in text
    assert "1 of 4 cells unknown (not measured)" in text
    # Without unknown cells neither legend nor summary changes.
    known = output.matrix_table({"a/x": {"a/x": True}}, 80, "TCP", color=False)
    assert "unknown" not in known


def test_matrix_json_is_exact_and_escaped() -> None:
    cluster = _cluster()
    matrix = Dataplane(cluster).matrix(80, "TCP")
    text = output.matrix_json(matrix, 80, "TCP")
    assert _raw_controls(text, color=False) == []
    assert "\\u001b[31m" in text
    assert "\\u202e" in text
    # Faithful: the names come back exactly.
    assert set(json.loads(text)["matrix"]) == {f"{EVIL_NS}/{EVIL_POD}", f"{EVIL_NS}/{EVIL_DB}"}
    assert json.loads(output.matrix_json({"a": {"a": None}}, 80, "SCTP"))["matrix"] == {
        "a": {"a": None}
    }


def test_explain_text_escapes_every_echoed_value() -> None:
    cluster = _cluster()
    web = cluster.pods[f"{EVIL_NS}/{EVIL_POD}"]
    db = cluster.pods[f"{EVIL_NS}/{EVIL_DB}"]
    verdict = Dataplane(cluster).verdict(web, db, 80, "TCP")
    assert verdict.allowed
    text = output.explain_text(verdict, cluster)
    assert _raw_controls(text, color=False) == []
    assert "allow\\x1b]0;pwned\\x07" in text  # the policy name
    assert "app=v\\x1b[31m\\u202e" in text  # the rule's selector
    assert "[bold red]web" in text
    assert text.count("\n") == len(text.splitlines())  # newlines between lines survive


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# YAML's double-quoted escapes give the control characters: \e ESC, \0 NUL, \a BEL.
_EVIL_YAML = """\
apiVersion: v1
kind: Service
metadata: {name: "svc\\e[31m\\e[2J\\u202e", namespace: "ns\\0"}
---
apiVersion: v1
kind: Pod
metadata: {name: "p\\e]0;pwned\\a", namespace: demo}
spec: {nodeName: n1}
status: {podIP: 10.0.0.9}
"""


def test_cli_warning_and_error_lines_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "evil.yaml", _EVIL_YAML)
    code = main(["explain", "-f", path, f"demo/{MARKUP}x{RED}{RLO}", "10.0.0.1", "--port", "80"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("warning: ")  # the Service is skipped with a warning
    assert "\nerror: " in err  # and the source is an unknown pod (or its name invalid)
    assert _raw_controls(err, color=False) == []
    assert "\\x1b[31m" in err
    assert "\\u202e" in err


def test_cli_matrix_table_stays_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "evil.yaml", _EVIL_YAML)
    for color in ("always", "never"):
        main(["matrix", "-f", path, "--color", color])
        out, err = capsys.readouterr()
        assert _raw_controls(out, color=color == "always") == []
        assert _raw_controls(err, color=False) == []


def test_plugin_status_columns_are_escaped() -> None:
    rule_set = {
        "metadata": {"name": f"node{RED}", "generation": 2},
        "spec": {
            "node": f"node{RED}",
            "policies": [{"policy": {"name": f"{EVIL_NS}/{EVIL_POLICY}"}}],
        },
        "status": {"applied": False, "observedGeneration": 2, "error": f"boom{CLEAR}{NUL}"},
    }
    now = datetime(2024, 1, 1, tzinfo=UTC)
    report = plugin.status_report([rule_set], [], now)
    text = plugin.status_text(report)
    assert _raw_controls(text, color=False) == []
    assert "node\\x1b[31m" in text
    assert "boom\\x1b[2J\\x00" in text
    # Columns stay aligned on the escaped width.
    header, row = text.splitlines()[:2]
    assert row.index("failed") == header.index("STATE")
    notes = plugin.enforcement_notes([rule_set], {f"node{RED}"})
    table = output.matrix_table({"a/b": {"a/b": True}}, 80, "TCP", color=False, notes=notes)
    assert _raw_controls(table, color=False) == []
