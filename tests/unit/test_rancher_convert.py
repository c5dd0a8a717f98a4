"""``stockade convert rancher-network``: a Rancher 1.6 environment network policy as
an IsolationPolicy (:mod:`stockade.rancher`).

Tables of inputs and the policies they convert to, every error (with its JSON path,
exit status 2 and nothing on stdout), hostile inputs, a property (whatever valid
Rancher object, the output is an IsolationPolicy the parser accepts), and Rancher's
documented examples evaluated by the engine against the hand-written matrices of
:mod:`e2e.isolation_scenarios`.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.cluster_model import POD_KEYS
from e2e.driver import EngineDriver
from e2e.isolation_scenarios import (
    BY_DEPARTMENT,
    DEPARTMENT_LABELS,
    DEPARTMENTS,
    SAME_NAMESPACE,
    SAME_SERVICE,
    SERVICE_LABELS,
    STACKS,
)
from e2e.scenarios import RelabelPod, Step, parse_table
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.cli import main
from stockade.cnp import MAX_RULES
from stockade.isolation import parse_isolation_policy
from stockade.rancher import (
    Conversion,
    RancherConversionError,
    convert,
    convert_bytes,
    parse_network,
    to_yaml,
)
from stockade.yamlload import MAX_DEPTH, MAX_INPUT_BYTES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "rancher-network.json"

Doc = dict[str, Any]
ALL_PODS: Doc = {"pods": {"namespaceSelector": {}, "podSelector": {}}}
DEPARTMENT = "com.rancher.department"


def _network(default: str, *rules: Any, **extra: Any) -> bytes:
    return json.dumps({**extra, "defaultPolicyAction": default, "policy": list(rules)}).encode()


def _ingress(conversion: Conversion) -> list[Doc]:
    ingress: list[Doc] = conversion.policy["spec"]["ingress"]
    return ingress


def _rule(name: str, action: str, peer: Doc) -> Doc:
    return {"name": name, "action": action, "from": [peer]}


DEFAULT_DENY = _rule("default-deny", "Deny", ALL_PODS)
SAME_NS: Doc = {"namespaces": {"sameAs": "Self"}}

# --------------------------------------------------------------------------- conversions

# (Rancher rules, default, options, the expected ingress rules)
CASES: list[tuple[str, list[Doc], str, dict[str, Any], list[Doc]]] = [
    (
        "department-label-isolation",
        [{"between": {"groupBy": DEPARTMENT}, "action": "allow"}],
        "deny",
        {},
        [
            _rule(
                "policy-0-between-groupby",
                "Accept",
                {"pods": {"sameLabels": [DEPARTMENT], "namespaceSelector": {}}},
            ),
            DEFAULT_DENY,
        ],
    ),
    (
        "within-stack-is-the-namespace",
        [{"within": "stack", "action": "allow"}],
        "deny",
        {},
        [_rule("policy-0-within-stack", "Accept", SAME_NS), DEFAULT_DENY],
    ),
    (
        "within-stack-by-label",
        [{"within": "stack", "action": "allow"}],
        "deny",
        {"stack_label": "io.rancher.stack.name"},
        [
            _rule(
                "policy-0-within-stack",
                "Accept",
                {"pods": {"sameLabels": ["io.rancher.stack.name"]}},
            ),
            DEFAULT_DENY,
        ],
    ),
    (
        "within-service-default-label",
        [{"within": "service", "action": "deny"}],
        "allow",
        {},
        [_rule("policy-0-within-service", "Deny", {"pods": {"sameLabels": ["app"]}})],
    ),
    (
        "within-service-with-stack-label",
        [{"within": "service", "action": "allow"}],
        "deny",
        {"stack_label": "stack", "service_label": "app.kubernetes.io/name"},
        [
            _rule(
                "policy-0-within-service",
                "Accept",
                {"pods": {"sameLabels": ["stack", "app.kubernetes.io/name"]}},
            ),
            DEFAULT_DENY,
        ],
    ),
    (
        "rancher-normal-use-linked-service-stack-then-deny",
        [
            {"within": "linked", "action": "allow"},
            {"within": "service", "action": "allow"},
            {"within": "stack", "action": "allow"},
        ],
        "deny",
        {},
        [
            _rule("policy-1-within-service", "Accept", {"pods": {"sameLabels": ["app"]}}),
            _rule("policy-2-within-stack", "Accept", SAME_NS),
            DEFAULT_DENY,
        ],
    ),
    (
        "order-and-actions-kept",
        [
            {"within": "service", "action": "deny"},
            {"between": {"groupBy": "tier"}, "action": "allow"},
            {"within": "stack", "action": "deny"},
        ],
        "allow",
        {},
        [
            _rule("policy-0-within-service", "Deny", {"pods": {"sameLabels": ["app"]}}),
            _rule(
                "policy-1-between-groupby",
                "Accept",
                {"pods": {"sameLabels": ["tier"], "namespaceSelector": {}}},
            ),
            _rule("policy-2-within-stack", "Deny", SAME_NS),
        ],
    ),
    ("no-rules-default-deny", [], "deny", {}, [DEFAULT_DENY]),
    ("no-rules-default-allow", [], "allow", {}, []),
    (
        "documented-fields-null-are-absent",
        [
            {
                "within": None,
                "between": {"groupBy": "team", "selector": None},
                "action": "allow",
                "from": None,
                "to": None,
                "ports": None,
            }
        ],
        "allow",
        {},
        [
            _rule(
                "policy-0-between-groupby",
                "Accept",
                {"pods": {"sameLabels": ["team"], "namespaceSelector": {}}},
            )
        ],
    ),
]


@pytest.mark.parametrize(
    ("rules", "default", "options", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_conversion_table(
    rules: list[Doc], default: str, options: dict[str, Any], expected: list[Doc]
) -> None:
    conversion = convert_bytes(_network(default, *rules), "net.json", **options)
    assert _ingress(conversion) == expected
    policy = conversion.policy
    assert policy["metadata"] == {"name": "rancher-environment"}
    assert {k: v for k, v in policy["spec"].items() if k != "ingress"} == {
        "tier": "Admin",
        "priority": 100,
        "subject": ALL_PODS,
    }
    parsed = parse_isolation_policy(yaml.safe_load(to_yaml(conversion)))
    assert [r.name for r in parsed.ingress] == [r["name"] for r in expected]
    assert parsed.egress == ()


def test_whole_network_object_is_rancher_department_example() -> None:
    """The network object as Rancher's API prints it (other fields ignored) converts
    to the e2e scenario's policy exactly."""
    data = _network(
        "deny",
        {"between": {"groupBy": DEPARTMENT}, "action": "allow"},
        name="ipsec",
        type="network",
        id="1n5",
        description=None,
        subnets=[{"cidrBlock": "10.42.0.0/16"}],
        metadata={"anything": {"nested": [1, 2]}},
    )
    assert convert_bytes(data, "net.json").policy == DEPARTMENTS
    assert convert_bytes(EXAMPLE.read_bytes(), str(EXAMPLE)).policy == DEPARTMENTS


