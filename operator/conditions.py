"""``status.conditions`` of a ClusterNetworkPolicy: pure translation.

stockade owns one condition on each ClusterNetworkPolicy, of type ``Accepted``
(``metav1.Condition``: type, status, reason, message, lastTransitionTime,
observedGeneration):

- ``True``, reason ``Accepted``: the policy is valid and enforced as written (the
  message names the rules that fail closed, if any);
- ``False``, reason ``Invalid``: the policy was refused; the message lists every
  problem and says whether its last valid version stays in force or it enforces
  nothing (the same words as the ``PolicyRejected`` Event).

:func:`conditions_patch` says what to write through the status subresource, or
None when the object already carries it: an unchanged condition is never written
again. Conditions of other types (another controller's) are kept as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stockade.cnp import ClusterNetworkPolicy
from stockade.errors import InvalidObjectError

CONDITION_ACCEPTED = "Accepted"
REASON_ACCEPTED = "Accepted"
REASON_INVALID = "Invalid"
MAX_MESSAGE = 32768  # metav1.Condition.message: MaxLength=32768
TRUE = "True"
FALSE = "False"


@dataclass(frozen=True, slots=True)
class ConditionSpec:
    """The ``Accepted`` condition stockade wants on a policy (no timestamp)."""

    status: str
    reason: str
    message: str
    observed_generation: int | None = None


def accepted_condition(
    policy: ClusterNetworkPolicy | None,
    error: InvalidObjectError | None,
    generation: int | None,
) -> ConditionSpec:
    """The condition for a policy as last observed.

    ``error`` set: the observed version was refused, and ``policy`` is the last valid
    version still in force (None: there is none, it enforces nothing). Otherwise
    ``policy`` is the observed version, accepted.
    """
    if error is not None:
        problems = "; ".join(str(e) for e in error.errors)
        effect = (
            "its last valid version stays in force" if policy is not None else ("enforces nothing")
        )
        return ConditionSpec(
            FALSE, REASON_INVALID, _short(f"invalid, {effect}: {problems}"), generation
        )
    message = "enforced by stockade"
    if policy is not None:
        failing = [
            f"{direction} rule {index}" + (f" ({rule.name})" if rule.name else "")
            for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress))
            for index, rule in enumerate(rules)
            if rule.unsupported
        ]
        if failing:
            message += (
                "; domainNames is not supported, these rules fail closed (an Accept rule "
                "matches nothing, a Deny or Pass rule denies all): " + ", ".join(failing)
            )
    return ConditionSpec(TRUE, REASON_ACCEPTED, _short(message), generation)


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def _same(observed: Mapping[str, Any], want: ConditionSpec) -> bool:
    return (
        observed.get("status") == want.status
        and observed.get("reason") == want.reason
        and observed.get("message") == want.message
        and observed.get("observedGeneration") == want.observed_generation
        and bool(observed.get("lastTransitionTime"))
    )


def observed_conditions(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    """The well-formed entries of ``status.conditions`` (objects with a string type)."""
    status = body.get("status")
    raw = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(raw, list):
        return ()
    return tuple(c for c in raw if isinstance(c, Mapping) and isinstance(c.get("type"), str))


def conditions_patch(
    observed: tuple[Mapping[str, Any], ...], want: ConditionSpec, now: str
) -> list[dict[str, Any]] | None:
    """The whole ``status.conditions`` list to write, or None when nothing changes.

    ``lastTransitionTime`` is kept while the status (True/False) stays; it is
    ``now`` when it flips or the condition is new. Other types are kept in place.
    """
    current = next((c for c in observed if c.get("type") == CONDITION_ACCEPTED), None)
    if current is not None and _same(current, want):
        return None
    since = now
    if current is not None and current.get("status") == want.status:
        since = str(current.get("lastTransitionTime") or now)
    condition: dict[str, Any] = {
        "type": CONDITION_ACCEPTED,
        "status": want.status,
        "reason": want.reason,
        "message": want.message,
        "lastTransitionTime": since,
    }
    if want.observed_generation is not None:
        condition["observedGeneration"] = want.observed_generation
    out: list[dict[str, Any]] = []
    placed = False
    for c in observed:
        if c.get("type") == CONDITION_ACCEPTED:
            if not placed:
                out.append(condition)
                placed = True
        else:
            out.append(dict(c))
    if not placed:
        out.append(condition)
    return out
