"""IsolationPolicy (``stockade.dev/v1alpha1``): model and strict parser.

An IsolationPolicy is a ClusterNetworkPolicy (same spec, same tiers, ordered with
them) whose rules may also name peers *by sameness with the subject pod*, the pod
the rule is judged for (the destination for ingress, the source for egress):

* ``namespaces: {sameAs: Self}`` (or ``{match: Self}``): pods of the subject
  pod's own namespace;
* ``namespaces: {sameLabels: [k, ...]}``: pods of namespaces with every key, each
  with the value the subject pod's namespace has (nothing when it lacks a key);
* ``pods: {sameLabels: [k, ...], namespaceSelector?, podSelector?}``: pods with
  every key, each with the subject pod's value, in the subject pod's namespace
  (no ``namespaceSelector``) or in the namespaces the selector picks, and matching
  ``podSelector`` when given.

Everything else is parsed by :mod:`stockade.cnp`, with its limits and its error
style: the same invalid-input contract (every problem listed, field paths). What
the peers mean when traffic is judged is in :mod:`stockade_lab.reference` and
``docs/tiers.md``. Purely computational: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from stockade.cnp import (
    ClusterNetworkPolicy,
    ClusterPeer,
    _bounded_list,
    _selector,
    _set_fields,
    parse_peer,
    parse_tiered_policy,
)
from stockade.errors import FieldError
from stockade.model import Labels, Pod, expected_string, key_path
from stockade.safetext import short
from stockade.selectors import LabelSelector
from stockade.validation import label_key

GROUP = "stockade.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "IsolationPolicy"
PLURAL = "isolationpolicies"
SHORT_NAME = "isop"
SELF = "Self"
MAX_SAME_LABELS = 25

# The fields of a `namespaces` peer: a label selector's, or one sameness field.
_SELECTOR_FIELDS = ("matchLabels", "matchExpressions")
_NAMESPACE_SAME_FIELDS = ("sameAs", "match", "sameLabels")
_POD_FIELDS = ("sameLabels", "namespaceSelector", "podSelector")


@dataclass(frozen=True, slots=True)
class SamePeer(ClusterPeer):
    """A peer matched by sameness with the subject pod (see the module docstring).

    ``scope`` is ``namespaces`` or ``pods``. For ``namespaces``, ``keys`` empty means
    ``sameAs: Self`` (the subject's namespace), else the namespace labels that must
    be equal. For ``pods``, ``keys`` are the pod labels that must be equal,
    ``in_namespaces`` the namespaceSelector (None: the subject's namespace) and
    ``also`` the podSelector (None: no further condition).
    """

    scope: str = "namespaces"
    keys: tuple[str, ...] = ()
    in_namespaces: LabelSelector | None = None
    also: LabelSelector | None = None

    @property
    def field(self) -> str:
        """The peer field as the API spells it: ``namespaces`` or ``pods``."""
        return self.scope

    def values(self, namespace_labels: Labels, pod: Pod) -> tuple[str, ...] | None:
        """The subject's values of ``keys`` (pod or namespace labels); None when one is
        missing, so the peer matches nothing for that subject. ``sameAs: Self`` gives
        the namespace's name."""
        if self.scope == "namespaces" and not self.keys:
            return (pod.namespace,)
        labels = namespace_labels if self.scope == "namespaces" else pod.labels
        if any(k not in labels for k in self.keys):
            return None
        return tuple(labels[k] for k in self.keys)

    def describe(self, values: tuple[str, ...]) -> str:
        """Why a peer matched, for people: ``same value of tier (qa)`` and the like."""
        if self.scope == "namespaces" and not self.keys:
            return f"same namespace ({values[0]})"
        if self.scope == "namespaces":
            pairs = ", ".join(f"{k}={v}" for k, v in zip(self.keys, values, strict=True))
            return f"same namespace labels {pairs}"
        if len(self.keys) == 1:
            return f"same value of {self.keys[0]} ({values[0]})"
        return f"same values of {', '.join(self.keys)} ({', '.join(values)})"


@dataclass(frozen=True, slots=True)
class IsolationPolicy(ClusterNetworkPolicy):
    """A parsed, valid IsolationPolicy: a ClusterNetworkPolicy that may have SamePeers.

    Its ``key`` is ``IsolationPolicy/<name>``: an IsolationPolicy and a
    ClusterNetworkPolicy may share a name. Of two with the same tier, priority and
    name, the ClusterNetworkPolicy is evaluated first (``kind_rank``).
    """

    kind: ClassVar[str] = KIND
    kind_rank: ClassVar[int] = 1

    @property
    def key(self) -> str:
        """``IsolationPolicy/<name>``: never a ClusterNetworkPolicy's key."""
        return f"{KIND}/{self.name}"


def parse_isolation_policy(obj: Any, source: str | None = None) -> IsolationPolicy:
    """Parse and validate an IsolationPolicy; every problem is collected.

    Raises :class:`~stockade.errors.InvalidObjectError` (one FieldError per problem)
    for anything a ClusterNetworkPolicy of the same spec would be refused for, and
    for a sameness peer that is malformed or mixed with selector fields.
    """
    return parse_tiered_policy(
        obj,
        source,
        kind=KIND,
        api_version=API_VERSION,
        peer=_parse_peer,
        build=IsolationPolicy,
    )


def _sameness_fields(raw: Any) -> list[str]:
    """The peer fields (``namespaces``/``pods``) of an item given with a sameness field."""
    if not isinstance(raw, Mapping):
        return []
    found = []
    for which, fields in (("namespaces", _NAMESPACE_SAME_FIELDS), ("pods", ("sameLabels",))):
        value = raw.get(which)
        if isinstance(value, Mapping) and _set_fields(value, fields):
            found.append(which)
    return found


# What a sameness field stands in for when the item itself (one field set, the
# direction's fields) is checked by the ClusterNetworkPolicy parser.
_STUBS: dict[str, Any] = {"namespaces": {}, "pods": {"podSelector": {}}}


def _parse_peer(raw: Any, path: str, ingress: bool, errors: list[FieldError]) -> ClusterPeer | None:
    """A ClusterNetworkPolicy peer, or a sameness peer.

    The item as a whole (exactly one field, the fields of its direction) is checked
    by :func:`stockade.cnp.parse_peer`, the sameness field standing in as an
    empty one; the sameness field's own problems are listed too.
    """
    same = _sameness_fields(raw)
    if not same:
        return parse_peer(raw, path, ingress, errors)
    assert isinstance(raw, Mapping)
    stub = {k: (_STUBS[k] if k in same else v) for k, v in raw.items()}
    item_ok = parse_peer(stub, path, ingress, errors) is not None
    parsed = [
        _namespaces_same(raw[which], f"{path}.{which}", errors)
        if which == "namespaces"
        else _pods_same(raw[which], f"{path}.{which}", errors)
        for which in same
    ]
    return parsed[0] if item_ok and len(parsed) == 1 else None


def _namespaces_same(
    raw: Mapping[str, Any], path: str, errors: list[FieldError]
) -> SamePeer | None:
    known = (*_SELECTOR_FIELDS, *_NAMESPACE_SAME_FIELDS)
    before = len(errors)
    for key in sorted((k for k in raw if k not in known), key=str):
        errors.append(FieldError(key_path(path, key), "unknown field"))
    given = _set_fields(raw, known)
    if len(given) > 1:
        errors.append(
            FieldError(
                path,
                "sameAs, match, sameLabels and matchLabels/matchExpressions are exclusive, "
                f"got {', '.join(given)}",
            )
        )
    keys: tuple[str, ...] = ()
    for which in given:
        if which == "sameLabels":
            keys = _same_labels(raw[which], f"{path}.sameLabels", errors)
        elif which in ("sameAs", "match"):
            _self(raw[which], f"{path}.{which}", errors)
    if len(errors) != before:
        return None
    return SamePeer(scope="namespaces", keys=keys)


def _self(raw: Any, path: str, errors: list[FieldError]) -> None:
    """``sameAs``/``match``: only ``Self`` is defined."""
    if not isinstance(raw, str):
        errors.append(FieldError(path, expected_string(raw)))
    elif raw != SELF:
        errors.append(FieldError(path, f"must be Self, got {short(raw)}"))


def _pods_same(raw: Mapping[str, Any], path: str, errors: list[FieldError]) -> SamePeer | None:
    before = len(errors)
    for key in sorted((k for k in raw if k not in _POD_FIELDS), key=str):
        errors.append(FieldError(key_path(path, key), "unknown field"))
    keys = _same_labels(raw["sameLabels"], f"{path}.sameLabels", errors)
    ns_raw, pod_raw = raw.get("namespaceSelector"), raw.get("podSelector")
    in_namespaces = (
        None if ns_raw is None else _selector(ns_raw, f"{path}.namespaceSelector", errors)
    )
    also = None if pod_raw is None else _selector(pod_raw, f"{path}.podSelector", errors)
    if len(errors) != before:
        return None
    return SamePeer(scope="pods", keys=keys, in_namespaces=in_namespaces, also=also)


def _same_labels(raw: Any, path: str, errors: list[FieldError]) -> tuple[str, ...]:
    """``sameLabels``: 1 to 25 distinct, valid label keys (``listType=set``)."""
    items = _bounded_list(raw, path, errors, max_items=MAX_SAME_LABELS, min_items=1)
    if items is None:
        return ()
    keys: list[str] = []
    ok = True
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not isinstance(item, str):
            errors.append(FieldError(where, expected_string(item)))
            ok = False
            continue
        problems = label_key(item)
        if problems:
            errors.extend(FieldError(where, f"{short(item)}: {p}") for p in problems)
            ok = False
        elif item in keys:
            errors.append(FieldError(where, f"duplicate value {short(item)}"))
            ok = False
        else:
            keys.append(item)
    return tuple(keys) if ok else ()
