"""The agent's API side without a kernel: the watch cache, the status, the state file,
back-off, and the watcher's loop against a fake API and a fake applier.

The objects are what the controller's publisher writes (``desired_node`` and
``desired_peer_set`` of a compiled cluster), so the cache reads exactly that format.
"""

from __future__ import annotations

import asyncio
import copy
import errno
import functools
import json
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from stockade.agent.applier import Applier, ApplyReport, RefusedError
from stockade.agent.cache import (
    SET_LABEL,
    Invalid,
    Missing,
    Ready,
    StateError,
    Waiting,
    WatchCache,
    bundle_from_json,
    bundle_hash,
    bundle_to_json,
    empty_rule_set,
)
from stockade.agent.executor import SubprocessExecutor
from stockade.agent.render import RenderOptions
from stockade.agent.saver import StateStore
from stockade.agent.status import (
    REASON_APPLIED,
    REASON_KERNEL,
    REASON_REFUSED,
    SyncState,
    needs_write,
    status_payload,
)
from stockade.agent.watch import AgentWatcher, WatchOptions
from stockade.cluster import parse_documents
from stockade.compiler import CompiledCluster, compile_cluster
from stockade.controller.writes import SET_LABEL as PUBLISHER_SET_LABEL
from stockade.controller.writes import desired_node, desired_peer_set
from stockade.encoded import Encoded
from stockade.kube import Gone, JsonObject, Resource, Unreachable
from stockade.reflector import Backoff
from stockade.ruleset import NodeRuleSet, PeerSet

API_VERSION = "stockade.dev/v1alpha1"

# --------------------------------------------------------------------------- a small cluster


