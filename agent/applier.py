"""The applier: the only part of stockade that writes to the kernel.

It renders a node's rule set, compares it with what the kernel holds, and writes the
difference in the safe order of :mod:`stockade.agent.plan`. A rule set it cannot
render is refused whole, and the last applied state stays in force. After an apply
that changed anything, it removes the conntrack entries of flows the new state
denies, so a narrowed policy also cuts established connections.

Three shortcuts keep the common cases cheap (docs/agent.md, "Writes only when needed"):

- the same NodeRuleSet and the same PeerSet shards as the last apply: nothing is
  rendered, nothing read or written;
- the same NodeRuleSet, only PeerSet members changed (pod churn elsewhere): only the
  changed PeerSets are rendered (:func:`~stockade.agent.render.render_peer_set`, the
  full render's own code for those sets), their member deltas go out by netlink (adds
  before deletes), and the last applied rendering is patched to what a full render
  would give. The kernel is not read: the periodic resync repairs drift.
- a new NodeRuleSet that renders to the same chains and the same sets but for their
  members (a local pod moving between dispatch groups the node already has): the
  member deltas by netlink, again without reading the kernel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from stockade.agent.backend import (
    DEFAULT_XTABLES_WAIT,
    Tools,
    detect_backend,
    detect_families,
    restore_wait_args,
)
from stockade.agent.executor import Executor
from stockade.agent.ipsets import IPFamily, IPSet, MemberChange
from stockade.agent.kernel import Kernel, SystemKernel, channels
from stockade.agent.live import (
    LiveSet,
    LiveTable,
    parse_ipset_save,
    parse_iptables_save,
    set_members,
)
from stockade.agent.netlink import ConntrackTable, Flow, NetlinkSets
from stockade.agent.plan import DEFAULT_CHURN_LIMIT, Plan, cleanup_plan, make_plan
from stockade.agent.render import (
    FORWARD_JUMP,
    INPUT_JUMP,
    RenderedFamily,
    RenderedNode,
    RenderOptions,
    referenced_peer_sets,
    render,
    render_peer_set,
    render_pending_sets,
)
from stockade.ruleset import NodeRuleSet, PeerSet
from stockade.verdict import NodeEvaluator, SetIndex

log = logging.getLogger("stockade.agent")


class RefusedError(RuntimeError):
    """A rule set was refused; the last applied state is still enforced."""


@dataclass
class ApplyReport:
    """What one apply, resync or cleanup did."""

    changed: bool
    differences: list[str] = field(default_factory=list)
    ipset_lines: int = 0
    member_changes: int = 0
    iptables_restores: int = 0
    destroyed_sets: int = 0
    conntrack_deleted: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Desired:
    """A rule set with the peer sets it names (a snapshot of their shards), and its rendering."""

    node: NodeRuleSet
    peer_sets: Mapping[str, tuple[PeerSet, ...]]
    rendered: RenderedNode
    # --isolate-new-pods: local pod addresses the rule set does not cover yet.
    pending: frozenset[str] = frozenset()


def _same_rules(a: NodeRuleSet, b: NodeRuleSet) -> bool:
    """Equal but for ``known_pods``, which only decides what is pending (not rendered)."""
    return a is b or replace(a, known_pods=b.known_pods) == b


def _snapshot(
    node: NodeRuleSet, peer_sets: Mapping[str, Sequence[PeerSet]]
) -> dict[str, tuple[PeerSet, ...]]:
    """The shards of the PeerSets ``node`` refers to, ordered, copied out of the caller's map."""
    return {
        name: tuple(sorted(peer_sets.get(name, ()), key=lambda ps: ps.shard))
        for name in sorted(referenced_peer_sets(node))
    }


