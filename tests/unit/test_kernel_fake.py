"""The applier against a stateful fake kernel: write order, no-op applies, refusals.

The fake (tests/unit/fake_kernel.py) refuses what the kernel refuses, so these tests
check the order the applier promises (sets first, then one restore per family,
stale sets last: docs/dataplane.md, "Writing it") without root: a write out of
order fails here as it would on a node. The first tests prove the fake can fail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.agent.applier import Applier, RefusedError
from stockade.agent.backend import Tools
from stockade.agent.cli import compile_bundle
from stockade.agent.executor import CommandError
from stockade.agent.ipsets import IPFamily, IPSet, MemberChange, SetType, member_key, render_sets
from stockade.agent.kernel import KernelFlows, KernelSets, SystemKernel, channels
from stockade.agent.live import (
    CHAIN_PREFIX,
    SET_PREFIX,
    LiveSet,
    desired_table,
    jump_line,
    parse_ipset_save,
    parse_iptables_save,
    set_members,
)
from stockade.agent.netlink import ConntrackTable, Flow, NetlinkSets, parse_conntrack_list
from stockade.agent.plan import make_plan, restore_text
from stockade.agent.render import FORWARD_JUMP, INPUT_JUMP, RenderedNode, RenderOptions, render
from stockade.cluster import parse_documents
from stockade.compiler import compile_cluster
from stockade.ruleset import NodeRuleSet, PeerMember, PeerSet
from tests.unit.fake_kernel import Call, FakeKernel, FakeSet
from tests.unit.strategies import cluster_docs, tiered_cluster_docs

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = str(ROOT / "tests/unit/data/conformance.yaml")
RESTORE = ["iptables-nft-restore", "--noflush"]
PeerSets = Mapping[str, Sequence[PeerSet]]


def _applier(kernel: FakeKernel, **kw: Any) -> Applier:
    """An applier writing to ``kernel`` only (no subprocess, no netlink socket)."""
    options: dict[str, Any] = {"tools": Tools("nft"), "families": (4, 6), **kw}
    return Applier(kernel, kernel=kernel, **options)


def _bundle() -> tuple[NodeRuleSet, dict[str, tuple[PeerSet, ...]]]:
    bundle = compile_bundle([CLUSTER], "n1")
    return bundle.node, {name: tuple(shards) for name, shards in bundle.peer_sets.items()}


def _fewer_policies(node: NodeRuleSet, peer_sets: PeerSets) -> tuple[NodeRuleSet, PeerSets]:
    """``node`` without its first policy (and the peer sets only that one named)."""
    smaller = replace(node, policies=node.policies[1:])
    rendered = render(smaller, peer_sets, options=RenderOptions())
    assert rendered != render(node, peer_sets, options=RenderOptions())
    return smaller, peer_sets


def _runs(kernel: FakeKernel) -> list[Call]:
    """The commands run (reads and writes), as opposed to netlink and conntrack calls."""
    return [c for c in kernel.calls if c.method == "run"]


def _fake_sets_text(kernel: FakeKernel) -> str:
    """The kernel's sets as ``render_sets`` lists them (by name, members in set order)."""
    sets = [s for s in kernel.sets.values() if s.name.startswith(SET_PREFIX)]
    lines: list[str] = []
    for s in sorted(sets, key=lambda s: s.name):
        version: IPFamily = 4 if s.family == "inet" else 6
        kind = cast(SetType, s.type)
        lines.append(f"create {s.name} {s.type} family {s.family} maxelem {s.maxelem} -exist")
        lines.append(f"flush {s.name}")
        ordered = sorted(s.members, key=lambda v: member_key(kind, version, v))
        lines += [f"add {s.name} {v}{' nomatch' if s.members[v] else ''}" for v in ordered]
    return "\n".join(lines) + ("\n" if lines else "")


