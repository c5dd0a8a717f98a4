"""A real-packet probe never reports a verdict it did not measure.

The supervisor answers None for a probe it could not make (an unknown source, a
protocol the kernel lacks, a socket that cannot be opened), with a reason. Here its
answers are stubbed (``control_call``) or its probe op runs against a fake lab, and
every layer above is checked to keep None as unknown: the matrix, ``differences``,
the ``stockade sandbox probe`` command (exit 3, one ``error:`` line) and the e2e
driver (raises).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import pytest
from e2e.sandbox_driver import SandboxDriver

from stockade.cluster import Cluster
from stockade.model import Pod
from stockade_lab.netlab import Lab, MissingFeatureError
from stockade_lab.sandbox import api
from stockade_lab.sandbox import cli as sandbox_cli
from stockade_lab.sandbox.api import Sandbox, Snapshot, differences
from stockade_lab.sandbox.common import JsonObject, Layout, write_json
from stockade_lab.sandbox.kubelet import Kubelet
from stockade_lab.sandbox.supervisor import Supervisor

PODS = {
    "shop/a": "10.244.1.10",
    "shop/b": "10.244.2.20",
    "shop/gone": "10.244.1.30",
}


def _cluster() -> Cluster:
    return Cluster.of(
        Pod(key.split("/")[0], key.split("/")[1], MappingProxyType({}), "node-1", (ip,))
        for key, ip in PODS.items()
    )


class FakeSupervisor:
    """Stands in for the control socket: answers probe and status requests."""

    def __init__(self, *, reasons: bool = True) -> None:
        self.requests: list[Mapping[str, Any]] = []
        self.reasons = reasons

    def __call__(
        self, layout: Layout, request: Mapping[str, Any], timeout: float = 60.0
    ) -> JsonObject:
        self.requests.append(request)
        if request["op"] == "status":
            pods = {k: {"serving": [[80, "TCP"], [80, "UDP"]]} for k in PODS}
            return {"pods": pods}
        assert request["op"] == "probe"
        results: list[bool | None] = []
        reasons: list[str | None] = []
        for src, dst_ip, _port, proto in request["probes"]:
            if src == "shop/gone":
                results.append(None)
                reasons.append("shop/gone is not a running pod, node or external host")
            elif proto == "SCTP":
                results.append(None)
                reasons.append("this kernel has no SCTP sockets")
            else:
                # a -> b is denied, everything else answers.
                results.append(not (src == "shop/a" and dst_ip == PODS["shop/b"]))
                reasons.append(None)
        answer: JsonObject = {"results": results}
        if self.reasons:
            answer["reasons"] = reasons
        return answer


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STOCKADE_SANDBOX_DIR", str(tmp_path))
    return tmp_path


def _state(has_sctp: bool) -> None:
    write_json(Layout.named("unit").state, {"phase": "ready", "has_sctp": has_sctp})


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> FakeSupervisor:
    fake = FakeSupervisor()
    monkeypatch.setattr(api, "control_call", fake)
    monkeypatch.setattr(Sandbox, "snapshot", lambda self: Snapshot(_cluster()))
    monkeypatch.setattr(Sandbox, "is_up", lambda self: True)
    _state(has_sctp=False)
    return fake


# --------------------------------------------------------------------------- the API


def test_an_unmeasured_cell_is_none_not_false(supervisor: FakeSupervisor) -> None:
    report = Sandbox("unit").measure_matrix(80, "TCP")
    assert report.matrix["shop/a"]["shop/b"] is False  # measured: denied
    assert report.matrix["shop/b"]["shop/a"] is True
    # Every probe from the vanished pod is unknown, even to itself.
    assert report.matrix["shop/gone"] == {"shop/a": None, "shop/b": None, "shop/gone": None}
    assert set(report.unknown) == {("shop/gone", d) for d in PODS}
    assert report.why() == (
        "3 of 9 cells could not be measured: "
        "shop/gone is not a running pod, node or external host (3)"
    )
    assert Sandbox("unit").probe_matrix(80, "TCP")["shop/gone"]["shop/gone"] is None


def test_a_protocol_the_kernel_lacks_is_not_probed(supervisor: FakeSupervisor) -> None:
    sandbox = Sandbox("unit")
    assert sandbox.unmeasurable("sctp") == "this kernel has no SCTP sockets"
    assert sandbox.unmeasurable("TCP") is None
    report = sandbox.measure_matrix(80, "SCTP")
    assert supervisor.requests == []  # failed fast: nothing was sent
    assert all(ok is None for row in report.matrix.values() for ok in row.values())
    assert set(report.unknown.values()) == {"this kernel has no SCTP sockets"}


def test_a_kernel_with_sctp_is_probed(supervisor: FakeSupervisor) -> None:
    _state(has_sctp=True)
    assert Sandbox("unit").unmeasurable("SCTP") is None
    report = Sandbox("unit").measure_matrix(80, "SCTP")
    assert len(supervisor.requests) == 1
    # The (fake) supervisor still could not measure: unknown, with its reason.
    assert report.matrix["shop/a"]["shop/a"] is None
    assert "no SCTP sockets" in report.why()


def test_an_old_supervisor_without_reasons(
    supervisor: FakeSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "control_call", FakeSupervisor(reasons=False))
    results, reasons = Sandbox("unit").probe_explained([("shop/gone", "10.244.1.10", 80, "TCP")])
    assert results == [None]
    assert reasons == ["the supervisor gave no reason"]
    assert Sandbox("unit").probe([("shop/a", "10.244.1.10", 80, "TCP")]) == [True]


def test_differences_report_unknown_cells_as_unknown() -> None:
    real: dict[str, dict[str, bool | None]] = {
        "a": {"a": None, "b": None, "c": True},
        "b": {"a": False},
    }
    expected = {"a": {"a": True, "b": False, "c": True}, "b": {"a": False, "b": True}}
    assert differences(real, expected) == [
        "a -> a: real packets unknown (not measured), engine allowed",
        "a -> b: real packets unknown (not measured), engine denied",
        "b -> b: real packets missing, engine allowed",
    ]
    # Unknown is never a match, not even against unknown.
    assert differences({"a": {"a": None}}, {"a": {"a": None}}) == [
        "a -> a: real packets unknown (not measured), engine unknown (not measured)"
    ]
    assert differences({"a": {"a": True}}, {"a": {"a": True}}) == []


# --------------------------------------------------------------------------- the supervisor


class FakeLab:
    has_sctp = False

    def ask(self, ns: str, dst: str, port: int, proto: str, timeout: float) -> str | None:
        if dst == "10.9.9.9":
            raise MissingFeatureError("ipv6", "this kernel has no IPv6 TCP socket")
        return "shop/b" if dst == "10.244.2.20" else None


class FakeKubelet:
    def namespace_of(self, source: str) -> str | None:
        return None if source == "shop/gone" else f"ns-{source}"


def test_the_supervisor_says_why_a_probe_is_unknown(tmp_path: Path) -> None:
    sup = Supervisor(Layout(tmp_path), 2, False, (80,), "api")
    sup.lab = cast(Lab, FakeLab())
    sup.kubelet = cast(Kubelet, FakeKubelet())
    probes = [
        ["shop/a", "10.244.2.20", 80, "TCP"],
        ["shop/a", "10.244.1.30", 80, "TCP"],
        ["shop/a", "10.244.2.20", 80, "sctp"],
        ["shop/gone", "10.244.2.20", 80, "TCP"],
        ["shop/a", "10.9.9.9", 80, "TCP"],
    ]
    try:
        answer = asyncio.run(sup.handle({"op": "probe", "probes": probes, "timeout": 0.1}))
    finally:
        sup.probex.shutdown()
        sup.labx.shutdown()
    assert answer["results"] == [True, False, None, None, None]
    assert answer["reasons"] == [
        None,
        None,
        "this kernel has no SCTP sockets",
        "shop/gone is not a running pod, node or external host of the sandbox",
        "this kernel has no IPv6 TCP socket",
    ]
    # what answered: through a Service, the backend kube-proxy picked
    assert answer["replies"] == ["shop/b", None, None, None, None]
    json.dumps(answer)  # it goes over the control socket


# --------------------------------------------------------------------------- the command


def _probe(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = sandbox_cli.main(["--name", "unit", "probe", "--color", "never", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_probe_sctp_without_sctp_fails_fast(
    supervisor: FakeSupervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra in ((), ("-o", "json"), ("--expect",)):
        code, out, err = _probe(capsys, "--protocol", "sctp", *extra)
        assert code == sandbox_cli.EXIT_UNKNOWN == 3
        assert out == ""
        assert err == "error: SCTP cannot be measured: this kernel has no SCTP sockets\n"
    assert supervisor.requests == []


def test_probe_shows_unknown_cells_and_exits_3(
    supervisor: FakeSupervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _probe(capsys)
    assert code == 3
    row = next(line for line in out.splitlines() if "shop/gone" in line)
    assert row.split()[-3:] == ["?", "?", "?"]
    assert "? unknown (not measured)" in out
    assert "3 of 9 cells unknown (not measured)" in out
    assert err.count("\n") == 1
    assert err.startswith("error: 3 of 9 cells could not be measured: shop/gone is not")


def test_probe_json_has_null_for_unknown(
    supervisor: FakeSupervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _probe(capsys, "-o", "json")
    assert code == 3
    matrix = json.loads(out)["matrix"]
    assert matrix["shop/gone"] == {"shop/a": None, "shop/b": None, "shop/gone": None}
    assert matrix["shop/a"]["shop/b"] is False
    assert err.startswith("error: 3 of 9 cells could not be measured")


def test_probe_expect_never_matches_unknown(
    supervisor: FakeSupervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _probe(capsys, "--expect")
    assert code == 3
    assert "match" not in out
    assert "difference: shop/gone -> shop/a: real packets unknown (not measured)" in out
    assert err.startswith("error: 3 of 9 cells could not be measured")


def test_probe_all_measured_exits_0_or_1(
    supervisor: FakeSupervisor, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = Cluster.of(p for p in _cluster().pods.values() if p.name != "gone")
    monkeypatch.setattr(Sandbox, "snapshot", lambda self: Snapshot(cluster))
    code, out, err = _probe(capsys)
    assert (code, err) == (0, "")
    assert "unknown" not in out
    assert " ? " not in out
    # The engine (no policy) says a -> b is allowed; the fake kernel denied it.
    code, out, err = _probe(capsys, "--expect")
    assert (code, err) == (1, "")
    assert "difference: shop/a -> shop/b: real packets denied, engine allowed" in out


# --------------------------------------------------------------------------- the e2e driver


def test_the_e2e_driver_refuses_unknown(supervisor: FakeSupervisor) -> None:
    driver = SandboxDriver(Sandbox("unit"))
    with pytest.raises(AssertionError, match="3 of 9 cells could not be measured"):
        driver.matrix(80, "TCP")
    with pytest.raises(AssertionError, match="not measured: shop/gone is not"):
        driver.probe("shop/gone", "10.244.1.10", 80, "TCP")
    assert driver.probe("shop/a", "10.244.2.20", 80, "TCP") is False
    assert driver.probe("shop/b", "10.244.1.10", 80, "TCP") is True