def test_name_and_priority() -> None:
    conversion = convert_bytes(_network("deny"), "x", name="legacy.env-1", priority=0)
    assert conversion.policy["metadata"] == {"name": "legacy.env-1"}
    assert conversion.policy["spec"]["priority"] == 0
    assert parse_isolation_policy(conversion.policy).priority == 0


def test_yaml_comments_say_what_was_left_out_and_the_default() -> None:
    conversion = convert_bytes(
        _network("allow", {"within": "linked", "action": "allow"}), "net.json"
    )
    assert _ingress(conversion) == []
    text = to_yaml(conversion)
    comments = " ".join(line[2:] for line in text.splitlines() if line.startswith("# "))
    assert "policy[0] (within: linked, allow) is left out" in comments
    assert "as a ClusterNetworkPolicy" in comments
    assert "defaultPolicyAction allow: no last rule" in comments
    assert "goes on to the NetworkPolicy tier" in comments
    assert conversion.warnings == (
        "policy[0]: within: linked (allow) left out, Kubernetes has no links; express each "
        "link as a ClusterNetworkPolicy rule between two selectors (see the comment in the "
        "output)",
    )
    assert yaml.safe_load(text) == conversion.policy
    deny = to_yaml(convert_bytes(_network("deny"), "net.json"))
    assert "defaultPolicyAction allow" not in deny
    assert "left out" not in deny


