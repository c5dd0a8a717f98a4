"""What the kernel holds now, as far as stockade owns it: parsed, pure.

``iptables-save`` and ``ipset save`` output is parsed into plain data that compares
directly with the renderer's output, so drift (a chain or set deleted or edited by
someone else) shows up as a difference, and an unchanged state as none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stockade.agent.ipsets import DEFAULT_MAXELEM, IPSet, Member
from stockade.agent.iptables import Chain, Rule, render_rule
from stockade.agent.render import RenderedFamily

CHAIN_PREFIX = "STK-"
SET_PREFIX = "stk-"


@dataclass
class LiveTable:
    """stockade's chains (name -> rule lines, as iptables-save prints them), FORWARD and INPUT."""

    chains: dict[str, list[str]] = field(default_factory=dict)
    forward: list[str] = field(default_factory=list)
    input: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LiveSet:
    """One of stockade's sets: type, family and members (``"<value> nomatch"`` kept)."""

    name: str
    type: str
    family: str
    members: frozenset[str]
    maxelem: int = DEFAULT_MAXELEM


def parse_iptables_save(text: str, table: str = "filter") -> LiveTable:
    """stockade's chains and the FORWARD and INPUT chains of ``table`` in ``iptables-save``."""
    live = LiveTable()
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            current = line[1:]
            continue
        if current != table:
            continue
        if line.startswith(":"):
            name = line[1:].split(" ", 1)[0]
            if name.startswith(CHAIN_PREFIX):
                live.chains.setdefault(name, [])
        elif line.startswith("-A "):
            name = line.split(" ", 2)[1]
            if name.startswith(CHAIN_PREFIX):
                live.chains.setdefault(name, []).append(line)
            elif name == "FORWARD":
                live.forward.append(line)
            elif name == "INPUT":
                live.input.append(line)
    return live


def parse_ipset_save(text: str) -> dict[str, LiveSet]:
    """stockade's sets (``stk-`` prefix) in ``ipset save`` output."""
    headers: dict[str, tuple[str, str, int]] = {}
    members: dict[str, set[str]] = {}
    for raw in text.splitlines():
        parts = raw.split()
        if len(parts) < 3 or not parts[1].startswith(SET_PREFIX):
            continue
        if parts[0] == "create":
            family = parts[parts.index("family") + 1] if "family" in parts else "inet"
            maxelem = (
                int(parts[parts.index("maxelem") + 1]) if "maxelem" in parts else DEFAULT_MAXELEM
            )
            headers[parts[1]] = (parts[2], family, maxelem)
            members.setdefault(parts[1], set())
        elif parts[0] == "add":
            members.setdefault(parts[1], set()).add(" ".join(parts[2:]))
    return {
        name: LiveSet(
            name,
            kind,
            family,
            frozenset(_saved_member(kind, m) for m in members.get(name, ())),
            maxelem,
        )
        for name, (kind, family, maxelem) in headers.items()
    }


def _saved_member(kind: str, member: str) -> str:
    """A member as the renderer writes it.

    ``ipset save`` prints a ``hash:net`` entry of a full-length prefix as a bare
    address (``10.0.1.12 nomatch``, not ``10.0.1.12/32 nomatch``), while the renderer
    writes the prefix; without this, such a set always looked changed, so every
    verify reported drift and every resync rebuilt the set.
    """
    if kind != "hash:net":
        return member
    value, sep, rest = member.partition(" ")
    if "/" not in value:
        value += "/128" if ":" in value else "/32"
    return value + sep + rest


def chain_lines(chain: Chain) -> list[str]:
    """The rule lines iptables-save prints for ``chain`` once it is loaded."""
    return [render_rule(chain.name, rule) for rule in chain.rules]


def desired_table(rendered: RenderedFamily) -> dict[str, list[str]]:
    """The renderer's chains in the same form as :attr:`LiveTable.chains`."""
    return {chain.name: chain_lines(chain) for chain in rendered.chains}


def set_members(ipset: IPSet) -> frozenset[str]:
    """The members of a desired set in the form :func:`parse_ipset_save` gives."""
    return frozenset(member_texts(ipset))


def member_texts(ipset: IPSet) -> list[str]:
    """The members of a desired set as ``ipset`` takes them, in the set's order."""
    return [_member_text(m) for m in ipset.members]


def _member_text(member: Member) -> str:
    return f"{member.value} nomatch" if member.nomatch else member.value


def jump_line(jump: Rule, chain: str = "FORWARD") -> str:
    """The FORWARD (or INPUT) jump as iptables-save prints it."""
    return render_rule(chain, jump)


def forward_ok(forward: list[str], jump: str) -> bool:
    """Whether the jump is the hook chain's first rule and appears exactly once."""
    return bool(forward) and forward[0] == jump and forward.count(jump) == 1
