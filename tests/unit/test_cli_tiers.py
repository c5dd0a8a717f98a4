"""``stockade matrix`` and ``explain`` with ClusterNetworkPolicies and Nodes.

Each case is the YAML of one of the ClusterNetworkPolicy examples and the output
written out in full, checked by hand against docs/tiers.md: the tier, policy, rule and action that
decided each side, the Pass rules met, the tiers never reached, and the matrix.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stockade.cli import main


def _write(tmp_path: Path, text: str, name: str = "cluster.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = _run(capsys, *argv)
    assert (code, err) == (0, ""), err
    return out


def _explain(capsys: pytest.CaptureFixture[str], path: str, *argv: str) -> str:
    return _ok(capsys, "explain", "-f", path, *argv)


def _explain_json(capsys: pytest.CaptureFixture[str], path: str, *argv: str) -> Any:
    return json.loads(_ok(capsys, "explain", "-f", path, *argv, "-o", "json"))


def _matrix(capsys: pytest.CaptureFixture[str], path: str, *argv: str) -> Any:
    return json.loads(_ok(capsys, "matrix", "-f", path, *argv, "-o", "json"))["matrix"]


def _table(capsys: pytest.CaptureFixture[str], path: str, *argv: str) -> str:
    return _ok(capsys, "matrix", "-f", path, *argv, "--color", "never")


def _rows(matrix: dict[str, dict[str, bool]]) -> dict[str, set[str]]:
    """Each source and the destinations it may reach (itself excluded)."""
    return {s: {d for d, ok in row.items() if ok and d != s} for s, row in matrix.items()}


def _hit(
    tier: str,
    action: str,
    policy: str | None,
    rule: int | None,
    name: str | None,
    policies: list[str] | None = None,
    fail_closed: bool = False,
) -> dict[str, Any]:
    return {
        "tier": tier,
        "action": action,
        "policy": policy,
        "policies": policies or [],
        "rule": rule,
        "ruleName": name,
        "failClosed": fail_closed,
        "same": None,
    }


LEGACY = """\
apiVersion: v1
kind: Namespace
metadata: {name: trusted}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: trusted, labels: {app: app}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.10, hostIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node-2}
status: {podIP: 10.244.2.11, hostIP: 172.18.0.3}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: allow-trusted-to-legacy}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: trusted}}}
  egress:
  - {name: legacy, action: Accept, to: [{networks: [203.0.113.50/32]}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-legacy}
spec:
  tier: Admin
  priority: 20
  subject: {namespaces: {}}
  egress:
  - {name: legacy, action: Deny, to: [{networks: [203.0.113.50/32]}]}
"""


DNS = """\
apiVersion: v1
kind: Namespace
metadata: {name: kube-system, labels: {platform: "true"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ingress, labels: {platform: "true"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: tenant-a, labels: {tenant: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.2, hostIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: controller, namespace: ingress, labels: {app: controller}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.3, hostIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: tenant-a, labels: {app: app}}
spec: {nodeName: node-2}
status: {podIP: 10.244.2.10, hostIP: 172.18.0.3}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: tenants-to-dns}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchExpressions: [{key: tenant, operator: Exists}]}}
  egress:
  - name: dns
    action: Accept
    to:
    - pods:
        namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
        podSelector: {matchLabels: {k8s-app: kube-dns}}
    protocols:
    - udp: {destinationPort: {number: 53}}
    - tcp: {destinationPort: {number: 53}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: tenants-not-platform}
spec:
  tier: Admin
  priority: 20
  subject: {namespaces: {matchExpressions: [{key: tenant, operator: Exists}]}}
  egress:
  - action: Deny
    to:
    - namespaces: {matchLabels: {platform: "true"}}
"""


BASELINE = """\
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: team-a, labels: {app: api}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.10, hostIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: team-a, labels: {app: client}}
spec: {nodeName: node-2}
status: {podIP: 10.244.2.10, hostIP: 172.18.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: team-b, labels: {app: api}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.20, hostIP: 172.18.0.2}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: default-deny}
spec:
  tier: Baseline
  priority: 100
  subject: {namespaces: {}}
  ingress:
  - {name: deny-all, action: Deny, from: [{namespaces: {}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-same-namespace, namespace: team-a}
spec:
  podSelector: {}
  ingress:
  - from: [{podSelector: {}}]
"""


NODES = """\
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {kubernetes.io/hostname: node-1}}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}, {type: Hostname, address: node-1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-2, labels: {kubernetes.io/hostname: node-2}}
status: {addresses: [{type: InternalIP, address: 172.18.0.3}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: tenant-a, labels: {tenant: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: tenant-a, labels: {app: app}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.40, hostIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: node-exporter, namespace: monitoring, labels: {app: node-exporter}}
spec: {nodeName: node-2, hostNetwork: true}
status: {podIP: 172.18.0.3, hostIP: 172.18.0.3}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-node-network}
spec:
  tier: Admin
  priority: 0
  subject: {namespaces: {matchExpressions: [{key: tenant, operator: Exists}]}}
  egress:
  - {name: nodes, action: Deny, to: [{nodes: {}}]}
"""


PASS = """\
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b, labels: {team: b}}
---
apiVersion: v1
kind: Pod
metadata: {name: prometheus, namespace: monitoring, labels: {app: prometheus}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.5, hostIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: team-a, labels: {app: api}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.10, hostIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: team-b, labels: {app: api}}
spec: {nodeName: node-2}
status: {podIP: 10.244.2.10, hostIP: 172.18.0.3}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: monitoring-pass}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchExpressions: [{key: team, operator: Exists}]}}
  ingress:
  - name: from-monitoring
    action: Pass
    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-cross-team}
