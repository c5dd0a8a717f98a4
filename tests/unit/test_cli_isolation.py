"""``stockade matrix -f`` and ``explain -f`` with IsolationPolicies in the files: the
matrix by sameness, explain's reason, and the warnings (invalid, equal priorities)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_cli_tiers import _explain, _explain_json, _matrix, _rows, _run, _write

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: stack-one}
---
apiVersion: v1
kind: Namespace
metadata: {name: stack-two}
---
apiVersion: v1
kind: Pod
metadata: {namespace: stack-one, name: qa, labels: {com.rancher.department: qa}}
spec: {nodeName: n1}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: stack-one, name: eng, labels: {com.rancher.department: engineering}}
spec: {nodeName: n1}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: stack-two, name: qa, labels: {com.rancher.department: qa}}
spec: {nodeName: n2}
status: {podIP: 10.0.2.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: stack-two, name: none}
spec: {nodeName: n2}
status: {podIP: 10.0.2.2}
---
apiVersion: stockade.dev/v1alpha1
kind: IsolationPolicy
metadata: {name: departments}
spec:
  tier: Admin
  priority: 100
  subject: {pods: {namespaceSelector: {}, podSelector: {}}}
  ingress:
  - name: same-department
    action: Accept
    from: [{pods: {sameLabels: [com.rancher.department], namespaceSelector: {}}}]
  - name: default
    action: Deny
    from: [{pods: {namespaceSelector: {}, podSelector: {}}}]
"""


def test_matrix_by_department(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, CLUSTER)
    assert _rows(_matrix(capsys, path, "--port", "80")) == {
        "stack-one/qa": {"stack-two/qa"},
        "stack-one/eng": set(),
        "stack-two/qa": {"stack-one/qa"},
        "stack-two/none": set(),
    }


def test_explain_says_which_sameness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, CLUSTER)
    out = _explain(capsys, path, "stack-two/qa", "stack-one/qa", "--port", "80")
    assert (
        out.splitlines()[0]
        == "ALLOWED: stack-two/qa (10.0.2.1) -> stack-one/qa (10.0.1.1) on TCP port 80"
    )
    assert (
        "  decided by: Admin isolationpolicy 'departments' ingress rule 0 (same-department): "
        "Accept; NetworkPolicy and Baseline tiers not reached"
    ) in out
    assert "    allowed: same value of com.rancher.department (qa)" in out
    assert "    from: pods with the same com.rancher.department in all namespaces" in out
    data = _explain_json(capsys, path, "stack-two/qa", "stack-one/qa", "--port", "80")
    hit = data["ingress"]["decidedBy"]
    assert hit["policy"] == "IsolationPolicy/departments"
    assert hit["same"] == "same value of com.rancher.department (qa)"
    out = _explain(capsys, path, "stack-one/eng", "stack-one/qa", "--port", "80")
    assert "  decided by: Admin isolationpolicy 'departments' ingress rule 1 (default): Deny" in out
    assert "same value" not in out


def test_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = CLUSTER.replace("sameLabels: [com.rancher.department]", "sameLabels: []")
    code, _, err = _run(capsys, "matrix", "-f", _write(tmp_path, broken), "--port", "80")
    assert code != 0
    assert (
        "IsolationPolicy departments: spec.ingress[0].from[0].pods.sameLabels: "
        "must have at least 1 item, got none"
    ) in err
    twin = (
        CLUSTER
        + "---"
        + CLUSTER.rsplit("---", maxsplit=1)[-1].replace("name: departments", "name: other")
    )
    code, _, err = _run(capsys, "matrix", "-f", _write(tmp_path, twin), "--port", "80")
    assert code == 0
    assert (
        "warning: IsolationPolicy departments and other: both Admin priority 100 with ingress "
        "rules, both selecting stack-one/eng and 3 more; the API leaves their order undefined, "
        "stockade orders them by name (departments first)"
    ) in err
