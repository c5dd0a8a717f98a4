"""One parsed value per distinct raw content: what repeats in the input is parsed once.

Purely computational. A cluster repeats itself: every pod of a Deployment carries
the same labels, and the policies of a namespace template (a default deny, an
"allow from my app") have the same spec in every namespace. Parsing is a pure
function of the raw content, and the parsed values are immutable, so a parser may
keep what it built for a content and hand the same value out again. Sharing also
saves the memory of the copies, and lets the compiler's caches, which are keyed by
these values, find them by identity first.

Only content made of plain JSON types is remembered (:func:`freeze` refuses the
rest), and a table is bounded, so hostile input costs at most a table's worth.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# Markers that make a frozen dict and a frozen list of the same items differ.
_DICT = 0
_LIST = 1
# Deeper content is not remembered (a NetworkPolicy spec nests 8 levels).
MAX_DEPTH = 10


def freeze(raw: Any, depth: int = 0) -> Hashable | None:
    """A hashable value equal for equal content, or None when it cannot be one.

    Content is dicts with string keys, lists, strings, integers and None, as JSON
    and YAML give them; anything else (a boolean, which equals 1 as a key would; a
    float; a subclass of dict) is refused, and so is content nested deeper than
    :data:`MAX_DEPTH`. Keys keep their order: the same map written in another order
    is another value, which costs a second parse and nothing else.
    """
    kind = type(raw)
    if kind is str or raw is None or kind is int:
        return raw  # type: ignore[no-any-return]
    if depth >= MAX_DEPTH:
        return None
    if kind is dict:
        out: list[Hashable] = [_DICT]
        for key, value in raw.items():
            if type(key) is not str:
                return None
            frozen = value
            if type(value) is not str and value is not None:  # the common leaves: no call
                frozen = freeze(value, depth + 1)
                if frozen is None:
                    return None
            out.append(key)
            out.append(frozen)
        return tuple(out)
    if kind is list:
        items: list[Hashable] = [_LIST]
        for value in raw:
            frozen = value
            if type(value) is not str and value is not None:
                frozen = freeze(value, depth + 1)
                if frozen is None:
                    return None
            items.append(frozen)
        return tuple(items)
    return None


class InternTable(Generic[T]):
    """Parsed values by frozen content, at most ``size`` of them.

    When full it starts again empty: clusters repeat a few contents many times, so
    the ones that matter come straight back.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._values: dict[Hashable, T] = {}

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: Hashable | None) -> T | None:
        """The value kept for ``key`` (None: nothing kept, or no key)."""
        if key is None:
            return None
        return self._values.get(key)

    def clear(self) -> None:
        """Forget every value."""
        self._values.clear()

    def put(self, key: Hashable | None, value: T) -> None:
        """Keep ``value`` for ``key`` (nothing happens without a key)."""
        if key is None:
            return
        if len(self._values) >= self._size:
            self._values.clear()
        self._values[key] = value
