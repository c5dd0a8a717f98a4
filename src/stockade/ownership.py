"""Who owns a pod IP that two pods claim: one rule for the engine, the controller and
the agents.

Purely computational. Two pods with one address is a live reality: the IPAM hands a
terminating pod's address to a new pod before the old object is gone, and a stale
or hand-written snapshot can hold both. Judging the address as both pods at once
would let one pod's allow lose the other's deny, so every address has at most one
owner:

1. a pod that is not being deleted (no ``metadata.deletionTimestamp``) beats one
   that is;
2. then the most recently created (``metadata.creationTimestamp``) beats the older
   (comparable only when every remaining claimant has a timestamp);
3. otherwise the address is *contested*: no pod owns it, no policy target or peer
   set counts it, and all forwarded traffic from or to it is denied until one pod
   owns it. That is narrower than either pod's policies, so neither pod's deny is
   ever lost.

A pod keeps only the addresses it owns (:func:`effective_pod`); one that owns none
takes no part, like a pod with no IP yet. Host-network pods share their node's
address by design and never claim it. docs/semantics.md states the rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from stockade.model import Pod


@dataclass(frozen=True, slots=True)
class IPClaim:
    """An address claimed by more than one pod, and who (if anyone) owns it."""

    ip: str
    claimants: tuple[str, ...]  # pod keys, sorted
    owner: str | None  # None: contested
    reason: str

    def message(self) -> str:
        """One line for a warning or an Event."""
        pods = " and ".join(self.claimants)
        if self.owner is None:
            return (
                f"address {self.ip} is claimed by {pods} ({self.reason}); no pod owns it, "
                "and all traffic from and to it is denied until one does"
            )
        losers = ", ".join(k for k in self.claimants if k != self.owner)
        return (
            f"address {self.ip} is claimed by {pods}; it belongs to {self.owner} "
            f"({self.reason}), and {losers} takes no part at that address"
        )


def claims(pod: Pod) -> bool:
    """Whether ``pod`` claims its addresses (active and not on the host network)."""
    return pod.active and not pod.host_network


def decide(ip: str, claimants: Iterable[Pod]) -> IPClaim:
    """The owner of ``ip`` among two or more ``claimants`` (see the module's rule)."""
    pods = sorted(claimants, key=lambda p: p.key)
    keys = tuple(p.key for p in pods)
    if any(p.untrusted for p in pods):
        return IPClaim(ip, keys, None, "one of them could not be read")
    alive = [p for p in pods if not p.deleting]
    if len(alive) == 1:
        return IPClaim(ip, keys, alive[0].key, "the others are being deleted")
    remaining = alive or pods
    created = [p.created for p in remaining]
    if all(c is not None for c in created):
        newest = max(c for c in created if c is not None)
        winners = [p for p in remaining if p.created == newest]
        if len(winners) == 1:
            return IPClaim(ip, keys, winners[0].key, "the most recently created")
        reason = "created at the same time"
    else:
        reason = "no creation time tells them apart"
    if not alive:
        reason = f"all are being deleted, {reason}"
    return IPClaim(ip, keys, None, reason)


def effective_pod(pod: Pod, decided: dict[str, IPClaim]) -> Pod:
    """``pod`` with only the addresses it owns; contested ones in ``contested_ips``.

    An untrusted pod (one that did not parse) owns nothing: all its addresses are
    contested, denied both ways.
    """
    if pod.untrusted:
        return replace(pod, ips=(), contested_ips=pod.ips)
    if not claims(pod) or not any(ip in decided for ip in pod.ips):
        return pod if not pod.contested_ips else replace(pod, contested_ips=())
    owned = tuple(ip for ip in pod.ips if ip not in decided or decided[ip].owner == pod.key)
    contested = tuple(ip for ip in pod.ips if ip in decided and decided[ip].owner is None)
    return replace(pod, ips=owned, contested_ips=contested)


class OwnershipTracker:
    """The rule applied incrementally: raw pods in, the pods as the engine sees them out.

    :meth:`upsert` and :meth:`delete` return every pod whose effective form may have
    changed (the pod itself and the other claimants of its old and new addresses).
    """

    def __init__(self) -> None:
        self._pods: dict[str, Pod] = {}
        self._by_ip: dict[str, set[str]] = {}
        self._decided: dict[str, IPClaim] = {}

    def upsert(self, pod: Pod) -> list[Pod]:
        """Add or replace a raw pod; the effective pods that may have changed."""
        old = self._pods.get(pod.key)
        if old is None and self._alone(pod):
            # The common case, a new pod at addresses nobody claims: it owns them all
            # and nobody else changes (what the general path below finds, faster).
            key = pod.key
            self._pods[key] = pod
            for ip in pod.ips:
                self._by_ip[ip] = {key}
            return [pod]
        touched = self._unclaim(old) if old is not None else set()
        self._pods[pod.key] = pod
        if claims(pod):
            for ip in pod.ips:
                self._by_ip.setdefault(ip, set()).add(pod.key)
            touched |= set(pod.ips)
        return self._redecide(touched, {pod.key})

    def delete(self, key: str) -> list[Pod]:
        """Forget a pod; the other pods whose effective form may have changed."""
        old = self._pods.pop(key, None)
        if old is None:
            return []
        return self._redecide(self._unclaim(old), set())

    def effective(self, key: str) -> Pod | None:
        """The pod ``key`` as the engine sees it, or None when unknown."""
        pod = self._pods.get(key)
        return None if pod is None else effective_pod(pod, self._decided)

    def effective_pods(self) -> dict[str, Pod]:
        """Every known pod as the engine sees it, by key."""
        return {key: effective_pod(pod, self._decided) for key, pod in self._pods.items()}

    def conflicts(self) -> list[IPClaim]:
        """Every address claimed by more than one pod, sorted by address."""
        return [self._decided[ip] for ip in sorted(self._decided)]

    def conflicts_of(self, key: str) -> list[IPClaim]:
        """The conflicts pod ``key`` takes part in."""
        pod = self._pods.get(key)
        if pod is None:
            return []
        return [self._decided[ip] for ip in pod.ips if ip in self._decided]

    def _alone(self, pod: Pod) -> bool:
        """Whether ``pod`` claims addresses no other pod claims, and is its own effective form."""
        if pod.untrusted or pod.contested_ips or not claims(pod):
            return False
        by_ip = self._by_ip
        return not any(ip in by_ip for ip in pod.ips)

    def _unclaim(self, pod: Pod) -> set[str]:
        if not claims(pod):
            return set()
        for ip in pod.ips:
            keys = self._by_ip.get(ip)
            if keys is not None:
                keys.discard(pod.key)
                if not keys:
                    del self._by_ip[ip]
        return set(pod.ips)

    def _redecide(self, ips: set[str], keys: set[str]) -> list[Pod]:
        for ip in ips:
            holders = self._by_ip.get(ip, set())
            keys |= holders
            if len(holders) > 1:
                self._decided[ip] = decide(ip, (self._pods[k] for k in holders))
            else:
                self._decided.pop(ip, None)
        out = []
        for key in sorted(keys):
            pod = self.effective(key)
            if pod is not None:
                out.append(pod)
        return out


def resolve(pods: Iterable[Pod]) -> tuple[dict[str, Pod], list[IPClaim]]:
    """The rule over a whole snapshot: effective pods by key, and the conflicts."""
    tracker = OwnershipTracker()
    for pod in pods:
        tracker.upsert(pod)
    return tracker.effective_pods(), tracker.conflicts()
