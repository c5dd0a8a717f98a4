"""``--isolate-new-pods`` without a kernel: the rule set's known pods (compiler), the
pending addresses (agent/newpods.py), their rendering, and the watcher feeding them
to the applier from a pod watch."""

from __future__ import annotations

import asyncio
import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stockade.agent.iptables import Drop, Reject, SetMatch
from stockade.agent.newpods import LocalPods, pod_addresses
from stockade.agent.render import (
    FORWARD_CHAIN,
    RenderError,
    RenderOptions,
    pending_set_name,
    render,
)
from stockade.agent.watch import AgentWatcher
from stockade.compiler import CompiledCluster, Compiler, compile_cluster
from stockade.kube import JsonObject, Resource
from stockade.model import parse_object
from stockade.ruleset import KnownPod, NodeRuleSet, node_rule_set_from_dict, node_rule_set_to_dict
from tests.unit.test_agent_watch import (
    FakeApi,
    FakeApplier,
    _options,
    _pod,
    _until,
    cluster_docs,
    compile_docs,
    objects_for,
)


def _api_pod(name: str, node: str, ip: str, **extra: Any) -> dict[str, Any]:
    pod = _pod(name, node, ip, name)
    pod["spec"].update(extra.pop("spec", {}))
    pod["status"].update(extra.pop("status", {}))
    return pod


# --------------------------------------------------------------------------- the compiler


def test_known_pods_lists_every_selectable_pod_of_the_node() -> None:
    docs = [
        *cluster_docs(),
        _api_pod("lonely", "n1", "10.0.1.30"),  # no policy selects it
        _api_pod("host", "n1", "192.168.0.1", spec={"hostNetwork": True}),
        _api_pod("done", "n1", "10.0.1.31", status={"phase": "Succeeded"}),
    ]
    rules = compile_docs(docs).node_rule_sets["n1"]
    assert rules.known_pods == (
        KnownPod("prod/db", ("10.0.1.20",)),
        KnownPod("prod/lonely", ("10.0.1.30",)),
        KnownPod("prod/web-0", ("10.0.1.10",)),
    )
    # Only the db is a policy target: the rendered rules need only that one.
    assert [p.name for p in rules.pods] == ["prod/db"]
    # It round-trips through the resource's spec (knownPods, camelCase).
    spec = node_rule_set_to_dict(rules)
    assert spec["knownPods"][0] == {"name": "prod/db", "ips": ["10.0.1.20"]}
    assert node_rule_set_from_dict(spec) == rules


def test_known_pods_follow_pod_events_incrementally() -> None:
    compiler = Compiler()
    for doc in cluster_docs():
        compiler.upsert(parse_object(doc))
    compiler.flush()
    lonely = parse_object(_api_pod("lonely", "n2", "10.0.2.30"))
    compiler.upsert(lonely)
    changes = compiler.flush()
    assert set(changes.nodes) == {"n2"}
    n2 = changes.nodes["n2"]
    assert n2 is not None
    assert KnownPod("prod/lonely", ("10.0.2.30",)) in n2.known_pods
    # The same pod with new labels only: no rule set changes.
    relabelled = parse_object(_api_pod("lonely", "n2", "10.0.2.30"))
    compiler.upsert(relabelled)
    assert compiler.flush().nodes == {}
    # A new address, then gone: n2 changes each time.
    compiler.upsert(parse_object(_api_pod("lonely", "n2", "10.0.2.31")))
    assert set(compiler.flush().nodes) == {"n2"}
    compiler.delete("Pod", "prod/lonely")
    n2 = compiler.flush().nodes["n2"]
    assert n2 is not None
    assert all(k.name != "prod/lonely" for k in n2.known_pods)
    objects = [parse_object(d) for d in cluster_docs()]
    assert compiler.result().node_rule_sets == compile_cluster(objects).node_rule_sets


# --------------------------------------------------------------------------- pending pods


def test_pod_addresses_follow_the_engine() -> None:
    assert pod_addresses(_api_pod("a", "n1", "10.0.1.5")) == ("prod/a", ("10.0.1.5",))
    assert pod_addresses(_api_pod("h", "n1", "10.0.1.5", spec={"hostNetwork": True})) is None
    assert pod_addresses(_api_pod("f", "n1", "10.0.1.5", status={"phase": "Failed"})) is None
    no_ip = _api_pod("n", "n1", "10.0.1.5")
    no_ip["status"] = {"phase": "Pending"}
    assert pod_addresses(no_ip) is None
    bad = _api_pod("b", "n1", "10.0.1.300")
    assert pod_addresses(bad) is None  # the controller rejects it too: never pending