def test_many_linked_allows_make_one_bounded_warning() -> None:
    linked = {"within": "linked", "action": "allow"}
    stack = {"within": "stack", "action": "allow"}
    conversion = convert_bytes(_network("deny", linked, stack, *[linked] * 20_000), "n")
    assert _ingress(conversion) == [_rule("policy-1-within-stack", "Accept", SAME_NS), DEFAULT_DENY]
    (warning,) = conversion.warnings
    named = ", ".join(f"policy[{i}]" for i in (0, *range(2, 11)))
    assert warning.startswith(f"{named} and 19991 more: within: linked (allow) left out")
    text = to_yaml(conversion)
    assert len(text) < 3000
    comments = " ".join(line[2:] for line in text.splitlines() if line.startswith("# "))
    assert f"{named} and 19991 more (within: linked, allow) are left out" in comments
    assert yaml.safe_load(text) == conversion.policy


def test_rule_limit() -> None:
    """25 ingress rules at most, the default deny counted."""
    stack = {"within": "stack", "action": "allow"}
    assert len(_ingress(convert_bytes(_network("deny", *[stack] * 24), "n"))) == MAX_RULES
    assert len(_ingress(convert_bytes(_network("allow", *[stack] * 25), "n"))) == MAX_RULES
    # Left-out linked allows do not count.
    linked = {"within": "linked", "action": "allow"}
    assert len(_ingress(convert_bytes(_network("deny", *[linked] * 30, *[stack] * 24), "n"))) == 25
    with pytest.raises(RancherConversionError) as info:
        convert_bytes(_network("deny", *[stack] * 25), "net.json")
    assert info.value.lines() == [
        "net.json: policy: converts to 26 ingress rules (the default deny included), more "
        "than the 25 an IsolationPolicy may have"
    ]


# --------------------------------------------------------------------------- errors

LINKED_DENY = (
    "net.json: policy[1].within: linked with action deny has no Kubernetes counterpart "
    "(there are no links), and leaving it out would allow more than Rancher did; remove it "
    "and deny those connections with a ClusterNetworkPolicy rule between the two services' "
    "selectors"
)
UNCONVERTED = (
    "not converted: only rules by within or by between.groupBy are (remove the field, or "
    "write this rule as a ClusterNetworkPolicy)"
)

