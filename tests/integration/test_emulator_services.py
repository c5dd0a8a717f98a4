"""The emulator serves Services and EndpointSlices as kube-apiserver does.

Service defaulting, cluster IP and node port allocation (dual-stack policies, requested
addresses, headless Services, immutability, release on delete), EndpointSlice
validation, their server-side Tables, and the real kubectl against all of it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade_lab.emulator import Emulator, EmulatorThread
from tests.integration.test_emulator import TABLE, Api, Kubectl, needs_kubectl

Obj = dict[str, Any]
SERVICES = "/api/v1/namespaces/default/services"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


class ServicesApi(Api):
    """test_emulator's client, and the 422 answers the Service checks give."""

    def invalid(self, method: str, path: str, body: Any = None, **kwargs: str) -> str:
        """The message of a 422 Invalid answer."""
        status, result = self.call(method, path, body, **kwargs)
        assert status == 422, (status, result)
        assert result["reason"] == "Invalid"
        message: str = result["message"]
        return message


def service(name: str, port: int = 80, **spec: Any) -> Obj:
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": port}], **spec},
    }
    return body


def endpoint_slice(name: str, address_type: str = "IPv4", **fields: Any) -> Obj:
    body: Obj = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": address_type,
        "endpoints": [{"addresses": ["10.244.0.5"]}],
        "ports": [{"name": "http", "port": 8080}],
    }
    body.update(fields)
    return body


@pytest.fixture
def api(emu: EmulatorThread) -> ServicesApi:
    return ServicesApi(emu.url)


@pytest.fixture
def single_stack() -> Iterator[ServicesApi]:
    with EmulatorThread(service_cidrs="10.0.0.0/24") as running:
        yield ServicesApi(running.url)


def create(api: ServicesApi, body: Obj) -> Obj:
    created: Obj = api.ok("POST", SERVICES, body)
    return created


# --- Services: defaulting and cluster IPs ---------------------------------------------------


