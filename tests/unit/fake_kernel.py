"""A stateful stand-in for the kernel the applier writes to, for unit tests (no root).

:class:`FakeKernel` implements :class:`stockade.agent.kernel.Kernel`. It parses what
the applier sends (``ipset restore`` text, ``iptables-restore --noflush`` text per
family and backend, netlink member changes), holds the resulting state, answers
``ipset save`` and ``iptables-save`` in the format the kernel tools print (and
:mod:`stockade.agent.live` parses), and records every call in order.

It refuses what the kernel refuses, with the error the real executor raises
(:class:`~stockade.agent.executor.CommandError`):

- a rule naming a set that does not exist (yet), or a jump to a chain that does not;
- destroying a set a rule refers to; swapping sets of another type or family;
  creating a set that exists with other parameters; adding past ``maxelem``;
  adding a member twice or deleting a missing one (without ``-exist``);
- deleting a chain that a rule refers to, that still has rules, or a built-in one;
- ``-D`` of a rule that is not there; a rule in a chain that does not exist.

Like the tools: an ``iptables-restore`` table is all or nothing (nothing of it
applies unless its ``COMMIT`` is reached without error), while ``ipset restore``
applies its lines in order and stops at the first error (the lines before it stay,
as ipset does). One check is stricter than the kernel, which silently never matches
instead: a rule naming a set of the other IP family is refused.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from stockade.agent.executor import CommandError, is_read
from stockade.agent.ipsets import MAX_SET_NAME, MemberChange, supports_churn
from stockade.agent.netlink import Flow

SET_TYPES = ("hash:ip", "hash:net", "hash:ip,port")
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}
# Targets provided by extensions: anything else after -j/-g must be a chain.
EXTENSION_TARGETS = frozenset(
    {"ACCEPT", "DROP", "RETURN", "QUEUE", "REJECT", "LOG", "NFLOG", "MARK", "CONNMARK"}
    | {"MASQUERADE", "SNAT", "DNAT", "CT", "NOTRACK", "TRACE"}
)
MAX_CHAIN_NAME = 28
_TOOL_RE = re.compile(r"^(ip6?tables)(?:-(nft|legacy))?-(save|restore)$")


class KernelRefusal(Exception):
    """A line the kernel refuses; turned into a :class:`CommandError` by the caller."""


# ---------------------------------------------------------------------- the record


@dataclass
class Call:
    """One call the kernel received, in order; ``error`` is set when it was refused."""

    method: str  # run, change_members, flows, local_addresses or delete_flows
    argv: tuple[str, ...] = ()
    stdin: str | None = None
    changes: tuple[MemberChange, ...] = ()
    flows: tuple[Flow, ...] = ()
    error: str | None = None

    @property
    def writes(self) -> bool:
        """Whether the call may change the kernel's state."""
        if self.method == "run":
            return not is_read(self.argv)
        return self.method in ("change_members", "delete_flows")

    @property
    def tool(self) -> str:
        """The tool run (``argv[0]``), or the method for netlink and conntrack calls."""
        return self.argv[0] if self.argv else self.method


# ---------------------------------------------------------------------- ipsets


@dataclass
class FakeSet:
    """One set: creation parameters and members (canonical value -> nomatch)."""

    name: str
    type: str
    family: str
    maxelem: int
    members: dict[str, bool] = field(default_factory=dict)

    @property
    def ip_version(self) -> int:
        """4 or 6."""
        return 4 if self.family == "inet" else 6


def canonical_member(kind: str, family: str, value: str) -> str:
    """``value`` as the kernel stores it in a set of ``kind`` and ``family``."""
    version = 4 if family == "inet" else 6
    try:
        if kind == "hash:ip":
            text = str(ipaddress.ip_address(value))
        elif kind == "hash:net":
            net = ipaddress.ip_network(value, strict=False)
            if net.prefixlen == 0:
                raise KernelRefusal("The value of the CIDR parameter of the IP address is invalid")
            text, value = str(net), str(net.network_address)
        else:
            address, _, proto_port = value.rpartition(",")
            proto, _, port = proto_port.partition(":")
            if proto not in PORT_PROTOCOLS or not port.isdigit() or int(port) > 65535:
                raise KernelRefusal(f"Syntax error: cannot parse {value!r} as ip,proto:port")
            text, value = f"{ipaddress.ip_address(address)},{proto}:{int(port)}", address
    except ValueError as exc:
        raise KernelRefusal(f"Syntax error: {exc}") from None
    if ipaddress.ip_address(value.split("/")[0]).version != version:
        raise KernelRefusal(f"Syntax error: {value!r} is not of the set's family {family}")
    return text


