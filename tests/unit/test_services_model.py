"""Services and EndpointSlices: strict parsing, backend resolution, desired slices."""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.errors import InvalidObjectError
from stockade.model import Pod, parse_pod
from stockade.services import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MAX_ENDPOINTS_PER_SLICE,
    SERVICE_NAME_LABEL,
    EndpointSlice,
    Service,
    parse_endpoint_slice,
    parse_service,
    selected_pods,
    service_backends,
    target_number,
)
from stockade.services import desired_slices as desired

Obj = dict[str, Any]


def svc(spec: Any = None, name: str = "web", ns: str = "ns", **meta: Any) -> Obj:
    if spec is None:
        spec = {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, **meta},
        "spec": spec,
    }


def ports_spec(*ports: Any, **extra: Any) -> Obj:
    return {"selector": {"app": "web"}, "ports": list(ports), **extra}


def eps(
    endpoints: Any = None,
    ports: Any = None,
    address_type: Any = "IPv4",
    name: str = "web-1",
    service: str = "web",
    ns: str = "ns",
) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": address_type,
        "endpoints": [{"addresses": ["10.0.0.1"]}] if endpoints is None else endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports,
    }


def pod(
    name: str,
    ip: str | None = "10.0.0.1",
    labels: dict[str, str] | None = None,
    ns: str = "ns",
    ports: list[Obj] | None = None,
    phase: str = "Running",
    deleting: bool = False,
    node: str = "n1",
) -> Pod:
    status: Obj = {"phase": phase}
    if ip is not None:
        status["podIP"] = ip
    meta: Obj = {
        "name": name,
        "namespace": ns,
        "labels": {"app": "web"} if labels is None else labels,
    }
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    return parse_pod(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "image": "x", "ports": ports or []}],
            },
            "status": status,
        }
    )


# --------------------------------------------------------------------------- parse_service


def test_parse_service_valid_defaults() -> None:
    s = parse_service(svc(ports_spec({"name": "http", "port": 80}, clusterIP="10.96.0.10")))
    assert s.key == "ns/web"
    assert s.type == "ClusterIP"
    assert s.selector == {"app": "web"}
    assert s.cluster_ips == ("10.96.0.10",)
    assert s.families() == (4,)
    (p,) = s.ports
    assert (p.name, p.protocol, p.port, p.target, p.node_port) == ("http", "TCP", 80, 80, None)
    assert p.label() == "http (80/TCP)"
    assert s.external_traffic_policy == s.internal_traffic_policy == "Cluster"


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        ({"port": 80, "targetPort": 8080}, 8080),
        ({"port": 80, "targetPort": "8080"}, 8080),
        ({"port": 80, "targetPort": "http-alt"}, "http-alt"),
        ({"port": 80, "targetPort": 0}, 80),
        ({"port": 80}, 80),
        ({"port": 65535, "targetPort": 1}, 1),
    ],
)
def test_parse_service_target_ports(port: Obj, expected: int | str) -> None:
    assert parse_service(svc(ports_spec(port))).ports[0].target == expected


def test_parse_service_dual_stack_and_headless_and_types() -> None:
    s = parse_service(
        svc(
            ports_spec(
                {"port": 80, "protocol": "UDP", "nodePort": 30080},
                clusterIPs=["fd00::10", "10.96.0.10", "10.96.0.10"],
                type="NodePort",
                externalTrafficPolicy="Local",
                internalTrafficPolicy="Local",
            ),
            uid="u-1",
        )
    )
    assert s.cluster_ips == ("fd00::10", "10.96.0.10")
    assert s.families() == (6, 4)
    assert s.type == "NodePort"
    assert s.uid == "u-1"
    assert s.ports[0].node_port == 30080
    assert s.ports[0].protocol == "UDP"
    assert s.external_traffic_policy == s.internal_traffic_policy == "Local"
    for spec in (
        ports_spec({"port": 80}, clusterIP="None"),
        ports_spec({"port": 80}, clusterIPs=["None"]),
        ports_spec({"port": 80}),
    ):
        assert parse_service(svc(spec)).headless
    assert parse_service(svc({"type": "ExternalName", "externalName": "x.example"})).ports == ()
    assert parse_service(svc({"ports": [{"port": 80}]})).selector is None
    assert parse_service(svc({"selector": {}, "ports": [{"port": 80}]})).selector == {}


