"""Rancher 1.6 environment network policy, converted to an IsolationPolicy.

Rancher 1.6's network object carries ``defaultPolicyAction`` (``allow`` or
``deny``) and ``policy``, an ordered list of rules, each with an ``action``
(``allow``/``deny``) and either ``within`` (``stack``, ``service``, ``linked``) or
``between: {groupBy: LABEL_KEY}``. Rules are applied in order, the default after
them, between the environment's containers. One IsolationPolicy says the same
(docs/isolation.md, "Mapping from other platforms"):

- the subject is every pod; the rules are ingress rules (judged at the
  destination, which decides pod-to-pod traffic), in Rancher's order, named
  ``policy-<i>-<kind>``; allow is Accept, deny is Deny;
- ``within: stack``: the same namespace (``namespaces: {sameAs: Self}``), or the
  same value of ``--stack-label`` in the namespace (``pods: {sameLabels}``);
- ``within: service``: the same value of ``--service-label`` (default ``app``) in
  the same stack;
- ``between: {groupBy: K}``: the same value of K anywhere in the cluster;
- ``within: linked`` names links, which Kubernetes does not have: an allow is left
  out (narrower; a ClusterNetworkPolicy rule between two selectors says a link,
  examples/cnp-linked-services.yaml) and reported; a deny cannot be left out
  without allowing more than Rancher did, so it is an error;
- ``defaultPolicyAction: deny`` is a last rule denying every pod; ``allow`` adds
  nothing (what no rule decides falls to NetworkPolicy, then to allow).

Pure: a parsed JSON value in, a plain dict (the IsolationPolicy) and notes out;
:class:`ConversionError` lists every problem with its path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stockade.errors import FieldError
from stockade.isolation import API_VERSION, KIND
from stockade.model import key_path
from stockade.safetext import short
from stockade.validation import label_key

DEFAULT_NAME = "rancher-environment"
DEFAULT_PRIORITY = 100
DEFAULT_SERVICE_LABEL = "app"
MAX_RULES = 25  # an IsolationPolicy's ingress rules, like a ClusterNetworkPolicy's
ACTIONS = {"allow": "Accept", "deny": "Deny"}
WITHIN = ("stack", "service", "linked")
RULE_FIELDS = ("action", "within", "between")
ALL_PODS: dict[str, Any] = {"pods": {"namespaceSelector": {}, "podSelector": {}}}


class ConversionError(ValueError):
    """The input (or an option) cannot be converted; ``errors`` lists every problem."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem: ``path: message``."""
        return [str(e) if e.path else e.message for e in self.errors]


@dataclass(frozen=True)
class Options:
    """How Rancher's stacks and services are found in Kubernetes."""

    name: str = DEFAULT_NAME
    priority: int = DEFAULT_PRIORITY
    stack_label: str | None = None  # None: a stack is a namespace
    service_label: str = DEFAULT_SERVICE_LABEL


@dataclass(frozen=True)
class Conversion:
    """The IsolationPolicy, and what people should know about it (one line each)."""

    policy: dict[str, Any]
    notes: tuple[str, ...]


def convert(network: Any, options: Options = Options()) -> Conversion:
    """The IsolationPolicy equivalent to Rancher's network object ``network``.

    Raises ConversionError listing every problem (paths like
    ``policy[2].within``), for the input and for ``options`` alike.
    """
    errors: list[FieldError] = []
    _check_options(options, errors)
    if not isinstance(network, Mapping):
        raise ConversionError([*errors, FieldError("", "the network must be a JSON object")])
    default = _action(network.get("defaultPolicyAction"), "defaultPolicyAction", errors)
    raw_rules = network.get("policy", [])
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        errors.append(FieldError("policy", "must be a list of rules"))
        raw_rules = []
    rules: list[dict[str, Any]] = []
    notes: list[str] = []
    for i, raw in enumerate(raw_rules):
        rule = _rule(raw, i, options, errors, notes)
        if rule is not None:
            rules.append(rule)
    if default == "Deny":
        rules.append({"name": "default-deny", "action": "Deny", "from": [ALL_PODS]})
    elif default == "Accept":
        notes.append(
            "defaultPolicyAction allow: no last rule; what no rule decides falls to "
            "NetworkPolicy, then to allow"
        )
    if len(rules) > MAX_RULES:
        errors.append(
            FieldError("policy", f"{len(rules)} rules, an IsolationPolicy holds {MAX_RULES}")
        )
    if errors:
        raise ConversionError(errors)
    policy = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": options.name},
        "spec": {
            "tier": "Admin",
            "priority": options.priority,
            "subject": {"pods": {"namespaceSelector": {}, "podSelector": {}}},
            "ingress": rules,
        },
    }
    return Conversion(policy, tuple(notes))


