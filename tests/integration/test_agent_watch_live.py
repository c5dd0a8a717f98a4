"""The agent's API mode against the emulated API server and a real kernel.

A node namespace (``stk-<run>-n-n1``, made by :class:`~stockade_lab.netlab.Lab`) holds
the kernel state; :class:`~stockade.agent.watch.AgentWatcher` runs in a thread with
its own event loop, as ``stockade-agent run --node n1`` would, with an applier bound
to that namespace. The test writes NodeRuleSets and PeerSets (as the controller's
publisher writes them) straight into the emulator and checks the kernel
(``Applier.verify``, ``iptables-save``, ``ipset save``) and the written status.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade.agent.applier import Applier
from stockade.agent.backend import Tools
from stockade.agent.executor import SubprocessExecutor
from stockade.agent.health import Health
from stockade.agent.metrics import AgentMetrics
from stockade.agent.watch import AgentWatcher, WatchOptions
from stockade.compiler import CompiledCluster
from stockade.kube import KubeClient, KubeConfig
from stockade_lab.emulator import EmulatorThread
from stockade_lab.netlab import Lab, Node
from tests.integration.waiting import wait_for
from tests.unit.test_agent_watch import cluster_docs, compile_docs, node_object, peer_object

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "stockade.dev", "v1alpha1"


# --------------------------------------------------------------------------- harness


class WatcherThread:
    """One agent in a thread with its own event loop; ``stop()`` ends it."""

    def __init__(
        self,
        kubeconfig: Path,
        ns: str,
        state_dir: Path,
        *,
        applier: Applier | None = None,
        metrics: AgentMetrics | None = None,
        health: Health | None = None,
        **options: Any,
    ) -> None:
        self.config = KubeConfig.from_file(kubeconfig)
        self.applier = applier or Applier(
            SubprocessExecutor(netns=ns), netns=ns, tools=Tools("nft")
        )
        self.metrics = metrics
        self.health = health
        self.loop: asyncio.AbstractEventLoop | None = None
        opts: dict[str, Any] = {
            "node": "n1",
            "state_dir": state_dir,
            "resync_interval": 0.5,
            "restore_after": 1.0,
            "set_grace": 0.5,
            "backoff_min": 0.05,
            "backoff_max": 0.3,
        }
        opts.update(options)
        self.options = WatchOptions(**opts)
        self.watcher: AgentWatcher | None = None
        self.ready = threading.Event()
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def go() -> None:
            client = KubeClient(self.config, timeout=2.0)
            self.loop = asyncio.get_running_loop()
            self.watcher = AgentWatcher(
                client, self.applier, self.options, self.metrics, health=self.health
            )
            task = asyncio.create_task(self.watcher.run())
            await asyncio.sleep(0)
            self.ready.set()
            try:
                await task
            finally:
                await client.close()

        try:
            asyncio.run(go())
        except BaseException as exc:  # reported by stop()
            self.error.append(exc)
            self.ready.set()

    def start(self) -> WatcherThread:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    @property
    def w(self) -> AgentWatcher:
        assert self.watcher is not None
        return self.watcher

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.thread.join(15)
        assert not self.thread.is_alive()
        assert not self.error, self.error


@pytest.fixture
def node() -> Iterator[Node]:
    with Lab(fabric4="192.168.77.0/24", fabric6="fd77::/64", clean_leftovers=False) as lab:
        yield lab.add_node("n1", pod_cidr4="10.0.1.0/24")


@pytest.fixture
def agent(emu: EmulatorThread, node: Node, tmp_path: Path) -> Iterator[WatcherThread]:
    agent = WatcherThread(tmp_path / "kubeconfig", node.ns, tmp_path / "state").start()
    try:
        yield agent
    finally:
        agent.stop()
        agent.applier.cleanup()


def publish(emu: EmulatorThread, compiled: CompiledCluster, node_spec: bool = True) -> None:
    """PeerSets first, then the NodeRuleSet, as the publisher does (shards it no longer
    has are deleted)."""
    wanted = {ps.name for ps in compiled.peer_sets.values()}
    for ps in compiled.peer_sets.values():
        emu.emulator.put_object(peer_object(ps))
    if node_spec:
        put_node(emu, node_object(compiled.node_rule_sets["n1"]))
    for obj in emu.emulator.objects(GROUP, VERSION, "peersets"):
        if obj["metadata"]["name"] not in wanted:
            emu.emulator.delete_object(GROUP, VERSION, "peersets", obj["metadata"]["name"])


def put_node(emu: EmulatorThread, obj: dict[str, Any]) -> None:
    """Replace the NodeRuleSet's spec, keeping the agent's status (as a merge patch would)."""
    current = emu.emulator.get_object(GROUP, VERSION, "noderulesets", "n1")
    body = {k: v for k, v in obj.items() if k != "status"}
    body["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "generation"}
    if current is not None and "status" in current:
        body["status"] = current["status"]
    emu.emulator.put_object(body)


def status(emu: EmulatorThread) -> dict[str, Any]:
    obj = emu.emulator.get_object(GROUP, VERSION, "noderulesets", "n1")
    return dict((obj or {}).get("status") or {})


def generation(emu: EmulatorThread) -> int:
    obj = emu.emulator.get_object(GROUP, VERSION, "noderulesets", "n1")
    assert obj is not None
    return int(obj["metadata"]["generation"])


def kernel(agent: WatcherThread) -> tuple[str, str]:
    """stockade's rules and sets in the node namespace (counters dropped)."""
    ex = agent.applier.executor
    rules = ex.run([agent.applier.tools.save(4), "-t", "filter"])
    sets = re.sub(r" initval 0x[0-9a-f]+", "", ex.run(["ipset", "save"]))
    keep = [line for line in rules.splitlines() if "STK-" in line and not line.startswith("#")]
    return "\n".join(sorted(keep)), "\n".join(sorted(sets.splitlines()))


