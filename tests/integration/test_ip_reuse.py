"""The IP-ownership rule (``stockade.ownership``) with real packets in the sandbox.

1. A pod that is being deleted hands its address to a new pod: ``old`` (open, no
   policy selects it) is deleted while a finalizer keeps its object, with its
   ``deletionTimestamp`` and ``status.podIP``, in the API; the kubelet stand-in removes
   its namespace at once and frees the address, and ``vault`` (whose policy denies
   all ingress) asks for that address and gets it. Two pods now claim it; the one
   not being deleted owns it, so the vault's deny holds for real packets, the engine
   predicts the same, the node's rule set lists the vault at the address and not the
   old pod, and nothing changes once the old object is gone.
2. A true tie: two Running pods created in the same second claim one address. Two
   namespaces cannot own one address on one node, so the second claimant is a pod on
   a node the sandbox does not run (``node-lost``; the kubelet stand-in leaves it
   Pending and the test writes its status, as a kubelet on another machine would).
   Real packets to and from the address are then dropped on the real pod's node
   (``contestedIps``, the agent's ``stk-dup4`` set), although no policy selects
   either pod; once the ghost is gone the address is open again.
3. That tied pod and its own node still talk, as the kernel lets them (no FORWARD),
   and the engine predicts it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from stockade.model import Pod
from stockade.ruleset import NodeRuleSet, node_rule_set_from_dict
from stockade.verdict import Dataplane
from stockade_lab import reference
from stockade_lab.sandbox import Sandbox, differences
from stockade_lab.sandbox.common import KINDS
from tests.integration.waiting import wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.skip("the sandbox needs root (network namespaces)", allow_module_level=True)

NS = "reuse"
X = "10.244.1.30"  # old's address, then the vault's
Y = "10.244.1.50"  # the tied address
CLIENT_IP = "10.244.2.40"  # on node-2: its probes cross both nodes' FORWARD
NEIGHBOUR_IP = "10.244.1.41"  # on node-1: its probes cross node-1's FORWARD only
HOLD = "sandbox.stockade.dev/test-hold"
LOST_NODE = "node-lost"  # a node the sandbox does not run

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
VAULT_DENY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "vault-deny-ingress", "namespace": NS},
    "spec": {"podSelector": {"matchLabels": {"app": "vault"}}, "policyTypes": ["Ingress"]},
}


def _pod(name: str, node: str, ip: str | None, **labels: str) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }
    if ip is not None:
        pod["status"] = {"podIP": ip}  # Sandbox.apply asks the kubelet stand-in for it
    return pod


def _old() -> dict[str, Any]:
    pod = _pod("old", "node-1", X, app="web")
    pod["metadata"]["finalizers"] = [HOLD]  # the object outlives its namespace
    return pod


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(f"r{os.getpid()}", nodes=2)
    sb.up()
    try:
        sb.apply(
            [
                NAMESPACE,
                _pod("client", "node-2", CLIENT_IP),
                _pod("neighbour", "node-1", NEIGHBOUR_IP),
                _old(),
                VAULT_DENY,
            ]
        )
        yield sb
    finally:
        sb.down()


# ---------------------------------------------------------------------- helpers


def _pod_path(name: str, subresource: str = "") -> str:
    return KINDS["Pod"].path(NS, name) + subresource


def _merge_patch(sb: Sandbox, path: str, body: dict[str, Any]) -> None:
    sb.api.request("PATCH", path, body, content_type="application/merge-patch+json")


def _rule_set(sb: Sandbox, node: str) -> NodeRuleSet | None:
    """The NodeRuleSet the controller published for ``node``."""
    for obj in sb.api.list("NodeRuleSet"):
        if (obj.get("spec") or {}).get("node") == node:
            return node_rule_set_from_dict(obj["spec"])
    return None


def _applied(sb: Sandbox, node: str) -> bool:
    """Whether ``node``'s agent reports it enforces its NodeRuleSet's current generation."""
    for obj in sb.api.list("NodeRuleSet"):
        if (obj.get("spec") or {}).get("node") == node:
            status = obj.get("status") or {}
            return bool(
                status.get("applied") is True
                and status.get("appliedGeneration") == obj["metadata"].get("generation")
            )
    return False


def _running(sb: Sandbox) -> dict[str, list[str]]:
    """Pods the kubelet stand-in runs (a namespace that answers), with their addresses."""
    return {k: list(v["ips"]) for k, v in (sb.status().get("pods") or {}).items()}


def _engine(sb: Sandbox) -> tuple[Dataplane, dict[str, Pod]]:
    cluster = sb.snapshot().cluster
    return Dataplane(cluster), dict(cluster.pods)


def _split_off(
    real: dict[str, dict[str, bool | None]],
    expected: dict[str, dict[str, bool]],
    gone: str,
    at: str,
) -> tuple[dict[str, dict[str, bool | None]], dict[str, dict[str, bool]]]:
    """Both matrices without ``gone``, a claimant that owns no address and runs nowhere.

    Its row cannot be measured (no namespace sends for it). Its column is a probe of
    its address, which reaches whoever holds the address (``at``), so real packets
    give ``at``'s column there, while the engine denies a pod that owns no address
    everything. Both are checked here, then the rest can be compared cell by cell.
    """
    assert set(real[gone].values()) == {None}, real[gone]
    for src, row in real.items():
        if src != gone:
            assert row[gone] == row[at], (src, row)
    assert not any(row[gone] for row in expected.values())
    assert not any(expected[gone].values())
    keep = [k for k in real if k != gone]
    return (
        {s: {d: real[s][d] for d in keep} for s in keep},
        {s: {d: expected[s][d] for d in keep} for s in keep},
    )


def _assert_vault_owns_x(sb: Sandbox, old_lingers: bool) -> None:
    """Real packets, the engine, the reference and node-1's rule set: X is the vault."""
    assert _running(sb)["reuse/vault"] == [X]
    # Real packets: the vault's deny holds from both nodes, on every port it serves,
    # though the pod that had this address before was open; its egress is open.
    assert sb.probe(
        [
            ("reuse/client", X, 80, "TCP"),
            ("reuse/client", X, 81, "UDP"),
            ("reuse/neighbour", X, 80, "TCP"),
            ("reuse/vault", CLIENT_IP, 80, "TCP"),
        ]
    ) == [False, False, False, True]
    # The engine and the reference evaluator say the same of the address and the pods.
    dp, pods = _engine(sb)
    client = pods["reuse/client"]
    assert not dp.verdict(client, X, 80, "TCP").allowed  # by address, as the kernel sees it
    assert not dp.verdict(client, pods["reuse/vault"], 80, "TCP").allowed
    # (The reference takes a bare address for something that is not a pod, so only
    # pods go to it.)
    assert not reference.allowed(dp.cluster, client, pods["reuse/vault"], 80, "TCP")
    assert dp.verdict(pods["reuse/vault"], client, 80, "TCP").allowed
    if old_lingers:
        old = pods["reuse/old"]
        assert old.deleting
        assert old.ips == (X,)  # the API still says X is old's
        [claim] = dp.conflicts
        assert (claim.ip, claim.owner) == (X, "reuse/vault")
        assert claim.claimants == ("reuse/old", "reuse/vault")
        verdict = dp.verdict(client, old, 80, "TCP")
        assert not verdict.allowed
        assert "belongs to reuse/vault" in verdict.note
    else:
        assert "reuse/old" not in pods
        assert dp.conflicts == []
    # node-1's rule set: the vault at X is a target and known; old appears nowhere.
    rules = _rule_set(sb, "node-1")
    assert rules is not None
    assert {p.name: p.ips for p in rules.pods} == {"reuse/vault": (X,)}
    known = {p.name: p.ips for p in rules.known_pods}
    assert known["reuse/vault"] == (X,)
    assert "reuse/old" not in known
    assert rules.contested_ips == ()
    # The whole matrix of real packets is the engine's (but for old's row and
    # column, see _split_off).
    # A pod whose address another owns has no path of its own: the probe matrix
    # says so without sending (as the engine does), so old's cells match too.
    real = sb.probe_matrix(80)
    expected = sb.expected_matrix(80)
    if old_lingers:
        assert not any(real["reuse/old"].values())
        assert not any(row["reuse/old"] for row in real.values())
    assert differences(real, expected) == []