class Applier:
    """Reconciles the kernel (of ``netns``, or the agent's own) with rule sets."""

    def __init__(
        self,
        executor: Executor,
        *,
        netns: str | None = None,
        options: RenderOptions | None = None,
        tools: Tools | None = None,
        cut_conntrack: bool = True,
        churn_limit: int = DEFAULT_CHURN_LIMIT,
        xtables_wait: int = DEFAULT_XTABLES_WAIT,
        families: tuple[int, ...] | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        # Every kernel access goes through executor, netlink and conntrack: by default
        # the real adapters of ``netns`` built from ``executor``; with ``kernel`` given
        # (a test's fake one), forwarders to it, and ``executor`` is not used.
        if kernel is None:
            kernel = SystemKernel(executor, NetlinkSets(netns), ConntrackTable(netns, executor))
        self.kernel = kernel
        self.executor, self.netlink, self.conntrack = channels(kernel)
        # Seconds iptables-restore waits for the xtables lock kube-proxy may hold.
        self.xtables_wait = xtables_wait
        self.netns = netns
        self.options = options or RenderOptions()
        self._tools = tools
        self.cut_conntrack = cut_conntrack
        self.churn_limit = churn_limit
        self.last: Desired | None = None
        self._families = families
        self.conntrack.families = families or (4, 6)

    @property
    def tools(self) -> Tools:
        """The backend's tools, detected on first use."""
        if self._tools is None:
            self._tools = detect_backend(self.executor)
            log.info("iptables backend: %s", self._tools.backend)
        return self._tools

    @property
    def families(self) -> tuple[int, ...]:
        """The IP families the node has, detected on first use (see ``detect_families``).

        A missing family is skipped entirely: not rendered (a rule set's addresses of
        that family are left out), not read, not written, not cleaned up.
        """
        if self._families is None:
            found, why = detect_families(self.executor, self.tools)
            if why is None:
                log.info("IP families: IPv4 and IPv6")
            else:
                log.warning("IP families: IPv4 only; skipping IPv6 entirely, as %s", why)
            self._families = found
            self.conntrack.families = found
        return self._families

    # ------------------------------------------------------------------ reading

    def read_live(self) -> tuple[dict[int, LiveTable], dict[str, LiveSet]]:
        """stockade's chains (both families) and sets, as the kernel holds them now."""
        tables = {
            family: parse_iptables_save(
                self.executor.run([self.tools.save(family), "-t", "filter"])
            )
            for family in self.families
        }
        sets = parse_ipset_save(self.executor.run(["ipset", "save"]))
        return tables, sets

    def desire(
        self,
        node: NodeRuleSet,
        peer_sets: Mapping[str, Sequence[PeerSet]],
        pending: Collection[str] = (),
    ) -> Desired:
        """Render a rule set; raises :class:`RefusedError` when it cannot be enforced."""
        held = self._pending(pending)
        try:
            rendered = render(node, peer_sets, options=self.options, pending=held)
        except ValueError as exc:  # RenderError, model errors: the input is at fault
            raise RefusedError(f"rule set for node {node.node!r} refused: {exc}") from exc
        rendered = only_families(rendered, self.families)
        return Desired(node, _snapshot(node, peer_sets), rendered, held)

    def _pending(self, pending: Collection[str]) -> frozenset[str]:
        return frozenset(pending) if self.options.isolate_new_pods else frozenset()

    # ------------------------------------------------------------------ writing

    def apply(
        self,
        node: NodeRuleSet,
        peer_sets: Mapping[str, Sequence[PeerSet]],
        pending: Collection[str] = (),
    ) -> ApplyReport:
        """Enforce ``node``; a no-op (no kernel access at all) when nothing changed.

        Same rule set and same shards: no render, no kernel access. Same rule set,
        other members (or other ``pending`` addresses, with ``isolate_new_pods``):
        the member-only fast path (module docstring). Anything else: render, read
        the kernel, write the difference.
        """
        last = self.last
        held = self._pending(pending)
        if last is not None and _same_rules(last.node, node):
            snapshot = _snapshot(node, peer_sets)
            changed = [name for name, shards in snapshot.items() if last.peer_sets[name] != shards]
            if not changed and held == last.pending:
                if last.node is not node:
                    self.last = replace(last, node=node)
                return ApplyReport(changed=False)
            report = self._apply_members(replace(last, node=node), snapshot, changed, held)
            if report is not None:
                return report
        desired = self.desire(node, peer_sets, held)
        if last is not None:
            if last.rendered == desired.rendered:
                self.last = desired
                return ApplyReport(changed=False)
            report = self._apply_rendered_members(last, desired)
            if report is not None:
                return report
        return self._reconcile(desired)

    def _apply_rendered_members(self, last: Desired, desired: Desired) -> ApplyReport | None:
        """A new rule set that renders to the last applied chains and sets, but for
        the sets' members (a local pod moved between dispatch groups the node
        already has: an IsolationPolicy relabel, a pod joining a NetworkPolicy
        group): the member deltas by netlink, no iptables call and no kernel read.
        None when anything but members differs, a set would outgrow its ``maxelem``
        or the delta is over ``churn_limit``: the full path then.
        """
        start = time.perf_counter()
        old, new = last.rendered, desired.rendered
        if old.forward_jump != new.forward_jump or old.input_jump != new.input_jump:
            return None
        delta = _MemberDelta()
        for have_family, want_family in ((old.v4, new.v4), (old.v6, new.v6)):
            if have_family.chains != want_family.chains:
                return None
            if len(have_family.ipsets) != len(want_family.ipsets):
                return None
            for have, want in zip(have_family.ipsets, want_family.ipsets, strict=True):
                if (have.name, have.type, have.family) != (want.name, want.type, want.family):
                    return None
                if have.members != want.members and not delta.add(have, want):
                    return None
                if delta.over(self.churn_limit):
                    return None
        return self._send_members(last, desired, delta, start)

    def _apply_members(
        self,
        last: Desired,
        snapshot: dict[str, tuple[PeerSet, ...]],
        changed: list[str],
        pending: frozenset[str],
    ) -> ApplyReport | None:
        """The fast path for PeerSet member churn; None when it does not apply.

        It does not apply when a changed PeerSet's selector changed (the rules may
        read it), when the shards cannot be rendered (the full path refuses them
        properly), or when the delta is larger than ``churn_limit`` (the full path
        swaps whole sets instead).
        """
        start = time.perf_counter()
        current: dict[str, IPSet] = {
            s.name: s for fam in (last.rendered.v4, last.rendered.v6) for s in fam.ipsets
        }
        patched: dict[str, IPSet] = {}
        delta = _MemberDelta()
        fresh: dict[str, IPSet] = {}
        for name in changed:
            old_shards, new_shards = last.peer_sets[name], snapshot[name]
            if not new_shards or (old_shards and old_shards[0].selector != new_shards[0].selector):
                return None
            try:
                fresh.update(render_peer_set(name, new_shards))
            except ValueError:  # incomplete or invalid: the full path refuses it
                return None
        if pending != last.pending:
            try:
                fresh.update((s.name, s) for s in render_pending_sets(pending).values())
            except ValueError:  # the full path refuses it
                return None
        for set_name, want in fresh.items():
            have = current.get(set_name)
            if have is None:  # a set the node's rules do not use
                continue
            if not delta.add(have, want):
                return None
            if delta.changed(set_name):
                patched[set_name] = want
        if delta.over(self.churn_limit):
            return None
        rendered = _patch_sets(last.rendered, patched)
        return self._send_members(
            last, Desired(last.node, snapshot, rendered, pending), delta, start
        )

    def _send_members(
        self, last: Desired, desired: Desired, delta: _MemberDelta, start: float
    ) -> ApplyReport:
        """Write ``delta`` by netlink and record ``desired`` as applied (both fast paths)."""
        # Adds before deletes: a pod moving between sets is never in neither.
        self.netlink.apply([*delta.adds, *delta.dels])
        self.last = desired
        report = ApplyReport(
            changed=bool(delta.differences),
            differences=delta.differences,
            member_changes=len(delta.adds) + len(delta.dels),
        )
        if self.cut_conntrack:
            # Adding members never denies anything; removals may, and so does a pod
            # turning pending.
            involving = {c.value.split(",", 1)[0] for c in delta.dels} | (
                desired.pending - last.pending
            )
            if involving:
                report.conntrack_deleted = self.cut_denied_flows(desired, involving)
        report.seconds = time.perf_counter() - start
        if report.changed:
            log.info("applied (members only): %s", "; ".join(delta.differences))
        return report

    def resync(self) -> ApplyReport:
        """Compare the kernel with the last applied state and repair any drift."""
        if self.last is None:
            return ApplyReport(changed=False)
        return self._reconcile(self.last)

    def verify(self, desired: Desired | None = None) -> list[str]:
        """The differences between the kernel and ``desired`` (default: the last applied)."""
        target = desired or self.last
        if target is None:
            raise RuntimeError("nothing applied yet, and no desired state given")
        tables, sets = self.read_live()
        return make_plan(target.rendered, tables, sets, self.churn_limit).differences

    def cleanup(self) -> ApplyReport:
        """Remove every chain, rule and set stockade owns, and nothing else."""
        start = time.perf_counter()
        tables, sets = self.read_live()
        plan = cleanup_plan(tables, sets, FORWARD_JUMP, INPUT_JUMP)
        report = self._execute(plan)
        self.last = None
        report.seconds = time.perf_counter() - start
        return report

    def _reconcile(self, desired: Desired) -> ApplyReport:
        start = time.perf_counter()
        tables, sets = self.read_live()
        plan = make_plan(desired.rendered, tables, sets, self.churn_limit)
        report = self._execute(plan)
        self.last = desired
        if report.changed and self.cut_conntrack:
            report.conntrack_deleted = self.cut_denied_flows(desired)
        report.seconds = time.perf_counter() - start
        if report.changed:
            log.info("applied: %s", "; ".join(plan.differences))
        return report

    def _execute(self, plan: Plan) -> ApplyReport:
        report = ApplyReport(changed=not plan.empty, differences=list(plan.differences))
        if plan.set_restore:
            self.executor.run(["ipset", "restore"], "\n".join(plan.set_restore) + "\n")
            report.ipset_lines = len(plan.set_restore)
        if plan.member_changes:
            self.netlink.apply(plan.member_changes)
            report.member_changes = len(plan.member_changes)
        for family, text in sorted(plan.iptables.items()):
            argv = [self.tools.restore(family), *restore_wait_args(self.xtables_wait)]
            self.executor.run([*argv, "--noflush"], text)
            report.iptables_restores += 1
        if plan.destroy_sets:
            lines = [f"destroy {name}" for name in plan.destroy_sets]
            self.executor.run(["ipset", "restore"], "\n".join(lines) + "\n")
            report.destroyed_sets = len(plan.destroy_sets)
        return report

    def cut_denied_flows(self, desired: Desired, involving: set[str] | None = None) -> int:
        """Delete conntrack entries of flows that the new state denies.

        A forwarded flow is judged as the FORWARD hook saw it (:class:`Flow`'s seen
        view): its original source, and its destination after kube-proxy's DNAT (a
        ClusterIP or NodePort connection is judged by the backend it reached, not the
        Service address, which is no pod); the entry is deleted by its original tuple.
        With ClusterNetworkPolicies on the node, a flow from a local pod to one of
        the node's own addresses (seen destination local: it went to INPUT, STK-INPUT
        judged it) is judged by ``NodeEvaluator.allows_input``; the node's own
        addresses are the namespace's, from netlink (what the kernel routes to INPUT,
        whatever the Node object lists). Flows the node opened to its pods are never
        judged: they are allowed.

        ``involving``: judge only flows from or to these addresses (after a member
        removal or a pod turning pending, the only flows whose verdict can have
        changed). Flows of pending pods are denied whatever the policies say; the
        evaluator is built only when some other flow needs judging.
        """
        # Only flows of local pods that some policy selects (or that are pending)
        # can be denied here.
        targets = (
            {ip for pod in desired.node.pods for ip in pod.ips}
            | desired.pending
            | set(desired.node.contested_ips)
        )
        candidates = [
            flow
            for flow in self.conntrack.flows()
            if (flow.seen_src in targets or flow.seen_dst in targets)
            and (involving is None or flow.seen_src in involving or flow.seen_dst in involving)
        ]
        if not candidates:
            return 0
        local = self.kernel.local_addresses()
        # A local pod's flows to this node went to INPUT (by the seen destination: a
        # pod's connection to a ClusterIP DNATed to a host-network endpoint, this
        # node's address, too). Only STK-INPUT judges them, and it exists only with
        # ClusterNetworkPolicies; it denies nothing to pending or contested pods.
        pod_ips = {ip for pod in desired.node.pods for ip in pod.ips}
        to_node = (
            [
                f
                for f in candidates
                if f.seen_dst in local and f.seen_src not in local and f.seen_src in pod_ips
            ]
            if desired.node.cluster_policies
            else []
        )
        # Traffic between a pod and its own node never crosses FORWARD: by the seen
        # addresses, so a NodePort connection to this node's address DNATed to a pod
        # is judged (it was forwarded), and a pod's connection to a ClusterIP DNATed
        # to a host-network endpoint (this node's address) is not (it went to INPUT).
        candidates = [f for f in candidates if f.seen_src not in local and f.seen_dst not in local]
        if not candidates and not to_node:
            return 0
        # Addresses several pods claim (stockade.ownership) are denied like pending ones.
        # STK-FORWARD drops them before its hairpin return, so even a pending or
        # contested pod reaching itself through its Service is cut.
        pending = desired.pending | frozenset(desired.node.contested_ips)
        doomed: list[Flow] = [
            f for f in candidates if f.seen_src in pending or f.seen_dst in pending
        ]
        judged = [
            f
            for f in candidates
            if f.seen_src not in pending
            and f.seen_dst not in pending
            # A pod reaching itself through its own Service (hairpin: DNAT back to
            # itself, seen source == seen destination) is a pod reaching itself,
            # which is always allowed (semantics rule 12; STK-FORWARD's src == dst
            # return): never cut it, whatever the evaluator says of the pair.
            and f.seen_src != f.seen_dst
        ]
        if judged or to_node:
            shards = [ps for group in desired.peer_sets.values() for ps in group]
            evaluator = NodeEvaluator(desired.node, SetIndex(shards))
            doomed += [
                f
                for f in judged
                if not evaluator.allows(f.seen_src, f.seen_dst, f.seen_dport, f.protocol)
            ]
            doomed += [
                f
                for f in to_node
                if not evaluator.allows_input(f.seen_src, f.seen_dst, f.seen_dport, f.protocol)
            ]
        if not doomed:
            return 0
        deleted = self.conntrack.delete(doomed)  # by the original tuple, conntrack's key
        log.info("cut %d connection(s) the new rules deny", deleted)
        return deleted


@dataclass
class _MemberDelta:
    """The member changes of a fast path, set by set (adds, deletes, a line per set)."""

    adds: list[MemberChange] = field(default_factory=list)
    dels: list[MemberChange] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    _changed: set[str] = field(default_factory=set)

    def add(self, have: IPSet, want: IPSet) -> bool:
        """Take ``have`` (the kernel's, as last applied) to ``want``; False when member
        changes cannot: another type, or more members than ``have``'s ``maxelem``
        (the full path swaps in a bigger set)."""
        if have.type != want.type or len(want.members) > have.maxelem:
            return False
        new_members, old_members = set_members(want), set_members(have)
        plus, minus = new_members - old_members, old_members - new_members
        if plus or minus:
            name = want.name
            self.differences.append(f"set {name}: {len(plus)} to add, {len(minus)} to delete")
            self.adds += [MemberChange(name, want.type, v, True) for v in sorted(plus)]
            self.dels += [MemberChange(name, want.type, v, False) for v in sorted(minus)]
            self._changed.add(name)
        return True

    def changed(self, name: str) -> bool:
        """Whether set ``name``'s members change."""
        return name in self._changed

    def over(self, limit: int) -> bool:
        """More member changes than ``limit``."""
        return len(self.adds) + len(self.dels) > limit


def only_families(rendered: RenderedNode, families: Collection[int]) -> RenderedNode:
    """``rendered`` with the families the node lacks emptied (no chains, no sets)."""
    if 4 in families and 6 in families:
        return rendered
    both: tuple[IPFamily, ...] = (4, 6)
    empty = {f: RenderedFamily(f, (), ()) for f in both if f not in families}
    return replace(
        rendered,
        v4=empty.get(4, rendered.v4),
        v6=empty.get(6, rendered.v6),
    )


def _patch_sets(rendered: RenderedNode, sets: Mapping[str, IPSet]) -> RenderedNode:
    """``rendered`` with some sets replaced by same-named ones (order and chains kept)."""
    if not sets:
        return rendered
    families = [
        replace(fam, ipsets=tuple(sets.get(s.name, s) for s in fam.ipsets))
        for fam in (rendered.v4, rendered.v6)
    ]
    return replace(rendered, v4=families[0], v6=families[1])