def applied_with(emu: EmulatorThread, agent: WatcherThread, gen: int | None = None) -> bool:
    st = status(emu)
    w = agent.w
    return bool(
        st.get("applied") is True
        and w.applied is not None
        and st.get("appliedHash") == w.applied.hash
        and (gen is None or st.get("appliedGeneration") == gen)
    )


# --------------------------------------------------------------------------- tests


def test_apply_update_and_refuse(  # noqa: PLR0915 - one story, one lab
    emu: EmulatorThread, agent: WatcherThread
) -> None:
    compiled = compile_docs(cluster_docs())
    publish(emu, compiled)
    wait_for(lambda: applied_with(emu, agent, 1), message="status applied, generation 1")
    st = status(emu)
    assert st["observedGeneration"] == 1
    assert (st["policies"], st["pods"]) == (1, 1)
    assert st["lastSync"]
    assert "error" not in st
    assert st["conditions"][0]["status"] == "True"
    assert agent.applier.verify() == []
    rules, sets = kernel(agent)
    assert "-A FORWARD" in rules
    assert "stockade:enforce network policy" in rules
    assert "10.0.1.10" in sets
    assert "10.0.2.10" in sets
    saved = (agent.options.state_dir or Path()) / "bundle.json"
    assert saved.exists()

    # A new web pod: only PeerSet shards change, applied by ipset member changes.
    ex = agent.applier.executor
    assert isinstance(ex, SubprocessExecutor)
    restores = sum(1 for argv in ex.log if "restore" in argv[0])
    first_hash = status(emu)["appliedHash"]
    compiled2 = compile_docs(cluster_docs(("10.0.1.10", "10.0.2.10", "10.0.2.11")))
    publish(emu, compiled2, node_spec=False)
    wait_for(
        lambda: applied_with(emu, agent) and status(emu)["appliedHash"] != first_hash,
        message="the new peer set applied",
    )
    assert "10.0.2.11" in kernel(agent)[1]
    assert agent.applier.verify() == []
    assert sum(1 for argv in ex.log if "restore" in argv[0]) == restores  # no restore at all
    assert status(emu)["appliedGeneration"] == 1  # the rule set itself did not change

    # A bad protocol: refused, reported, the applied state stays in force.
    before = kernel(agent)
    applied_hash = status(emu)["appliedHash"]
    bad = node_object(compiled2.node_rule_sets["n1"])
    bad["spec"]["policies"][0]["policy"]["ingress"][0]["ports"][0]["protocol"] = "ICMP"
    put_node(emu, bad)
    wait_for(lambda: status(emu).get("observedGeneration") == 2, message="generation 2 seen")
    st = status(emu)
    assert st["applied"] is False
    assert "unknown protocol 'ICMP'" in st["error"]
    assert st["appliedGeneration"] == 1
    assert st["appliedHash"] == applied_hash
    assert st["conditions"][0]["reason"] == "Refused"
    assert kernel(agent) == before
    assert agent.applier.verify() == []

    # A rule set naming a PeerSet that never comes: after the grace time, an error.
    missing = node_object(compiled2.node_rule_sets["n1"])
    missing["spec"]["peerSets"] = [*missing["spec"]["peerSets"], "ps-never"]
    missing["spec"]["policies"][0]["policy"]["ingress"][0]["peers"].append(
        {"peerSet": "ps-never", "cidr": None, "excepts": []}
    )
    put_node(emu, missing)
    wait_for(lambda: status(emu).get("observedGeneration") == 3, message="generation 3 seen")
    st = status(emu)
    assert st["applied"] is False
    assert "ps-never (not found)" in st["error"]
    assert st["conditions"][0]["reason"] == "PeerSetsIncomplete"
    assert kernel(agent) == before

    # Fixed: applied again.
    put_node(emu, node_object(compiled.node_rule_sets["n1"]))
    wait_for(lambda: applied_with(emu, agent, 4), message="generation 4 applied")
    assert "error" not in status(emu)
    assert agent.applier.verify() == []