def test_find_port() -> None:
    s = parse_service(
        svc(ports_spec({"name": "a", "port": 80}, {"name": "b", "port": 80, "protocol": "UDP"}))
    )
    assert s.find_port(80) is s.ports[0]
    assert s.find_port(80, "UDP") is s.ports[1]
    assert s.find_port("b") is s.ports[1]
    assert s.find_port(81) is None
    assert s.find_port(80, "SCTP") is None


BAD_SERVICES: list[tuple[str, Any, str]] = [
    ("spec missing", None, "spec"),
    ("spec a list", [], "spec"),
    ("port 0", ports_spec({"port": 0}), "spec.ports[0].port"),
    ("port 70000", ports_spec({"port": 70000}), "spec.ports[0].port"),
    ("port string", ports_spec({"port": "80"}), "spec.ports[0].port"),
    ("port bool", ports_spec({"port": True}), "spec.ports[0].port"),
    ("port float", ports_spec({"port": 80.0}), "spec.ports[0].port"),
    ("port missing", ports_spec({"name": "x"}), "spec.ports[0].port"),
    ("port a string", ports_spec("80"), "spec.ports[0]"),
    ("ports a map", {"ports": {"port": 80}}, "spec.ports"),
    ("target 70000", ports_spec({"port": 80, "targetPort": 70000}), "targetPort"),
    ("target '70000'", ports_spec({"port": 80, "targetPort": "70000"}), "targetPort"),
    ("target '0'", ports_spec({"port": 80, "targetPort": "0"}), "targetPort"),
    ("target bool", ports_spec({"port": 80, "targetPort": True}), "targetPort"),
    ("target false", ports_spec({"port": 80, "targetPort": False}), "targetPort"),
    ("target float", ports_spec({"port": 80, "targetPort": 8.5}), "targetPort"),
    ("target list", ports_spec({"port": 80, "targetPort": [80]}), "targetPort"),
    ("target upper", ports_spec({"port": 80, "targetPort": "HTTP"}), "targetPort"),
    ("target dashes", ports_spec({"port": 80, "targetPort": "a--b"}), "targetPort"),
    ("target long", ports_spec({"port": 80, "targetPort": "abcdefghijklmnop"}), "targetPort"),
    ("target empty-ish", ports_spec({"port": 80, "targetPort": "-http"}), "targetPort"),
    ("target superscript", ports_spec({"port": 80, "targetPort": "²"}), "targetPort"),
    ("target huge digits", ports_spec({"port": 80, "targetPort": "9" * 5000}), "targetPort"),
    ("target unicode", ports_spec({"port": 80, "targetPort": "htté"}), "targetPort"),
    ("nodePort 0", ports_spec({"port": 80, "nodePort": 0}), "nodePort"),
    ("nodePort str", ports_spec({"port": 80, "nodePort": "30000"}), "nodePort"),
    ("protocol", ports_spec({"port": 80, "protocol": "tcp"}), "protocol"),
    ("protocol list", ports_spec({"port": 80, "protocol": ["TCP"]}), "protocol"),
    ("name int", ports_spec({"port": 80, "name": 5}), "name"),
    (
        "duplicate port+protocol",
        ports_spec({"name": "a", "port": 80}, {"name": "b", "port": 80}),
        "spec.ports",
    ),
    ("unnamed among several", ports_spec({"name": "a", "port": 80}, {"port": 81}), "spec.ports"),
    ("clusterIPs string", ports_spec({"port": 80}, clusterIPs="10.96.0.1"), "clusterIPs"),
    ("clusterIP bad", ports_spec({"port": 80}, clusterIPs=["10.96.0.300"]), "clusterIPs[0]"),
    ("clusterIP zoned", ports_spec({"port": 80}, clusterIPs=["fe80::1%eth0"]), "clusterIPs[0]"),
    ("clusterIP int", ports_spec({"port": 80}, clusterIPs=[167772161]), "clusterIPs[0]"),
    ("clusterIP none lower", ports_spec({"port": 80}, clusterIP="none"), "clusterIPs[0]"),
    ("clusterIP map", ports_spec({"port": 80}, clusterIPs=[{}]), "clusterIPs[0]"),
    ("type", ports_spec({"port": 80}, type="Headless"), "spec.type"),
    ("type int", ports_spec({"port": 80}, type=1), "spec.type"),
    ("etp", ports_spec({"port": 80}, externalTrafficPolicy="Local "), "externalTrafficPolicy"),
    ("itp", ports_spec({"port": 80}, internalTrafficPolicy="local"), "internalTrafficPolicy"),
    ("selector list", {"selector": ["app"], "ports": [{"port": 80}]}, "spec.selector"),
    ("selector value int", {"selector": {"app": 1}, "ports": [{"port": 80}]}, "spec.selector"),
    ("selector value bool", {"selector": {"app": True}}, "spec.selector"),
    ("selector bad key", {"selector": {"a b": "x"}}, "spec.selector"),
    ("selector bad value", {"selector": {"app": "-x-"}}, "spec.selector"),
]


