"""The controller's view of the cluster: watch events in, compiler calls out.

No I/O: the kopf handlers (:mod:`stockade.controller.handlers`) pass every event
here, and the publisher reads the compiler's changes and the policies' reports.
An invalid NetworkPolicy is rejected whole and remembered with its errors, to be
reported as an Event; the other policies are not affected. A new policy that is
invalid enforces nothing. A valid policy edited into an invalid one keeps its last
valid version in force until it is fixed or deleted: dropping it would open what it
closed, and a rejected update must never open traffic.

ClusterNetworkPolicies (``policy.networking.k8s.io/v1alpha2``) are handled the same
way, by name: a valid one is compiled (``Compiler.upsert``), an invalid one is
remembered with its errors and its last valid version (if any) stays in force. Node
objects declare their node and give the compiler their labels and addresses (for
``nodes`` peers); a Node that cannot be read stays declared, with its last readable
labels and addresses, and is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stockade.cnp import API_VERSION as CNP_API_VERSION
from stockade.cnp import (
    ClusterNetworkPolicy,
    NodeInfo,
    parse_cluster_network_policy,
    parse_node,
)
from stockade.compiler import Compiler
from stockade.controller.conditions import observed_conditions
from stockade.controller.reports import EventSpec, pod_events
from stockade.errors import InvalidObjectError
from stockade.isolation import API_VERSION as ISOLATION_API_VERSION
from stockade.isolation import parse_isolation_policy
from stockade.lint import EmptyRule, empty_rules
from stockade.model import parse_namespace, parse_pod, parse_policy, untrusted_pod
from stockade.ruleset import CompiledPolicy

POD = "Pod"
NAMESPACE = "Namespace"
NETWORK_POLICY = "NetworkPolicy"
NODE = "Node"
CLUSTER_NETWORK_POLICY = "ClusterNetworkPolicy"
# stockade's own tiered kind: its CRD ships with stockade's (manifests/crds.yaml).
ISOLATION_POLICY = "IsolationPolicy"
# Always watched; ClusterNetworkPolicies and IsolationPolicies when their CRD is served.
KINDS = (POD, NAMESPACE, NETWORK_POLICY, NODE)
# The kinds of the tiers, and how each is read.
TIERED_KINDS: dict[str, tuple[str, Callable[[Any], ClusterNetworkPolicy]]] = {
    CLUSTER_NETWORK_POLICY: (CNP_API_VERSION, parse_cluster_network_policy),
    ISOLATION_POLICY: (ISOLATION_API_VERSION, parse_isolation_policy),
}
ALL_KINDS = (*KINDS, CLUSTER_NETWORK_POLICY, ISOLATION_POLICY)
DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """A policy as last seen: the reference for its Events, and either its
    compiled form or the reason it was rejected.

    ``empty_rules``: the rules of the compiled version that can never match
    (:func:`stockade.lint.empty_rules`), reported as Warnings.
    """

    involved: Mapping[str, Any]
    compiled: CompiledPolicy | None
    error: InvalidObjectError | None
    empty_rules: tuple[EmptyRule, ...] = ()

    @property
    def uid(self) -> str:
        """The object's uid (Events are remembered per uid)."""
        return str(self.involved["metadata"].get("uid") or "")


@dataclass(frozen=True, slots=True)
class ClusterPolicyRecord:
    """A ClusterNetworkPolicy as last seen.

    ``policy`` is the version in force: the observed one when valid, else the last
    valid one (None: never valid, it enforces nothing); ``error`` why the observed
    version was refused. ``generation`` and ``conditions`` are the observed
    ``metadata.generation`` and ``status.conditions``, for the ``Accepted``
    condition.
    """

    involved: Mapping[str, Any]
    policy: ClusterNetworkPolicy | None
    error: InvalidObjectError | None
    generation: int | None = None
    conditions: tuple[Mapping[str, Any], ...] = ()

    @property
    def uid(self) -> str:
        """The object's uid (Events are remembered per uid)."""
        return str(self.involved["metadata"].get("uid") or "")

    @property
    def resource_version(self) -> str:
        """The observed object's resourceVersion."""
        return str(self.involved["metadata"].get("resourceVersion") or "")


def object_key(kind: str, body: Mapping[str, Any]) -> str:
    """``namespace/name`` for Pods and NetworkPolicies, ``name`` for cluster-scoped kinds
    (Namespaces, Nodes, ClusterNetworkPolicies), ``IsolationPolicy/<name>`` for an
    IsolationPolicy (its key in the compiler: it may share a name with a CNP)."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    if kind == ISOLATION_POLICY:
        return f"{ISOLATION_POLICY}/{name}"
    if kind in (NAMESPACE, NODE, CLUSTER_NETWORK_POLICY):
        return name
    return f"{meta.get('namespace') or 'default'}/{name}"


def involved_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a Pod an Event about it needs."""
    return _involved("v1", POD, body)


