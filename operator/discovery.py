"""Wait until stockade's CRDs are served, before any watch starts.

kopf's resource scanning is off (it would need RBAC on CustomResourceDefinitions),
so kopf resolves the resources of its handlers once, when it starts: a controller
started before ``NodeRuleSet`` is served (a fresh ``kubectl apply -k``, where the
Deployment may start before the CRD is established) would never watch NodeRuleSets,
and the agents' status and the sync lag would stay dark until a restart. So the
controller first polls discovery (``GET /apis/stockade.dev/v1alpha1``, which every
authenticated user may read) with a capped exponential back-off, logging what it
waits for, and starts kopf, the publisher and the election only once both kinds are
served. Meanwhile ``/readyz`` answers 503 and ``/healthz`` 200 (waiting is not dead).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from stockade.kube import NODE_RULE_SETS, PEER_SETS, ApiError, KubeClient, KubeError, Resource

log = logging.getLogger("stockade.controller")

# What the controller publishes and watches: both must be served before it starts.
REQUIRED: tuple[Resource, ...] = (NODE_RULE_SETS, PEER_SETS)

FIRST_DELAY = 0.5  # seconds before the second look
MAX_DELAY = 10.0  # the back-off's cap
REPEAT_LOG = 60.0  # an unchanged "still waiting" is logged at most this often


def describe(resource: Resource) -> str:
    """``noderulesets.stockade.dev/v1alpha1``: the CRD's name and the version needed."""
    return f"{resource.plural}.{resource.group}/{resource.version}"


def group_versions(resources: Iterable[Resource]) -> list[str]:
    """The discovery documents to read, each once: ``stockade.dev/v1alpha1``."""
    return sorted({f"{r.group}/{r.version}" if r.group else r.version for r in resources})


def discovery_path(group_version: str) -> str:
    """``/apis/<group>/<version>``, or ``/api/v1`` for the core group."""
    return f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"


def served_names(document: Mapping[str, object]) -> set[str]:
    """The resources an APIResourceList serves (subresources such as ``x/status`` left out)."""
    names: set[str] = set()
    entries = document.get("resources")
    if isinstance(entries, list):
        for entry in entries:
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str) and "/" not in name:
                names.add(name)
    return names


def missing(resources: Sequence[Resource], served: Mapping[str, set[str]]) -> list[Resource]:
    """Which of ``resources`` discovery does not list (``served``: group/version -> names)."""
    out = []
    for r in resources:
        gv = f"{r.group}/{r.version}" if r.group else r.version
        if r.plural not in served.get(gv, set()):
            out.append(r)
    return out


def next_delay(delay: float, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> float:
    """The back-off: ``first``, doubled each time, at most ``cap``."""
    return first if delay <= 0 else min(cap, delay * 2)


Fetch = Callable[[str], Awaitable[Mapping[str, object] | None]]


def client_fetch(client: KubeClient) -> Fetch:
    """Read one discovery document; None when the group/version is not served (404)."""

    async def fetch(group_version: str) -> Mapping[str, object] | None:
        try:
            return await client.request("GET", discovery_path(group_version))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    return fetch


class CrdGate:
    """Polls discovery until every resource in ``resources`` is served.

    ``served`` turns True once they all are (the controller is ready from then on);
    ``waiting_for`` names what was missing at the last look, ``checks`` counts looks.
    """

    def __init__(
        self,
        fetch: Fetch,
        resources: Sequence[Resource] = REQUIRED,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        first: float = FIRST_DELAY,
        cap: float = MAX_DELAY,
    ) -> None:
        self.fetch = fetch
        self.resources = tuple(resources)
        self.sleep = sleep
        self.clock = clock
        self.first = first
        self.cap = cap
        self.served = False
        self.waiting_for: tuple[str, ...] = ()
        self.last_error = ""
        self.checks = 0

    async def look(self) -> list[Resource]:
        """One look at discovery: what is still missing (everything, when unreachable)."""
        self.checks += 1
        served: dict[str, set[str]] = {}
        try:
            for gv in group_versions(self.resources):
                document = await self.fetch(gv)
                served[gv] = served_names(document) if document is not None else set()
        except KubeError as exc:
            self.last_error = str(exc) or type(exc).__name__
            return list(self.resources)
        self.last_error = ""
        return missing(self.resources, served)

    async def wait(self) -> None:
        """Return once everything is served (cancel to give up)."""
        delay = 0.0
        logged: tuple[tuple[str, ...], str] | None = None
        logged_at = 0.0
        started = self.clock()
        while True:
            absent = await self.look()
            if not absent:
                if self.checks > 1:
                    log.info(
                        "CustomResourceDefinitions served after %.1f s: %s; starting the watches",
                        self.clock() - started,
                        ", ".join(describe(r) for r in self.resources),
                    )
                self.waiting_for = ()
                self.served = True
                return
            self.waiting_for = tuple(describe(r) for r in absent)
            delay = next_delay(delay, self.first, self.cap)
            now = self.clock()
            what = (self.waiting_for, self.last_error)
            if what != logged or now - logged_at >= REPEAT_LOG:
                why = (
                    f"discovery failed ({self.last_error})"
                    if self.last_error
                    else "not served by the API server"
                )
                log.warning(
                    "waiting for CustomResourceDefinitions %s: %s (install them with "
                    "`kubectl apply -k manifests/`); not ready, next check in %.1f s",
                    ", ".join(self.waiting_for),
                    why,
                    delay,
                )
                logged, logged_at = what, now
            await self.sleep(delay)
