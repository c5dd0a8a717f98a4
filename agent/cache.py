"""What the agent's watches hold, and the bundle it makes of them (pure: no I/O, no clock).

The agent watches its own node's NodeRuleSet and every PeerSet. :class:`WatchCache`
keeps the watched objects; :meth:`WatchCache.assemble` turns them into what the sync
loop does next:

- :class:`Ready`: the rule set and every shard of every set it names; apply it.
  A NodeRuleSet that exists with no policies is the explicit empty rule set (the
  controller publishes one for every Node): applying it opens the node.
- :class:`Missing`: there is no NodeRuleSet for the node (deleted by accident, the
  CRD deleted, an empty list). Absence is not "no policy": keep enforcing what is
  applied (fail static) and say so.
- :class:`Waiting`: some named set is not complete yet (the controller writes sets
  before the rule sets that name them, but the shards of one set, or a set being
  resharded, can arrive in any order); keep enforcing what is applied.
- :class:`Invalid`: the NodeRuleSet's spec (or a named PeerSet shard) does not
  parse; keep enforcing what is applied and report the error.

A set is complete when shard 0 says it has ``N`` shards and shards ``1 .. N-1`` are
present, each saying ``N`` too. Shards of another count (left over from a reshard,
deleted by the controller after the rule sets) are ignored, so a set being resharded
is always seen whole, either its old or its new version.

The bundle is also what the agent keeps on disk (:func:`bundle_to_json`), so a node
that restarts while the API server is away comes back enforcing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from stockade.ruleset import (
    NodeRuleSet,
    PeerSet,
    node_rule_set_from_dict,
    node_rule_set_to_dict,
    peer_set_from_dict,
    peer_set_to_dict,
    stable_hash,
)

JsonObject = dict[str, Any]

SET_LABEL = "stockade.dev/set"
"""The label the controller's publisher puts on every PeerSet shard (the set's name)."""

STATE_FORMAT = 1


def empty_rule_set(node: str) -> NodeRuleSet:
    """The rule set of a node that no policy concerns: nothing is enforced."""
    return NodeRuleSet(node, (), (), ())


def bundle_hash(node: NodeRuleSet, peer_sets: Mapping[str, Sequence[PeerSet]]) -> str:
    """A short hash of everything applied: the rule set and the shards of its sets."""
    payload = {
        "nodeRuleSet": node_rule_set_to_dict(node),
        "peerSets": {
            name: [peer_set_to_dict(ps) for ps in sorted(shards, key=lambda p: p.shard)]
            for name, shards in sorted(peer_sets.items())
        },
    }
    return stable_hash(payload, 20)


@dataclass(frozen=True)
class Ready:
    """A complete bundle to apply; ``generation`` is None when there is no NodeRuleSet."""

    node: NodeRuleSet
    peer_sets: Mapping[str, tuple[PeerSet, ...]]
    hash: str
    generation: int | None


@dataclass(frozen=True)
class Waiting:
    """Named sets that are not complete: ``missing`` maps a set to what is lacking."""

    generation: int | None
    missing: Mapping[str, str]

    @property
    def message(self) -> str:
        """One line for logs and the status."""
        parts = [f"{name} ({why})" for name, why in sorted(self.missing.items())]
        return "waiting for PeerSets: " + ", ".join(parts)


@dataclass(frozen=True)
class Missing:
    """No NodeRuleSet for the node: keep what is applied; ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class Invalid:
    """The NodeRuleSet (or a shard of a set it names) cannot be used."""

    generation: int | None
    error: str


Outcome = Ready | Waiting | Invalid | Missing


