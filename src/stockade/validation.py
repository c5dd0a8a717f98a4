"""The API server's syntax rules for names, label keys and label values.

Purely computational. stockade refuses what the API server would refuse, so that a
file read offline means what the same objects mean in a cluster, and so that an
object's key (``namespace/name``) can never be spelled two ways: a name holds no
``/`` and no control character, so joining namespace and name is unambiguous.

Each check returns the problems found (empty when valid), worded as the API server
words them, with the value echoed only through :func:`stockade.safetext.short`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_NAME_MAX = 63
LABEL_VALUE_MAX = 63

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
# The same label keys come back object after object (every pod of a Deployment has
# its labels), and checking one takes a few steps: label_key remembers its recent
# answers. Answers are kept as tuples, so no caller can change one.
_CACHED = 8192


def _remembered(check: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    @functools.lru_cache(maxsize=_CACHED)
    def answer(value: str) -> tuple[str, ...]:
        return tuple(check(value))

    @functools.wraps(check)
    def problems(value: str) -> list[str]:
        return list(answer(value))

    return problems


def dns1123_label(value: str) -> list[str]:
    """A DNS-1123 label (namespace names): lowercase alphanumerics and '-', <= 63."""
    if len(value) > DNS1123_LABEL_MAX:
        return [f"must be no more than {DNS1123_LABEL_MAX} characters (has {len(value)})"]
    if not _DNS1123_LABEL.fullmatch(value):
        return [
            "must be a DNS-1123 label: lowercase letters, digits and '-', starting and "
            "ending with a letter or digit"
        ]
    return []


def dns1123_subdomain(value: str) -> list[str]:
    """A DNS-1123 subdomain (Pod, NetworkPolicy and Node names): labels joined by '.'."""
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        return [f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters (has {len(value)})"]
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        return [
            "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        ]
    return []


@_remembered
def label_key(key: str) -> list[str]:
    """A label key: ``[prefix/]name``, prefix a DNS-1123 subdomain, name <= 63."""
    prefix, sep, name = key.rpartition("/")
    problems: list[str] = []
    if sep:
        if not prefix:
            problems.append("prefix part must be non-empty")
        else:
            problems += [f"prefix part {p}" for p in dns1123_subdomain(prefix)]
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > LABEL_NAME_MAX:
        problems.append(f"name part must be no more than {LABEL_NAME_MAX} characters")
    elif not _QUALIFIED_NAME.fullmatch(name):
        problems.append(
            "name part must consist of alphanumerics, '-', '_' or '.', starting and ending "
            "with an alphanumeric"
        )
    return problems


def label_value(value: str) -> list[str]:
    """A label value: empty, or <= 63 alphanumerics, '-', '_', '.' (alphanumeric ends)."""
    if len(value) > LABEL_VALUE_MAX:
        return [f"must be no more than {LABEL_VALUE_MAX} characters (has {len(value)})"]
    if not _LABEL_VALUE.fullmatch(value):
        return [
            "must be empty or consist of alphanumerics, '-', '_' or '.', starting and "
            "ending with an alphanumeric"
        ]
    return []
