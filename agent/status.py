"""The NodeRuleSet status the agent writes (pure: the clock is passed in).

The agent owns the ``status`` of its node's NodeRuleSet (the controller never
touches it) and writes it through the status subresource as a JSON merge patch:

| field | meaning |
|---|---|
| ``observedGeneration`` | the generation of the spec the agent last looked at |
| ``appliedGeneration`` | the generation whose rules the kernel holds |
| ``appliedHash`` | hash of the applied rule set and peer-set shards (``cache.bundle_hash``) |
| ``applied`` | true when the observed generation, with its current sets, is enforced |
| ``policies``, ``clusterPolicies``, ``pods`` | counts in the applied rule set (what is enforced) |
| ``lastSync`` | last successful apply or resync (drift check) |
| ``error`` | why the observed generation is not enforced (absent when it is) |
| ``conditions`` | one ``Applied`` condition: True/False, a reason and the message |

Reasons: ``Applied``, ``Refused`` (the renderer refused it: ``RefusedError``),
``InvalidSpec`` (the spec does not parse), ``PeerSetsIncomplete`` (a named set did
not become complete within the grace time), ``KernelError`` (a write failed; retried).

A status is written only when it differs from what the API holds, ignoring the
timestamps; ``lastSync`` alone is refreshed at most every ``refresh`` seconds, so
a quiet node costs a write per interval, not per resync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stockade.ruleset import NodeRuleSet

CONDITION = "Applied"

REASON_APPLIED = "Applied"
REASON_REFUSED = "Refused"
REASON_INVALID = "InvalidSpec"
REASON_INCOMPLETE = "PeerSetsIncomplete"
REASON_KERNEL = "KernelError"

_TIMESTAMPS = ("lastSync",)


@dataclass(frozen=True)
class SyncState:
    """What the sync loop knows after its last step."""

    observed_generation: int | None
    applied: bool
    reason: str
    message: str = ""
    applied_generation: int | None = None
    applied_hash: str | None = None
    applied_rules: NodeRuleSet | None = None
    last_sync: str | None = None  # RFC 3339


def status_payload(
    state: SyncState, now: str, previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The status to merge-patch in; ``previous`` (the API's) keeps transition times.

    Fields with no value are None, which a merge patch deletes.
    """
    rules = state.applied_rules
    ok = state.applied
    condition = {
        "type": CONDITION,
        "status": "True" if ok else "False",
        "reason": state.reason,
        "message": state.message or ("the kernel enforces this generation" if ok else ""),
        "lastTransitionTime": now,
    }
    old = _condition(previous or {})
    if old is not None and old.get("status") == condition["status"]:
        condition["lastTransitionTime"] = old.get("lastTransitionTime") or now
    return {
        "observedGeneration": state.observed_generation,
        "appliedGeneration": state.applied_generation,
        "appliedHash": state.applied_hash,
        "applied": ok,
        "policies": len(rules.policies) if rules is not None else 0,
        "clusterPolicies": len(rules.cluster_policies) if rules is not None else 0,
        "pods": len(rules.pods) if rules is not None else 0,
        "lastSync": state.last_sync,
        "error": None if ok else (state.message or state.reason),
        "conditions": [condition],
    }


def _condition(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == CONDITION:
            return cond
    return None


def _comparable(status: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        value = status.get(key)
        if value is None or key in _TIMESTAMPS:
            continue
        if key == "conditions":
            value = [
                {k: v for k, v in c.items() if k != "lastTransitionTime"}
                for c in value
                if isinstance(c, Mapping)
            ]
        out[key] = value
    return out


def needs_write(
    current: Mapping[str, Any],
    desired: Mapping[str, Any],
    *,
    seconds_since_sync_write: float | None,
    refresh: float,
) -> bool:
    """Whether ``desired`` must be written over ``current`` (the API's status).

    Only the fields the agent writes are compared. True when anything but the
    timestamps differs, or when ``lastSync`` changed and the
    last write of it is ``refresh`` seconds old (or there was none).
    """
    if _comparable(current, desired) != _comparable(desired, desired):
        return True
    if current.get("lastSync") == desired.get("lastSync"):
        return False
    return seconds_since_sync_write is None or seconds_since_sync_write >= refresh