def test_service_defaults_and_first_cluster_ip(api: ServicesApi) -> None:
    created = create(api, service("web"))
    spec = created["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["clusterIP"] == "10.96.0.2"  # .1 is the kubernetes Service's
    assert spec["clusterIPs"] == ["10.96.0.2"]
    assert spec["ipFamilies"] == ["IPv4"]
    assert spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert "externalTrafficPolicy" not in spec
    assert created["status"] == {"loadBalancer": {}}
    affinity = create(api, service("sticky", sessionAffinity="ClientIP"))["spec"]
    assert affinity["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    assert affinity["clusterIP"] == "10.96.0.3"
    named = service("named", targetPort="http")
    named["spec"]["ports"] = [{"name": "http", "port": 80, "targetPort": "http"}]
    assert create(api, named)["spec"]["ports"][0]["targetPort"] == "http"
    # kube-apiserver's own checks on ports
    two = service("two")
    two["spec"]["ports"] = [{"port": 80}, {"port": 81}]
    message = api.invalid("POST", SERVICES, two)
    assert 'Service "two" is invalid: [spec.ports[0].name: Required value' in message
    assert "spec.ports[1].name: Required value" in message
    message = api.invalid("POST", SERVICES, service("bad", port=70000))
    assert "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535" in message
    nothing = service("none")
    nothing["spec"]["ports"] = []
    assert "spec.ports: Required value" in api.invalid("POST", SERVICES, nothing)
    assert "spec.type: Unsupported value" in api.invalid(
        "POST", SERVICES, service("t", type="Fancy")
    )


def test_dual_stack_policies(api: ServicesApi) -> None:
    prefer = create(api, service("prefer", ipFamilyPolicy="PreferDualStack"))["spec"]
    assert prefer["ipFamilies"] == ["IPv4", "IPv6"]
    assert prefer["clusterIPs"] == ["10.96.0.2", "fd00:10:96::2"]
    assert prefer["clusterIP"] == "10.96.0.2"
    require6 = create(
        api, service("require6", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv6"])
    )["spec"]
    assert require6["ipFamilies"] == ["IPv6", "IPv4"]
    assert require6["clusterIPs"] == ["fd00:10:96::3", "10.96.0.3"]
    single6 = create(api, service("single6", ipFamilies=["IPv6"]))["spec"]
    assert single6["ipFamilyPolicy"] == "SingleStack"
    assert single6["clusterIPs"] == ["fd00:10:96::4"]
    by_address = create(
        api,
        service(
            "by-address",
            clusterIPs=["fd00:10:96::99", "10.96.0.99"],
            ipFamilyPolicy="PreferDualStack",
        ),
    )["spec"]
    assert by_address["ipFamilies"] == ["IPv6", "IPv4"]
    assert by_address["clusterIP"] == "fd00:10:96::99"
    message = api.invalid("POST", SERVICES, service("two-single", ipFamilies=["IPv4", "IPv6"]))
    assert 'spec.ipFamilyPolicy: Invalid value: "SingleStack": must be RequireDualStack' in message
    message = api.invalid(
        "POST", SERVICES, service("mismatch", clusterIP="10.96.0.50", ipFamilies=["IPv6"])
    )
    assert "spec.ipFamilies[0]" in message
    assert "does not match the IP family of clusterIPs[0]" in message
    message = api.invalid(
        "POST",
        SERVICES,
        service("same", clusterIPs=["10.96.0.50", "10.96.0.51"], ipFamilyPolicy="RequireDualStack"),
    )
    assert "spec.clusterIPs[1]" in message
    assert "Unsupported value" in api.invalid(
        "POST", SERVICES, service("p", ipFamilyPolicy="Sometimes")
    )


def test_single_stack_cluster(single_stack: ServicesApi) -> None:
    api = single_stack
    assert create(api, service("a", ipFamilyPolicy="PreferDualStack"))["spec"]["clusterIPs"] == [
        "10.0.0.2"
    ]
    message = api.invalid("POST", SERVICES, service("b", ipFamilyPolicy="RequireDualStack"))
    assert "this cluster is not configured for dual-stack services" in message
    message = api.invalid("POST", SERVICES, service("c", ipFamilies=["IPv6"]))
    assert 'spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster' in message
    headless = create(api, service("d", clusterIP="None", selector=None))["spec"]
    assert headless["ipFamilyPolicy"] == "RequireDualStack"  # headless without selector
    assert headless["ipFamilies"] == ["IPv4"]


def test_requested_cluster_ips(emu: EmulatorThread, api: ServicesApi) -> None:
    assert create(api, service("fixed", clusterIP="10.96.7.7"))["spec"]["clusterIPs"] == [
        "10.96.7.7"
    ]
    message = api.invalid("POST", SERVICES, service("taken", clusterIP="10.96.7.7"))
    assert message == (
        'Service "taken" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.7.7"}: '
        "failed to allocate IP 10.96.7.7: provided IP is already allocated"
    )
    message = api.invalid("POST", SERVICES, service("outside", clusterIP="10.0.0.5"))
    assert (
        "failed to allocate IP 10.0.0.5: the provided IP (10.0.0.5) is not in the valid "
        "range. The range of valid IPs is 10.96.0.0/16"
    ) in message
    message = api.invalid("POST", SERVICES, service("bogus", clusterIP="ten"))
    assert 'spec.clusterIPs[0]: Invalid value: "ten": must be a valid IP address' in message
    message = api.invalid("POST", SERVICES, service("first", clusterIP="10.96.0.1"))
    assert "reserved for the kubernetes service" in message
    # Only the kubernetes Service gets the first address, asked for or not.
    kubernetes = service("kubernetes", port=443)
    kubernetes["spec"].pop("selector")
    assert create(api, kubernetes)["spec"]["clusterIP"] == "10.96.0.1"
    # A dual-stack request whose secondary is taken takes nothing at all.
    message = api.invalid(
        "POST",
        SERVICES,
        service(
            "half", clusterIPs=["10.96.0.40", "fd00:10:96::1"], ipFamilyPolicy="RequireDualStack"
        ),
    )
    assert "failed to allocate IP fd00:10:96::1" in message
    # Failed creates and dry runs leave nothing allocated.
    dry = api.ok("POST", SERVICES + "?dryRun=All", service("dry"))
    assert dry["spec"]["clusterIP"] == "10.96.0.2"
    assert create(api, service("real"))["spec"]["clusterIP"] == "10.96.0.2"
    assert create(api, service("forty", clusterIP="10.96.0.40"))["spec"]["clusterIP"] == (
        "10.96.0.40"
    )
    # put_object allocates as a POST does.
    put = emu.emulator.put_object(
        {**service("direct"), "metadata": {"name": "direct", "namespace": "default"}}
    )
    assert put["spec"]["clusterIP"] == "10.96.0.3"


def test_headless_services(api: ServicesApi) -> None:
    headless = create(api, service("headless", clusterIP="None"))["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["clusterIPs"] == ["None"]
    assert headless["ipFamilyPolicy"] == "SingleStack"
    assert headless["ipFamilies"] == ["IPv4"]
    selectorless = service("selectorless", clusterIP="None")
    selectorless["spec"].pop("selector")
    spec = create(api, selectorless)["spec"]
    assert spec["ipFamilyPolicy"] == "RequireDualStack"
    assert spec["ipFamilies"] == ["IPv4", "IPv6"]
    assert spec["clusterIPs"] == ["None"]
    no_ports = service("no-ports", clusterIP="None")
    no_ports["spec"]["ports"] = []
    create(api, no_ports)
    # No address was taken by any of them.
    assert create(api, service("next"))["spec"]["clusterIP"] == "10.96.0.2"


def test_cluster_ip_kept_on_update_and_immutable(api: ServicesApi) -> None:
    created = create(api, service("web"))
    assert created["spec"]["clusterIP"] == "10.96.0.2"
    # A PUT that omits the cluster IP (as kubectl replace may) keeps it.
    body = service("web", port=8080)
    body["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    updated = api.ok("PUT", f"{SERVICES}/web", body)
    assert updated["spec"]["clusterIP"] == "10.96.0.2"
    assert updated["spec"]["clusterIPs"] == ["10.96.0.2"]
    assert updated["spec"]["ports"][0]["targetPort"] == 8080
    message = api.invalid(
        "PATCH",
        f"{SERVICES}/web",
        {"spec": {"clusterIP": "10.96.0.9"}},
        content_type="application/merge-patch+json",
    )
    assert message == (
        'Service "web" is invalid: spec.clusterIP: Invalid value: "10.96.0.9": field is immutable'
    )
    message = api.invalid(
        "PATCH",
        f"{SERVICES}/web",
        {"spec": {"clusterIP": "None", "clusterIPs": ["None"]}},
        content_type="application/merge-patch+json",
    )
    assert "field is immutable" in message
    # Upgrading to dual-stack adds a secondary address; downgrading gives it back.
    up = api.ok(
        "PATCH",
        f"{SERVICES}/web",
        {"spec": {"ipFamilyPolicy": "PreferDualStack"}},
        content_type="application/merge-patch+json",
    )["spec"]
    assert up["clusterIPs"] == ["10.96.0.2", "fd00:10:96::2"]
    assert up["ipFamilies"] == ["IPv4", "IPv6"]
    down = api.ok(
        "PATCH",
        f"{SERVICES}/web",
        {"spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": None, "clusterIPs": None}},
        content_type="application/merge-patch+json",
    )["spec"]
    assert down["clusterIPs"] == ["10.96.0.2"]
    assert down["ipFamilies"] == ["IPv4"]
    other = create(api, service("v6", ipFamilies=["IPv6"]))["spec"]
    assert other["clusterIPs"] == ["fd00:10:96::2"]  # released by the downgrade
    # Becoming an ExternalName gives the address back.
    external = api.ok(
        "PATCH",
        f"{SERVICES}/web",
        {"spec": {"type": "ExternalName", "externalName": "example.com"}},
        content_type="application/merge-patch+json",
    )["spec"]
    assert "clusterIP" not in external
    assert "ipFamilies" not in external
    assert create(api, service("reuse"))["spec"]["clusterIP"] == "10.96.0.2"


def test_delete_releases_addresses(emu: EmulatorThread, api: ServicesApi) -> None:
    create(api, service("a", ipFamilyPolicy="PreferDualStack"))
    create(api, service("b"))
    api.ok("DELETE", f"{SERVICES}/a")
    again = create(api, service("c", ipFamilyPolicy="RequireDualStack"))["spec"]
    assert again["clusterIPs"] == ["10.96.0.2", "fd00:10:96::2"]
    emu.emulator.delete_object("", "v1", "services", "c", "default")
    assert create(api, service("d"))["spec"]["clusterIP"] == "10.96.0.2"
    # A Service held by a finalizer keeps its address until it is gone.
    held = service("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    assert create(api, held)["spec"]["clusterIP"] == "10.96.0.4"
    api.ok("DELETE", f"{SERVICES}/held")
    assert create(api, service("e"))["spec"]["clusterIP"] == "10.96.0.5"
    api.ok(
        "PATCH",
        f"{SERVICES}/held",
        {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    assert create(api, service("f"))["spec"]["clusterIP"] == "10.96.0.4"
    # Deleting the namespace deletes its Services and gives their addresses back.
    api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "gone"}})
    api.ok("POST", "/api/v1/namespaces/gone/services", service("g"))
    api.ok("DELETE", "/api/v1/namespaces/gone")
    deadline = time.monotonic() + 10
    while emu.emulator.get_object("", "v1", "namespaces", "gone") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert create(api, service("h"))["spec"]["clusterIP"] == "10.96.0.6"


# --- Services: node ports --------------------------------------------------------------------


def test_node_ports(api: ServicesApi) -> None:
    spec = create(api, service("np", type="NodePort"))["spec"]
    assert spec["ports"][0]["nodePort"] == 30000
    assert spec["externalTrafficPolicy"] == "Cluster"
    fixed = service("fixed", type="NodePort")
    fixed["spec"]["ports"] = [
        {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},  # the same node port
        {"name": "http", "port": 80},
    ]
    ports = create(api, fixed)["spec"]["ports"]
    assert [p["nodePort"] for p in ports] == [30053, 30053, 30001]
    taken = service("taken", type="NodePort")
    taken["spec"]["ports"][0]["nodePort"] = 30053
    message = api.invalid("POST", SERVICES, taken)
    assert message == (
        'Service "taken" is invalid: spec.ports[0].nodePort: Invalid value: 30053: '
        "provided port is already allocated"
    )
    outside = service("outside", type="NodePort")
    outside["spec"]["ports"][0]["nodePort"] = 8080
    message = api.invalid("POST", SERVICES, outside)
    assert "provided port is not in the valid range. The range of valid ports is 30000-32767" in (
        message
    )
    cluster = service("cluster")
    cluster["spec"]["ports"][0]["nodePort"] = 30500
    message = api.invalid("POST", SERVICES, cluster)
    assert "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'" in (
        message
    )
    # Updates that leave the node port out keep it (matched by port name).
    patched = api.ok(
        "PATCH",
        f"{SERVICES}/fixed",
        {"spec": {"ports": [{"name": "http", "port": 8080}]}},
        content_type="application/merge-patch+json",
    )["spec"]["ports"]
    assert patched == [
        {"name": "http", "port": 8080, "protocol": "TCP", "targetPort": 8080, "nodePort": 30001}
    ]
    # 30053 was given back by that update.
    assert create(api, taken)["spec"]["ports"][0]["nodePort"] == 30053
    # Back to ClusterIP: node ports dropped and given back.
    plain = api.ok(
        "PATCH",
        f"{SERVICES}/np",
        {"spec": {"type": "ClusterIP", "externalTrafficPolicy": None}},
        content_type="application/merge-patch+json",
    )["spec"]
    assert "nodePort" not in plain["ports"][0]
    assert create(api, service("np2", type="NodePort"))["spec"]["ports"][0]["nodePort"] == 30000
    api.ok("DELETE", f"{SERVICES}/np2")
    lb = create(api, service("lb", type="LoadBalancer"))["spec"]
    assert lb["ports"][0]["nodePort"] == 30000
    assert lb["allocateLoadBalancerNodePorts"] is True
    assert lb["externalTrafficPolicy"] == "Cluster"
    no_np = create(api, service("lb2", type="LoadBalancer", allocateLoadBalancerNodePorts=False))[
        "spec"
    ]
    assert "nodePort" not in no_np["ports"][0]


def test_node_port_range_full() -> None:
    with EmulatorThread(Emulator(node_port_range=(31000, 31001))) as running:
        api = ServicesApi(running.url)
        create(api, service("a", type="NodePort"))
        create(api, service("b", type="NodePort"))
        status, result = api.call("POST", SERVICES, service("c", type="NodePort"))
        assert status == 500
        assert "failed to allocate a nodePort: range is full" in result["message"]
        # the cluster IP taken before the failure was given back
        assert create(api, service("d"))["spec"]["clusterIP"] == "10.96.0.4"


# --- EndpointSlices ----------------------------------------------------------------------------


def test_endpointslices_served(api: ServicesApi) -> None:
    resources = api.ok("GET", "/apis/discovery.k8s.io/v1")["resources"]
    [entry] = [r for r in resources if r["name"] == "endpointslices"]
    assert entry["kind"] == "EndpointSlice"
    assert entry["namespaced"] is True
    assert "watch" in entry["verbs"]
    assert not any(r["name"] == "endpointslices/status" for r in resources)
    groups = [g["name"] for g in api.ok("GET", "/apis")["groups"]]
    assert "discovery.k8s.io" in groups
    created = api.ok("POST", SLICES, endpoint_slice("web-1"))
    assert created["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    fqdn = endpoint_slice("web-fqdn", "FQDN", endpoints=[{"addresses": ["db.example.com"]}])
    api.ok("POST", SLICES, fqdn)
    v6 = endpoint_slice("web-v6", "IPv6", endpoints=[{"addresses": ["fd00:10:244::5"]}])
    v6["ports"] = [{"port": None}, {"name": "dns", "protocol": "UDP"}]
    api.ok("POST", SLICES, v6)
    listed = api.ok("GET", SLICES + "?labelSelector=kubernetes.io/service-name%3Dweb")
    assert listed["kind"] == "EndpointSliceList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["web-1", "web-fqdn", "web-v6"]
    patched = api.ok(
        "PATCH",
        f"{SLICES}/web-1",
        {"endpoints": [{"addresses": ["10.244.0.6"], "conditions": {"ready": True}}]},
        content_type="application/merge-patch+json",
    )
    assert patched["endpoints"][0]["addresses"] == ["10.244.0.6"]
    message = api.invalid(
        "PATCH",
        f"{SLICES}/web-1",
        {"addressType": "IPv6", "endpoints": []},
        content_type="application/merge-patch+json",
    )
    assert 'addressType: Invalid value: "IPv6": field is immutable' in message
    table = api.ok("GET", SLICES, accept=TABLE)
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "AddressType",
        "Ports",
        "Endpoints",
        "Age",
    ]
    assert table["rows"][0]["cells"][:4] == ["web-1", "IPv4", "8080", "10.244.0.6"]
    assert table["rows"][2]["cells"][:4] == ["web-v6", "IPv6", "*,dns", "fd00:10:244::5"]
    api.ok("DELETE", f"{SLICES}/web-fqdn")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"addressType": None}, "addressType: Required value"),
        (
            {"addressType": "IPv5"},
            'addressType: Unsupported value: "IPv5": supported values: "FQDN", "IPv4", "IPv6"',
        ),
        (
            {"endpoints": [{"addresses": ["fd00::1"]}]},
            'endpoints[0].addresses[0]: Invalid value: "fd00::1": must be a valid IPv4 address',
        ),
        (
            {"endpoints": [{"addresses": []}]},
            "endpoints[0].addresses: Required value: must contain at least 1 address",
        ),
        (
            {"endpoints": [{"addresses": [f"10.0.0.{i}" for i in range(101)]}]},
            "endpoints[0].addresses: Too many: 101: must have at most 100 items",
        ),
        (
            {"endpoints": [{"addresses": ["10.0.0.1"]}] * 1001},
            "endpoints: Too many: 1001: must have at most 1000 items",
        ),
        (
            {"ports": [{"port": 70000}]},
            "ports[0].port: Invalid value: 70000: must be between 0 and 65535, inclusive",
        ),
        ({"ports": [{"port": 80, "protocol": "ICMP"}]}, "ports[0].protocol: Unsupported value"),
        ({"ports": [{"name": "a"}, {"name": "a"}]}, 'ports[1].name: Duplicate value: "a"'),
    ],
)
def test_endpointslice_validation(api: ServicesApi, fields: Obj, expected: str) -> None:
    body = endpoint_slice("bad", **fields)
    if body["addressType"] is None:
        del body["addressType"]
    message = api.invalid("POST", SLICES, body)
    assert message.startswith('EndpointSlice.discovery.k8s.io "bad" is invalid: ')
    assert expected in message
    assert api.call("GET", f"{SLICES}/bad")[0] == 404


