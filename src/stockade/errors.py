"""Errors that name the object and the field they are about.

A policy the engine cannot understand is rejected whole: it is reported with one
:class:`FieldError` per problem and enforces nothing, so it can never widen what
other policies allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from stockade.safetext import bounded as _shown


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """Identifies a Kubernetes object in messages: kind, namespace and name."""

    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{_shown(self.kind)} {_shown(self.namespace)}/{_shown(self.name)}"
        return f"{_shown(self.kind)} {_shown(self.name)}"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem at one field path, e.g. ``spec.ingress[0].from[1].ipBlock.cidr``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidObjectError(ValueError):
    """An object was rejected as a whole; ``errors`` lists every problem found."""

    def __init__(self, ref: ObjectRef, errors: list[FieldError], source: str | None = None):
        self.ref = ref
        self.errors = tuple(errors)
        self.source = source
        super().__init__("; ".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem: ``[source: ]Kind ns/name: field: message``."""
        prefix = f"{self.source}: " if self.source else ""
        return [f"{prefix}{self.ref}: {err}" for err in self.errors]
