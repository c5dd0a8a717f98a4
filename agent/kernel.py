"""The kernel as the applier sees it: commands, set member changes and conntrack flows.

:class:`Kernel` names everything the applier does to a kernel, so a test can hand it
a stand-in that holds state and refuses what the real kernel would refuse, instead
of patching the applier's adapters one by one. :class:`SystemKernel` is the real
one: the subprocess executor, netlink for set members and the conntrack table of a
network namespace, exactly as the applier builds them when given no kernel.

The applier keeps talking to three channels (``executor``, ``netlink``,
``conntrack``); :func:`channels` derives them from a kernel. For the real kernel
they are its own adapters (so their counters and extras stay reachable); for any
other kernel they are thin forwarders to its methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from stockade.agent.executor import Executor
from stockade.agent.ipsets import MemberChange
from stockade.agent.netlink import ConntrackTable, Flow, NetlinkSets, local_addresses


class Kernel(Protocol):
    """Everything the applier reads from and writes to a kernel."""

    def run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        """Run a tool (``ipset``, ``iptables-*-save``/``-restore``, ``conntrack``).

        Returns its stdout; raises :class:`~stockade.agent.executor.CommandError`
        when the tool fails.
        """
        ...

    def change_members(self, changes: Sequence[MemberChange]) -> None:
        """Add or delete set members one by one, in order (netlink, no subprocess)."""
        ...

    def flows(self) -> list[Flow]:
        """Every TCP, UDP and SCTP conntrack entry of both families."""
        ...

    def delete_flows(self, flows: Iterable[Flow]) -> int:
        """Delete the conntrack entries of ``flows`` (by original tuple); how many went."""
        ...

    def local_addresses(self) -> set[str]:
        """Every address configured on the node (what the kernel routes to INPUT)."""
        ...


@dataclass
class SystemKernel:
    """The real kernel: a command executor, netlink ipset churn and a conntrack table."""

    executor: Executor
    netlink: NetlinkSets
    conntrack: ConntrackTable

    @classmethod
    def of(cls, executor: Executor, netns: str | None = None) -> SystemKernel:
        """The kernel of ``netns`` (None: the agent's own), reached through ``executor``."""
        return cls(executor, NetlinkSets(netns), ConntrackTable(netns, executor))

    def run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        """Run ``argv`` through the executor."""
        return self.executor.run(argv, stdin)

    def change_members(self, changes: Sequence[MemberChange]) -> None:
        """Apply member changes by netlink."""
        self.netlink.apply(changes)

    def flows(self) -> list[Flow]:
        """The conntrack table's flows (the families it is set to)."""
        return self.conntrack.flows()

    def delete_flows(self, flows: Iterable[Flow]) -> int:
        """Delete entries from the conntrack table."""
        return self.conntrack.delete(flows)

    def local_addresses(self) -> set[str]:
        """The addresses of the namespace the netlink channel works in."""
        return local_addresses(self.netlink.netns)


class KernelSets(NetlinkSets):
    """The applier's ``netlink`` channel for a kernel that is not the system's.

    A subclass of the real adapter so the applier's attribute keeps its type (and
    its ``calls`` counter) whatever the kernel.
    """

    def __init__(self, kernel: Kernel) -> None:
        super().__init__(None)
        self.kernel = kernel

    def apply(self, changes: Iterable[MemberChange]) -> None:
        """Hand the changes to the kernel, in order."""
        todo = list(changes)
        if not todo:
            return  # as the real adapter: an empty batch touches nothing
        self.calls += len(todo)
        self.kernel.change_members(todo)


class KernelFlows(ConntrackTable):
    """The applier's ``conntrack`` channel for a kernel that is not the system's.

    Keeps the real table's ``families`` filter: the applier narrows it to the
    families the node has, and the kernel lists both.
    """

    def __init__(self, kernel: Kernel) -> None:
        super().__init__(None, None)
        self.kernel = kernel

    def flows(self) -> list[Flow]:
        """The kernel's flows of the families in :attr:`families`."""
        return [f for f in self.kernel.flows() if f.family in self.families]

    def netlink_flows(self) -> list[Flow]:
        """The same as :meth:`flows`: a stand-in kernel has one listing only."""
        return self.flows()

    def delete(self, flows: Iterable[Flow]) -> int:
        """Delete through the kernel."""
        return self.kernel.delete_flows(flows)


def channels(kernel: Kernel) -> tuple[Executor, NetlinkSets, ConntrackTable]:
    """The applier's executor, netlink and conntrack channels to ``kernel``."""
    if isinstance(kernel, SystemKernel):
        return kernel.executor, kernel.netlink, kernel.conntrack
    return kernel, KernelSets(kernel), KernelFlows(kernel)