def test_endpointslice_fqdn_must_be_a_dns_name(api: ServicesApi) -> None:
    body = endpoint_slice("bad", "FQDN", endpoints=[{"addresses": ["Not_A.Name"]}])
    assert "RFC 1123 subdomain" in api.invalid("POST", SLICES, body)


# --- Tables ------------------------------------------------------------------------------------


def test_service_table(api: ServicesApi) -> None:
    create(api, service("web"))
    create(api, service("np", type="NodePort", ipFamilyPolicy="PreferDualStack"))
    create(api, service("lb", type="LoadBalancer", externalIPs=["192.0.2.1"]))
    create(api, service("pending", type="LoadBalancer"))
    create(api, service("headless", clusterIP="None"))
    external = service("ext", type="ExternalName", externalName="example.com")
    external["spec"]["ports"] = []
    create(api, external)
    table = api.ok("GET", SERVICES, accept=TABLE)
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns == [
        ("Name", 0),
        ("Type", 0),
        ("Cluster-IP", 0),
        ("External-IP", 0),
        ("Port(s)", 0),
        ("Age", 0),
        ("Selector", 1),
    ]
    rows = {row["cells"][0]: row["cells"] for row in table["rows"]}
    assert rows["web"][1:5] == ["ClusterIP", "10.96.0.2", "<none>", "80/TCP"]
    assert rows["web"][6] == "app=web"
    assert rows["np"][1:5] == ["NodePort", "10.96.0.3", "<none>", "80:30000/TCP"]
    assert rows["lb"][3:5] == ["192.0.2.1", "80:30001/TCP"]
    assert rows["pending"][3] == "<pending>"
    assert rows["headless"][2] == "None"
    assert rows["ext"][1:5] == ["ExternalName", "<none>", "example.com", "<none>"]