# ---------------------------------------------------------------------- tests


def test_reused_address_belongs_to_the_new_pod(sandbox: Sandbox) -> None:
    # Before: old is open at X.
    assert sandbox.probe([("reuse/client", X, 80, "TCP"), ("reuse/neighbour", X, 80, "TCP")]) == [
        True,
        True,
    ]
    # Delete old: the finalizer keeps its object (deletionTimestamp set, status
    # unchanged), the kubelet stand-in removes its namespace and frees X.
    sandbox.delete([_old()], wait=False)
    wait_for(lambda: "reuse/old" not in _running(sandbox), 20, "old's namespace to go")
    lingering = sandbox.api.get("Pod", "old", NS)
    assert lingering is not None
    assert lingering["metadata"].get("deletionTimestamp")
    assert lingering["status"]["podIP"] == X
    # The vault asks for X and gets it; the sandbox converges with both claims.
    sandbox.apply([_pod("vault", "node-1", X, app="vault")])
    assert sandbox.api.get("Pod", "old", NS) is not None
    _assert_vault_owns_x(sandbox, old_lingers=True)
    # The controller says so on the pod whose change revealed the conflict.
    events = sandbox.api.request("GET", f"/api/v1/namespaces/{NS}/events").get("items") or []
    conflicts = [e for e in events if e.get("reason") == "PodIPConflict"]
    assert any(X in str(e.get("message")) for e in conflicts), events
    # The old object goes (its finalizer is removed): nothing changes.
    _merge_patch(sandbox, _pod_path("old"), {"metadata": {"finalizers": None}})
    wait_for(lambda: sandbox.api.get("Pod", "old", NS) is None, 20, "old's object to go")
    sandbox.wait_converged(30)
    _assert_vault_owns_x(sandbox, old_lingers=False)


