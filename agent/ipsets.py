"""A typed model of the ipsets stockade owns, and their ``ipset restore`` text.

Purely computational: the applier (I/O) feeds the text to ``ipset restore`` (or
turns the same data into netlink calls).

Every set stockade owns is named ``stk-<kind><family>-<hash>``, all lowercase:

============  ===============  ===================================================
kind          type             members
============  ===============  ===================================================
``peer``      hash:ip          the pods of a PeerSet (all shards), one family
``cidr``      hash:net         an ipBlock's CIDR, its excepts as ``nomatch``
``tport``     hash:ip,port     the local pods declaring a named port (name, protocol)
``pport``     hash:ip,port     the pods of a named-port PeerSet, with the number
``ig``        hash:ip          the local pods of one ingress policy group
``eg``        hash:ip          the local pods of one egress policy group
``it``        hash:ip          the pods of every ingress group below one node of
                               the dispatch tree (the root's: every isolated pod)
``et``        hash:ip          the same for egress
============  ===============  ===================================================

``<hash>`` is 16 hex digits of a hash of what the set stands for (never of its
members), so a name is stable while its members churn. A name is at most 27
characters so that the temporary twin used for an atomic swap (``<name>-tmp``)
still fits ipset's 31.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from stockade.ruleset import stable_hash

SET_PREFIX = "stk-"
MAX_SET_NAME = 31  # IPSET_MAXNAMELEN is 32 bytes with the NUL
TMP_SUFFIX = "-tmp"
MAX_BASE_NAME = MAX_SET_NAME - len(TMP_SUFFIX)
DEFAULT_MAXELEM = 65536

SetType = Literal["hash:ip", "hash:net", "hash:ip,port"]
SetFamily = Literal["inet", "inet6"]
IPFamily = Literal[4, 6]
SetKind = Literal[
    "peer",
    "cidr",
    "tport",
    "pport",
    "ig",
    "eg",
    "it",
    "et",
    "new",
    "dup",
    # ClusterNetworkPolicy tiers: Admin/Baseline groups and dispatch trees per direction,
    # and the link-local/multicast addresses STK-INPUT leaves alone (IPv6).
    "aig",
    "aeg",
    "ait",
    "aet",
    "big",
    "beg",
    "bit",
    "bet",
    # ... and with tiers, the dispatch to a pod's path through them (per direction)
    "teg",
    "tig",
    "tet",
    "tit",
    "link",
]

SET_TYPES: tuple[SetType, ...] = ("hash:ip", "hash:net", "hash:ip,port")
_NAME_RE = re.compile(r"^stk-[a-z0-9-]+$")
_PORT_PROTOS = ("tcp", "udp", "sctp")


class IPSetModelError(ValueError):
    """A set or member that ipset would refuse, or that stockade must not own."""


def set_family(family: IPFamily) -> SetFamily:
    """ipset's family name for IP version ``family``."""
    return "inet" if family == 4 else "inet6"


def set_name(kind: SetKind, family: IPFamily, key: Any) -> str:
    """The deterministic name of a set: ``stk-<kind><family>-<hash of key>``."""
    return digest_set_name(kind, family, stable_hash(key, 16))


def digest_set_name(kind: SetKind, family: IPFamily, digest: str) -> str:
    """``stk-<kind><family>-<digest>``, for a digest that also names a chain."""
    return check_set_name(f"{SET_PREFIX}{kind}{family}-{digest}")


def check_set_name(name: str) -> str:
    """Validate a set name: stockade's prefix, lowercase, room for the ``-tmp`` twin."""
    if len(name) > MAX_BASE_NAME or not _NAME_RE.match(name) or name.endswith(TMP_SUFFIX):
        raise IPSetModelError(
            f"invalid set name {name!r}: '{SET_PREFIX}' then [a-z0-9-], "
            f"at most {MAX_BASE_NAME} characters, not ending in {TMP_SUFFIX}"
        )
    return name


def maxelem_for(count: int) -> int:
    """The ``maxelem`` of a set created for ``count`` members.

    At least twice the members (room for churn by netlink before the set must be
    swapped for a bigger one), a power of two, and never below ipset's usual 65536.
    A set that outgrows its ``maxelem`` is refilled as a twin and swapped in (plan).
    """
    size = DEFAULT_MAXELEM
    while size < 2 * count:
        size *= 2
    return size