@pytest.mark.parametrize(
    ("spec", "field"), [(b[1], b[2]) for b in BAD_SERVICES], ids=[b[0] for b in BAD_SERVICES]
)
def test_parse_service_rejects(spec: Any, field: str) -> None:
    obj = svc(spec)
    if spec is None:
        del obj["spec"]
    with pytest.raises(InvalidObjectError) as info:
        parse_service(obj, source="f.yaml")
    assert any(field in str(err) for err in info.value.errors), info.value.errors
    assert "f.yaml" in str(info.value)


def test_parse_service_lists_every_problem() -> None:
    spec = ports_spec({"port": 0}, {"port": "x"}, type="Bad", clusterIPs=["nope"])
    with pytest.raises(InvalidObjectError) as info:
        parse_service(svc(spec))
    assert len(info.value.errors) >= 4


@pytest.mark.parametrize(
    "meta",
    [{"namespace": "ns"}, {"name": "Web", "namespace": "ns"}, {"name": 1, "namespace": "ns"}, []],
)
def test_parse_service_bad_metadata(meta: Any) -> None:
    obj = svc()
    obj["metadata"] = meta
    with pytest.raises(InvalidObjectError):
        parse_service(obj)


# --------------------------------------------------------------------------- parse_endpoint_slice


def test_parse_endpoint_slice_valid() -> None:
    es = parse_endpoint_slice(
        eps(
            [
                {
                    "addresses": ["10.0.0.1"],
                    "conditions": {"ready": False, "terminating": True},
                    "nodeName": "n1",
                    "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p"},
                },
                {"addresses": ["10.0.0.2"]},
                {"addresses": ["10.0.0.3"], "targetRef": {"kind": "Node", "name": "n"}},
            ]
        )
    )
    assert (es.namespace, es.name, es.service, es.address_type) == ("ns", "web-1", "web", "IPv4")
    a, b, c = es.endpoints
    assert (a.ready, a.serving, a.terminating, a.node_name, a.pod) == (
        False,
        False,
        True,
        "n1",
        "ns/p",
    )
    assert (b.ready, b.serving, b.terminating, b.pod) == (True, True, False, "")
    assert c.pod == ""
    (p,) = es.ports
    assert (p.name, p.port, p.protocol) == ("http", 8080, "TCP")


