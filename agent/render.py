"""The renderer: a node's rule set into typed iptables chains and ipsets.

Purely computational: no subprocess, no kernel, no clock. The applier
(:mod:`stockade.agent.applier`) takes a :class:`RenderedNode` and writes it with
``ipset restore`` and ``iptables-restore --noflush``; this module only decides what
to write. docs/dataplane.md explains the layout with worked examples.

Chain layout, per IP family (``<h>`` is a content hash, ``<id>`` a policy id)::

    FORWARD      -j STK-FORWARD              (forward_jump, inserted by the applier)
    STK-FORWARD  ESTABLISHED,RELATED -> RETURN; [pending and contested drops];
                 src == dst -> RETURN (a pod reaching itself through a Service);
                 clear our mark bits; -j STK-EGRESS; -j STK-INGRESS; clear our mark bits
    STK-EGRESS   the root of the egress dispatch tree (same shape as ingress)
    STK-INGRESS  dst not in stk-it4-<root> -> RETURN      (no policy isolates the pod)
                 then per child: dst in stk-ig4-<h> -> -g STK-IG-<h>   (a group)
                              or dst in stk-it4-<t> -> -g STK-IT-<t>   (a subtree)
    STK-IT-<t>   the same per child, for the groups whose hash starts with <t>'s prefix
    STK-IG-<h>   INVALID -> DROP; per policy: its rules inlined, or -j STK-I-<id>
                 then allowed-bit set -> RETURN; ...; [log]; DROP or REJECT
    STK-I-<id>   one rule per (peer, port group) of the policy: -g STK-ALLOW-INGRESS
                 (only for a policy too long to inline: INLINE_MAX_RULES)
    STK-ALLOW-INGRESS  set the ingress-allowed bit (then falls back to STK-IG-<h>,
                 or, from an inlined rule, to STK-FORWARD)

Ingress and egress are one code path, parametrised by :class:`_Direction`.

With ClusterNetworkPolicies (``NodeRuleSet.cluster_policies``) each direction of
STK-FORWARD becomes three tiers: ``-j STK-A-<DIR>`` (Admin), then, while the
direction's bit is unset, ``-j STK-<DIR>`` (NetworkPolicy, as above) and
``-j STK-B-<DIR>`` (Baseline); the tier chains dispatch like the NetworkPolicy ones
to group chains ``STK-AEG-<h>``... that jump to each policy's ``STK-CE-<id>`` /
``STK-CI-<id>`` in evaluation order (Accept: set the direction's bit; Pass: set the
pass bit; Deny: drop); each jump is gated by the protocol and ports the policy's
rules can match, and those rules test protocol and ports before any set.
``STK-INPUT`` (hooked at the top of INPUT) judges a local pod reaching its own node
with the egress tiers. Without ClusterNetworkPolicies none of
this is rendered. docs/dataplane.md, "Tiers".

Cost discipline (a node carries thousands of policies and tens of thousands of set
members): every address is parsed once per render (:class:`_IPCache`, with a cheap
canonical check for IPv4), and a PeerSet's sets are built once per family however
many rules refer to it (:func:`_peer_set_ipsets`, also the agent's member-only fast
path through :func:`render_peer_set`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from stockade.agent.ipsets import (
    IPFamily,
    IPSet,
    Member,
    SetKind,
    SetType,
    digest_set_name,
    make_set,
    maxelem_for,
    parse_ip,
    render_sets,
    render_swap,
    set_family,
    set_name,
)
from stockade.agent.iptables import (
    MAX_COMMENT,
    MULTIPORT_SLOTS,
    PROTOCOLS,
    AddressMatch,
    Chain,
    ClearMark,
    ConntrackState,
    Drop,
    Goto,
    IptablesModelError,
    Jump,
    LimitMatch,
    Log,
    MarkMatch,
    Match,
    NFLog,
    PortRange,
    Protocol,
    ProtoMatch,
    Reject,
    RejectWith,
    Return,
    Rule,
    SameAddress,
    SetDirs,
    SetMark,
    SetMatch,
    canonical_cidr,
    canonical_rate,
    check_chain_name,
    multiport_slots,
    render_restore,
    split_multiport,
)
from stockade.agent.setsplit import split_by_set
from stockade.agent.shadowing import unshadowed
from stockade.ruleset import (
    ACCEPT,
    ADMIN_TIER,
    BASELINE_TIER,
    DENY,
    FORMAT_VERSION,
    PASS,
    CompiledClusterPolicy,
    CompiledRule,
    LocalPod,
    NodeClusterPolicy,
    NodePolicy,
    NodeRuleSet,
    PeerMatch,
    PeerSelector,
    PeerSet,
    PortMatch,
    SameRules,
    TierRule,
    by_index,
    stable_hash,
)

FAMILIES: tuple[IPFamily, ...] = (4, 6)
FORWARD_CHAIN = "STK-FORWARD"
# kube-proxy's masquerade (0x4000) and drop (0x8000) bits: ours must stay clear of them.
KUBE_PROXY_MARKS = 0x4000 | 0x8000
DEFAULT_MARK_MASK = 0x00070000
# A policy's rules are written into each group chain that uses it, instead of a
# jump to the policy's own chain, when that is no more rules than the jump (and its
# "allowed?" check), or when the policy is short and its copies stay few. A new
# connection pays for every rule it walks, and a jump costs two rule visits (the
# jump and the check after it) plus the chain's own end: for the short chains most
# policies have, inlining is the cheaper walk (docs/dataplane.md, "Inlined policies").
INLINE_MAX_RULES = 8
INLINE_MAX_COPIES = 256
# A tier group chain of at least this many rules, this many of them testing a
# protocol, is split by protocol: a TCP packet then walks the TCP rules and those of
# no protocol only, one goto instead of every UDP and SCTP rule (docs/dataplane.md,
# "Tiers").
SPLIT_MIN_RULES = 8
SPLIT_MIN_PROTOCOL_RULES = 4
_POLICY_ID_RE = re.compile(r"^[0-9a-z]{1,22}$")  # "STK-I-" + 22 = 28 characters
_COMMENT_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:/,=>()-]")
_REJECT_WITH: dict[IPFamily, RejectWith] = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}


class RenderError(ValueError):
    """The rule set (or the peer sets) cannot be rendered as given."""


class MissingPeerSetsError(RenderError):
    """Rules name PeerSets the agent does not hold (completely) yet.

    The agent should keep its last applied state and wait (fail static) rather
    than render those rules as matching nobody.
    """

    def __init__(self, names: Sequence[str]):
        self.names = tuple(sorted(names))
        super().__init__(f"peer sets missing or incomplete: {', '.join(self.names)}")


class RenderOptionsError(ValueError):
    """Invalid :class:`RenderOptions`."""


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """How denials look and which mark bits stockade may use.

    ``mark_mask`` holds stockade's mark bits: its lowest set bit means "ingress
    allowed", the next one "egress allowed", the third "passed" (a
    ClusterNetworkPolicy Pass rule matched; needed only when the node has
    ClusterNetworkPolicies, and then a mask of two bits is refused at render time);
    the rest are reserved. It must not overlap kube-proxy's 0x4000/0x8000, and
    stockade clears only these bits.
    """

    drop_action: Literal["DROP", "REJECT"] = "DROP"
    log_denied: bool = False
    log_mode: Literal["NFLOG", "LOG"] = "NFLOG"
    nflog_group: int = 100
    log_rate: str = "10/second"
    mark_mask: int = DEFAULT_MARK_MASK
    # Drop all traffic of the local pod addresses given to render() as ``pending``
    # (pods the node's rule set does not account for yet): --isolate-new-pods.
    isolate_new_pods: bool = False
    # Write short policies' rules into their groups' chains (fewer rules walked by a
    # new connection); False keeps one chain per policy everywhere, jumped to.
    inline_policies: bool = True

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.drop_action not in ("DROP", "REJECT"):
            problems.append(f"drop_action must be DROP or REJECT, got {self.drop_action!r}")
        if self.log_mode not in ("NFLOG", "LOG"):
            problems.append(f"log_mode must be NFLOG or LOG, got {self.log_mode!r}")
        if (
            isinstance(self.nflog_group, bool)
            or not isinstance(self.nflog_group, int)
            or not 0 <= self.nflog_group <= 65535
        ):
            problems.append(f"nflog_group must be 0-65535, got {self.nflog_group!r}")
        try:
            canonical_rate(self.log_rate)
        except IptablesModelError as exc:
            problems.append(f"log_rate: {exc}")
        mask = self.mark_mask
        if isinstance(mask, bool) or not isinstance(mask, int) or not 0 < mask <= 0xFFFFFFFF:
            problems.append(f"mark_mask must be a non-zero 32-bit mask, got {mask!r}")
        elif mask & KUBE_PROXY_MARKS:
            problems.append(
                f"mark_mask {mask:#x} overlaps kube-proxy's marks {KUBE_PROXY_MARKS:#x}"
            )
        elif mask.bit_count() < 2:
            problems.append(f"mark_mask {mask:#x} needs at least 2 bits (ingress and egress)")
        if problems:
            raise RenderOptionsError("invalid render options: " + "; ".join(problems))

    @property
    def ingress_bit(self) -> int:
        """The mark bit meaning "some ingress rule allowed this packet"."""
        return _mask_bits(self.mark_mask)[0]

    @property
    def egress_bit(self) -> int:
        """The mark bit meaning "some egress rule allowed this packet"."""
        return _mask_bits(self.mark_mask)[1]

    @property
    def pass_bit(self) -> int:
        """The mark bit meaning "a Pass rule ended this tier" (ClusterNetworkPolicy).

        Raises :class:`RenderOptionsError` for a mask of two bits.
        """
        bits = _mask_bits(self.mark_mask)
        if len(bits) < 3:
            raise RenderOptionsError(
                f"mark_mask {self.mark_mask:#x} needs 3 bits (ingress, egress, pass) "
                "to render ClusterNetworkPolicies"
            )
        return bits[2]


def _mask_bits(mask: int) -> list[int]:
    return [1 << i for i in range(32) if mask >> i & 1]


def comment(*parts: str) -> str:
    """The comment of every rule stockade writes: ``stockade:<parts>``.

    Only a safe set of characters is kept (names from Kubernetes already fit), so
    iptables-save prints it back as written; cut to the kernel's 255 bytes.
    """
    text = "stockade:" + _COMMENT_UNSAFE.sub("_", " ".join(parts))
    return text[:MAX_COMMENT]


@dataclass(frozen=True, slots=True)
class _Direction:
    """What differs between ingress and egress; everything else is shared code.

    ``target_dir`` is where the local (isolated) pod is in the packet, ``peer_dir``
    where the other end is. Ports are always the destination's.
    """

    name: Literal["ingress", "egress"]
    letter: Literal["I", "E"]
    target_dir: SetDirs
    peer_dir: SetDirs
    group_kind: SetKind
    tree_kind: SetKind
    # "" for the NetworkPolicy tier; "A" (Admin) or "B" (Baseline) for the
    # ClusterNetworkPolicy tiers, whose groups have chains of their own; "T" for the
    # dispatch of a node with tiers: one tree per direction over the pods' paths
    # through the three tiers (:func:`_paths`).
    tier: Literal["", "A", "B", "T"] = ""

    @property
    def code(self) -> str:
        """The letters naming this direction's group and tree chains (``I``, ``AE``...)."""
        return f"{self.tier}{self.letter}"

    @property
    def label(self) -> str:
        """For comments: ``ingress``, ``admin egress``, ``baseline ingress``."""
        return f"{_TIER_LABEL[self.tier]}{self.name}"

    @property
    def dispatch_chain(self) -> str:
        """The chain that finds the packet's policy group."""
        if self.tier:
            return f"STK-{self.tier}-{self.name.upper()}"
        return f"STK-{self.name.upper()}"

    @property
    def allow_chain(self) -> str:
        """The chain that sets this direction's allowed bit."""
        return f"STK-ALLOW-{self.name.upper()}"

    def rules_of(self, policy: NodePolicy) -> tuple[CompiledRule, ...] | None:
        """The policy's rules in this direction (None: it does not isolate here)."""
        p = policy.policy
        return p.ingress if self.name == "ingress" else p.egress

    def mark_bit(self, options: RenderOptions) -> int:
        """This direction's allowed bit."""
        return options.ingress_bit if self.name == "ingress" else options.egress_bit

    def policy_chain(self, policy_id: str) -> str:
        """The chain holding one policy's rules for this direction."""
        ident = policy_id if _POLICY_ID_RE.match(policy_id) else stable_hash(policy_id, 16)
        return check_chain_name(f"STK-{self.letter}-{ident}")