def assert_holds(kernel: FakeKernel, rendered: RenderedNode) -> None:
    """The kernel holds exactly ``rendered``: chains, hooks and sets, text for text."""
    for family in (4, 6):
        fam = rendered.family(family)
        live = parse_iptables_save(kernel.iptables_save(family))
        want = desired_table(fam)
        assert live.chains == want
        ordered = {name: live.chains[name] for name in want}
        assert restore_text(ordered) == fam.restore_text()
        ours = [line for line in live.forward if CHAIN_PREFIX in line]
        assert ours == [jump_line(rendered.forward_jump)]
        assert live.forward[0] == jump_line(rendered.forward_jump)
        hooks = [line for line in live.input if CHAIN_PREFIX in line]
        wanted = [jump_line(rendered.input_jump, "INPUT")] if rendered.input_jump else []
        assert hooks == wanted
    both: list[IPSet] = [*rendered.v4.ipsets, *rendered.v6.ipsets]
    assert _fake_sets_text(kernel) == render_sets(both)
    saved = parse_ipset_save(kernel.ipset_save())
    assert saved == {
        s.name: LiveSet(s.name, s.type, s.family, set_members(s), s.maxelem) for s in both
    }


def _state(kernel: FakeKernel) -> tuple[str, str, str]:
    return kernel.iptables_save(4), kernel.iptables_save(6), kernel.ipset_save()


# --------------------------------------------------------------------- the seam


def test_the_real_kernel_is_built_from_executor_and_netns_as_before() -> None:
    fake = FakeKernel()
    applier = Applier(fake, netns="ns1", tools=Tools("nft"))
    assert isinstance(applier.kernel, SystemKernel)
    assert applier.executor is fake
    assert isinstance(applier.netlink, NetlinkSets)
    assert applier.netlink.netns == "ns1"
    assert isinstance(applier.conntrack, ConntrackTable)
    assert applier.conntrack.netns == "ns1"
    kernel = SystemKernel.of(fake, "ns2")
    assert channels(kernel) == (fake, kernel.netlink, kernel.conntrack)


def test_a_given_kernel_carries_every_command_change_and_flow() -> None:
    fake = FakeKernel()
    applier = _applier(fake)
    assert applier.executor is fake
    assert isinstance(applier.netlink, KernelSets)
    assert isinstance(applier.conntrack, KernelFlows)
    fake.conntrack = [
        Flow(4, "TCP", "10.0.0.1", "10.0.0.2", 1, 80),
        Flow(6, "UDP", "::1", "::2", 1, 53),
    ]
    applier.conntrack.families = (4,)
    assert [f.family for f in applier.conntrack.flows()] == [4]
    assert applier.conntrack.delete(fake.conntrack[:1]) == 1
    assert [c.method for c in fake.calls] == ["flows", "delete_flows"]


def test_backend_and_family_detection_go_through_the_kernel_too() -> None:
    fake = FakeKernel()
    node, peer_sets = _bundle()
    applier = Applier(fake, kernel=fake, cut_conntrack=False)
    applier.apply(node, peer_sets)
    assert applier.tools.backend == "nft"  # an empty node: the wrapper's tie goes to nft
    assert any(c.tool == "iptables-legacy-save" for c in fake.calls)
    assert applier.last is not None
    assert_holds(fake, applier.last.rendered)


# --------------------------------------------------------------------- applies


def test_a_first_apply_writes_sets_then_one_restore_per_family() -> None:
    fake = FakeKernel()
    node, peer_sets = _bundle()
    report = _applier(fake).apply(node, peer_sets)
    writes = fake.writes()
    assert [c.tool for c in writes] == ["ipset", "iptables-nft-restore", "ip6tables-nft-restore"]
    assert all("--noflush" in c.argv for c in writes[1:])
    assert report.iptables_restores == 2
    assert report.destroyed_sets == 0
    assert all(c.error is None for c in fake.calls)
    assert_holds(fake, render(node, peer_sets, options=RenderOptions()))


def test_a_second_apply_of_the_same_state_writes_nothing() -> None:
    fake = FakeKernel()
    node, peer_sets = _bundle()
    applier = _applier(fake)
    applier.apply(node, peer_sets)
    before = _state(fake)
    fake.calls.clear()
    assert not applier.apply(node, peer_sets).changed
    assert fake.calls == []  # the same applier: not even a read
    fresh = _applier(fake)  # a restarted agent: reads, finds it all there
    report = fresh.apply(node, peer_sets)
    assert not report.changed
    assert fake.writes() == []
    assert [c.tool for c in fake.calls] == ["iptables-nft-save", "ip6tables-nft-save", "ipset"]
    assert fresh.verify() == []
    assert _state(fake) == before