# (input bytes, the error lines)
ERRORS: list[tuple[str, bytes, list[str]]] = [
    (
        "not-json",
        b"defaultPolicyAction: deny\n",
        ["net.json: line 1, column 1: not valid JSON: Expecting value"],
    ),
    (
        "truncated",
        b'{"defaultPolicyAction": "deny", ',
        [
            "net.json: line 1, column 33: not valid JSON: Expecting property name enclosed in "
            "double quotes"
        ],
    ),
    ("empty", b"", ["net.json: line 1, column 1: not valid JSON: Expecting value"]),
    (
        "not-an-object",
        b"[1, 2]",
        ["net.json: must be a JSON object (Rancher's network), got a list of 2 items"],
    ),
    ("string", b'"deny"', ["net.json: must be a JSON object (Rancher's network), got 'deny'"]),
    (
        "missing-everything",
        b"{}",
        [
            "net.json: defaultPolicyAction: required: allow or deny",
            "net.json: policy: must be a list of rules ([] for none), got nothing",
        ],
    ),
    (
        "bad-default",
        b'{"defaultPolicyAction": "Deny", "policy": []}',
        ["net.json: defaultPolicyAction: must be allow or deny, got 'Deny'"],
    ),
    (
        "default-not-string",
        b'{"defaultPolicyAction": true, "policy": []}',
        ["net.json: defaultPolicyAction: must be a string, got true"],
    ),
    (
        "policy-not-list",
        b'{"defaultPolicyAction": "deny", "policy": {"within": "stack"}}',
        ["net.json: policy: must be a list of rules ([] for none), got a map of 1 key"],
    ),
    (
        "policy-null",
        b'{"defaultPolicyAction": "deny", "policy": null}',
        ["net.json: policy: must be a list of rules ([] for none), got null"],
    ),
    (
        "rule-not-object",
        _network("deny", "stack"),
        ["net.json: policy[0]: must be an object, got 'stack'"],
    ),
    (
        "both-within-and-between",
        _network("deny", {"within": "stack", "between": {"groupBy": "a"}, "action": "allow"}),
        ["net.json: policy[0]: within and between are exclusive, got both"],
    ),
    (
        "neither",
        _network("deny", {"action": "allow"}),
        ["net.json: policy[0]: one of within or between is required"],
    ),
    (
        "unknown-within",
        _network(
            "deny", {"within": "stack", "action": "allow"}, {"within": "foo", "action": "allow"}
        ),
        ["net.json: policy[1].within: must be one of stack, service, linked, got 'foo'"],
    ),
    (
        "within-not-string",
        _network("deny", {"within": ["stack"], "action": "allow"}),
        ["net.json: policy[0].within: must be a string, got a list of 1 item"],
    ),
    (
        "missing-action",
        _network("deny", {"within": "stack"}),
        ["net.json: policy[0].action: required: allow or deny"],
    ),
    (
        "bad-action",
        _network("deny", {"within": "stack", "action": "accept"}),
        ["net.json: policy[0].action: must be allow or deny, got 'accept'"],
    ),
    (
        "unknown-rule-field",
        _network("deny", {"within": "stack", "action": "allow", "Within": 1}),
        ["net.json: policy[0].Within: unknown field"],
    ),
    (
        "unconverted-fields",
        _network(
            "deny",
            {"within": "stack", "action": "allow", "ports": ["80/tcp"], "from": {"selector": "a"}},
        ),
        [f"net.json: policy[0].from: {UNCONVERTED}", f"net.json: policy[0].ports: {UNCONVERTED}"],
    ),
    (
        "between-selector",
        _network("deny", {"between": {"groupBy": "a", "selector": "b=c"}, "action": "allow"}),
        [f"net.json: policy[0].between.selector: {UNCONVERTED}"],
    ),
    (
        "between-unknown-field",
        _network("deny", {"between": {"groupBy": "a", "groupby": "b"}, "action": "allow"}),
        ["net.json: policy[0].between.groupby: unknown field"],
    ),
    (
        "between-not-object",
        _network("deny", {"between": "a", "action": "allow"}),
        ["net.json: policy[0].between: must be an object with groupBy, got 'a'"],
    ),
    (
        "between-no-groupby",
        _network("deny", {"between": {}, "action": "allow"}),
        ["net.json: policy[0].between.groupBy: required: a label key"],
    ),
    (
        "bad-groupby",
        _network("deny", {"between": {"groupBy": "-bad key"}, "action": "allow"}),
        [
            "net.json: policy[0].between.groupBy: '-bad key': not a label key: name part must "
            "consist of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ],
    ),
    (
        "groupby-not-string",
        _network("deny", {"between": {"groupBy": 7}, "action": "allow"}),
        ["net.json: policy[0].between.groupBy: must be a string, got 7"],
    ),
    (
        "linked-deny",
        _network(
            "deny", {"within": "linked", "action": "allow"}, {"within": "linked", "action": "deny"}
        ),
        [LINKED_DENY],
    ),
    (
        "duplicate-key",
        b'{"defaultPolicyAction": "allow", "defaultPolicyAction": "deny"}',
        ["net.json: not valid JSON: duplicate key 'defaultPolicyAction'"],
    ),
    (
        "nan",
        b'{"defaultPolicyAction": "deny", "policy": [], "x": NaN}',
        ["net.json: not valid JSON: NaN is not a JSON number"],
    ),
    (
        "not-utf8",
        b'{"defaultPolicyAction": "d\xffny"}',
        ["net.json: not UTF-8 text (invalid byte 0xff at offset 26)"],
    ),
    ("deep-for-the-parser", b"[" * 200_000, [f"net.json: nested deeper than {MAX_DEPTH} levels"]),
    (
        "deeper-than-the-limit",
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        [f"net.json: nested deeper than {MAX_DEPTH} levels"],
    ),
    (
        "control-characters-escaped",
        _network("deny", {"within": "\x1b[31m", "action": "allow"}),
        ["net.json: policy[0].within: must be one of stack, service, linked, got '\\x1b[31m'"],
    ),
]


@pytest.mark.parametrize(("data", "lines"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors(data: bytes, lines: list[str]) -> None:
    with pytest.raises(RancherConversionError) as info:
        convert_bytes(data, "net.json")
    assert info.value.lines() == lines


def test_at_most_the_depth_limit_is_read() -> None:
    nested = b'{"defaultPolicyAction": "deny", "policy": [], "x": ' + b"[" * (MAX_DEPTH - 2)
    nested += b"]" * (MAX_DEPTH - 2) + b"}"
    assert _ingress(convert_bytes(nested, "n")) == [DEFAULT_DENY]


def test_huge_input_is_refused() -> None:
    data = b" " * (MAX_INPUT_BYTES + 1)
    with pytest.raises(RancherConversionError) as info:
        convert_bytes(data, "big.json")
    assert info.value.lines() == [
        "big.json: input is larger than 64 MiB, the most read from one file"
    ]


def test_a_number_too_long_is_an_error_not_a_crash() -> None:
    data = b'{"defaultPolicyAction": "deny", "policy": [], "id": ' + b"1" * 5000 + b"}"
    with pytest.raises(RancherConversionError) as info:
        convert_bytes(data, "n")
    (line,) = info.value.lines()
    assert line.startswith("n: not valid JSON: Exceeds the limit (4300 digits)")


def test_a_byte_order_mark_is_dropped() -> None:
    assert _ingress(convert_bytes(b"\xef\xbb\xbf" + _network("deny"), "n")) == [DEFAULT_DENY]


def test_many_problems_are_counted_not_listed() -> None:
    data = _network("deny", *[{"within": "nope", "action": "allow"}] * 500)
    with pytest.raises(RancherConversionError) as info:
        convert_bytes(data, "n")
    assert len(info.value.lines()) == 21
    assert info.value.lines()[-1] == "n: and 480 more problems"


@pytest.mark.parametrize(
    ("options", "lines"),
    [
        (
            {"stack_label": "a", "service_label": "a"},
            ["--stack-label: must differ from --service-label, both 'a'"],
        ),
        (
            {"stack_label": "a b"},
            [
                "--stack-label: 'a b': not a label key: name part must consist of alphanumerics, "
                "'-', '_' or '.', starting and ending with an alphanumeric"
            ],
        ),
        (
            {"service_label": "x/"},
            ["--service-label: 'x/': not a label key: name part must be non-empty"],
        ),
        (
            {"name": "Env"},
            [
                "--name: 'Env': must be a DNS-1123 subdomain: lowercase letters, digits, '-' and "
                "'.', starting and ending with a letter or digit"
            ],
        ),
        ({"priority": 1001}, ["--priority: must be between 0 and 1000, got 1001"]),
    ],
)
def test_option_errors(options: dict[str, Any], lines: list[str]) -> None:
    network = parse_network(json.loads(_network("deny")))
    with pytest.raises(RancherConversionError) as info:
        convert(network, **options)
    assert info.value.lines() == lines


# --------------------------------------------------------------------------- the command


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _write(tmp_path: Path, data: bytes, name: str = "net.json") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_command_prints_the_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys, "convert", "rancher-network", "-f", "examples/rancher-network.json"
    )
    assert (code, err) == (0, "")
    assert out.startswith("# An IsolationPolicy converted from a Rancher 1.6 environment")
    assert yaml.safe_load(out) == DEPARTMENTS


def test_command_reads_stdin_and_warns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _network(
        "allow", {"within": "linked", "action": "allow"}, {"within": "stack", "action": "allow"}
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(data.decode()))
    code, out, err = _run(
        capsys,
        "convert",
        "rancher-network",
        "-f",
        "-",
        "--name",
        "legacy",
        "--priority",
        "7",
        "--stack-label",
        "io.rancher.stack",
    )
    assert code == 0
    assert err == (
        "warning: policy[0]: within: linked (allow) left out, Kubernetes has no links; express "
        "each link as a ClusterNetworkPolicy rule between two selectors (see the comment in the "
        "output)\n"
    )
    policy = parse_isolation_policy(yaml.safe_load(out))
    assert (policy.name, policy.priority) == ("legacy", 7)
    assert yaml.safe_load(out)["spec"]["ingress"] == [
        _rule("policy-1-within-stack", "Accept", {"pods": {"sameLabels": ["io.rancher.stack"]}})
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            _network("deny", {"within": "linked", "action": "deny"}),
            "policy[0].within: linked with action deny has no Kubernetes counterpart",
        ),
        (b"\xff\xfe", "not UTF-8 text (invalid byte 0xff at offset 0)"),
        (b"[" * 100_000, f"nested deeper than {MAX_DEPTH} levels"),
        (b"{nope}", "line 1, column 2: not valid JSON: Expecting property name"),
    ],
)
def test_command_errors_exit_2_with_nothing_on_stdout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: bytes, expected: str
) -> None:
    path = _write(tmp_path, data)
    code, out, err = _run(capsys, "convert", "rancher-network", "-f", path)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {path}: {expected}")
    assert "Traceback" not in err