def _check_options(options: Options, errors: list[FieldError]) -> None:
    for flag, key in (
        ("--stack-label", options.stack_label),
        ("--service-label", options.service_label),
    ):
        if key is not None:
            errors.extend(FieldError(flag, f"{short(key)}: {p}") for p in label_key(key))
    if not 0 <= options.priority <= 1000:
        errors.append(FieldError("--priority", f"must be 0..1000, got {options.priority}"))


def _action(raw: Any, path: str, errors: list[FieldError]) -> str | None:
    if raw is None:
        errors.append(FieldError(path, "required: allow or deny"))
        return None
    if not isinstance(raw, str) or raw.lower() not in ACTIONS:
        errors.append(FieldError(path, f"must be allow or deny, got {short(raw)}"))
        return None
    return ACTIONS[raw.lower()]


def _rule(
    raw: Any, i: int, options: Options, errors: list[FieldError], notes: list[str]
) -> dict[str, Any] | None:
    path = f"policy[{i}]"
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, "must be an object"))
        return None
    before = len(errors)
    for key in sorted(str(k) for k in raw if k not in RULE_FIELDS):
        errors.append(FieldError(key_path(path, key), "unknown field (within, between, action)"))
    action = _action(raw.get("action"), f"{path}.action", errors)
    within, between = raw.get("within"), raw.get("between")
    if (within is None) == (between is None):
        errors.append(FieldError(path, "needs exactly one of within and between"))
        return None
    peer: dict[str, Any] | None = None
    kind = ""
    if within is not None:
        if within not in WITHIN:
            errors.append(
                FieldError(
                    f"{path}.within", f"must be one of {', '.join(WITHIN)}, got {short(within)}"
                )
            )
            return None
        kind = f"within-{within}"
        if within == "linked":
            if action == "Deny":
                errors.append(
                    FieldError(
                        f"{path}.within",
                        "linked: Kubernetes has no links, and leaving out a deny would allow "
                        "more than Rancher did; write the link's deny as a ClusterNetworkPolicy "
                        "rule between two selectors",
                    )
                )
            elif len(errors) == before:
                notes.append(
                    f"{path}: within linked (allow) left out: Kubernetes has no links; say a "
                    "link as a ClusterNetworkPolicy Accept between two selectors "
                    "(examples/cnp-linked-services.yaml)"
                )
            return None
        peer = _within(str(within), options)
    else:
        peer = _between(between, f"{path}.between", errors)
        kind = "between-groupby"
    if len(errors) != before or action is None or peer is None:
        return None
    return {"name": f"policy-{i}-{kind}", "action": action, "from": [peer]}


def _within(within: str, options: Options) -> dict[str, Any]:
    if within == "stack":
        if options.stack_label is None:
            return {"namespaces": {"sameAs": "Self"}}
        return {"pods": {"sameLabels": [options.stack_label]}}
    keys = [options.service_label]
    if options.stack_label is not None and options.stack_label != options.service_label:
        keys = [options.stack_label, options.service_label]
    return {"pods": {"sameLabels": keys}}


def _between(raw: Any, path: str, errors: list[FieldError]) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, "must be an object with groupBy"))
        return None
    for key in sorted(str(k) for k in raw if k != "groupBy"):
        errors.append(FieldError(key_path(path, key), "unknown field (groupBy)"))
    group = raw.get("groupBy")
    if not isinstance(group, str):
        errors.append(FieldError(f"{path}.groupBy", f"must be a label key, got {short(group)}"))
        return None
    problems = label_key(group)
    if problems:
        errors.extend(FieldError(f"{path}.groupBy", f"{short(group)}: {p}") for p in problems)
        return None
    return {"pods": {"sameLabels": [group], "namespaceSelector": {}}}
