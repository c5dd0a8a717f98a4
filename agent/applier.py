"""The applier: the only part of stockade that writes to the kernel.

It renders a node's rule set, compares it with what the kernel holds, and writes the
difference in the safe order of :mod:`stockade.agent.plan`. A rule set it cannot
render is refused whole, and the last applied state stays in force. After an apply
that changed anything, it removes the conntrack entries of flows the new state
denies, so a narrowed policy also cuts established connections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from stockade.agent.backend import Tools, detect_backend
from stockade.agent.executor import Executor
from stockade.agent.live import LiveSet, LiveTable, parse_ipset_save, parse_iptables_save
from stockade.agent.netlink import ConntrackTable, Flow, NetlinkSets, local_addresses
from stockade.agent.plan import DEFAULT_CHURN_LIMIT, Plan, cleanup_plan, make_plan
from stockade.agent.render import FORWARD_JUMP, RenderedNode, RenderOptions, render
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
    """A rule set with the peer sets it names, and its rendering."""

    node: NodeRuleSet
    peer_sets: Mapping[str, Sequence[PeerSet]]
    rendered: RenderedNode


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
    ) -> None:
        self.executor = executor
        self.netns = netns
        self.options = options or RenderOptions()
        self._tools = tools
        self.cut_conntrack = cut_conntrack
        self.churn_limit = churn_limit
        self.netlink = NetlinkSets(netns)
        self.conntrack = ConntrackTable(netns)
        self.last: Desired | None = None

    @property
    def tools(self) -> Tools:
        """The backend's tools, detected on first use."""
        if self._tools is None:
            self._tools = detect_backend(self.executor)
            log.info("iptables backend: %s", self._tools.backend)
        return self._tools

    # ------------------------------------------------------------------ reading

    def read_live(self) -> tuple[dict[int, LiveTable], dict[str, LiveSet]]:
        """stockade's chains (both families) and sets, as the kernel holds them now."""
        tables = {
            family: parse_iptables_save(
                self.executor.run([self.tools.save(family), "-t", "filter"])
            )
            for family in (4, 6)
        }
        sets = parse_ipset_save(self.executor.run(["ipset", "save"]))
        return tables, sets

    def desire(self, node: NodeRuleSet, peer_sets: Mapping[str, Sequence[PeerSet]]) -> Desired:
        """Render a rule set; raises :class:`RefusedError` when it cannot be enforced."""
        try:
            rendered = render(node, peer_sets, options=self.options)
        except ValueError as exc:  # RenderError, model errors: the input is at fault
            raise RefusedError(f"rule set for node {node.node!r} refused: {exc}") from exc
        return Desired(node, peer_sets, rendered)

    # ------------------------------------------------------------------ writing

    def apply(self, node: NodeRuleSet, peer_sets: Mapping[str, Sequence[PeerSet]]) -> ApplyReport:
        """Enforce ``node``; a no-op (no kernel access at all) when nothing changed."""
        desired = self.desire(node, peer_sets)
        if self.last is not None and self.last.rendered == desired.rendered:
            self.last = desired
            return ApplyReport(changed=False)
        return self._reconcile(desired)

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
        plan = cleanup_plan(tables, sets, FORWARD_JUMP)
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
            self.executor.run([self.tools.restore(family), "--noflush"], text)
            report.iptables_restores += 1
        if plan.destroy_sets:
            lines = [f"destroy {name}" for name in plan.destroy_sets]
            self.executor.run(["ipset", "restore"], "\n".join(lines) + "\n")
            report.destroyed_sets = len(plan.destroy_sets)
        return report

    def cut_denied_flows(self, desired: Desired) -> int:
        """Delete conntrack entries of forwarded flows that the new state denies."""
        shards = [ps for group in desired.peer_sets.values() for ps in group]
        evaluator = NodeEvaluator(desired.node, SetIndex(shards))
        local = local_addresses(self.netns)
        doomed: list[Flow] = [
            flow
            for flow in self.conntrack.flows()
            # Traffic between a pod and its own node never crosses FORWARD.
            if flow.src not in local
            and flow.dst not in local
            and not evaluator.allows(flow.src, flow.dst, flow.dport, flow.protocol)
        ]
        if not doomed:
            return 0
        deleted = self.conntrack.delete(doomed)
        log.info("cut %d connection(s) the new rules deny", deleted)
        return deleted
