"""Inputs that once gave a verdict wider than the spec: each case is judged by the
engine and the reference evaluator, which must agree, and on the narrow side."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.cli import main, pod_warnings, resolve_endpoint
from stockade.cluster import Cluster, parse_documents
from stockade.compiler import compile_cluster
from stockade.errors import InvalidObjectError
from stockade.model import Pod, parse_pod, parse_policy
from stockade.ownership import OwnershipTracker, decide, resolve
from stockade.verdict import Dataplane
from stockade_lab import reference
from tests.unit import strategies

Doc = dict[str, Any]


def pod(
    name: str,
    ip: str,
    *,
    node: str | None = "n1",
    labels: dict[str, str] | None = None,
    host_network: bool = False,
    created: str | None = None,
    deleting: bool = False,
    containers: list[Doc] | None = None,
) -> Doc:
    meta: Doc = {"name": name, "namespace": "x", "labels": labels or {"app": name}}
    if created is not None:
        meta["creationTimestamp"] = created
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:10:00Z"
    spec: Doc = {"hostNetwork": host_network, "containers": containers or [{"name": "c"}]}
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Running", "podIP": ip},
    }


def deny_all(name: str, selector: dict[str, str], types: list[str]) -> Doc:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": types},
    }


def allow_port(name: str, selector: dict[str, str], port: str, direction: str) -> Doc:
    rule = {"ports": [{"port": port}]}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "x"},
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": [direction],
            direction.lower(): [rule],
        },
    }


def load(docs: list[Doc]) -> Cluster:
    result = parse_documents(docs)
    assert not result.errors, [e.lines() for e in result.errors]
    return result.cluster


def both(cluster: Cluster, src: Pod | str, dst: Pod | str, port: int = 80) -> bool:
    """The engine's verdict, after checking the reference gives the same."""
    got = Dataplane(cluster).verdict(src, dst, port, "TCP")
    want = reference.allowed(cluster, src, dst, port, "TCP")
    assert got.allowed == want, got
    return got.allowed


# ------------------------------------------------------------------ 1. strict types


@pytest.mark.parametrize("value", ["false", "False", "", 0, 1, [], {}])
def test_host_network_must_be_a_boolean(value: object) -> None:
    doc = pod("a", "10.0.0.2")
    doc["spec"]["hostNetwork"] = value
    with pytest.raises(InvalidObjectError) as exc:
        parse_pod(doc)
    assert [e.path for e in exc.value.errors] == ["spec.hostNetwork"]
    assert "must be a boolean" in exc.value.errors[0].message


def test_a_string_host_network_never_escapes_isolation() -> None:
    docs = [pod("a", "10.0.0.2"), pod("b", "10.0.0.3"), deny_all("d", {"app": "b"}, ["Ingress"])]
    docs[0]["spec"]["hostNetwork"] = "false"
    result = parse_documents(docs)
    assert [e.errors[0].path for e in result.errors] == ["spec.hostNetwork"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"env": True}, "quote it"),
        ({"env": 12}, "must be a string, got 12"),
        ({"env": "x" * 64}, "no more than 63"),
        ({"-bad": "x"}, "key name part"),
        ({"a/b/c": "x"}, "prefix part"),
        ({"ok": "bad value"}, "must be empty or consist"),
    ],
)
def test_label_keys_and_values_follow_the_api(labels: dict[str, Any], message: str) -> None:
    doc = pod("a", "10.0.0.2")
    doc["metadata"]["labels"] = labels
    with pytest.raises(InvalidObjectError) as exc:
        parse_pod(doc)
    assert message in str(exc.value)


# ------------------------------------------------------------------ 2. one IP, two pods


def test_a_terminating_pod_loses_its_address_to_the_running_one() -> None:
    cluster = load(
        [
            pod("new", "10.0.0.9", labels={"app": "vault"}),
            pod("old", "10.0.0.9", labels={"app": "web"}, deleting=True),
            pod("client", "10.0.0.3"),
            deny_all("vault", {"app": "vault"}, ["Ingress"]),
        ]
    )
    client, new, old = (cluster.pods[f"x/{n}"] for n in ("client", "new", "old"))
    # The address is the vault's: its deny holds, by pod and by address.
    assert not both(cluster, client, new)
    assert resolve_endpoint("10.0.0.9", cluster, "DST") == new
    # The terminating pod takes no part: never "same endpoint (loopback)" with new.
    assert not both(cluster, old, new)
    verdict = Dataplane(cluster).verdict(client, old, 80, "TCP")
    assert "belongs to x/new" in verdict.note


