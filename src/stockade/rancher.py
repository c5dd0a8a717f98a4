"""Rancher 1.6 environment network policy to an IsolationPolicy (``stockade convert``).

Rancher 1.6 (Cattle) kept one network policy per environment, on the environment's
network object: ``defaultPolicyAction`` (``allow`` or ``deny``) and ``policy``, an
ordered list of rules, each ``{"action": "allow"|"deny", "within": "stack"|"service"|
"linked"}`` or ``{"action": ..., "between": {"groupBy": LABELKEY}}``. The first rule
that matches a connection between two containers decides it; none matching, the
default does. The whole network object may be given (``name``, ``type``, ``id`` and
its other fields are ignored), but a rule's fields are checked strictly: a field
this module does not know is an error, and so are the fields Rancher's API lists
for a rule but this conversion does not express (``from``, ``to``, ``ports``,
``between.selector``); such a field given as ``null`` counts as absent, as Rancher's
API prints unset fields.

The conversion is one IsolationPolicy (:mod:`stockade.isolation`):

* ``metadata.name`` the given name (default ``rancher-environment``), tier Admin,
  the given priority (default 100), subject every pod
  (``pods: {namespaceSelector: {}, podSelector: {}}``);
* ingress rules only, since Rancher judged a connection at its destination, one
  per Rancher rule in the order written, named
  ``policy-<i>-<within-stack|within-service|between-groupby>`` (``i``
  the rule's index in ``policy``), ``allow`` becoming Accept and ``deny`` Deny;
* ``within: stack``: a stack is a namespace, so ``namespaces: {sameAs: Self}``; with
  a stack label (``--stack-label KEY``: stacks are labels inside namespaces) pods of
  the same value of KEY in the destination's namespace, ``pods: {sameLabels: [KEY]}``;
* ``within: service``: pods of the same value of the service label (default
  ``app``) in the destination's namespace, ``pods: {sameLabels: [SERVICE]}``; with a
  stack label, ``pods: {sameLabels: [STACK, SERVICE]}``;
* ``between: {groupBy: KEY}``: pods with the same value of KEY anywhere in the
  environment, that is the cluster: ``pods: {sameLabels: [KEY], namespaceSelector: {}}``;
* ``within: linked``: Kubernetes has no links. An ``allow`` is left out, with one
  warning and one comment in the output for all such rules: what it allowed is then decided by the
  rules after it and the default, so the result allows no more than Rancher did,
  possibly less (express each link as an ordinary ClusterNetworkPolicy rule from
  the linking pods to the linked ones). A ``deny`` cannot be left out without
  allowing more than Rancher did: it is an error;
* ``defaultPolicyAction: deny``: a last rule ``default-deny``, Deny from every pod;
  ``allow``: no last rule, so traffic no rule decides goes on to the NetworkPolicy
  tier (and is allowed where no NetworkPolicy isolates the pod), as the output's
  comment says.

More than 25 ingress rules (an IsolationPolicy's limit, as a
ClusterNetworkPolicy's) is an error. The input is read with the limits of every
other input (:data:`stockade.yamlload.MAX_INPUT_BYTES`, strict UTF-8, at most
:data:`stockade.yamlload.MAX_DEPTH` levels of nesting), as JSON: duplicate keys,
``NaN`` and the like are errors. Every error is a :class:`RancherConversionError`
listing each problem with its JSON path (``policy[2].within: ...``).

Purely computational: the caller reads the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import yaml

from stockade.cnp import ACCEPT, ADMIN, DENY, MAX_RULES, PRIORITY_MAX, PRIORITY_MIN
from stockade.errors import FieldError, InvalidObjectError, ObjectRef
from stockade.isolation import API_VERSION, KIND, SELF
from stockade.model import key_path
from stockade.safetext import short
from stockade.validation import dns1123_subdomain, label_key
from stockade.yamlload import MAX_DEPTH, MAX_INPUT_BYTES, MIB

DEFAULT_NAME: Final = "rancher-environment"
DEFAULT_PRIORITY: Final = 100
DEFAULT_SERVICE_LABEL: Final = "app"

STACK: Final = "stack"
SERVICE: Final = "service"
LINKED: Final = "linked"
WITHIN: Final = (STACK, SERVICE, LINKED)
ALLOW: Final = "allow"
DENY_ACTION: Final = "deny"
RANCHER_ACTIONS: Final = {ALLOW: ACCEPT, DENY_ACTION: DENY}

#: The fields of a rule and of its ``between`` that Rancher's API documents but this
#: conversion does not express: given (not null), they are errors, never ignored.
UNCONVERTED_RULE_FIELDS: Final = ("from", "to", "ports")
UNCONVERTED_BETWEEN_FIELDS: Final = ("selector",)
_RULE_FIELDS: Final = ("action", "within", "between", *UNCONVERTED_RULE_FIELDS)
_BETWEEN_FIELDS: Final = ("groupBy", *UNCONVERTED_BETWEEN_FIELDS)

#: At most this many problems are listed; the rest are counted.
MAX_PROBLEMS: Final = 20

DEFAULT_DENY_RULE: Final = "default-deny"
_BOM: Final = b"\xef\xbb\xbf"


class RancherConversionError(InvalidObjectError):
    """A Rancher network object (or conversion option) that cannot be converted.

    ``errors`` has one :class:`~stockade.errors.FieldError` per problem, its path
    the JSON path in the input (``policy[2].within``) or the option (``--name``).
    """

    def __init__(self, errors: list[FieldError], source: str | None = None) -> None:
        super().__init__(ObjectRef("Rancher network", None, source or "-"), errors, source)

    def lines(self) -> list[str]:
        """One line per problem: ``[source: ][path: ]message``."""
        prefix = f"{self.source}: " if self.source else ""
        return [
            f"{prefix}{err.path}: {err.message}" if err.path else f"{prefix}{err.message}"
            for err in self.errors
        ]


@dataclass(frozen=True, slots=True)
class RancherRule:
    """One rule of ``policy``: its index, ``allow``/``deny``, and ``within`` or the
    ``between.groupBy`` label key (exactly one of the two is set)."""

    index: int
    action: str
    within: str | None = None
    group_by: str | None = None

    @property
    def kind(self) -> str:
        """``within-stack``, ``within-service``, ``within-linked`` or ``between-groupby``."""
        return f"within-{self.within}" if self.within else "between-groupby"


@dataclass(frozen=True, slots=True)
class RancherNetwork:
    """The parsed network policy: the default action and the ordered rules."""

    default_action: str
    rules: tuple[RancherRule, ...]


@dataclass(frozen=True, slots=True)
class Conversion:
    """The IsolationPolicy as plain data, the comments its YAML opens with, and the
    warnings for stderr (what was left out)."""

    policy: dict[str, Any]
    comments: tuple[str, ...]
    warnings: tuple[str, ...]


# --------------------------------------------------------------------------- reading


def load_json(data: bytes, source: str) -> Any:
    """The JSON value of ``data`` (bytes as read, at most MAX_INPUT_BYTES + 1).

    Raises :class:`RancherConversionError` for an input over the size limit, not
    UTF-8, not JSON (with the line and column), with a duplicate key, a
    non-finite number, or nested deeper than MAX_DEPTH.
    """
    if len(data) > MAX_INPUT_BYTES:
        _fail(
            "",
            f"input is larger than {MAX_INPUT_BYTES // MIB} MiB, the most read from one file",
            source,
        )
    skipped = len(_BOM) if data.startswith(_BOM) else 0
    body = data[skipped:]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(
            "",
            f"not UTF-8 text (invalid byte 0x{body[exc.start]:02x} at offset "
            f"{exc.start + skipped})",
            source,
        )
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        _fail("", f"line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}", source)
    except RecursionError:
        _fail("", f"nested deeper than {MAX_DEPTH} levels", source)
    except ValueError as exc:
        # A duplicate key or NaN (the hooks below), or a number too long to convert.
        _fail("", f"not valid JSON: {exc}", source)
    if _depth(value) > MAX_DEPTH:
        _fail("", f"nested deeper than {MAX_DEPTH} levels", source)
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {short(key)}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    """The nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level + 1)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def expected_string(value: Any) -> str:
    """``must be a string, got ...`` (JSON has no unquoted words: no YAML hint)."""
    return f"must be a string, got {short(value)}"


