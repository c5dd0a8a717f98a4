"""kopf handlers: thin adapters from watch events to :class:`ControllerState`.

``kopf.on.event`` is used because it sees everything: the initial listing (event
type None), every ADDED/MODIFIED, and DELETED; it writes nothing to the watched
objects (no finalizers, no annotations, unlike the change-detecting handlers).
The handlers are coroutines on purpose: kopf runs plain functions in a thread pool,
and the compiler is fed from one event loop only. Given a client, Pods, Namespaces
and NetworkPolicies come from :class:`~stockade.controller.feed.Feed` s instead,
started and stopped by kopf's startup and cleanup handlers (why: operator/feed.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from stockade.controller.feed import Feed, WithoutSpecs
from stockade.controller.metrics import ControllerMetrics
from stockade.controller.state import (
    ALL_KINDS,
    CLUSTER_NETWORK_POLICY,
    ISOLATION_POLICY,
    NAMESPACE,
    NETWORK_POLICY,
    NODE,
    POD,
    ControllerState,
)
from stockade.kube import (
    NAMESPACES,
    NETWORK_POLICIES,
    NODE_RULE_SETS,
    PODS,
    KubeClient,
    KubeConfig,
    Resource,
)

log = logging.getLogger("stockade.controller")


def connection_info(config: KubeConfig) -> kopf.ConnectionInfo:
    """kopf's credentials from the same config the publisher's client uses."""
    token = config.token
    if config.token_file:
        with open(config.token_file, encoding="utf-8") as fh:
            token = fh.read().strip()
    return kopf.ConnectionInfo(
        server=config.server,
        ca_path=config.ca_file,
        ca_data=None if config.ca_file else config.ca_data,
        insecure=config.insecure or None,
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        default_namespace=config.namespace,
    )


RuleSetObserver = Callable[[str | None, Mapping[str, Any]], None]


def _observer(
    observe: Callable[[str, Any], None], kind: str
) -> Callable[[str | None, Mapping[str, Any]], None]:
    """A feed's callback: its events as the kopf handlers pass them on."""
    return lambda event_type, body: observe(kind, {"type": event_type, "object": body})


def _synced(feed: Feed) -> Callable[[], bool]:
    return lambda: feed.synced


def _rule_sets(
    observer: RuleSetObserver, counted: Mapping[str, Any]
) -> Callable[[str | None, Mapping[str, Any]], None]:
    """The NodeRuleSet feed's callback: counted, then to the publisher."""
    counter = counted["NodeRuleSet"]

    def observe(event_type: str | None, body: Mapping[str, Any]) -> None:
        counter.inc()
        observer(event_type, body)

    return observe