def temp_name(name: str) -> str:
    """The temporary twin filled before an atomic ``swap``."""
    return check_set_name(name) + TMP_SUFFIX


@dataclass(frozen=True, slots=True)
class Member:
    """One entry; ``nomatch`` (hash:net only) carves an exception out of a wider net."""

    value: str
    nomatch: bool = False


def _ip(text: str, family: IPFamily) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(text)
    if addr.version != family:
        raise ValueError(f"{text} is not IPv{family}")
    return addr


def canonical_ipv4(text: str) -> int | None:
    """The address as an int if ``text`` is an IPv4 address in canonical form, else None.

    The cheap check for the common case (tens of thousands of members per apply):
    ``inet_pton`` refuses leading zeros and anything but four decimal octets, and
    ``inet_ntop`` of the result equals ``text`` exactly when ``text`` is canonical.
    Anything else (IPv6, errors) takes the ``ipaddress`` path.
    """
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return None
    if socket.inet_ntop(socket.AF_INET, packed) != text:
        return None
    return int.from_bytes(packed, "big")


def parse_ip(text: str) -> tuple[IPFamily, str]:
    """IP version and canonical text of an address; raises ValueError when invalid."""
    if canonical_ipv4(text) is not None:
        return 4, text
    addr = ipaddress.ip_address(text)
    return (4 if addr.version == 4 else 6), str(addr)


def member_key(kind: SetType, family: IPFamily, value: str) -> tuple[int, int, str, int]:
    """Parse and validate ``value`` for a set of ``kind``; also its sort key."""
    if family == 4 and kind != "hash:net":  # the fast path; errors take the slow one
        ip_text, _, proto_port = value.rpartition(",") if kind == "hash:ip,port" else ("", "", "")
        fast = canonical_ipv4(value if kind == "hash:ip" else ip_text)
        if fast is not None and kind == "hash:ip":
            return (fast, 0, "", 0)
        proto, _, port_text = proto_port.partition(":")
        if (
            fast is not None
            and proto in _PORT_PROTOS
            and port_text.isascii()
            and port_text.isdigit()
            and str(int(port_text)) == port_text
            and 1 <= int(port_text) <= 65535
        ):
            return (fast, 0, proto, int(port_text))
    try:
        if kind == "hash:ip":
            addr = _ip(value, family)
            canonical, key = str(addr), (int(addr), 0, "", 0)
        elif kind == "hash:net":
            net = ipaddress.ip_network(value, strict=True)
            if net.version != family or net.prefixlen == 0:
                # ipset's hash:net refuses /0: split such a CIDR into two halves.
                raise ValueError(f"{value} must be an IPv{family} network with prefix >= 1")
            canonical, key = str(net), (int(net.network_address), net.prefixlen, "", 0)
        else:
            ip_text, _, proto_port = value.rpartition(",")
            proto, _, port_text = proto_port.partition(":")
            port = int(port_text)
            if proto not in _PORT_PROTOS or not 1 <= port <= 65535:
                raise ValueError(f"{proto_port} is not proto:port (tcp, udp or sctp)")
            addr = _ip(ip_text, family)
            canonical, key = f"{addr},{proto}:{port}", (int(addr), 0, proto, port)
    except ValueError as exc:
        raise IPSetModelError(f"invalid {kind} IPv{family} member {value!r}: {exc}") from None
    if canonical != value:
        raise IPSetModelError(f"member {value!r} is not in canonical form {canonical!r}")
    return key