def _fail(path: str, message: str, source: str | None) -> NoReturn:
    raise RancherConversionError([FieldError(path, message)], source)


# --------------------------------------------------------------------------- parsing


def parse_network(obj: Any, source: str | None = None) -> RancherNetwork:
    """Parse a Rancher 1.6 network object; every problem is collected.

    Unknown top-level fields are ignored (the whole network object may be given);
    unknown fields in a rule are errors. Raises :class:`RancherConversionError`.
    """
    if not isinstance(obj, Mapping):
        _fail("", f"must be a JSON object (Rancher's network), got {short(obj)}", source)
    errors: list[FieldError] = []
    default = _action(obj.get("defaultPolicyAction"), "defaultPolicyAction", errors)
    raw_rules = obj.get("policy")
    rules: list[RancherRule] = []
    if not isinstance(raw_rules, list):
        got = "nothing" if "policy" not in obj else short(raw_rules)
        errors.append(FieldError("policy", f"must be a list of rules ([] for none), got {got}"))
    else:
        for i, raw in enumerate(raw_rules):
            rule = _rule(raw, i, errors)
            if rule is not None:
                rules.append(rule)
    if errors or default is None:
        raise RancherConversionError(_bounded(errors), source)
    return RancherNetwork(default_action=default, rules=tuple(rules))