# --- standalone flags --------------------------------------------------------------------------


def test_standalone_service_cidr_flag(tmp_path: Path) -> None:
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "stockade_lab.emulator",
            "--service-cidr",
            "10.0.0.0/24,10.1.0.0/24",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2
    assert "different IP families" in bad.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stockade_lab.emulator",
            "--port",
            str(port),
            "--service-cidr",
            "fd00:1::/112,10.100.0.0/24",
            "--service-node-port-range",
            "31000-31010",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        api = ServicesApi(f"http://127.0.0.1:{port}")
        spec = create(api, service("web", type="NodePort", ipFamilyPolicy="PreferDualStack"))[
            "spec"
        ]
        assert spec["clusterIPs"] == ["fd00:1::2", "10.100.0.2"]
        assert spec["ipFamilies"] == ["IPv6", "IPv4"]
        assert spec["ports"][0]["nodePort"] == 31000
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


# --- real kubectl ------------------------------------------------------------------------------


@pytest.fixture
def kubectl(emu: EmulatorThread, tmp_path: Path) -> Kubectl:
    return Kubectl(emu.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path)


SLICE = """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  labels: {kubernetes.io/service-name: web, endpointslice.kubernetes.io/managed-by: test}
addressType: IPv4
ports: [{name: "", port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.244.0.5]
  conditions: {ready: true}
- addresses: [10.244.0.6]
- addresses: [10.244.0.7]
- addresses: [10.244.0.8]
"""

