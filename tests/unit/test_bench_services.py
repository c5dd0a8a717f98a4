"""The pure helpers of the benchmarks' Service modes (bench.agent and bench.sandbox)."""

from __future__ import annotations

import ipaddress

import pytest
from bench.agent import (
    IPERF_PORT,
    PACKET_NODE,
    SERVER_IP,
    SERVER_PORT,
    SERVICE_CIDR,
    SERVICE_PORT,
    _services_shape,
    packet_services,
)
from bench.sandbox import (
    base_pods,
    fixed_pairs,
    latency_candidates,
    probe_destinations,
    reply_source,
    service_object,
)

from stockade.services import parse_service, service_backends


def test_packet_services_shape() -> None:
    svc = packet_services(1_000)
    assert len(svc.services) == 1_000
    vips = [s.cluster_ips[0] for s in svc.services]
    assert len(set(vips)) == 1_000
    network = ipaddress.ip_network(SERVICE_CIDR)
    assert all(ipaddress.ip_address(v) in network for v in vips)
    # Every Service has endpoints: no "has no endpoints" rejects in filter.
    assert {s.service for s in svc.slices} == {s.name for s in svc.services}
    rules = svc.rules(PACKET_NODE)
    shape = _services_shape(svc, rules)
    assert shape["kube_services_rules"] == shape["service_ports"] + 1
    # The measured Service sits in the middle of KUBE-SERVICES.
    assert 0.4 < shape["measured_rule_position"] / shape["kube_services_rules"] < 0.6
    assert not any("has no endpoints" in line for line in rules.tables["filter"]["KUBE-SERVICES"])


def test_packet_services_measured_service_reaches_the_server() -> None:
    svc = packet_services(10)
    assert svc.measured.name == "svc-0005"
    by_port = {p.port: p for p in svc.measured.ports}
    http = service_backends(svc.measured, by_port[SERVICE_PORT], svc.slices)
    bulk = service_backends(svc.measured, by_port[IPERF_PORT], svc.slices)
    assert [(b.ip, b.port) for b in http] == [(SERVER_IP, SERVER_PORT)]
    assert [(b.ip, b.port) for b in bulk] == [(SERVER_IP, IPERF_PORT)]
    others = [s for s in svc.services if s is not svc.measured]
    for service in others:
        backends = service_backends(service, service.ports[0], svc.slices)
        assert len(backends) == 2
        assert SERVER_IP not in {b.ip for b in backends}


def test_packet_services_needs_one() -> None:
    with pytest.raises(ValueError, match="at least one"):
        packet_services(0)


def test_sandbox_service_per_destination() -> None:
    pods = base_pods()
    dests = probe_destinations(pods, 20, churn=True)
    keys = {d.key for d in dests}
    assert {p.key for p in latency_candidates(pods)[:20]} <= keys
    assert {d.key for _, d, _ in fixed_pairs(pods)} <= keys
    assert {p.key for p in pods if p.role == "vault"} <= keys
    assert len(keys) == len(dests)
    assert {d.key for d in probe_destinations(pods, 5, churn=False)} == {
        p.key for p in latency_candidates(pods)[:5]
    }
    for dst in dests:
        service = parse_service(service_object(dst))
        assert service.namespace == dst.ns
        # The selector picks exactly this pod among the base pods.
        assert service.selector == {"pod": dst.name}
        assert [p for p in pods if p.ns == dst.ns and p.name == dst.name] == [dst]
        src = reply_source(pods, dst)
        assert src.ns == dst.ns
        assert src.role == "web"
        assert src.key != dst.key