TWIN = _pod("twin", "node-1", Y, app="twin")
GHOST = _pod("ghost", LOST_NODE, None, app="twin")
# From and to Y, across nodes and within node-1 (every one crosses node-1's FORWARD).
Y_PROBES = [
    ("reuse/client", Y, 80, "TCP"),
    ("reuse/client", Y, 81, "UDP"),
    ("reuse/neighbour", Y, 80, "TCP"),
    ("reuse/twin", CLIENT_IP, 80, "TCP"),
    ("reuse/twin", NEIGHBOUR_IP, 80, "TCP"),
]


def _remove_pair(sb: Sandbox) -> None:
    sb.delete([TWIN, GHOST], wait=False)
    wait_for(
        lambda: (
            all(sb.api.get("Pod", n, NS) is None for n in ("twin", "ghost"))
            and "reuse/twin" not in _running(sb)
        ),
        20,
        "twin and ghost to go",
    )


def _stage_tie(sb: Sandbox) -> None:
    """``twin`` runs on node-1 at Y; ``ghost`` (on LOST_NODE) claims Y too: a tie.

    Both are created in one second (``creationTimestamp`` has seconds), neither is
    being deleted. LOST_NODE gets a NodeRuleSet that no agent applies, so the sandbox
    never converges while the ghost claims Y: this waits for node-1's rule set, its
    agent's report and the packets instead. The caller removes the pair.
    """
    for _ in range(5):
        sb.apply([TWIN, GHOST], wait=False)
        created = [
            (sb.api.get("Pod", name, NS) or {})["metadata"]["creationTimestamp"]
            for name in ("twin", "ghost")
        ]
        if created[0] == created[1]:
            break
        _remove_pair(sb)  # a second boundary fell between the two creations (rare)
    else:
        raise AssertionError("could not create two pods in one second")
    # The kubelet stand-in runs twin at Y (open: no policy selects it) and leaves the
    # ghost alone (its node is not a sandbox node).
    wait_for(lambda: _running(sb).get("reuse/twin") == [Y], 20, "twin to run at Y")
    assert "reuse/ghost" not in _running(sb)
    wait_for(lambda: sb.probe(Y_PROBES) == [True] * 5, 20, "twin to be open")
    # The ghost's kubelet (on another machine) reports it Running at Y.
    ghost_status = {"phase": "Running", "podIP": Y, "podIPs": [{"ip": Y}]}
    _merge_patch(sb, _pod_path("ghost", "/status"), {"status": ghost_status})

    def node_1_denies_y() -> bool:
        rules = _rule_set(sb, "node-1")
        return rules is not None and rules.contested_ips == (Y,) and _applied(sb, "node-1")

    wait_for(node_1_denies_y, 20, "node-1 to list Y as contested and apply it")
    wait_for(lambda: sb.probe(Y_PROBES) == [False] * 5, 20, "Y to be denied both ways")


