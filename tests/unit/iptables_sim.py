"""A tiny, pure interpreter of stockade's typed iptables model, for tests.

It walks the typed chains (never the text) the way netfilter would for one packet:
``-j`` pushes, ``-g`` replaces the current chain, falling off a chain or RETURN goes
back to the last ``-j``; MARK, LOG and NFLOG do not stop evaluation. Sets are looked
up as the kernel does: hash:ip by address, hash:net by the most specific entry
(a ``nomatch`` entry means "not in the set"), hash:ip,port by (address, proto, port).
The BPF "source equals destination" match (:class:`SameAddress`) compares addresses.

Only what stockade renders is supported; anything else raises, so a new match kind
cannot be silently ignored here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from stockade.agent.ipsets import IPSet
from stockade.agent.iptables import (
    AddressMatch,
    Chain,
    ClearMark,
    ConntrackState,
    Drop,
    Goto,
    Jump,
    LimitMatch,
    Log,
    MarkMatch,
    Match,
    NFLog,
    PortRange,
    ProtoMatch,
    Reject,
    Return,
    SameAddress,
    SetMark,
    SetMatch,
)

Verdict = Literal["DROP", "REJECT", "RETURN"]
_MAX_DEPTH = 64  # the kernel refuses loops; a test model that loops is a bug


@dataclass(frozen=True, slots=True)
class Packet:
    """The parts of a packet stockade's rules look at."""

    src: str
    dst: str
    protocol: str = "TCP"
    dport: int = 80
    ct_state: str = "NEW"
    mark: int = 0


@dataclass
class Trace:
    """What happened on the way: the verdict, log prefixes, the final mark."""

    verdict: Verdict
    logs: list[str] = field(default_factory=list)
    mark: int = 0
    chains: list[str] = field(default_factory=list)


class _Terminal(Exception):
    def __init__(self, verdict: Verdict):
        self.verdict = verdict


class Dataplane:
    """Chains and sets of one family, ready to evaluate packets."""

    def __init__(self, chains: Iterable[Chain], sets: Iterable[IPSet]):
        self.chains: Mapping[str, Chain] = {c.name: c for c in chains}
        self.sets: Mapping[str, IPSet] = {s.name: s for s in sets}

    def evaluate(self, packet: Packet, start: str = "STK-FORWARD") -> Trace:
        """Run ``packet`` through ``start``; RETURN if it falls off the end."""
        trace = Trace("RETURN", mark=packet.mark)
        try:
            self._run(start, packet, trace, 0)
        except _Terminal as t:
            trace.verdict = t.verdict
        return trace

    def verdict(self, packet: Packet, start: str = "STK-FORWARD") -> Verdict:
        """Just the verdict."""
        return self.evaluate(packet, start).verdict

    def _run(self, name: str, packet: Packet, trace: Trace, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise RuntimeError(f"chain depth exceeded at {name}")
        trace.chains.append(name)
        for rule in self.chains[name].rules:
            if not all(self._matches(m, packet, trace) for m in rule.matches):
                continue
            action = rule.action
            if isinstance(action, Jump):
                self._run(action.chain, packet, trace, depth + 1)
            elif isinstance(action, Goto):
                # The goto'd chain ends where this one would: back at our caller.
                self._run(action.chain, packet, trace, depth + 1)
                return
            elif isinstance(action, Return):
                return
            elif isinstance(action, Drop):
                raise _Terminal("DROP")
            elif isinstance(action, Reject):
                raise _Terminal("REJECT")
            elif isinstance(action, SetMark):
                trace.mark = (trace.mark & ~action.mask) | action.value
            elif isinstance(action, ClearMark):
                trace.mark &= ~action.mask
            elif isinstance(action, NFLog | Log):
                trace.logs.append(action.prefix)
            else:  # pragma: no cover - every Action kind is handled above
                raise TypeError(f"unknown action {action!r}")

    def _matches(self, match: Match, packet: Packet, trace: Trace) -> bool:
        if isinstance(match, SetMatch):
            return self._in_set(match, packet) != match.negate
        if isinstance(match, ProtoMatch):
            return packet.protocol.upper() == match.protocol
        if isinstance(match, PortRange):
            return packet.protocol.upper() == match.protocol and any(
                a <= packet.dport <= b for a, b in match.ranges
            )
        if isinstance(match, ConntrackState):
            return packet.ct_state in match.states
        if isinstance(match, MarkMatch):
            return ((trace.mark & match.mask) == match.value) != match.negate
        if isinstance(match, LimitMatch):
            return True  # tests send few packets; the limit never bites
        if isinstance(match, AddressMatch):
            address = ipaddress.ip_address(packet.src if match.direction == "src" else packet.dst)
            network = ipaddress.ip_network(match.cidr)
            return address.version == network.version and address in network
        if isinstance(match, SameAddress):
            # The BPF program compares the raw address bytes of the packet's family.
            src, dst = ipaddress.ip_address(packet.src), ipaddress.ip_address(packet.dst)
            return src.version == dst.version == match.family and src == dst
        raise TypeError(f"unknown match {match!r}")  # pragma: no cover

    def _in_set(self, match: SetMatch, packet: Packet) -> bool:
        s = self.sets[match.set_name]
        dirs = match.dirs.split(",")
        ip = ipaddress.ip_address(packet.src if dirs[0] == "src" else packet.dst)
        if ip.version != s.ip_family:
            return False
        if s.type == "hash:ip":
            return any(ipaddress.ip_address(m.value) == ip for m in s.members)
        if s.type == "hash:net":
            best = None
            for m in s.members:
                net = ipaddress.ip_network(m.value)
                if ip in net and (best is None or net.prefixlen > best[0]):
                    best = (net.prefixlen, m.nomatch)
            return best is not None and not best[1]
        # hash:ip,port with a second direction: the port is the packet's dst port
        # (stockade only ever uses "dst,dst").
        assert dirs[1] == "dst", match
        want = f"{ip},{packet.protocol.lower()}:{packet.dport}"
        return any(m.value == want for m in s.members)