def test_parse_endpoint_slice_variants() -> None:
    v6 = parse_endpoint_slice(eps([{"addresses": ["FD00::0001"]}], address_type="IPv6"))
    assert v6.endpoints[0].addresses == ("fd00::1",)
    fq = parse_endpoint_slice(eps([{"addresses": ["db.example"]}], address_type="FQDN"))
    assert fq.endpoints[0].addresses == ("db.example",)
    unnamed = parse_endpoint_slice(eps(ports=[{"port": 80}], endpoints=[]))
    assert unnamed.ports[0].name == ""
    assert unnamed.ports[0].protocol == "TCP"
    assert unnamed.endpoints == ()
    no_number = parse_endpoint_slice(eps(ports=[{"name": "http"}]))
    assert no_number.ports[0].port is None
    unlabelled = eps()
    unlabelled["metadata"]["labels"] = {}
    assert parse_endpoint_slice(unlabelled).service == ""


BAD_SLICES: list[tuple[str, Obj, str]] = [
    ("address type", eps(address_type="ipv4"), "addressType"),
    ("address type missing", eps(address_type=None), "addressType"),
    ("endpoints map", eps(endpoints={"addresses": []}), "endpoints"),
    ("endpoint string", eps(endpoints=["10.0.0.1"]), "endpoints[0]"),
    ("addresses missing", eps(endpoints=[{}]), "endpoints[0].addresses"),
    ("addresses empty", eps(endpoints=[{"addresses": []}]), "endpoints[0].addresses"),
    ("addresses string", eps(endpoints=[{"addresses": "10.0.0.1"}]), "endpoints[0].addresses"),
    ("bad ip", eps(endpoints=[{"addresses": ["10.0.0"]}]), "addresses[0]"),
    ("zoned ip", eps([{"addresses": ["fe80::1%eth0"]}], address_type="IPv6"), "addresses[0]"),
    ("v6 in v4", eps(endpoints=[{"addresses": ["fd00::1"]}]), "addresses[0]"),
    ("v4 in v6", eps([{"addresses": ["10.0.0.1"]}], address_type="IPv6"), "addresses[0]"),
    ("fqdn int", eps([{"addresses": [1]}], address_type="FQDN"), "addresses[0]"),
    ("ready string", eps([{"addresses": ["10.0.0.1"], "conditions": {"ready": "true"}}]), "ready"),
    ("serving int", eps([{"addresses": ["10.0.0.1"], "conditions": {"serving": 1}}]), "serving"),
    (
        "terminating str",
        eps([{"addresses": ["10.0.0.1"], "conditions": {"terminating": "no"}}]),
        "terminating",
    ),
    ("conditions list", eps([{"addresses": ["10.0.0.1"], "conditions": [1]}]), "conditions"),
    ("nodeName int", eps([{"addresses": ["10.0.0.1"], "nodeName": 3}]), "nodeName"),
    ("ports map", eps(ports={"port": 80}), "ports"),
    ("port entry string", eps(ports=["http"]), "ports[0]"),
    ("port name int", eps(ports=[{"name": 1, "port": 80}]), "ports[0].name"),
    ("port 0", eps(ports=[{"name": "a", "port": 0}]), "ports[0].port"),
    ("port 70000", eps(ports=[{"name": "a", "port": 70000}]), "ports[0].port"),
    ("port bool", eps(ports=[{"name": "a", "port": True}]), "ports[0].port"),
    ("port string", eps(ports=[{"name": "a", "port": "80"}]), "ports[0].port"),
    ("protocol", eps(ports=[{"name": "a", "port": 80, "protocol": "HTTP"}]), "protocol"),
]