def test_the_newer_pod_owns_a_reused_address() -> None:
    cluster = load(
        [
            pod("old", "10.0.0.9", labels={"app": "web"}, created="2026-01-01T00:00:00Z"),
            pod("new", "10.0.0.9", labels={"app": "vault"}, created="2026-01-01T00:00:30Z"),
            pod("client", "10.0.0.3"),
            deny_all("vault", {"app": "vault"}, ["Ingress"]),
        ]
    )
    assert resolve_endpoint("10.0.0.9", cluster, "DST") == cluster.pods["x/new"]
    assert not both(cluster, cluster.pods["x/client"], cluster.pods["x/new"])
    assert not both(cluster, cluster.pods["x/client"], cluster.pods["x/old"])


def test_a_truly_ambiguous_address_is_denied_both_ways() -> None:
    cluster = load(
        [
            pod("a", "10.0.0.9", labels={"app": "open"}),
            pod("b", "10.0.0.9", labels={"app": "vault"}),
            pod("client", "10.0.0.3"),
            deny_all("vault", {"app": "vault"}, ["Ingress", "Egress"]),
        ]
    )
    client, a, b = (cluster.pods[f"x/{n}"] for n in ("client", "a", "b"))
    for src, dst in ((client, a), (client, b), (a, client), (b, client), (a, b)):
        assert not both(cluster, src, dst)
    # By address: no pod owns it, so it stays an address, and is denied both ways.
    assert resolve_endpoint("10.0.0.9", cluster, "DST") == "10.0.0.9"
    assert not both(cluster, client, "10.0.0.9")
    assert not both(cluster, "10.0.0.9", client)
    # Loopback never meets a policy: a contested pod still reaches itself.
    assert both(cluster, a, a)
    # The agents are told: the node's rule set lists the address as contested.
    rules = compile_cluster(cluster).node_rule_sets["n1"]
    assert rules.contested_ips == ("10.0.0.9",)
    assert all("10.0.0.9" not in p.ips for p in rules.pods)
    warnings = pod_warnings(cluster)
    assert any("10.0.0.9 is claimed by x/a and x/b" in w for w in warnings)


def test_ownership_decisions() -> None:
    def p(name: str, created: float | None, deleting: bool = False) -> Pod:
        return Pod("x", name, {}, "n1", ("10.0.0.9",), created=created, deleting=deleting)

    assert decide("10.0.0.9", [p("a", 1.0), p("b", 2.0)]).owner == "x/b"
    assert decide("10.0.0.9", [p("a", 3.0), p("b", 2.0, deleting=True)]).owner == "x/a"
    assert decide("10.0.0.9", [p("a", 2.0), p("b", 2.0)]).owner is None
    assert decide("10.0.0.9", [p("a", None), p("b", 2.0)]).owner is None
    assert decide("10.0.0.9", [p("a", 1.0, True), p("b", 2.0, True)]).owner == "x/b"


def test_the_tracker_follows_a_reuse_and_its_end() -> None:
    tracker = OwnershipTracker()
    old = Pod("x", "old", {}, "n1", ("10.0.0.9",), created=1.0)
    new = Pod("x", "new", {}, "n1", ("10.0.0.9",), created=2.0)
    assert [p.ips for p in tracker.upsert(old)] == [("10.0.0.9",)]
    changed = {p.key: p.ips for p in tracker.upsert(new)}
    assert changed == {"x/new": ("10.0.0.9",), "x/old": ()}
    assert {p.key: p.ips for p in tracker.delete("x/new")} == {"x/old": ("10.0.0.9",)}
    effective, conflicts = resolve([old, new])
    assert effective["x/old"].ips == ()
    assert conflicts[0].owner == "x/new"


