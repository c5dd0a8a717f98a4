"""What the agent's sync loop does next: a pure decision, tested by tables.

The watcher (:mod:`stockade.agent.watch`) gathers the inputs (what the cache
assembled, what the kernel was last told to hold, what was refused, since when a
bundle waits for its sets, the clock) and performs the decision; this module only
decides. No I/O, no asyncio, no clock of its own.

The rules, in the words of the watcher's contract:

- a complete bundle whose content (hash) and pending pods equal what is applied is
  kept (the generation may be newer); one refused before is refused again without
  trying; any other is applied;
- a bundle waiting for PeerSets waits ``grace`` seconds from the moment it started
  waiting for exactly those sets, then is reported incomplete (still not applied:
  fail static);
- an invalid bundle is refused; no rule set at all (or its CRD gone) is reported as
  missing, and what is applied stays in force.

Before that, :func:`on_wakeup` says what a wakeup of the loop does at all: look at
the cache (once the reflectors have listed, and unless a failed kernel write is
backing off), report the CRD gone without looking, fall back to the saved bundle,
resync.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from stockade.agent.cache import Invalid, Missing, Outcome, Ready, Waiting

# The key of a wait: the generation and the sets it lacks (and why).
WaitKey = tuple[int | None, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class SyncView:
    """What the watcher knows besides the cache, as of this iteration."""

    applied_hash: str | None = None  # the bundle the kernel holds (None: nothing yet)
    applied_pending: Mapping[str, str] | None = None  # pending address -> pod, as applied
    refused: tuple[str, str] | None = None  # (hash, error) of the last refused bundle
    waiting: tuple[Hashable, float] | None = None  # (wait key, since)
    crd_missing: bool = False  # the NodeRuleSet resource answered 404
    retry_at: float | None = None  # a failed kernel write backs off until then


@dataclass(frozen=True)
class Apply:
    """Hand the bundle to the applier."""

    ready: Ready


@dataclass(frozen=True)
class Keep:
    """The kernel holds this content already: record it as applied (maybe newer)."""

    ready: Ready


@dataclass(frozen=True)
class RefuseAgain:
    """This content was refused before: record the refusal, do not try again."""

    ready: Ready
    error: str


@dataclass(frozen=True)
class Wait:
    """Sets are missing; within the grace period. ``first``: the wait starts now."""

    key: WaitKey
    since: float
    first: bool
    message: str


@dataclass(frozen=True)
class GiveUpWaiting:
    """Sets are still missing after the grace period: report the bundle incomplete."""

    key: WaitKey
    since: float
    generation: int | None
    message: str


@dataclass(frozen=True)
class Refuse:
    """The rule set cannot be used: report it invalid."""

    generation: int | None
    error: str


@dataclass(frozen=True)
class RuleSetGone:
    """No rule set for the node: report why; what is applied stays."""

    reason: str


Decision = Apply | Keep | RefuseAgain | Wait | GiveUpWaiting | Refuse | RuleSetGone


def wait_key(outcome: Waiting) -> WaitKey:
    """What a wait is about: a new generation or other missing sets start a new one."""
    return (outcome.generation, tuple(sorted(outcome.missing.items())))


def decide(
    outcome: Outcome,
    view: SyncView,
    *,
    pending: Mapping[str, str],
    now: float,
    grace: float,
    crd_reason: str,
) -> Decision:
    """The action for ``outcome``; ``pending``: the ready bundle's pending pods now."""
    if isinstance(outcome, Missing):
        return RuleSetGone(crd_reason if view.crd_missing else outcome.reason)
    if isinstance(outcome, Invalid):
        return Refuse(outcome.generation, outcome.error)
    if isinstance(outcome, Waiting):
        key = wait_key(outcome)
        if view.waiting is None or view.waiting[0] != key:
            return Wait(key, now, True, outcome.message)
        since = view.waiting[1]
        if now - since >= grace:
            return GiveUpWaiting(key, since, outcome.generation, outcome.message)
        return Wait(key, since, False, outcome.message)
    if outcome.hash == view.applied_hash and pending == (view.applied_pending or {}):
        return Keep(outcome)
    if view.refused is not None and view.refused[0] == outcome.hash:
        return RefuseAgain(outcome, view.refused[1])
    return Apply(outcome)


@dataclass(frozen=True)
class Wakeup:
    """What one wakeup of the sync loop does, before and after it looks at the cache."""

    look: bool  # assemble the cache and decide()
    retry_at: float | None  # the kernel back-off still running (None: over, or none)
    gone: str | None  # not looking, but the rule set's resource is gone: report it
    restore_due: bool  # fall back to the saved bundle, if nothing is applied by now
    resync: bool  # drift repair is due


def on_wakeup(
    now: float,
    view: SyncView,
    *,
    synced: bool,
    restore_at: float | None,
    next_resync: float,
    crd_reason: str,
) -> Wakeup:
    """What to do on this wakeup; ``synced``: every reflector has listed once.

    While a failed kernel write backs off (``view.retry_at`` in the future) the
    cache is not looked at: the kernel is not written to before then. The CRD's
    absence is reported even so. ``restore_at``: as for :func:`next_wakeup`.
    """
    retry_at = view.retry_at if view.retry_at is not None and now < view.retry_at else None
    look = synced and retry_at is None
    return Wakeup(
        look=look,
        retry_at=retry_at,
        gone=crd_reason if view.crd_missing and not look else None,
        restore_due=restore_at is not None and now >= restore_at,
        resync=now >= next_resync,
    )


def next_wakeup(
    now: float,
    *,
    next_resync: float,
    restore_at: float | None,
    retry_at: float | None,
    waiting_since: float | None,
    grace: float,
) -> float:
    """Seconds the sync loop may sleep before it must look again (a change wakes it sooner).

    ``restore_at``: when to fall back to the saved bundle (None: not any more);
    ``retry_at``: when a failed kernel write may be tried again; ``waiting_since``:
    when the current wait for PeerSets began (its grace ends then).
    """
    deadlines = [next_resync]
    if restore_at is not None:
        deadlines.append(restore_at)
    if retry_at is not None:
        deadlines.append(retry_at)
    if waiting_since is not None:
        deadlines.append(waiting_since + grace)
    return max(0.0, min(deadlines) - now)