def _bounded(errors: list[FieldError]) -> list[FieldError]:
    if len(errors) <= MAX_PROBLEMS:
        return errors
    more = len(errors) - MAX_PROBLEMS
    return [*errors[:MAX_PROBLEMS], FieldError("", f"and {more} more problems")]


def _action(raw: Any, path: str, errors: list[FieldError]) -> str | None:
    if raw is None:
        errors.append(FieldError(path, "required: allow or deny"))
        return None
    if not isinstance(raw, str):
        errors.append(FieldError(path, expected_string(raw)))
        return None
    if raw not in RANCHER_ACTIONS:
        errors.append(FieldError(path, f"must be allow or deny, got {short(raw)}"))
        return None
    return raw


def _rule(raw: Any, index: int, errors: list[FieldError]) -> RancherRule | None:
    path = f"policy[{index}]"
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, f"must be an object, got {short(raw)}"))
        return None
    before = len(errors)
    _check_fields(raw, path, _RULE_FIELDS, UNCONVERTED_RULE_FIELDS, errors)
    action = _action(raw.get("action"), f"{path}.action", errors)
    within_raw, between_raw = raw.get("within"), raw.get("between")
    within: str | None = None
    group_by: str | None = None
    if within_raw is not None and between_raw is not None:
        errors.append(FieldError(path, "within and between are exclusive, got both"))
    elif within_raw is None and between_raw is None:
        errors.append(FieldError(path, "one of within or between is required"))
    elif within_raw is not None:
        within = _within(within_raw, f"{path}.within", errors)
    else:
        group_by = _between(between_raw, f"{path}.between", errors)
    if len(errors) != before or action is None:
        return None
    return RancherRule(index=index, action=action, within=within, group_by=group_by)


def _check_fields(
    raw: Mapping[str, Any],
    path: str,
    known: tuple[str, ...],
    unconverted: tuple[str, ...],
    errors: list[FieldError],
) -> None:
    for key in sorted((k for k in raw if k not in known), key=str):
        errors.append(FieldError(key_path(path, key), "unknown field"))
    for key in unconverted:
        if raw.get(key) is not None:
            errors.append(
                FieldError(
                    f"{path}.{key}",
                    "not converted: only rules by within or by between.groupBy are "
                    "(remove the field, or write this rule as a ClusterNetworkPolicy)",
                )
            )


