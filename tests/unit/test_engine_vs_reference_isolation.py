"""Property: with IsolationPolicies (peers by sameness) beside ClusterNetworkPolicies and
NetworkPolicies, the compiled rule sets, evaluated as the dataplane enforces them, give
exactly the reference evaluator's tiered verdict, and the same sameness reason, for
every probe in random clusters."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from stockade.cluster import parse_documents
from stockade.verdict import Dataplane, DirectionVerdict, Endpoint
from stockade_lab import reference
from tests.unit.strategies import (
    EXTERNAL,
    NODE_IPS,
    PROBE_PORTS,
    PROTOCOLS,
    isolation_cluster_docs,
)

NODE_ADDRESSES = tuple(ip for ips in NODE_IPS.values() for ip in ips)


def _same_reason(side: reference.SideVerdict) -> str:
    note = side.decided_by.note
    return note if note.startswith("same ") else ""


def _engine_reason(dv: DirectionVerdict | None) -> str:
    return dv.decided_by.same if dv is not None and dv.decided_by is not None else ""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=isolation_cluster_docs())
def test_compiled_isolation_agrees_with_the_reference(docs: list[dict[str, Any]]) -> None:
    result = parse_documents(docs)
    assert not result.errors, [e.lines() for e in result.errors]
    cluster = result.cluster
    plane = Dataplane(cluster)
    cnps = tuple(cluster.cluster_policies.values())
    nodes = tuple(cluster.nodes.values())
    endpoints: list[Endpoint] = [*cluster.pods.values(), *EXTERNAL, *NODE_ADDRESSES]
    for src in endpoints:
        for dst in endpoints:
            for family in (None, 4):
                for protocol in PROTOCOLS[:2]:
                    for port in PROBE_PORTS:
                        want = reference.explain_with_tiers(
                            cluster, cnps, nodes, src, dst, port, protocol, family
                        )
                        got = plane.verdict(src, dst, port, protocol, family)
                        probe = (src, dst, port, protocol, family, got, want)
                        assert got.allowed == want.allowed, probe
                        if want.ingress is not None and got.ingress is not None:
                            assert _engine_reason(got.ingress) == _same_reason(want.ingress), probe
                        if want.egress is not None and got.egress is not None:
                            assert _engine_reason(got.egress) == _same_reason(want.egress), probe
