"""Property: the compiled rule sets, evaluated as the dataplane enforces them, give
exactly the reference evaluator's verdict for every probe in random clusters."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from stockade.cluster import parse_documents
from stockade.verdict import Dataplane, Endpoint
from stockade_lab import reference
from tests.unit.strategies import EXTERNAL, PROBE_PORTS, PROTOCOLS, cluster_docs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=cluster_docs())
def test_compiled_rule_sets_agree_with_the_reference(docs: list[dict[str, Any]]) -> None:
    result = parse_documents(docs)
    assert not result.errors
    cluster = result.cluster
    plane = Dataplane(cluster)
    endpoints: list[Endpoint] = [*cluster.pods.values(), *EXTERNAL]
    for src in endpoints:
        for dst in endpoints:
            for family in (None, 4, 6):
                for protocol in PROTOCOLS:
                    for port in PROBE_PORTS:
                        want = reference.allowed(cluster, src, dst, port, protocol, family)
                        got = plane.verdict(src, dst, port, protocol, family)
                        assert got.allowed == want, (src, dst, port, protocol, family, got)
