"""``--isolate-new-pods``: which local pods the node's rule set does not cover yet.

Purely computational. The agent watches its node's Pods (field selector
``spec.nodeName``) into :class:`LocalPods`; :meth:`LocalPods.pending` compares them
with the rule set's ``knownPods`` (every selectable pod of the node the controller
had compiled when it wrote the rule set). A pod address is *pending* when the rule
set does not list that pod with that address: the pod is new, or it took over an
address another pod had. The renderer denies all forwarded traffic of pending
addresses until a rule set that lists them arrives, so no pod talks before its
policies land.

Pods are read with the engine's own :func:`~stockade.model.parse_pod`, so the agent
and the controller agree on which pods count: host-network pods (they use the
node's address), pods without an address and finished pods are never pending, and
neither is a pod the controller would reject as malformed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stockade.errors import InvalidObjectError
from stockade.model import Pod, parse_pod
from stockade.ownership import resolve
from stockade.ruleset import KnownPod


def local_pod(obj: Mapping[str, Any]) -> Pod | None:
    """A Pod object as the engine reads it, when policy can see it; else None."""
    try:
        pod = parse_pod(obj)
    except InvalidObjectError:
        return None
    return pod if pod.selectable else None


def pod_addresses(obj: Mapping[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    """``(namespace/name, addresses)`` of a Pod object that policy can see, else None."""
    pod = local_pod(obj)
    return None if pod is None else (pod.key, pod.ips)


class LocalPods:
    """The node's pods as the pod watch reports them (only those policy can see)."""

    def __init__(self) -> None:
        self._pods: dict[str, Pod] = {}

    def __len__(self) -> int:
        return len(self._pods)

    def replace(self, items: Iterable[Mapping[str, Any]]) -> None:
        """A (re)list: forget everything, keep these."""
        self._pods = {}
        for obj in items:
            self.event("ADDED", obj)

    def event(self, kind: str, obj: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED)."""
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        seen = None if kind == "DELETED" else local_pod(obj)
        if seen is None:
            self._pods.pop(key, None)
        else:
            self._pods[seen.key] = seen

    def pending(self, known: Sequence[KnownPod]) -> dict[str, str]:
        """Pending address -> its pod: local pods (by name and address) ``known`` lacks.

        Addresses are judged by the controller's own ownership rule
        (:mod:`stockade.ownership`): a terminating pod whose address a new pod took
        does not make the new pod pending, and an address two local pods claim with
        no owner is pending until the rule set lists it as contested.
        """
        covered = {(k.name, ip) for k in known for ip in k.ips}
        effective, _ = resolve(self._pods.values())
        out: dict[str, str] = {}
        for key, pod in effective.items():
            for ip in pod.ips:
                if (key, ip) not in covered:
                    out[ip] = key
            for ip in pod.contested_ips:
                out[ip] = key
        return out