def _pod(name: str, node: str, ip: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "prod", "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def cluster_docs(web_ips: Sequence[str] = ("10.0.1.10", "10.0.2.10")) -> list[dict[str, Any]]:
    """prod/db on n1, web pods at ``web_ips`` (n1, n2, n2...); db admits only web on 5432."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}},
        _pod("db", "n1", "10.0.1.20", "db"),
    ]
    for i, ip in enumerate(web_ips):
        docs.append(_pod(f"web-{i}", "n1" if i == 0 else "n2", ip, "web"))
    docs.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "db-from-web", "namespace": "prod"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                        "ports": [{"protocol": "TCP", "port": 5432}],
                    }
                ],
            },
        }
    )
    return docs


def compile_docs(docs: Sequence[Mapping[str, Any]], shard_size: int = 1) -> CompiledCluster:
    """Compile documents that must all parse."""
    result = parse_documents(list(docs))
    assert not result.errors, result.errors
    return compile_cluster(result.cluster, shard_size=shard_size)


def _as_sent(body: Mapping[str, Any]) -> JsonObject:
    """A body the publisher hands its client as the API server gets it: its text."""
    assert isinstance(body, Encoded)
    sent: JsonObject = json.loads(body.text)
    return sent


def node_object(rs: NodeRuleSet, generation: int = 1) -> JsonObject:
    """A NodeRuleSet as the publisher creates it (and the API serves it)."""
    body = _as_sent(desired_node(rs).body(rs.node))
    body["metadata"]["generation"] = generation
    return {"apiVersion": API_VERSION, "kind": "NodeRuleSet", **body}


def peer_object(ps: PeerSet) -> JsonObject:
    """A PeerSet shard as the publisher creates it."""
    return {
        "apiVersion": API_VERSION,
        "kind": "PeerSet",
        **_as_sent(desired_peer_set(ps).body(ps.name)),
    }


def objects_for(
    node: str, compiled: CompiledCluster, generation: int = 1
) -> tuple[JsonObject, list[JsonObject]]:
    """The node's NodeRuleSet object and every PeerSet shard object."""
    return (
        node_object(compiled.node_rule_sets[node], generation),
        [peer_object(ps) for ps in compiled.peer_sets.values()],
    )


@pytest.fixture
def compiled() -> CompiledCluster:
    return compile_docs(cluster_docs())


def test_the_label_is_the_publishers() -> None:
    assert SET_LABEL == PUBLISHER_SET_LABEL


# --------------------------------------------------------------------------- the cache


def _filled(compiled: CompiledCluster) -> WatchCache:
    node_obj, peers = objects_for("n1", compiled)
    cache = WatchCache("n1")
    cache.replace_nodes([node_obj])
    cache.replace_peers(peers)
    return cache


def test_complete_bundle_is_ready(compiled: CompiledCluster) -> None:
    cache = _filled(compiled)
    outcome = cache.assemble()
    assert isinstance(outcome, Ready)
    rs = compiled.node_rule_sets["n1"]
    assert outcome.node == rs
    assert outcome.generation == 1
    (name,) = rs.peer_sets
    shards = len(compiled.shards(name))
    assert shards >= 2  # shard size 1, two web pods
    assert [ps.shard for ps in outcome.peer_sets[name]] == list(range(shards))
    assert outcome.hash == bundle_hash(rs, {name: compiled.shards(name)})


def test_a_missing_shard_waits(compiled: CompiledCluster) -> None:
    cache = _filled(compiled)
    (name,) = compiled.node_rule_sets["n1"].peer_sets
    cache.peer_event("DELETED", peer_object(compiled.shards(name)[1]))
    outcome = cache.assemble()
    assert isinstance(outcome, Waiting)
    assert outcome.missing == {name: f"shard 1 of {len(compiled.shards(name))} missing"}
    assert name in outcome.message
    cache.peer_event("ADDED", peer_object(compiled.shards(name)[1]))
    assert isinstance(cache.assemble(), Ready)


def test_a_set_never_published_waits(compiled: CompiledCluster) -> None:
    node_obj, _ = objects_for("n1", compiled)
    cache = WatchCache("n1")
    cache.replace_nodes([node_obj])
    cache.replace_peers([])
    outcome = cache.assemble()
    assert isinstance(outcome, Waiting)
    assert set(outcome.missing.values()) == {"not found"}


def test_shard_zero_missing_waits(compiled: CompiledCluster) -> None:
    cache = _filled(compiled)
    (name,) = compiled.node_rule_sets["n1"].peer_sets
    cache.remove_peer(compiled.shards(name)[0].name)
    outcome = cache.assemble()
    assert isinstance(outcome, Waiting)
    assert outcome.missing[name] == f"shard 0 of {len(compiled.shards(name))} missing"


def test_a_reshard_is_seen_whole() -> None:
    """Shards become one: shard 0 says 1 before the old shards 1.. are deleted."""
    two = compile_docs(cluster_docs(), shard_size=1)
    one = compile_docs(cluster_docs(), shard_size=10)
    (name,) = two.node_rule_sets["n1"].peer_sets
    cache = _filled(two)
    cache.put_peer(peer_object(one.shards(name)[0]))  # the old shards 1.. are still there
    outcome = cache.assemble()
    assert isinstance(outcome, Ready)
    assert outcome.peer_sets[name] == one.shards(name)
    # The other way round: shard 0 says N before shard 1 exists, so wait.
    cache = _filled(one)
    cache.put_peer(peer_object(two.shards(name)[0]))
    assert isinstance(cache.assemble(), Waiting)


def test_unrelated_sets_do_not_matter(compiled: CompiledCluster) -> None:
    cache = _filled(compiled)
    before = cache.assemble()
    other = compile_docs(cluster_docs(("10.9.0.1",)))
    stray = copy.deepcopy(peer_object(next(iter(other.peer_sets.values()))))
    stray["metadata"]["name"] = "ps-unrelated-0"
    stray["spec"]["setName"] = stray["spec"]["name"] = "ps-unrelated"
    cache.put_peer(stray)
    assert cache.assemble() == before
    assert cache.peer_count == len(compiled.peer_sets) + 1


def test_no_node_rule_set_is_missing_not_empty(compiled: CompiledCluster) -> None:
    """Absence is not "no policy": the cache says Missing, never the empty rule set."""
    cache = _filled(compiled)
    node_obj, _ = objects_for("n1", compiled)
    cache.node_event("DELETED", node_obj)
    outcome = cache.assemble()
    assert isinstance(outcome, Missing)
    assert "not found" in outcome.reason
    fresh = WatchCache("n1")
    fresh.replace_nodes([])
    assert fresh.assemble() == outcome


def test_an_explicit_empty_rule_set_is_ready() -> None:
    cache = WatchCache("n1")
    cache.replace_nodes([node_object(empty_rule_set("n1"), generation=3)])
    cache.replace_peers([])
    outcome = cache.assemble()
    assert isinstance(outcome, Ready)
    assert outcome.node == empty_rule_set("n1")
    assert outcome.generation == 3


def test_other_nodes_are_ignored(compiled: CompiledCluster) -> None:
    cache = _filled(compiled)
    before = cache.assemble()
    n2, _ = objects_for("n2", compiled)
    cache.node_event("MODIFIED", n2)
    cache.node_event("DELETED", n2)
    assert cache.assemble() == before


def test_an_invalid_spec_is_invalid(compiled: CompiledCluster) -> None:
    cache = _filled(compiled)
    node_obj, _ = objects_for("n1", compiled, generation=2)
    node_obj["spec"]["policies"] = "nonsense"
    cache.node_event("MODIFIED", node_obj)
    outcome = cache.assemble()
    assert isinstance(outcome, Invalid)
    assert outcome.generation == 2
    assert outcome.error.startswith("NodeRuleSet n1: spec.policies")


def test_a_spec_for_another_node_is_invalid(compiled: CompiledCluster) -> None:
    cache = WatchCache("n1")
    n2, _ = objects_for("n2", compiled)
    n2["metadata"]["name"] = "n1"
    cache.set_node(n2)
    outcome = cache.assemble()
    assert isinstance(outcome, Invalid)
    assert "spec.node is 'n2'" in outcome.error


def test_an_invalid_shard_is_invalid(compiled: CompiledCluster) -> None:
    cache = _filled(compiled)
    (name,) = compiled.node_rule_sets["n1"].peer_sets
    bad = peer_object(compiled.shards(name)[1])
    bad["spec"]["members"] = [{"pod": "x"}]  # no ips
    cache.put_peer(bad)
    outcome = cache.assemble()
    assert isinstance(outcome, Invalid)
    assert outcome.error.startswith(f"PeerSet {name}-1: spec.members.0")


def test_relist_forgets_deleted_shards(compiled: CompiledCluster) -> None:
    cache = _filled(compiled)
    (name,) = compiled.node_rule_sets["n1"].peer_sets
    cache.replace_peers([peer_object(compiled.shards(name)[0])])
    assert cache.peer_count == 1
    assert isinstance(cache.assemble(), Waiting)


def test_a_status_change_keeps_the_bundle(compiled: CompiledCluster) -> None:
    cache = _filled(compiled)
    before = cache.assemble()
    node_obj, _ = objects_for("n1", compiled)
    node_obj["status"] = {"applied": True}
    cache.node_event("MODIFIED", node_obj)
    assert cache.assemble() == before
    assert cache.node_status == {"applied": True}


# --------------------------------------------------------------------------- on disk


def test_bundle_round_trip(compiled: CompiledCluster) -> None:
    ready = _filled(compiled).assemble()
    assert isinstance(ready, Ready)
    raw = json.loads(json.dumps(bundle_to_json(ready)))
    assert bundle_from_json(raw, "n1") == ready
    with pytest.raises(StateError, match="not 'n2'"):
        bundle_from_json(raw, "n2")
    with pytest.raises(StateError, match="format"):
        bundle_from_json({"format": 99}, "n1")
    raw["peerSets"][0]["shard"] = "x"
    with pytest.raises(StateError):
        bundle_from_json(raw, "n1")


def test_state_store(tmp_path: Path, compiled: CompiledCluster) -> None:
    store = StateStore(tmp_path / "state")
    assert store.load("n1") is None
    ready = _filled(compiled).assemble()
    assert isinstance(ready, Ready)
    store.save(ready)
    store.save(ready)
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["bundle.json"]
    assert store.load("n1") == ready
    store.path.write_text("{not json")
    with pytest.raises(StateError):
        store.load("n1")


def test_state_store_never_goes_back_to_an_older_bundle(
    tmp_path: Path, compiled: CompiledCluster
) -> None:
    ready = _filled(compiled).assemble()
    assert isinstance(ready, Ready)
    store = StateStore(tmp_path)
    assert store.save(ready, 2)
    assert not store.save(replace(ready, generation=9), 1)  # an older apply, late
    assert store.load("n1") == ready


# --------------------------------------------------------------------------- status


def _state(**kw: Any) -> SyncState:
    rs = NodeRuleSet("n1", (), (), ())
    base: dict[str, Any] = {
        "observed_generation": 3,
        "applied": True,
        "reason": REASON_APPLIED,
        "applied_generation": 3,
        "applied_hash": "abc",
        "applied_rules": rs,
        "last_sync": "2025-01-01T00:00:00Z",
    }
    base.update(kw)
    return SyncState(**base)


def test_status_when_applied(compiled: CompiledCluster) -> None:
    rules = compiled.node_rule_sets["n1"]
    status = status_payload(_state(applied_rules=rules), "2025-01-01T00:00:05Z")
    assert status["applied"] is True
    assert status["observedGeneration"] == status["appliedGeneration"] == 3
    assert status["appliedHash"] == "abc"
    assert status["error"] is None  # a merge patch deletes an old error
    assert (status["policies"], status["pods"]) == (len(rules.policies), len(rules.pods))
    (cond,) = status["conditions"]
    assert cond["type"] == "Applied"
    assert cond["status"] == "True"
    assert cond["reason"] == REASON_APPLIED
    assert cond["lastTransitionTime"] == "2025-01-01T00:00:05Z"


def test_status_when_refused_keeps_what_is_applied() -> None:
    previous = status_payload(_state(), "2025-01-01T00:00:05Z")
    refused = _state(
        observed_generation=4, applied=False, reason=REASON_REFUSED, message="bad protocol"
    )
    status = status_payload(refused, "2025-01-01T00:01:00Z", previous)
    assert status["applied"] is False
    assert status["observedGeneration"] == 4
    assert status["appliedGeneration"] == 3
    assert status["appliedHash"] == "abc"
    assert status["error"] == "bad protocol"
    (cond,) = status["conditions"]
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Refused", "bad protocol")
    assert cond["lastTransitionTime"] == "2025-01-01T00:01:00Z"
    again = status_payload(refused, "2025-01-01T00:02:00Z", status)
    assert again["conditions"][0]["lastTransitionTime"] == "2025-01-01T00:01:00Z"


def test_needs_write() -> None:
    written = status_payload(_state(), "2025-01-01T00:00:05Z")
    stored = {k: v for k, v in written.items() if v is not None}
    stored["somethingElse"] = 1  # not the agent's: never compared
    later = status_payload(_state(last_sync="2025-01-01T00:00:30Z"), "2025-01-01T00:00:35Z", stored)
    assert not needs_write(stored, written, seconds_since_sync_write=1.0, refresh=60)
    assert not needs_write(stored, later, seconds_since_sync_write=30.0, refresh=60)
    assert needs_write(stored, later, seconds_since_sync_write=61.0, refresh=60)
    assert needs_write(stored, later, seconds_since_sync_write=None, refresh=60)
    changed = status_payload(_state(applied_hash="def"), "2025-01-01T00:00:35Z", stored)
    assert needs_write(stored, changed, seconds_since_sync_write=1.0, refresh=60)
    assert needs_write({}, written, seconds_since_sync_write=1.0, refresh=60)


# --------------------------------------------------------------------------- back-off


def test_backoff_grows_with_jitter_and_is_bounded() -> None:
    top = Backoff(0.2, 10.0, rng=lambda: 1.0)
    assert [round(top.next(), 3) for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10]
    bottom = Backoff(0.2, 10.0, rng=lambda: 0.0)
    assert [round(bottom.next(), 3) for _ in range(3)] == [0.1, 0.2, 0.4]
    top.reset()
    assert top.next() == pytest.approx(0.2)
    for _ in range(200):
        assert 0.05 <= Backoff(0.1, 1.0).next() <= 0.1
    with pytest.raises(ValueError, match="low"):
        Backoff(0, 1)


# --------------------------------------------------------------------------- the watcher, faked


class FakeApplier(Applier):
    """Records what it is given; refuses rule sets with a policy named ``refuse``."""

    def __init__(self, options: RenderOptions | None = None) -> None:
        super().__init__(SubprocessExecutor(netns="stk-never-used"), options=options)
        self.applied: list[NodeRuleSet] = []
        self.pending: list[frozenset[str]] = []
        self.resyncs = 0

    def apply(
        self,
        node: NodeRuleSet,
        peer_sets: Mapping[str, Sequence[PeerSet]],
        pending: Collection[str] = (),
    ) -> ApplyReport:
        if any(np.policy.name.endswith("/refuse") for np in node.policies):
            raise RefusedError("refused: policy refuse")
        self.applied.append(node)
        self.pending.append(frozenset(pending))
        return ApplyReport(changed=True)

    def resync(self) -> ApplyReport:
        self.resyncs += 1
        return ApplyReport(changed=False)


Step = tuple[str, JsonObject] | BaseException


class FakeApi:
    """Lists from ``objects``; watches replay queued steps (events or errors), then block."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, JsonObject]] = {"noderulesets": {}, "peersets": {}}
        self.queues: dict[str, asyncio.Queue[Step]] = {}
        self.lists: list[str] = []
        self.statuses: list[Mapping[str, Any]] = []
        self.down = False

    def queue(self, plural: str) -> asyncio.Queue[Step]:
        return self.queues.setdefault(plural, asyncio.Queue())

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]:
        if self.down:
            raise Unreachable("down")
        self.lists.append(resource.plural)
        items = list(self.objects[resource.plural].values())
        if field_selector:
            name = field_selector.split("=", 1)[1]
            items = [o for o in items if o["metadata"]["name"] == name]
        return copy.deepcopy(items), "1"

    async def watch(
        self,
        resource: Resource,
        resource_version: str | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, JsonObject]]:
        q = self.queue(resource.plural)
        while True:
            step = await q.get()
            if isinstance(step, BaseException):
                raise step
            yield step

    async def patch_status(
        self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        if self.down:
            raise Unreachable("down")
        self.statuses.append(dict(status))
        obj = self.objects["noderulesets"][name]
        merged = {**obj.get("status", {}), **status}
        obj["status"] = {k: v for k, v in merged.items() if v is not None}
        self.queue("noderulesets").put_nowait(("MODIFIED", copy.deepcopy(obj)))
        return copy.deepcopy(obj)


async def _until(what: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not what():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _options(tmp_path: Path, **kw: Any) -> WatchOptions:
    base: dict[str, Any] = {
        "node": "n1",
        "state_dir": tmp_path / "state",
        "resync_interval": 0.2,
        "restore_after": 0.3,
        "set_grace": 0.2,
        "backoff_min": 0.01,
        "backoff_max": 0.05,
    }
    base.update(kw)
    return WatchOptions(**base)


def test_watcher_applies_reports_and_relists(tmp_path: Path, compiled: CompiledCluster) -> None:
    async def go() -> None:
        api = FakeApi()
        node_obj, peers = objects_for("n1", compiled)
        api.objects["noderulesets"]["n1"] = node_obj
        api.objects["peersets"] = {p["metadata"]["name"]: p for p in peers}
        applier = FakeApplier()
        watcher = AgentWatcher(api, applier, _options(tmp_path))
        task = asyncio.create_task(watcher.run())
        await _until(lambda: api.statuses)
        assert applier.applied == [compiled.node_rule_sets["n1"]]
        status = api.statuses[-1]
        assert status["applied"] is True
        assert status["appliedGeneration"] == 1
        assert watcher.applied is not None
        assert status["appliedHash"] == watcher.applied.hash
        # Saved in the background, soon after the apply.
        await _until(lambda: StateStore(tmp_path / "state").load("n1") == watcher.applied)
        # Our own status write comes back as MODIFIED: no new apply, no new write.
        await asyncio.sleep(0.1)
        assert len(applier.applied) == 1
        assert len(api.statuses) == 1
        # Resync runs on its own timer.
        await _until(lambda: applier.resyncs >= 2)
        # 410 on the PeerSet watch: list again.
        lists = api.lists.count("peersets")
        api.queue("peersets").put_nowait(Gone(410, "Expired"))
        await _until(lambda: api.lists.count("peersets") == lists + 1)
        assert watcher.peers.relists_gone == 1
        # A refused generation: status says so, nothing applied, the old state stays.
        bad = copy.deepcopy(node_obj)
        bad["metadata"]["generation"] = 2
        bad["spec"]["policies"][0]["policy"]["name"] = "prod/refuse"
        bad["status"] = api.objects["noderulesets"]["n1"]["status"]
        api.objects["noderulesets"]["n1"] = bad
        api.queue("noderulesets").put_nowait(("MODIFIED", copy.deepcopy(bad)))
        await _until(lambda: api.statuses[-1]["applied"] is False)
        status = api.statuses[-1]
        assert status["error"] == "refused: policy refuse"
        assert status["observedGeneration"] == 2
        assert status["appliedGeneration"] == 1
        assert status["conditions"][0]["reason"] == REASON_REFUSED
        assert len(applier.applied) == 1
        assert watcher.metrics.errors.labels("refused")._value.get() == 1
        watcher.stop()
        await task

    asyncio.run(go())


def test_watcher_restores_when_the_api_is_away(tmp_path: Path, compiled: CompiledCluster) -> None:
    ready = _filled(compiled).assemble()
    assert isinstance(ready, Ready)
    StateStore(tmp_path / "state").save(ready)

    async def go() -> None:
        api = FakeApi()
        api.down = True
        applier = FakeApplier()
        watcher = AgentWatcher(api, applier, _options(tmp_path))
        task = asyncio.create_task(watcher.run())
        await _until(lambda: watcher.restored)
        assert applier.applied == [ready.node]
        assert watcher.applied_from == "disk"
        await _until(lambda: applier.resyncs >= 1)  # drift repair without the API
        # The API comes back with the same content: nothing to apply, status written.
        node_obj, peers = objects_for("n1", compiled)
        api.objects["noderulesets"]["n1"] = node_obj
        api.objects["peersets"] = {p["metadata"]["name"]: p for p in peers}
        api.down = False
        await _until(lambda: api.statuses)
        assert watcher.applied_from == "api"
        assert len(applier.applied) == 1
        assert api.statuses[-1]["applied"] is True
        assert api.statuses[-1]["appliedGeneration"] == 1
        watcher.stop()
        await task

    asyncio.run(go())


def test_watcher_reports_sets_that_never_come(tmp_path: Path, compiled: CompiledCluster) -> None:
    async def go() -> None:
        api = FakeApi()
        node_obj, _ = objects_for("n1", compiled)
        api.objects["noderulesets"]["n1"] = node_obj
        applier = FakeApplier()
        watcher = AgentWatcher(api, applier, _options(tmp_path, restore_after=60))
        task = asyncio.create_task(watcher.run())
        await _until(lambda: api.statuses)
        status = api.statuses[-1]
        assert status["applied"] is False
        assert status["error"].startswith("waiting for PeerSets: ps-")
        assert status["conditions"][0]["reason"] == "PeerSetsIncomplete"
        assert status["appliedGeneration"] is None
        assert applier.applied == []
        watcher.stop()
        await task

    asyncio.run(go())


def _applied_generation(watcher: AgentWatcher, generation: int) -> bool:
    return watcher.applied is not None and watcher.applied.generation == generation


def test_saves_are_coalesced_and_the_last_one_is_written_at_stop(tmp_path: Path) -> None:
    async def go() -> None:
        api = FakeApi()
        first = compile_docs(cluster_docs())
        node_obj, peers = objects_for("n1", first)
        api.objects["noderulesets"]["n1"] = node_obj
        api.objects["peersets"] = {p["metadata"]["name"]: p for p in peers}
        applier = FakeApplier()
        watcher = AgentWatcher(api, applier, _options(tmp_path, save_interval=30.0))
        task = asyncio.create_task(watcher.run())
        await _until(lambda: watcher.saves == 1)
        for gen, ip in ((2, "10.0.2.11"), (3, "10.0.2.12")):
            later = compile_docs(cluster_docs(("10.0.1.10", ip)))
            obj, shards = objects_for("n1", later, generation=gen)
            for shard in shards:
                api.queue("peersets").put_nowait(("MODIFIED", shard))
            api.objects["noderulesets"]["n1"] = obj
            api.queue("noderulesets").put_nowait(("MODIFIED", copy.deepcopy(obj)))
            await _until(functools.partial(_applied_generation, watcher, gen))
        assert watcher.saves == 1  # within the interval: held back, not written twice
        watcher.stop()
        await task
        assert watcher.saves == 2
        assert StateStore(tmp_path / "state").load("n1") == watcher.applied

    asyncio.run(go())


def serving(compiled: CompiledCluster) -> FakeApi:
    """A fake API serving n1's NodeRuleSet and every PeerSet of ``compiled``."""
    api = FakeApi()
    node_obj, peers = objects_for("n1", compiled)
    api.objects["noderulesets"]["n1"] = node_obj
    api.objects["peersets"] = {p["metadata"]["name"]: p for p in peers}
    return api


class NetlinkFailing(FakeApplier):
    """Raises pyroute2's NetlinkError, as the conntrack cut's netlink calls may.

    Applies fail while ``failing`` is set; the first ``resyncs`` resyncs fail.
    """

    def __init__(self, resyncs: int) -> None:
        super().__init__()
        self.failing = True
        self.failed_applies = 0
        self.failing_resyncs = resyncs

    def apply(
        self,
        node: NodeRuleSet,
        peer_sets: Mapping[str, Sequence[PeerSet]],
        pending: Collection[str] = (),
    ) -> ApplyReport:
        if self.failing:
            self.failed_applies += 1
            raise NetlinkError(errno.ENOENT, "No such file or directory")
        return super().apply(node, peer_sets, pending)

    def resync(self) -> ApplyReport:
        if self.failing_resyncs > 0:
            self.failing_resyncs -= 1
            raise NetlinkError(errno.EPERM, "Operation not permitted")
        return super().resync()


def test_a_netlink_error_is_a_kernel_error_retried(
    tmp_path: Path, compiled: CompiledCluster
) -> None:
    """A NetlinkError out of the applier is a failed kernel write: the loop goes on."""

    async def go() -> None:
        api = serving(compiled)
        applier = NetlinkFailing(resyncs=2)
        watcher = AgentWatcher(api, applier, _options(tmp_path, restore_after=60))
        task = asyncio.create_task(watcher.run())
        await _until(lambda: applier.failed_applies >= 2)  # retried after the back-off
        assert watcher.state is not None
        assert watcher.state.reason == REASON_KERNEL
        assert watcher.state.message == "kernel write failed: (2, 'No such file or directory')"
        assert watcher.applied is None
        applier.failing = False
        await _until(lambda: applier.applied == [compiled.node_rule_sets["n1"]])
        await _until(lambda: applier.resyncs >= 1)  # after two failed resyncs
        errors = watcher.metrics.errors.labels("kernel")._value.get()
        assert errors == applier.failed_applies + 2
        assert not task.done()
        watcher.stop()
        await task

    asyncio.run(go())


def test_status_timestamps_come_from_the_injected_wall_clock(
    tmp_path: Path, compiled: CompiledCluster
) -> None:
    async def go() -> None:
        api = serving(compiled)
        watcher = AgentWatcher(api, FakeApplier(), _options(tmp_path), wall=lambda: 1_000_000_000.0)
        task = asyncio.create_task(watcher.run())
        await _until(lambda: api.statuses)
        status = api.statuses[-1]
        assert status["lastSync"] == "2001-09-09T01:46:40Z"
        assert status["conditions"][0]["lastTransitionTime"] == "2001-09-09T01:46:40Z"
        watcher.stop()
        await task

    asyncio.run(go())