spec:
  tier: Admin
  priority: 20
  subject: {namespaces: {matchExpressions: [{key: team, operator: Exists}]}}
  ingress:
  - action: Deny
    from: [{namespaces: {}}]
    protocols: [{tcp: {destinationPort: {range: {start: 9000, end: 9999}}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-namespace-only, namespace: team-b}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: team-b}}}]
"""


WARN = """\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: demo, labels: {app: a}}
spec: {nodeName: node-1}
status: {podIP: 10.0.0.1, hostIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: demo, labels: {app: b}}
spec: {nodeName: node-1}
status: {podIP: 10.0.0.2, hostIP: 172.18.0.2}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: zeta}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  egress:
  - {action: Accept, to: [{networks: [10.0.0.2/32]}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: alpha}
spec:
  tier: Admin
  priority: 5
  subject: {pods: {podSelector: {matchLabels: {app: a}}}}
  egress:
  - {action: Deny, to: [{pods: {podSelector: {matchLabels: {app: b}}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: external-names}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {}}
  egress:
  - {name: "no\\e[31mexample", action: Pass, to: [{domainNames: [example.com]}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: zeta}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  egress:
  - {action: Accept, to: [{networks: [10.0.0.2/32]}]}
"""


# --------------------------------------------------------------------------- legacy


def test_ordered_egress_deny_except_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An Admin Accept at priority 10 is met before the Admin Deny at 20: trusted only."""
    path = _write(tmp_path, LEGACY)
    assert _explain(capsys, path, "trusted/app", "203.0.113.50", "--port", "443") == (
        "ALLOWED: trusted/app (10.244.1.10) -> 203.0.113.50 on TCP port 443\n"
        "\n"
        "egress from trusted/app: allowed\n"
        "  decided by: Admin cnp 'allow-trusted-to-legacy' egress rule 0 (legacy): Accept; "
        "NetworkPolicy and Baseline tiers not reached\n"
        "    to: networks 203.0.113.50/32\n"
        "    protocols: all traffic\n"
        "ingress to 203.0.113.50: allowed (not a pod in the files: no ingress policy of its own)\n"
    )
    assert _explain(capsys, path, "shop/web", "203.0.113.50", "--port", "443") == (
        "DENIED: shop/web (10.244.2.11) -> 203.0.113.50 on TCP port 443\n"
        "\n"
        "egress from shop/web: DENIED\n"
        "  decided by: Admin cnp 'deny-legacy' egress rule 0 (legacy): Deny; "
        "NetworkPolicy and Baseline tiers not reached\n"
        "    to: networks 203.0.113.50/32\n"
        "    protocols: all traffic\n"
        "ingress to 203.0.113.50: allowed (not a pod in the files: no ingress policy of its own)\n"
    )
    assert _explain(capsys, path, "shop/web", "203.0.113.51", "--port", "443") == (
        "ALLOWED: shop/web (10.244.2.11) -> 203.0.113.51 on TCP port 443\n"
        "\n"
        "egress from shop/web: allowed\n"
        "  decided by: the default, allowed: no Admin or Baseline rule accepted or denied it "
        "and no NetworkPolicy isolates it for egress\n"
        "ingress to 203.0.113.51: allowed (not a pod in the files: no ingress policy of its own)\n"
    )
    data = _explain_json(capsys, path, "shop/web", "203.0.113.50", "--port", "443")
    assert data == {
        "allowed": False,
        "src": "shop/web",
        "dst": "203.0.113.50",
        "srcIP": "10.244.2.11",
        "dstIP": "203.0.113.50",
        "port": 443,
        "protocol": "TCP",
        "egress": {
            "pod": "shop/web",
            "isolatedBy": [],
            "allowedBy": [],
            "allowed": False,
            "tier": "Admin",
            "decidedBy": _hit("Admin", "Deny", "deny-legacy", 0, "legacy"),
            "passed": [],
            "notReached": ["NetworkPolicy", "Baseline"],
            "ownNode": False,
        },
        "ingress": None,
        "note": "",
    }
    # Nothing between pods is denied.
    assert _rows(_matrix(capsys, path)) == {
        "shop/web": {"trusted/app"},
        "trusted/app": {"shop/web"},
    }


# --------------------------------------------------------------------------- DNS


def test_tenants_reach_kube_system_dns_and_nothing_else_of_the_platform(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Admin Accept (priority 10) for DNS, then Admin Deny (priority 20) for the platform."""
    path = _write(tmp_path, DNS)
    dns = ("tenant-a/app", "kube-system/coredns")
    assert _explain(capsys, path, *dns, "--port", "53", "--protocol", "udp") == (
        "ALLOWED: tenant-a/app (10.244.2.10) -> kube-system/coredns (10.244.1.2) on UDP port 53\n"
        "\n"
        "egress from tenant-a/app: allowed\n"
        "  decided by: Admin cnp 'tenants-to-dns' egress rule 0 (dns): Accept; "
        "NetworkPolicy and Baseline tiers not reached\n"
        "    to: pods k8s-app=kube-dns in namespaces kubernetes.io/metadata.name=kube-system\n"
        "    protocols: UDP 53, TCP 53\n"
        "ingress to kube-system/coredns: allowed (no policy of any tier selects it for ingress: "
        "the default allows)\n"
    )
    assert _explain(capsys, path, *dns, "--port", "80") == (
        "DENIED: tenant-a/app (10.244.2.10) -> kube-system/coredns (10.244.1.2) on TCP port 80\n"
        "\n"
        "egress from tenant-a/app: DENIED\n"
        "  decided by: Admin cnp 'tenants-not-platform' egress rule 0: Deny; "
        "NetworkPolicy and Baseline tiers not reached\n"
        "    to: all pods in namespaces platform=true\n"
        "    protocols: all traffic\n"
        "ingress to kube-system/coredns: allowed (no policy of any tier selects it for ingress: "
        "the default allows)\n"
    )
    data = _explain_json(
        capsys, path, "tenant-a/app", "ingress/controller", "--port", "53", "--protocol", "UDP"
    )
    assert data["allowed"] is False
    assert data["egress"]["decidedBy"] == _hit("Admin", "Deny", "tenants-not-platform", 0, None)
    assert data["ingress"] is None
    every = {"ingress/controller", "kube-system/coredns", "tenant-a/app"}
    platform = {
        "ingress/controller": every - {"ingress/controller"},
        "kube-system/coredns": every - {"kube-system/coredns"},
    }
    assert _rows(_matrix(capsys, path, "--port", "53", "--protocol", "UDP")) == {
        **platform,
        "tenant-a/app": {"kube-system/coredns"},
    }
    assert _rows(_matrix(capsys, path, "--port", "80")) == {**platform, "tenant-a/app": set()}
    assert _table(capsys, path, "--port", "53", "--protocol", "UDP") == (
        "UDP port 53: may the row's pod connect to the column's pod?\n"
        "\n"
        "#  from \\ to            1  2  3\n"
        "───────────────────────────────\n"
        "1  ingress/controller   ✓  ✓  ✓\n"
        "2  kube-system/coredns  ✓  ✓  ✓\n"
        "3  tenant-a/app         ✗  ✓  ✓\n"
        "✓ allowed   ✗ denied\n"
        "3 pods, 5 of 6 pairs allowed on UDP port 53 (a pod to itself not counted)\n"
    )


# --------------------------------------------------------------------------- Baseline


def test_baseline_default_deny_opened_by_a_team_network_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The NetworkPolicy tier decides for the pods it isolates; Baseline for the rest."""
    path = _write(tmp_path, BASELINE)
    assert _explain(capsys, path, "team-a/client", "team-a/api", "--port", "80") == (
        "ALLOWED: team-a/client (10.244.2.10) -> team-a/api (10.244.1.10) on TCP port 80\n"
        "\n"
        "egress from team-a/client: allowed (no policy of any tier selects it for egress: "
        "the default allows)\n"
        "ingress to team-a/api: allowed\n"
        "  decided by: NetworkPolicy tier: Accept; Baseline tier not reached\n"
        "  isolated by: team-a/allow-same-namespace\n"
        "  allowed by: team-a/allow-same-namespace, spec.ingress[0]\n"
        "    from: all pods in namespace team-a\n"
        "    ports: all ports and protocols\n"
    )
    assert _explain(capsys, path, "team-b/api", "team-a/api", "--port", "80") == (
        "DENIED: team-b/api (10.244.1.20) -> team-a/api (10.244.1.10) on TCP port 80\n"
        "\n"
        "egress from team-b/api: allowed (no policy of any tier selects it for egress: "
        "the default allows)\n"
        "ingress to team-a/api: DENIED\n"
        "  decided by: NetworkPolicy tier: Deny; Baseline tier not reached\n"
        "  isolated by: team-a/allow-same-namespace\n"
        "  no ingress rule of these policies allows it from 10.244.1.20\n"
    )
    assert _explain(capsys, path, "team-a/client", "team-b/api", "--port", "80") == (
        "DENIED: team-a/client (10.244.2.10) -> team-b/api (10.244.1.20) on TCP port 80\n"
        "\n"
        "egress from team-a/client: allowed (no policy of any tier selects it for egress: "
        "the default allows)\n"
        "ingress to team-b/api: DENIED\n"
        "  decided by: Baseline cnp 'default-deny' ingress rule 0 (deny-all): Deny\n"
        "    from: all pods in all namespaces\n"
        "    protocols: all traffic\n"
    )
    ingress = _explain_json(capsys, path, "team-a/client", "team-a/api", "--port", "80")["ingress"]
    assert ingress == {
        "pod": "team-a/api",
        "isolatedBy": ["team-a/allow-same-namespace"],
        "allowedBy": [{"policy": "team-a/allow-same-namespace", "direction": "Ingress", "rule": 0}],
        "allowed": True,
        "tier": "NetworkPolicy",
        "decidedBy": _hit(
            "NetworkPolicy", "Accept", None, None, None, ["team-a/allow-same-namespace"]
        ),
        "passed": [],
        "notReached": ["Baseline"],
        "ownNode": False,
    }
    b = _explain_json(capsys, path, "team-a/client", "team-b/api", "--port", "80")["ingress"]
    assert (b["tier"], b["notReached"]) == ("Baseline", [])
    assert _rows(_matrix(capsys, path)) == {
        "team-a/api": {"team-a/client"},
        "team-a/client": {"team-a/api"},
        "team-b/api": set(),
    }


# --------------------------------------------------------------------------- nodes


def test_node_network_denied_while_the_node_reaches_its_pods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `nodes` peer Deny: the pod's own node (INPUT), another node, a host-network pod
    at its node's address; the node's own traffic to the pod is never judged."""
    path = _write(tmp_path, NODES)
    assert _explain(capsys, path, "tenant-a/app", "172.18.0.2", "--port", "10250") == (
        "DENIED: tenant-a/app (10.244.1.40) -> 172.18.0.2 on TCP port 10250\n"
        "\n"
        "note: a pod and its own node (node-1)\n"
        "egress from tenant-a/app: DENIED\n"
        "  judged at node node-1's INPUT hook (a pod to its own node) by the pod's egress tiers\n"
        "  decided by: Admin cnp 'deny-node-network' egress rule 0 (nodes): Deny; "
        "NetworkPolicy and Baseline tiers not reached\n"
        "    to: all nodes\n"
        "    protocols: all traffic\n"
    )
    assert _explain(capsys, path, "172.18.0.2", "tenant-a/app", "--port", "8080") == (
        "ALLOWED: 172.18.0.2 -> tenant-a/app (10.244.1.40) on TCP port 8080\n"
        "\n"
        "note: a pod and its own node (node-1); the node's own traffic to its pod (OUTPUT) "
        "is never judged\n"
    )
    assert _explain(capsys, path, "tenant-a/app", "monitoring/node-exporter", "--port", "9100") == (
        "DENIED: tenant-a/app (10.244.1.40) -> monitoring/node-exporter (172.18.0.3) "
        "on TCP port 9100\n"
        "\n"
        "egress from tenant-a/app: DENIED\n"
        "  decided by: Admin cnp 'deny-node-network' egress rule 0 (nodes): Deny; "
        "NetworkPolicy and Baseline tiers not reached\n"
        "    to: all nodes\n"
        "    protocols: all traffic\n"
        "ingress to monitoring/node-exporter: allowed (a host-network pod, judged as its "
        "node's address: no policy selects it)\n"
    )
    data = _explain_json(capsys, path, "tenant-a/app", "172.18.0.2", "--port", "10250")
    assert data["note"] == "a pod and its own node (node-1)"
    assert data["egress"]["ownNode"] is True
    assert data["egress"]["decidedBy"] == _hit("Admin", "Deny", "deny-node-network", 0, "nodes")
    assert _table(capsys, path, "--port", "9100") == (
        "TCP port 9100: may the row's pod connect to the column's pod?\n"
        "\n"
        "#  from \\ to                 1  2\n"
        "─────────────────────────────────\n"
        "1  monitoring/node-exporter  ✓  ✓\n"
        "2  tenant-a/app              ✗  ✓\n"
        "✓ allowed   ✗ denied\n"
        "2 pods, 1 of 2 pairs allowed on TCP port 9100 (a pod to itself not counted)\n"
        "note: monitoring/node-exporter is on the host network: shown at node node-2's "
        "address 172.18.0.3, judged as the node (no pods or namespaces peer matches it)\n"
    )


def test_own_node_for_a_pod_isolated_by_network_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Baseline Deny to nodes does not reach a pod NetworkPolicies isolate for egress:
    the NetworkPolicy tier allows a pod's own node, finally."""
    baseline = NODES.replace("tier: Admin", "tier: Baseline")
    isolate = (
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: no-egress, namespace: tenant-a}\n"
        "spec: {podSelector: {}, policyTypes: [Egress]}\n"
    )
    path = _write(tmp_path, baseline + isolate)
    assert _explain(capsys, path, "tenant-a/app", "172.18.0.2", "--port", "10250") == (
        "ALLOWED: tenant-a/app (10.244.1.40) -> 172.18.0.2 on TCP port 10250\n"
        "\n"
        "note: a pod and its own node (node-1)\n"
        "egress from tenant-a/app: allowed\n"
        "  judged at node node-1's INPUT hook (a pod to its own node) by the pod's egress tiers\n"
        "  decided by: NetworkPolicy tier: Accept; Baseline tier not reached\n"
        "  isolated by: tenant-a/no-egress\n"
        "  a pod's own node is always allowed to a pod NetworkPolicies isolate\n"
    )
    # The other node: the NetworkPolicy isolation denies it.
    out = _explain(capsys, path, "tenant-a/app", "172.18.0.3", "--port", "10250")
    assert "  decided by: NetworkPolicy tier: Deny; Baseline tier not reached\n" in out


# --------------------------------------------------------------------------- Pass


def test_admin_pass_for_monitoring_hands_over_to_network_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pass skips the rest of the Admin tier (the Deny at priority 20); NetworkPolicy or,
    where none isolates, the default decides."""
    path = _write(tmp_path, PASS)
    passed = (
        "  passed: Admin cnp 'monitoring-pass' ingress rule 0 (from-monitoring): Pass, "
        "the rest of the Admin tier skipped\n"
        "    from: all pods in namespaces kubernetes.io/metadata.name=monitoring\n"
        "    protocols: all traffic\n"
    )
    egress = (
        "egress from monitoring/prometheus: allowed (no policy of any tier selects it for "
        "egress: the default allows)\n"
    )
    assert _explain(capsys, path, "monitoring/prometheus", "team-a/api", "--port", "9090") == (
        "ALLOWED: monitoring/prometheus (10.244.1.5) -> team-a/api (10.244.1.10) "
        "on TCP port 9090\n"
        "\n"
        + egress
        + "ingress to team-a/api: allowed\n"
        + passed
        + "  decided by: the default, allowed: no Admin or Baseline rule accepted or denied it "
        "and no NetworkPolicy isolates it for ingress\n"
    )
    assert _explain(capsys, path, "monitoring/prometheus", "team-b/api", "--port", "9090") == (
        "DENIED: monitoring/prometheus (10.244.1.5) -> team-b/api (10.244.2.10) "
        "on TCP port 9090\n"
        "\n"
        + egress
        + "ingress to team-b/api: DENIED\n"
        + passed
        + "  decided by: NetworkPolicy tier: Deny; Baseline tier not reached\n"
        "  isolated by: team-b/same-namespace-only\n"
        "  no ingress rule of these policies allows it from 10.244.1.5\n"
    )
    assert _explain(capsys, path, "team-a/api", "team-b/api", "--port", "9090") == (
        "DENIED: team-a/api (10.244.1.10) -> team-b/api (10.244.2.10) on TCP port 9090\n"
        "\n"
        "egress from team-a/api: allowed (no policy of any tier selects it for egress: "
        "the default allows)\n"
        "ingress to team-b/api: DENIED\n"
        "  decided by: Admin cnp 'deny-cross-team' ingress rule 0: Deny; "
        "NetworkPolicy and Baseline tiers not reached\n"
        "    from: all pods in all namespaces\n"
        "    protocols: TCP 9000-9999\n"
    )
    ingress = _explain_json(capsys, path, "monitoring/prometheus", "team-b/api", "--port", "9090")[
        "ingress"
    ]
    assert ingress["passed"] == [_hit("Admin", "Pass", "monitoring-pass", 0, "from-monitoring")]
    assert ingress["decidedBy"] == _hit(
        "NetworkPolicy", "Deny", None, None, None, ["team-b/same-namespace-only"]
    )
    assert ingress["notReached"] == ["Baseline"]
    assert _rows(_matrix(capsys, path, "--port", "9090")) == {
        "monitoring/prometheus": {"team-a/api"},
        "team-a/api": {"monitoring/prometheus"},
        "team-b/api": {"monitoring/prometheus"},
    }
    # Outside the Deny's port range only the NetworkPolicy of team-b denies.
    assert _rows(_matrix(capsys, path, "--port", "80")) == {
        "monitoring/prometheus": {"team-a/api"},
        "team-a/api": {"monitoring/prometheus"},
        "team-b/api": {"monitoring/prometheus", "team-a/api"},
    }


# --------------------------------------------------------------------------- input checks


def test_invalid_cluster_network_policy_and_node_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As for an invalid NetworkPolicy: one error line per problem, exit 2, no output."""
    bad = """\
        apiVersion: policy.networking.k8s.io/v1alpha2
        kind: ClusterNetworkPolicy
        metadata: {name: broken}
        spec:
          tier: Admin
          priority: 1001
          subject: {namespaces: {}}
          egress:
          - {action: Allow, to: [{networks: [10.0.0.0/33]}]}
        ---
        apiVersion: v1
        kind: Node
        metadata: {name: node-9}
        status: {addresses: [{type: InternalIP, address: not-an-ip}]}
        """
    path = _write(tmp_path, bad)
    code, out, err = _run(capsys, "matrix", "-f", path)
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert all(line.startswith(f"error: {path}: ") for line in lines), err
    assert len(lines) == 4, err
    assert any("ClusterNetworkPolicy broken: spec.priority:" in line for line in lines)
    assert any("ClusterNetworkPolicy broken: spec.egress[0].action:" in line for line in lines)
    assert any(
        "ClusterNetworkPolicy broken: spec.egress[0].to[0].networks[0]:" in line for line in lines
    )
    assert any("Node node-9: status.addresses[0].address:" in line for line in lines)


def test_warnings_equal_priority_fail_closed_and_duplicates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Warnings, not errors: the command answers, with the order and fail-closed rules
    it used said on stderr (names escaped)."""
    path = _write(tmp_path, WARN)
    code, out, err = _run(capsys, "matrix", "-f", path, "-o", "json")
    assert code == 0
    assert _rows(json.loads(out)["matrix"]) == {"demo/a": set(), "demo/b": set()}
    assert err.splitlines() == [
        "warning: Node node-1 is defined more than once; the last one wins",
        "warning: ClusterNetworkPolicy zeta is defined more than once; the last one wins",
        "warning: ClusterNetworkPolicy alpha and zeta: both Admin priority 5 with egress "
        "rules, both selecting demo/a; the API leaves their order undefined, stockade orders "
        "them by name (alpha first)",
        "warning: ClusterNetworkPolicy external-names: egress rule 0 (no\\x1b[31mexample): "
        "stockade does not support domainNames peers; the rule fails closed: this Pass rule "
        "denies all egress traffic of the selected pods that reaches it, whatever its other "
        "peers and protocols (it does not pass)",
    ]
    # alpha's Deny is met before zeta's Accept: equal priority, ordered by name.
    code, out, _ = _run(capsys, "explain", "-f", path, "demo/a", "demo/b", "--port", "80")
    assert code == 0
    assert "  decided by: Admin cnp 'alpha' egress rule 0: Deny;" in out
    code, out, _ = _run(capsys, "explain", "-f", path, "demo/b", "demo/a", "--port", "80")
    assert code == 0
    assert "\x1b" not in out
    assert (
        "  decided by: Baseline cnp 'external-names' egress rule 0 (no\\x1b[31mexample): Deny "
        "(fails closed: a domainNames peer, not enforced, makes it a Deny all rule)\n"
        "    to: domainNames example.com (not enforced)\n"
    ) in out
    code, out, _ = _run(
        capsys, "explain", "-f", path, "demo/b", "demo/a", "--port", "80", "-o", "json"
    )
    assert code == 0
    assert json.loads(out)["egress"]["decidedBy"] == _hit(
        "Baseline", "Deny", "external-names", 0, "no\x1b[31mexample", fail_closed=True
    )


def test_without_cluster_network_policies_the_output_is_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No CNP in the input: NetworkPolicy-only text and JSON, no tier keys, and a pod's
    own node decided by the note (its egress null), as before the tiers."""
    isolate = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: no-egress, namespace: tenant-a}\n"
        "spec: {podSelector: {}, policyTypes: [Egress]}\n"
    )
    docs = [d for d in NODES.split("---\n") if "ClusterNetworkPolicy" not in d]
    path = _write(tmp_path, "---\n".join([*docs, isolate]))
    own = _explain_json(capsys, path, "tenant-a/app", "172.18.0.2", "--port", "10250")
    assert (own["allowed"], own["egress"]) == (True, None)
    assert _explain(capsys, path, "tenant-a/app", "172.18.0.2", "--port", "10250") == (
        "ALLOWED: tenant-a/app (10.244.1.40) -> 172.18.0.2 on TCP port 10250\n"
        "\n"
        "note: a pod and its own node (node-1); no policy is consulted\n"
    )
    other = _explain_json(capsys, path, "tenant-a/app", "172.18.0.3", "--port", "80")
    assert list(other["egress"]) == ["pod", "isolatedBy", "allowedBy"]
    assert _explain(capsys, path, "tenant-a/app", "172.18.0.3", "--port", "80") == (
        "DENIED: tenant-a/app (10.244.1.40) -> 172.18.0.3 on TCP port 80\n"
        "\n"
        "egress from tenant-a/app: DENIED\n"
        "  isolated by: tenant-a/no-egress\n"
        "  no egress rule of these policies allows it to 172.18.0.3\n"
        "ingress to 172.18.0.3: allowed (the address of node node-2: no ingress policy of "
        "its own)\n"
    )