@pytest.mark.parametrize(
    ("obj", "field"), [(b[1], b[2]) for b in BAD_SLICES], ids=[b[0] for b in BAD_SLICES]
)
def test_parse_endpoint_slice_rejects(obj: Obj, field: str) -> None:
    with pytest.raises(InvalidObjectError) as info:
        parse_endpoint_slice(obj)
    assert any(field in str(err) for err in info.value.errors), info.value.errors


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.sampled_from(["None", "", "80", "http", "TCP", "IPv4", "IPv6", "FQDN", "10.0.0.1", "²"]),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "spec",
        "ports",
        "port",
        "targetPort",
        "nodePort",
        "name",
        "protocol",
        "selector",
        "clusterIP",
        "clusterIPs",
        "type",
        "externalTrafficPolicy",
        "addressType",
        "endpoints",
        "addresses",
        "conditions",
        "ready",
        "nodeName",
        "targetRef",
    ]
)


def _mutate(base: Any, data: st.DataObject) -> Any:
    """Replace random subtrees of a valid object with junk."""
    if isinstance(base, dict):
        out = {}
        for k, v in base.items():
            out[k] = data.draw(JSON) if data.draw(st.integers(0, 5)) == 0 else _mutate(v, data)
        extra = data.draw(st.dictionaries(KEYS, JSON, max_size=2))
        return {**out, **extra}
    if isinstance(base, list):
        return [_mutate(v, data) for v in base]
    return base


def _only_invalid(parser: Any, obj: Any) -> None:
    with contextlib.suppress(InvalidObjectError):
        parser(obj)