def test_outage_then_catch_up_with_relist(emu: EmulatorThread, agent: WatcherThread) -> None:
    compiled = compile_docs(cluster_docs())
    publish(emu, compiled)
    wait_for(lambda: applied_with(emu, agent, 1), message="first apply")
    before = kernel(agent)

    # The API server goes away: every request fails, open watches end.
    emu.emulator.faults.add(status=503, reason="ServiceUnavailable")
    emu.emulator.drop_watches()
    wait_for(lambda: not agent.w.nodes.connected, message="the agent notices")
    compiled2 = compile_docs(cluster_docs(("10.0.1.10", "10.0.2.99")))
    publish(emu, compiled2)  # straight into the store: the agent cannot see it
    for _ in range(5):
        emu.emulator.put_object(peer_object(next(iter(compiled2.peer_sets.values()))))
    emu.emulator.compact()  # the agent's resourceVersions are now too old: 410
    time.sleep(1.2)  # > resync interval: resyncs went on, without the API
    assert kernel(agent) == before
    assert agent.applier.verify() == []
    resyncs = agent.w.resyncs
    assert resyncs >= 1

    # Back: the agent relists (410 Gone) and applies what it missed.
    emu.emulator.faults.clear()
    wait_for(
        lambda: applied_with(emu, agent) and "10.0.2.99" in kernel(agent)[1],
        message="caught up",
    )
    assert agent.w.peers.relists_gone + agent.w.nodes.relists_gone >= 1
    assert "10.0.2.10" not in kernel(agent)[1]
    assert agent.applier.verify() == []


def test_restart_without_api_restores_from_disk(
    emu: EmulatorThread, node: Node, tmp_path: Path
) -> None:
    compiled = compile_docs(cluster_docs())
    publish(emu, compiled)
    first = WatcherThread(tmp_path / "kubeconfig", node.ns, tmp_path / "state").start()
    try:
        wait_for(lambda: applied_with(emu, first, 1), message="first apply")
        enforced = kernel(first)
    finally:
        first.stop()
    first.applier.cleanup()  # the node reboots: the kernel forgets everything
    assert "STK-" not in kernel(first)[0]

    # The API server is unreachable (nothing listens there).
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    second = WatcherThread(dead, node.ns, tmp_path / "state").start()
    try:
        wait_for(lambda: second.w.restored, message="restored from disk")
        assert second.w.applied_from == "disk"
        assert kernel(second) == enforced
        assert second.applier.verify() == []
        # Drift repair keeps working without the API.
        second.applier.executor.run(["iptables-nft", "-F", "STK-FORWARD"])
        wait_for(lambda: kernel(second) == enforced, message="drift repaired")
    finally:
        second.stop()
        second.applier.cleanup()
