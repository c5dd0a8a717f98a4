"""Run every scenario of :mod:`e2e.scenarios` against the chosen cluster driver.

The expectations are hand-written truth tables; a mismatch prints the expected and
the observed table and marks the differing cells with ``!``.
"""

from __future__ import annotations

import contextlib

import pytest
import yaml

from e2e.cluster_model import (
    POD_KEYS,
    cluster_network_policy,
    host_network_pod_manifest,
    model_objects,
)
from e2e.driver import ClusterDriver, EngineDriver, Flow, FlowDriver
from e2e.isolation_scenarios import ISOLATION_SCENARIOS
from e2e.scenarios import (
    SCENARIOS,
    AddNode,
    Apply,
    Check,
    CheckFlows,
    Delete,
    OpenFlow,
    RecreatePod,
    RelabelNamespace,
    RelabelNode,
    RelabelPod,
    RestartAgent,
    RestartController,
    Scenario,
    Step,
    format_table,
    parse_table,
)
from e2e.tier_scenarios import TIER_SCENARIOS
from stockade.cluster import parse_documents

#: The NetworkPolicy scenarios, then the tier (ClusterNetworkPolicy) scenarios, then
#: the IsolationPolicy ones.
ALL_SCENARIOS: tuple[Scenario, ...] = SCENARIOS + TIER_SCENARIOS + ISOLATION_SCENARIOS

# --------------------------------------------------------------------------- runner


def _diff(expected: dict[str, dict[str, bool]], actual: dict[str, dict[str, bool]]) -> str:
    lines = ["     " + " ".join(f"{k:>3}" for k in POD_KEYS)]
    for src in POD_KEYS:
        marks = " ".join(
            f"{'!' if expected[src][dst] != actual[src][dst] else ' ':>3}" for dst in POD_KEYS
        )
        lines.append(f"{src:<4} {marks}")
    return "\n".join(lines)


def _address(driver: ClusterDriver, dst: str, hosts: dict[str, str]) -> str:
    """The address of a probe's or flow's destination: an outside host, a node, a pod."""
    if dst in hosts:
        return hosts[dst]
    if dst.startswith("node:"):
        return driver.node_ip(dst.removeprefix("node:"))
    return driver.pod_ip(dst)


def _open_flow(driver: ClusterDriver, step: OpenFlow, flows: dict[str, Flow]) -> None:
    if not isinstance(driver, FlowDriver):
        raise NotImplementedError("it cannot hold connections open (no open_flow)")
    ip = _address(driver, step.dst, driver.external_hosts())
    flow = driver.open_flow(step.src, ip, step.port)
    flows[step.name] = flow
    if not flow.exchange():
        raise AssertionError(f"flow {step.name} ({step.src} -> {step.dst}) carries no data")


def _check_flows(step: CheckFlows, where: str, flows: dict[str, Flow]) -> None:
    failures = []
    for name, alive in step.flows:
        got = flows[name].exchange()
        if got != alive:
            want = "still carrying data" if alive else "cut"
            failures.append(f"{where}, flow {name}: expected {want}, observed the opposite")
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


def _run_check(driver: ClusterDriver, step: Check, where: str, skipped: list[str]) -> None:
    failures: list[str] = []
    for exp in step.matrices:
        what = f"{exp.protocol} {exp.port}"
        if not driver.supports_protocol(exp.protocol):
            skipped.append(what)
            continue
        expected = parse_table(exp.table)
        observed = driver.matrix(exp.port, exp.protocol)
        actual = {s: {d: observed[s][d] for d in POD_KEYS} for s in POD_KEYS}
        if actual != expected:
            failures.append(
                f"{where}, {what}:\nexpected\n{format_table(expected)}\n"
                f"observed\n{format_table(actual)}\ndiffering\n{_diff(expected, actual)}"
            )
    hosts = driver.external_hosts()
    for probe in step.probes:
        what = f"{probe.src} -> {probe.dst} {probe.protocol} {probe.port}"
        if not driver.supports_protocol(probe.protocol):
            skipped.append(what)
            continue
        ip = _address(driver, probe.dst, hosts)
        got = driver.probe(probe.src, ip, probe.port, probe.protocol)
        if got != probe.allowed:
            want = "allowed" if probe.allowed else "denied"
            failures.append(f"{where}, {what} ({ip}): expected {want}, observed the opposite")
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def _run_step(driver: ClusterDriver, step: Step) -> None:
    match step:
        case Apply():
            driver.apply(step.objects(driver))
        case Delete():
            driver.delete(list(step.docs))
        case RelabelPod():
            driver.relabel_pod(step.key, step.labels)
        case RelabelNamespace():
            driver.relabel_namespace(step.name, step.labels)
        case RecreatePod():
            driver.recreate_pod(step.key)
        case RestartAgent():
            driver.restart_agent(step.node)
        case RestartController():
            driver.restart_controller()
        case AddNode():
            driver.add_node(step.name, step.labels)
        case RelabelNode():
            driver.relabel_node(step.name, step.labels)
        case Check() | OpenFlow() | CheckFlows():
            raise AssertionError("checks and flows are run by run_scenario")