NODE_PORT = """
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  type: NodePort
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


@needs_kubectl
def test_kubectl_expose_get_and_delete(kubectl: Kubectl) -> None:
    assert "pod/web created" in kubectl(
        "run", "web", "--image", "nginx", "--labels", "app=web", "--port", "8080"
    )
    assert "service/web exposed" in kubectl(
        "expose", "pod", "web", "--port", "80", "--target-port", "8080"
    )
    svc = yaml.safe_load(kubectl("get", "svc", "web", "-o", "yaml"))
    assert svc["spec"]["clusterIP"] == "10.96.0.2"
    assert svc["spec"]["selector"] == {"app": "web"}
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 8080}]
    assert svc["spec"]["ipFamilyPolicy"] == "SingleStack"
    assert "slice" in kubectl("apply", "-f", "-", stdin=SLICE)
    table = rows(kubectl("get", "svc,endpointslices"))
    assert table[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert table[1][:5] == ["service/web", "ClusterIP", "10.96.0.2", "<none>", "80/TCP"]
    assert table[3][:3] == ["NAME", "ADDRESSTYPE", "PORTS"]
    assert table[3][3:] == ["ENDPOINTS", "AGE"]
    slice_row = " ".join(table[4])
    assert slice_row.startswith("endpointslice.discovery.k8s.io/web-abc12 IPv4 8080")
    assert "10.244.0.5,10.244.0.6,10.244.0.7 + 1 more..." in slice_row
    wide = rows(kubectl("get", "svc", "-o", "wide"))
    assert wide[0][-1] == "SELECTOR"
    assert wide[1][-1] == "app=web"
    described = kubectl("describe", "svc", "web")
    assert "10.96.0.2" in described
    assert "10.244.0.5:8080" in described  # kubectl describe reads the EndpointSlices
    assert 'service "web" deleted' in kubectl("delete", "svc", "web")
    assert "service/web2 exposed" in kubectl(
        "expose", "pod", "web", "--name", "web2", "--port", "81"
    )
    assert kubectl("get", "svc", "web2", "-o", "jsonpath={.spec.clusterIP}") == "10.96.0.2"
    bad = kubectl("apply", "-f", "-", stdin=SLICE.replace("IPv4", "IPv5"), check=False)
    assert 'The EndpointSlice "web-abc12" is invalid' in bad


@needs_kubectl
def test_kubectl_apply_keeps_allocations(kubectl: Kubectl, tmp_path: Path) -> None:
    manifest = tmp_path / "api.yaml"
    manifest.write_text(NODE_PORT)
    assert "service/api created" in kubectl("apply", "-f", str(manifest))
    first = yaml.safe_load(kubectl("get", "svc", "api", "-o", "yaml"))["spec"]
    assert first["ports"][0]["nodePort"] == 30000
    assert first["externalTrafficPolicy"] == "Cluster"
    assert "service/api unchanged" in kubectl("apply", "-f", str(manifest))
    manifest.write_text(NODE_PORT.replace("8080", "9090"))
    assert "service/api configured" in kubectl("apply", "-f", str(manifest))
    again = yaml.safe_load(kubectl("get", "svc", "api", "-o", "yaml"))["spec"]
    assert again["clusterIP"] == first["clusterIP"]
    assert again["ports"][0] == {**first["ports"][0], "targetPort": 9090}
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", str(manifest))
    assert rows(kubectl("get", "svc", "api"))[1][4] == "80:30000/TCP"
    out = kubectl("patch", "svc", "api", "-p", '{"spec": {"clusterIP": "10.96.9.9"}}', check=False)
    assert "field is immutable" in out
    kubectl("delete", "-f", str(manifest))
    assert "service/api created" in kubectl("apply", "-f", str(manifest))
    assert kubectl("get", "svc", "api", "-o", "jsonpath={.spec.ports[0].nodePort}") == "30000"