def saved_member(kind: str, value: str) -> str:
    """A member as ``ipset save`` prints it: a full-length hash:net prefix bare."""
    if kind == "hash:net" and value.endswith(("/32", "/128")):
        net = ipaddress.ip_network(value)
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
    return value


# ---------------------------------------------------------------------- iptables


def rule_tokens(spec: str) -> list[str]:
    """Split a rule as iptables-restore does: words, or double-quoted text."""
    tokens: list[str] = []
    current: list[str] = []
    quoted = escaped = started = False
    for char in spec:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted, started = not quoted, True
        elif char.isspace() and not quoted:
            if started:
                tokens.append("".join(current))
            current, started = [], False
        else:
            current.append(char)
            started = True
    if quoted:
        raise KernelRefusal("unterminated quoted string")
    if started:
        tokens.append("".join(current))
    return tokens


def _after(tokens: Sequence[str], *flags: str) -> Iterator[str]:
    """Every token following one of ``flags``."""
    for i, token in enumerate(tokens[:-1]):
        if token in flags:
            yield tokens[i + 1]


def referenced_sets(spec: str) -> set[str]:
    """The sets a rule names (``--match-set NAME``)."""
    return set(_after(rule_tokens(spec), "--match-set"))


def referenced_chains(spec: str) -> set[str]:
    """The chains a rule jumps or goes to (targets that are not extensions)."""
    targets = set(_after(rule_tokens(spec), "-j", "--jump", "-g", "--goto"))
    return targets - EXTENSION_TARGETS


@dataclass
class Table:
    """One table of one family: chains in creation order (name -> rule specs), policies."""

    name: str
    chains: dict[str, list[str]] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)

    @classmethod
    def empty(cls, name: str) -> Table:
        """The table as a fresh namespace holds it: built-in chains, ACCEPT, no rules."""
        builtins = BUILTIN_CHAINS.get(name)
        if builtins is None:
            raise KernelRefusal(f"can't initialize iptables table `{name}': Table does not exist")
        return cls(name, {c: [] for c in builtins}, dict.fromkeys(builtins, "ACCEPT"))

    def is_builtin(self, chain: str) -> bool:
        """Whether ``chain`` is one of the table's built-in chains."""
        return chain in self.policies

    def references(self, chain: str) -> int:
        """How many rules of the table jump or go to ``chain``."""
        return sum(chain in referenced_chains(s) for rules in self.chains.values() for s in rules)

    def sets(self) -> set[str]:
        """Every set the table's rules name."""
        return {
            name for rules in self.chains.values() for s in rules for name in referenced_sets(s)
        }

    def save(self, counters: bool = False) -> list[str]:
        """The table as iptables-save prints it: built-ins, then chains by name, then rules."""
        order = [*self.policies, *sorted(c for c in self.chains if not self.is_builtin(c))]
        lines = [f"*{self.name}"]
        lines += [f":{c} {self.policies.get(c, '-')} [0:0]" for c in order]
        prefix = "[0:0] " if counters else ""
        lines += [f"{prefix}-A {c} {spec}" for c in order for spec in self.chains[c]]
        lines.append("COMMIT")
        return lines


# ---------------------------------------------------------------------- the kernel