def test_sets_come_before_the_rules_that_use_them_and_go_after_the_last_one() -> None:
    fake = FakeKernel()
    node, peer_sets = _bundle()
    small, small_sets = _fewer_policies(node, peer_sets)
    applier = _applier(fake)
    applier.apply(small, small_sets)
    small_names = set(fake.sets)
    fake.calls.clear()
    # Growing: the new sets are created (and filled) before the restores naming them.
    applier.apply(node, peer_sets)
    writes = fake.writes()
    assert [c.tool for c in writes] == ["ipset", "iptables-nft-restore", "ip6tables-nft-restore"]
    created = {line.split()[1] for line in (writes[0].stdin or "").splitlines()}
    assert created == set(fake.sets) - small_names
    assert created
    assert_holds(fake, render(node, peer_sets, options=RenderOptions()))
    big_chains = set(parse_iptables_save(fake.iptables_save(4)).chains)
    fake.calls.clear()
    # Shrinking: one restore per family drops the stale chains, then the stale sets go.
    applier.apply(small, small_sets)
    writes = fake.writes()
    assert [c.tool for c in writes] == ["iptables-nft-restore", "ip6tables-nft-restore", "ipset"]
    stale = set(big_chains) - set(parse_iptables_save(fake.iptables_save(4)).chains)
    assert stale
    assert all(f"-X {name}" in (writes[0].stdin or "") for name in stale)
    destroyed = {line.split()[1] for line in (writes[2].stdin or "").splitlines()}
    assert destroyed == created
    assert all(line.startswith("destroy ") for line in (writes[2].stdin or "").splitlines())
    assert_holds(fake, render(small, small_sets, options=RenderOptions()))


def _grown(peer_sets: PeerSets, member: PeerMember) -> dict[str, tuple[PeerSet, ...]]:
    """Every plain (no named port) peer set with ``member`` added to its first shard."""
    out = {name: tuple(shards) for name, shards in peer_sets.items()}
    for name, shards in out.items():
        if shards[0].selector.named_port is None:
            first, *rest = shards
            out[name] = (replace(first, members=(*first.members, member)), *rest)
    return out


def test_member_churn_goes_through_netlink_only() -> None:
    fake = FakeKernel()
    node, peer_sets = _bundle()
    applier = _applier(fake, cut_conntrack=True)
    applier.apply(node, peer_sets)
    fake.calls.clear()
    grown = _grown(peer_sets, PeerMember("x/new", ("10.99.0.1", "fd00::99:1")))
    report = applier.apply(node, grown)
    assert report.changed
    assert _runs(fake) == []  # no subprocess at all, not even a read
    assert [c.method for c in fake.calls] == ["change_members"]
    assert all(c.add for c in fake.calls[0].changes)
    assert_holds(fake, render(node, grown, options=RenderOptions()))
    fake.calls.clear()
    # and back: deletes, then a look at conntrack for the removed addresses
    applier.apply(node, peer_sets)
    assert _runs(fake) == []
    assert [c.method for c in fake.calls] == ["change_members", "flows"]
    assert not any(c.add for c in fake.calls[0].changes)
    assert_holds(fake, render(node, peer_sets, options=RenderOptions()))


def test_a_small_drift_found_by_a_full_apply_is_repaired_by_netlink() -> None:
    fake = FakeKernel()
    node, peer_sets = _bundle()
    _applier(fake).apply(node, peer_sets)
    grown = _grown(peer_sets, PeerMember("x/new", ("10.99.0.1",)))
    fake.calls.clear()
    _applier(fake).apply(node, grown)  # a fresh applier: reads, then member deltas
    assert [c.method for c in fake.writes()] == ["change_members"]
    assert_holds(fake, render(node, grown, options=RenderOptions()))


