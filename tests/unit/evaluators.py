"""The evaluators that the semantics tables run against.

Every evaluator answers the same question with the same signature as
:func:`stockade_lab.reference.allowed`; the tables in ``test_semantics.py`` run each case
against every one of them, so the compiled engine is held to the reference.
"""

from __future__ import annotations

from typing import Protocol

from stockade.cluster import Cluster
from stockade.verdict import Dataplane
from stockade_lab import reference
from stockade_lab.reference import Endpoint


class Evaluator(Protocol):
    """``allowed(cluster, src, dst, port, protocol, family=None) -> bool``."""

    def __call__(
        self,
        cluster: Cluster,
        src: Endpoint,
        dst: Endpoint,
        port: int,
        protocol: str,
        /,
        family: int | None = None,
    ) -> bool: ...


EVALUATORS: list[tuple[str, Evaluator]] = [
    ("reference", reference.allowed),
]


_DATAPLANES: dict[int, tuple[Cluster, Dataplane]] = {}


def engine_allowed(
    cluster: Cluster,
    src: Endpoint,
    dst: Endpoint,
    port: int,
    protocol: str,
    /,
    family: int | None = None,
) -> bool:
    """The compiled engine's verdict: compile the cluster, evaluate the rule sets."""
    cached = _DATAPLANES.get(id(cluster))
    if cached is None or cached[0] is not cluster:
        cached = (cluster, Dataplane(cluster))
        _DATAPLANES.clear()
        _DATAPLANES[id(cluster)] = cached
    return cached[1].verdict(src, dst, port, protocol, family).allowed


EVALUATORS.append(("engine", engine_allowed))