def run_scenario(driver: ClusterDriver, scenario: Scenario) -> None:
    """Run the steps in order; fail at the first check that disagrees."""
    skipped: list[str] = []
    flows: dict[str, Flow] = {}
    try:
        for index, step in enumerate(scenario.steps, start=1):
            where = f"{scenario.name} step {index}"
            try:
                match step:
                    case Check():
                        _run_check(driver, step, where, skipped)
                    case OpenFlow():
                        _open_flow(driver, step, flows)
                    case CheckFlows():
                        _check_flows(step, where, flows)
                    case _:
                        _run_step(driver, step)
            except NotImplementedError as exc:
                pytest.skip(f"{driver.name} driver: {exc}")
    finally:
        for flow in flows.values():
            flow.close()
    if skipped:
        pytest.skip(f"other checks passed; {driver.name} cannot probe: {', '.join(skipped)}")


@pytest.mark.parametrize("scenario", ALL_SCENARIOS, ids=[s.name for s in ALL_SCENARIOS])
def test_scenario(
    driver: ClusterDriver, scenario: Scenario, request: pytest.FixtureRequest
) -> None:
    """The scenario's observed reachability matches its hand-written tables."""
    if scenario.engine_bug and driver.name == "engine":
        request.applymarker(pytest.mark.xfail(reason=scenario.engine_bug, strict=True))
    run_scenario(driver, scenario)


# --------------------------------------------------------------------------- the scenarios


def test_scenarios_are_many_and_uniquely_named() -> None:
    """At least 40 scenarios, no name twice (tier scenarios included)."""
    names = [s.name for s in ALL_SCENARIOS]
    assert len(names) >= 40
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("scenario", ALL_SCENARIOS, ids=[s.name for s in ALL_SCENARIOS])
def test_scenario_is_well_formed(scenario: Scenario) -> None:
    """Every table parses; every fixed object is valid and YAML-able; it checks something."""
    checks = [s for s in scenario.steps if isinstance(s, Check)]
    assert checks, "a scenario must check something"
    for check in checks:
        for exp in check.matrices:
            parse_table(exp.table)
    for step in scenario.steps:
        if isinstance(step, Apply):
            result = parse_documents(yaml.safe_load_all(yaml.safe_dump_all(step.docs)))
            assert not result.errors, result.errors


def test_model_is_yaml_and_valid() -> None:
    """The model's namespaces and pods survive YAML and parse."""
    docs = model_objects()
    result = parse_documents(yaml.safe_load_all(yaml.safe_dump_all(docs)))
    assert not result.errors
    assert len(result.objects) == 12


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "header"),
        ("x/a x/b\nx/a . .", "header"),
        (" ".join(POD_KEYS) + "\n" + "x/a " + ". " * 9, "rows"),
        (" ".join(POD_KEYS) + "\n" + "\n".join(f"{k} " + ". " * 8 for k in POD_KEYS), "cells"),
        (" ".join(POD_KEYS) + "\n" + "\n".join(f"{k} " + "o " * 9 for k in POD_KEYS), "cells"),
    ],
)
def test_truth_table_rejects_malformed(text: str, problem: str) -> None:
    """A malformed table is an error, never a silently different expectation."""
    with pytest.raises(ValueError, match=problem):
        parse_table(text)