@dataclass(frozen=True, slots=True)
class IPSet:
    """A set stockade owns; members unique and sorted, so its text is byte-stable.

    Build one with :func:`make_set`, which canonicalises members first.
    """

    name: str
    type: SetType
    family: SetFamily
    members: tuple[Member, ...]
    maxelem: int = DEFAULT_MAXELEM

    def __post_init__(self) -> None:
        check_set_name(self.name)
        if self.type not in SET_TYPES or self.family not in ("inet", "inet6"):
            raise IPSetModelError(f"set {self.name}: bad type/family {self.type} {self.family}")
        if len(self.members) > self.maxelem:
            raise IPSetModelError(f"set {self.name}: {len(self.members)} > maxelem {self.maxelem}")
        fam: IPFamily = 4 if self.family == "inet" else 6
        if fam == 4 and self.type == "hash:ip" and _canonical_sorted_ipv4(self.members):
            return
        keys = []
        for m in self.members:
            if m.nomatch and self.type != "hash:net":
                raise IPSetModelError(f"set {self.name}: nomatch is for hash:net only")
            keys.append(member_key(self.type, fam, m.value))
        if keys != sorted(set(keys)):
            raise IPSetModelError(f"set {self.name}: members must be unique and sorted")

    @property
    def ip_family(self) -> IPFamily:
        """4 or 6."""
        return 4 if self.family == "inet" else 6


def _canonical_sorted_ipv4(members: tuple[Member, ...]) -> bool:
    """Whether ``members`` are canonical IPv4 addresses, strictly ascending, no nomatch.

    The same verdict as the general check (``member_key`` on each, then sorted and
    unique) for the sets that hold most members (pod addresses), in a third of the
    time: packed addresses compare in numeric order. False sends the caller to the
    general check, which says what is wrong.
    """
    pton, ntop, af = socket.inet_pton, socket.inet_ntop, socket.AF_INET
    try:
        packed = [pton(af, m.value) for m in members]
    except OSError:
        return False
    if any(m.nomatch or ntop(af, p) != m.value for m, p in zip(members, packed, strict=True)):
        return False
    return all(a < b for a, b in itertools.pairwise(packed))


def make_set(name: str, type_: SetType, family: IPFamily, members: Iterable[Member]) -> IPSet:
    """An :class:`IPSet` with ``members`` deduplicated (``nomatch`` wins) and sorted."""
    by_value: dict[str, bool] = {}
    for m in members:
        by_value[m.value] = by_value.get(m.value, False) or m.nomatch
    ordered = sorted(by_value.items(), key=lambda kv: member_key(type_, family, kv[0]))
    return IPSet(
        name,
        type_,
        set_family(family),
        tuple(Member(v, n) for v, n in ordered),
        maxelem_for(len(ordered)),
    )


def _create_line(name: str, s: IPSet) -> str:
    return f"create {name} {s.type} family {s.family} maxelem {s.maxelem} -exist"


def _add_lines(name: str, s: IPSet) -> list[str]:
    return [f"add {name} {m.value}{' nomatch' if m.nomatch else ''}" for m in s.members]


def render_sets(sets: Iterable[IPSet]) -> str:
    """A readable, declarative listing: create (if missing), flush, add, per set.

    Not atomic per set (a set is briefly empty between flush and adds), so the
    applier uses it only for sets no rule refers to yet; otherwise
    :func:`render_swap`. Also the form the golden tests compare.
    """
    lines: list[str] = []
    for s in sorted(sets, key=lambda s: s.name):
        lines.append(_create_line(s.name, s))
        lines.append(f"flush {s.name}")
        lines.extend(_add_lines(s.name, s))
    return "\n".join(lines) + ("\n" if lines else "")


def render_swap(sets: Iterable[IPSet]) -> str:
    """``ipset restore`` input that replaces each set atomically.

    For each set: build the ``-tmp`` twin from scratch, make sure the live set
    exists, ``swap`` the two (one kernel operation, so a lookup sees the old or the
    new contents, never a mix or nothing), then destroy the twin. ``swap`` needs the
    same type and family, which the name guarantees (both are part of it).
    """
    lines: list[str] = []
    for s in sorted(sets, key=lambda s: s.name):
        tmp = temp_name(s.name)
        lines.append(_create_line(tmp, s))
        lines.append(f"flush {tmp}")
        lines.extend(_add_lines(tmp, s))
        lines.append(_create_line(s.name, s))
        lines.append(f"swap {tmp} {s.name}")
        lines.append(f"destroy {tmp}")
    return "\n".join(lines) + ("\n" if lines else "")


def supports_churn(set_type: str) -> bool:
    """Whether members of ``set_type`` sets can be changed one by one (by netlink)."""
    return set_type in ("hash:ip", "hash:ip,port")


@dataclass(frozen=True)
class MemberChange:
    """Add (or delete) one member of one set."""

    set_name: str
    set_type: str
    value: str
    add: bool
