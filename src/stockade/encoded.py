"""A JSON object sent with the encoding its producer already made.

Pure data, shared by the controller's write planning (which makes the text while
hashing specs) and the API client (which sends it): neither layer imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Encoded(dict[str, Any]):
    """A JSON object whose encoding is already made: sent as ``text``, not re-encoded.

    For bodies a caller has serialised anyway (the publisher hashes the canonical JSON
    of every spec). ``text`` must encode exactly this content; do not change either.
    """

    __slots__ = ("text",)

    def __init__(self, content: Mapping[str, Any], text: str) -> None:
        super().__init__(content)
        self.text = text