def test_truth_table_round_trip() -> None:
    """format_table and parse_table agree."""
    matrix = {s: {d: (s < d) for d in POD_KEYS} for s in POD_KEYS}
    assert parse_table(format_table(matrix)) == matrix


def test_engine_driver_is_a_cluster_driver() -> None:
    """The engine driver implements the protocol (its speed: ``python -m bench.engine``)."""
    driver = EngineDriver()
    assert isinstance(driver, ClusterDriver)
    matrix = driver.matrix(80, "TCP")
    assert all(matrix[s][d] for s in POD_KEYS for d in POD_KEYS)
    assert driver.pod_ip("x/a").startswith("10.244.1.")
    assert driver.pod_ip("x/b").startswith("10.244.2.")


def test_driver_takes_nodes_cluster_policies_and_host_network_pods(
    driver: ClusterDriver,
) -> None:
    """Nodes (added, relabelled), ClusterNetworkPolicies and host-network pods go
    through every driver: a host-network pod at its node's address, a `nodes` peer
    following a node's labels, a node added into it, a controller restart."""
    if driver.name == "kind":
        pytest.skip("the kind driver has no relabel_node/node_ip yet")
    driver.apply([host_network_pod_manifest("x/h", "node-1")])
    node1 = driver.node_ip("node-1")
    assert driver.pod_ip("x/h") == node1
    assert driver.probe("x/b", node1, 9090, "TCP") is True
    assert driver.probe("x/a", node1, 9090, "TCP") is True
    driver.apply(
        [
            cluster_network_policy(
                "deny-restricted-nodes",
                {
                    "tier": "Admin",
                    "priority": 10,
                    "subject": {"namespaces": {}},
                    "egress": [
                        {
                            "action": "Deny",
                            "to": [{"nodes": {"matchLabels": {"zone": "restricted"}}}],
                            "protocols": [{"tcp": {"destinationPort": {"number": 9090}}}],
                        }
                    ],
                },
            )
        ]
    )
    assert driver.probe("x/b", node1, 9090, "TCP") is True
    driver.relabel_node("node-1", {"zone": "restricted"})
    # From another node (FORWARD, then INPUT) and from the node's own pod (INPUT);
    # another port is not the rule's.
    assert driver.probe("x/b", node1, 9090, "TCP") is False
    assert driver.probe("x/a", node1, 9090, "TCP") is False
    assert driver.probe("x/a", node1, 80, "TCP") is True
    # A node added into the peer; a host-network pod listens there.
    driver.add_node("node-3", {"zone": "restricted"})
    driver.apply([host_network_pod_manifest("x/h3", "node-3")])
    node3 = driver.node_ip("node-3")
    assert driver.pod_ip("x/h3") == node3
    assert driver.probe("x/a", node3, 9090, "TCP") is False
    assert driver.probe("x/a", node3, 80, "TCP") is True
    with contextlib.suppress(NotImplementedError):
        driver.restart_controller()
    assert driver.probe("x/b", node1, 9090, "TCP") is False
    driver.relabel_node("node-1", {})
    assert driver.probe("x/b", node1, 9090, "TCP") is True
    driver.delete([cluster_network_policy("deny-restricted-nodes", {})])
    driver.relabel_node("node-1", {"zone": "restricted"})
    assert driver.probe("x/b", node1, 9090, "TCP") is True
    assert driver.probe("x/a", node3, 9090, "TCP") is True


def test_protocol_variants_reuse_the_tcp_truth_tables() -> None:
    """A generated UDP/SCTP scenario checks its TCP base's tables over its protocol."""
    by_name = {s.name: s for s in SCENARIOS}
    for proto in ("UDP", "SCTP"):
        for base in ("default-deny-ingress", "ports", "only-from-pod-in-different-namespace"):
            variant = by_name[f"{proto.lower()}-{base}"]
            tables = [
                e.table
                for step in by_name[base].steps
                if isinstance(step, Check)
                for e in step.matrices
            ]
            mine = [e for step in variant.steps if isinstance(step, Check) for e in step.matrices]
            assert [e.table for e in mine][: len(tables)] == tables
            assert {e.protocol for e in mine[: len(tables)]} == {proto}
            docs = [d for step in variant.steps if isinstance(step, Apply) for d in step.docs]
            assert "TCP" not in repr(docs)
