"""Label indexes: which keys carry which label values, for fast selector evaluation.

Selecting with an index costs about the size of the smallest set involved, not the
size of the cluster, which is what keeps a policy event cheap at 100,000 pods.
"""

from __future__ import annotations

from stockade.model import Labels
from stockade.selectors import LabelSelector

_EMPTY: frozenset[str] = frozenset()


class LabelIndex:
    """Keys (pod or namespace names) by label key and value."""

    def __init__(self) -> None:
        self._by_value: dict[str, dict[str, set[str]]] = {}
        self._labels: dict[str, Labels] = {}

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, key: object) -> bool:
        return key in self._labels

    def keys(self) -> set[str]:
        """Every indexed key (a new set)."""
        return set(self._labels)

    def labels(self, key: str) -> Labels:
        """The labels ``key`` was indexed with."""
        return self._labels[key]

    def add(self, key: str, labels: Labels) -> None:
        """Index ``key``; it must not be indexed yet."""
        self._labels[key] = labels
        for k, v in labels.items():
            self._by_value.setdefault(k, {}).setdefault(v, set()).add(key)

    def remove(self, key: str) -> None:
        """Forget ``key`` if indexed."""
        labels = self._labels.pop(key, None)
        if labels is None:
            return
        for k, v in labels.items():
            values = self._by_value[k]
            keys = values[v]
            keys.discard(key)
            if not keys:
                del values[v]
                if not values:
                    del self._by_value[k]

    def with_value(self, key: str, value: str) -> set[str] | frozenset[str]:
        """Keys whose label ``key`` equals ``value`` (do not mutate the result)."""
        return self._by_value.get(key, {}).get(value, _EMPTY)

    def estimate(self, selector: LabelSelector) -> int:
        """An upper bound of how many keys ``selector`` selects, from its In requirements."""
        best = len(self._labels)
        for req in selector.requirements:
            if req.operator == "In":
                by_value = self._by_value.get(req.key, {})
                best = min(best, sum(len(by_value.get(v, ())) for v in req.values))
        return best

    def _union_within(self, key: str, values: tuple[str, ...], scope: set[str] | None) -> set[str]:
        """Keys whose label ``key`` is one of ``values``, among ``scope`` when given.

        Each value's keys are intersected with the scope before the union: the union
        of every value's keys would be as large as the cluster for a common label
        (``env in (prod, staging)``), and the scope is mostly a namespace's pods.
        """
        by_value = self._by_value.get(key, {})
        found = [by_value.get(v, _EMPTY) for v in values]
        if scope is None:
            return set().union(*found)
        return set().union(*[scope.intersection(keys) for keys in found])

    def select(self, selector: LabelSelector, within: set[str] | None = None) -> set[str]:
        """Keys matching ``selector``, restricted to ``within`` when given.

        Requirements narrow a candidate set; ``In`` intersects with the index,
        the others filter the (by then small) candidates.
        """
        reqs = selector.requirements
        cand: set[str] | None = None
        # Index-driven requirements first: they shrink the candidates cheaply.
        for req in reqs:
            if req.operator != "In":
                continue
            scope = within if cand is None else cand
            if len(req.values) == 1:
                hits = self.with_value(req.key, req.values[0])
                # Set intersections walk the smaller side: neither is copied whole.
                cand = set(hits) if scope is None else scope.intersection(hits)
            else:
                cand = self._union_within(req.key, req.values, scope)
            if not cand:
                return set()
        if cand is None:
            cand = set(self._labels) if within is None else set(within)
        labels = self._labels
        for req in reqs:
            if req.operator == "In":
                continue
            cand = {k for k in cand if req.matches(labels[k])}
        return cand
