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

ClusterNetworkPolicy's CRD is optional (:data:`OPTIONAL`): a cluster may run stockade
without it. Once the required kinds are served, :meth:`CrdGate.optional_served` looks
whether it is served too (a few more seconds when the gate had to wait, as on a fresh
install where it is being established with the others); when it is not, the
controller runs without ClusterNetworkPolicies and says so once; it then looks every
30 s (:meth:`CrdGate.until_served`) and, once the CRD is served, stops so that it
starts again watching them (kopf cannot add a watch to a running operator).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from stockade.kube import (
    CLUSTER_NETWORK_POLICIES,
    ISOLATION_POLICIES,
    NODE_RULE_SETS,
    PEER_SETS,
    ApiError,
    KubeClient,
    KubeError,
    Resource,
)

log = logging.getLogger("stockade.controller")

# What the controller publishes and watches: both must be served before it starts.
REQUIRED: tuple[Resource, ...] = (NODE_RULE_SETS, PEER_SETS)
# IsolationPolicy's CRD ships with stockade's, but an install may predate it.
OPTIONAL: tuple[Resource, ...] = (CLUSTER_NETWORK_POLICIES, ISOLATION_POLICIES)
_INSTALL = {ISOLATION_POLICIES.plural: "manifests/crds.yaml"}
# How long to look again for an optional CRD when the required ones were not served
# at the first look (an install in progress).
OPTIONAL_GRACE = 5.0
# How often to look whether an absent optional CRD has been installed since.
OPTIONAL_RECHECK = 30.0

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

    async def _absent(self, resources: Sequence[Resource]) -> tuple[list[Resource], str]:
        """One look: which of ``resources`` are not served, and why discovery failed."""
        served: dict[str, set[str]] = {}
        try:
            for gv in group_versions(resources):
                document = await self.fetch(gv)
                served[gv] = served_names(document) if document is not None else set()
        except KubeError as exc:
            return list(resources), str(exc) or type(exc).__name__
        return missing(resources, served), ""

    async def optional_served(
        self, optional: Sequence[Resource] = OPTIONAL, grace: float = OPTIONAL_GRACE
    ) -> tuple[Resource, ...]:
        """Which of ``optional`` are served (call after :meth:`wait`).

        When the gate had to wait (the CRDs were being installed), absent ones are
        looked for again during ``grace`` seconds, since they are likely installed
        with the others. What stays absent is logged once: the controller runs
        without it (see :meth:`until_served`).
        """
        started = self.clock()
        delay = 0.0
        while True:
            absent, error = await self._absent(optional)
            if not absent or self.checks <= 1 or self.clock() - started >= grace:
                break
            delay = next_delay(delay, self.first, self.cap)
            await self.sleep(delay)
        for resource in absent:
            why = f"discovery failed ({error})" if error else "not served by the API server"
            log.warning(
                "CustomResourceDefinition %s: %s; running without %s (install "
                "%s: the controller restarts to watch them once served)",
                describe(resource),
                why,
                resource.plural,
                _INSTALL.get(resource.plural, "manifests/cnp-crd.yaml or the upstream CRD"),
            )
        return tuple(r for r in optional if r not in absent)

    async def until_served(
        self, absent: Sequence[Resource], every: float = OPTIONAL_RECHECK
    ) -> Resource:
        """Look every ``every`` seconds; return the first of ``absent`` found served.

        kopf cannot add a watch to a running operator (its scanning is off), so the
        controller ends when this returns and starts again (the container restarts)
        watching it: a CRD installed after stockade is enforced without anyone
        having to restart the controller. A failed look is tried again quietly.
        """
        while True:
            await self.sleep(every)
            still, error = await self._absent(absent)
            if error:
                continue
            for resource in absent:
                if resource not in still:
                    return resource