@dataclass(frozen=True)
class _Shard:
    """One watched PeerSet object: parsed, or the reason it does not parse."""

    object_name: str
    set_name: str
    shard: int
    shards: int
    peer_set: PeerSet | None
    error: str | None


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"spec.{where}: {first['msg']}" if where else str(first["msg"])


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _generation(obj: Mapping[str, Any]) -> int | None:
    value = (obj.get("metadata") or {}).get("generation")
    return int(value) if value is not None else None


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def parse_shard(obj: Mapping[str, Any]) -> _Shard:
    """A watched PeerSet object as a shard (invalid ones keep their set and error)."""
    name = _name(obj)
    spec = obj.get("spec")
    labels = (obj.get("metadata") or {}).get("labels") or {}
    raw = spec if isinstance(spec, Mapping) else {}
    set_name = str(raw.get("setName") or labels.get(SET_LABEL) or name)
    try:
        ps = peer_set_from_dict(spec)
    except ValidationError as exc:
        return _Shard(
            name,
            set_name,
            _int(raw.get("shard"), 0),
            _int(raw.get("shards"), 1),
            None,
            f"PeerSet {name}: {_validation_message(exc)}",
        )
    return _Shard(name, ps.set_name, ps.shard, ps.shards, ps, None)


class WatchCache:
    """The NodeRuleSet of one node and every PeerSet shard, as the watches last saw them.

    Objects are plain JSON dicts as the API serves them. A NodeRuleSet's spec is parsed
    again only when it changes (a status write by the agent itself changes nothing).
    """

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.node_object: JsonObject | None = None
        self._parsed_spec: Any = None
        self._parsed: NodeRuleSet | str | None = None
        self._shards: dict[str, _Shard] = {}  # by object name
        self._by_set: dict[str, set[str]] = {}  # set name -> object names

    # ------------------------------------------------------------------ NodeRuleSet

    def set_node(self, obj: Mapping[str, Any] | None) -> None:
        """The node's NodeRuleSet was listed, added or modified (None: it is gone)."""
        if obj is not None and _name(obj) != self.node_name:
            return
        self.node_object = dict(obj) if obj is not None else None
        spec = obj.get("spec") if obj is not None else None
        if obj is None:
            self._parsed_spec, self._parsed = None, None
            return
        if self._parsed is not None and spec == self._parsed_spec:
            return
        self._parsed_spec = spec
        try:
            parsed = node_rule_set_from_dict(spec)
        except ValidationError as exc:
            self._parsed = f"NodeRuleSet {self.node_name}: {_validation_message(exc)}"
            return
        if parsed.node != self.node_name:
            self._parsed = (
                f"NodeRuleSet {self.node_name}: spec.node is {parsed.node!r}, "
                f"not {self.node_name!r}"
            )
            return
        self._parsed = parsed

    def replace_nodes(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """A fresh list of NodeRuleSets (by field selector: this node's, or none)."""
        mine = [o for o in objs if _name(o) == self.node_name]
        self.set_node(mine[0] if mine else None)

    def node_event(self, kind: str, obj: Mapping[str, Any]) -> None:
        """A watch event about NodeRuleSets."""
        if kind == "DELETED":
            if _name(obj) == self.node_name:
                self.set_node(None)
        elif kind in ("ADDED", "MODIFIED"):
            self.set_node(obj)

    @property
    def generation(self) -> int | None:
        """The generation of the watched NodeRuleSet (None when there is none)."""
        return _generation(self.node_object) if self.node_object is not None else None

    @property
    def node_status(self) -> Mapping[str, Any]:
        """The status the API holds for the node's NodeRuleSet."""
        if self.node_object is None:
            return {}
        status = self.node_object.get("status")
        return status if isinstance(status, Mapping) else {}

    # ------------------------------------------------------------------ PeerSets

    def put_peer(self, obj: Mapping[str, Any]) -> None:
        """A PeerSet shard was listed, added or modified."""
        self.remove_peer(_name(obj))
        shard = parse_shard(obj)
        self._shards[shard.object_name] = shard
        self._by_set.setdefault(shard.set_name, set()).add(shard.object_name)

    def remove_peer(self, object_name: str) -> None:
        """A PeerSet shard was deleted."""
        old = self._shards.pop(object_name, None)
        if old is not None:
            names = self._by_set.get(old.set_name)
            if names is not None:
                names.discard(object_name)
                if not names:
                    del self._by_set[old.set_name]

    def replace_peers(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """A fresh list of every PeerSet: shards not in it are gone."""
        self._shards.clear()
        self._by_set.clear()
        for obj in objs:
            self.put_peer(obj)

    def peer_event(self, kind: str, obj: Mapping[str, Any]) -> None:
        """A watch event about PeerSets."""
        if kind == "DELETED":
            self.remove_peer(_name(obj))
        elif kind in ("ADDED", "MODIFIED"):
            self.put_peer(obj)

    @property
    def peer_count(self) -> int:
        """How many shards are held."""
        return len(self._shards)

    def complete_set(self, set_name: str) -> tuple[PeerSet, ...] | str:
        """The shards of a complete set in order, or what is lacking (or wrong)."""
        shards = [self._shards[n] for n in self._by_set.get(set_name, ())]
        if not shards:
            return "not found"
        first = [s for s in shards if s.shard == 0]
        if not first:
            return f"shard 0 of {max(s.shards for s in shards)} missing"
        bad = [s for s in first if s.error is not None]
        if bad:
            return str(bad[0].error)
        count = first[0].shards
        chosen: dict[int, _Shard] = {}
        for s in shards:
            if s.shards == count and 0 <= s.shard < count:
                chosen.setdefault(s.shard, s)
        for s in chosen.values():
            if s.error is not None:
                return s.error
        lacking = [str(i) for i in range(count) if i not in chosen]
        if lacking:
            return f"shard {', '.join(lacking)} of {count} missing"
        return tuple(ps for i in range(count) if (ps := chosen[i].peer_set) is not None)

    # ------------------------------------------------------------------ the bundle

    def assemble(self) -> Outcome:
        """What to do now: apply a complete bundle, wait for sets, or report an error."""
        generation = self.generation
        parsed = self._parsed
        if self.node_object is None or parsed is None:
            return Missing(f"NodeRuleSet {self.node_name} not found")
        if isinstance(parsed, str):
            return Invalid(generation, parsed)
        found: dict[str, tuple[PeerSet, ...]] = {}
        missing: dict[str, str] = {}
        for name in parsed.peer_sets:
            got = self.complete_set(name)
            if isinstance(got, str):
                if got.startswith("PeerSet "):  # a shard that does not parse
                    return Invalid(generation, got)
                missing[name] = got
            else:
                found[name] = got
        if missing:
            return Waiting(generation, missing)
        return Ready(parsed, found, bundle_hash(parsed, found), generation)


# --------------------------------------------------------------------------- on disk


def bundle_to_json(ready: Ready) -> JsonObject:
    """The applied bundle as the agent keeps it on disk."""
    return {
        "format": STATE_FORMAT,
        "node": ready.node.node,
        "generation": ready.generation,
        "hash": ready.hash,
        "nodeRuleSet": node_rule_set_to_dict(ready.node),
        "peerSets": [
            peer_set_to_dict(ps)
            for name in sorted(ready.peer_sets)
            for ps in sorted(ready.peer_sets[name], key=lambda p: p.shard)
        ],
    }


class StateError(ValueError):
    """A saved bundle that cannot be used."""


def bundle_from_json(raw: Any, node_name: str) -> Ready:
    """A saved bundle, checked to be ``node_name``'s; raises :class:`StateError`."""
    if not isinstance(raw, Mapping) or raw.get("format") != STATE_FORMAT:
        raise StateError("not a saved bundle of a known format")
    if raw.get("node") != node_name:
        raise StateError(f"saved for node {raw.get('node')!r}, not {node_name!r}")
    try:
        node = node_rule_set_from_dict(raw.get("nodeRuleSet"))
        shards: dict[str, list[PeerSet]] = {}
        for spec in raw.get("peerSets") or []:
            ps = peer_set_from_dict(spec)
            shards.setdefault(ps.set_name, []).append(ps)
    except ValidationError as exc:
        raise StateError(_validation_message(exc)) from None
    peer_sets = {
        name: tuple(sorted(group, key=lambda p: p.shard)) for name, group in shards.items()
    }
    generation = raw.get("generation")
    return Ready(
        node,
        peer_sets,
        bundle_hash(node, peer_sets),
        int(generation) if generation is not None else None,
    )
