"""Label and field selectors as the API server parses them (list, watch, deletecollection)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from stockade_lab.emulator.status_errors import ApiError

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([^\s!=(),]+)\s*(==|!=|=)\s*([^\s!=(),]*)\s*$")


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses: ``a in (x,y),b`` -> [``a in (x,y)``, ``b``]."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


LabelTest = Callable[[Mapping[str, str]], bool]


def _label_equals(key: str, value: str, *, negate: bool) -> LabelTest:
    def test(labels: Mapping[str, str]) -> bool:
        return (labels.get(key) == value) != negate

    return test


def _label_in(key: str, values: set[str], *, negate: bool) -> LabelTest:
    def test(labels: Mapping[str, str]) -> bool:
        return (labels.get(key) in values) != negate

    return test


def _label_exists(key: str, *, negate: bool) -> LabelTest:
    def test(labels: Mapping[str, str]) -> bool:
        return (key in labels) != negate

    return test


def _field_equals(path: str, value: str, *, negate: bool) -> Predicate:
    def test(obj: Obj) -> bool:
        return (field_value(obj, path) == value) != negate

    return test


def parse_label_selector(text: str | None) -> Predicate:
    """Compile a label selector (=, ==, !=, in, notin, exists, !key) into a predicate."""
    if not text or not text.strip():
        return lambda obj: True
    tests: list[LabelTest] = []
    for term in _split_top(text):
        eq = _EQ_RE.match(term)
        if eq:
            key, op, value = eq.groups()
            tests.append(_label_equals(key, value, negate=op == "!="))
            continue
        match = _SET_RE.match(term)
        if not match:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        negate, key, op, values_text = match.groups()
        if op:
            if negate:
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
            values = {value.strip() for value in values_text.split(",") if value.strip()}
            tests.append(_label_in(key, values, negate=op == "notin"))
        else:
            tests.append(_label_exists(key, negate=bool(negate)))

    def predicate(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(test(labels) for test in tests)

    return predicate


def field_value(obj: Obj, path: str) -> str:
    """The string form of a dotted field, as field selectors compare it ("" when absent)."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(text: str | None) -> Predicate:
    """Compile a field selector: any dotted field with ``=``, ``==`` or ``!=``."""
    if not text or not text.strip():
        return lambda obj: True
    tests: list[Predicate] = []
    for term in _split_top(text):
        match = re.match(r"^\s*([^\s!=]+)\s*(==|!=|=)\s*(.*?)\s*$", term)
        if not match:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        path, op, value = match.groups()
        value = value.replace("\\,", ",").replace("\\=", "=").replace("\\\\", "\\")
        tests.append(_field_equals(path, value, negate=op == "!="))
    return lambda obj: all(test(obj) for test in tests)


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector object in kubectl's text form (``<none>`` when it selects everything)."""
    if not selector:
        return "<none>"
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op = expr.get("operator", "")
        key = expr.get("key", "")
        values = ",".join(expr.get("values") or [])
        if op == "In":
            terms.append(f"{key} in ({values})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({values})")
        elif op == "Exists":
            terms.append(key)
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
    return ",".join(terms) or "<none>"
