"""``kubectl stockade explain`` to a Service, against the API server emulator.

The emulator allocates the Service's cluster IP but runs no EndpointSlice
controller, so the tests write the slice themselves; the plugin reads Pods,
NetworkPolicies, Services and EndpointSlices over HTTP and gives one verdict per
ready backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade import plugin
from stockade_lab.emulator import EmulatorThread

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.timeout(60)]

Obj = dict[str, Any]
NS = "ns"


def _pod(name: str, ip: str, labels: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {
                    "name": "c",
                    "image": "busybox:1.36",
                    "ports": [{"name": "http", "containerPort": 8080}],
                }
            ],
        },
        "status": {"phase": "Running", "hostIP": "172.18.0.2", "podIP": ip},
    }


def _endpoint(pod: str, ip: str, ready: bool = True) -> Obj:
    return {
        "addresses": [ip],
        "conditions": {"ready": ready},
        "nodeName": "node-1",
        "targetRef": {"kind": "Pod", "namespace": NS, "name": pod},
    }


def _slice(name: str, service: str, endpoints: list[Obj]) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def _service(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorThread]:
    thread = EmulatorThread()
    thread.start()
    try:
        # The ClusterNetworkPolicy CRD too: without it the plugin warns that it
        # evaluates NetworkPolicies only (tests/integration/test_plugin_tiers.py).
        for crds in ("crds.yaml", "cnp-crd.yaml"):
            for crd in yaml.safe_load_all((ROOT / "manifests" / crds).read_text()):
                thread.emulator.put_object(crd)
        put = thread.emulator.put_object
        put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        put(_pod("client", "10.244.1.10", {"app": "client"}))
        put(_pod("web-a", "10.244.1.20", {"app": "web", "tier": "a"}))
        put(_pod("web-b", "10.244.1.21", {"app": "web", "tier": "b"}))
        put(_pod("web-c", "10.244.1.22", {"app": "web", "tier": "c"}))
        put(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "deny-b", "namespace": NS},
                "spec": {"podSelector": {"matchLabels": {"tier": "b"}}, "policyTypes": ["Ingress"]},
            }
        )
        put(_service("web"))
        put(
            _slice(
                "web-1",
                "web",
                [_endpoint("web-a", "10.244.1.20"), _endpoint("web-b", "10.244.1.21")],
            )
        )
        put(_service("partial"))
        put(
            _slice(
                "partial-1",
                "partial",
                [
                    _endpoint("web-a", "10.244.1.20"),
                    _endpoint("web-c", "10.244.1.22", ready=False),
                ],
            )
        )
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def kubeconfig(emu: EmulatorThread, tmp_path: Path) -> str:
    return str(emu.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS))


def _cluster_ip(emu: EmulatorThread, name: str) -> str:
    obj = emu.emulator.get_object("", "v1", "services", name, NS)
    assert obj is not None
    ip = obj["spec"]["clusterIP"]
    assert isinstance(ip, str)
    assert ip not in ("", "None")
    return ip


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = plugin.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _explain(dst: str, kubeconfig: str, *extra: str) -> list[str]:
    return ["explain", f"{NS}/client", dst, "--port", "80", "--kubeconfig", kubeconfig, *extra]


def _check_text(out: str) -> None:
    assert "summary: 1 of 2 backends allow" in out
    assert "backend 1: ns/web-a on node-1, 10.244.1.20:8080\n  ALLOWED" in out
    assert "backend 2: ns/web-b on node-1, 10.244.1.21:8080\n  DENIED" in out
    assert "isolated by: ns/deny-b" in out
    assert "backend 3" not in out
    assert "10.244.1.20" in out
    assert "10.244.1.21" in out
    assert "10.244.1.22" not in out


def test_explain_a_named_service_gives_a_verdict_per_backend(
    kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(_explain(f"svc/{NS}/web", kubeconfig), capsys)
    assert code == 0, err
    _check_text(out)


def test_explain_the_cluster_ip_is_the_same(
    emu: EmulatorThread, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ip = _cluster_ip(emu, "web")
    code, by_ip, err = _run(_explain(ip, kubeconfig), capsys)
    assert code == 0, err
    _check_text(by_ip)
    assert ip in by_ip


def test_explain_json_outcome_is_some(kubeconfig: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(_explain(f"svc/{NS}/web", kubeconfig, "-o", "json"), capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["outcome"] == "some", data
    text = json.dumps(data)
    assert "10.244.1.20" in text
    assert "10.244.1.21" in text


def test_explain_unknown_service_is_bad_input(
    kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(_explain(f"svc/{NS}/nope", kubeconfig), capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "nope" in err


def test_explain_leaves_out_a_not_ready_endpoint(
    kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(_explain(f"svc/{NS}/partial", kubeconfig), capsys)
    assert code == 0, err
    assert "10.244.1.20" in out
    assert "10.244.1.22" not in out
    assert "all 1 backend(s) allow" in out
    assert "backend 2" not in out