def test_a_refused_rule_set_leaves_the_previous_state() -> None:
    fake = FakeKernel()
    node, peer_sets = _bundle()
    applier = _applier(fake)
    applier.apply(node, peer_sets)
    before, last = _state(fake), applier.last
    fake.calls.clear()
    missing = dict(list(peer_sets.items())[1:])
    with pytest.raises(RefusedError, match="refused"):
        applier.apply(node, missing)
    assert fake.calls == []
    assert _state(fake) == before
    assert applier.last is last


def test_a_restore_the_kernel_refuses_leaves_the_previous_rules() -> None:
    fake = FakeKernel()
    node, peer_sets = _bundle()
    small, small_sets = _fewer_policies(node, peer_sets)
    applier = _applier(fake)
    applier.apply(node, peer_sets)
    stale = sorted(
        set(parse_iptables_save(fake.iptables_save(4)).chains)
        - set(desired_table(render(small, small_sets, options=RenderOptions()).v4))
    )[0]
    # Someone else's rule jumps to a chain stockade is about to delete: the kernel
    # refuses the -X, so the whole IPv4 restore, and the sets stay.
    fake.preload(RESTORE, f"*filter\n:KUBE-X - [0:0]\n-A KUBE-X -j {stale}\nCOMMIT\n")
    before, last = _state(fake), applier.last
    with pytest.raises(CommandError, match="Too many links"):
        applier.apply(small, small_sets)
    assert fake.iptables_save(4) == before[0]
    assert fake.ipset_save() == before[2]  # stale sets are destroyed only after the rules
    assert applier.last is last


# --------------------------------------------------------------------- the fake refuses


def _fake_with_set(name: str = "stk-a", kind: str = "hash:ip") -> FakeKernel:
    fake = FakeKernel()
    fake.run(["ipset", "restore"], f"create {name} {kind} family inet maxelem 8 -exist\n")
    return fake


def _restore(fake: FakeKernel, *lines: str, family: int = 4) -> None:
    tool = "iptables-nft-restore" if family == 4 else "ip6tables-nft-restore"
    fake.run([tool, "--noflush"], "\n".join(["*filter", *lines, "COMMIT"]) + "\n")


def test_the_fake_refuses_a_rule_naming_a_missing_set() -> None:
    fake = FakeKernel()
    with pytest.raises(CommandError, match="Set stk-a doesn't exist") as err:
        _restore(fake, ":STK-A - [0:0]", "-A STK-A -m set --match-set stk-a src -j RETURN")
    assert err.value.argv == RESTORE
    assert "STK-A" not in fake.iptables_save(4)  # nothing of the restore applied
    assert fake.calls[-1].error is not None


def test_the_fake_refuses_a_rule_naming_a_set_of_the_other_family() -> None:
    fake = _fake_with_set()
    with pytest.raises(CommandError, match="family inet"):
        _restore(
            fake, ":STK-A - [0:0]", "-A STK-A -m set --match-set stk-a src -j RETURN", family=6
        )


def test_the_fake_refuses_to_destroy_a_set_in_use() -> None:
    fake = _fake_with_set()
    _restore(fake, ":STK-A - [0:0]", "-A STK-A -m set --match-set stk-a src -j RETURN")
    with pytest.raises(CommandError, match="in use by a kernel component"):
        fake.run(["ipset", "restore"], "destroy stk-a\n")
    assert "stk-a" in fake.sets
    _restore(fake, ":STK-A - [0:0]")  # flushed: no rule names it any more
    fake.run(["ipset", "restore"], "destroy stk-a\n")
    assert "stk-a" not in fake.sets


def test_the_fake_refuses_to_swap_in_a_set_of_another_type() -> None:
    fake = _fake_with_set()
    _restore(fake, ":STK-A - [0:0]", "-A STK-A -m set --match-set stk-a src -j RETURN")
    fake.run(["ipset", "restore"], "create stk-a-tmp hash:net family inet maxelem 8\n")
    with pytest.raises(CommandError, match="type does not match"):
        fake.run(["ipset", "restore"], "swap stk-a-tmp stk-a\n")
    assert fake.sets["stk-a"].type == "hash:ip"