def test_command_file_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _run(capsys, "convert", "rancher-network", "-f", str(tmp_path / "none"))
    assert (code, out, err) == (2, "", f"error: {tmp_path / 'none'}: no such file\n")
    code, out, err = _run(capsys, "convert", "rancher-network", "-f", str(tmp_path))
    assert (code, out, err) == (2, "", f"error: {tmp_path}: is a directory, not a file\n")


def test_command_refuses_an_endless_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "convert", "rancher-network", "-f", "/dev/zero")
    assert (code, out) == (2, "")
    assert err == "error: /dev/zero: input is larger than 64 MiB, the most read from one file\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--stack-label", "a b"], "argument --stack-label: 'a b': not a label key"),
        (["--service-label", ""], "argument --service-label: '': not a label key"),
        (["--name", "UPPER"], "argument --name: 'UPPER': must be a DNS-1123 subdomain"),
        (["--priority", "-1"], "argument --priority: must be between 0 and 1000, got -1"),
        (["--priority", "ten"], "argument --priority: must be a number, got 'ten'"),
    ],
)
def test_command_option_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, out, err = _run(capsys, "convert", "rancher-network", "-f", str(EXAMPLE), *argv)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: stockade convert rancher-network: {expected}")
    assert err.count("\n") == 1


def test_command_same_stack_and_service_label(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys, "convert", "rancher-network", "-f", str(EXAMPLE), "--stack-label", "app"
    )
    assert (code, out) == (2, "")
    assert err == "error: --stack-label: must differ from --service-label, both 'app'\n"


