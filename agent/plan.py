"""From desired and live state to the writes that reconcile them, in a safe order. Pure.

The order is what keeps every moment correct:

1. sets first: new sets are created and filled, changed sets are updated (small
   deltas member by member through netlink, adds before deletes; bigger ones by
   filling a temporary twin and swapping it in), so every set a rule will refer to
   exists, complete, before the rule does;
2. then one ``iptables-restore --noflush`` transaction per family, declaring (and so
   flushing and refilling) every chain stockade owns, deleting stale ones and fixing
   the FORWARD jump, all committed at once;
3. then stale sets are destroyed, once no rule refers to them any more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stockade.agent.ipsets import TMP_SUFFIX, IPSet, MemberChange, supports_churn, temp_name
from stockade.agent.iptables import Rule, render_rule
from stockade.agent.live import (
    LiveSet,
    LiveTable,
    desired_table,
    forward_ok,
    jump_line,
    member_texts,
    set_members,
)
from stockade.agent.render import INPUT_JUMP, RenderedNode

DEFAULT_CHURN_LIMIT = 512


class PlanError(RuntimeError):
    """The kernel holds something that blocks the plan (e.g. a set of another type)."""


@dataclass
class Plan:
    """Writes that bring the kernel to the desired state, by phase."""

    set_restore: list[str] = field(default_factory=list)  # phase 1, `ipset restore` lines
    member_changes: list[MemberChange] = field(default_factory=list)  # phase 1, netlink
    iptables: dict[int, str] = field(default_factory=dict)  # phase 2, family -> restore text
    destroy_sets: list[str] = field(default_factory=list)  # phase 3
    differences: list[str] = field(default_factory=list)  # what differed, for people

    @property
    def empty(self) -> bool:
        """True when the kernel already holds the desired state."""
        return not (self.set_restore or self.member_changes or self.iptables or self.destroy_sets)


def _create(name: str, s: IPSet) -> str:
    return f"create {name} {s.type} family {s.family} maxelem {s.maxelem} -exist"


def _fill(name: str, s: IPSet) -> list[str]:
    # The set's own member order (numeric, as rendered): no second sort of what may be
    # hundreds of thousands of members.
    return [f"add {name} {text}" for text in member_texts(s)]


def plan_sets(
    desired: Mapping[str, IPSet], live: Mapping[str, LiveSet], churn_limit: int, plan: Plan
) -> None:
    """Phase 1 and 3 of the plan for sets (see the module docstring).

    ``desired`` is taken in its own order, which :func:`make_plan` gives by family
    (IPv4 sets, then IPv6, each by name, as rendered): one ``ipset restore`` of
    the benchmark node's 6,777 sets took 4.7 s with the families interleaved (plain
    name order) against 3.4 s grouped, for the same lines.
    """
    for name, want in desired.items():
        have = live.get(name)
        if have is None:
            plan.differences.append(f"set {name}: missing")
            plan.set_restore += [_create(name, want), *_fill(name, want)]
            continue
        members = set_members(want)
        if (have.type, have.family) != (want.type, want.family):
            raise PlanError(
                f"set {name} exists as {have.type} {have.family}, wanted {want.type} "
                f"{want.family}; run `stockade-agent cleanup` to remove it"
            )
        if have.members == members:
            continue
        adds, dels = members - have.members, have.members - members
        plan.differences.append(f"set {name}: {len(adds)} to add, {len(dels)} to delete")
        # Member changes keep a set's maxelem; one that cannot hold the members any
        # more is refilled as a twin of the wanted size and swapped in.
        fits = len(members) <= have.maxelem
        if not fits:
            plan.differences.append(f"set {name}: outgrows maxelem {have.maxelem}")
        if fits and supports_churn(want.type) and len(adds) + len(dels) <= churn_limit:
            plan.member_changes += [MemberChange(name, want.type, v, True) for v in sorted(adds)]
            plan.member_changes += [MemberChange(name, want.type, v, False) for v in sorted(dels)]
        else:
            tmp = temp_name(name)
            # A twin left by a crash may have another maxelem: create -exist would fail.
            stale_twin = [f"destroy {tmp}"] if tmp in live else []
            plan.set_restore += [
                *stale_twin,
                _create(tmp, want),
                f"flush {tmp}",
                *_fill(tmp, want),
                f"swap {tmp} {name}",
                f"destroy {tmp}",
            ]
    swapped = {temp_name(name) for name in desired}
    for name in sorted(set(live) - set(desired)):
        plan.differences.append(f"set {name}: not wanted")
        if name in swapped and f"swap {name} {name.removesuffix(TMP_SUFFIX)}" in plan.set_restore:
            continue  # a stale twin, reused and destroyed by the swap above
        plan.destroy_sets.append(name)


def restore_text(chains: Mapping[str, list[str]]) -> str:
    """``iptables-restore`` input for rule lines already rendered (see ``chain_lines``).

    The same text as :meth:`RenderedFamily.restore_text` (a unit test holds them
    equal), built from the lines the comparison needed anyway rather than by
    rendering every rule a second time.
    """
    lines = ["*filter", *(f":{name} - [0:0]" for name in chains)]
    for body in chains.values():
        lines.extend(body)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def plan_table(
    family: int,
    chains: Mapping[str, list[str]],
    live: LiveTable,
    jump: Rule,
    input_jump: Rule | None = None,
) -> tuple[str | None, list[str]]:
    """Phase 2 for one family: the restore text (None if nothing to do) and why.

    ``input_jump``: the INPUT hook (to STK-INPUT) the rendering wants, first in INPUT
    and once; None: no INPUT hook (any of ours left there is deleted, before its
    chain is).
    """
    why: list[str] = []
    for name in sorted(set(chains) | set(live.chains)):
        if name not in live.chains:
            why.append(f"IPv{family} chain {name}: missing")
        elif name not in chains:
            why.append(f"IPv{family} chain {name}: not wanted")
        elif live.chains[name] != chains[name]:
            why.append(f"IPv{family} chain {name}: rules differ")
    fixes: list[str] = []
    for hook, rules, want, known in (
        ("FORWARD", live.forward, jump, jump),
        ("INPUT", live.input, input_jump, INPUT_JUMP),
    ):
        problem, fix = _hook_repair(family, hook, rules, want, known)
        if problem:
            why.append(problem)
            fixes += fix
    if not why:
        return None, why
    stale = sorted(set(live.chains) - set(chains))
    body = restore_text(chains).rstrip("\n").split("\n")
    assert body[-1] == "COMMIT"
    extra = [f":{name} - [0:0]" for name in stale]
    tail = [*fixes, *(f"-X {name}" for name in stale)]
    text = "\n".join([body[0], *extra, *body[1:-1], *tail, "COMMIT"]) + "\n"
    return text, why


def _hook_repair(
    family: int, hook: str, rules: list[str], want: Rule | None, known: Rule
) -> tuple[str, list[str]]:
    """Whether a built-in chain's jump to stockade is as wanted, and the lines that fix it.

    ``want``: the jump that must be the single first rule (None: no jump at all;
    ``known`` is then the jump to look for and delete). ("", []) when all is well.
    """
    line = jump_line(want or known, hook)
    present = rules.count(line)
    if forward_ok(rules, line) if want else not present:
        return "", []
    spec = line.split(" ", 2)[2]
    fix = [f"-D {hook} {spec}"] * present
    if want:
        fix.append(render_rule(hook, want, insert_at=1))
        return f"IPv{family} {hook}: the jump to stockade is not the single first rule", fix
    return f"IPv{family} {hook}: a jump to stockade is not wanted", fix


def make_plan(
    rendered: RenderedNode,
    tables: Mapping[int, LiveTable],
    sets: Mapping[str, LiveSet],
    churn_limit: int = DEFAULT_CHURN_LIMIT,
) -> Plan:
    """What goes from the live state to ``rendered``, for the families in ``tables``."""
    plan = Plan()
    # A family the node lacks (not in ``tables``: the applier did not read it) is
    # skipped entirely, its sets too.
    families = tuple(f for f in (rendered.v4.family, rendered.v6.family) if f in tables)
    desired_sets = {s.name: s for f in families for s in rendered.family(f).ipsets}
    plan_sets(desired_sets, sets, churn_limit, plan)
    for family in families:
        fam = rendered.family(family)
        text, why = plan_table(
            family, desired_table(fam), tables[family], rendered.forward_jump, rendered.input_jump
        )
        plan.differences += why
        if text is not None:
            plan.iptables[family] = text
    return plan


def cleanup_plan(
    tables: Mapping[int, LiveTable],
    sets: Mapping[str, LiveSet],
    jump: Rule,
    input_jump: Rule = INPUT_JUMP,
) -> Plan:
    """Writes that remove every chain, rule and set stockade owns, and nothing else."""
    plan = Plan()
    line = jump_line(jump)
    in_line = jump_line(input_jump, "INPUT")
    for family, live in tables.items():
        count = live.forward.count(line)
        in_count = live.input.count(in_line)
        if not live.chains and not count and not in_count:
            continue
        spec = line.split(" ", 2)[2]
        in_spec = in_line.split(" ", 2)[2]
        names = sorted(live.chains)
        lines = ["*filter", *[f":{n} - [0:0]" for n in names]]
        lines += [f"-D FORWARD {spec}"] * count
        lines += [f"-D INPUT {in_spec}"] * in_count
        lines += [f"-X {n}" for n in names]
        lines.append("COMMIT")
        plan.iptables[family] = "\n".join(lines) + "\n"
        plan.differences.append(
            f"IPv{family}: remove {len(names)} chains and {count + in_count} jumps"
        )
    plan.destroy_sets = sorted(sets)
    return plan
