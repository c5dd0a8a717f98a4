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


def read_or_report(path: str, errors: list[str]) -> bytes | None:
    """:func:`read_input`, or None after adding why not to ``errors`` (one line)."""
    try:
        return read_input(path)
    except FileNotFoundError:
        errors.append(f"{path}: no such file")
    except IsADirectoryError:
        errors.append(f"{path}: is a directory, not a file")
    except OSError as exc:
        errors.append(f"{path}: cannot read: {exc.strerror or exc}")
    return None


def _read_stdin() -> bytes:
    binary = getattr(sys.stdin, "buffer", None)
    if binary is not None:
        data: bytes = binary.read(MAX_INPUT_BYTES + 1)
        return data
    # A text stream without bytes underneath (an embedding, a test's StringIO):
    # its text, as UTF-8; a lone surrogate stays invalid for the loader to report.
    return sys.stdin.read(MAX_INPUT_BYTES + 1).encode("utf-8", "surrogatepass")
