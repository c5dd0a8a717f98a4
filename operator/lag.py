"""Sync lag: from the watch event that changed a node's rule set to the node enforcing it.

Purely computational (time comes in as an argument). The publisher tells a
:class:`SyncLagTracker` three things and reads two:

- :meth:`~SyncLagTracker.changed` when a flush takes a new NodeRuleSet content for a
  node: when its cause was observed (the earliest watch event of a NetworkPolicy
  whose change reached this node, else the first event of the flush), the content
  hash it produced, and the policies that caused it;
- :meth:`~SyncLagTracker.published` when the API holds that content: the object's
  uid and ``metadata.generation`` (from the write's answer, or from the watch when
  nothing had to be written);
- :meth:`~SyncLagTracker.status` for every NodeRuleSet the watch delivers: the
  agent's ``status.appliedGeneration`` says which generation the node enforces.

A change is applied once the node reports an ``appliedGeneration`` at or after the
generation that carried it, on the same object (uid). The agent's ``appliedHash``
is a hash of the whole bundle (rule set *and* the peer-set shards it names,
``stockade.agent.cache.bundle_hash``), which the controller would have to recompute
from every shard for every node; the generation names the same thing exactly and,
being monotonic, also settles every earlier change the later content includes.
The content hash (``stockade.dev/hash``) is kept with each change to bind a
generation seen on the watch to the content it carries.

Out: the lag of each applied change (the histogram), and per node the age of
its oldest change not yet applied (the gauge).
"""

from __future__ import annotations

from dataclasses import dataclass, field

POLICY = "policy"
OTHER = "other"


@dataclass(slots=True)
class Change:
    """One new content of a node's rule set, on its way to the node."""

    at: float
    hash: str
    policies: tuple[str, ...] = ()
    uid: str | None = None
    generation: int | None = None  # None: not in the API yet

    @property
    def cause(self) -> str:
        """``policy`` when a NetworkPolicy change caused it, else ``other``."""
        return POLICY if self.policies else OTHER


@dataclass(frozen=True, slots=True)
class Applied:
    """A change the node now enforces, and how long that took."""

    node: str
    lag: float
    cause: str
    policies: tuple[str, ...]


@dataclass(slots=True)
class _Node:
    changes: list[Change] = field(default_factory=list)
    # The object as last known: uid, generation, content hash.
    uid: str | None = None
    generation: int | None = None
    hash: str | None = None
    # What the agent reports: the uid it reported on and its applied generation.
    applied_uid: str | None = None
    applied_generation: int | None = None


class SyncLagTracker:
    """Changes per node until the node's agent reports them applied."""

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}

    def __len__(self) -> int:
        return sum(len(n.changes) for n in self._nodes.values())

    def changed(
        self, node: str, content_hash: str, at: float, policies: tuple[str, ...] = ()
    ) -> None:
        """``node``'s rule set got new content ``content_hash`` (caused at ``at``)."""
        state = self._nodes.setdefault(node, _Node())
        state.changes.append(Change(at, content_hash, tuple(sorted(policies))))

    def published(
        self, node: str, content_hash: str, uid: str | None, generation: int | None, now: float
    ) -> list[Applied]:
        """The API holds ``content_hash`` for ``node`` as ``uid`` at ``generation``.

        The changes up to the last one that produced this content are now carried
        by this generation (a later content includes the earlier ones). Returns
        what this settles (when the agent already reported that generation).
        """
        state = self._nodes.setdefault(node, _Node())
        if uid is None or generation is None:
            return []
        self._identify(state, uid, generation, content_hash)
        self._assign(state, content_hash, uid, generation)
        return self._settle(node, state, now)

    def unchanged(self, node: str, content_hash: str, now: float) -> list[Applied]:
        """A flush found ``content_hash`` already published for ``node`` (no write)."""
        state = self._nodes.get(node)
        if state is None or state.hash != content_hash:
            return []
        return self.published(node, content_hash, state.uid, state.generation, now)

    def status(
        self,
        node: str,
        uid: str | None,
        generation: int | None,
        content_hash: str | None,
        applied_generation: int | None,
        now: float,
    ) -> list[Applied]:
        """The watch delivered ``node``'s NodeRuleSet: its identity and the agent's status."""
        state = self._nodes.setdefault(node, _Node())
        if uid is None:
            return []
        if generation is not None and content_hash:
            self._identify(state, uid, generation, content_hash)
            self._assign(state, content_hash, uid, generation)
        if applied_generation is not None and (
            state.applied_uid != uid or applied_generation >= (state.applied_generation or 0)
        ):
            state.applied_uid, state.applied_generation = uid, applied_generation
        return self._settle(node, state, now)

    @staticmethod
    def _identify(state: _Node, uid: str, generation: int, content_hash: str) -> None:
        if state.uid != uid:
            # Another object (the old one was deleted and made again): changes the
            # old one carried must be carried again by the new one.
            for change in state.changes:
                if change.uid is not None and change.uid != uid:
                    change.uid = change.generation = None
            state.uid, state.generation, state.hash = uid, generation, content_hash
        elif generation >= (state.generation or 0):
            state.generation, state.hash = generation, content_hash

    @staticmethod
    def _assign(state: _Node, content_hash: str, uid: str, generation: int) -> None:
        last = -1
        for i, change in enumerate(state.changes):
            if change.generation is None and change.hash == content_hash:
                last = i
        for change in state.changes[: last + 1]:
            if change.generation is None:
                change.uid, change.generation = uid, generation

    def removed(self, node: str) -> None:
        """``node``'s rule set is gone (deleted, or no longer desired): forget it."""
        self._nodes.pop(node, None)

    def clear(self) -> None:
        """Forget everything (this replica stopped publishing)."""
        self._nodes.clear()

    def oldest(self, now: float) -> dict[str, float]:
        """Per node with a change not yet applied: the age of the oldest one."""
        return {
            node: max(0.0, now - min(c.at for c in state.changes))
            for node, state in self._nodes.items()
            if state.changes
        }

    def pending(self, node: str) -> tuple[Change, ...]:
        """The changes of ``node`` not yet applied (oldest first)."""
        state = self._nodes.get(node)
        return tuple(state.changes) if state is not None else ()

    def _settle(self, node: str, state: _Node, now: float) -> list[Applied]:
        applied_gen = state.applied_generation
        if applied_gen is None or state.applied_uid is None:
            return []
        done: list[Applied] = []
        keep: list[Change] = []
        for change in state.changes:
            if (
                change.generation is not None
                and change.uid == state.applied_uid
                and change.generation <= applied_gen
            ):
                done.append(Applied(node, max(0.0, now - change.at), change.cause, change.policies))
            else:
                keep.append(change)
        state.changes = keep
        return done
