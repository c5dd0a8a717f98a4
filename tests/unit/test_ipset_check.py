"""The fast member check of IPv4 hash:ip sets gives the general check's verdict."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stockade.agent.ipsets import IPSet, IPSetModelError, Member, member_key

NAME = "stk-peer4-0123456789abcdef"

octet = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["010", "256", "00", "1 "]))
address = st.one_of(
    st.tuples(octet, octet, octet, octet).map(".".join),
    st.sampled_from(["::1", "10.0.0", "", "10.0.0.1/32"]),
)
member = st.builds(Member, address, st.booleans())


def _general(members: tuple[Member, ...]) -> bool:
    """The check IPSet makes for any set type: parse each, then sorted and unique."""
    try:
        keys = [member_key("hash:ip", 4, m.value) for m in members]
    except IPSetModelError:
        return False
    return not any(m.nomatch for m in members) and keys == sorted(set(keys))


@given(st.lists(member, max_size=6).map(tuple))
def test_fast_check_agrees_with_the_general_one(members: tuple[Member, ...]) -> None:
    try:
        IPSet(NAME, "hash:ip", "inet", members, 65536)
        accepted = True
    except IPSetModelError:
        accepted = False
    assert accepted == _general(members)


@given(st.lists(st.integers(0, 2**32 - 1), max_size=20, unique=True))
def test_canonical_sorted_addresses_are_accepted(numbers: list[int]) -> None:
    values = [".".join(str((n >> s) & 255) for s in (24, 16, 8, 0)) for n in sorted(numbers)]
    IPSet(NAME, "hash:ip", "inet", tuple(Member(v) for v in values), 65536)
