"""The controller's publisher: the plan of writes (tables), coalescing (a fake clock),
and the publisher itself against an in-memory API that counts every call."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from stockade.compiler import Compiler
from stockade.controller.metrics import ControllerMetrics
from stockade.controller.publisher import LeanWrites, Publisher
from stockade.controller.state import ControllerState
from stockade.controller.writes import (
    HASH_ANNOTATION,
    NODE_RULE_SET,
    PEER_SET,
    SET_LABEL,
    Coalescer,
    Desired,
    ObjectKey,
    Write,
    content_hash,
    desired_node,
    desired_peer_set,
    plan_writes,
    published_from_list,
)
from stockade.encoded import Encoded
from stockade.kube import (
    EVENTS,
    NAMESPACES,
    NETWORK_POLICIES,
    NODE_RULE_SETS,
    PODS,
    Conflict,
    JsonObject,
    NotFound,
    Resource,
    Unreachable,
)

# --------------------------------------------------------------------------- objects


def pod(
    name: str,
    node: str,
    ip: str,
    labels: Mapping[str, str] | None = None,
    ns: str = "default",
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {"app": "web"})},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
        "status": {"podIP": ip, "phase": "Running"},
    }


def policy(
    name: str, spec: Mapping[str, Any] | None = None, ns: str = "default", uid: str = ""
) -> dict[str, Any]:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}"},
        "spec": dict(
            spec
            or {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
            }
        ),
    }


def namespace(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}


# --------------------------------------------------------------------------- plan


def _d(h: str) -> Desired:
    return Desired({"h": h}, {}, h)


N1 = ObjectKey(NODE_RULE_SET, "n1")
N2 = ObjectKey(NODE_RULE_SET, "n2")
S1 = ObjectKey(PEER_SET, "ps-a-0")
S2 = ObjectKey(PEER_SET, "ps-b-0")


@pytest.mark.parametrize(
    ("desired", "published", "keys", "want"),
    [
        pytest.param({N1: _d("a")}, {}, [N1], [[("create", N1)]], id="create"),
        pytest.param({N1: _d("b")}, {N1: "a"}, [N1], [[("update", N1)]], id="update"),
        pytest.param({N1: _d("a")}, {N1: "a"}, [N1], [], id="same-hash-no-write"),
        pytest.param({}, {N1: "a"}, [N1], [[("delete", N1)]], id="delete-leftover"),
        pytest.param({}, {}, [N1], [], id="nothing-either-side"),
        pytest.param({N1: _d("b")}, {N1: "a"}, [], [], id="only-given-keys"),
        pytest.param({N1: _d("a")}, {N1: ""}, [N1], [[("update", N1)]], id="no-annotation"),
        pytest.param(
            {N1: _d("a"), S1: _d("s")},
            {N2: "x", S2: "y"},
            [N1, N2, S1, S2],
            [[("create", S1)], [("create", N1)], [("delete", N2)], [("delete", S2)]],
            id="sets-before-rulesets-deletes-after",
        ),
        pytest.param(
            {N1: _d("a"), N2: _d("b")},
            {},
            [N2, N1, N1],
            [[("create", N1), ("create", N2)]],
            id="sorted-deduplicated",
        ),
    ],
)
def test_plan_writes(
    desired: dict[ObjectKey, Desired],
    published: dict[ObjectKey, str],
    keys: list[ObjectKey],
    want: list[list[tuple[str, ObjectKey]]],
) -> None:
    phases = plan_writes(desired, published, keys)
    assert [[(w.verb, w.key) for w in phase] for phase in phases] == want
    for phase in phases:
        for w in phase:
            assert (w.desired is None) == (w.verb == "delete")


def test_bodies_carry_hash_and_labels() -> None:
    d = Desired({"node": "n1"}, {"a": "b"}, "h1")
    assert d.body("n1") == {
        "metadata": {"name": "n1", "labels": {"a": "b"}, "annotations": {HASH_ANNOTATION: "h1"}},
        "spec": {"node": "n1"},
    }
    assert d.patch()["metadata"]["annotations"] == {HASH_ANNOTATION: "h1"}
    assert "name" not in d.patch()["metadata"]
    listed: list[dict[str, Any]] = [
        {"metadata": {"name": "n1", "annotations": {HASH_ANNOTATION: "h1"}}},
        {"metadata": {"name": "n2"}},
    ]
    assert published_from_list(NODE_RULE_SET, listed) == {N1: "h1", N2: ""}
    assert Write("delete", N1).desired is None


# --------------------------------------------------------------------------- coalescing


def test_a_desired_rule_set_keeps_the_compiler_output_not_its_spec() -> None:
    state = ControllerState()
    base_cluster(state)
    changes = state.compiler.flush()
    rs = changes.nodes["n1"]
    assert rs is not None
    want = desired_node(rs)
    assert want.source is rs
    assert json.loads(want.spec_json) == want.spec  # the spec, made again, is the same
    assert want.hash == content_hash(want.spec)
    names = {e["policy"]["name"] for e in want.spec["policies"]}
    assert names
    assert want.policy_names() == names
    ps = next(p for p in changes.peer_sets.values() if p is not None)
    shard = desired_peer_set(ps)
    assert shard.source is ps
    assert shard.hash == content_hash(shard.spec)
    assert shard.policy_names() == set()
    assert _d("x").policy_names() == set()


def test_coalescer_burst_is_one_flush() -> None:
    c = Coalescer(interval=0.2)
    assert c.due_in(0.0) is None
    for i in range(1000):
        c.mark(i * 0.0001)  # 1,000 events within 0.1 s
    assert c.due_in(0.1) == pytest.approx(0.1)
    assert c.due_in(0.2) == 0.0
    c.begin(0.2)
    assert not c.dirty
    assert c.due_in(0.25) is None


def test_coalescer_waits_for_a_burst_to_pause_but_not_forever() -> None:
    c = Coalescer(interval=0.2, quiet=0.05, max_delay=2.0)
    c.mark(0.0)
    assert c.due_in(0.0) == pytest.approx(0.2)  # a lone change: one interval
    for i in range(1, 300):
        c.mark(i * 0.01)  # events every 10 ms for 3 s
        due = c.due_in(i * 0.01)
        assert due is not None
        if i * 0.01 < 1.9:
            assert due > 0.0
    assert c.due_in(2.0) == 0.0  # capped: 2 s after the first event
    c.begin(2.0)
    c.mark(2.5)
    assert c.due_in(2.5) == pytest.approx(0.2)  # then quiet: settle, as before


def test_coalescer_at_most_every_interval() -> None:
    c = Coalescer(interval=0.2, settle=0.0)
    c.mark(0.0)
    assert c.due_in(0.0) == 0.0  # first event after idle, settle 0: now
    c.begin(0.0)
    c.mark(0.01)
    assert c.due_in(0.01) == pytest.approx(0.19)  # not before the interval
    c.begin(0.2)
    c.mark(5.0)
    assert c.due_in(5.0) == 0.0  # long idle: no wait beyond settle


def test_coalescer_retry_backs_off() -> None:
    c = Coalescer(interval=0.2)
    c.begin(1.0)
    c.retry(1.0, 2.0)
    assert c.dirty
    assert c.due_in(1.5) == pytest.approx(1.5)
    c.mark(2.0)  # new events do not shorten the back-off
    assert c.due_in(2.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="negative"):
        Coalescer(-1)


# --------------------------------------------------------------------------- fake API


Calls = list[tuple[str, str, str]]
Names = list[str]
Items = list[JsonObject]


class FakeApi:
    """An in-memory API server for the publisher: objects by (plural, name), a call log."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], JsonObject] = {}
        self.calls: Calls = []  # verb, plural, name
        self.events: Items = []
        self.fail: dict[tuple[str, str], Exception] = {}  # (verb, name) -> error, once
        self.cluster: dict[str, Items] = {}  # watched kinds, for warm-up lists

    def _maybe_fail(self, verb: str, name: str) -> None:
        err = self.fail.pop((verb, name), None)
        if err is not None:
            raise err

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[Items, str]:
        self.calls.append(("list", resource.plural, ""))
        if resource == EVENTS:
            return [copy.deepcopy(e) for e in self.events], "1"
        if resource.plural in self.cluster:
            return copy.deepcopy(self.cluster[resource.plural]), "1"
        items = [
            copy.deepcopy(o) for (p, _), o in sorted(self.objects.items()) if p == resource.plural
        ]
        return items, "1"

    async def create(
        self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        name = body["metadata"]["name"]
        self.calls.append(("create", resource.plural, name))
        self._maybe_fail("create", name)
        if (resource.plural, name) in self.objects:
            raise Conflict(409, "AlreadyExists", name)
        self.objects[(resource.plural, name)] = copy.deepcopy(dict(body))
        return dict(body)

    async def patch_merge(
        self, resource: Resource, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        self.calls.append(("update", resource.plural, name))
        self._maybe_fail("update", name)
        obj = self.objects.get((resource.plural, name))
        if obj is None:
            raise NotFound(404, "NotFound", name)
        obj["metadata"].setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        obj["metadata"]["labels"] = dict(patch["metadata"]["labels"])
        obj["spec"] = copy.deepcopy(patch["spec"])
        return obj

    async def delete(
        self, resource: Resource, name: str, namespace: str | None = None
    ) -> JsonObject:
        self.calls.append(("delete", resource.plural, name))
        self._maybe_fail("delete", name)
        if self.objects.pop((resource.plural, name), None) is None:
            raise NotFound(404, "NotFound", name)
        return {}

    async def patch_status(
        self, resource: Resource, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        self.calls.append(("patch_status", resource.plural, name))
        self._maybe_fail("patch_status", name)
        return {"status": copy.deepcopy(dict(status))}

    async def create_event(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        event_type: str = "Normal",
        component: str = "stockade-controller",
    ) -> JsonObject:
        event = {
            "involvedObject": {"kind": involved["kind"], **involved["metadata"]},
            "reason": reason,
            "message": message,
            "type": event_type,
            "source": {"component": component},
        }
        self.events.append(event)
        return event

    def writes(self) -> Calls:
        return [c for c in self.calls if c[0] in ("create", "update", "delete")]

    def names(self, plural: str) -> Names:
        return sorted(n for p, n in self.objects if p == plural)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    api: FakeApi, leading: bool = True, settle: float = 0.0
) -> tuple[Publisher, ControllerState]:
    """A leading publisher on a fake clock; ``settle``: PolicyApplied settling (0: none)."""
    state = ControllerState()
    pub = Publisher(
        api, state, ControllerMetrics(), interval=0.2, clock=FakeClock(), event_settle=settle
    )
    state.on_change = pub.mark
    pub.ready = True
    state.end_warmup()
    pub.set_leader(leading)
    return pub, state


def flush(pub: Publisher) -> bool:
    return asyncio.run(pub.flush_once())


def feed(state: ControllerState, *objs: dict[str, Any], event: str | None = None) -> None:
    for obj in objs:
        state.observe(obj["kind"], event, obj)


def base_cluster(state: ControllerState) -> None:
    feed(
        state,
        namespace("default"),
        pod("web-1", "n1", "10.0.1.1"),
        pod("web-2", "n2", "10.0.2.1"),
        pod("client", "n2", "10.0.2.2", {"app": "client"}),
        policy("allow-client"),
    )


# --------------------------------------------------------------------------- publisher


def test_first_flush_creates_everything_with_hash_and_labels() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    assert flush(pub)
    assert api.names("noderulesets") == ["n1", "n2"]
    sets = api.names("peersets")
    assert len(sets) == 1
    ps = api.objects[("peersets", sets[0])]
    assert ps["metadata"]["labels"][SET_LABEL] == ps["spec"]["setName"]
    assert ps["spec"]["members"] == [{"pod": "default/client", "ips": ["10.0.2.2"], "port": None}]
    n1 = api.objects[("noderulesets", "n1")]
    assert n1["metadata"]["annotations"][HASH_ANNOTATION]
    assert n1["spec"]["node"] == "n1"
    # The PeerSet is written before the rule sets that name it.
    assert [c[1] for c in api.writes()] == ["peersets", "noderulesets", "noderulesets"]
    assert pub.metrics.write_count() == 3
    assert pub.metrics.write_count(PEER_SET, "create") == 1


def test_bodies_are_sent_encoded_once() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    pub.absorb()
    assert pub.desired
    for key, want in pub.desired.items():
        # The hashed text is the canonical JSON of the spec, and the bodies carry it.
        assert want.hash == content_hash(want.spec)
        assert json.loads(want.spec_json) == want.spec
        for body in (want.body(key.name), want.patch()):
            assert isinstance(body, Encoded)
            assert json.loads(body.text) == dict(body)
    assert flush(pub)
    # Written, the text is dropped (the hash and the spec stay).
    assert all(not want.spec_json for want in pub.desired.values())
    n1 = pub.desired[ObjectKey(NODE_RULE_SET, "n1")]
    assert api.objects[("noderulesets", "n1")]["spec"] == n1.spec


def test_lean_writes_ask_for_metadata_only() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class Client:
        async def create(self, *args: Any, **kwargs: Any) -> JsonObject:
            calls.append(("create", kwargs))
            return {"metadata": {"uid": "u"}}

        async def patch_merge(self, *args: Any, **kwargs: Any) -> JsonObject:
            calls.append(("patch", kwargs))
            return {"metadata": {"uid": "u"}}

    lean = LeanWrites(Client())  # type: ignore[arg-type]

    async def go() -> None:
        await lean.create(NODE_RULE_SETS, {"metadata": {"name": "n1"}})
        await lean.patch_merge(NODE_RULE_SETS, "n1", {"spec": {}})

    asyncio.run(go())
    assert calls == [("create", {"metadata_only": True}), ("patch", {"metadata_only": True})]


def test_nothing_changed_nothing_written() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    flush(pub)
    before = len(api.writes())
    feed(state, pod("web-1", "n1", "10.0.1.1"))  # the same pod again (a resync)
    flush(pub)
    assert len(api.writes()) == before


def test_pod_churn_touches_only_what_changes() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    flush(pub)
    api.calls.clear()
    # A second client pod on n1: the peer set changes, and n1's rule set only in its
    # list of known pods; n2's rule set not at all.
    feed(state, pod("client-2", "n1", "10.0.1.9", {"app": "client"}))
    flush(pub)
    writes = api.writes()
    assert sorted((v, p) for v, p, _ in writes) == [
        ("update", "noderulesets"),
        ("update", "peersets"),
    ]
    assert ("update", "noderulesets", "n1") in writes
    api.calls.clear()
    # Relabelling a pod that no policy selects, on the same IP: nothing is written.
    feed(state, pod("client-2", "n1", "10.0.1.9", {"app": "client", "tier": "x"}))
    flush(pub)
    assert api.writes() == []
    api.calls.clear()
    # Relabel web-2 so the policy no longer selects it: only n2's rule set changes.
    feed(state, pod("web-2", "n2", "10.0.2.1", {"app": "other"}))
    flush(pub)
    assert api.writes() == [("update", "noderulesets", "n2")]
    assert api.objects[("noderulesets", "n2")]["spec"]["policies"] == []


def test_burst_of_1000_pods_is_one_write_per_object() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    flush(pub)
    api.calls.clear()
    for i in range(1000):
        node = f"n{1 + i % 2}"
        feed(state, pod(f"c-{i}", node, f"10.1.{i // 250}.{i % 250 + 1}", {"app": "client"}))
    flush(pub)
    writes = api.writes()
    # The peer set of clients (now sharded) changes, and each node's rule set in its
    # list of known pods: one write per object however many pods came.
    assert {(p, n) for _, p, n in writes if p == "noderulesets"} == {
        ("noderulesets", "n1"),
        ("noderulesets", "n2"),
    }
    assert len(writes) == len({n for _, _, n in writes})  # one write per object
    assert len(writes) <= 5


def test_unscheduled_pods_have_no_rule_set() -> None:
    api = FakeApi()
    pub, state = make(api)
    feed(state, policy("allow-client"), pod("pending", "", "10.0.0.5"))
    flush(pub)
    assert api.names("noderulesets") == []


def test_policy_deleted_and_pods_gone_remove_objects() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    flush(pub)
    feed(state, policy("allow-client"), event="DELETED")
    flush(pub)
    assert api.names("peersets") == []
    assert api.objects[("noderulesets", "n1")]["spec"]["policies"] == []
    feed(state, pod("web-1", "n1", "10.0.1.1"), event="DELETED")
    flush(pub)
    assert api.names("noderulesets") == ["n2"]


def test_restart_adopts_without_churn_and_cleans_leftovers() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    flush(pub)
    # A leftover from some earlier state, and one object edited behind our back.
    api.objects[("noderulesets", "gone-node")] = {"metadata": {"name": "gone-node"}, "spec": {}}
    api.calls.clear()
    # A fresh controller with the same cluster: only the leftover goes.
    pub2, state2 = make(api)
    base_cluster(state2)
    flush(pub2)
    assert api.writes() == [("delete", "noderulesets", "gone-node")]
    # Again, with nothing left over: zero writes, zero Events.
    events = len(api.events)
    api.calls.clear()
    pub3, state3 = make(api)
    base_cluster(state3)
    flush(pub3)
    assert api.writes() == []
    assert len(api.events) == events


class PagedFakeApi(FakeApi):
    """Lists in pages of the size asked for; records the sizes asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.page_sizes: dict[str, int] = {}

    async def list_pages(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        prefetch: bool = True,
        limit: int = 500,
    ) -> AsyncIterator[tuple[Items, str]]:
        items, version = await self.list(resource)
        self.page_sizes[resource.plural] = limit
        for start in range(0, len(items), limit):
            yield items[start : start + limit], version


def test_a_restart_adopts_page_by_page_without_churn() -> None:
    api = PagedFakeApi()
    pub, state = make(api)
    _spread(state, 120)
    assert flush(pub)
    api.objects[("noderulesets", "gone-node")] = {"metadata": {"name": "gone-node"}, "spec": {}}
    api.calls.clear()
    pub2, state2 = make(api)
    _spread(state2, 120)
    assert flush(pub2)
    assert api.page_sizes["noderulesets"] < 121  # more than one page of rule sets
    assert api.writes() == [("delete", "noderulesets", "gone-node")]
    assert pub2.published is not None
    assert len([k for k in pub2.published if k.kind == NODE_RULE_SET]) == 120


def test_changed_while_down_is_rewritten_on_restart() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    flush(pub)
    api.calls.clear()
    pub2, state2 = make(api)
    base_cluster(state2)
    feed(state2, pod("web-1", "n1", "10.0.1.1"), event="DELETED")
    flush(pub2)
    assert api.writes() == [("delete", "noderulesets", "n1")]


def test_failed_phase_stops_later_phases_and_retries() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    pub.absorb()
    ps_name = next(k.name for k in pub.desired if k.kind == PEER_SET)
    api.fail[("create", ps_name)] = Unreachable("boom")
    assert not flush(pub)
    assert api.names("noderulesets") == []  # no rule set refers to a missing set
    assert pub.coalescer.dirty
    assert not pub.healthy()
    assert flush(pub)
    assert api.names("noderulesets") == ["n1", "n2"]
    assert api.names("peersets") == [ps_name]
    assert pub.healthy()
    assert pub.metrics.dirty_backlog._value.get() == 0


def _spread(state: ControllerState, nodes: int) -> None:
    """A web pod on each of ``nodes`` nodes, a client, a policy between them."""
    web = [pod(f"web-{i}", f"n{i:02}", f"10.0.{i}.1") for i in range(nodes)]
    feed(state, namespace("default"), *web, pod("client", "n00", "10.0.0.2", {"app": "client"}))
    feed(state, policy("allow-client"))


def test_rule_sets_are_encoded_while_the_peer_sets_go_out_and_written_after_them() -> None:
    api = FakeApi()
    pub, state = make(api)
    _spread(state, 60)
    create = api.create

    async def slow_create(
        resource: Resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        if resource.plural == "peersets":
            await asyncio.sleep(0.01)  # the API server takes its time
        return await create(resource, body, namespace)

    api.create = slow_create  # type: ignore[method-assign]
    seen: list[tuple[int, int]] = []  # (PeerSets, rule sets) written at each step
    absorb = pub._absorb_nodes

    def counting(nodes: Any, *rest: Any) -> None:
        kinds = [c[1] for c in api.writes()]
        seen.append((kinds.count("peersets"), kinds.count("noderulesets")))
        absorb(nodes, *rest)

    pub._absorb_nodes = counting  # type: ignore[method-assign,assignment]
    assert flush(pub)
    # Rule sets were taken in a few at a time, the first ones while the PeerSet was
    # being written, the last ones while the first rule sets were.
    assert seen[0] == (0, 0)
    assert seen[-1][0] == 1
    assert seen[-1][1] > 0
    kinds = [c[1] for c in api.writes()]
    assert kinds == ["peersets"] + ["noderulesets"] * 60
    assert api.names("noderulesets") == [f"n{i:02}" for i in range(60)]
    assert not pub.pending


def test_peer_sets_go_out_as_they_are_encoded() -> None:
    api = FakeApi()
    pub, _ = make(api)
    # Shards of one member: a PeerSet per web pod, many more than one step's worth.
    state = ControllerState(Compiler(shard_size=1))
    pub.state = state
    state.on_change = pub.mark
    state.end_warmup()
    _spread(state, 40)
    clients = [pod(f"client-{i}", "n00", f"10.1.0.{i}", {"app": "client"}) for i in range(40)]
    feed(state, *clients)
    seen: list[int] = []  # PeerSets written before each step was taken in
    absorb = pub._absorb_shards

    def counting(shards: Any) -> set[str]:
        seen.append(sum(1 for c in api.writes() if c[1] == "peersets"))
        return absorb(shards)

    pub._absorb_shards = counting  # type: ignore[method-assign]
    assert flush(pub)
    shards = len(api.names("peersets"))
    assert shards > 20
    assert seen[0] == 0
    assert 0 < seen[-2] < shards  # the last step's, after its writes (none left)
    kinds = [c[1] for c in api.writes()]
    assert kinds == ["peersets"] * shards + ["noderulesets"] * 40
    assert not pub.pending


def test_a_peer_set_that_fails_holds_back_the_rule_sets_of_its_flush() -> None:
    api = FakeApi()
    pub, state = make(api)
    _spread(state, 10)
    assert not pub.desired  # nothing taken in before the flush
    failing = {"created": False}
    create = api.create

    async def failing_create(
        resource: Resource, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        if resource.plural == "peersets" and not failing["created"]:
            failing["created"] = True
            api.calls.append(("create", resource.plural, body["metadata"]["name"]))
            raise Unreachable("boom")
        return await create(resource, body, namespace)

    api.create = failing_create  # type: ignore[method-assign]
    assert not flush(pub)
    assert api.names("noderulesets") == []  # no rule set refers to a missing set
    # Every rule set is desired all the same, and written by the retry.
    assert len([k for k in pub.desired if k.kind == NODE_RULE_SET]) == 10
    assert flush(pub)
    assert api.names("noderulesets") == [f"n{i:02}" for i in range(10)]
    assert len(api.names("peersets")) == 1


def test_create_conflict_and_update_not_found_recover() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    flush(pub)
    # Someone deleted n1 behind our back, someone else created what we will create.
    del api.objects[("noderulesets", "n1")]
    api.objects[("noderulesets", "n3")] = {"metadata": {"name": "n3"}, "spec": {}}
    feed(state, pod("web-1", "n1", "10.0.1.7"), pod("web-3", "n3", "10.0.3.1"))
    flush(pub)
    assert api.objects[("noderulesets", "n1")]["spec"]["pods"][0]["ips"] == ["10.0.1.7"]
    assert api.objects[("noderulesets", "n3")]["spec"]["node"] == "n3"


def test_standby_writes_nothing_and_adopts_on_takeover() -> None:
    api = FakeApi()
    pub, state = make(api, leading=False)
    base_cluster(state)
    flush(pub)
    assert api.calls == []
    pub.set_leader(True)
    flush(pub)
    assert api.names("noderulesets") == ["n1", "n2"]
    assert ("list", "noderulesets", "") in api.calls
    pub.set_leader(False)
    assert pub.published is None


def test_events_applied_once_and_on_change() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    flush(pub)
    applied = [e for e in api.events if e["reason"] == "PolicyApplied"]
    assert [e["message"] for e in applied] == ["applied on 2 of 2 nodes selecting 2 pods"]
    assert applied[0]["involvedObject"]["uid"] == "uid-allow-client"
    flush(pub)
    feed(state, pod("client-2", "n1", "10.0.1.9", {"app": "client"}))
    flush(pub)
    assert len(api.events) == 1  # a peer change does not move the numbers
    feed(state, pod("web-3", "n1", "10.0.1.3"))
    flush(pub)
    assert api.events[-1]["message"] == "applied on 2 of 2 nodes selecting 3 pods"


def test_invalid_policy_is_reported_and_others_keep_applying() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    bad = policy(
        "bad",
        {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}], "ports": [{"port": 0}]}],
        },
    )
    error = state.observe("NetworkPolicy", None, bad)
    assert error is not None
    flush(pub)
    warnings = [e for e in api.events if e["type"] == "Warning"]
    assert len(warnings) == 1
    msg = warnings[0]["message"]
    assert warnings[0]["reason"] == "PolicyRejected"
    assert "spec.ingress[0].from[0].ipBlock.cidr" in msg
    assert "spec.ingress[0].ports[0].port" in msg
    assert "\n" not in msg
    # The valid policy is still enforced; the invalid one is not.
    names = [p["policy"]["name"] for p in api.objects[("noderulesets", "n1")]["spec"]["policies"]]
    assert names == ["default/allow-client"]
    # Reported once, not at every flush.
    feed(state, pod("web-9", "n1", "10.0.1.99"))
    flush(pub)
    assert len([e for e in api.events if e["type"] == "Warning"]) == 1


def test_valid_policy_turned_invalid_keeps_its_last_valid_version() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    flush(pub)
    before = api.objects[("noderulesets", "n1")]["spec"]["policies"]
    assert before
    feed(state, policy("allow-client", {"podSelector": {}, "ingress": "nope"}))
    flush(pub)
    # A rejected update never opens traffic: the last valid version stays in force.
    assert api.objects[("noderulesets", "n1")]["spec"]["policies"] == before
    assert api.events[-1]["reason"] == "PolicyRejected"


def test_named_port_warnings() -> None:
    api = FakeApi()
    pub, state = make(api)
    web_port = [{"name": "http", "containerPort": 8080}]
    feed(
        state,
        pod("web-1", "n1", "10.0.1.1", ports=web_port),
        policy(
            "named",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"ports": [{"port": "http"}, {"port": "metrics"}]}],
                "egress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}],
            },
        ),
    )
    flush(pub)
    warnings = sorted(e["message"] for e in api.events if e["type"] == "Warning")
    assert warnings == [
        "egress rule 0: no pod declares port dns/UDP; the rule allows nothing on it",
        "ingress rule 0: no selected pod declares port metrics/TCP; the rule allows nothing on it",
    ]
    # A pod declaring dns/UDP appears: the egress warning is not repeated, nothing new.
    feed(
        state,
        pod(
            "dns",
            "n2",
            "10.0.2.53",
            {"app": "dns"},
            ports=[{"name": "dns", "containerPort": 53, "protocol": "UDP"}],
        ),
    )
    count = len(api.events)
    flush(pub)
    assert len(api.events) == count


def test_warm_up_waits_for_every_listed_object() -> None:
    api = FakeApi()
    state = ControllerState()
    pub = Publisher(api, state, ControllerMetrics(), interval=0.01, warmup_relist=0.05)
    api.cluster = {
        PODS.plural: [pod("web-1", "n1", "10.0.1.1"), pod("gone", "n1", "10.0.1.2")],
        NAMESPACES.plural: [namespace("default")],
        NETWORK_POLICIES.plural: [policy("allow-client")],
    }

    async def go() -> None:
        task = asyncio.create_task(pub.warm_up())
        await asyncio.sleep(0.02)
        assert not task.done()
        feed(state, namespace("default"), policy("allow-client"), pod("web-1", "n1", "10.0.1.1"))
        await asyncio.sleep(0.02)
        assert not task.done()  # "gone" was listed but never delivered
        api.cluster[PODS.plural] = [pod("web-1", "n1", "10.0.1.1")]  # it was deleted
        await asyncio.wait_for(task, 2)
        assert pub.ready

    asyncio.run(go())
    assert state.missing({("Pod", "default/x")}) == set()


def test_warm_up_waits_for_a_feed_without_listing_its_kind() -> None:
    """The Pods come from a feed that lists them itself: the warm-up lists only the
    other kinds, and waits until the feed says its list is in."""
    api = FakeApi()
    state = ControllerState()
    pub = Publisher(api, state, ControllerMetrics(), interval=0.01, warmup_relist=0.05)
    synced = [False]
    pub.listed_by_feed["Pod"] = lambda: synced[0]
    api.cluster = {
        PODS.plural: [pod("never-delivered", "n1", "10.0.1.9")],
        NAMESPACES.plural: [namespace("default")],
        NETWORK_POLICIES.plural: [policy("allow-client")],
    }

    async def go() -> None:
        task = asyncio.create_task(pub.warm_up())
        feed(state, namespace("default"), policy("allow-client"))
        await asyncio.sleep(0.05)
        assert not task.done()  # everything listed is in, but the feed is not synced
        synced[0] = True
        await asyncio.wait_for(task, 2)
        assert pub.ready

    asyncio.run(go())
    assert ("list", PODS.plural, "") not in api.calls


def test_a_reused_address_is_reported_on_the_pod_once() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    flush(pub)
    old = pod("web-1", "n1", "10.0.1.1")
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    feed(state, old, event="MODIFIED")
    newcomer = pod("vault", "n1", "10.0.1.1", {"app": "vault"})
    newcomer["metadata"]["uid"] = "uid-vault"
    feed(state, newcomer)
    flush(pub)
    warned = [e for e in api.events if e["reason"] == "PodIPConflict"]
    assert [e["involvedObject"]["name"] for e in warned] == ["vault"]
    assert "belongs to default/vault" in warned[0]["message"]
    # The address left web-1's peer and target sets: it is the vault's now.
    spec = api.objects[("noderulesets", "n1")]["spec"]
    assert {p["name"]: p["ips"] for p in spec["pods"]} == {}
    feed(state, newcomer, event="MODIFIED")
    flush(pub)
    assert len([e for e in api.events if e["reason"] == "PodIPConflict"]) == 1


def test_an_unreadable_pod_is_denied_not_opened() -> None:
    api = FakeApi()
    pub, state = make(api)
    base_cluster(state)
    bad = pod("web-1", "n1", "10.0.1.1")
    bad["spec"]["hostNetwork"] = "false"
    error = state.observe("Pod", "MODIFIED", bad)
    assert error is not None
    flush(pub)
    spec = api.objects[("noderulesets", "n1")]["spec"]
    assert spec["contestedIps"] == ["10.0.1.1"]
    assert all(p["name"] != "default/web-1" for p in spec["pods"])
    rejected = [e for e in api.events if e["reason"] == "PodRejected"]
    assert len(rejected) == 1
    assert "spec.hostNetwork" in rejected[0]["message"]


def _applied(api: FakeApi) -> list[str]:
    return [e["message"] for e in api.events if e["reason"] == "PolicyApplied"]


def test_a_burst_posts_one_policy_applied_with_the_settled_counts() -> None:
    api = FakeApi()
    pub, state = make(api, settle=1.0)
    clock = pub.clock
    assert isinstance(clock, FakeClock)
    base_cluster(state)
    flush(pub)
    assert _applied(api) == []  # the counts were just seen: held
    # The burst goes on: the counts move at every flush, the Event waits.
    for i in range(3, 6):
        clock.now += 0.5
        feed(state, pod(f"web-{i}", "n1", f"10.0.1.{i}"))
        flush(pub)
        assert not pub._requeue_settled(clock.now)
    assert _applied(api) == []
    # Quiet for the settle time: one Event, with where the burst ended.
    clock.now += 1.0
    assert pub._requeue_settled(clock.now)
    flush(pub)
    assert _applied(api) == ["applied on 2 of 2 nodes selecting 5 pods"]
    # Nothing more: not again, and not held any more.
    clock.now += 5
    assert not pub._requeue_settled(clock.now)
    flush(pub)
    assert len(_applied(api)) == 1


def test_warnings_are_never_held() -> None:
    api = FakeApi()
    pub, state = make(api, settle=60.0)
    base_cluster(state)
    bad = policy(
        "bad", {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Sideways"]}
    )
    feed(state, bad)
    flush(pub)
    assert [e["reason"] for e in api.events] == ["PolicyRejected"]


def test_counts_back_where_they_were_post_nothing() -> None:
    api = FakeApi()
    pub, state = make(api, settle=1.0)
    clock = pub.clock
    assert isinstance(clock, FakeClock)
    base_cluster(state)
    flush(pub)
    clock.now += 1.0
    pub._requeue_settled(clock.now)
    flush(pub)
    assert _applied(api) == ["applied on 2 of 2 nodes selecting 2 pods"]
    # A pod comes and goes within the settle time: the Event is as posted.
    feed(state, pod("web-9", "n1", "10.0.1.9"))
    flush(pub)
    feed(state, pod("web-9", "n1", "10.0.1.9"), event="DELETED")
    flush(pub)
    clock.now += 2.0
    pub._requeue_settled(clock.now)
    flush(pub)
    assert _applied(api) == ["applied on 2 of 2 nodes selecting 2 pods"]