_TIER_LABEL = {"": "", "A": "admin ", "B": "baseline ", "T": "tiered "}
_TIER_OF = {ADMIN_TIER: "A", BASELINE_TIER: "B"}

INGRESS = _Direction(
    "ingress", "I", target_dir="dst", peer_dir="src", group_kind="ig", tree_kind="it"
)
EGRESS = _Direction(
    "egress", "E", target_dir="src", peer_dir="dst", group_kind="eg", tree_kind="et"
)
# Evaluation order in STK-FORWARD: a packet leaves its source before it reaches its
# destination, so a denial is logged against the egress side first.
DIRECTIONS = (EGRESS, INGRESS)
# The ClusterNetworkPolicy tiers, per direction (only rendered when the node has some).
A_EGRESS = replace(EGRESS, group_kind="aeg", tree_kind="aet", tier="A")
A_INGRESS = replace(INGRESS, group_kind="aig", tree_kind="ait", tier="A")
B_EGRESS = replace(EGRESS, group_kind="beg", tree_kind="bet", tier="B")
B_INGRESS = replace(INGRESS, group_kind="big", tree_kind="bit", tier="B")
TIER_DIRECTIONS = (A_EGRESS, A_INGRESS, B_EGRESS, B_INGRESS)
# With tiers, a pod's packet is dispatched once per direction, to its path.
T_EGRESS = replace(EGRESS, group_kind="teg", tree_kind="tet", tier="T")
T_INGRESS = replace(INGRESS, group_kind="tig", tree_kind="tit", tier="T")
_TIERS_OF = {
    "egress": (A_EGRESS, EGRESS, B_EGRESS, T_EGRESS),
    "ingress": (A_INGRESS, INGRESS, B_INGRESS, T_INGRESS),
}


AnyPolicy = NodePolicy | NodeClusterPolicy


@dataclass(frozen=True, slots=True)
class _Group:
    """Local pods isolated (in one direction) by exactly the same policies."""

    direction: _Direction
    # NetworkPolicies sorted by policy id; ClusterNetworkPolicies in evaluation order.
    policies: tuple[AnyPolicy, ...]
    pod_ips: tuple[str, ...]
    hash: str

    @property
    def chain(self) -> str:
        """The group's chain: its policies' chains, then the verdict."""
        return f"STK-{self.direction.code}G-{self.hash}"

    def set_name(self, family: IPFamily) -> str:
        """The hash:ip set of the group's pods."""
        # The same digest as the chain, so `ipset list` and `iptables-save` line up.
        return digest_set_name(self.direction.group_kind, family, self.hash)


@dataclass(frozen=True, slots=True)
class _PeerSetView:
    """All shards of one PeerSet, merged."""

    selector: PeerSelector
    members: tuple[tuple[str, int | None, IPFamily], ...]  # (canonical ip, port number, family)


@dataclass(frozen=True, slots=True)
class RenderedFamily:
    """What one IP family's tables and sets should hold."""

    family: IPFamily
    chains: tuple[Chain, ...]
    ipsets: tuple[IPSet, ...]

    def restore_text(self) -> str:
        """``iptables-restore --noflush`` input for stockade's chains only."""
        return render_restore(self.chains)

    def ipset_text(self) -> str:
        """The sets as a declarative create/flush/add listing (see ``render_sets``)."""
        return render_sets(self.ipsets)

    def ipset_swap_text(self) -> str:
        """``ipset restore`` input replacing every set atomically (see ``render_swap``)."""
        return render_swap(self.ipsets)


@dataclass(frozen=True, slots=True)
class RenderedNode:
    """A node's rendered dataplane: per family chains and sets, plus the hook.

    ``forward_jump`` is the one rule stockade adds outside its own chains; the
    applier inserts it once at the top of FORWARD (both families) and leaves it.
    ``input_jump`` (only with ClusterNetworkPolicies on the node, else None) is its
    twin at the top of INPUT, to ``STK-INPUT``: a local pod reaching its own node.
    """

    v4: RenderedFamily
    v6: RenderedFamily
    forward_jump: Rule
    input_jump: Rule | None = None

    def family(self, family: IPFamily) -> RenderedFamily:
        """The rendering for IPv4 (4) or IPv6 (6)."""
        if family == 4:
            return self.v4
        if family == 6:
            return self.v6
        raise ValueError(f"family must be 4 or 6, got {family!r}")

    def restore_text(self, family: IPFamily) -> str:
        """``iptables-restore --noflush`` (or ip6tables-restore) input for ``family``."""
        return self.family(family).restore_text()

    def ipset_text(self, family: IPFamily) -> str:
        """The family's sets as a create/flush/add listing."""
        return self.family(family).ipset_text()


FORWARD_JUMP = Rule((), Jump(FORWARD_CHAIN), comment("enforce network policy"))
INPUT_CHAIN = "STK-INPUT"
INPUT_JUMP = Rule((), Jump(INPUT_CHAIN), comment("enforce cluster network policy to the node"))
PASS_CHAIN = "STK-PASS"
# IPv6 link-local and multicast destinations (neighbour discovery, router
# solicitations): STK-INPUT never judges them, or a "deny all" would cut a pod off
# its gateway. No ClusterNetworkPolicy peer names such an address (a node's
# status.addresses are unicast, and the verdict engine knows of no other).
LINK_NETS6 = ("fe80::/10", "ff00::/8")


def render(
    node: NodeRuleSet,
    peer_sets: Mapping[str, Sequence[PeerSet]],
    *,
    options: RenderOptions,
    pending: Collection[str] = (),
) -> RenderedNode:
    """Render ``node`` with the shards of the PeerSets it names (set_name -> shards).

    ``pending``: with ``options.isolate_new_pods``, the addresses of local pods that
    the rule set does not account for yet; all their forwarded traffic is denied
    (ignored without the option).

    Deterministic: the same input gives byte-identical text, whatever the order of
    pods, policies, shards or pending addresses. Raises :class:`MissingPeerSetsError`
    when a named PeerSet is absent or incomplete and :class:`RenderError` for an
    inconsistent rule set (or a pending address that is not one).
    """
    if node.format_version != FORMAT_VERSION:
        raise RenderError(f"rule set format {node.format_version}, expected {FORMAT_VERSION}")
    policies = _check_policies(node)
    cluster = _check_cluster_policies(node)
    if cluster:
        options.pass_bit  # noqa: B018 - raises for a mask without a pass bit
    cache = _IPCache()
    views = _merge_peer_sets((*policies, *cluster), peer_sets, cache)
    pods = {p.name: p for p in node.pods}
    groups: dict[str, tuple[_Group, ...]] = {
        d.dispatch_chain: _groups(pods, policies, d) for d in DIRECTIONS
    }
    origins: dict[str, str] = {}  # a variant's policy id -> its policy's
    if cluster:
        for d in TIER_DIRECTIONS:
            groups[d.dispatch_chain] = _tier_groups(pods, cluster, d, origins)
    new_sets = render_pending_sets(pending) if options.isolate_new_pods else None
    contested = render_contested_sets(node.contested_ips) if node.contested_ips else None
    families = [
        _FamilyRenderer(
            f, options, views, groups, pods, cache, new_sets, contested, cluster, origins
        ).render()
        for f in FAMILIES
    ]
    return RenderedNode(
        v4=families[0],
        v6=families[1],
        forward_jump=FORWARD_JUMP,
        input_jump=INPUT_JUMP if cluster else None,
    )