def test_the_fake_refuses_to_delete_a_chain_in_use() -> None:
    fake = FakeKernel()
    _restore(fake, ":STK-A - [0:0]", ":STK-B - [0:0]", "-A STK-A -j STK-B")
    with pytest.raises(CommandError, match="Too many links"):
        _restore(fake, ":STK-B - [0:0]", "-X STK-B")
    with pytest.raises(CommandError, match="not empty"):
        _restore(fake, "-X STK-A")
    assert parse_iptables_save(fake.iptables_save(4)).chains == {
        "STK-A": ["-A STK-A -j STK-B"],
        "STK-B": [],
    }
    _restore(fake, ":STK-A - [0:0]", ":STK-B - [0:0]", "-X STK-A", "-X STK-B")
    assert parse_iptables_save(fake.iptables_save(4)).chains == {}


def test_the_fake_refuses_a_jump_to_a_missing_chain_and_is_all_or_nothing() -> None:
    fake = FakeKernel()
    with pytest.raises(CommandError, match="Couldn't load target `STK-NONE'"):
        _restore(fake, ":STK-A - [0:0]", "-A STK-A -j RETURN", "-A FORWARD -j STK-NONE")
    assert parse_iptables_save(fake.iptables_save(4)).chains == {}
    with pytest.raises(CommandError, match="COMMIT expected"):
        fake.run(RESTORE, "*filter\n:STK-A - [0:0]\n")
    with pytest.raises(CommandError, match="Bad rule"):
        _restore(fake, ":STK-A - [0:0]", "-D FORWARD -j STK-A")
    assert parse_iptables_save(fake.iptables_save(4)).chains == {}


def test_the_fake_refuses_bad_set_writes() -> None:
    fake = _fake_with_set()
    with pytest.raises(CommandError, match="already exists"):
        fake.run(["ipset", "restore"], "create stk-a hash:ip family inet maxelem 16 -exist\n")
    fill = "".join(f"add stk-a 10.0.0.{i}\n" for i in range(9))
    with pytest.raises(CommandError, match="Error in line 9: Hash is full"):
        fake.run(["ipset", "restore"], fill)
    assert len(fake.sets["stk-a"].members) == 8  # ipset restore is not atomic
    with pytest.raises(CommandError, match="already added"):
        fake.run(["ipset", "restore"], "add stk-a 10.0.0.1\n")
    with pytest.raises(CommandError, match="not added"):
        fake.run(["ipset", "restore"], "del stk-a 10.0.0.99\n")
    with pytest.raises(CommandError, match="does not exist"):
        fake.change_members([MemberChange("stk-b", "hash:ip", "10.0.0.1", True)])
    with pytest.raises(CommandError, match="netlink churn"):
        fake.change_members([MemberChange("stk-a", "hash:net", "10.0.0.0/8", True)])


def test_the_applier_s_writes_out_of_order_are_refused() -> None:
    node, peer_sets = _bundle()
    rendered = render(node, peer_sets, options=RenderOptions())
    tables = {f: parse_iptables_save(FakeKernel().iptables_save(f)) for f in (4, 6)}
    plan = make_plan(rendered, tables, {})
    fake = FakeKernel()
    # the rules before their sets
    with pytest.raises(CommandError, match="doesn't exist"):
        fake.run(RESTORE, plan.iptables[4])
    fake.run(["ipset", "restore"], "\n".join(plan.set_restore) + "\n")
    fake.run(RESTORE, plan.iptables[4])
    # a set destroyed while the rules still name it
    name = next(iter(fake.table(4).sets()))
    with pytest.raises(CommandError, match="in use"):
        fake.run(["ipset", "restore"], f"destroy {name}\n")


def test_without_noflush_the_whole_table_is_replaced() -> None:
    fake = FakeKernel()
    _restore(fake, ":KUBE-X - [0:0]", "-A FORWARD -j KUBE-X")
    fake.run(["iptables-nft-restore"], "*filter\n:STK-A - [0:0]\nCOMMIT\n")
    live = parse_iptables_save(fake.iptables_save(4))
    assert live.forward == []
    assert "KUBE-X" not in fake.iptables_save(4)


