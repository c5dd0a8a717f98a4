"""Prometheus metrics of the agent, on a registry of its own (nothing at import time)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stockade.agent.applier import ApplyReport
from stockade.agent.render import RenderedNode

_COUNTED = re.compile(r'^\[(\d+):(\d+)\] -A (\S+) .*--comment "stockade:([^"]*)"')
# A NetworkPolicy rule ("ns/name ingress rule 0") or a tier rule, which adds its
# name, if any, and its action ("cnp egress rule 2 (dns) Accept").
_RULE = re.compile(
    r"^(?P<policy>\S+) (?P<direction>ingress|egress) rule (?P<index>\d+)"
    r"(?: \([^)]*\))?(?: (?:Accept|Deny|Pass))?$"
)
_DENY = re.compile(r"^(?P<direction>ingress|egress) denied")


@dataclass(frozen=True, slots=True)
class RuleCounter:
    """Packets that one stockade rule counted, as ``iptables-save -c`` reports."""

    chain: str
    comment: str
    packets: int


def parse_counters(save_c_output: str) -> list[RuleCounter]:
    """Counters of stockade's commented rules in ``iptables-save -c`` output."""
    out = []
    for line in save_c_output.splitlines():
        m = _COUNTED.match(line)
        if m:
            out.append(RuleCounter(m.group(3), m.group(4), int(m.group(1))))
    return out


class AgentMetrics:
    """The agent's metrics: sync timing and result, what is programmed, what is denied."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.last_sync: float | None = None  # Unix time of the last success (for /healthz)
        r = self.registry
        self.sync_seconds = Histogram(
            "stockade_agent_sync_duration_seconds", "Time of one apply or resync", registry=r
        )
        self.last_success = Gauge(
            "stockade_agent_last_successful_sync_timestamp_seconds",
            "Unix time of the last successful apply or resync",
            registry=r,
        )
        self.errors = Counter(
            "stockade_agent_errors", "Refused rule sets and failed applies", ["kind"], registry=r
        )
        self.chains = Gauge("stockade_agent_chains", "Chains programmed", ["family"], registry=r)
        self.rules = Gauge("stockade_agent_rules", "Rules programmed", ["family"], registry=r)
        self.set_members = Gauge(
            "stockade_agent_set_members", "ipset members programmed", ["family"], registry=r
        )
        self.conntrack_cut = Counter(
            "stockade_agent_conntrack_entries_deleted",
            "Conntrack entries of flows that a new state denies",
            registry=r,
        )
        self.denied = Gauge(
            "stockade_agent_denied_packets",
            "Packets denied, by direction and policy group (the group's pods)",
            ["direction", "chain", "pods"],
            registry=r,
        )
        self.pending_pods = Gauge(
            "stockade_agent_pending_pods",
            "Local pods isolated until the rule set lists them (--isolate-new-pods)",
            registry=r,
        )
        self.rule_set_missing = Gauge(
            "stockade_agent_rule_set_missing",
            "1 while the node's NodeRuleSet (or its CRD) is absent; the applied rules stay",
            registry=r,
        )
        self.families = Gauge(
            "stockade_agent_family_enabled",
            "1 for each IP family the node has and the agent programs, 0 for a skipped one",
            ["family"],
            registry=r,
        )
        self.rule_packets = Gauge(
            "stockade_agent_policy_rule_packets",
            "New connections a policy rule matched (summed over the chains that hold"
            " it); NetworkPolicy rules allow, tier rules accept, deny or pass",
            ["policy", "direction", "rule"],
            registry=r,
        )

    def record(self, report: ApplyReport, rendered: RenderedNode | None, now: float) -> None:
        """Record a successful apply (or resync) and what is now programmed."""
        self.sync_seconds.observe(report.seconds)
        self.last_success.set(now)
        self.last_sync = now
        self.conntrack_cut.inc(report.conntrack_deleted)
        if rendered is None:
            return
        for family in ("4", "6"):
            fam = rendered.v4 if family == "4" else rendered.v6
            self.chains.labels(family).set(len(fam.chains))
            self.rules.labels(family).set(sum(len(c.rules) for c in fam.chains))
            self.set_members.labels(family).set(sum(len(s.members) for s in fam.ipsets))

    def record_counters(self, counters: list[RuleCounter], groups: dict[str, str]) -> None:
        """Per-rule and per-group counters; ``groups`` maps a group chain to its pods.

        One rule is often in several chains (a short policy inlined into each of its
        groups, a rule in both halves of a split chain): its packets are the sum.
        """
        rules: dict[tuple[str, str, str], int] = {}
        denied: dict[tuple[str, str, str], int] = {}
        for c in counters:
            rule = _RULE.match(c.comment)
            if rule:
                key = (rule["policy"], rule["direction"], rule["index"])
                rules[key] = rules.get(key, 0) + c.packets
                continue
            deny = _DENY.match(c.comment)
            if deny:
                where = (deny["direction"], c.chain, groups.get(c.chain, ""))
                denied[where] = denied.get(where, 0) + c.packets
        for key, packets in rules.items():
            self.rule_packets.labels(*key).set(packets)
        for where, packets in denied.items():
            self.denied.labels(*where).set(packets)