VALID_SERVICE = svc(
    ports_spec(
        {"name": "a", "port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30000},
        {"name": "b", "port": 81, "targetPort": 8081},
        clusterIPs=["10.96.0.1", "fd00::1"],
        type="NodePort",
        externalTrafficPolicy="Local",
    )
)
VALID_SLICE = eps(
    [
        {
            "addresses": ["10.0.0.1"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": "n1",
            "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p"},
        }
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=JSON)
def test_parsers_never_raise_anything_else_on_junk(junk: Any) -> None:
    for parser in (parse_service, parse_endpoint_slice):
        _only_invalid(
            parser, {"kind": "X", "metadata": {"name": "a", "namespace": "b"}, "spec": junk}
        )
        if isinstance(junk, dict):
            _only_invalid(parser, junk)
            _only_invalid(parser, {**eps(), **junk})
            _only_invalid(parser, {**svc(), **junk})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parsers_never_raise_anything_else_on_mutated_objects(data: st.DataObject) -> None:
    _only_invalid(parse_service, _mutate(VALID_SERVICE, data))
    _only_invalid(parse_endpoint_slice, _mutate(VALID_SLICE, data))


@pytest.mark.parametrize("parser", [parse_service, parse_endpoint_slice])
def test_unhashable_kind_is_invalid(parser: Any) -> None:
    with pytest.raises(InvalidObjectError):
        parser({"apiVersion": "v1", "kind": [], "metadata": {"name": "a", "namespace": "b"}})


# --------------------------------------------------------------------------- service_backends


def _service(*ports: Obj, **spec: Any) -> Service:
    return parse_service(svc(ports_spec(*ports, **spec)))


def _slice(endpoints: list[Obj], ports: list[Obj] | None = None, **kw: Any) -> EndpointSlice:
    return parse_endpoint_slice(eps(endpoints, ports, **kw))


def _ep(ip: str, ready: bool | None = None, pod: str = "") -> Obj:
    out: Obj = {"addresses": [ip]}
    if ready is not None:
        out["conditions"] = {"ready": ready}
    if pod:
        out["targetRef"] = {"kind": "Pod", "namespace": "ns", "name": pod}
    return out


def test_backends_matched_by_name_and_protocol() -> None:
    s = _service({"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"})
    es = _slice(
        [_ep("10.0.0.1", pod="p")],
        [
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 5353, "protocol": "UDP"},
            {"name": "http", "port": 9999, "protocol": "UDP"},
        ],
    )
    (b,) = service_backends(s, s.ports[0], [es])
    assert (b.ip, b.port, b.protocol, b.pod, b.ready) == ("10.0.0.1", 8080, "TCP", "ns/p", True)
    (d,) = service_backends(s, s.ports[1], [es])
    assert (d.port, d.protocol) == (5353, "UDP")


def test_backends_slice_without_the_port_contributes_nothing() -> None:
    s = _service({"name": "http", "port": 80})
    other = _slice([_ep("10.0.0.1")], [{"name": "metrics", "port": 9090}])
    wrong_proto = _slice([_ep("10.0.0.2")], [{"name": "http", "port": 80, "protocol": "UDP"}])
    no_number = _slice([_ep("10.0.0.3")], [{"name": "http"}])
    no_ports = _slice([_ep("10.0.0.4")], [])
    assert service_backends(s, s.ports[0], [other, wrong_proto, no_number, no_ports]) == ()


def test_backends_unnamed_port() -> None:
    s = _service({"port": 80, "targetPort": 8080})
    es = _slice([_ep("10.0.0.1")], [{"port": 8080}])
    assert [b.port for b in service_backends(s, s.ports[0], [es])] == [8080]


def test_backends_exclude_not_ready_unless_asked() -> None:
    s = _service({"name": "http", "port": 80})
    es = _slice([_ep("10.0.0.1", ready=False), _ep("10.0.0.2", ready=True), _ep("10.0.0.3")])
    assert [b.ip for b in service_backends(s, s.ports[0], [es])] == ["10.0.0.2", "10.0.0.3"]
    every = service_backends(s, s.ports[0], [es], ready_only=False)
    assert [(b.ip, b.ready) for b in every] == [
        ("10.0.0.1", False),
        ("10.0.0.2", True),
        ("10.0.0.3", True),
    ]


def test_backends_other_service_namespace_and_fqdn_ignored() -> None:
    s = _service({"name": "http", "port": 80})
    other_svc = _slice([_ep("10.0.0.1")], service="api")
    other_ns = _slice([_ep("10.0.0.2")], ns="other")
    fqdn = _slice([{"addresses": ["db.example"]}], address_type="FQDN")
    assert service_backends(s, s.ports[0], [other_svc, other_ns, fqdn]) == ()


def test_backends_deduplicated_ordered_and_both_families() -> None:
    s = _service({"name": "http", "port": 80}, clusterIPs=["10.96.0.1", "fd00::1"])
    a = _slice([_ep("10.0.0.10"), _ep("10.0.0.9")], name="a")
    b = _slice([_ep("10.0.0.9"), _ep("10.0.0.1")], name="b")
    v6 = _slice([_ep("fd00::2"), _ep("fd00::1:0")], address_type="IPv6", name="c")
    got = service_backends(s, s.ports[0], [v6, b, a])
    assert [x.ip for x in got] == ["10.0.0.1", "10.0.0.9", "10.0.0.10", "fd00::2", "fd00::1:0"]
    assert service_backends(s, s.ports[0], [a, b, v6]) == got


# --------------------------------------------------------------------------- desired_slices

HTTP = [{"name": "http", "containerPort": 8080}]


def test_desired_slices_named_target_resolves_per_pod() -> None:
    s = _service({"name": "web", "port": 80, "targetPort": "http"})
    pods = [
        pod("a", "10.0.0.1", ports=[{"name": "http", "containerPort": 8080}]),
        pod("b", "10.0.0.2", ports=[{"name": "http", "containerPort": 9090}]),
        pod("c", "10.0.0.3", ports=[{"name": "other", "containerPort": 8080}]),
    ]
    slices = desired(s, pods)
    assert len(slices) == 3
    by_ports = {
        tuple((p["name"], p["port"]) for p in es["ports"]): [
            e["addresses"][0] for e in es["endpoints"]
        ]
        for es in slices
    }
    assert by_ports == {
        (("web", 8080),): ["10.0.0.1"],
        (("web", 9090),): ["10.0.0.2"],
        (): ["10.0.0.3"],
    }
    parsed = [parse_endpoint_slice(es) for es in slices]
    got = {(b.ip, b.port) for b in service_backends(s, s.ports[0], parsed)}
    assert got == {("10.0.0.1", 8080), ("10.0.0.2", 9090)}


def test_desired_slices_pod_missing_one_name_keeps_the_others() -> None:
    s = _service(
        {"name": "web", "port": 80, "targetPort": "http"},
        {"name": "raw", "port": 81, "targetPort": 7000},
    )
    (es,) = desired(s, [pod("a", ports=[{"name": "x", "containerPort": 1}])])
    assert es["ports"] == [{"name": "raw", "protocol": "TCP", "port": 7000}]


def test_desired_slices_exclusions_and_terminating() -> None:
    s = _service({"name": "web", "port": 80, "targetPort": 8080})
    pods = [
        pod("ok", "10.0.0.1"),
        pod("done", "10.0.0.2", phase="Succeeded"),
        pod("failed", "10.0.0.3", phase="Failed"),
        pod("pending", None, phase="Pending"),
        pod("elsewhere", "10.0.0.4", ns="other"),
        pod("unlabelled", "10.0.0.5", labels={"app": "db"}),
        pod("going", "10.0.0.6", deleting=True),
    ]
    assert [p.name for p in selected_pods(s, pods)] == ["going", "ok"]
    (es,) = desired(s, pods)
    by_ip = {e["addresses"][0]: e for e in es["endpoints"]}
    assert set(by_ip) == {"10.0.0.1", "10.0.0.6"}
    assert by_ip["10.0.0.6"]["conditions"] == {"ready": False, "serving": True, "terminating": True}
    assert by_ip["10.0.0.1"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert by_ip["10.0.0.1"]["targetRef"] == {"kind": "Pod", "namespace": "ns", "name": "ok"}
    assert by_ip["10.0.0.1"]["nodeName"] == "n1"
    parsed = [parse_endpoint_slice(x) for x in desired(s, pods)]
    assert [b.ip for b in service_backends(s, s.ports[0], parsed)] == ["10.0.0.1"]


def test_desired_slices_split_above_the_limit() -> None:
    s = _service({"name": "web", "port": 80, "targetPort": 8080})
    n = 2 * MAX_ENDPOINTS_PER_SLICE + 5
    pods = [pod(f"p{i}", str(ipaddress.ip_address("10.1.0.0") + i)) for i in range(n)]
    slices = desired(s, pods)
    assert [len(es["endpoints"]) for es in slices] == [100, 100, 5]
    assert len({es["metadata"]["name"] for es in slices}) == 3
    parsed = [parse_endpoint_slice(es) for es in slices]
    assert len(service_backends(s, s.ports[0], parsed)) == n


def test_desired_slices_names_labels_owner() -> None:
    name = "a" * 63
    s = parse_service(svc(ports_spec({"port": 80}), name=name, uid="uid-1"))
    pods = [pod("a", "10.0.0.1"), pod("b", "fd00::1")]
    first = desired(s, pods)
    assert first == desired(s, list(reversed(pods)))
    assert [es["addressType"] for es in first] == ["IPv4", "IPv6"]
    names = [es["metadata"]["name"] for es in first]
    assert len(set(names)) == 2
    for es in first:
        meta = es["metadata"]
        assert len(meta["name"]) <= 63
        assert meta["name"].startswith(name[:50])
        assert meta["namespace"] == "ns"
        assert meta["labels"] == {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY}
        (owner,) = meta["ownerReferences"]
        assert owner["kind"] == "Service"
        assert owner["name"] == name
        assert owner["uid"] == "uid-1"
        assert owner["controller"] is True
        parse_endpoint_slice(es)
    plain = desired(_service({"port": 80}, clusterIPs=["10.96.0.1"]), pods)
    assert [es["addressType"] for es in plain] == ["IPv4"]
    assert "ownerReferences" not in plain[0]["metadata"]


def test_desired_slices_none_for_external_name_and_no_selector() -> None:
    pods = [pod("a", "10.0.0.1")]
    ext = parse_service(svc({"type": "ExternalName", "selector": {"app": "web"}}))
    assert desired(ext, pods) == []
    assert desired(parse_service(svc({"ports": [{"port": 80}]})), pods) == []
    assert desired(parse_service(svc({"selector": {}, "ports": [{"port": 80}]})), pods) == []


# --------------------------------------------------------------------------- property

LABELS = {"app": ("web", "db"), "tier": ("a", "b")}
NAMES = ("http", "dns", "metrics")


@st.composite
def _pods(draw: st.DrawFn) -> list[Pod]:
    out = []
    n = draw(st.integers(0, 8))
    for i in range(n):
        labels = {k: draw(st.sampled_from(v)) for k, v in LABELS.items() if draw(st.booleans())}
        ips = draw(
            st.sampled_from(
                [
                    [f"10.0.0.{i + 1}"],
                    [f"fd00::{i + 1:x}"],
                    [f"10.0.0.{i + 1}", f"fd00::{i + 1:x}"],
                    [],
                ]
            )
        )
        ports = [
            {"name": name, "containerPort": draw(st.integers(1, 65535)), "protocol": proto}
            for name in NAMES
            if draw(st.booleans())
            for proto in [draw(st.sampled_from(["TCP", "UDP"]))]
        ]
        status: Obj = {"phase": draw(st.sampled_from(["Running", "Pending", "Succeeded"]))}
        if ips:
            status["podIPs"] = [{"ip": ip} for ip in ips]
            status["podIP"] = ips[0]
        meta: Obj = {
            "name": f"p{i}",
            "namespace": draw(st.sampled_from(["ns", "ns", "other"])),
            "labels": labels,
        }
        if draw(st.integers(0, 4)) == 0:
            meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
        out.append(
            parse_pod(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": meta,
                    "spec": {"containers": [{"name": "c", "image": "x", "ports": ports}]},
                    "status": status,
                }
            )
        )
    return out


@st.composite
def _services(draw: st.DrawFn) -> Service:
    selector = {k: draw(st.sampled_from(v)) for k, v in LABELS.items() if draw(st.booleans())}
    n = draw(st.integers(1, 3))
    ports = []
    for i in range(n):
        target = draw(st.sampled_from(NAMES) | st.integers(1, 65535))
        ports.append(
            {
                "name": f"p{i}",
                "port": 1000 + i,
                "targetPort": target,
                "protocol": draw(st.sampled_from(["TCP", "UDP"])),
            }
        )
    ips = draw(st.sampled_from([["10.96.0.1"], ["fd00:96::1"], ["10.96.0.1", "fd00:96::1"], []]))
    return parse_service(svc({"selector": selector, "ports": ports, "clusterIPs": ips}))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(service=_services(), pods=_pods())
def test_backends_of_desired_slices_are_exactly_the_selected_pods(
    service: Service, pods: list[Pod]
) -> None:
    slices = [parse_endpoint_slice(es) for es in desired(service, pods)]
    families = service.families() or (4, 6)
    chosen = selected_pods(service, pods)
    for p in chosen:
        assert p.namespace == service.namespace
        assert p.active
        assert service.selector
        assert all(p.labels.get(k) == v for k, v in service.selector.items())
    by_ip = {ip: p for p in chosen for ip in p.ips}
    for sp in service.ports:
        backends = service_backends(service, sp, slices, ready_only=False)
        got = {(b.ip, b.port) for b in backends}
        assert len(got) == len(backends)
        for b in backends:
            owner = by_ip.get(b.ip)
            assert owner is not None, b
            assert b.pod == owner.key
            assert b.port == target_number(sp, owner)
            assert b.ready == (not owner.deleting)
        expected = {
            (ip, number)
            for p in chosen
            if (number := target_number(sp, p)) is not None
            for ip in p.ips
            if ipaddress.ip_address(ip).version in families
        }
        assert got == expected
        ready = {(b.ip, b.port) for b in service_backends(service, sp, slices)}
        assert ready == {(ip, n) for ip, n in expected if not by_ip[ip].deleting}
