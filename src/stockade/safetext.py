"""Text from untrusted objects, made safe to show to a person.

Names, labels and values come from manifests anyone may write. Printed raw, an ESC
sequence recolours or rewrites the user's terminal, a right-to-left override
reorders what they read, a NUL truncates a log line, and a value of a million
characters (or an alias bomb's expansion) floods the screen and the memory that
formats it. Every human-readable message and table passes what it echoes through
:func:`printable` (control characters escaped) or :func:`short` (escaped and cut).

Purely computational.
"""

from __future__ import annotations

import unicodedata
from typing import Any

#: How many characters of an echoed value a message shows.
ECHO_LIMIT = 60

# Unicode categories that move, hide or reorder text rather than show it:
# controls (Cc), formats such as RLO/LRO/ZWJ (Cf), separators other than the
# space (Zl, Zp), surrogates and unassigned code points.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every control, format and invisible character escaped (``\\x1b``).

    Ordinary letters of any script, digits, punctuation and the plain space pass
    unchanged, so names people write read as they wrote them.
    """
    if text.isprintable():
        # str.isprintable() is False for every category escaped here (Cc, Cf, Cs,
        # Co, Cn, and separators other than the space): the common case is free.
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


def bounded(text: str, limit: int = 80) -> str:
    """``text`` printable and cut to ``limit`` characters (unquoted, for names)."""
    return printable(text[:limit]) + ("..." if len(text) > limit else "")


def short(value: Any, limit: int = ECHO_LIMIT) -> str:
    """A bounded, printable rendering of an untrusted value for an error message.

    Strings are quoted; other scalars are shown as YAML would write them (``true``,
    ``12``, ``null``); a list or map is named by its type and size, never expanded
    (it may be an alias bomb). The result is at most about ``limit`` characters.
    """
    if isinstance(value, str):
        body = printable(value[: limit + 1])
        if len(value) > limit or len(body) > limit:
            return f"'{body[:limit]}...' ({len(value)} characters)"
        return f"'{body}'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = str(value)
        return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} digits)"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return f"a map of {len(value)} key{'s' if len(value) != 1 else ''}"
    return f"a value of type {type(value).__name__}"