def test_tied_claim_is_denied_both_ways(sandbox: Sandbox) -> None:
    _stage_tie(sandbox)
    try:
        # The rule sets: Y is contested on both claimants' nodes; twin is no pod of
        # node-1's any more (it owns no address).
        rules = _rule_set(sandbox, "node-1")
        assert rules is not None
        assert "reuse/twin" not in {p.name for p in rules.known_pods}
        lost = _rule_set(sandbox, LOST_NODE)
        assert lost is not None
        assert lost.contested_ips == (Y,)
        # Real packets (_stage_tie saw Y_PROBES denied); everyone else is untouched.
        assert sandbox.probe(Y_PROBES) == [False] * 5
        assert sandbox.probe([("reuse/client", NEIGHBOUR_IP, 80, "TCP")]) == [True]
        # The engine (by pod and by address) and the reference (by pod) agree.
        dp, pods = _engine(sandbox)
        [claim] = [c for c in dp.conflicts if c.ip == Y]
        assert claim.owner is None
        assert claim.claimants == ("reuse/ghost", "reuse/twin")
        assert "created at the same time" in claim.reason
        client, twin = pods["reuse/client"], pods["reuse/twin"]
        for src, dst in ((client, Y), (Y, client), (client, twin), (twin, client)):
            assert not dp.verdict(src, dst, 80, "TCP").allowed, (src, dst)
        assert not reference.allowed(dp.cluster, client, twin, 80, "TCP")
        assert not reference.allowed(dp.cluster, twin, client, 80, "TCP")
        # The matrix (the ghost's row and column: see _split_off). twin still
        # reaches itself over loopback, which never meets a policy, engine included.
        real, expected = _split_off(
            sandbox.probe_matrix(80), sandbox.expected_matrix(80), "reuse/ghost", at="reuse/twin"
        )
        assert differences(real, expected) == []
        # The ghost goes: twin owns Y alone, open again.
        sandbox.delete([GHOST])
        assert _rule_set(sandbox, LOST_NODE) is None
        rules = _rule_set(sandbox, "node-1")
        assert rules is not None
        assert rules.contested_ips == ()
        assert sandbox.probe(Y_PROBES) == [True] * 5
        assert differences(sandbox.probe_matrix(80), sandbox.expected_matrix(80)) == []
    finally:
        _remove_pair(sandbox)


def test_contested_pod_and_its_own_node(sandbox: Sandbox) -> None:
    host = _pod("hostnet", "node-1", None, app="host")
    host["spec"]["hostNetwork"] = True
    sandbox.apply([host])
    try:
        _stage_tie(sandbox)
        node_ip = sandbox.status()["nodes"]["node-1"]["ip4"]
        # Real packets: the node and twin talk both ways (INPUT/OUTPUT of node-1's
        # namespace, not FORWARD), as between any pod and its own node.
        assert sandbox.probe(
            [
                ("reuse/twin", node_ip, 80, "TCP"),
                ("node:node-1", Y, 80, "TCP"),
                ("reuse/hostnet", Y, 80, "TCP"),
            ]
        ) == [True, True, True]
        dp, pods = _engine(sandbox)
        twin, hostnet = pods["reuse/twin"], pods["reuse/hostnet"]
        assert [
            dp.verdict(src, dst, 80, "TCP").allowed
            for src, dst in ((twin, node_ip), (node_ip, Y), (hostnet, twin), (twin, hostnet))
        ] == [True, True, True, True]
        assert reference.allowed(dp.cluster, hostnet, twin, 80, "TCP")
        assert reference.allowed(dp.cluster, twin, hostnet, 80, "TCP")
        client = pods["reuse/client"]
        assert not dp.verdict(client, twin, 80, "TCP").allowed
        assert not reference.allowed(dp.cluster, client, twin, 80, "TCP")
    finally:
        _remove_pair(sandbox)
        sandbox.delete([host], wait=False)