def test_command_needs_a_kind_and_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "convert")[0] == 2
    assert _run(capsys, "convert", "rancher-network")[0] == 2


# --------------------------------------------------------------------------- the property

_KEYS = st.sampled_from(["app", "tier", DEPARTMENT, "example.com/team", "a.b-c_d"])


@st.composite
def rancher_rule(draw: st.DrawFn) -> Doc:
    action = draw(st.sampled_from(["allow", "deny"]))
    if draw(st.booleans()):
        return {"between": {"groupBy": draw(_KEYS)}, "action": action}
    within = draw(st.sampled_from(["stack", "service", "linked"]))
    # A linked deny is refused: only allows of linked are valid.
    return {"within": within, "action": "allow" if within == "linked" else action}


@st.composite
def rancher_network(draw: st.DrawFn) -> tuple[Doc, dict[str, Any]]:
    rules = draw(st.lists(rancher_rule(), max_size=24))
    network = {"defaultPolicyAction": draw(st.sampled_from(["allow", "deny"])), "policy": rules}
    stack = draw(st.sampled_from([None, "io.rancher.stack", "stack"]))
    service = draw(st.sampled_from(["app", "io.rancher.service", "app.kubernetes.io/name"]))
    options: dict[str, Any] = {"stack_label": stack, "service_label": service}
    options["name"] = draw(st.sampled_from(["rancher-environment", "a", "env.prod-1"]))
    options["priority"] = draw(st.integers(0, 1000))
    return network, options


