"""Property: with ClusterNetworkPolicies and Nodes beside NetworkPolicies, the compiled
rule sets, evaluated as the dataplane enforces them (FORWARD and INPUT hooks), give
exactly the reference evaluator's tiered verdict for every probe in random clusters."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from stockade.cluster import parse_documents
from stockade.verdict import Dataplane, Endpoint
from stockade_lab import reference
from tests.unit.strategies import (
    EXTERNAL,
    NODE_IPS,
    PROBE_PORTS,
    PROTOCOLS,
    tiered_cluster_docs,
)

# Node addresses are endpoints too: `nodes` and `networks` peers match them.
NODE_ADDRESSES = tuple(ip for ips in NODE_IPS.values() for ip in ips)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=tiered_cluster_docs())
def test_compiled_tiers_agree_with_the_reference(docs: list[dict[str, Any]]) -> None:
    result = parse_documents(docs)
    assert not result.errors, [e.lines() for e in result.errors]
    cluster = result.cluster
    plane = Dataplane(cluster)
    cnps = tuple(cluster.cluster_policies.values())
    nodes = tuple(cluster.nodes.values())
    endpoints: list[Endpoint] = [*cluster.pods.values(), *EXTERNAL, *NODE_ADDRESSES]
    for src in endpoints:
        for dst in endpoints:
            for family in (None, 4, 6):
                for protocol in PROTOCOLS:
                    for port in PROBE_PORTS:
                        want = reference.explain_with_tiers(
                            cluster, cnps, nodes, src, dst, port, protocol, family
                        )
                        got = plane.verdict(src, dst, port, protocol, family)
                        assert got.allowed == want.allowed, (
                            src,
                            dst,
                            port,
                            protocol,
                            family,
                            got,
                            want,
                        )
