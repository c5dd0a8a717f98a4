"""Desired versus published: which writes make the API match the compiler's output.

Purely computational: no I/O, no clock. :class:`stockade.controller.publisher.Publisher`
does the side effects (it calls the API with the writes :func:`plan_writes` returns)
and tells :class:`Coalescer` what time it is.

Every published object carries the hash of its ``spec`` in the annotation
``stockade.dev/hash``, so comparing a desired object with a published one is a
string comparison, and adopting what a previous controller published needs no
read of any spec.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from stockade.encoded import Encoded
from stockade.ruleset import (
    NodeRuleSet,
    PeerSet,
    node_rule_set_to_dict,
    peer_set_to_dict,
    stable_hash,
)

HASH_ANNOTATION = "stockade.dev/hash"
SET_LABEL = "stockade.dev/set"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "stockade-controller"

Kind = Literal["NodeRuleSet", "PeerSet"]
NODE_RULE_SET: Final = "NodeRuleSet"
PEER_SET: Final = "PeerSet"
Verb = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    """A published object: its kind and (cluster-scoped) name."""

    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class Desired:
    """What an object should hold: its spec, its labels, and the spec's hash.

    ``source`` is the spec, or the compiler's output it is made from (a
    :class:`NodeRuleSet` or :class:`PeerSet`, which the compiler holds anyway): the
    spec is then made again when asked for, and not kept. A published object's spec
    is needed again only in the rare case that it must be rewritten unchanged; kept,
    the specs of a large cluster's rule sets were a third of the controller's memory.
    ``spec_json``, when set, is the canonical JSON of the spec (the hashed text): the
    bodies are then sent with it, not encoded again.
    """

    source: Mapping[str, Any] | NodeRuleSet | PeerSet
    labels: Mapping[str, str]
    hash: str
    spec_json: str = ""

    @property
    def spec(self) -> Mapping[str, Any]:
        """The spec (made from the compiler's output when that is the source)."""
        source = self.source
        if isinstance(source, NodeRuleSet):
            return node_rule_set_to_dict(source)
        if isinstance(source, PeerSet):
            return peer_set_to_dict(source)
        return source

    def policy_names(self) -> set[str]:
        """The policies a NodeRuleSet spec enforces (ClusterNetworkPolicies included)."""
        source = self.source
        if isinstance(source, NodeRuleSet):
            names = {np.policy.name for np in source.policies}
            return names | {cp.policy.name for cp in source.cluster_policies}
        out: set[str] = set()
        if isinstance(source, PeerSet):
            return out
        for field in ("policies", "clusterPolicies"):
            for entry in source.get(field) or ():
                name = (entry.get("policy") or {}).get("name")
                if name:
                    out.add(str(name))
        return out

    def _with_spec(self, metadata: dict[str, Any]) -> dict[str, Any]:
        if not self.spec_json:
            return {"metadata": metadata, "spec": dict(self.spec)}
        # The text is what the API client sends; the spec as a mapping is made only
        # if something reads it (a test's fake client): made again for every body
        # of a flush, it cost more than the encoding that produced the text.
        content = {"metadata": metadata, "spec": SpecView(self)}
        meta_json = json.dumps(metadata, separators=(",", ":"))
        return Encoded(content, f'{{"metadata":{meta_json},"spec":{self.spec_json}}}')

    def body(self, name: str) -> dict[str, Any]:
        """The whole object to create (kind and apiVersion are the client's)."""
        return self._with_spec(
            {
                "name": name,
                "labels": dict(self.labels),
                "annotations": {HASH_ANNOTATION: self.hash},
            }
        )

    def patch(self) -> dict[str, Any]:
        """A merge patch that makes a published object this one.

        The spec is sent whole: every field of the rule-set models is always
        serialised (None included), so merging it replaces every value, and lists
        are replaced wholesale by a merge patch. The status is the agent's and is
        not touched.
        """
        return self._with_spec(
            {
                "labels": dict(self.labels),
                "annotations": {HASH_ANNOTATION: self.hash},
            }
        )


class SpecView(Mapping[str, Any]):
    """The spec of a :class:`Desired`, made from its source the first time it is read.

    Stands for the spec in an :class:`~stockade.encoded.Encoded` body, whose text is
    what goes over the wire; a deep copy is a plain dict.
    """

    __slots__ = ("_desired", "_spec")

    def __init__(self, desired: Desired) -> None:
        self._desired = desired
        self._spec: Mapping[str, Any] | None = None

    def _made(self) -> Mapping[str, Any]:
        if self._spec is None:
            self._spec = self._desired.spec
        return self._spec

    def __getitem__(self, key: str) -> Any:
        return self._made()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._made())

    def __len__(self) -> int:
        return len(self._made())

    def __repr__(self) -> str:
        return repr(dict(self._made()))

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self._made()), memo)


HASH_LENGTH = 20


def content_hash(spec: Mapping[str, Any]) -> str:
    """The hash of a spec, as written in ``stockade.dev/hash``."""
    return stable_hash(spec, HASH_LENGTH)