class FakeKernel:
    """A kernel with ipsets, filter tables per backend and family, and conntrack flows.

    ``backend``: what plain ``iptables-restore``/``-save`` (no backend in the name) use.
    """

    def __init__(self, backend: str = "nft") -> None:
        self.backend = backend
        self.sets: dict[str, FakeSet] = {}
        self.tables: dict[tuple[str, int], dict[str, Table]] = {}
        self.conntrack: list[Flow] = []
        # The node's own addresses (what a pod's flow to its node is sent to).
        self.addresses: set[str] = set()
        self.calls: list[Call] = []

    # ------------------------------------------------------------ the Kernel protocol

    def run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        """Run a tool against the state; raises :class:`CommandError` as the tool would."""
        call = self._record(Call("run", tuple(argv), stdin))
        try:
            return self._dispatch(list(argv), stdin or "")
        except KernelRefusal as exc:
            call.error = str(exc)
            raise CommandError(argv, 1, str(exc)) from None

    def change_members(self, changes: Sequence[MemberChange]) -> None:
        """Netlink member changes, one by one (``exclusive=False``: no error on no-ops)."""
        call = self._record(Call("change_members", changes=tuple(changes)))
        for change in changes:
            try:
                self._change_member(change)
            except KernelRefusal as exc:
                call.error = str(exc)
                op = "add" if change.add else "del"
                argv = ["netlink", "ipset", op, change.set_name, change.value]
                raise CommandError(argv, 1, str(exc)) from None

    def flows(self) -> list[Flow]:
        """The conntrack entries held."""
        self._record(Call("flows"))
        return list(self.conntrack)

    def local_addresses(self) -> set[str]:
        """The node's addresses, as a test set them."""
        self._record(Call("local_addresses"))
        return set(self.addresses)

    def delete_flows(self, flows: Iterable[Flow]) -> int:
        """Delete entries by original tuple; returns how many were there."""
        todo = tuple(flows)
        self._record(Call("delete_flows", flows=todo))
        keys = {_flow_key(f) for f in todo}
        kept = [f for f in self.conntrack if _flow_key(f) not in keys]
        deleted = len(self.conntrack) - len(kept)
        self.conntrack = kept
        return deleted

    # ------------------------------------------------------------ for tests

    def _record(self, call: Call) -> Call:
        self.calls.append(call)
        return call

    def writes(self) -> list[Call]:
        """The calls that may have changed the state, in order."""
        return [c for c in self.calls if c.writes]

    def table(self, family: int, name: str = "filter", backend: str | None = None) -> Table:
        """A table as held now (created empty on first use)."""
        tables = self.tables.setdefault((backend or self.backend, family), {})
        if name not in tables:
            tables[name] = Table.empty(name)
        return tables[name]

    def iptables_save(self, family: int, backend: str | None = None) -> str:
        """``iptables-save -t filter`` of ``family``, without recording a call."""
        return _text(
            ["# Generated by the fake kernel", *self.table(family, backend=backend).save()]
        )

    def ipset_save(self) -> str:
        """``ipset save``, without recording a call."""
        lines: list[str] = []
        for s in self.sets.values():
            lines.append(
                f"create {s.name} {s.type} family {s.family} hashsize 1024 maxelem {s.maxelem}"
            )
            for value in sorted(s.members):
                flag = " nomatch" if s.members[value] else ""
                lines.append(f"add {s.name} {saved_member(s.type, value)}{flag}")
        return _text(lines)

    def preload(self, argv: Sequence[str], stdin: str | None = None) -> str:
        """Run a command to set up a state, then forget it was called."""
        out = self.run(argv, stdin)
        self.calls.pop()
        return out

    # ------------------------------------------------------------ commands

    def _dispatch(self, argv: list[str], stdin: str) -> str:
        tool = argv[0].rsplit("/", 1)[-1]
        if tool == "ipset":
            return self._ipset(argv[1:], stdin)
        if tool == "conntrack":
            return self._conntrack(argv[1:])
        match = _TOOL_RE.match(tool)
        if match is None:
            raise KernelRefusal(f"fake kernel: no such tool {tool!r}")
        family = 6 if match[1] == "ip6tables" else 4
        backend = match[2] or self.backend
        if match[3] == "save":
            return self._iptables_save(family, backend, argv[1:])
        return self._iptables_restore(family, backend, argv[1:], stdin)

    def _ipset(self, args: list[str], stdin: str) -> str:
        if args == ["save"]:
            return self.ipset_save()
        if args == ["restore"]:
            self._ipset_restore(stdin)
            return ""
        if args[:1] == ["list"] and "-n" in args:
            return _text(list(self.sets))
        if args[:1] in (["destroy"], ["flush"], ["create"], ["add"], ["del"], ["swap"]):
            flags = ("-exist", "-!")
            self._ipset_line([a for a in args if a not in flags], any(f in args for f in flags))
            return ""
        raise KernelRefusal(f"fake kernel: unsupported ipset command {args}")

    def _conntrack(self, args: list[str]) -> str:
        if args[:1] not in (["-L"], ["--dump"]):
            raise KernelRefusal(f"fake kernel: unsupported conntrack command {args}")
        version = 6 if "ipv6" in args else 4
        return _text([_conntrack_line(f) for f in self.conntrack if f.family == version])

    # ------------------------------------------------------------ ipset restore

    def _ipset_restore(self, text: str) -> None:
        """Line by line, stopping at the first error: the lines before it stay (as ipset)."""
        for number, raw in enumerate(text.splitlines(), 1):
            words = raw.split()
            if not words or words[0].startswith("#"):
                continue
            exist = "-exist" in words or "-!" in words
            try:
                self._ipset_line([w for w in words if w not in ("-exist", "-!")], exist)
            except KernelRefusal as exc:
                raise KernelRefusal(f"ipset v7.19: Error in line {number}: {exc}") from None

    def _ipset_line(self, words: list[str], exist: bool) -> None:
        command, args = words[0], words[1:]
        handlers = {
            "create": self._create,
            "add": self._add,
            "del": self._del,
            "destroy": self._destroy,
            "flush": self._flush,
            "swap": self._swap,
        }
        if command not in handlers or (not args and command != "destroy"):
            raise KernelRefusal(f"Syntax error: unknown or incomplete command {words}")
        handlers[command](args, exist)

    def _set(self, name: str) -> FakeSet:
        found = self.sets.get(name)
        if found is None:
            raise KernelRefusal(f"The set with the given name does not exist: {name}")
        return found

    def _create(self, args: list[str], exist: bool) -> None:
        if len(args) < 2 or len(args) % 2:
            raise KernelRefusal(
                f"Syntax error: create needs a name, a type and option pairs: {args}"
            )
        name, kind = args[0], args[1]
        options = dict(zip(args[2::2], args[3::2], strict=True))
        if len(name) > MAX_SET_NAME:
            raise KernelRefusal(f"Syntax error: setname '{name}' is longer than {MAX_SET_NAME}")
        if kind not in SET_TYPES:
            raise KernelRefusal(f"Syntax error: typename '{kind}' is unknown")
        family = options.get("family", "inet")
        if family not in ("inet", "inet6"):
            raise KernelRefusal(f"Syntax error: unknown family {family}")
        wanted = FakeSet(name, kind, family, int(options.get("maxelem", "65536")))
        have = self.sets.get(name)
        if have is not None:
            same = (have.type, have.family, have.maxelem) == (kind, family, wanted.maxelem)
            if not (exist and same):
                raise KernelRefusal("Set cannot be created: set with the same name already exists")
            return
        self.sets[name] = wanted

    def _entry(self, args: list[str]) -> tuple[FakeSet, str, bool]:
        target = self._set(args[0])
        if len(args) < 2 or len(args) > 3 or (len(args) == 3 and args[2] != "nomatch"):
            raise KernelRefusal(f"Syntax error: bad element {args[1:]}")
        nomatch = len(args) == 3
        if nomatch and target.type != "hash:net":
            raise KernelRefusal(f"Syntax error: nomatch is for hash:net, not {target.type}")
        return target, canonical_member(target.type, target.family, args[1]), nomatch

    def _add(self, args: list[str], exist: bool) -> None:
        target, value, nomatch = self._entry(args)
        if value in target.members and not exist:
            raise KernelRefusal("Element cannot be added to the set: it's already added")
        self._put(target, value, nomatch)

    def _put(self, target: FakeSet, value: str, nomatch: bool) -> None:
        if value not in target.members and len(target.members) >= target.maxelem:
            raise KernelRefusal(f"Hash is full, cannot add more elements to {target.name}")
        target.members[value] = nomatch

    def _del(self, args: list[str], exist: bool) -> None:
        target, value, _ = self._entry(args)
        if value not in target.members and not exist:
            raise KernelRefusal("Element cannot be deleted from the set: it's not added")
        target.members.pop(value, None)

    def _destroy(self, args: list[str], exist: bool) -> None:
        del exist
        names = args or list(self.sets)
        used = self._sets_in_use()
        for name in names:
            self._set(name)
            if name in used:
                raise KernelRefusal(
                    f"Set cannot be destroyed: it is in use by a kernel component: {name}"
                )
        for name in names:
            del self.sets[name]

    def _flush(self, args: list[str], exist: bool) -> None:
        del exist
        self._set(args[0]).members.clear()

    def _swap(self, args: list[str], exist: bool) -> None:
        del exist
        if len(args) != 2:
            raise KernelRefusal(f"Syntax error: swap needs two sets: {args}")
        first, second = self._set(args[0]), self._set(args[1])
        if (first.type, first.family) != (second.type, second.family):
            raise KernelRefusal("The sets cannot be swapped: their type does not match")
        # The rules keep naming the same set; what they see is the other's content.
        first.members, second.members = second.members, first.members
        first.maxelem, second.maxelem = second.maxelem, first.maxelem

    def _sets_in_use(self) -> set[str]:
        return {
            name for tables in self.tables.values() for t in tables.values() for name in t.sets()
        }

    # ------------------------------------------------------------ netlink

    def _change_member(self, change: MemberChange) -> None:
        target = self._set(change.set_name)
        if not supports_churn(target.type) or change.set_type != target.type:
            raise KernelRefusal(
                f"netlink churn of {change.set_type} into {target.name}, a {target.type} set"
            )
        value = canonical_member(target.type, target.family, change.value)
        if change.add:
            self._put(target, value, False)
        else:
            target.members.pop(value, None)

    # ------------------------------------------------------------ iptables

    def _iptables_save(self, family: int, backend: str, args: list[str]) -> str:
        counters = "-c" in args or "--counters" in args
        names = list(_after(args, "-t", "--table"))
        tables = self.tables.setdefault((backend, family), {})
        if not names:
            names = list(tables) or ["filter"]
        lines = ["# Generated by the fake kernel"]
        for name in names:
            held = tables.get(name) or Table.empty(name)
            lines += held.save(counters)
        return _text(lines)

    def _iptables_restore(self, family: int, backend: str, args: list[str], text: str) -> str:
        noflush = "--noflush" in args or "-n" in args
        known = {"--noflush", "-n", "-w", "--wait", "-W", "--wait-interval", "-c", "--counters"}
        if any(a not in known and not a.isdigit() for a in args):
            raise KernelRefusal(f"fake kernel: unknown iptables-restore option in {args}")
        held = self.tables.setdefault((backend, family), {})
        restore = _Restore(self, family, noflush)
        for number, raw in enumerate(text.splitlines(), 1):
            try:
                done = restore.line(raw.strip(), held)
            except KernelRefusal as exc:
                raise KernelRefusal(f"{exc}\nError occurred at line: {number}") from None
            if done is not None:
                held[done.name] = done  # COMMIT: the table, all at once
        if restore.open is not None:
            raise KernelRefusal(f"COMMIT expected at line {len(text.splitlines()) + 1}")
        return ""