def pending_set_name(family: IPFamily) -> str:
    """The set of a family's pending (not yet covered) local pod addresses."""
    return set_name("new", family, "pending pods")


def render_pending_sets(pending: Collection[str]) -> dict[IPFamily, IPSet]:
    """The pending-pod sets of both families (the full render's own code for them).

    Also the agent's fast path: a change of pending pods only is a member delta.
    """
    return _address_sets(pending, pending_set_name, "pending pod address")


def contested_set_name(family: IPFamily) -> str:
    """The set of a family's contested addresses (claimed by several pods, owned by none)."""
    return set_name("dup", family, "contested addresses")


def render_contested_sets(contested: Collection[str]) -> dict[IPFamily, IPSet]:
    """The contested-address sets of both families (see stockade.ownership)."""
    return _address_sets(contested, contested_set_name, "contested address")


def _address_sets(
    addresses: Collection[str], name: Callable[[IPFamily], str], what: str
) -> dict[IPFamily, IPSet]:
    """One ``hash:ip`` set per family holding ``addresses``."""
    cache = _IPCache()
    by_family: dict[IPFamily, list[Member]] = {4: [], 6: []}
    for text in addresses:
        family, ip = cache.parse(text, what)
        by_family[family].append(Member(ip))
    return {
        family: make_set(name(family), "hash:ip", family, members)
        for family, members in by_family.items()
    }


def _check_port(np: AnyPolicy, p: PortMatch) -> None:
    where = f"policy {np.policy.name}"
    if p.protocol not in PROTOCOLS:
        raise RenderError(f"{where}: unknown protocol {p.protocol!r}")
    if p.port is not None and p.name is not None:
        raise RenderError(f"{where}: a port is a number or a name, not both")
    if p.port is not None and not 1 <= p.port <= (p.end_port or p.port) <= 65535:
        raise RenderError(f"{where}: invalid port range {p.port}-{p.end_port}")
    if p.port is None and p.end_port is not None:
        raise RenderError(f"{where}: end_port without port")


def _check_policies(node: NodeRuleSet) -> tuple[NodePolicy, ...]:
    ids = [np.policy.id for np in node.policies]
    if len(set(ids)) != len(ids):
        raise RenderError(f"node {node.node}: a policy id appears twice")
    seen: dict[str, str] = {}
    for np in node.policies:
        for d in DIRECTIONS:
            chain = d.policy_chain(np.policy.id)
            if seen.setdefault(chain, np.policy.id) != np.policy.id:
                raise RenderError(f"policies {seen[chain]!r} and {np.policy.id!r} share {chain}")
    names = [p.name for p in node.pods]
    if len(set(names)) != len(names):
        raise RenderError(f"node {node.node}: duplicate local pod names")
    return tuple(sorted(node.policies, key=lambda np: np.policy.id))


_ACTIONS = (ACCEPT, DENY, PASS)


def _check_cluster_policies(node: NodeRuleSet) -> tuple[NodeClusterPolicy, ...]:
    """The node's ClusterNetworkPolicies in evaluation order (tier, priority, name, id)."""
    cps = node.cluster_policies
    ids = [c.policy.id for c in cps]
    if len(set(ids)) != len(ids):
        raise RenderError(f"node {node.node}: a cluster policy id appears twice")
    names = [c.policy.name for c in cps]
    if len(set(names)) != len(names):
        raise RenderError(f"node {node.node}: a cluster policy name appears twice")
    seen: dict[str, str] = {}
    for c in cps:
        p = c.policy
        if p.tier not in _TIER_OF:
            raise RenderError(f"cluster policy {p.name}: unknown tier {p.tier!r}")
        for d in DIRECTIONS:
            chain = _cluster_policy_chain(d, p.id)
            if seen.setdefault(chain, p.id) != p.id:
                raise RenderError(f"cluster policies {seen[chain]!r} and {p.id!r} share {chain}")
            for r in _every_tier_rule(d, c):
                if r.action not in _ACTIONS:
                    raise RenderError(f"cluster policy {p.name}: unknown action {r.action!r}")
    return tuple(sorted(cps, key=lambda c: (*c.policy.order, c.policy.id)))


_CLUSTER_ID_RE = re.compile(r"^[0-9a-z]{1,21}$")  # "STK-CI-" + 21 = 28 characters


def _cluster_policy_chain(d: _Direction, policy_id: str) -> str:
    """The chain of one ClusterNetworkPolicy's rules of direction ``d`` (any tier)."""
    ident = policy_id if _CLUSTER_ID_RE.match(policy_id) else stable_hash(policy_id, 16)
    return check_chain_name(f"STK-C{d.letter}-{ident}")


def _tier_rules(d: _Direction, c: NodeClusterPolicy) -> tuple[TierRule, ...]:
    return c.policy.ingress if d.name == "ingress" else c.policy.egress


def _same_rules(d: _Direction, variant: SameRules) -> tuple[TierRule, ...]:
    return variant.ingress if d.name == "ingress" else variant.egress


def _every_tier_rule(d: _Direction, c: NodeClusterPolicy) -> list[TierRule]:
    """``c``'s rules of direction ``d`` and those of every variant of its subjects."""
    return [*_tier_rules(d, c), *(r for v in c.variants for r in _same_rules(d, v))]


def _rule_protocol(rule: Rule) -> Protocol | None:
    return next((m.protocol for m in rule.matches if isinstance(m, ProtoMatch)), None)


def _split_by_protocol(chain: Chain) -> list[Chain]:
    """A long tier group chain as a TCP chain and the rest.

    ``STK-AEG-<h>`` keeps ``-p tcp -g STK-AEG-<h>-T`` and then, for every other
    protocol, its rules without the TCP ones; ``-T`` holds, in the original order,
    the TCP rules and those that test no protocol. A rule of another protocol could
    never match there, so the verdicts are the same; a goto'd chain ends where the
    group chain would (back in the tier's caller). A TCP packet skips the UDP and
    SCTP rules, any other packet the TCP ones. Only TCP gets a chain of its own:
    the rules of no protocol are copied once, not once per protocol (which tripled
    them on a node of many short IsolationPolicy variants), and UDP and SCTP rules
    are few. Short chains, or chains with few protocol rules, stay whole: the goto
    would cost more than it saves.
    """
    rules = chain.rules
    protocols = [_rule_protocol(r) for r in rules]
    if (
        len(rules) < SPLIT_MIN_RULES
        or sum(p is not None for p in protocols) < SPLIT_MIN_PROTOCOL_RULES
        or "TCP" not in protocols
    ):
        return [chain]
    # A protocol's chain may shadow more than the whole one did (a rule of another
    # protocol that changed the mark between two copies is not in it).
    tcp = Chain(
        f"{chain.name}-T",
        unshadowed([r for r, rp in zip(rules, protocols, strict=True) if rp in ("TCP", None)]),
    )
    head = Rule((ProtoMatch("TCP"),), Goto(tcp.name), comment("tcp rules of the group"))
    rest = unshadowed([r for r, rp in zip(rules, protocols, strict=True) if rp != "TCP"])
    return [Chain(chain.name, (head, *rest)), tcp]


def _inlined(rules: Sequence[Rule], jump_rules: int, groups: int) -> bool:
    """Whether a policy's ``rules`` go into each of its ``groups``' chains.

    ``jump_rules`` is what the jump form costs a group chain (the gated jumps and
    the check after them). Inlined: never more rules than that, or at most
    :data:`INLINE_MAX_RULES` rules copied at most :data:`INLINE_MAX_COPIES` times.
    """
    n = len(rules)
    return n <= jump_rules or (n <= INLINE_MAX_RULES and n * groups <= INLINE_MAX_COPIES)


def _gates(rules: Sequence[Rule]) -> list[tuple[Match, ...]]:
    """What a packet must match to match any of ``rules``: the jump's matches.

    Read from the rules themselves (so the gate can never be narrower than the
    rules). ``[]`` for no rules: nothing to jump to. ``[()]`` (always jump) when a
    rule tests no protocol, or when the rules use several protocols: one jump per
    protocol would add a rule per policy per group for little (the rules inside
    test protocol and ports before any set, so a packet of another protocol makes
    no set lookup there either). Else the one protocol, with the union of the port
    numbers when every rule has numbers and the union fits one multiport match.
    """
    ranges: dict[Protocol, list[tuple[int, int]] | None] = {}
    for rule in rules:
        proto = next((m.protocol for m in rule.matches if isinstance(m, ProtoMatch)), None)
        if proto is None:
            return [()]
        numbers = [r for m in rule.matches if isinstance(m, PortRange) for r in m.ranges]
        if not numbers:  # every port of the protocol, or a named port (a set)
            ranges[proto] = None
        elif proto not in ranges:
            ranges[proto] = numbers
        elif (known := ranges[proto]) is not None:
            known.extend(numbers)
    if len(ranges) != 1:
        return [()] if ranges else []
    ((proto, known),) = ranges.items()
    merged = _merge_ranges(known) if known is not None else ()
    if merged and multiport_slots(merged) <= MULTIPORT_SLOTS:
        return [(ProtoMatch(proto), PortRange(proto, merged))]
    return [(ProtoMatch(proto),)]