def _canonical(spec: Mapping[str, Any]) -> tuple[str, str]:
    """The canonical JSON of a spec and its hash (``content_hash``, one encoding)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return text, hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def desired_node(rs: NodeRuleSet) -> Desired:
    """A NodeRuleSet as its custom resource (named after the node)."""
    text, digest = _canonical(node_rule_set_to_dict(rs))
    return Desired(rs, {MANAGED_BY_LABEL: MANAGED_BY}, digest, text)


def desired_peer_set(ps: PeerSet) -> Desired:
    """A PeerSet shard as its custom resource, labelled with its set's name."""
    labels = {MANAGED_BY_LABEL: MANAGED_BY, SET_LABEL: ps.set_name}
    text, digest = _canonical(peer_set_to_dict(ps))
    return Desired(ps, labels, digest, text)


def published_hash(obj: Mapping[str, Any]) -> str:
    """The hash annotation of a listed object ("" when it has none: rewrite it)."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return str(annotations.get(HASH_ANNOTATION) or "")


def published_from_list(kind: Kind, items: Iterable[Mapping[str, Any]]) -> dict[ObjectKey, str]:
    """What a listing says is published: object key to hash annotation."""
    out: dict[ObjectKey, str] = {}
    for obj in items:
        name = (obj.get("metadata") or {}).get("name")
        if name:
            out[ObjectKey(kind, str(name))] = published_hash(obj)
    return out


@dataclass(frozen=True, slots=True)
class Write:
    """One API call to make: create, update (merge patch) or delete ``key``."""

    verb: Verb
    key: ObjectKey
    desired: Desired | None = None  # None for a delete


# Peer sets are written before the rule sets that refer to them, and deleted after
# the rule sets that referred to them, so an agent never sees a reference to a set
# that is not there (make before break).
_PHASE = {
    ("create", PEER_SET): 0,
    ("update", PEER_SET): 0,
    ("create", NODE_RULE_SET): 1,
    ("update", NODE_RULE_SET): 1,
    ("delete", NODE_RULE_SET): 2,
    ("delete", PEER_SET): 3,
}


def plan_writes(
    desired: Mapping[ObjectKey, Desired],
    published: Mapping[ObjectKey, str],
    keys: Iterable[ObjectKey],
) -> list[list[Write]]:
    """The writes that make ``keys`` match, grouped in phases to run in order.

    A key desired but not published is created; published with another hash,
    updated; published but not desired, deleted; otherwise left alone. Within a
    phase the writes are independent (they may run concurrently) and sorted by key.
    """
    phases: list[list[Write]] = [[], [], [], []]
    for key in sorted(set(keys)):
        want = desired.get(key)
        have = published.get(key)
        write: Write | None
        if want is None:
            write = None if have is None else Write("delete", key)
        elif have is None:
            write = Write("create", key, want)
        elif have != want.hash:
            write = Write("update", key, want)
        else:
            write = None
        if write is not None:
            phases[_PHASE[(write.verb, key.kind)]].append(write)
    return [phase for phase in phases if phase]


class Coalescer:
    """When to flush: at most once per ``interval`` seconds, never right on the first event.

    Events only :meth:`mark` the state dirty. A flush is due ``settle`` seconds after
    the first unflushed event, and no sooner than ``interval`` after the previous
    flush began, so a burst of a thousand events becomes one flush. Time comes in
    as an argument (seconds, any monotonic origin), so tests drive it by hand.
    """

    def __init__(
        self,
        interval: float,
        settle: float | None = None,
        quiet: float = 0.0,
        max_delay: float | None = None,
    ) -> None:
        if interval < 0 or quiet < 0:
            raise ValueError("interval and quiet must not be negative")
        self.interval = interval
        self.settle = interval if settle is None else settle
        # While events keep coming (a burst), wait for `quiet` seconds without one,
        # but never longer than `max_delay` after the first: a long burst becomes a
        # few flushes of its final state, not one flush per interval of each
        # intermediate state.
        self.quiet = quiet
        self.max_delay = max(self.settle, max_delay if max_delay is not None else self.settle)
        self._last_event: float | None = None
        self._dirty_since: float | None = None
        self._last_flush: float | None = None
        self._not_before: float | None = None

    @property
    def dirty(self) -> bool:
        """Whether something waits to be flushed."""
        return self._dirty_since is not None

    @property
    def dirty_since(self) -> float | None:
        """When the first event not yet flushed came (None: nothing is dirty)."""
        return self._dirty_since

    def mark(self, now: float) -> None:
        """Something changed at ``now``."""
        if self._dirty_since is None:
            self._dirty_since = now
        self._last_event = now

    def due_in(self, now: float) -> float | None:
        """Seconds until the next flush (0: now); None when nothing is dirty."""
        if self._dirty_since is None:
            return None
        at = self._dirty_since + self.settle
        if self.quiet and self._last_event is not None:
            quiet_at = min(self._last_event + self.quiet, self._dirty_since + self.max_delay)
            at = max(at, quiet_at)
        if self._last_flush is not None:
            at = max(at, self._last_flush + self.interval)
        if self._not_before is not None:
            at = max(at, self._not_before)
        return max(0.0, at - now)

    def begin(self, now: float) -> None:
        """A flush starts at ``now`` and takes everything marked so far."""
        self._dirty_since = None
        self._last_flush = now
        self._not_before = None

    def retry(self, now: float, delay: float) -> None:
        """The flush left work undone: flush again, not before ``delay`` seconds."""
        self.mark(now)
        self._not_before = now + delay