class _Restore:
    """One iptables-restore run: the table being edited, applied only at COMMIT."""

    def __init__(self, kernel: FakeKernel, family: int, noflush: bool) -> None:
        self.kernel = kernel
        self.family = family
        self.noflush = noflush
        self.open: Table | None = None

    def line(self, line: str, held: dict[str, Table]) -> Table | None:
        """Apply one line to the open table; the table when the line commits it."""
        if not line or line.startswith("#"):
            return None
        if line.startswith("*"):
            name = line[1:]
            if self.open is not None:
                raise KernelRefusal(f"table {name} opened before COMMIT of {self.open.name}")
            current = held.get(name) or Table.empty(name)
            # Without --noflush the whole table is replaced: all of it flushed, every
            # user chain deleted, whoever owns it.
            self.open = copy.deepcopy(current) if self.noflush else Table.empty(name)
            return None
        table = self.open
        if table is None:
            raise KernelRefusal(f"line outside a table: {line!r}")
        if line == "COMMIT":
            self._check(table)
            self.open = None
            return table
        if line.startswith(":"):
            self._declare(table, line[1:].split())
        else:
            self._command(table, line)
        return None

    def _declare(self, table: Table, words: list[str]) -> None:
        name, policy = words[0], words[1] if len(words) > 1 else "-"
        if table.is_builtin(name):
            if policy not in ("ACCEPT", "DROP"):
                raise KernelRefusal(f"Bad built-in chain policy {policy} for {name}")
            table.policies[name] = policy  # a built-in chain is not flushed by --noflush
            return
        _check_chain_name(name)
        if policy != "-":
            raise KernelRefusal(f"Can't set policy `{policy}' on non-builtin chain {name}")
        table.chains[name] = []  # created, or flushed when it exists

    def _command(self, table: Table, line: str) -> None:
        words = line.split(None, 2)
        op = words[0]
        chain = words[1] if len(words) > 1 else None
        rest = words[2] if len(words) > 2 else ""
        if op in ("-A", "--append", "-I", "--insert") and chain is not None:
            self._add(table, op, chain, rest)
        elif op in ("-D", "--delete") and chain is not None:
            self._delete(table, chain, rest)
        elif op in ("-F", "--flush"):
            for name in [chain] if chain else list(table.chains):
                self._chain(table, name).clear()
        elif op in ("-X", "--delete-chain"):
            for name in [chain] if chain else [c for c in table.chains if not table.is_builtin(c)]:
                self._remove_chain(table, name)
        elif op in ("-N", "--new-chain") and chain is not None:
            if chain in table.chains:
                raise KernelRefusal(f"Chain already exists: {chain}")
            _check_chain_name(chain)
            table.chains[chain] = []
        else:
            raise KernelRefusal(f"fake kernel: unsupported restore line {line!r}")

    def _chain(self, table: Table, name: str) -> list[str]:
        rules = table.chains.get(name)
        if rules is None:
            raise KernelRefusal(f"No chain/target/match by that name: chain {name}")
        return rules

    def _add(self, table: Table, op: str, chain: str, rest: str) -> None:
        rules = self._chain(table, chain)
        position = len(rules)
        if op in ("-I", "--insert"):
            head, _, tail = rest.partition(" ")
            position = 0
            if head.isdigit():
                position, rest = int(head) - 1, tail
            if not 0 <= position <= len(rules):
                raise KernelRefusal(f"Index of insertion too big: {position + 1} in {chain}")
        self._check_rule(table, rest)
        # Kept as sent: stockade writes rules in the form iptables-save prints back.
        rules.insert(position, rest.strip())

    def _check_rule(self, table: Table, spec: str) -> None:
        for target in referenced_chains(spec):
            if target not in table.chains:
                raise KernelRefusal(f"Couldn't load target `{target}':No such file or directory")
            if table.is_builtin(target):
                raise KernelRefusal(f"cannot jump to built-in chain {target}")
        for name in referenced_sets(spec):
            have = self.kernel.sets.get(name)
            if have is None:
                raise KernelRefusal(f"Set {name} doesn't exist.")
            if have.ip_version != self.family:
                raise KernelRefusal(
                    f"Set {name} is of family {have.family}, the rule is IPv{self.family}"
                )

    def _delete(self, table: Table, chain: str, spec: str) -> None:
        rules = self._chain(table, chain)
        if spec.isdigit():
            if not 1 <= int(spec) <= len(rules):
                raise KernelRefusal(f"Index of deletion too big: {spec} in {chain}")
            del rules[int(spec) - 1]
            return
        wanted = rule_tokens(spec)
        for i, have in enumerate(rules):
            if rule_tokens(have) == wanted:
                del rules[i]
                return
        raise KernelRefusal(f"Bad rule (does a matching rule exist in that chain?): {chain}")

    def _remove_chain(self, table: Table, name: str) -> None:
        rules = self._chain(table, name)
        if table.is_builtin(name):
            raise KernelRefusal(f"Can't delete built-in chain {name}")
        if rules:
            raise KernelRefusal(f"Directory not empty: chain {name} still has rules")
        if table.references(name):
            raise KernelRefusal(f"Too many links: chain {name} is still referenced")
        del table.chains[name]

    def _check(self, table: Table) -> None:
        """At COMMIT: no rule may be left jumping to a missing chain or naming a missing set."""
        for chain, rules in table.chains.items():
            for spec in rules:
                missing = referenced_chains(spec) - set(table.chains)
                if missing:
                    raise KernelRefusal(f"{chain} jumps to missing chain(s) {sorted(missing)}")
                gone = referenced_sets(spec) - set(self.kernel.sets)
                if gone:
                    raise KernelRefusal(f"{chain} names missing set(s) {sorted(gone)}")


# ---------------------------------------------------------------------- helpers


def _check_chain_name(name: str) -> None:
    if not name or len(name) > MAX_CHAIN_NAME or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise KernelRefusal(f"Invalid chain name `{name}'")


def _flow_key(flow: Flow) -> tuple[int, str, str, str, int, int]:
    return flow.family, flow.protocol, flow.src, flow.dst, flow.sport, flow.dport


def _conntrack_line(flow: Flow) -> str:
    """A ``conntrack -L`` line: original tuple, then the reply tuple (what FORWARD saw)."""
    number = {"TCP": 6, "UDP": 17, "SCTP": 132}[flow.protocol]
    return (
        f"{flow.protocol.lower()} {number} 100 ESTABLISHED src={flow.src} dst={flow.dst} "
        f"sport={flow.sport} dport={flow.dport} src={flow.seen_dst} dst={flow.src} "
        f"sport={flow.seen_dport} dport={flow.sport} mark=0 use=1"
    )


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""