def _within(raw: Any, path: str, errors: list[FieldError]) -> str | None:
    if not isinstance(raw, str):
        errors.append(FieldError(path, expected_string(raw)))
        return None
    if raw not in WITHIN:
        errors.append(FieldError(path, f"must be one of {', '.join(WITHIN)}, got {short(raw)}"))
        return None
    return raw


def _between(raw: Any, path: str, errors: list[FieldError]) -> str | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, f"must be an object with groupBy, got {short(raw)}"))
        return None
    _check_fields(raw, path, _BETWEEN_FIELDS, UNCONVERTED_BETWEEN_FIELDS, errors)
    key = raw.get("groupBy")
    where = f"{path}.groupBy"
    if key is None:
        errors.append(FieldError(where, "required: a label key"))
        return None
    if not isinstance(key, str):
        errors.append(FieldError(where, expected_string(key)))
        return None
    problems = label_key(key)
    errors.extend(FieldError(where, f"{short(key)}: not a label key: {p}") for p in problems)
    return None if problems else key


# --------------------------------------------------------------------------- converting


def option_problems(
    *,
    name: str = DEFAULT_NAME,
    priority: int = DEFAULT_PRIORITY,
    stack_label: str | None = None,
    service_label: str | None = DEFAULT_SERVICE_LABEL,
) -> list[FieldError]:
    """What is wrong with the conversion options (empty when nothing), by option name.

    ``None`` for a label option: not given (the stack label), or not checked."""
    errors: list[FieldError] = []
    errors += [FieldError("--name", f"{short(name)}: {p}") for p in dns1123_subdomain(name)]
    if isinstance(priority, bool) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        errors.append(
            FieldError(
                "--priority", f"must be between {PRIORITY_MIN} and {PRIORITY_MAX}, got {priority}"
            )
        )
    for option, key in (("--stack-label", stack_label), ("--service-label", service_label)):
        if key is not None:
            errors += [
                FieldError(option, f"{short(key)}: not a label key: {p}") for p in label_key(key)
            ]
    if stack_label is not None and stack_label == service_label:
        errors.append(
            FieldError(
                "--stack-label", f"must differ from --service-label, both {short(stack_label)}"
            )
        )
    return errors


def convert(
    network: RancherNetwork,
    *,
    name: str = DEFAULT_NAME,
    priority: int = DEFAULT_PRIORITY,
    stack_label: str | None = None,
    service_label: str = DEFAULT_SERVICE_LABEL,
    source: str | None = None,
) -> Conversion:
    """The IsolationPolicy equivalent to ``network`` (see the module docstring).

    Raises :class:`RancherConversionError` for bad options, a ``deny`` rule
    ``within: linked``, or more ingress rules than an IsolationPolicy may have.
    """
    bad = option_problems(
        name=name, priority=priority, stack_label=stack_label, service_label=service_label
    )
    if bad:
        raise RancherConversionError(bad)
    errors: list[FieldError] = []
    comments: list[str] = []
    warnings: list[str] = []
    ingress: list[dict[str, Any]] = []
    left_out: list[int] = []
    for rule in network.rules:
        if rule.within == LINKED:
            if rule.action == DENY_ACTION:
                errors.append(
                    FieldError(
                        f"policy[{rule.index}].within",
                        "linked with action deny has no Kubernetes counterpart (there are "
                        "no links), and leaving it out would allow more than Rancher did; "
                        "remove it and deny those connections with a ClusterNetworkPolicy "
                        "rule between the two services' selectors",
                    )
                )
            else:
                left_out.append(rule.index)
            continue
        ingress.append(
            {
                "name": f"policy-{rule.index}-{rule.kind}",
                "action": RANCHER_ACTIONS[rule.action],
                "from": [_peer(rule, stack_label, service_label)],
            }
        )
    if left_out:
        which, verb = _indices(left_out)
        comments.append(
            f"{which} (within: linked, allow) {verb} left out: Kubernetes has no links, so "
            "the connections allowed there are decided by the rules after and the default "
            "(never more allowed than in Rancher). Express each link as a "
            "ClusterNetworkPolicy whose subject selects the linked service's pods, with an "
            "ingress rule from the linking service's pods."
        )
        warnings.append(
            f"{which}: within: linked (allow) left out, Kubernetes has no links; express "
            "each link as a ClusterNetworkPolicy rule between two selectors (see the "
            "comment in the output)"
        )
    if network.default_action == DENY_ACTION:
        ingress.append({"name": DEFAULT_DENY_RULE, "action": DENY, "from": [_all_pods()]})
    else:
        comments.append(
            "defaultPolicyAction allow: no last rule. Traffic no rule decides goes on to the "
            "NetworkPolicy tier, and is allowed where no NetworkPolicy isolates the pod."
        )
    if len(ingress) > MAX_RULES:
        errors.append(
            FieldError(
                "policy",
                f"converts to {len(ingress)} ingress rules (the default deny included), more "
                f"than the {MAX_RULES} an IsolationPolicy may have",
            )
        )
    if errors:
        raise RancherConversionError(_bounded(errors), source)
    policy = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "tier": ADMIN,
            "priority": priority,
            "subject": _all_pods(),
            "ingress": ingress,
        },
    }
    return Conversion(policy=policy, comments=tuple(comments), warnings=tuple(warnings))


