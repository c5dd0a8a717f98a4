"""``stockade explain`` and ``matrix --services`` with a Service as the destination.

Expected verdicts are written by hand: kube-proxy sends each connection to one ready
backend, on the port the service port resolves to there, and stockade judges it on
that backend (docs/semantics.md, "Traffic to Service IPs").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade.cli import main


def pod(
    name: str, ip: str, node: str, labels: dict[str, str], ports: list[Any] | None = None
) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
        "status": {"podIP": ip, "phase": "Running"},
    }


def service(
    name: str, ip: str | None, selector: dict[str, str] | None, ports: list[Any], **spec: Any
) -> Any:
    body: dict[str, Any] = {"ports": ports, **spec}
    if ip is not None:
        body["clusterIP"] = ip
    if selector is not None:
        body["selector"] = selector
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": body,
    }


HTTP8080 = [{"name": "http", "containerPort": 8080}]
HTTP9090 = [{"name": "http", "containerPort": 9090}]
BASE = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    pod("web-1", "10.0.1.10", "n1", {"app": "web"}, HTTP8080),
    pod("web-2", "10.0.2.10", "n2", {"app": "web", "tier": "special"}, HTTP9090),
    pod("web-3", "10.0.2.11", "n2", {"app": "web"}),  # declares no "http"
    pod("client", "10.0.1.20", "n1", {"app": "client"}),
    service(
        "web", "10.96.0.10", {"app": "web"}, [{"name": "http", "port": 80, "targetPort": "http"}]
    ),
]
SPECIAL_CLOSED = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "special-closed", "namespace": "shop"},
    "spec": {"podSelector": {"matchLabels": {"tier": "special"}}, "policyTypes": ["Ingress"]},
}
ALL_CLOSED = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "all-closed", "namespace": "shop"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}


def files(tmp_path: Path, *docs: Any) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def explain_json(capsys: pytest.CaptureFixture[str], path: str, dst: str, port: str = "80") -> Any:
    code, out, err = run(
        capsys, "explain", "shop/client", dst, "--port", port, "-f", path, "-o", "json"
    )
    assert code == 0, err
    return json.loads(out)


def test_each_backend_is_judged_on_its_own_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = files(tmp_path, *BASE, SPECIAL_CLOSED)
    got = explain_json(capsys, path, "svc/shop/web")
    assert got["outcome"] == "some"
    assert got["allowedBackends"] == 1
    assert [(b["pod"], b["port"], b["verdict"]["allowed"]) for b in got["backends"]] == [
        ("shop/web-1", 8080, True),
        ("shop/web-2", 9090, False),
    ]
    assert got["endpointsDerived"] is True
    assert any("shop/web-3 declares no TCP port named http" in n for n in got["notes"])


def test_the_cluster_ip_names_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = files(tmp_path, *BASE, SPECIAL_CLOSED)
    assert explain_json(capsys, path, "10.96.0.10") == explain_json(capsys, path, "svc/shop/web")


def test_text_output_has_a_verdict_per_backend_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "explain",
        "shop/client",
        "svc/shop/web",
        "--port",
        "80",
        "-f",
        files(tmp_path, *BASE, SPECIAL_CLOSED),
    )
    assert code == 0
    assert "backend 1: shop/web-1 on n1, 10.0.1.10:8080" in out
    assert "backend 2: shop/web-2 on n2, 10.0.2.10:9090" in out
    assert "ALLOWED: shop/client (10.0.1.20) -> shop/web-1" in out
    assert "DENIED: shop/client (10.0.1.20) -> shop/web-2" in out
    assert "summary: 1 of 2 backends allow this connection" in out


def test_all_and_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain_json(capsys, files(tmp_path, *BASE), "svc/shop/web")["outcome"] == "all"
    assert (
        explain_json(capsys, files(tmp_path, *BASE, ALL_CLOSED), "svc/shop/web")["outcome"]
        == "none"
    )


def test_endpoint_slices_are_used_when_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The slice, not the selector: only web-2, and a not-ready web-1 is left out."""
    es = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": ["10.0.1.10"],
                "conditions": {"ready": False},
                "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1"},
            },
            {
                "addresses": ["10.0.2.10"],
                "nodeName": "n2",
                "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-2"},
            },
        ],
        "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}],
    }
    got = explain_json(capsys, files(tmp_path, *BASE, SPECIAL_CLOSED, es), "svc/shop/web")
    assert got["endpointsDerived"] is False
    assert [(b["pod"], b["port"]) for b in got["backends"]] == [("shop/web-2", 9090)]
    assert got["outcome"] == "none"


