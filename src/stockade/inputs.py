"""Reading a command's input: a file or stdin, at most the input limit and one byte.

The byte past the limit is read so that the loader can tell "too large" from "just
fits" (``yamlload.MAX_INPUT_BYTES``). Used by ``stockade`` and ``stockade convert``.
"""

from __future__ import annotations

import sys

from stockade.yamlload import MAX_INPUT_BYTES


def read_input(path: str) -> bytes:
    """The bytes of ``path`` (``-``: stdin), at most ``MAX_INPUT_BYTES + 1``; OSError."""
    if path == "-":
        return _read_stdin()
    with open(path, "rb") as stream:
        return stream.read(MAX_INPUT_BYTES + 1)


def _read_stdin() -> bytes:
    binary = getattr(sys.stdin, "buffer", None)
    if binary is not None:
        data: bytes = binary.read(MAX_INPUT_BYTES + 1)
        return data
    # A text stream without bytes underneath (an embedding, a test's StringIO):
    # its text, as UTF-8; a lone surrogate stays invalid for the loader to report.
    return sys.stdin.read(MAX_INPUT_BYTES + 1).encode("utf-8", "surrogatepass")