#: At most this many rule indices are named in a comment or warning.
MAX_NAMED: Final = 10


def _indices(indices: list[int]) -> tuple[str, str]:
    """``policy[0]``, or ``policy[0], policy[3]`` (at most MAX_NAMED, then how many
    more), and the verb that agrees with it."""
    named = ", ".join(f"policy[{i}]" for i in indices[:MAX_NAMED])
    more = len(indices) - MAX_NAMED
    if more > 0:
        named += f" and {more} more"
    return named, "is" if len(indices) == 1 else "are"


def _all_pods() -> dict[str, Any]:
    return {"pods": {"namespaceSelector": {}, "podSelector": {}}}


def _peer(rule: RancherRule, stack_label: str | None, service_label: str) -> dict[str, Any]:
    if rule.group_by is not None:
        return {"pods": {"sameLabels": [rule.group_by], "namespaceSelector": {}}}
    if rule.within == STACK:
        if stack_label is None:
            return {"namespaces": {"sameAs": SELF}}
        return {"pods": {"sameLabels": [stack_label]}}
    keys = [service_label] if stack_label is None else [stack_label, service_label]
    return {"pods": {"sameLabels": keys}}


# --------------------------------------------------------------------------- output

_HEADER: Final = (
    "An IsolationPolicy converted from a Rancher 1.6 environment network policy by",
    "'stockade convert rancher-network'. Rancher judged a connection between two",
    "containers at its destination: the rules are ingress rules of every pod, in the",
    "order Rancher's were written.",
)


def to_yaml(conversion: Conversion) -> str:
    """The policy as one YAML document, opening with its comments."""
    lines = [f"# {line}" for line in _HEADER]
    for comment in conversion.comments:
        lines.append("#")
        lines += [f"# {line}" for line in _wrap(comment)]
    body = yaml.safe_dump(conversion.policy, sort_keys=False, default_flow_style=False)
    return "\n".join(lines) + "\n" + body


def _wrap(text: str, width: int = 84) -> list[str]:
    out: list[str] = []
    line = ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        out.append(line)
    return out


def convert_bytes(
    data: bytes,
    source: str,
    *,
    name: str = DEFAULT_NAME,
    priority: int = DEFAULT_PRIORITY,
    stack_label: str | None = None,
    service_label: str = DEFAULT_SERVICE_LABEL,
) -> Conversion:
    """Read, parse and convert: :func:`load_json`, :func:`parse_network`, :func:`convert`."""
    network = parse_network(load_json(data, source), source)
    return convert(
        network,
        name=name,
        priority=priority,
        stack_label=stack_label,
        service_label=service_label,
        source=source,
    )
