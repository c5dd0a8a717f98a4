"""Run every scenario of :mod:`e2e.scenarios` against the chosen cluster driver.

The expectations are hand-written truth tables; a mismatch prints the expected and
the observed table and marks the differing cells with ``!``.
"""

from __future__ import annotations

import time

import pytest
import yaml

from e2e.driver import ClusterDriver, EngineDriver
from e2e.model import POD_KEYS, model_objects
from e2e.scenarios import (
    SCENARIOS,
    AddNode,
    Apply,
    Check,
    Delete,
    RecreatePod,
    RelabelNamespace,
    RelabelPod,
    RestartAgent,
    RestartController,
    Scenario,
    Step,
    format_table,
    parse_table,
)
from stockade.cluster import parse_documents

# --------------------------------------------------------------------------- runner


def _diff(expected: dict[str, dict[str, bool]], actual: dict[str, dict[str, bool]]) -> str:
    lines = ["     " + " ".join(f"{k:>3}" for k in POD_KEYS)]
    for src in POD_KEYS:
        marks = " ".join(
            f"{'!' if expected[src][dst] != actual[src][dst] else ' ':>3}" for dst in POD_KEYS
        )
        lines.append(f"{src:<4} {marks}")
    return "\n".join(lines)


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
        ip = hosts[probe.dst] if probe.dst in hosts else driver.pod_ip(probe.dst)
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
            driver.add_node(step.name)
        case Check():
            raise AssertionError("checks are run by run_scenario")


def run_scenario(driver: ClusterDriver, scenario: Scenario) -> None:
    """Run the steps in order; fail at the first check that disagrees."""
    skipped: list[str] = []
    for index, step in enumerate(scenario.steps, start=1):
        if isinstance(step, Check):
            _run_check(driver, step, f"{scenario.name} step {index}", skipped)
            continue
        try:
            _run_step(driver, step)
        except NotImplementedError as exc:
            pytest.skip(f"{driver.name} driver: {exc}")
    if skipped:
        pytest.skip(f"other checks passed; {driver.name} cannot probe: {', '.join(skipped)}")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(
    driver: ClusterDriver, scenario: Scenario, request: pytest.FixtureRequest
) -> None:
    """The scenario's observed reachability matches its hand-written tables."""
    if scenario.engine_bug and driver.name == "engine":
        request.applymarker(pytest.mark.xfail(reason=scenario.engine_bug, strict=True))
    run_scenario(driver, scenario)


# --------------------------------------------------------------------------- the scenarios


def test_scenarios_are_many_and_uniquely_named() -> None:
    """At least 40 scenarios, no name twice."""
    names = [s.name for s in SCENARIOS]
    assert len(names) >= 40
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
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


def test_engine_driver_is_a_cluster_driver_and_fast() -> None:
    """The engine driver implements the protocol and builds a matrix in well under a second."""
    driver = EngineDriver()
    assert isinstance(driver, ClusterDriver)
    start = time.perf_counter()
    matrix = driver.matrix(80, "TCP")
    assert time.perf_counter() - start < 1.0
    assert all(matrix[s][d] for s in POD_KEYS for d in POD_KEYS)
    assert driver.pod_ip("x/a").startswith("10.244.1.")
    assert driver.pod_ip("x/b").startswith("10.244.2.")