# ------------------------------------------------------------------ 3. pods without a node


def test_a_pod_without_a_node_is_nobodys_own_node() -> None:
    cluster = load(
        [
            pod("host", "192.168.0.5", node=None, host_network=True),
            pod("vault", "10.0.0.9", node=None, labels={"app": "vault"}),
            deny_all("vault", {"app": "vault"}, ["Ingress", "Egress"]),
        ]
    )
    host, vault = cluster.pods["x/host"], cluster.pods["x/vault"]
    assert not both(cluster, host, vault)
    assert not both(cluster, vault, host)


# ------------------------------------------------------------------ 4. port names


def test_a_port_name_in_two_containers_resolves_to_the_first_both_ways() -> None:
    containers = [
        {"name": "c1", "ports": [{"name": "http", "containerPort": 8080}]},
        {"name": "c2", "ports": [{"name": "http", "containerPort": 9090}]},
    ]
    cluster = load(
        [
            pod("srv", "10.0.0.9", labels={"app": "srv"}, containers=containers),
            pod("cli", "10.0.0.3", labels={"app": "cli"}),
            allow_port("in", {"app": "srv"}, "http", "Ingress"),
            allow_port("out", {"app": "cli"}, "http", "Egress"),
        ]
    )
    cli, srv = cluster.pods["x/cli"], cluster.pods["x/srv"]
    assert both(cluster, cli, srv, 8080)
    assert not both(cluster, cli, srv, 9090)
    assert any("declared more than once" in w for w in pod_warnings(cluster))


def test_a_port_name_twice_in_one_container_is_refused() -> None:
    containers = [
        {
            "name": "c1",
            "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "http", "containerPort": 9090},
            ],
        }
    ]
    with pytest.raises(InvalidObjectError, match="duplicate port name 'http'"):
        parse_pod(pod("srv", "10.0.0.9", containers=containers))


# ------------------------------------------------------------------ 5. keys


@pytest.mark.parametrize(
    ("name", "namespace", "path"),
    [
        ("x/y", "default", "metadata.name"),
        ("y", "default/x", "metadata.namespace"),
        ("Upper", "default", "metadata.name"),
        ("a" * 254, "default", "metadata.name"),
        ("a\x00b", "default", "metadata.name"),
        ("ok", "n" * 64, "metadata.namespace"),
    ],
)
def test_names_follow_the_api_so_keys_cannot_collide(name: str, namespace: str, path: str) -> None:
    doc = deny_all("placeholder", {}, ["Ingress"])
    doc["metadata"] = {"name": name, "namespace": namespace}
    with pytest.raises(InvalidObjectError) as exc:
        parse_policy(doc)
    assert [e.path for e in exc.value.errors] == [path]
    assert "\x00" not in str(exc.value)