@settings(max_examples=300, deadline=None)
@given(rancher_network())
def test_property_any_valid_network_converts_to_a_valid_policy(
    case: tuple[Doc, dict[str, Any]],
) -> None:
    """Whatever valid Rancher object (at most 24 rules), the YAML printed is an
    IsolationPolicy the parser accepts, with one rule per convertible Rancher rule in
    order, then the default deny."""
    network, options = case
    conversion = convert_bytes(json.dumps(network).encode(), "n", **options)
    policy = parse_isolation_policy(yaml.safe_load(to_yaml(conversion)))
    kept = [(i, r) for i, r in enumerate(network["policy"]) if r.get("within") != "linked"]
    names = [
        f"policy-{i}-" + (f"within-{r['within']}" if "within" in r else "between-groupby")
        for i, r in kept
    ]
    if network["defaultPolicyAction"] == "deny":
        names.append("default-deny")
    assert [r.name for r in policy.ingress] == names
    actions = [{"allow": "Accept", "deny": "Deny"}[r["action"]] for _, r in kept]
    assert [r.action for r in policy.ingress][: len(actions)] == actions
    assert policy.tier == "Admin"
    assert (policy.name, policy.priority) == (options["name"], options["priority"])
    linked = sum(1 for r in network["policy"] if r.get("within") == "linked")
    assert len(conversion.warnings) == (1 if linked else 0)


# --------------------------------------------------------------------------- end to end


def _engine_matrix(labels: tuple[Step, ...], policy: Doc) -> dict[str, dict[str, bool]]:
    driver = EngineDriver()
    try:
        for step in labels:
            assert isinstance(step, RelabelPod)
            driver.relabel_pod(step.key, step.labels)
        driver.apply([copy.deepcopy(policy)])
        observed = driver.matrix(80, "TCP")
    finally:
        driver.close()
    return {s: {d: observed[s][d] for d in POD_KEYS} for s in POD_KEYS}


def test_department_example_gives_the_by_department_matrix() -> None:
    """Rancher's documented label isolation (default deny, allow between groupBy
    com.rancher.department), converted and judged by the engine, is the hand-written
    BY_DEPARTMENT matrix."""
    conversion = convert_bytes(EXAMPLE.read_bytes(), str(EXAMPLE))
    policy = yaml.safe_load(to_yaml(conversion))
    assert _engine_matrix(DEPARTMENT_LABELS, policy) == parse_table(BY_DEPARTMENT)


def test_stack_and_service_isolation_give_the_hand_written_matrices() -> None:
    """within: stack (a stack is a namespace) and within: service (the app label)."""
    stack = convert_bytes(
        _network("deny", {"within": "stack", "action": "allow"}), "n", name="rancher-stacks"
    )
    assert stack.policy == STACKS
    assert _engine_matrix(SERVICE_LABELS, stack.policy) == parse_table(SAME_NAMESPACE)
    service = convert_bytes(
        _network("deny", {"within": "service", "action": "allow"}), "n", name="rancher-stacks"
    )
    assert _engine_matrix(SERVICE_LABELS, service.policy) == parse_table(SAME_SERVICE)


DEPARTMENT_CLUSTER = ROOT / "examples" / "rancher-departments.yaml"


def test_converted_policy_piped_into_matrix(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stockade convert ... | stockade matrix -f - -f cluster.yaml``."""
    code, out, err = _run(capsys, "convert", "rancher-network", "-f", str(EXAMPLE))
    assert (code, err) == (0, "")
    monkeypatch.setattr("sys.stdin", io.StringIO(out))
    code, out, err = _run(
        capsys, "matrix", "-f", "-", "-f", str(DEPARTMENT_CLUSTER), "--port", "80", "-o", "json"
    )
    assert (code, err) == (0, "")
    matrix = json.loads(out)["matrix"]
    allowed = {s: {d for d, ok in row.items() if ok and d != s} for s, row in matrix.items()}
    assert allowed == {
        "stack-one/qa": {"stack-two/qa"},
        "stack-one/engineering": {"stack-three/engineering"},
        "stack-one/unlabelled": set(),
        "stack-two/qa": {"stack-one/qa"},
        "stack-three/engineering": {"stack-one/engineering"},
    }
