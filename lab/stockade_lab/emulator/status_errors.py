"""API errors rendered as ``Status`` objects, the way the Kubernetes API server sends them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ApiError(Exception):
    """An HTTP error with a Kubernetes ``Status`` body."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        """The ``Status`` object for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(plural: str, name: str, group: str = "") -> ApiError:
    """``pods "x" not found``."""
    what = f"{plural}.{group}" if group else plural
    return ApiError(
        404,
        "NotFound",
        f'{what} "{name}" not found',
        {"name": name, "group": group, "kind": plural},
    )


def conflict(plural: str, name: str, group: str = "") -> ApiError:
    """The optimistic-concurrency failure (stale resourceVersion or precondition)."""
    what = f"{plural}.{group}" if group else plural
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {what} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        {"name": name, "group": group, "kind": plural},
    )


def already_exists(plural: str, name: str, group: str = "") -> ApiError:
    """``pods "x" already exists``."""
    what = f"{plural}.{group}" if group else plural
    return ApiError(
        409,
        "AlreadyExists",
        f'{what} "{name}" already exists',
        {"name": name, "group": group, "kind": plural},
    )


def invalid(kind: str, name: str, message: str) -> ApiError:
    """A 422 ``Invalid`` error."""
    return ApiError(
        422, "Invalid", f'{kind} "{name}" is invalid: {message}', {"name": name, "kind": kind}
    )


@dataclass(frozen=True)
class Cause:
    """One field error of a 422 ``Invalid`` (a ``StatusCause``)."""

    reason: str  # FieldValueInvalid, FieldValueRequired...
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def invalid_fields(kind: str, name: str, causes: list[Cause], group: str = "") -> ApiError:
    """A 422 ``Invalid`` listing field errors the way kube-apiserver words them.

    ``Service "web" is invalid: spec.clusterIP: Invalid value: "x": field is immutable``;
    several errors are listed in brackets, comma-separated. ``details.causes`` names
    each field.
    """
    what = f"{kind}.{group}" if group else kind
    text = str(causes[0]) if len(causes) == 1 else "[" + ", ".join(map(str, causes)) + "]"
    details: dict[str, Any] = {"name": name, "group": group, "kind": kind}
    details["causes"] = [
        {"reason": c.reason, "message": c.message, "field": c.field} for c in causes
    ]
    return ApiError(422, "Invalid", f'{what} "{name}" is invalid: {text}', details)