def _merge_ranges(ranges: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted port ranges with overlapping and adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return tuple(out)


class _IPCache:
    """Canonical form and family of each address text, parsed once per render."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[IPFamily, str]] = {}

    def parse(self, text: str, where: str) -> tuple[IPFamily, str]:
        """(family, canonical text); raises :class:`RenderError` for a bad address."""
        hit = self._seen.get(text)
        if hit is None:
            try:
                hit = parse_ip(text)
            except ValueError:
                raise RenderError(f"{where}: invalid IP address {text!r}") from None
            self._seen[text] = hit
        return hit

    def family_ips(self, ips: Sequence[str], family: IPFamily, where: str) -> list[str]:
        """The canonical addresses of ``family`` among ``ips``."""
        out = []
        for ip in ips:
            fam, canonical = self.parse(ip, where)
            if fam == family:
                out.append(canonical)
        return out


def referenced_peer_sets(node: NodeRuleSet) -> set[str]:
    """The names of the PeerSets the rules of ``node`` refer to (what render reads)."""
    return set().union(
        *(np.policy.peer_sets() for np in node.policies),
        *(c.peer_sets() for c in node.cluster_policies),
    )


def _merge_peer_sets(
    policies: Sequence[AnyPolicy], peer_sets: Mapping[str, Sequence[PeerSet]], cache: _IPCache
) -> dict[str, _PeerSetView]:
    wanted = set().union(*(p.peer_sets() for p in policies))
    missing: list[str] = []
    views: dict[str, _PeerSetView] = {}
    for name in sorted(wanted):
        view = _merge_one(name, peer_sets.get(name, ()), cache)
        if view is None:
            missing.append(name)
        else:
            views[name] = view
    if missing:
        raise MissingPeerSetsError(missing)
    return views


def _merge_one(name: str, shards: Sequence[PeerSet], cache: _IPCache) -> _PeerSetView | None:
    """All shards of one PeerSet merged, addresses parsed once; None if incomplete."""
    if not shards:
        return None
    first = shards[0]
    for s in shards:
        if s.set_name != name or s.selector != first.selector or s.shards != first.shards:
            raise RenderError(f"peer set {name}: shards disagree ({s.name})")
    indices = sorted(s.shard for s in shards)
    if len(set(indices)) != len(indices):
        raise RenderError(f"peer set {name}: shard given twice")
    if indices != list(range(first.shards)):
        return None
    members: set[tuple[str, int | None, IPFamily]] = set()
    for s in shards:
        for m in s.members:
            for ip in m.ips:
                family, canonical = cache.parse(ip, f"peer set {name}, pod {m.pod}")
                members.add((canonical, m.port, family))
    return _PeerSetView(first.selector, tuple(sorted(members, key=lambda x: (x[0], x[1] or 0))))


def ip_set(
    name: str,
    family: IPFamily,
    ips: Collection[str],
    member: Callable[[str], Member] = Member,
) -> IPSet:
    """A ``hash:ip`` set of canonical addresses ``ips``: the same set as ``make_set``.

    Cheaper for the hundreds of thousands of members of a big node: addresses are
    ordered by their packed bytes (the numeric order ``member_key`` gives) instead of
    being parsed twice; IPSet still checks every member and the order.
    """
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    try:
        ordered = sorted(set(ips), key=lambda ip: socket.inet_pton(af, ip))
    except OSError:  # not an address of the family: make_set says which
        return make_set(name, "hash:ip", family, map(member, ips))
    return IPSet(
        name, "hash:ip", set_family(family), tuple(map(member, ordered)), maxelem_for(len(ordered))
    )


def _peer_set_ipsets(name: str, view: _PeerSetView, family: IPFamily) -> tuple[IPSet, IPSet | None]:
    """The ``peer`` set of a PeerSet and, for a named-port selector, its ``pport`` set.

    The one place that names these sets and formats their members: the full render
    and :func:`render_peer_set` (the agent's member-only fast path) both use it.
    Members of a ``pport`` set without a number do not declare the port: they match
    nothing, so they are left out.
    """
    peer = ip_set(
        set_name("peer", family, name), family, [ip for ip, _, fam in view.members if fam == family]
    )
    ref = view.selector.named_port
    if ref is None:
        return peer, None
    proto = ref.protocol.lower()
    pport = make_set(
        set_name("pport", family, name),
        "hash:ip,port",
        family,
        [
            Member(f"{ip},{proto}:{n}")
            for ip, n, fam in view.members
            if n is not None and fam == family
        ],
    )
    return peer, pport


def render_peer_set(name: str, shards: Sequence[PeerSet]) -> dict[str, IPSet]:
    """Every ipset (both families) that PeerSet ``name`` can back, by set name.

    The same names and members the full :func:`render` gives those sets: ``peer``
    sets always, ``pport`` sets when the selector resolves a named port. Which of
    them a node's rendering holds depends on its rules (a ``pport`` set only for an
    egress named port); the caller keeps the ones it has. Raises
    :class:`MissingPeerSetsError` when the shards are incomplete.
    """
    view = _merge_one(name, shards, _IPCache())
    if view is None:
        raise MissingPeerSetsError([name])
    out: dict[str, IPSet] = {}
    for family in FAMILIES:
        for s in _peer_set_ipsets(name, view, family):
            if s is not None:
                out[s.name] = s
    return out


def _groups(
    pods: Mapping[str, LocalPod], policies: tuple[NodePolicy, ...], d: _Direction
) -> tuple[_Group, ...]:
    """Group local pods by the exact set of policies that isolate them in ``d``.

    Dispatch then costs one set lookup per group (not per policy), and a pod's
    packet visits only the chains of its own policies.
    """
    chosen = [np for np in policies if d.rules_of(np) is not None]
    for np in chosen:
        _check_targets(pods, np.targets, f"policy {np.policy.name}: target")
    groups = [
        _Group(d, tuple(nps), ips, stable_hash({"direction": d.name, "policies": key}, 16))
        for key, nps, ips in _partition(pods, chosen)
    ]
    return tuple(sorted(groups, key=lambda g: g.hash))


def _check_targets(pods: Mapping[str, LocalPod], targets: Sequence[str], what: str) -> None:
    unknown = [t for t in targets if t not in pods]
    if unknown:
        raise RenderError(f"{what} {min(unknown)} is not a local pod")


def _partition(
    pods: Mapping[str, LocalPod], policies: Sequence[AnyPolicy]
) -> list[tuple[tuple[str, ...], list[AnyPolicy], tuple[str, ...]]]:
    """The local pods grouped by the list of ``policies`` selecting them, in order.

    Per group: the policy ids (the group's identity), the policies, and the pods'
    addresses (pods in name order), groups sorted by their hash by the caller. A
    pod's policies are recorded as indexes into ``policies``, so the per-pod work is
    list appends and one tuple, not object attribute reads (with 200
    ClusterNetworkPolicies over 8,000 pods this is ~100,000 pairs per tier).
    """
    by_pod: dict[str, list[int]] = {}
    for i, p in enumerate(policies):
        for target in p.targets:
            indexes = by_pod.get(target)
            if indexes is None:
                by_pod[target] = [i]
            else:
                indexes.append(i)
    by_key: dict[tuple[int, ...], list[str]] = {}
    for pod_name in sorted(by_pod):
        key = tuple(by_pod[pod_name])
        ips = by_key.get(key)
        if ips is None:
            ips = by_key[key] = []
        ips.extend(pods[pod_name].ips)
    out = []
    for key, ips in by_key.items():
        chosen = [policies[i] for i in key]
        out.append((tuple(p.policy.id for p in chosen), chosen, tuple(ips)))
    return out


def _tier_groups(
    pods: Mapping[str, LocalPod],
    cluster: tuple[NodeClusterPolicy, ...],
    d: _Direction,
    origins: dict[str, str],
) -> tuple[_Group, ...]:
    """Group local pods by the ordered list of tier ``d``'s ClusterNetworkPolicies
    that have rules of ``d``'s direction and select them (``cluster`` is in order).

    As for NetworkPolicy groups: one set lookup dispatches a packet to its group,
    whose chain visits only its own policies' chains, in evaluation order. A policy
    with rules by sameness takes part as its variants (:func:`_variants`), so the
    groups also tell apart the subjects of different variants; ``origins`` gains
    each variant's policy id.
    """
    tier = ADMIN_TIER if d.tier == "A" else BASELINE_TIER
    chosen: list[NodeClusterPolicy] = []
    for c in cluster:
        if c.policy.tier == tier and _every_tier_rule(d, c):
            _check_targets(pods, c.targets, f"cluster policy {c.policy.name}: subject")
            chosen.extend(_variants(d, c, origins))
    groups = [
        _Group(
            d,
            tuple(cps),
            ips,
            stable_hash({"direction": d.name, "tier": d.tier, "policies": key}, 16),
        )
        for key, cps, ips in _partition(pods, chosen)
    ]
    return tuple(sorted(groups, key=lambda g: g.hash))


def _variants(
    d: _Direction, c: NodeClusterPolicy, origins: dict[str, str]
) -> list[NodeClusterPolicy]:
    """``c`` as the variants its subjects see in ``d``: one per distinct list of
    rules by sameness (``NodeClusterPolicy.variants``) among them this way.

    A variant holds the policy's rules and its subjects' rules by sameness, in the
    order written: the tier dispatch sends a packet to the group of its pod, and
    that group jumps to the pod's own variant, so no rule has to find the pod's
    value group among the node's (one lookup per group, each rule, each new
    connection). A variant's id is a hash of the policy, the direction and what
    its rules by sameness are (index and peer sets), never of who is in it: a pod
    relabelled into a value group the node already has moves between dispatch
    sets, and no rule changes. When every subject sees the same rules this way, the
    policy is itself (its own id).
    """
    by_rules: dict[tuple[TierRule, ...], list[str]] = {}
    for variant, subjects in c.subjects_by_variant():
        same = _same_rules(d, variant) if variant is not None else ()
        by_rules.setdefault(same, []).extend(subjects)
    if len(by_rules) == 1:
        ((same, _),) = by_rules.items()
        return [c] if not same else [NodeClusterPolicy(_with_rules(d, c, same), c.targets)]
    out = []
    for same, members in by_rules.items():
        identity = [
            (
                rule.index,
                [(p.peer_set, p.cidr, p.excepts) for p in rule.peers],
                [(s.peer_set, s.reason) for s in rule.same],
            )
            for rule in same
        ]
        vid = stable_hash({"policy": c.policy.id, "direction": d.name, "same": identity}, 16)
        origins[vid] = c.policy.id
        policy = replace(_with_rules(d, c, same), id=vid)
        out.append(NodeClusterPolicy(policy, tuple(sorted(members))))
    return out


def _with_rules(
    d: _Direction, c: NodeClusterPolicy, same: tuple[TierRule, ...]
) -> CompiledClusterPolicy:
    """``c``'s policy with only its rules of ``d`` and ``same``, in the order written."""
    rules = by_index(_tier_rules(d, c), same)
    if d.name == "ingress":
        return replace(c.policy, ingress=rules, egress=())
    return replace(c.policy, ingress=(), egress=rules)


# A node of the dispatch tree with at most DISPATCH_FANOUT groups tests each directly;
# a bigger one splits on the next DISPATCH_BITS bits of the group hashes (<= 8 children).
# 8 and 3 rather than 16 and 4: with ~330 groups a new connection averages 13.5 set
# lookups instead of 17.3 (worst 25, not 32), for ~15% more tree set members.
DISPATCH_FANOUT = 8
DISPATCH_BITS = 3
_HASH_BITS = 64  # group hashes are 16 hex digits
# The lookup in front of a group chain's half for the members of a set (setsplit).
_SPLIT_COMMENT = comment("rules of the group for members of the set")


@dataclass(frozen=True, slots=True)
class _TreeNode:
    """A node of a direction's dispatch tree: the groups whose hash starts with ``prefix``.

    ``prefix`` is a string of bits ("" for the root). ``children`` are groups
    (leaves) or inner nodes, in hash order. The root is the direction's dispatch
    chain itself; every node has a ``hash:ip`` set holding the pods of all groups
    below it.
    """

    direction: _Direction
    prefix: str
    groups: tuple[_Group, ...]
    children: tuple[_Group | _TreeNode, ...]

    @property
    def hash(self) -> str:
        """Names the node's chain and set: a hash of what the node stands for."""
        payload = {"direction": self.direction.name, "tree": self.prefix}
        if self.direction.tier:
            payload["tier"] = self.direction.tier
        return stable_hash(payload, 16)

    @property
    def chain(self) -> str:
        """The node's chain (the dispatch chain for the root)."""
        if not self.prefix:
            return self.direction.dispatch_chain
        return f"STK-{self.direction.code}T-{self.hash}"

    @property
    def label(self) -> str:
        """The prefix for people: hex digits when it is whole digits, else bits."""
        bits = self.prefix
        if len(bits) % 4 == 0:
            return "hash prefix " + format(int(bits, 2), f"0{len(bits) // 4}x")
        return "hash bits " + bits

    def set_name(self, family: IPFamily) -> str:
        """The union of the pods of every group below the node."""
        return digest_set_name(self.direction.tree_kind, family, self.hash)


def _hash_bits(g: _Group) -> str:
    return format(int(g.hash, 16), f"0{_HASH_BITS}b")


def _dispatch_tree(d: _Direction, prefix: str, groups: Sequence[_Group]) -> _TreeNode:
    """The dispatch tree over ``groups`` (sorted by hash, all starting with ``prefix``).

    A node with at most :data:`DISPATCH_FANOUT` groups tests each group directly.
    A bigger one splits its groups on the next :data:`DISPATCH_BITS` bits of their
    hash (at most 8 children; bits shared by all are skipped); a child with one
    group is that group, a child with more is an inner node. Group hashes are
    uniform, so the tree is balanced (depth about log8 of the number of groups),
    and its shape depends only on the groups: a new group changes the nodes on its
    own path, nothing else.
    """
    if len(groups) <= DISPATCH_FANOUT:
        return _TreeNode(d, prefix, tuple(groups), tuple(groups))
    depth = len(prefix)
    while True:
        depth = min(depth + DISPATCH_BITS, _HASH_BITS)
        buckets: dict[str, list[_Group]] = {}
        for g in groups:
            buckets.setdefault(_hash_bits(g)[:depth], []).append(g)
        if len(buckets) > 1:
            break
        # every group shares these bits: look further (hashes are distinct)
    children: list[_Group | _TreeNode] = [
        bucket[0] if len(bucket) == 1 else _dispatch_tree(d, key, bucket)
        for key, bucket in sorted(buckets.items())
    ]
    return _TreeNode(d, prefix, tuple(groups), tuple(children))


@dataclass
class _FamilyRenderer:
    """Renders one IP family; collects the sets its rules refer to."""

    family: IPFamily
    options: RenderOptions
    views: Mapping[str, _PeerSetView]
    groups: Mapping[str, tuple[_Group, ...]]
    pods: Mapping[str, LocalPod]
    cache: _IPCache
    new_sets: Mapping[IPFamily, IPSet] | None = None
    contested: Mapping[IPFamily, IPSet] | None = None
    # The node's ClusterNetworkPolicies in evaluation order (empty: no tier chains).
    cluster: tuple[NodeClusterPolicy, ...] = ()
    # A variant's policy id -> the id of the policy it is a variant of (_variants).
    origins: Mapping[str, str] = field(default_factory=dict)
    sets: dict[str, IPSet] = field(default_factory=dict)
    # PeerSet name -> its (peer, pport) sets in this family, made once per render.
    peer_sets: dict[str, tuple[IPSet, IPSet | None]] = field(default_factory=dict)
    # (cidr, excepts, direction) -> the peer's match (None: no address of this family).
    cidr_matches: dict[tuple[str | None, tuple[str, ...], SetDirs], tuple[Match, ...] | None] = (
        field(default_factory=dict)
    )
    # Ingress named ports: (port name, protocol) -> the node's tport set (None: empty).
    tport_sets: dict[tuple[str, Protocol], str | None] = field(default_factory=dict)
    # (port name, protocol) -> ``ip,proto:number`` of the local pods declaring it here.
    named_ports: dict[tuple[str, str], list[str]] | None = None
    members: dict[str, Member] = field(default_factory=dict)
    # (direction name, cluster policy id) -> its chain, built once (the group chains
    # read its rules to gate their jumps).
    cnp_chains: dict[tuple[str, str], Chain] = field(default_factory=dict)
    cnp_jumps: dict[tuple[str, str], list[Rule]] = field(default_factory=dict)
    # (direction name, policy id) -> a NetworkPolicy's chain, built once.
    np_chains: dict[tuple[str, str], Chain] = field(default_factory=dict)
    # (direction name, cluster policy id) -> how many tier groups here use it.
    cnp_uses: dict[tuple[str, str], int] = field(default_factory=dict)
    # (direction name, cluster policy id) of the policies some group jumps to.
    cnp_jumped: set[tuple[str, str]] = field(default_factory=set)
    # Tier dispatch chain -> its groups with addresses of this family; group chain -> those.
    tier_groups: dict[str, list[_Group]] = field(default_factory=dict)
    tier_ips: dict[str, list[str]] = field(default_factory=dict)

    def render(self) -> RenderedFamily:
        mask = self.options.mark_mask
        forward = Chain(
            FORWARD_CHAIN,
            (
                # Replies and follow-ups of a connection that was allowed when it
                # started pass before any policy lookup.
                Rule(
                    (ConntrackState(("RELATED", "ESTABLISHED")),),
                    Return(),
                    comment("reply or related of an allowed connection"),
                ),
                *self._pending_rules(),
                *self._contested_rules(),
                *self._self_rules(),
                # Someone else may have used our bits: start from zero, with our mask only.
                Rule((), ClearMark(mask), comment("clear stockade mark bits")),
                *(self._tiered_dispatch() if self.cluster else self._dispatch()),
                # Leave allowed packets' marks as we found them (minus our bits).
                Rule((), ClearMark(mask), comment("clear stockade mark bits")),
            ),
        )
        chains = [forward]
        for d in DIRECTIONS:
            chains.extend(self._direction_chains(d))
        if self.cluster:
            chains.append(self._input_chain())
            chains.append(
                Chain(
                    PASS_CHAIN,
                    (Rule((), SetMark(self.pass_bit, self.pass_bit), comment("tier passed")),),
                )
            )
            for d in TIER_DIRECTIONS:
                chains.extend(self._tier_chains(d))
            for d in DIRECTIONS:
                chains.extend(self._path_chains(d))
            for d in DIRECTIONS:
                chains.extend(self._cluster_policy_chains(d))
        return RenderedFamily(
            self.family, tuple(chains), tuple(sorted(self.sets.values(), key=lambda s: s.name))
        )

    @property
    def pass_bit(self) -> int:
        return self.options.pass_bit

    def _dispatch(self) -> list[Rule]:
        """Without ClusterNetworkPolicies: the NetworkPolicy check of each direction."""
        return [Rule((), Jump(d.dispatch_chain), comment(f"{d.name} policy")) for d in DIRECTIONS]

    def _tiered_dispatch(self) -> list[Rule]:
        """Per direction, the dispatch to the pod's path through Admin tier,
        NetworkPolicy and Baseline tier (docs/dataplane.md, Tiers; :meth:`_path_chain`)."""
        return [
            Rule((), Jump(d.dispatch_chain), comment(f"{d.name}: admin, policy, baseline"))
            for d in (T_EGRESS, T_INGRESS)
        ]

    def _input_chain(self) -> Chain:
        """STK-INPUT: a local pod reaching its own node, judged by its egress tiers.

        The egress paths: Admin egress; a pod that NetworkPolicies isolate for egress
        is allowed to its own node there (final); Baseline egress. The node's own
        traffic to its pods goes out through OUTPUT and is never judged; its replies
        pass by conntrack.
        """
        mask = self.options.mark_mask
        rules = [
            Rule(
                (ConntrackState(("RELATED", "ESTABLISHED")),),
                Return(),
                comment("reply or related of an allowed connection"),
            )
        ]
        if self.family == 6:
            link = self._add_set(
                "link",
                "link-local and multicast",
                "hash:net",
                [Member(n) for n in LINK_NETS6],
            )
            rules.append(
                Rule(
                    (SetMatch(link, "dst"),),
                    Return(),
                    comment("link-local or multicast (neighbour discovery)"),
                )
            )
        to_node = INGRESS.mark_bit(self.options)
        rules += [
            Rule((), ClearMark(mask), comment("clear stockade mark bits")),
            # The ingress bit means nothing here (only the pod's egress is judged):
            # it tells the paths "to the pod's own node", where a pod NetworkPolicies
            # isolate for egress is allowed (their step is skipped).
            Rule((), SetMark(to_node, to_node), comment("to the pod's own node")),
            Rule((), Jump(T_EGRESS.dispatch_chain), comment("egress: admin, baseline")),
            Rule((), ClearMark(mask), comment("clear stockade mark bits")),
        ]
        return Chain(INPUT_CHAIN, tuple(rules))

    def _pending_rules(self) -> list[Rule]:
        """--isolate-new-pods: deny pods the rule set does not cover yet, both ways.

        After the ESTABLISHED return, so a pod that turns pending keeps the replies of
        connections it had (the agent cuts those in conntrack instead).
        """
        if self.new_sets is None:
            return []
        pending = self.new_sets[self.family]
        self.sets[pending.name] = pending
        verdict = self._verdict()
        return [
            Rule((SetMatch(pending.name, d),), verdict, comment(f"{d} pod not yet in rule set"))
            for d in ("src", "dst")
        ]

    def _contested_rules(self) -> list[Rule]:
        """Addresses several pods claim and none owns: deny all their traffic, both ways.

        Narrower than either claimant's policies, so neither pod's deny is lost
        (stockade.ownership); only rendered while the rule set lists such addresses.
        """
        if self.contested is None:
            return []
        contested = self.contested[self.family]
        self.sets[contested.name] = contested
        verdict = self._verdict()
        return [
            Rule((SetMatch(contested.name, d),), verdict, comment(f"{d} address owned by no pod"))
            for d in ("src", "dst")
        ]

    def _self_rules(self) -> list[Rule]:
        """A pod reaching itself through a Service (hairpin) passes: semantics rule 12.

        kube-proxy DNATs pod -> ClusterIP to pod -> pod in PREROUTING, so the packet
        crosses FORWARD with source == destination == the pod's address (the hairpin
        MASQUERADE comes later, in POSTROUTING). One rule whatever the number of pods:
        the source equals the destination (:class:`SameAddress`, a BPF match; the
        ``hash:net,net`` set of (ip, ip) pairs that would do it is missing from
        kernels built without it). No pod set is needed: a packet from an address to
        itself either is a local pod's own or isolates nobody on this node. After the
        pending and contested drops, so those addresses keep only loopback.
        """
        return [
            Rule(
                (SameAddress(self.family),),
                Return(),
                comment("a pod reaching itself (hairpin through a Service)"),
            )
        ]

    def _verdict(self) -> Drop | Reject:
        return Drop() if self.options.drop_action == "DROP" else Reject(_REJECT_WITH[self.family])

    def _add_set(self, kind: SetKind, key: object, type_: SetType, members: list[Member]) -> str:
        name = set_name(kind, self.family, key)
        if name not in self.sets:
            self.sets[name] = make_set(name, type_, self.family, members)
        return name

    def _member(self, ip: str) -> Member:
        """The hash:ip member of a canonical address, made once per render (a pod's
        address is in its group's set and in every tree set above it)."""
        member = self.members.get(ip)
        if member is None:
            member = self.members[ip] = Member(ip)
        return member

    def _ips(self, ips: Sequence[str], where: str) -> list[str]:
        return self.cache.family_ips(ips, self.family, where)

    def _peer_ipsets(self, name: str) -> tuple[IPSet, IPSet | None]:
        made = self.peer_sets.get(name)
        if made is None:
            made = self.peer_sets[name] = _peer_set_ipsets(name, self.views[name], self.family)
        return made

    def _direction_chains(self, d: _Direction) -> list[Chain]:
        """NetworkPolicy in direction ``d``: dispatch, groups, policies, allow chain.

        With tiers the dispatch is the paths' (:meth:`_path_chains`): no set, tree
        or dispatch chain here, and the group chains are the same.
        """
        groups = self.groups[d.dispatch_chain]
        bit = d.mark_bit(self.options)
        allow = Chain(d.allow_chain, (Rule((), SetMark(bit, bit), comment(f"{d.name} allowed")),))
        chains = [allow] if self.cluster else self._dispatch_chains(d, groups, allow)
        uses = Counter(np.policy.id for g in groups for np in g.policies)
        jumped: dict[str, Chain] = {}
        chains.extend(
            chain
            for g in groups
            for chain in split_by_set(self._group_chain(g, uses, jumped), _SPLIT_COMMENT)
        )
        chains.extend(jumped[pid] for pid in sorted(jumped))
        return chains

    def _dispatch_chains(
        self, d: _Direction, groups: Sequence[_Group], allow: Chain
    ) -> list[Chain]:
        """Without tiers: the dispatch chain and tree of ``d``'s groups (and the allow
        chain, whose place in the output the golden files pin)."""
        group_sets = {g.hash: self._ips(g.pod_ips, f"{d.name} group") for g in groups}
        if not groups:  # nothing isolated this way: the dispatch chain stays empty
            return [Chain(d.dispatch_chain, ()), allow]
        root, *tree = self._tree_dispatch(d, groups, group_sets, "pod not isolated")
        return [root, allow, *tree]

    def _tree_dispatch(
        self,
        d: _Direction,
        groups: Sequence[_Group],
        group_sets: Mapping[str, list[str]],
        outside: str,
    ) -> list[Chain]:
        """``d``'s dispatch chain over ``groups``, then its tree's inner chains.

        Makes each group's set (its addresses here, from ``group_sets``) and the
        tree nodes' union sets. The first rule returns, after one lookup, a packet
        whose pod is in no group (``outside`` says what that means, for the comment).
        """
        for g in groups:
            name = g.set_name(self.family)
            self.sets[name] = ip_set(name, self.family, group_sets[g.hash], self._member)
        root = _dispatch_tree(d, "", groups)
        tree_chains: list[Chain] = []
        root_rules = self._tree_node(root, group_sets, tree_chains)
        first = Rule(
            (SetMatch(root.set_name(self.family), d.target_dir, negate=True),),
            Return(),
            comment(f"{d.name}: {outside}"),
        )
        return [
            Chain(d.dispatch_chain, (first, *root_rules)),
            *sorted(tree_chains, key=lambda c: c.name),
        ]

    def _tier_chains(self, d: _Direction) -> list[Chain]:
        """One tier of one direction: its group chains (dispatched by the paths).

        A group chain jumps to its ClusterNetworkPolicies' chains in evaluation order
        (or holds their rules) and RETURNs as soon as one decided (the direction's
        bit: Accept) or passed (the pass bit). Deny drops in the policy chain itself.
        Nothing matched: the group chain ends, on to the next tier.
        """
        return [
            chain
            for g in self._tier_groups_here(d)
            for whole in _split_by_protocol(self._tier_group_chain(g))
            for chain in split_by_set(whole, _SPLIT_COMMENT)
        ]

    def _path_chains(self, d: _Direction) -> list[Chain]:
        """The dispatch of direction ``d`` on a node with tiers, and its paths.

        A pod's *path* is its group in each tier of ``d``: Admin, NetworkPolicy,
        Baseline (the Baseline group only without a NetworkPolicy one, which always
        decides). Pods are grouped by path; each path has a set and a chain, in one
        dispatch tree per direction (as NetworkPolicy groups are without tiers), so
        a packet makes one walk down one tree per direction instead of one per tier.
        """
        admin, policy, baseline, fused = _TIERS_OF[d.name]
        paths, steps = self._paths(admin, policy, baseline, fused)
        if not paths:
            return [Chain(fused.dispatch_chain, ())]
        path_sets = {p.hash: list(p.pod_ips) for p in paths}
        chains = self._tree_dispatch(fused, paths, path_sets, "pod neither isolated nor a subject")
        chains.extend(self._path_chain(d, p, *steps[p.hash]) for p in paths)
        return chains

    def _paths(
        self, admin: _Direction, policy: _Direction, baseline: _Direction, fused: _Direction
    ) -> tuple[list[_Group], dict[str, tuple[_Group | None, _Group | None, _Group | None]]]:
        """The local pods' paths through the tiers of one direction, in this family.

        Each path is a :class:`_Group` of ``fused`` (hash, pods' addresses here, every
        policy on it for comments), sorted by hash; ``steps`` gives its groups.
        """
        # Keyed by the groups' hashes: a group (a frozen dataclass holding its
        # policies and pods) would be hashed whole at every lookup.
        slots: dict[str, list[str]] = {}
        by_hash: dict[str, _Group] = {}
        tiers = (
            self._tier_groups_here(admin),
            self._policy_groups_here(policy),
            self._tier_groups_here(baseline),
        )
        for pos, groups in enumerate(tiers):
            for g in groups:
                by_hash[g.hash] = g
                for ip in self._group_ips(g):
                    slots.setdefault(ip, ["", "", ""])[pos] = g.hash
        by_path: dict[tuple[str, str, str], list[str]] = {}
        for ip, (a, n, b) in slots.items():
            # A NetworkPolicy group always decides: Baseline is never reached after it.
            by_path.setdefault((a, n, "" if n else b), []).append(ip)
        paths: list[_Group] = []
        steps: dict[str, tuple[_Group | None, _Group | None, _Group | None]] = {}
        for ids, ips in by_path.items():
            h = stable_hash({"direction": fused.name, "tier": fused.tier, "groups": list(ids)}, 16)
            first, second, third = (by_hash[i] if i else None for i in ids)
            key = (first, second, third)
            policies = tuple(p for g in key if g is not None for p in g.policies)
            paths.append(_Group(fused, policies, tuple(sorted(ips)), h))
            steps[h] = key
        paths.sort(key=lambda g: g.hash)
        return paths, steps

    def _path_chain(
        self, d: _Direction, path: _Group, a: _Group | None, n: _Group | None, b: _Group | None
    ) -> Chain:
        """A path: the Admin group, then NetworkPolicy's or else the Baseline group.

        The direction's bit set means "decided and allowed" (an Admin Accept, or a
        NetworkPolicy allowing): the later tiers are skipped. A Pass sets the pass
        bit, which only ends its tier's group chain; it is cleared after each tier.
        The NetworkPolicy step also needs the ingress bit clear: STK-INPUT sets it
        (a pod reaching its own node, which NetworkPolicy always allows), and in
        STK-FORWARD it is still clear while egress is judged.
        """
        bit = d.mark_bit(self.options)
        clear_pass = Rule((), ClearMark(self.pass_bit), comment("clear the pass bit"))
        rules: list[Rule] = []
        if a is not None:
            rules += [Rule((), Jump(a.chain), comment(f"{a.direction.label} tier")), clear_pass]
        if n is not None:
            undecided = MarkMatch(0, bit | INGRESS.mark_bit(self.options))
            rules.append(Rule((undecided,), Goto(n.chain), comment(f"{d.name} policy")))
        elif b is not None:
            rules += [
                Rule((MarkMatch(0, bit),), Jump(b.chain), comment(f"{b.direction.label} tier")),
                clear_pass,
            ]
        return Chain(path.chain, tuple(rules))

    def _policy_groups_here(self, d: _Direction) -> list[_Group]:
        """NetworkPolicy groups of ``d`` with pod addresses of this family."""
        return [g for g in self.groups[d.dispatch_chain] if self._group_ips(g)]

    def _group_ips(self, g: _Group) -> list[str]:
        """The group's pod addresses of this family, worked out once per render."""
        ips = self.tier_ips.get(g.chain)
        if ips is None:
            ips = self.tier_ips[g.chain] = self._ips(g.pod_ips, f"{g.direction.label} group")
        return ips

    def _tier_groups_here(self, d: _Direction) -> list[_Group]:
        """The tier groups of ``d`` with pod addresses of this family.

        A group with none can never be dispatched to in this family's table, so it
        gets no set, no chain, no dispatch rule (an IPv4-only cluster's IPv6 table
        then holds no tier group chains, and no policy chain only they would use).
        """
        here = self.tier_groups.get(d.dispatch_chain)
        if here is None:
            here = self.tier_groups[d.dispatch_chain] = [
                g for g in self.groups[d.dispatch_chain] if self._group_ips(g)
            ]
        return here

    def _tier_group_chain(self, g: _Group) -> Chain:
        """The group's ClusterNetworkPolicy chains in evaluation order.

        Each jump is gated by what the policy's rules could match at all
        (:func:`_gates`): a packet of another protocol, or on none of the policy's
        ports, skips the chain without a set lookup; a policy with no rule in this
        family gets no jump. Between jumps, one mark test on the direction's bit
        and the pass bit together: the previous policy accepted or passed.
        """
        d = g.direction
        stop = d.mark_bit(self.options) | self.pass_bit
        # The previous policy accepted or passed: this tier is over.
        done = Rule(
            (MarkMatch(0, stop, negate=True),), Return(), comment(f"{d.label}: accepted or passed")
        )
        rules: list[Rule] = []
        after_jump = False
        for cp in g.policies:
            chain = self._cnp_chain(d, cp)
            if not chain.rules:
                continue  # no rule in this family: the policy matches nothing here
            if after_jump:
                rules.append(done)
            gates = _gates(chain.rules)
            jump_rules = len(gates) + 1
            # A gate that tests protocol or ports lets most packets skip the whole
            # chain for one rule visit: keep it unless inlining is no longer anyway.
            gated = gates != [()]
            if (
                self.options.inline_policies
                and _inlined(chain.rules, jump_rules, self._cnp_use_count(d, cp))
                and (not gated or len(chain.rules) <= jump_rules)
            ):
                rules.extend(chain.rules)
                after_jump = False
            else:
                rules.extend(self._cnp_jumps(d, cp))
                self.cnp_jumped.add((d.name, cp.policy.id))
                after_jump = True
        # Policies written from one template repeat rules: only the first copy can
        # match (docs/dataplane.md, "Tiers").
        return Chain(g.chain, unshadowed(rules))

    def _cnp_use_count(self, d: _Direction, cp: AnyPolicy) -> int:
        """How many tier groups of ``d``'s direction (here, this family) use ``cp``."""
        if not self.cnp_uses:
            for td in TIER_DIRECTIONS:
                for g in self._tier_groups_here(td):
                    for p in g.policies:
                        key = (td.name, p.policy.id)
                        self.cnp_uses[key] = self.cnp_uses.get(key, 0) + 1
        return self.cnp_uses.get((d.name, cp.policy.id), 0)

    def _cnp_jumps(self, d: _Direction, cp: AnyPolicy) -> list[Rule]:
        """A group chain's gated jump(s) to a policy's chain (the same for every group)."""
        key = (d.name, cp.policy.id)
        jumps = self.cnp_jumps.get(key)
        if jumps is None:
            chain = self._cnp_chain(d, cp)
            note = comment(f"{cp.policy.name} {d.name}")
            jumps = [Rule(gate, Jump(chain.name), note) for gate in _gates(chain.rules)]
            self.cnp_jumps[key] = jumps
        return jumps

    def _cluster_policy_chains(self, d: _Direction) -> list[Chain]:
        """The chains of the ClusterNetworkPolicies some group of ``d``'s direction jumps to.

        After the tier chains: a policy every group inlined needs no chain of its own.
        """
        used: dict[str, NodeClusterPolicy] = {}
        for td in TIER_DIRECTIONS:
            if td.name != d.name:
                continue
            for g in self._tier_groups_here(td):
                for cp in g.policies:
                    assert isinstance(cp, NodeClusterPolicy)
                    jumped = (d.name, cp.policy.id) in self.cnp_jumped
                    if jumped or not self.options.inline_policies:
                        used[cp.policy.id] = cp
        return [self._cnp_chain(d, used[pid]) for pid in sorted(used)]

    def _cnp_chain(self, d: _Direction, cp: AnyPolicy) -> Chain:
        assert isinstance(cp, NodeClusterPolicy)
        key = (d.name, cp.policy.id)
        chain = self.cnp_chains.get(key)
        if chain is None:
            chain = self.cnp_chains[key] = self._cluster_policy_chain(d, cp)
        return chain

    def _cluster_policy_chain(self, d: _Direction, cp: NodeClusterPolicy) -> Chain:
        """A ClusterNetworkPolicy's rules of one direction, in the order written.

        Accept: ``-g STK-ALLOW-<DIR>`` (sets the direction's bit: decided, allowed);
        Pass: ``-g STK-PASS`` (sets the pass bit); Deny: the configured verdict,
        after an optional rate-limited log. Each goto also ends the policy's scan.
        The cheap matches come first: protocol and port numbers, then the named-port
        set, then the peer set, so a rule whose port cannot match costs no set lookup.
        """
        tier = _TIER_OF[cp.policy.tier]
        rules: list[Rule] = []
        for rule in _tier_rules(d, cp):
            # Rules by sameness come unguarded: the policy here is a variant.
            peers = self._peer_matches(d, cp, rule.peers)
            ports = self._port_matches(d, cp, rule.ports)
            what = f"rule {rule.index}" + (f" ({rule.name})" if rule.name else "")
            closed = " fails closed" if rule.fail_closed else ""
            note = comment(f"{cp.policy.name} {d.name} {what} {rule.action}{closed}")
            for port in ports:
                for peer in peers:
                    # Cheap first: protocol and ports, then the peer.
                    matches = port + peer
                    if rule.action == ACCEPT:
                        rules.append(Rule(matches, Goto(d.allow_chain), note))
                    elif rule.action == PASS:
                        rules.append(Rule(matches, Goto(PASS_CHAIN), note))
                    else:
                        rules.extend(self._tier_deny(d, tier, cp, matches, note))
        return Chain(_cluster_policy_chain(d, cp.policy.id), tuple(rules))

    def _tier_deny(
        self, d: _Direction, tier: str, cp: NodeClusterPolicy, matches: tuple[Match, ...], note: str
    ) -> list[Rule]:
        opts = self.options
        rules = []
        if opts.log_denied:
            origin = self.origins.get(cp.policy.id, cp.policy.id)
            prefix = f"stk deny {d.name} {tier}{origin[:8]}: "
            log = NFLog(opts.nflog_group, prefix) if opts.log_mode == "NFLOG" else Log(prefix)
            rules.append(Rule((*matches, LimitMatch(opts.log_rate)), log, note))
        rules.append(Rule(matches, self._verdict(), note))
        return rules

    def _tree_node(
        self, node: _TreeNode, group_sets: Mapping[str, list[str]], out: list[Chain]
    ) -> list[Rule]:
        """The rules of one node of the dispatch tree; its inner nodes' chains go to ``out``.

        Also makes the node's union set (every pod below it). Each rule tests one
        child's set and goes to the child: a pod is in one group only, so the first
        match is the only one, and the group's end returns to STK-FORWARD.
        """
        d = node.direction
        name = node.set_name(self.family)
        ips = [ip for g in node.groups for ip in group_sets[g.hash]]
        self.sets[name] = ip_set(name, self.family, ips, self._member)
        rules = []
        for child in node.children:
            if isinstance(child, _Group):
                names = ", ".join(np.policy.name for np in child.policies)
                note = comment(f"{d.label} group {child.hash}: {names}")
            else:
                inner = self._tree_node(child, group_sets, out)
                out.append(Chain(child.chain, tuple(inner)))
                note = comment(f"{d.label} groups with {child.label}")
            rules.append(
                Rule(
                    (SetMatch(child.set_name(self.family), d.target_dir),), Goto(child.chain), note
                )
            )
        return rules

    def _group_chain(self, g: _Group, uses: Mapping[str, int], jumped: dict[str, Chain]) -> Chain:
        """The group's policies in turn (inlined or jumped to), then the verdict.

        ``uses`` counts the groups of this direction each policy is in; the chains
        of the policies jumped to are added to ``jumped``. An inlined rule that
        allows goes to the allow chain, which ends the group chain too.
        """
        d = g.direction
        bit = d.mark_bit(self.options)
        rules = [
            # INVALID is dropped only for isolated pods: stockade stays invisible to
            # traffic no policy closes.
            Rule((ConntrackState(("INVALID",)),), Drop(), comment(f"{d.name} invalid state")),
        ]
        for np in g.policies:
            assert isinstance(np, NodePolicy)
            chain = self._policy_chain(d, np)
            if self.options.inline_policies and _inlined(chain.rules, 2, uses[np.policy.id]):
                rules.extend(chain.rules)
                continue
            jumped[np.policy.id] = chain
            rules.append(Rule((), Jump(chain.name), comment(f"{np.policy.name} {d.name}")))
            # Stop at the first policy that allows: the union needs only one.
            rules.append(
                Rule((MarkMatch(bit, bit),), Return(), comment(f"{d.name} allowed by policy"))
            )
        rules.extend(self._deny(d, g))
        # Two policies of one group often allow the same peer on the same port: the
        # second copy can never match first.
        return Chain(g.chain, unshadowed(rules))

    def _deny(self, d: _Direction, g: _Group) -> list[Rule]:
        opts = self.options
        rules = []
        if opts.log_denied:
            prefix = f"stk deny {d.name} {g.hash[:8]}: "
            log = NFLog(opts.nflog_group, prefix) if opts.log_mode == "NFLOG" else Log(prefix)
            rules.append(Rule((LimitMatch(opts.log_rate),), log, comment(f"{d.name} log denied")))
        rules.append(Rule((), self._verdict(), comment(f"{d.name} denied: no policy allows")))
        return rules

    def _policy_chain(self, d: _Direction, np: NodePolicy) -> Chain:
        """A NetworkPolicy's rules of direction ``d`` (built once per render)."""
        key = (d.name, np.policy.id)
        chain = self.np_chains.get(key)
        if chain is None:
            chain = self.np_chains[key] = self._build_policy_chain(d, np)
        return chain

    def _build_policy_chain(self, d: _Direction, np: NodePolicy) -> Chain:
        rules: list[Rule] = []
        for index, rule in enumerate(d.rules_of(np) or ()):
            peers = self._peer_matches(d, np, rule.peers)
            ports = self._port_matches(d, np, rule.ports)
            note = comment(f"{np.policy.name} {d.name} rule {index}")
            # One iptables rule per (peer, port group): a rule matches one set and
            # one protocol, so the policy rule's "any peer, any port" is a product.
            # Protocol and ports first: a packet to another port makes no set lookup
            # (a group's policies are tried in turn; most rules miss on the port).
            rules.extend(
                Rule(port + peer, Goto(d.allow_chain), note) for peer in peers for port in ports
            )
        return Chain(d.policy_chain(np.policy.id), tuple(rules))

    def _peer_matches(
        self, d: _Direction, np: AnyPolicy, peers: tuple[PeerMatch, ...]
    ) -> list[tuple[Match, ...]]:
        if not peers:
            return [()]  # no peers: any peer
        out: list[tuple[Match, ...]] = []
        for peer in peers:
            if (peer.peer_set is None) == (peer.cidr is None):
                raise RenderError(f"policy {np.policy.name}: a peer needs peer_set or cidr")
            if peer.peer_set is None:
                cidr = self._cidr_match(np, peer, d)
                if cidr is not None and cidr not in out:
                    out.append(cidr)
                continue
            match: tuple[Match, ...] = (SetMatch(self._peer_set(peer.peer_set), d.peer_dir),)
            if match not in out:
                out.append(match)
        # Peers exist but none of this family: the rule matches nothing here
        # (and must not turn into "any peer").
        return out

    def _peer_set(self, name: str) -> str:
        peer, _ = self._peer_ipsets(name)
        self.sets.setdefault(peer.name, peer)
        return peer.name

    def _cidr_match(
        self, np: AnyPolicy, peer: PeerMatch, d: _Direction
    ) -> tuple[Match, ...] | None:
        """The match of a CIDR peer; None when it has no address of this family.

        A CIDR without exceptions is compared in the rule itself (``-s``/``-d``,
        nothing for a /0): a set lookup costs several times more (docs/dataplane.md,
        "What a new connection costs"). With exceptions, a ``hash:net`` set holds the
        CIDR and its ``nomatch`` exceptions.
        """
        key = (peer.cidr, peer.excepts, d.peer_dir)
        if key not in self.cidr_matches:
            self.cidr_matches[key] = self._make_cidr_match(np, peer, d)
        return self.cidr_matches[key]

    def _make_cidr_match(
        self, np: AnyPolicy, peer: PeerMatch, d: _Direction
    ) -> tuple[Match, ...] | None:
        assert peer.cidr is not None
        try:
            cidr = ipaddress.ip_network(peer.cidr, strict=False)
            excepts = sorted(
                {ipaddress.ip_network(e, strict=False) for e in peer.excepts},
                key=lambda n: (int(n.network_address), n.prefixlen),
            )
        except ValueError as exc:
            raise RenderError(f"policy {np.policy.name}: {exc}") from None
        if any(e.version != cidr.version for e in excepts):
            raise RenderError(f"policy {np.policy.name}: excepts of {cidr} of another family")
        if cidr.version != self.family:
            return None
        if not excepts:
            if cidr.prefixlen == 0:
                return ()  # every address of the family
            side: Literal["src", "dst"] = "src" if d.peer_dir == "src" else "dst"
            return (AddressMatch(canonical_cidr(str(cidr)), side),)
        # hash:net refuses /0, so "everything" is stored as its two halves.
        positives = list(cidr.subnets(1)) if cidr.prefixlen == 0 else [cidr]
        members = [Member(str(n)) for n in positives]
        members += [Member(str(e), nomatch=True) for e in excepts]
        key = {"cidr": str(cidr), "except": [str(e) for e in excepts]}
        return (SetMatch(self._add_set("cidr", key, "hash:net", members), d.peer_dir),)

    def _port_matches(
        self, d: _Direction, np: AnyPolicy, ports: tuple[PortMatch, ...]
    ) -> list[tuple[Match, ...]]:
        if not ports:
            return [()]  # no ports: any port, any protocol
        for p in ports:
            _check_port(np, p)
        out: list[tuple[Match, ...]] = []
        # Ports of one protocol are merged (multiport), so the rule count depends on
        # the number of protocols and named ports, not on how the ports were listed.
        for proto in PROTOCOLS:
            mine = [p for p in ports if p.protocol == proto]
            if any(p.port is None and p.name is None for p in mine):
                out.append((ProtoMatch(proto),))  # every port of proto covers the rest
                continue
            ranges = sorted({(p.port, p.end_port or p.port) for p in mine if p.port is not None})
            for chunk in split_multiport(ranges):
                out.append((ProtoMatch(proto), PortRange(proto, chunk)))
            seen: set[str] = set()
            for p in mine:
                if p.name is not None and p.name not in seen:
                    seen.add(p.name)
                    name = self._named_port_set(d, np, p, proto)
                    if name is not None:  # None: no pod declares it, matches nothing
                        out.append((ProtoMatch(proto), SetMatch(name, "dst,dst")))
        return out

    def _named_port_set(
        self, d: _Direction, np: AnyPolicy, port: PortMatch, proto: Protocol
    ) -> str | None:
        """The hash:ip,port set resolving a named port for this direction.

        Ingress: the port is the destination pod's, a local pod. One set per (port
        name, protocol) for the whole node, shared by every policy (NetworkPolicies
        and ClusterNetworkPolicies alike): (ip, proto:number) of each local pod that
        declares the port (LocalPod.ports). It may list pods that are not the
        policy's targets, which never matters: a policy's chain is only reached
        from the group chain of its own targets (the dispatch tests the destination
        first), so the lookup is always about one of them. None when no local pod
        declares the port in this family: the rule then matches nothing and is left
        out (never "any port").
        Egress: the destination is a remote peer; the controller resolved the name
        on every pod into the PeerSet ``named_port_set`` (always rendered, even
        empty: the agent's member-only fast path may fill it).
        """
        assert port.name is not None
        if d.name == "ingress":
            key = (port.name, proto)
            if key not in self.tport_sets:
                self.tport_sets[key] = self._make_tport_set(port.name, proto)
            return self.tport_sets[key]
        if port.named_port_set is None:
            raise RenderError(f"policy {np.policy.name}: egress named port {port.name} has no set")
        view = self.views[port.named_port_set]
        ref = view.selector.named_port
        if ref is None or (ref.name, ref.protocol) != (port.name, proto):
            raise RenderError(
                f"policy {np.policy.name}: peer set {port.named_port_set} "
                f"does not resolve {proto} port {port.name}"
            )
        _, pport = self._peer_ipsets(port.named_port_set)
        assert pport is not None  # the selector names a port (checked above)
        self.sets.setdefault(pport.name, pport)
        return pport.name

    def _make_tport_set(self, name: str, proto: Protocol) -> str | None:
        if self.named_ports is None:
            # One pass over the local pods for every named port of the node.
            self.named_ports = {}
            for pod in self.pods.values():
                for cp in pod.ports:
                    key = (cp.name, cp.protocol)
                    self.named_ports.setdefault(key, []).extend(
                        f"{ip},{cp.protocol.lower()}:{cp.port}"
                        for ip in self._ips(pod.ips, f"pod {pod.name}")
                    )
        members = [Member(v) for v in self.named_ports.get((name, proto), ())]
        if not members:
            return None
        # Named by what it stands for (the port's name and protocol), as every set.
        return self._add_set("tport", {"port": name, "protocol": proto}, "hash:ip,port", members)