def test_pending_is_by_pod_and_address() -> None:
    pods = LocalPods()
    pods.replace([_api_pod("a", "n1", "10.0.1.5"), _api_pod("b", "n1", "10.0.1.6")])
    known = (KnownPod("prod/a", ("10.0.1.5",)),)
    assert pods.pending(known) == {"10.0.1.6": "prod/b"}
    assert pods.pending(()) == {"10.0.1.5": "prod/a", "10.0.1.6": "prod/b"}
    # b is deleted and c takes its address: the rule set's "b" does not cover c.
    pods.event("DELETED", _api_pod("b", "n1", "10.0.1.6"))
    pods.event("ADDED", _api_pod("c", "n1", "10.0.1.6"))
    assert pods.pending((*known, KnownPod("prod/b", ("10.0.1.6",)))) == {"10.0.1.6": "prod/c"}
    # A pod that finishes is no longer pending (nor anything).
    pods.event("MODIFIED", _api_pod("c", "n1", "10.0.1.6", status={"phase": "Succeeded"}))
    assert pods.pending(known) == {}
    assert len(pods) == 1
    # A relist forgets what it does not list.
    pods.replace([])
    assert pods.pending(()) == {}


# --------------------------------------------------------------------------- rendering


def _rules() -> NodeRuleSet:
    return compile_docs(cluster_docs()).node_rule_sets["n1"]


def _forward(options: RenderOptions, pending: tuple[str, ...] = ()) -> list[Any]:
    compiled = compile_docs(cluster_docs())
    node = compiled.node_rule_sets["n1"]
    sets = {n: list(compiled.shards(n)) for n in node.peer_sets}
    rendered = render(node, sets, options=options, pending=pending)
    chain = next(c for c in rendered.v4.chains if c.name == FORWARD_CHAIN)
    return [rendered, chain]


def test_isolation_rules_come_right_after_the_established_return() -> None:
    rendered, chain = _forward(
        RenderOptions(isolate_new_pods=True), ("10.0.1.99", "fd00::9", "10.0.1.98")
    )
    name = pending_set_name(4)
    assert [r.matches for r in chain.rules[1:3]] == [
        (SetMatch(name, "src"),),
        (SetMatch(name, "dst"),),
    ]
    assert all(isinstance(r.action, Drop) for r in chain.rules[1:3])
    v4 = {s.name: s for s in rendered.v4.ipsets}[name]
    assert [m.value for m in v4.members] == ["10.0.1.98", "10.0.1.99"]
    v6 = {s.name: s for s in rendered.v6.ipsets}[pending_set_name(6)]
    assert [m.value for m in v6.members] == ["fd00::9"]
    text = rendered.restore_text(4)
    assert re.search(rf"-A STK-FORWARD -m set --match-set {name} src .*-j DROP\n", text)
    assert re.search(rf"-A STK-FORWARD -m set --match-set {name} dst .*-j DROP\n", text)


def test_isolation_uses_reject_when_asked_and_is_absent_when_off() -> None:
    _, chain = _forward(RenderOptions(isolate_new_pods=True, drop_action="REJECT"))
    assert isinstance(chain.rules[1].action, Reject)
    rendered, chain = _forward(RenderOptions(), ("10.0.1.99",))  # pending ignored when off
    assert not any(isinstance(m, SetMatch) for r in chain.rules for m in r.matches)
    assert all(not s.name.startswith("stk-new") for s in rendered.v4.ipsets)
    # With the option and nothing pending, the (empty) sets and rules are still there:
    # a pod turning pending is then a set member, not a rule change.
    rendered, chain = _forward(RenderOptions(isolate_new_pods=True))
    assert len(chain.rules) == len(_forward(RenderOptions())[1].rules) + 2
    assert {s.name: s for s in rendered.v4.ipsets}[pending_set_name(4)].members == ()


def test_a_bad_pending_address_is_refused() -> None:
    with pytest.raises(RenderError, match="pending pod address"):
        _forward(RenderOptions(isolate_new_pods=True), ("10.0.1.999",))


# --------------------------------------------------------------------------- the watcher


class PodApi(FakeApi):
    """FakeApi with the node's Pods, filtered by ``spec.nodeName``."""

    def __init__(self) -> None:
        super().__init__()
        self.objects["pods"] = {}
        self.pod_selectors: list[str | None] = []

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]:
        if resource.plural != "pods":
            return await super().list(resource, namespace, label_selector, field_selector)
        self.pod_selectors.append(field_selector)
        node = (field_selector or "=").split("=", 1)[1]
        items = [o for o in self.objects["pods"].values() if o["spec"]["nodeName"] == node]
        return copy.deepcopy(items), "1"


@dataclass
class Agent:
    """A watcher over a :class:`PodApi` holding node n1's rule set and peer sets."""

    api: PodApi
    applier: FakeApplier
    watcher: AgentWatcher
    compiled: CompiledCluster
    node_obj: JsonObject

    async def stop(self, task: asyncio.Task[None]) -> None:
        self.watcher.stop()
        await task


