"""A typed model of iptables rules, and the one place that turns it into text.

Purely computational: nothing here runs a command or reads the kernel. The applier
(I/O) feeds :func:`render_rule`'s output to ``iptables-restore --noflush``, or
:func:`rule_argv`'s to ``iptables -C``/``-I``.

Rules are data first: a :class:`Rule` is a tuple of matches, an action and a
comment; each match and action is a small frozen dataclass with one
``to_fragment()``. Text comes last, and quoting lives in :func:`quote` alone. The
fragments follow the order and spelling ``iptables-save`` prints, so that a later
diff against the kernel's state can compare like with like.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Literal

CHAIN_PREFIX = "STK-"
# The kernel's limit is 29 bytes with the NUL (XT_EXTENSION_MAXNAMELEN); Calico's
# MaxChainNameLength keeps 28 and so do we.
MAX_CHAIN_NAME = 28
# XT_MAX_COMMENT_LEN is 256 bytes including the terminating NUL.
MAX_COMMENT = 255
# xt_LOG keeps 29 characters of prefix (30 bytes with the NUL); NFLOG keeps 63.
MAX_LOG_PREFIX = 29
MAX_NFLOG_PREFIX = 63
# xt_multiport compares at most 15 ports; a range a:b takes two of those slots.
MULTIPORT_SLOTS = 15

Protocol = Literal["TCP", "UDP", "SCTP"]
SetDirs = Literal["src", "dst", "dst,dst", "src,dst"]
CtState = Literal["INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED"]
RejectWith = Literal[
    "icmp-port-unreachable",
    "icmp-admin-prohibited",
    "icmp6-port-unreachable",
    "icmp6-adm-prohibited",
    "tcp-reset",
]

PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP")
# The order iptables-save prints conntrack states in (the kernel's bit order).
_CT_ORDER: tuple[CtState, ...] = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED")
_CHAIN_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# Tokens that are not free text must never need quoting; free text goes through
# Text and quote().
_SAFE_TOKEN = re.compile(r"^[^\s\"'\\]+$")
# Characters xtables_save_string prints without quotes; everything else is quoted.
_NO_QUOTE = re.compile(r"^[A-Za-z0-9_-]+$")
_RATE_RE = re.compile(r"^([1-9][0-9]*)/(second|sec|s|minute|min|m|hour|h|day|d)$")
_RATE_UNITS = {
    "second": "sec",
    "sec": "sec",
    "s": "sec",
    "minute": "min",
    "min": "min",
    "m": "min",
    "hour": "hour",
    "h": "hour",
    "day": "day",
    "d": "day",
}


class IptablesModelError(ValueError):
    """A rule, match or chain that iptables would refuse (or that stockade must not own)."""


@dataclass(frozen=True, slots=True)
class Text:
    """A free-text argument (comment, log prefix): the only kind of token quoted."""

    value: str


Token = str | Text


def quote(value: str) -> str:
    """Quote ``value`` for iptables-restore exactly as iptables-save prints it.

    Mirrors ``xtables_save_string``: plain words stay bare; anything else is put in
    double quotes with ``"``, ``\\`` and ``'`` escaped by a backslash. Newlines
    cannot be represented in restore input at all, so they are refused.
    """
    if "\n" in value or "\r" in value or "\0" in value:
        raise IptablesModelError(f"text for iptables must be one line: {value!r}")
    if _NO_QUOTE.match(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")
    return f'"{escaped}"'


def check_chain_name(name: str, *, owned: bool = True) -> str:
    """Validate a chain name (length, characters, and stockade's prefix if ``owned``)."""
    if not name or len(name) > MAX_CHAIN_NAME or not _CHAIN_RE.match(name):
        raise IptablesModelError(
            f"invalid chain name {name!r}: 1-{MAX_CHAIN_NAME} letters, digits, '_' or '-'"
        )
    if owned and not name.startswith(CHAIN_PREFIX):
        raise IptablesModelError(
            f"chain {name!r} is not stockade's: must start with {CHAIN_PREFIX}"
        )
    return name


def _hex(value: int) -> str:
    return f"{value:#x}"


def _check_mark(value: int, mask: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF or not 0 < mask <= 0xFFFFFFFF:
        raise IptablesModelError(f"mark {value:#x}/{mask:#x} out of 32-bit range")
    if value & ~mask:
        raise IptablesModelError(f"mark value {value:#x} has bits outside its mask {mask:#x}")


def canonical_rate(rate: str) -> str:
    """A ``limit`` rate in the spelling iptables-save prints (``10/second`` -> ``10/sec``)."""
    m = _RATE_RE.match(rate)
    if not m:
        raise IptablesModelError(
            f"invalid rate {rate!r}: expected N/second, N/minute, N/hour or N/day"
        )
    return f"{m.group(1)}/{_RATE_UNITS[m.group(2)]}"


# --- matches -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetMatch:
    """``-m set [!] --match-set NAME DIRS``: membership of the packet in an ipset."""

    set_name: str
    dirs: SetDirs
    negate: bool = False

    def to_fragment(self) -> tuple[Token, ...]:
        """The match's arguments."""
        neg: tuple[Token, ...] = ("!",) if self.negate else ()
        return ("-m", "set", *neg, "--match-set", self.set_name, self.dirs)


@dataclass(frozen=True, slots=True)
class ProtoMatch:
    """``-p PROTO``; must come before a :class:`PortRange` of the same protocol."""

    protocol: Protocol

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise IptablesModelError(f"unknown protocol {self.protocol!r}")

    def to_fragment(self) -> tuple[Token, ...]:
        """The match's arguments."""
        return ("-p", self.protocol.lower())


@dataclass(frozen=True, slots=True)
class PortRange:
    """Destination ports: ``(first, last)`` pairs, a single port has first == last.

    One pair renders as ``-m tcp --dport a[:b]``; several as
    ``-m multiport --dports ...``, which takes at most 15 slots (a range counts
    two), so callers split longer lists with :func:`split_multiport`.
    """

    protocol: Protocol
    ranges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise IptablesModelError(f"unknown protocol {self.protocol!r}")
        if not self.ranges:
            raise IptablesModelError("a port match needs at least one port")
        for first, last in self.ranges:
            if not 1 <= first <= last <= 65535:
                raise IptablesModelError(f"invalid port range {first}:{last}")
        if multiport_slots(self.ranges) > MULTIPORT_SLOTS:
            raise IptablesModelError(
                f"{len(self.ranges)} ports exceed multiport's {MULTIPORT_SLOTS} slots"
            )

    def to_fragment(self) -> tuple[Token, ...]:
        """The match's arguments."""
        spelled = ",".join(str(a) if a == b else f"{a}:{b}" for a, b in self.ranges)
        if len(self.ranges) == 1:
            return ("-m", self.protocol.lower(), "--dport", spelled)
        return ("-m", "multiport", "--dports", spelled)


@dataclass(frozen=True, slots=True)
class ConntrackState:
    """``-m conntrack --ctstate S1,S2``."""

    states: tuple[CtState, ...]

    def __post_init__(self) -> None:
        if not self.states or any(s not in _CT_ORDER for s in self.states):
            raise IptablesModelError(f"invalid conntrack states {self.states!r}")

    def to_fragment(self) -> tuple[Token, ...]:
        """The match's arguments, states in iptables-save's order."""
        states = ",".join(s for s in _CT_ORDER if s in self.states)
        return ("-m", "conntrack", "--ctstate", states)


@dataclass(frozen=True, slots=True)
class MarkMatch:
    """``-m mark [!] --mark VALUE/MASK``: (packet mark & mask) == value."""

    value: int
    mask: int
    negate: bool = False

    def __post_init__(self) -> None:
        _check_mark(self.value, self.mask)

    def to_fragment(self) -> tuple[Token, ...]:
        """The match's arguments."""
        neg: tuple[Token, ...] = ("!",) if self.negate else ()
        return ("-m", "mark", *neg, "--mark", f"{_hex(self.value)}/{_hex(self.mask)}")


@dataclass(frozen=True, slots=True)
class LimitMatch:
    """``-m limit --limit RATE --limit-burst N``: used only to rate-limit logging."""

    rate: str
    burst: int = 5

    def __post_init__(self) -> None:
        canonical_rate(self.rate)
        if not 1 <= self.burst <= 10000:
            raise IptablesModelError(f"invalid limit burst {self.burst}")

    def to_fragment(self) -> tuple[Token, ...]:
        """The match's arguments."""
        # iptables-save leaves out the default burst (5); so do we.
        burst: tuple[Token, ...] = ("--limit-burst", str(self.burst)) if self.burst != 5 else ()
        return ("-m", "limit", "--limit", canonical_rate(self.rate), *burst)


def _same_address_program(family: int) -> str:
    """Classic BPF, as ``-m bpf --bytecode`` takes it: return 1 when source == destination.

    xt_bpf runs the program on the packet from its network header, so the addresses
    are at offsets 12 and 16 (IPv4) or 8 and 24 (IPv6, four 32-bit words each). For
    each word: ``ld [src]; tax; ld [dst]; jeq x, next, fail``; then ``ret #1``,
    ``ret #0``. Opcodes: 0x20 ld word absolute, 0x07 tax, 0x1d jeq x, 0x06 ret k.
    """
    src, dst, words = (12, 16, 1) if family == 4 else (8, 24, 4)
    code: list[str] = []
    for i in range(words):
        fail = 4 * (words - i) - 3  # instructions to skip to reach "ret #0"
        code += [f"32 0 0 {src + 4 * i}", "7 0 0 0", f"32 0 0 {dst + 4 * i}", f"29 0 {fail} 0"]
    code += ["6 0 0 1", "6 0 0 0"]
    return ",".join([str(len(code)), *code])


@dataclass(frozen=True, slots=True)
class SameAddress:
    """``-m bpf --bytecode "..."``: the packet's source address equals its destination.

    No ipset type available everywhere compares two addresses of a packet with each
    other (``hash:net,net`` would, but kernels built without
    ``CONFIG_IP_SET_HASH_NETNET`` refuse it), so a tiny classic BPF program does;
    iptables-save prints the bytecode back exactly as written here.
    """

    family: Literal[4, 6]

    def __post_init__(self) -> None:
        if self.family not in (4, 6):
            raise IptablesModelError(f"family must be 4 or 6, got {self.family!r}")

    def to_fragment(self) -> tuple[Token, ...]:
        """The match's arguments."""
        return ("-m", "bpf", "--bytecode", Text(_same_address_program(self.family)))


@dataclass(frozen=True, slots=True)
class AddressMatch:
    """``-s CIDR`` or ``-d CIDR``: the packet's source or destination in one network.

    A field of the rule's IP header part, compared in place: about as cheap as
    ``-p``, where a set lookup costs several times more (docs/dataplane.md, "What a
    new connection costs"). ``cidr`` is spelled as iptables-save prints it
    (:func:`canonical_cidr`), so a diff against the kernel compares like with like.
    """

    cidr: str
    direction: Literal["src", "dst"]

    def __post_init__(self) -> None:
        if canonical_cidr(self.cidr) != self.cidr:
            raise IptablesModelError(f"{self.cidr!r} is not a canonical network")
        if self.direction not in ("src", "dst"):
            raise IptablesModelError(f"direction must be src or dst, got {self.direction!r}")

    def to_fragment(self) -> tuple[Token, ...]:
        """The match's arguments."""
        return ("-s" if self.direction == "src" else "-d", self.cidr)


def canonical_cidr(cidr: str) -> str:
    """``cidr`` as iptables-save prints it: host bits cleared, inet_ntop's spelling.

    Python's own spelling differs for IPv4-mapped IPv6 addresses (``::ffff:102:304``
    where inet_ntop prints ``::ffff:1.2.3.4``), so the address goes through inet_ntop.
    Raises :class:`IptablesModelError` for anything that is not a network.
    """
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise IptablesModelError(f"invalid network {cidr!r}: {exc}") from None
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    return f"{socket.inet_ntop(family, net.network_address.packed)}/{net.prefixlen}"


Match = (
    SetMatch
    | ProtoMatch
    | PortRange
    | ConntrackState
    | MarkMatch
    | LimitMatch
    | SameAddress
    | AddressMatch
)


@dataclass(frozen=True, slots=True)
class Comment:
    """``-m comment --comment TEXT``; every rule carries one (see :func:`Rule`)."""

    text: str

    def __post_init__(self) -> None:
        if not self.text or len(self.text.encode()) > MAX_COMMENT:
            raise IptablesModelError(f"comment must be 1-{MAX_COMMENT} bytes: {self.text!r}")
        quote(self.text)

    def to_fragment(self) -> tuple[Token, ...]:
        """The match's arguments."""
        return ("-m", "comment", "--comment", Text(self.text))


# --- actions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Jump:
    """``-j CHAIN``: evaluate CHAIN, then continue here when it returns."""

    chain: str

    def __post_init__(self) -> None:
        check_chain_name(self.chain)

    def to_fragment(self) -> tuple[Token, ...]:
        """The action's arguments."""
        return ("-j", self.chain)


@dataclass(frozen=True, slots=True)
class Goto:
    """``-g CHAIN``: continue in CHAIN; its end returns to this chain's caller."""

    chain: str

    def __post_init__(self) -> None:
        check_chain_name(self.chain)

    def to_fragment(self) -> tuple[Token, ...]:
        """The action's arguments."""
        return ("-g", self.chain)


@dataclass(frozen=True, slots=True)
class Return:
    """``-j RETURN``: stockade's "not my business" (it never ACCEPTs)."""

    def to_fragment(self) -> tuple[Token, ...]:
        """The action's arguments."""
        return ("-j", "RETURN")


@dataclass(frozen=True, slots=True)
class Drop:
    """``-j DROP``."""

    def to_fragment(self) -> tuple[Token, ...]:
        """The action's arguments."""
        return ("-j", "DROP")


@dataclass(frozen=True, slots=True)
class Reject:
    """``-j REJECT --reject-with WITH`` (the ICMP type depends on the family)."""

    with_: RejectWith

    def to_fragment(self) -> tuple[Token, ...]:
        """The action's arguments."""
        return ("-j", "REJECT", "--reject-with", self.with_)


@dataclass(frozen=True, slots=True)
class Log:
    """``-j LOG --log-prefix PREFIX`` (non-terminating); rate-limit with a LimitMatch."""

    prefix: str

    def __post_init__(self) -> None:
        if len(self.prefix.encode()) > MAX_LOG_PREFIX:
            raise IptablesModelError(f"LOG prefix longer than {MAX_LOG_PREFIX}: {self.prefix!r}")
        quote(self.prefix)

    def to_fragment(self) -> tuple[Token, ...]:
        """The action's arguments."""
        return ("-j", "LOG", "--log-prefix", Text(self.prefix))


@dataclass(frozen=True, slots=True)
class NFLog:
    """``-j NFLOG --nflog-prefix PREFIX --nflog-group N`` (non-terminating)."""

    group: int
    prefix: str

    def __post_init__(self) -> None:
        if not 0 <= self.group <= 65535:
            raise IptablesModelError(f"NFLOG group must be 0-65535, got {self.group}")
        if len(self.prefix.encode()) > MAX_NFLOG_PREFIX:
            raise IptablesModelError(
                f"NFLOG prefix longer than {MAX_NFLOG_PREFIX}: {self.prefix!r}"
            )
        quote(self.prefix)

    def to_fragment(self) -> tuple[Token, ...]:
        """The action's arguments."""
        # As iptables-save prints it: no empty prefix, no default group 0.
        prefix: tuple[Token, ...] = ("--nflog-prefix", Text(self.prefix)) if self.prefix else ()
        group: tuple[Token, ...] = ("--nflog-group", str(self.group)) if self.group else ()
        return ("-j", "NFLOG", *prefix, *group)


@dataclass(frozen=True, slots=True)
class SetMark:
    """``-j MARK --set-xmark VALUE/MASK`` (non-terminating): bits outside MASK are kept."""

    value: int
    mask: int

    def __post_init__(self) -> None:
        _check_mark(self.value, self.mask)

    def to_fragment(self) -> tuple[Token, ...]:
        """The action's arguments."""
        return ("-j", "MARK", "--set-xmark", f"{_hex(self.value)}/{_hex(self.mask)}")


@dataclass(frozen=True, slots=True)
class ClearMark:
    """Clear only the bits of ``mask`` (``--set-xmark 0x0/MASK``), leaving others' bits."""

    mask: int

    def __post_init__(self) -> None:
        _check_mark(0, self.mask)

    def to_fragment(self) -> tuple[Token, ...]:
        """The action's arguments."""
        return ("-j", "MARK", "--set-xmark", f"0x0/{_hex(self.mask)}")


Action = Jump | Goto | Return | Drop | Reject | Log | NFLog | SetMark | ClearMark
TERMINAL_ACTIONS = (Goto, Return, Drop, Reject)


# --- rules and chains ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """All of ``matches`` (in order), then ``action``; ``comment`` says whose and why."""

    matches: tuple[Match, ...]
    action: Action
    comment: str

    def __post_init__(self) -> None:
        _comment_text(self.comment)  # validates length and characters (once per text)
        protos = [m.protocol for m in self.matches if isinstance(m, ProtoMatch)]
        if len(protos) > 1:
            raise IptablesModelError(f"a rule takes one -p, got {protos}")
        dirs = [m.direction for m in self.matches if isinstance(m, AddressMatch)]
        if len(dirs) != len(set(dirs)):
            raise IptablesModelError(f"a rule takes one -s and one -d, got {dirs}")
        for m in self.matches:
            # -m tcp/-m multiport need the protocol fixed earlier in the same rule.
            if isinstance(m, PortRange) and protos != [m.protocol]:
                raise IptablesModelError(f"port match for {m.protocol} without -p {m.protocol}")


@dataclass(frozen=True, slots=True)
class Chain:
    """A chain stockade owns: its name (``STK-`` prefix) and its rules in order."""

    name: str
    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        check_chain_name(self.name)


def _saved_order(rule: Rule) -> list[Match]:
    # iptables-save prints the IP header part of the entry (-s, -d, then -p) before
    # every -m match, whatever order the rule was written in; so do we.
    head: list[Match] = []
    for kind in ("src", "dst"):
        head += [m for m in rule.matches if isinstance(m, AddressMatch) and m.direction == kind]
    head += [m for m in rule.matches if isinstance(m, ProtoMatch)]
    return [*head, *(m for m in rule.matches if not isinstance(m, AddressMatch | ProtoMatch))]


def _parts(rule: Rule) -> list[Match | Comment | Action]:
    return [*_saved_order(rule), Comment(rule.comment), rule.action]


def _check_tokens(tokens: tuple[Token, ...], where: object) -> None:
    for token in tokens:
        if isinstance(token, str) and not _SAFE_TOKEN.match(token):
            raise IptablesModelError(f"unsafe token {token!r} in rule {where!r}")


def rule_tokens(rule: Rule) -> tuple[Token, ...]:
    """A rule's arguments after ``-A CHAIN``: matches, the comment, the action."""
    tokens = tuple(t for part in _parts(rule) for t in part.to_fragment())
    _check_tokens(tokens, rule)
    return tokens


@functools.lru_cache(maxsize=1 << 16)
def _comment_text(text: str) -> str:
    return _part_text(Comment(text))


@functools.lru_cache(maxsize=1 << 16)
def _part_text(part: Match | Comment | Action) -> str:
    """One match's, comment's or action's text, checked and quoted once.

    A node's rules share most of their parts (the same set, port, mark or goto in
    thousands of rules): caching the text of each part made the diff text of a big
    node (40,000 rules) about three times cheaper. Parts are frozen, so equal parts
    have equal text.
    """
    tokens = part.to_fragment()
    _check_tokens(tokens, part)
    return " ".join(quote(t.value) if isinstance(t, Text) else t for t in tokens)


def rule_argv(rule: Rule) -> list[str]:
    """The rule as argv for ``iptables -C/-I CHAIN ...`` (no shell, so no quoting)."""
    return [t.value if isinstance(t, Text) else t for t in rule_tokens(rule)]


def render_rule(chain: str, rule: Rule, *, insert_at: int | None = None) -> str:
    """One line of iptables-restore input: ``-A CHAIN ...`` (or ``-I CHAIN N ...``)."""
    check_chain_name(chain, owned=False)
    head = f"-A {chain}" if insert_at is None else f"-I {chain} {insert_at}"
    matches = " ".join(map(_part_text, _saved_order(rule)))
    comment = _comment_text(rule.comment)
    action = _part_text(rule.action)
    return f"{head} {matches} {comment} {action}" if matches else f"{head} {comment} {action}"


def render_restore(chains: tuple[Chain, ...], table: str = "filter") -> str:
    """iptables-restore input declaring (and so flushing) ``chains`` and filling them.

    Meant for ``--noflush``: only the chains named here are touched, and the whole
    table is committed at once, so no flushed chain is ever visible.
    """
    names = [c.name for c in chains]
    if len(set(names)) != len(names):
        raise IptablesModelError(f"duplicate chain names in {names}")
    known = set(names)
    lines = [f"*{table}"]
    lines.extend(f":{c.name} - [0:0]" for c in chains)
    for chain in chains:
        for rule in chain.rules:
            target = rule.action
            if isinstance(target, Jump | Goto) and target.chain not in known:
                # iptables-restore would fail on it; say which rule, here.
                raise IptablesModelError(f"{chain.name} jumps to undeclared chain {target.chain}")
            lines.append(render_rule(chain.name, rule))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def multiport_slots(ranges: tuple[tuple[int, int], ...]) -> int:
    """How many of multiport's 15 slots ``ranges`` take (a range a:b takes two)."""
    return sum(1 if a == b else 2 for a, b in ranges)


def split_multiport(ranges: list[tuple[int, int]]) -> list[tuple[tuple[int, int], ...]]:
    """Split sorted port ranges into chunks that each fit one multiport match."""
    chunks: list[tuple[tuple[int, int], ...]] = []
    current: list[tuple[int, int]] = []
    used = 0
    for first, last in ranges:
        cost = 1 if first == last else 2
        if used + cost > MULTIPORT_SLOTS:
            chunks.append(tuple(current))
            current, used = [], 0
        current.append((first, last))
        used += cost
    if current:
        chunks.append(tuple(current))
    return chunks