def build_registry(
    state: ControllerState,
    config: KubeConfig,
    metrics: ControllerMetrics,
    on_rule_set: RuleSetObserver | None = None,
    cluster_policies: bool = False,
    isolation_policies: bool = False,
    feed_client: KubeClient | None = None,
    listed_by_feed: dict[str, Callable[[], bool]] | None = None,
) -> kopf.OperatorRegistry:
    """A registry of one controller's handlers (one per instance, nothing global).

    ``on_rule_set`` (the publisher's ``observe_rule_set``) sees every NodeRuleSet
    event, for the agents' status (sync lag); without it NodeRuleSets are not watched.
    ``cluster_policies``: watch ClusterNetworkPolicies too (their CRD is served);
    ``isolation_policies``: IsolationPolicies likewise. ``feed_client``: Pods,
    Namespaces and NetworkPolicies are listed and watched with it by :class:`Feed` s
    inside kopf's lifecycle (else by kopf handlers); ``listed_by_feed`` (the
    publisher's) then learns when each feed's first list is in. NodeRuleSets then
    come from a feed too, without their specs (:class:`WithoutSpecs`).
    """
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(config)

    # The labelled counters, looked up once (not on every event of a burst).
    counted = {k: metrics.watch_events.labels(k) for k in (*ALL_KINDS, "NodeRuleSet")}

    def observe(kind: str, event: Any) -> None:
        body = event["object"]
        counted[kind].inc()
        error = state.observe(kind, event.get("type"), body)
        if error is not None:
            metrics.rejected.labels(kind).inc()
            if kind in (NETWORK_POLICY, CLUSTER_NETWORK_POLICY, ISOLATION_POLICY):
                log.warning(
                    "rejected (a new policy enforces nothing; an edited one keeps "
                    "its last valid version): %s",
                    "; ".join(error.lines()),
                )
            elif kind == NODE:
                log.warning(
                    "Node not readable (kept with its last readable labels and addresses): %s",
                    "; ".join(error.lines()),
                )
            else:
                log.warning("ignored: %s", "; ".join(error.lines()))

    # In the order of their first lists (each feed's waits for the one before).
    fed: dict[str, Resource] = {NAMESPACE: NAMESPACES, POD: PODS, NETWORK_POLICY: NETWORK_POLICIES}
    if feed_client is None:

        @kopf.on.event("", "v1", "pods", registry=registry)
        async def on_pod(event: Any, **_: Any) -> None:
            observe(POD, event)

        @kopf.on.event("", "v1", "namespaces", registry=registry)
        async def on_namespace(event: Any, **_: Any) -> None:
            observe(NAMESPACE, event)

        @kopf.on.event("networking.k8s.io", "v1", "networkpolicies", registry=registry)
        async def on_policy(event: Any, **_: Any) -> None:
            observe(NETWORK_POLICY, event)

    else:
        feeds: list[Feed] = []
        for kind, res in fed.items():
            previous = feeds[-1] if feeds else None
            feeds.append(Feed(feed_client, res, _observer(observe, kind), after=previous))
        if listed_by_feed is not None:
            for kind, feed in zip(fed, feeds, strict=True):
                listed_by_feed[kind] = _synced(feed)
        if on_rule_set is not None:
            # The agents' status is all that is read of a rule set: the watch skips
            # the specs the controller wrote (operator/feed.py, WithoutSpecs).
            feeds.append(
                Feed(WithoutSpecs(feed_client), NODE_RULE_SETS, _rule_sets(on_rule_set, counted))
            )

        @kopf.on.startup(registry=registry)
        async def start_feeds(**_: Any) -> None:
            for feed in feeds:
                feed.start()

        @kopf.on.cleanup(registry=registry)
        async def stop_feeds(**_: Any) -> None:
            for feed in feeds:
                await feed.stop()

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def on_node(event: Any, **_: Any) -> None:
        observe(NODE, event)

    if isolation_policies:

        @kopf.on.event("stockade.dev", "v1alpha1", "isolationpolicies", registry=registry)
        async def on_isolation_policy(event: Any, **_: Any) -> None:
            observe(ISOLATION_POLICY, event)

    if cluster_policies:

        @kopf.on.event(
            "policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies", registry=registry
        )
        async def on_cluster_policy(event: Any, **_: Any) -> None:
            observe(CLUSTER_NETWORK_POLICY, event)

    if on_rule_set is not None and feed_client is None:
        observer = on_rule_set

        @kopf.on.event("stockade.dev", "v1alpha1", "noderulesets", registry=registry)
        async def on_rule_set_event(event: Any, **_: Any) -> None:
            counted["NodeRuleSet"].inc()
            observer(event.get("type"), event["object"])

    return registry


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base storage that keeps nothing and builds an empty essence.

    kopf builds a deep-copied "essence" of every body on every event, for
    change-detecting handlers (``on.update`` and the like). stockade has only
    ``on.event`` handlers, so that copy was pure cost: most of the controller's CPU
    in a burst of pod events.
    """

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        """No essence: nothing compares bodies."""
        del body, extra_fields
        return {}

    def fetch(self, *, body: Any) -> Any:
        """Nothing was stored."""
        del body
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        """Nothing to store."""
        del body, patch, essence


class NoProgress(kopf.ProgressStorage):
    """A progress storage that keeps nothing.

    kopf persists the progress of change-detecting handlers (retries, multi-step
    handlers); ``on.event`` handlers have none. Yet kopf "clears" a deep copy of each
    event's essence through the progress storage: a measurable share of its
    per-event work in a burst, for nothing here.
    """

    def fetch(self, *, key: Any, body: Any) -> Any:
        """Nothing was stored."""
        del key, body
        return None

    def store(self, *, key: Any, record: Any, body: Any, patch: Any) -> None:
        """Nothing to store."""
        del key, record, body, patch

    def purge(self, *, key: Any, body: Any, patch: Any) -> None:
        """Nothing to purge."""
        del key, body, patch

    def touch(self, *, body: Any, patch: Any, value: str | None) -> None:
        """Nothing to touch."""
        del body, patch, value

    def clear(self, *, essence: Any) -> Any:
        """The essence as it is (``NoDiffBase`` builds it empty; nothing to remove)."""
        return essence


def operator_settings(standalone_peering: bool = True) -> kopf.OperatorSettings:
    """kopf settings: quiet (no k8s Events of its own), no peering objects needed."""
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.peering.standalone = standalone_peering
    settings.peering.mandatory = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # stockade watches fixed resources; no need to watch CRDs (nor the RBAC for it).
    settings.scanning.disabled = True
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.progress_storage = NoProgress()
    return settings
