"""API errors rendered as ``Status`` objects, the way the Kubernetes API server sends them."""

from __future__ import annotations

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