def involved_object(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a NetworkPolicy an Event about it needs."""
    return _involved("networking.k8s.io/v1", NETWORK_POLICY, body)


def involved_cluster_policy(
    body: Mapping[str, Any], kind: str = CLUSTER_NETWORK_POLICY
) -> dict[str, Any]:
    """The parts of a ClusterNetworkPolicy (or IsolationPolicy) an Event about it needs:
    no namespace (it is cluster-scoped; its Events go to ``default``, as Kubernetes
    puts them)."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": TIERED_KINDS[kind][0],
        "kind": kind,
        "metadata": {
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
    }


def _generation(body: Mapping[str, Any]) -> int | None:
    value = (body.get("metadata") or {}).get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _involved(api_version: str, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace") or "default",
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
    }


class ControllerState:
    """The compiler and what the controller knows of each policy.

    ``on_change`` is called after every event that may change the output (the
    publisher marks itself dirty). Not thread-safe: one event loop feeds it.
    ``clock`` (monotonic seconds) only stamps policy changes, for the sync lag.
    """

    def __init__(
        self,
        compiler: Compiler | None = None,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.compiler = compiler or Compiler()
        self.policies: dict[str, PolicyRecord] = {}
        self.on_change = on_change or (lambda: None)
        self.clock = clock
        # Policies whose report may have changed, for the publisher to pick up.
        self.touched_policies: set[str] = set()
        # Policies whose enforced form changed (or went), with when that was first
        # observed since the publisher last took them: the start of the sync lag.
        self.policy_changes: dict[str, float] = {}
        # Nodes the API declares (each gets a rule set, possibly empty), with what
        # the compiler knows of each (labels, addresses), and the last problem
        # reported for a Node that cannot be read (reported once per problem).
        self.nodes: set[str] = set()
        self.node_infos: dict[str, NodeInfo] = {}
        self.node_errors: dict[str, str] = {}
        # ClusterNetworkPolicies by name; those whose report (Events, status) may
        # have changed, for the publisher to pick up.
        self.cluster_policies: dict[str, ClusterPolicyRecord] = {}
        self.touched_cluster_policies: set[str] = set()
        self._seen: set[tuple[str, str]] | None = set()
        self.events_seen = 0
        # Warnings to post on Pods (address conflicts, unreadable pods), by pod key.
        self.pod_reports: dict[str, tuple[dict[str, Any], tuple[EventSpec, ...]]] = {}

    def observe(
        self, kind: str, event_type: str | None, body: Mapping[str, Any]
    ) -> InvalidObjectError | None:
        """Apply one watch event (type None for the initial listing).

        Returns the error when the object was rejected (the caller logs it).
        """
        if kind not in ALL_KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        key = object_key(kind, body)
        self.events_seen += 1
        if self._seen is not None:
            self._seen.add((kind, key))
        error: InvalidObjectError | None = None
        if kind == NODE:
            changed, error = self._observe_node(key, body, event_type == DELETED)
            if not changed:
                return error  # a heartbeat, or nothing a nodes peer reads: nothing to compile
        elif kind in TIERED_KINDS:
            if event_type == DELETED:
                self.compiler.delete(kind, key)
                if self.cluster_policies.pop(key, None) is not None:
                    self.policy_changes.setdefault(key, self.clock())
                self.touched_cluster_policies.discard(key)
            else:
                error = self._observe_cluster_policy(key, body, kind)
        elif event_type == DELETED:
            self.compiler.delete(kind, key)
            if kind == NETWORK_POLICY:
                if self.policies.pop(key, None) is not None:
                    self.policy_changes.setdefault(key, self.clock())
                self.touched_policies.discard(key)
        elif kind == POD:
            error = self._observe_pod(key, body)
        elif kind == NAMESPACE:
            try:
                self.compiler.upsert(parse_namespace(body))
            except InvalidObjectError as exc:
                self.compiler.delete(NAMESPACE, key)
                error = exc
        else:
            error = self._observe_policy(key, body)
        self.on_change()
        return error

    def _observe_pod(self, key: str, body: Mapping[str, Any]) -> InvalidObjectError | None:
        try:
            pod = parse_pod(body)
        except InvalidObjectError as exc:
            # Taking no part would judge its addresses as outside the cluster, open
            # to all: no pod owns them instead, and they are denied both ways.
            held = untrusted_pod(body)
            if held is None:
                self.compiler.delete(POD, key)
            else:
                self.compiler.upsert(held)
            self.pod_reports[key] = (involved_pod(body), pod_events((), exc))
            return exc
        self.compiler.upsert(pod)
        conflicts = self.compiler.ip_conflicts_of(key)
        if conflicts:
            self.pod_reports[key] = (involved_pod(body), pod_events(conflicts, None))
        return None

    def _observe_policy(self, key: str, body: Mapping[str, Any]) -> InvalidObjectError | None:
        involved = involved_object(body)
        try:
            policy = parse_policy(body)
        except InvalidObjectError as exc:
            previous = self.policies.get(key)
            # The compiler keeps the last valid version (if any): never open traffic.
            kept = previous.compiled if previous is not None else None
            empty = previous.empty_rules if previous is not None else ()
            self.policies[key] = PolicyRecord(involved, kept, exc, empty)
            self.touched_policies.add(key)
            return exc
        # The compiler compiles it (once); the record keeps what the compiler holds.
        self.compiler.upsert(policy)
        compiled = self.compiler.compiled_policy(key)
        assert compiled is not None  # just upserted
        previous = self.policies.get(key)
        record = PolicyRecord(involved, compiled, None, empty_rules(policy))
        if (
            previous is None
            or previous.compiled != compiled
            or previous.uid != record.uid
            or previous.empty_rules != record.empty_rules
            # Valid again, even as the kept version: its PolicyRejected is stale news.
            or previous.error is not None
        ):
            self.touched_policies.add(key)
        if previous is None or previous.compiled != compiled:
            self.policy_changes.setdefault(key, self.clock())
        self.policies[key] = record
        return None

    def _observe_cluster_policy(
        self, key: str, body: Mapping[str, Any], kind: str = CLUSTER_NETWORK_POLICY
    ) -> InvalidObjectError | None:
        involved = involved_cluster_policy(body, kind)
        generation = _generation(body)
        conditions = observed_conditions(body)
        previous = self.cluster_policies.get(key)
        # Every event is looked at again (its status may need the condition back).
        self.touched_cluster_policies.add(key)
        try:
            policy = TIERED_KINDS[kind][1](body)
        except InvalidObjectError as exc:
            # The compiler keeps the last valid version (if any): never open traffic.
            kept = previous.policy if previous is not None else None
            self.cluster_policies[key] = ClusterPolicyRecord(
                involved, kept, exc, generation, conditions
            )
            return exc
        self.cluster_policies[key] = ClusterPolicyRecord(
            involved, policy, None, generation, conditions
        )
        if previous is None or previous.policy != policy:
            self.policy_changes.setdefault(key, self.clock())
            self.compiler.upsert(policy)
        return None

    def _observe_node(
        self, name: str, body: Mapping[str, Any], deleted: bool
    ) -> tuple[bool, InvalidObjectError | None]:
        """Declare, update or forget a node: (whether that changed anything, a problem).

        Only what a ``nodes`` peer reads (labels, addresses) counts: heartbeats and
        other status updates change nothing and do not wake the publisher. A Node
        that cannot be read stays declared with its last readable labels and
        addresses (none if it never was readable); its problem is returned once.
        """
        if not name:
            return False, None
        if deleted:
            self.node_errors.pop(name, None)
            self.node_infos.pop(name, None)
            if name not in self.nodes:
                return False, None
            self.nodes.discard(name)
            self.compiler.delete(NODE, name)
            return True, None
        try:
            info = parse_node(body)
        except InvalidObjectError as exc:
            text = "; ".join(exc.lines())
            news = self.node_errors.get(name) != text
            self.node_errors[name] = text
            if name in self.nodes:
                return False, exc if news else None
            self.nodes.add(name)
            self.compiler.upsert_node(name)
            return True, exc if news else None
        self.node_errors.pop(name, None)
        if name in self.nodes and self.node_infos.get(name) == info:
            return False, None
        self.nodes.add(name)
        self.node_infos[name] = info
        self.compiler.upsert(info)
        return True, None

    def take_policy_changes(self) -> dict[str, float]:
        """The policy changes observed since the last call (key to first seen)."""
        changes, self.policy_changes = self.policy_changes, {}
        return changes

    # ------------------------------------------------------------------ warm-up

    def missing(self, expected: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of ``expected`` (kind, key) pairs, those no event has delivered yet."""
        if self._seen is None:
            return set()
        return expected - self._seen

    def end_warmup(self) -> None:
        """Stop remembering which objects were seen (the initial listing is in)."""
        self._seen = None
