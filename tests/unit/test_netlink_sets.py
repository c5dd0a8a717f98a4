"""The netlink set-member adapter turns the kernel's refusals into CommandError."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from stockade.agent import netlink
from stockade.agent.executor import CommandError
from stockade.agent.ipsets import MemberChange


class RefusingIPSet:
    """Accepts adds to ``stk-ok`` only; records what it was asked."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []
        self.closed = False

    def add(self, name: str, entry: Any, **kw: Any) -> None:
        if name != "stk-ok":
            raise NetlinkError(errno.ENOENT, "No such file or directory")
        self.done.append(("add", name))

    def delete(self, name: str, entry: Any, **kw: Any) -> None:
        raise NetlinkError(errno.EINVAL, "Invalid argument")

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("change", "argv", "code"),
    [
        (
            MemberChange("stk-gone", "hash:ip", "10.0.0.1", True),
            ["netlink", "ipset", "add", "stk-gone", "10.0.0.1"],
            errno.ENOENT,
        ),
        (
            MemberChange("stk-ok", "hash:ip", "10.0.0.1", False),
            ["netlink", "ipset", "del", "stk-ok", "10.0.0.1"],
            errno.EINVAL,
        ),
    ],
)
def test_a_refused_member_change_is_a_command_error(
    monkeypatch: pytest.MonkeyPatch, change: MemberChange, argv: list[str], code: int
) -> None:
    fake = RefusingIPSet()
    monkeypatch.setattr(netlink, "_IPSet", lambda: fake)
    sets = netlink.NetlinkSets()
    ok = MemberChange("stk-ok", "hash:ip", "10.0.0.9", True)
    with pytest.raises(CommandError) as caught:
        sets.apply([ok, change, ok])
    assert caught.value.argv == argv
    assert caught.value.code == code
    # In order, up to the refused one; the socket is closed either way.
    assert fake.done == [("add", "stk-ok")]
    assert fake.closed
    assert sets.calls == 2
