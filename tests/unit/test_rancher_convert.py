"""``stockade convert rancher-network``: Rancher 1.6's environment network policy as an
IsolationPolicy. Tables of inputs and the rules they give, every refusal with its
path, a property (whatever converts parses as a valid IsolationPolicy), and Rancher's
documented label-isolation example judged by the engine: the hand-written matrix of
examples/isolation-rancher-departments.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.cli import main
from stockade.isolation import parse_isolation_policy
from stockade.rancher import ConversionError, Options, convert
from tests.unit.test_examples import DEPARTMENTS

ROOT = Path(__file__).resolve().parents[2]
ALL_PODS: dict[str, Any] = {"pods": {"namespaceSelector": {}, "podSelector": {}}}
DENY_REST = {"name": "default-deny", "action": "Deny", "from": [ALL_PODS]}


CASES: list[tuple[str, Any, Options, list[dict[str, Any]]]] = [
    (
        "label isolation (Rancher's example)",
        {
            "defaultPolicyAction": "deny",
            "policy": [{"between": {"groupBy": "dept"}, "action": "allow"}],
        },
        Options(),
        [
            {
                "name": "policy-0-between-groupby",
                "action": "Accept",
                "from": [{"pods": {"sameLabels": ["dept"], "namespaceSelector": {}}}],
            },
            DENY_REST,
        ],
    ),
    (
        "within stack: a namespace",
        {"defaultPolicyAction": "deny", "policy": [{"within": "stack", "action": "allow"}]},
        Options(),
        [
            {
                "name": "policy-0-within-stack",
                "action": "Accept",
                "from": [{"namespaces": {"sameAs": "Self"}}],
            },
            DENY_REST,
        ],
    ),
    (
        "within stack: a stack label",
        {"defaultPolicyAction": "deny", "policy": [{"within": "stack", "action": "allow"}]},
        Options(stack_label="io.rancher.stack.name"),
        [
            {
                "name": "policy-0-within-stack",
                "action": "Accept",
                "from": [{"pods": {"sameLabels": ["io.rancher.stack.name"]}}],
            },
            DENY_REST,
        ],
    ),
    (
        "within service, default label; then a deny of a group, default allow",
        {
            "defaultPolicyAction": "allow",
            "policy": [
                {"within": "service", "action": "allow"},
                {"between": {"groupBy": "zone"}, "action": "deny"},
            ],
        },
        Options(),
        [
            {
                "name": "policy-0-within-service",
                "action": "Accept",
                "from": [{"pods": {"sameLabels": ["app"]}}],
            },
            {
                "name": "policy-1-between-groupby",
                "action": "Deny",
                "from": [{"pods": {"sameLabels": ["zone"], "namespaceSelector": {}}}],
            },
        ],
    ),
    (
        "within service with a stack label: both keys",
        {"defaultPolicyAction": "DENY", "policy": [{"within": "service", "action": "Allow"}]},
        Options(stack_label="stack", service_label="svc"),
        [
            {
                "name": "policy-0-within-service",
                "action": "Accept",
                "from": [{"pods": {"sameLabels": ["stack", "svc"]}}],
            },
            DENY_REST,
        ],
    ),
    (
        "linked allow is left out; no policy list at all is none",
        {"defaultPolicyAction": "deny", "policy": [{"within": "linked", "action": "allow"}]},
        Options(),
        [DENY_REST],
    ),
    ("an open environment", {"defaultPolicyAction": "allow"}, Options(), []),
]


@pytest.mark.parametrize(("what", "network", "options", "rules"), CASES, ids=[c[0] for c in CASES])
def test_conversion_table(what: str, network: Any, options: Options, rules: list[Any]) -> None:
    result = convert(network, options)
    assert result.policy["spec"]["ingress"] == rules
    policy = parse_isolation_policy(result.policy)
    assert policy.tier == "Admin"
    assert policy.name == options.name


def test_the_notes_say_what_was_left_out() -> None:
    notes = convert(
        {"defaultPolicyAction": "allow", "policy": [{"within": "linked", "action": "allow"}]}
    ).notes
    assert any("policy[0]: within linked (allow) left out" in n for n in notes)
    assert any("defaultPolicyAction allow" in n for n in notes)


REFUSED: list[tuple[Any, Options, list[str]]] = [
    ([], Options(), ["the network must be a JSON object"]),
    ({}, Options(), ["defaultPolicyAction: required: allow or deny"]),
    (
        {"defaultPolicyAction": "maybe"},
        Options(),
        ["defaultPolicyAction: must be allow or deny, got 'maybe'"],
    ),
    ({"defaultPolicyAction": "deny", "policy": {}}, Options(), ["policy: must be a list of rules"]),
    (
        {"defaultPolicyAction": "deny", "policy": [{"within": "foo", "action": "allow"}]},
        Options(),
        ["policy[0].within: must be one of stack, service, linked, got 'foo'"],
    ),
    (
        {
            "defaultPolicyAction": "deny",
            "policy": [{"within": "stack", "between": {"groupBy": "a"}, "action": "allow"}],
        },
        Options(),
        ["policy[0]: needs exactly one of within and between"],
    ),
    (
        {"defaultPolicyAction": "deny", "policy": [{"action": "allow"}]},
        Options(),
        ["policy[0]: needs exactly one of within and between"],
    ),
    (
        {"defaultPolicyAction": "deny", "policy": [{"within": "stack"}]},
        Options(),
        ["policy[0].action: required: allow or deny"],
    ),
    (
        {
            "defaultPolicyAction": "deny",
            "policy": [{"between": {"groupBy": "bad key!"}, "action": "allow"}],
        },
        Options(),
        ["policy[0].between.groupBy: 'bad key!'"],
    ),
    (
        {"defaultPolicyAction": "deny", "policy": [{"between": {"groupBy": 3}, "action": "allow"}]},
        Options(),
        ["policy[0].between.groupBy: must be a label key, got 3"],
    ),
    (
        {
            "defaultPolicyAction": "deny",
            "policy": [{"between": {"groupBy": "a", "x": 1}, "action": "allow"}],
        },
        Options(),
        ["policy[0].between.x: unknown field (groupBy)"],
    ),
    (
        {
            "defaultPolicyAction": "deny",
            "policy": [{"within": "stack", "action": "allow", "ports": [80]}],
        },
        Options(),
        ["policy[0].ports: unknown field (within, between, action)"],
    ),
    (
        {"defaultPolicyAction": "allow", "policy": [{"within": "linked", "action": "deny"}]},
        Options(),
        ["policy[0].within: linked: Kubernetes has no links, and leaving out a deny"],
    ),
    (
        {"defaultPolicyAction": "deny", "policy": [{"within": "stack", "action": "allow"}] * 25},
        Options(),
        ["policy: 26 rules, an IsolationPolicy holds 25"],
    ),
    ({"defaultPolicyAction": "deny"}, Options(stack_label="-x-"), ["--stack-label: '-x-'"]),
    (
        {"defaultPolicyAction": "deny"},
        Options(priority=1001),
        ["--priority: must be 0..1000, got 1001"],
    ),
    (
        {"defaultPolicyAction": 1, "policy": ["x", {"within": "stack", "action": "allow"}]},
        Options(),
        ["defaultPolicyAction: must be allow or deny, got 1", "policy[0]: must be an object"],
    ),
]


@pytest.mark.parametrize(("network", "options", "starts"), REFUSED)
def test_refusals_name_the_path(network: Any, options: Options, starts: list[str]) -> None:
    with pytest.raises(ConversionError) as caught:
        convert(network, options)
    lines = caught.value.lines()
    assert len(lines) == len(starts), lines
    for line, start in zip(lines, starts, strict=True):
        assert line.startswith(start), (line, start)


RULES = st.one_of(
    st.fixed_dictionaries(
        {
            "within": st.sampled_from(["stack", "service", "linked"]),
            "action": st.sampled_from(["allow", "deny"]),
        }
    ).filter(lambda r: not (r["within"] == "linked" and r["action"] == "deny")),
    st.fixed_dictionaries(
        {
            "between": st.fixed_dictionaries(
                {
                    "groupBy": st.sampled_from(
                        ["dept", "com.rancher.department", "example.io/zone", "x"]
                    )
                }
            ),
            "action": st.sampled_from(["allow", "deny"]),
        }
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    rules=st.lists(RULES, max_size=24),
    default=st.sampled_from(["allow", "deny"]),
    stack=st.sampled_from([None, "stack", "io.rancher.stack.name"]),
)
def test_whatever_converts_is_a_valid_isolation_policy(
    rules: list[Any], default: str, stack: str | None
) -> None:
    network = {"defaultPolicyAction": default, "policy": rules}
    result = convert(network, Options(stack_label=stack))
    policy = parse_isolation_policy(yaml.safe_load(yaml.safe_dump(result.policy)))
    kept = [r for r in rules if r.get("within") != "linked"]
    assert len(policy.ingress) == len(kept) + (default == "deny")
    for written, rule in zip(kept, policy.ingress, strict=False):
        assert rule.action == ("Accept" if written["action"] == "allow" else "Deny")


def test_the_command_prints_yaml_that_the_engine_judges_as_rancher_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rancher's label isolation, converted, on the pods of the departments example:
    the hand-written matrix of that example (test_examples.DEPARTMENTS)."""
    assert (
        main(["convert", "rancher-network", "-f", str(ROOT / "examples/rancher-network.json")]) == 0
    )
    out, err = capsys.readouterr()
    assert "within linked (allow) left out" in err
    assert out.startswith("# Converted from a Rancher 1.6")
    converted = tmp_path / "environment.yaml"
    converted.write_text(out)
    example = yaml.safe_load_all((ROOT / "examples/isolation-rancher-departments.yaml").read_text())
    pods = tmp_path / "pods.yaml"
    pods.write_text(yaml.safe_dump_all([d for d in example if d["kind"] != "IsolationPolicy"]))
    assert (
        main(["matrix", "-f", str(pods), "-f", str(converted), "-o", "json", "--port", "80"]) == 0
    )
    grid = json.loads(capsys.readouterr().out)
    assert grid["matrix"] == DEPARTMENTS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "not JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"\xff\xfe", "not UTF-8 (byte 0)"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_unreadable_input_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "network.json"
    path.write_bytes(content)
    assert main(["convert", "rancher-network", "-f", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: {path}: {message}\n"


def test_invalid_input_prints_nothing_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "network.json"
    path.write_text(
        json.dumps({"defaultPolicyAction": "deny", "policy": [{"within": "nope", "action": "x"}]})
    )
    assert main(["convert", "rancher-network", "-f", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"error: {path}: policy[0].action: must be allow or deny, got 'x'" in err
    assert (
        f"error: {path}: policy[0].within: must be one of stack, service, linked, got 'nope'" in err
    )
    assert main(["convert", "rancher-network", "-f", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
