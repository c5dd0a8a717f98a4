"""Faults found before a first install, fixed in the agent (no kernel here).

1. Fail static on absence: a NodeRuleSet that disappears (DELETED, a relist without
   it, the CRD gone) never opens the node; only an explicit empty one does.
2. iptables-restore waits for the xtables lock (``-w``), as kube-proxy's does.
3. A node without IPv6 is detected and IPv6 skipped everywhere (render, apply,
   verify, cleanup, conntrack).
4. /metrics, /healthz and /readyz are served on the node's own addresses (one socket
   each), not on every interface; loopback when nothing says otherwise.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pytest

from stockade.agent.applier import Applier, only_families
from stockade.agent.backend import (
    DEFAULT_XTABLES_WAIT,
    Tools,
    detect_families,
    restore_wait_args,
)
from stockade.agent.cache import empty_rule_set
from stockade.agent.cli import (
    Bundle,
    InputError,
    _detect_families,
    bind_addresses,
    build_parser,
    compile_bundle,
    make_applier,
)
from stockade.agent.executor import CommandError
from stockade.agent.health import BIND_ENV, Health, parse_bind_addresses, serve_all
from stockade.agent.live import parse_iptables_save
from stockade.agent.metrics import AgentMetrics
from stockade.agent.netlink import ConntrackTable
from stockade.agent.plan import make_plan
from stockade.agent.render import RenderOptions, render
from stockade.agent.watch import AgentWatcher
from stockade.compiler import CompiledCluster
from stockade.kube import Gone, JsonObject, NotFound, Resource
from tests.unit.test_agent_watch import (
    FakeApi,
    FakeApplier,
    _options,
    _until,
    cluster_docs,
    compile_docs,
    node_object,
    objects_for,
)


@pytest.fixture
def compiled() -> CompiledCluster:
    return compile_docs(cluster_docs())


class CrdApi(FakeApi):
    """A FakeApi whose NodeRuleSet resource can vanish (the CRD deleted: 404 on list)."""

    def __init__(self) -> None:
        super().__init__()
        self.crd_gone = False

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]:
        if self.crd_gone and resource.plural == "noderulesets":
            raise NotFound(404, "the server could not find the requested resource")
        return await super().list(resource, namespace, label_selector, field_selector)


def _missing(watcher: AgentWatcher) -> float:
    return float(watcher.metrics.rule_set_missing._value.get())


def test_a_deleted_rule_set_keeps_enforcing_until_an_explicit_empty_one(
    tmp_path: Path, compiled: CompiledCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stockade.agent.watch")

    async def go() -> None:
        api = CrdApi()
        node_obj, peers = objects_for("n1", compiled)
        api.objects["noderulesets"]["n1"] = node_obj
        api.objects["peersets"] = {p["metadata"]["name"]: p for p in peers}
        applier = FakeApplier()
        health = Health(60)
        watcher = AgentWatcher(api, applier, _options(tmp_path), health=health)
        task = asyncio.create_task(watcher.run())
        await _until(lambda: watcher.applied is not None)
        applied = watcher.applied
        assert applier.applied == [compiled.node_rule_sets["n1"]]
        assert _missing(watcher) == 0
        # Deleted by accident: nothing is applied, the old rules stay in force.
        del api.objects["noderulesets"]["n1"]
        api.queue("noderulesets").put_nowait(("DELETED", copy.deepcopy(node_obj)))
        await _until(lambda: watcher.rule_set_missing is not None)
        await _until(lambda: health.detail()["rule_set_missing"] is not None)
        assert _missing(watcher) == 1
        assert health.readiness().ok  # still enforcing: ready, and it says why it waits
        # A relist without it (410), and resyncs, change nothing.
        resyncs = applier.resyncs
        api.queue("noderulesets").put_nowait(Gone(410, "Expired"))
        await _until(lambda: watcher.nodes.relists_gone == 1)
        await _until(lambda: applier.resyncs >= resyncs + 2)  # drift repair goes on
        assert applier.applied == [compiled.node_rule_sets["n1"]]
        assert watcher.applied == applied
        warnings = [
            r for r in caplog.records if r.levelno == logging.WARNING and "not found" in r.message
        ]
        assert len(warnings) == 1, [r.message for r in warnings]  # once, not every loop
        assert "keeping the applied rule set" in warnings[0].message
        # An explicit empty NodeRuleSet (exists, no policies) is a decision: it opens.
        empty = node_object(empty_rule_set("n1"), generation=2)
        api.objects["noderulesets"]["n1"] = empty
        api.queue("noderulesets").put_nowait(("ADDED", copy.deepcopy(empty)))
        await _until(lambda: len(applier.applied) == 2)
        assert applier.applied[-1] == empty_rule_set("n1")
        assert watcher.rule_set_missing is None
        assert _missing(watcher) == 0
        watcher.stop()
        await task

    asyncio.run(go())


def test_the_crd_gone_keeps_enforcing(tmp_path: Path, compiled: CompiledCluster) -> None:
    async def go() -> None:
        api = CrdApi()
        node_obj, peers = objects_for("n1", compiled)
        api.objects["noderulesets"]["n1"] = node_obj
        api.objects["peersets"] = {p["metadata"]["name"]: p for p in peers}
        applier = FakeApplier()
        watcher = AgentWatcher(api, applier, _options(tmp_path))
        task = asyncio.create_task(watcher.run())
        await _until(lambda: watcher.applied is not None)
        # The CRD goes: its watch ends (here: 410, so the agent lists again) and the
        # list answers 404. No DELETED event is needed for the agent to notice.
        api.crd_gone = True
        api.queue("noderulesets").put_nowait(Gone(410, "Expired"))
        await _until(lambda: watcher.rule_set_missing is not None)
        assert "404" in (watcher.rule_set_missing or "")
        assert _missing(watcher) == 1
        await asyncio.sleep(0.3)
        assert applier.applied == [compiled.node_rule_sets["n1"]]
        # The CRD and the object come back: back to normal, nothing to apply.
        api.crd_gone = False
        await _until(lambda: watcher.rule_set_missing is None)
        assert applier.applied == [compiled.node_rule_sets["n1"]]
        assert _missing(watcher) == 0
        watcher.stop()
        await task

    asyncio.run(go())


def test_no_rule_set_at_start_restores_from_disk_not_empty(
    tmp_path: Path, compiled: CompiledCluster
) -> None:
    """A node restarted while its NodeRuleSet is gone enforces its saved bundle."""

    async def go() -> None:
        api = FakeApi()
        node_obj, peers = objects_for("n1", compiled)
        api.objects["noderulesets"]["n1"] = node_obj
        api.objects["peersets"] = {p["metadata"]["name"]: p for p in peers}
        first = AgentWatcher(api, FakeApplier(), _options(tmp_path))
        task = asyncio.create_task(first.run())
        await _until(lambda: first.saves == 1)
        first.stop()
        await task
        del api.objects["noderulesets"]["n1"]
        applier = FakeApplier()
        second = AgentWatcher(api, applier, _options(tmp_path))
        task = asyncio.create_task(second.run())
        await _until(lambda: second.restored)
        assert applier.applied == [compiled.node_rule_sets["n1"]]
        assert second.rule_set_missing is not None
        second.stop()
        await task

    asyncio.run(go())


# --------------------------------------------------------------------------- 2. the lock

CLUSTER = str(Path(__file__).resolve().parent / "data" / "conformance.yaml")


class RecordingKernel:
    """An executor with empty tables and no sets that records every command line.

    ``fail``: tools (argv[0]) that exit 1, as a missing family's do.
    """

    def __init__(self, fail: Collection[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.stdin: list[str | None] = []
        self.fail = set(fail)

    def run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        self.calls.append(list(argv))
        self.stdin.append(stdin)
        if argv[0] in self.fail:
            raise CommandError(argv, 1, "can't initialize ip6tables table `filter'")
        return ""

    def clear(self) -> None:
        self.calls.clear()
        self.stdin.clear()

    def tools_run(self) -> list[str]:
        return [c[0] for c in self.calls]


def _bundle() -> Bundle:
    return compile_bundle([CLUSTER], "n1")


def _applier(kernel: RecordingKernel, backend: str = "legacy", **kw: Any) -> Applier:
    tools = Tools("legacy") if backend == "legacy" else Tools("nft")
    return Applier(kernel, tools=tools, cut_conntrack=False, **kw)


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_restore_waits_for_the_xtables_lock(backend: str) -> None:
    kernel = RecordingKernel()
    bundle = _bundle()
    _applier(kernel, backend, families=(4, 6)).apply(bundle.node, bundle.peer_sets)
    restores = [c for c in kernel.calls if c[0].endswith("-restore")]
    assert restores == [
        [f"{base}-{backend}-restore", "-w", "5", "-W", "100000", "--noflush"]
        for base in ("iptables", "ip6tables")
    ]
    # The save commands take no lock and reject -w: called as before.
    saves = [c for c in kernel.calls if c[0].endswith("-save")]
    assert saves == [[f"{b}-{backend}-save", "-t", "filter"] for b in ("iptables", "ip6tables")]


def test_the_wait_is_configurable_and_zero_fails_at_once() -> None:
    assert restore_wait_args(0) == []
    assert restore_wait_args(12) == ["-w", "12", "-W", "100000"]
    args = build_parser().parse_args(["apply", "--xtables-wait", "12", "-f", "x.yaml"])
    assert make_applier(args).xtables_wait == 12
    args = build_parser().parse_args(["cleanup"])
    assert make_applier(args).xtables_wait == DEFAULT_XTABLES_WAIT == 5
    kernel = RecordingKernel()
    bundle = _bundle()
    _applier(kernel, families=(4,), xtables_wait=0).apply(bundle.node, bundle.peer_sets)
    assert ["iptables-legacy-restore", "--noflush"] in kernel.calls


# --------------------------------------------------------------------------- 3. no IPv6


def test_families_detected(tmp_path: Path) -> None:
    present = tmp_path / "if_inet6"
    present.write_text("")
    ok = RecordingKernel()
    assert detect_families(ok, Tools("nft"), present) == ((4, 6), None)
    assert ok.calls == [["ip6tables-nft-save", "-t", "filter"]]
    found, why = detect_families(RecordingKernel(), Tools("nft"), tmp_path / "absent")
    assert found == (4,)
    assert why is not None
    assert "does not exist" in why
    broken = RecordingKernel(fail={"ip6tables-legacy-save"})
    found, why = detect_families(broken, Tools("legacy"), present)
    assert found == (4,)
    assert why is not None
    assert "ip6tables-legacy-save fails" in why


def test_a_node_without_ipv6_skips_it_entirely(caplog: pytest.LogCaptureFixture) -> None:
    bundle = _bundle()
    full = render(bundle.node, bundle.peer_sets, options=RenderOptions())
    assert full.v6.chains  # the rule set does carry IPv6
    assert full.v6.ipsets
    # ip6tables-save fails (no IPv6 in the kernel): detection says IPv4 only.
    kernel = RecordingKernel(fail={"ip6tables-legacy-save"})
    applier = _applier(kernel)
    with caplog.at_level(logging.WARNING, logger="stockade.agent"):
        assert applier.families == (4,)
    assert any("skipping IPv6" in r.message for r in caplog.records)
    kernel.clear()
    report = applier.apply(bundle.node, bundle.peer_sets)
    assert report.changed
    assert not any(t.startswith("ip6tables") for t in kernel.tools_run())
    assert ["iptables-legacy-restore", "-w", "5", "-W", "100000", "--noflush"] in kernel.calls
    pairs = zip(kernel.calls, kernel.stdin, strict=True)
    ipset_input = "".join(stdin or "" for argv, stdin in pairs if argv[0] == "ipset")
    assert "family inet " in ipset_input
    assert "family inet6" not in ipset_input
    assert applier.last is not None
    assert applier.last.rendered.v4 == full.v4  # IPv4 applied in full
    assert not applier.last.rendered.v6.chains
    assert not applier.last.rendered.v6.ipsets
    # verify, resync and cleanup do not read or write IPv6 either.
    kernel.clear()
    applier.verify()
    applier.resync()
    applier.cleanup()
    assert kernel.calls
    assert not any(t.startswith("ip6tables") for t in kernel.tools_run())
    assert applier.conntrack.families == (4,)


def test_only_families_and_the_plan() -> None:
    bundle = _bundle()
    full = render(bundle.node, bundle.peer_sets, options=RenderOptions())
    assert only_families(full, (4, 6)) is full
    v4 = only_families(full, (4,))
    assert v4.v4 == full.v4
    assert v4.v6.family == 6
    assert not v4.v6.chains
    # make_plan with only IPv4 read: no IPv6 text, no IPv6 set, nothing said of IPv6.
    plan = make_plan(full, {4: parse_iptables_save("")}, {})
    assert set(plan.iptables) == {4}
    assert not any("IPv6" in d for d in plan.differences)
    assert not any("inet6" in line for line in plan.set_restore)


def test_conntrack_lists_only_the_nodes_families() -> None:
    kernel = RecordingKernel()
    table = ConntrackTable(None, kernel)
    if table.runner is None:
        pytest.skip("no conntrack tool")
    table.families = (4,)
    assert table.flows() == []
    assert kernel.calls == [["conntrack", "-L", "-f", "ipv4"]]


def test_families_shown_in_health_and_metrics() -> None:
    metrics, health = AgentMetrics(), Health(60)
    _detect_families(_applier(RecordingKernel(), families=(4,)), metrics, health)
    assert health.detail()["families"] == ["IPv4"]
    assert metrics.families.labels("4")._value.get() == 1
    assert metrics.families.labels("6")._value.get() == 0


# --------------------------------------------------------------------------- 4. bind


def test_bind_addresses_parsed() -> None:
    assert parse_bind_addresses(["10.0.0.5,fd00::5"]) == ["10.0.0.5", "fd00::5"]
    assert parse_bind_addresses(["[fd00::5]", "10.0.0.5", "10.0.0.5"]) == ["fd00::5", "10.0.0.5"]
    assert parse_bind_addresses([""]) == []
    with pytest.raises(ValueError, match="not an IP address"):
        parse_bind_addresses(["node-1"])


def test_bind_addresses_come_from_the_downward_api(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run = ["run", "--node", "n1", "--metrics-port", "9977"]
    monkeypatch.setenv(BIND_ENV, "10.0.0.5,fd00::5")  # status.hostIPs, dual-stack
    assert bind_addresses(build_parser().parse_args(run)) == ["10.0.0.5", "fd00::5"]
    # The flag wins (repeatable, comma-separated; the old --metrics-host spelling too).
    args = build_parser().parse_args([*run, "--bind-address", "::"])
    assert bind_addresses(args) == ["::"]
    args = build_parser().parse_args([*run, "--metrics-host", "10.1.0.1,10.1.0.2"])
    assert bind_addresses(args) == ["10.1.0.1", "10.1.0.2"]
    with pytest.raises(InputError, match="not an IP"):
        bind_addresses(build_parser().parse_args([*run, "--bind-address", "eth0"]))
    # Nothing given: loopback only, never every interface, and a warning.
    monkeypatch.delenv(BIND_ENV)
    with caplog.at_level(logging.WARNING, logger="stockade.agent"):
        assert bind_addresses(build_parser().parse_args(run)) == ["127.0.0.1"]
    assert any(BIND_ENV in r.message for r in caplog.records)


def _free_port(*hosts: str) -> int:
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            for host in hosts[1:]:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                with socket.socket(family) as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError("no free port")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_one_socket_per_address_on_one_port() -> None:
    hosts = ["127.0.0.1", "::1"]
    try:
        port = _free_port(*hosts)
    except AssertionError:
        pytest.skip("no IPv6 loopback here")
    servers = serve_all(Health(60), AgentMetrics().registry, port, hosts)
    try:
        assert [s.url for s in servers] == [f"http://127.0.0.1:{port}", f"http://[::1]:{port}"]
        for server in servers:
            assert _status(f"{server.url}/healthz") == 200
            assert _status(f"{server.url}/readyz") == 503
        # An address of the host that was not asked for is not served: 127.0.0.2 is
        # loopback too, and would answer were the socket bound to 0.0.0.0.
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.2", port), timeout=2),
        ):
            pass
        # A host's IPv6 address is served for IPv6 only (v6only), unlike "::".
        v6 = servers[1]._server.socket
        assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for server in servers:
            server.close()


def test_an_address_the_node_lacks_fails_all_or_none() -> None:
    port = _free_port("127.0.0.1")
    with pytest.raises(OSError, match=r"cannot serve /metrics on 192\.0\.2\.1"):
        serve_all(Health(60), AgentMetrics().registry, port, ["127.0.0.1", "192.0.2.1"])
    # The first socket was closed again: the port is free.
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))


def test_render_stays_offline_and_renders_both_families(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_kernel(self: object, argv: Sequence[str], stdin: str | None = None) -> str:
        raise AssertionError(f"render ran {argv}")

    monkeypatch.setattr("stockade.agent.executor.SubprocessExecutor.run", no_kernel)
    args = build_parser().parse_args(["render", "--cluster", CLUSTER, "--node", "n1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "# IPv6 iptables-restore --noflush input" in out
    assert "family inet6" in out