def _agent(tmp_path: Path, *, isolate: bool, with_pods: bool = False) -> Agent:
    compiled = compile_docs(cluster_docs())
    api = PodApi()
    node_obj, peers = objects_for("n1", compiled)
    api.objects["noderulesets"]["n1"] = node_obj
    api.objects["peersets"] = {p["metadata"]["name"]: p for p in peers}
    if with_pods:
        for doc in cluster_docs():
            if doc["kind"] == "Pod":
                api.objects["pods"][doc["metadata"]["name"]] = doc
    # Isolation is the applier's option; the watcher reads it from there.
    applier = FakeApplier(RenderOptions(isolate_new_pods=isolate))
    watcher = AgentWatcher(api, applier, _options(tmp_path))
    return Agent(api, applier, watcher, compiled, node_obj)


async def _synced(agent: Agent) -> asyncio.Task[None]:
    task = asyncio.create_task(agent.watcher.run())
    pods = agent.watcher.pods
    await _until(lambda: agent.applier.applied and (pods is None or pods.synced))
    return task


def test_watcher_isolates_pods_the_rule_set_does_not_list(tmp_path: Path) -> None:
    async def go() -> None:
        agent = _agent(tmp_path, isolate=True, with_pods=True)
        api, applier, watcher = agent.api, agent.applier, agent.watcher
        task = await _synced(agent)
        assert api.pod_selectors == ["spec.nodeName=n1"]
        await _until(lambda: applier.pending[-1] == frozenset())
        # A new pod on the node: isolated at once, the rule set unchanged.
        new = _api_pod("new", "n1", "10.0.1.77")
        api.queue("pods").put_nowait(("ADDED", new))
        await _until(lambda: applier.pending[-1] == {"10.0.1.77"})
        assert applier.applied[-1] == agent.compiled.node_rule_sets["n1"]
        assert watcher.applied_pending == {"10.0.1.77": "prod/new"}
        assert watcher.metrics.pending_pods._value.get() == 1
        # The controller's next rule set lists it: released.
        covered = compile_docs([*cluster_docs(), new])
        node_obj2, peers2 = objects_for("n1", covered, generation=2)
        api.objects["peersets"] = {p["metadata"]["name"]: p for p in peers2}
        for p in peers2:
            api.queue("peersets").put_nowait(("MODIFIED", p))
        api.objects["noderulesets"]["n1"] = node_obj2
        api.queue("noderulesets").put_nowait(("MODIFIED", copy.deepcopy(node_obj2)))
        await _until(lambda: applier.pending[-1] == frozenset() and len(applier.applied) >= 3)
        assert applier.applied[-1] == covered.node_rule_sets["n1"]
        await agent.stop(task)

    asyncio.run(go())


def test_without_the_option_pods_are_not_watched(tmp_path: Path) -> None:
    async def go() -> None:
        agent = _agent(tmp_path, isolate=False)
        task = await _synced(agent)
        assert agent.watcher.pods is None
        assert "pods" not in agent.api.lists
        assert agent.api.pod_selectors == []
        await agent.stop(task)

    asyncio.run(go())


def test_a_refused_rule_set_does_not_stop_isolation(tmp_path: Path) -> None:
    async def go() -> None:
        agent = _agent(tmp_path, isolate=True)
        api, applier, watcher = agent.api, agent.applier, agent.watcher
        task = await _synced(agent)
        bad = copy.deepcopy(agent.node_obj)
        bad["metadata"]["generation"] = 2
        bad["spec"]["policies"][0]["policy"]["name"] = "prod/refuse"
        api.objects["noderulesets"]["n1"] = bad
        api.queue("noderulesets").put_nowait(("MODIFIED", copy.deepcopy(bad)))
        await _until(lambda: watcher.state is not None and not watcher.state.applied)
        api.queue("pods").put_nowait(("ADDED", _api_pod("new", "n1", "10.0.1.78")))
        await _until(lambda: applier.pending[-1] == {"10.0.1.78"})
        # The old rules stay.
        assert applier.applied[-1] == agent.compiled.node_rule_sets["n1"]
        await agent.stop(task)

    asyncio.run(go())


def _raw_pod(name: str, ip: str, *, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "x"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running", "podIP": ip},
    }


def test_a_terminating_pod_does_not_hold_its_successor_pending() -> None:
    pods = LocalPods()
    pods.replace([_raw_pod("old", "10.0.0.9", deleting=True), _raw_pod("new", "10.0.0.9")])
    # The controller's rule set gives the address to the new pod (stockade.ownership).
    assert pods.pending([KnownPod("x/new", ("10.0.0.9",))]) == {}
    # Until the rule set says so, the new pod is pending, whatever the old one was.
    assert pods.pending([KnownPod("x/old", ("10.0.0.9",))]) == {"10.0.0.9": "x/new"}


def test_an_address_two_live_pods_claim_stays_pending() -> None:
    pods = LocalPods()
    pods.replace([_raw_pod("a", "10.0.0.9"), _raw_pod("b", "10.0.0.9")])
    known = [KnownPod("x/a", ("10.0.0.9",)), KnownPod("x/b", ("10.0.0.9",))]
    assert set(pods.pending(known)) == {"10.0.0.9"}
