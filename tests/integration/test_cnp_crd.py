"""The ClusterNetworkPolicy CRD (manifests/cnp-crd.yaml) served by the API server emulator.

The emulator does not validate custom resources against their schema (docs/emulator.md,
"Out of scope"), so what is checked here is what it does serve: the CRD registers the
resource (cluster-scoped, short name ``cnp``, status subresource), objects round-trip,
and real kubectl applies both and shows the Tier and Priority columns. The schema's
validation is checked offline in tests/unit/test_crd_cnp.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade_lab.emulator import EmulatorThread
from tests.integration.test_emulator import Api, Kubectl, needs_kubectl
from tests.unit.test_crd_cnp import CONDITION_SAMPLE, VALID, cnp

ROOT = Path(__file__).resolve().parents[2]
CNP_CRD = ROOT / "manifests" / "cnp-crd.yaml"
CRD_NAME = "clusternetworkpolicies.policy.networking.k8s.io"
CRDS_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
GROUP_VERSION = "/apis/policy.networking.k8s.io/v1alpha2"
BASE = f"{GROUP_VERSION}/clusternetworkpolicies"

pytestmark = [pytest.mark.timeout(120)]

Obj = dict[str, Any]


@pytest.fixture
def api(emu: EmulatorThread) -> Api:
    return Api(emu.url)


@pytest.fixture
def kubectl(emu: EmulatorThread, tmp_path: Path) -> Kubectl:
    return Kubectl(emu.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path)


def test_the_crd_is_served_and_objects_round_trip(api: Api) -> None:
    crd = yaml.safe_load(CNP_CRD.read_text())
    status, created = api.call("POST", CRDS_PATH, crd)
    assert status == 201, created
    stored = api.ok("GET", f"{CRDS_PATH}/{CRD_NAME}")
    assert {c["type"] for c in stored["status"]["conditions"]} >= {"Established"}
    assert stored["metadata"]["annotations"]["policy.networking.k8s.io/bundle-version"] == "v0.2.0"

    found = {r["name"]: r for r in api.ok("GET", GROUP_VERSION)["resources"]}
    main = found["clusternetworkpolicies"]
    assert main["kind"] == "ClusterNetworkPolicy"
    assert main["namespaced"] is False
    assert main["shortNames"] == ["cnp"]
    assert "clusternetworkpolicies/status" in found

    body = cnp(copy.deepcopy(VALID[1]), name="admin-ingress")
    body["status"] = {"conditions": [CONDITION_SAMPLE]}
    status, obj = api.call("POST", BASE, body)
    assert status == 201, obj
    assert "status" not in obj, "the status subresource: status is ignored on create"
    got = api.ok("GET", f"{BASE}/admin-ingress")
    assert got["spec"] == VALID[1]
    assert got["kind"] == "ClusterNetworkPolicy"
    assert "namespace" not in got["metadata"]

    got["status"] = {"conditions": [CONDITION_SAMPLE]}
    api.ok("PUT", f"{BASE}/admin-ingress/status", got)
    again = api.ok("GET", f"{BASE}/admin-ingress")
    assert again["status"] == {"conditions": [CONDITION_SAMPLE]}
    assert again["spec"] == VALID[1]
    names = [o["metadata"]["name"] for o in api.ok("GET", BASE)["items"]]
    assert names == ["admin-ingress"]


@needs_kubectl
def test_kubectl_applies_it_and_shows_tier_and_priority(kubectl: Kubectl) -> None:
    out = kubectl("apply", "-f", str(CNP_CRD))
    assert f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME} created" in out
    policies = "---\n".join(
        yaml.safe_dump(cnp(spec, name=name))
        for name, spec in zip(("minimal", "admin-ingress", "baseline-egress"), VALID, strict=True)
    )
    out = kubectl("apply", "-f", "-", stdin=policies)
    for name in ("minimal", "admin-ingress", "baseline-egress"):
        assert f"clusternetworkpolicy.policy.networking.k8s.io/{name} created" in out
    assert "unchanged" in kubectl("apply", "-f", "-", stdin=policies)

    table = [line.split() for line in kubectl("get", "cnp").splitlines()]
    assert table[0] == ["NAME", "TIER", "PRIORITY", "AGE"]
    rows = {row[0]: row[1:3] for row in table[1:]}
    assert rows == {
        "admin-ingress": ["Admin", "10"],
        "baseline-egress": ["Baseline", "1000"],
        "minimal": ["Admin", "0"],
    }
    shown = yaml.safe_load(kubectl("get", "clusternetworkpolicy", "baseline-egress", "-o", "yaml"))
    assert shown["spec"] == VALID[2]
    kubectl("delete", "cnp", "minimal")
    assert "minimal" not in kubectl("get", "cnp")
