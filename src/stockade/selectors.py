"""Kubernetes label selectors: parsing, canonical form and matching.

Purely computational. ``matchLabels`` is folded into ``In`` requirements with one
value, so two selectors that select the same thing have one canonical form (and so
one peer-set name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stockade.errors import FieldError
from stockade.interning import InternTable, freeze
from stockade.safetext import printable, short
from stockade.validation import label_key, label_value

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One requirement of a selector; ``values`` is sorted and has no duplicates."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this requirement."""
        op = self.operator
        if op == "In":
            return labels.get(self.key) in self.values
        if op == "NotIn":
            # A missing key satisfies NotIn, as in Kubernetes.
            return labels.get(self.key) not in self.values
        if op == "Exists":
            return self.key in labels
        return self.key not in labels

    def to_dict(self) -> dict[str, Any]:
        """The ``matchExpressions`` item for this requirement."""
        out: dict[str, Any] = {"key": self.key, "operator": self.operator}
        if self.values:
            out["values"] = list(self.values)
        return out


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A canonical label selector: requirements sorted, ANDed; empty selects all."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when the selector selects everything."""
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every requirement."""
        return all(req.matches(labels) for req in self.requirements)

    def to_dict(self) -> dict[str, Any]:
        """The selector in Kubernetes form, ``matchExpressions`` only (canonical)."""
        if not self.requirements:
            return {}
        return {"matchExpressions": [req.to_dict() for req in self.requirements]}

    def __str__(self) -> str:
        if not self.requirements:
            return "<all>"
        parts = []
        for req in self.requirements:
            if req.operator == "In" and len(req.values) == 1:
                parts.append(f"{req.key}={req.values[0]}")
            elif req.operator == "In":
                parts.append(f"{req.key} in ({','.join(req.values)})")
            elif req.operator == "NotIn":
                parts.append(f"{req.key} notin ({','.join(req.values)})")
            elif req.operator == "Exists":
                parts.append(req.key)
            else:
                parts.append(f"!{req.key}")
        return ",".join(parts)


EVERYTHING = LabelSelector()
# Valid selectors by their raw content (see stockade.interning).
_PARSED: InternTable[LabelSelector] = InternTable()


def parse_selector(raw: Any, path: str, errors: list[FieldError]) -> LabelSelector:
    """Parse a ``metav1.LabelSelector`` dict; problems go to ``errors``.

    ``None`` and ``{}`` both mean "select everything", as in Kubernetes.
    """
    if raw is None:
        return EVERYTHING
    key = freeze(raw) if type(raw) is dict else None
    known = _PARSED.get(key)
    if known is not None:
        return known
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, "must be a label selector object"))
        return EVERYTHING
    found = len(errors)
    selector = _parse_selector(raw, path, errors)
    if len(errors) == found:
        _PARSED.put(key, selector)
    return selector


def _parse_selector(raw: Mapping[str, Any], path: str, errors: list[FieldError]) -> LabelSelector:
    unknown = set(raw) - {"matchLabels", "matchExpressions"}
    for key in sorted(unknown):
        errors.append(FieldError(f"{path}.{key}", "unknown field in label selector"))
    plain: list[Requirement] = []
    match_labels = raw.get("matchLabels")
    if match_labels is None:
        match_labels = {}
    if not isinstance(match_labels, Mapping):
        errors.append(
            FieldError(
                f"{path}.matchLabels", f"must be a map of strings, got {short(match_labels)}"
            )
        )
        match_labels = {}
    for key, value in match_labels.items():
        where = f"{path}.matchLabels.{printable(str(key)[:80])}"
        if not isinstance(key, str) or not isinstance(value, str):
            errors.append(FieldError(where, f"key and value must be strings, got {short(value)}"))
            continue
        problems = [f"key {p}" for p in label_key(key)]
        problems += [f"value {short(value)} {p}" for p in label_value(value)]
        if problems:
            errors.extend(FieldError(where, p) for p in problems)
            continue
        plain.append(Requirement(key, "In", (value,)))
    exprs = raw.get("matchExpressions")
    if exprs is None:
        exprs = []
    if not isinstance(exprs, list):
        errors.append(FieldError(f"{path}.matchExpressions", f"must be a list, got {short(exprs)}"))
        exprs = []
    for i, expr in enumerate(exprs):
        req = _parse_expression(expr, f"{path}.matchExpressions[{i}]", errors)
        if req is not None:
            # Requirements are ANDed and kept apart (two In on one key intersect).
            plain.append(req)
    canonical = tuple(sorted(set(plain), key=lambda r: (r.key, r.operator, r.values)))
    return LabelSelector(canonical) if canonical else EVERYTHING


def _parse_expression(expr: Any, path: str, errors: list[FieldError]) -> Requirement | None:
    if not isinstance(expr, Mapping):
        errors.append(FieldError(path, "must be an object with key, operator and values"))
        return None
    key = expr.get("key")
    op = expr.get("operator")
    values = expr.get("values")
    ok = True
    if not isinstance(key, str) or not key:
        errors.append(FieldError(f"{path}.key", f"required, a non-empty string, got {short(key)}"))
        ok = False
    else:
        for problem in label_key(key):
            errors.append(FieldError(f"{path}.key", f"{short(key)}: {problem}"))
            ok = False
    if op not in OPERATORS:
        errors.append(
            FieldError(
                f"{path}.operator",
                f"unknown operator {short(op)}; expected one of {', '.join(OPERATORS)}",
            )
        )
        return None
    if values is not None and (
        not isinstance(values, list) or not all(isinstance(v, str) for v in values)
    ):
        errors.append(
            FieldError(f"{path}.values", f"must be a list of strings, got {short(values)}")
        )
        return None
    for i, value in enumerate(values or []):
        for problem in label_value(value):
            errors.append(FieldError(f"{path}.values[{i}]", f"{short(value)} {problem}"))
            ok = False
    vals = tuple(sorted(set(values or [])))
    if op in ("In", "NotIn") and not vals:
        errors.append(FieldError(f"{path}.values", f"must be non-empty when operator is {op}"))
        ok = False
    if op in ("Exists", "DoesNotExist") and vals:
        errors.append(FieldError(f"{path}.values", f"must be empty when operator is {op}"))
        ok = False
    if not ok:
        return None
    assert isinstance(key, str)
    return Requirement(key, op, vals)