def test_no_ready_backend_is_refused_not_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lonely = service("lonely", "10.96.0.11", {"app": "nobody"}, [{"port": 80}])
    got = explain_json(capsys, files(tmp_path, *BASE, lonely), "svc/shop/lonely")
    assert got["outcome"] == "refused"
    assert got["backends"] == []
    code, out, _ = run(
        capsys,
        "explain",
        "shop/client",
        "svc/shop/lonely",
        "--port",
        "80",
        "-f",
        files(tmp_path, *BASE, lonely),
    )
    assert code == 0
    assert "no ready endpoint: kube-proxy rejects connections to 10.96.0.11:80/TCP" in out


def test_a_pod_reaching_itself_through_its_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only2 = service("only2", "10.96.0.12", {"tier": "special"}, [{"port": 80, "targetPort": 9090}])
    path = files(tmp_path, *BASE, ALL_CLOSED, only2)
    code, out, err = run(
        capsys, "explain", "shop/web-2", "svc/shop/only2", "--port", "80", "-f", path, "-o", "json"
    )
    assert code == 0, err
    assert json.loads(out)["outcome"] == "all"  # rule 12, hairpin


@pytest.mark.parametrize(
    ("dst", "extra", "message"),
    [
        ("svc/shop/nope", [], "unknown service (services in shop: web)"),
        ("svc/shop", [], "expected svc/NAMESPACE/NAME"),
        (
            "svc/shop/headless",
            [service("headless", "None", {"app": "web"}, [{"port": 80}])],
            "headless",
        ),
        (
            "svc/shop/ext",
            [
                service(
                    "ext", None, None, [{"port": 80}], type="ExternalName", externalName="a.example"
                )
            ],
            "ExternalName",
        ),
    ],
)
def test_bad_service_destinations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dst: str, extra: list[Any], message: str
) -> None:
    code, out, err = run(
        capsys, "explain", "shop/client", dst, "--port", "80", "-f", files(tmp_path, *BASE, *extra)
    )
    assert code == 2
    assert out == ""
    assert message in err
    assert err.count("\n") == 1


def test_port_not_in_the_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "explain",
        "shop/client",
        "svc/shop/web",
        "--port",
        "81",
        "-f",
        files(tmp_path, *BASE),
    )
    assert code == 2
    assert "has no port 81/TCP (ports: http (80/TCP))" in err
    code, _, err = run(
        capsys,
        "explain",
        "shop/client",
        "svc/shop/web",
        "--port",
        "80",
        "--protocol",
        "UDP",
        "-f",
        files(tmp_path, *BASE),
    )
    assert code == 2
    assert "has no port 80/UDP" in err


def test_an_invalid_service_is_left_out_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = service("bad", "10.96.0.13", {"app": "web"}, [{"port": 70000}])
    path = files(tmp_path, *BASE, bad)
    code, _, err = run(capsys, "explain", "shop/client", "shop/web-1", "--port", "80", "-f", path)
    assert code == 0
    assert "Service shop/bad: spec.ports[0].port: must be between 1 and 65535, got 70000" in err
    code, _, err = run(capsys, "explain", "shop/client", "svc/shop/bad", "--port", "80", "-f", path)
    assert code == 2
    assert "unknown service" in err


def test_services_are_no_longer_ignored_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "matrix", "-f", files(tmp_path, *BASE))
    assert code == 0
    assert "unsupported kind" not in err


def test_matrix_of_services(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    only2 = service("only2", "10.96.0.12", {"tier": "special"}, [{"port": 80, "targetPort": 9090}])
    lonely = service("lonely", "10.96.0.11", {"app": "nobody"}, [{"port": 80}])
    path = files(tmp_path, *BASE, SPECIAL_CLOSED, only2, lonely)
    code, out, err = run(capsys, "matrix", "--services", "--port", "80", "-f", path, "-o", "json")
    assert code == 0, err
    cells = json.loads(out)["outcomes"]
    assert cells["shop/client"] == {
        "shop/lonely": "refused",
        "shop/only2": "none",
        "shop/web": "some",
    }
    assert cells["shop/web-2"] == {"shop/lonely": "refused", "shop/only2": "all", "shop/web": "all"}
    code, out, _ = run(capsys, "matrix", "--services", "--port", "80", "-f", path)
    assert code == 0
    assert "[1] shop/lonely" in out
    assert "~ some do" in out
    row = next(line for line in out.splitlines() if line.startswith("shop/client"))
    assert row.split()[1:] == ["-", "X", "~"]