def test_the_colliding_policies_of_the_report_are_both_refused(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    text = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x/y, namespace: default}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y, namespace: default/x}
spec: {podSelector: {}}
"""
    path = tmp_path / "collide.yaml"
    path.write_text(text)
    assert main(["matrix", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert "metadata.name" in err
    assert "metadata.namespace" in err
    assert "defined more than once" not in err


@pytest.mark.parametrize(
    ("kind", "version"), [("NetworkPolicy", "networking.k8s.io/v2"), ("Pod", "v2")]
)
def test_an_unknown_api_version_is_refused(kind: str, version: str) -> None:
    doc = deny_all("d", {}, ["Ingress"]) if kind == "NetworkPolicy" else pod("a", "10.0.0.2")
    doc["apiVersion"] = version
    result = parse_documents([doc])
    assert result.errors
    assert result.errors[0].errors[0].path == "apiVersion"


def test_selector_and_cidr_syntax() -> None:
    doc = deny_all("d", {}, ["Ingress"])
    doc["spec"]["podSelector"] = {"matchLabels": []}
    doc["spec"]["ingress"] = [{"from": [{"ipBlock": {"cidr": " 10.0.0.0/8 "}}]}]
    with pytest.raises(InvalidObjectError) as exc:
        parse_policy(doc)
    paths = sorted(e.path for e in exc.value.errors)
    assert paths == ["spec.ingress[0].from[0].ipBlock.cidr", "spec.podSelector.matchLabels"]


def test_contested_addresses_are_dropped_both_ways_by_the_rendered_rules() -> None:
    from stockade.agent.iptables import Drop, SetMatch  # noqa: PLC0415
    from stockade.agent.render import (  # noqa: PLC0415
        FORWARD_CHAIN,
        RenderOptions,
        contested_set_name,
        render,
    )

    cluster = load([pod("a", "10.0.0.9"), pod("b", "10.0.0.9"), pod("c", "10.0.0.3")])
    rules = compile_cluster(cluster).node_rule_sets["n1"]
    v4 = render(rules, {}, options=RenderOptions()).v4
    dup = contested_set_name(4)
    [contested] = [s for s in v4.ipsets if s.name == dup]
    assert [m.value for m in contested.members] == ["10.0.0.9"]
    forward = next(c for c in v4.chains if c.name == FORWARD_CHAIN)
    drops = [
        r for r in forward.rules if isinstance(r.action, Drop) and SetMatch(dup, "src") in r.matches
    ]
    drops += [
        r for r in forward.rules if isinstance(r.action, Drop) and SetMatch(dup, "dst") in r.matches
    ]
    assert len(drops) == 2


def test_a_contested_pod_still_talks_with_its_own_node() -> None:
    docs = [
        pod("a", "10.0.0.9", labels={"app": "vault"}),
        pod("b", "10.0.0.9", node="n2"),
        pod("host", "192.168.0.1", host_network=True),
        pod("other", "192.168.0.2", node="n2", host_network=True),
        deny_all("vault", {"app": "vault"}, ["Ingress", "Egress"]),
    ]
    for doc in docs[:4]:
        doc["status"]["hostIP"] = (
            "192.168.0.1" if doc["spec"]["nodeName"] == "n1" else "192.168.0.2"
        )
    cluster = load(docs)
    a, b, host, other = (cluster.pods[f"x/{n}"] for n in ("a", "b", "host", "other"))
    # Traffic between a pod and its own node never crosses FORWARD.
    assert both(cluster, host, a)
    assert both(cluster, a, host)
    assert both(cluster, other, b)
    # Another node is policy's business: the contested address is denied.
    assert not both(cluster, other, a)
    assert not both(cluster, a, other)


# ------------------------------------------------------------------ properties

NOT_A_BOOLEAN = st.one_of(
    st.text(max_size=6), st.integers(), st.floats(allow_nan=False), st.lists(st.booleans())
)
NOT_A_STRING = st.one_of(st.booleans(), st.integers(), st.none(), st.lists(st.text(max_size=3)))


@settings(max_examples=150, deadline=None)
@given(raw=strategies.pod(0), value=NOT_A_BOOLEAN)
def test_anything_but_a_boolean_host_network_is_refused(raw: Doc, value: object) -> None:
    raw["spec"]["hostNetwork"] = value
    with pytest.raises(InvalidObjectError) as exc:
        parse_pod(raw)
    assert "spec.hostNetwork" in [e.path for e in exc.value.errors]


@settings(max_examples=150, deadline=None)
@given(raw=strategies.pod(0), value=NOT_A_STRING)
def test_anything_but_a_string_label_value_is_refused(raw: Doc, value: object) -> None:
    raw["metadata"]["labels"] = {"app": value}
    with pytest.raises(InvalidObjectError) as exc:
        parse_pod(raw)
    assert "metadata.labels.app" in [e.path for e in exc.value.errors]


@settings(max_examples=100, deadline=None)
@given(raw=strategies.pod(0), value=NOT_A_BOOLEAN)
def test_an_unreadable_pod_never_opens_its_address(raw: Doc, value: object) -> None:
    from stockade.controller.state import ControllerState  # noqa: PLC0415

    raw["spec"]["hostNetwork"] = value
    state = ControllerState()
    state.observe("Pod", None, raw)
    ip = raw["status"].get("podIP")
    contested = {
        a for rs in state.compiler.result().node_rule_sets.values() for a in rs.contested_ips
    }
    if ip is not None:
        assert ip in contested