def test_the_fake_saves_what_the_parsers_read() -> None:
    fake = _fake_with_set("stk-n", "hash:net")
    fake.run(["ipset", "restore"], "add stk-n 10.0.1.12/32 nomatch\nadd stk-n 10.0.0.0/8\n")
    assert "add stk-n 10.0.1.12 nomatch" in fake.ipset_save()  # as ipset prints it
    sets = parse_ipset_save(fake.run(["ipset", "save"]))
    assert sets["stk-n"].members == frozenset({"10.0.0.0/8", "10.0.1.12/32 nomatch"})
    assert fake.sets["stk-n"] == FakeSet(
        "stk-n", "hash:net", "inet", 8, {"10.0.1.12/32": True, "10.0.0.0/8": False}
    )
    line = jump_line(FORWARD_JUMP)
    _restore(fake, ":STK-FORWARD - [0:0]", line.replace("-A FORWARD", "-I FORWARD 1"))
    _restore(fake, ":STK-INPUT - [0:0]", jump_line(INPUT_JUMP, "INPUT"))
    live = parse_iptables_save(fake.run(["iptables-nft-save", "-t", "filter"]))
    assert live.forward == [line]
    assert live.input == [jump_line(INPUT_JUMP, "INPUT")]
    fake.conntrack = [Flow(4, "TCP", "10.0.0.1", "10.96.0.1", 5, 80, "10.0.0.2", 8080)]
    listed = parse_conntrack_list(fake.run(["conntrack", "-L", "-f", "ipv4"]), 4)
    assert listed == fake.conntrack


# --------------------------------------------------------------------- random sequences


def _node_bundle(docs: list[dict[str, Any]]) -> tuple[NodeRuleSet, PeerSets]:
    parsed = parse_documents(docs)
    compiled = compile_cluster(parsed.cluster, shard_size=2)
    node = compiled.node_rule_sets.get("n1") or NodeRuleSet("n1", (), (), ())
    by_set = compiled.by_set()
    return node, {name: by_set[name] for name in node.peer_sets}


def _churned(peer_sets: PeerSets, seed: int) -> dict[str, tuple[PeerSet, ...]]:
    """Pod churn without a rule change: some plain peer sets gain a pod, some lose one.

    Which ones follows ``seed``: set ``i`` (by name) gains when bit ``i % 3`` of the
    seed is set, and its first shard loses its first member when the seed is odd.
    """
    out = {name: tuple(shards) for name, shards in peer_sets.items()}
    newcomer = PeerMember(f"x/churn-{seed}", (f"10.77.0.{seed + 1}", f"fd00::77:{seed + 1}"))
    for i, name in enumerate(sorted(out)):
        first, *rest = out[name]
        if first.selector.named_port is not None or first.selector.node_selector is not None:
            continue  # members with ports, or Nodes: not the pod churn this is about
        members = first.members[1:] if seed % 2 else first.members
        if seed >> (i % 3) & 1:
            members = (*members, newcomer)
        out[name] = (replace(first, members=members), *rest)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    clusters=st.lists(st.one_of(cluster_docs(), tiered_cluster_docs()), min_size=1, max_size=4),
    churn_limit=st.sampled_from((0, 2, 512)),
)
def test_random_sequences_of_rule_sets_apply_and_leave_exactly_the_rendering(
    data: st.DataObject, clusters: list[list[dict[str, Any]]], churn_limit: int
) -> None:
    """Every apply succeeds against the fake, which then holds the desired rendering.

    Each cluster is applied as compiled, then possibly again after pod churn (the
    member-only path; with a small ``churn_limit``, whole sets swapped instead).
    Now and then a fresh applier (no memory of the last apply: it reads the kernel
    and writes the difference) takes over, as after an agent restart.
    """
    fake = FakeKernel()
    applier = _applier(fake, churn_limit=churn_limit)
    for docs in clusters:
        node, peer_sets = _node_bundle(docs)
        for seed in [-1, *data.draw(st.lists(st.integers(0, 7), max_size=2), label="churn")]:
            if seed >= 0:
                peer_sets = _churned(peer_sets, seed)
            if data.draw(st.booleans(), label="restart"):
                applier = _applier(fake, churn_limit=churn_limit)
            applier.apply(node, peer_sets)
            assert all(c.error is None for c in fake.calls)
            assert_holds(fake, render(node, peer_sets, options=RenderOptions()))
            assert applier.verify() == []
