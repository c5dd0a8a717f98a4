"""Cluster IPs and node ports, handed out and taken back as kube-apiserver's allocators do.

Pure bookkeeping, with no knowledge of Services (:mod:`stockade_lab.emulator.networking`
applies it to them):

- :class:`IPRange` is one service CIDR (kube-apiserver's ``--service-cluster-ip-range``,
  one per IP family). Its network address is never handed out, nor an IPv4 range's
  broadcast address; its first address (``10.96.0.1`` in ``10.96.0.0/16``) is reserved
  for the ``kubernetes`` Service and only handed out when asked for by name.
- :class:`PortRange` is the node port range (``--service-node-port-range``,
  30000-32767 by default).
- :class:`Transaction` groups the allocations of one write, so a write that fails
  (or a dry run) gives back what it took, and releases take effect only on commit.

Unlike kube-apiserver, which picks a random free value, the lowest free value is handed
out: the emulator's answers are then the same on every run (a freed address is the next
one handed out).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence

DEFAULT_SERVICE_CIDRS = ("10.96.0.0/16", "fd00:10:96::/112")
DEFAULT_NODE_PORT_RANGE = (30000, 32767)


class AllocationError(Exception):
    """A value that cannot be handed out; the message reads as kube-apiserver's."""


class RangeFullError(AllocationError):
    """No free value is left in the range."""

    def __init__(self) -> None:
        super().__init__("range is full")


class _Pool:
    """The integers ``low..high`` (inclusive), handed out lowest first."""

    def __init__(self, low: int, high: int, reserved: Iterable[int] = ()) -> None:
        self.low = low
        self.high = high
        self._reserved = frozenset(reserved)
        self._used: set[int] = set()
        self._hint = low  # every value below it is used or reserved

    def __contains__(self, value: int) -> bool:
        return self.low <= value <= self.high

    @property
    def used(self) -> int:
        return len(self._used)

    def is_used(self, value: int) -> bool:
        return value in self._used

    def take(self, value: int, *, reserved_ok: bool = False) -> bool:
        """Take ``value``; False when it is used (or reserved, unless ``reserved_ok``)."""
        if value in self._used or (value in self._reserved and not reserved_ok):
            return False
        self._used.add(value)
        return True

    def take_next(self) -> int | None:
        """The lowest free value, now taken (None when none is left)."""
        value = self._hint
        while value <= self.high and (value in self._used or value in self._reserved):
            value += 1
        self._hint = value
        if value > self.high:
            return None
        self._used.add(value)
        self._hint = value + 1
        return value

    def release(self, value: int) -> None:
        """Give ``value`` back (nothing happens if it was not taken)."""
        if value in self._used:
            self._used.remove(value)
            self._hint = min(self._hint, value)


def ip_family(address: str) -> str | None:
    """``IPv4`` or ``IPv6`` for an IP address, None for anything else."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    return "IPv4" if parsed.version == 4 else "IPv6"


class IPRange:
    """One service CIDR of one IP family."""

    def __init__(self, cidr: str) -> None:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=True)
        except ValueError as exc:
            raise ValueError(f"invalid service CIDR {cidr!r}: {exc}") from exc
        if network.max_prefixlen - network.prefixlen < 2:
            raise ValueError(f"service CIDR {cidr} is too small (it needs 4 addresses or more)")
        self.network = network
        self.cidr = str(network)
        self.family = "IPv4" if network.version == 4 else "IPv6"
        base = int(network.network_address)
        last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
        self._pool = _Pool(base + 1, last, reserved=(base + 1,))

    def __repr__(self) -> str:
        return f"IPRange({self.cidr!r})"

    @property
    def reserved(self) -> str:
        """The address of the ``kubernetes`` Service (the first of the range)."""
        return str(self.network.network_address + 1)

    @property
    def used(self) -> int:
        """How many addresses are handed out."""
        return self._pool.used

    def _offset(self, address: str) -> int | None:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return None
        if parsed.version != self.network.version or parsed not in self.network:
            return None
        value = int(parsed)
        return value if value in self._pool else None

    def contains(self, address: str) -> bool:
        """Whether ``address`` is one this range may hand out."""
        return self._offset(address) is not None

    def is_allocated(self, address: str) -> bool:
        """Whether ``address`` is handed out now."""
        value = self._offset(address)
        return value is not None and self._pool.is_used(value)

    def allocate(self, address: str | None = None, *, reserved_ok: bool = False) -> str:
        """Hand out ``address`` (or the lowest free one); raises :class:`AllocationError`.

        The reserved first address is handed out only with ``reserved_ok``.
        """
        if address is None:
            value = self._pool.take_next()
            if value is None:
                raise RangeFullError
            return str(ipaddress.ip_address(value))
        offset = self._offset(address)
        if offset is None:
            raise AllocationError(
                f"the provided IP ({address}) is not in the valid range. "
                f"The range of valid IPs is {self.cidr}"
            )
        if not self._pool.take(offset, reserved_ok=reserved_ok):
            if self._pool.is_used(offset):
                raise AllocationError("provided IP is already allocated")
            raise AllocationError("provided IP is reserved for the kubernetes service")
        return address

    def release(self, address: str) -> None:
        """Give ``address`` back (nothing happens when it is not handed out or not ours)."""
        value = self._offset(address)
        if value is not None:
            self._pool.release(value)


class PortRange:
    """The node port range."""

    def __init__(
        self, low: int = DEFAULT_NODE_PORT_RANGE[0], high: int = DEFAULT_NODE_PORT_RANGE[1]
    ) -> None:
        if not 0 < low <= high <= 65535:
            raise ValueError(f"invalid node port range {low}-{high}")
        self.low = low
        self.high = high
        self._pool = _Pool(low, high)

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """``30000-32767`` (or a single port)."""
        low, _, high = text.strip().partition("-")
        try:
            return cls(int(low), int(high or low))
        except ValueError as exc:
            raise ValueError(f"invalid node port range {text!r}") from exc

    def __repr__(self) -> str:
        return f"PortRange({self.low}, {self.high})"

    @property
    def used(self) -> int:
        """How many ports are handed out."""
        return self._pool.used

    def contains(self, port: int) -> bool:
        """Whether ``port`` is in the range."""
        return port in self._pool

    def is_allocated(self, port: int) -> bool:
        """Whether ``port`` is handed out now."""
        return self._pool.is_used(port)

    def allocate(self, port: int | None = None) -> int:
        """Hand out ``port`` (or the lowest free one); raises :class:`AllocationError`."""
        if port is None:
            value = self._pool.take_next()
            if value is None:
                raise RangeFullError
            return value
        if port not in self._pool:
            raise AllocationError(
                "provided port is not in the valid range. "
                f"The range of valid ports is {self.low}-{self.high}"
            )
        if not self._pool.take(port):
            raise AllocationError("provided port is already allocated")
        return port

    def release(self, port: int) -> None:
        """Give ``port`` back (nothing happens when it is not handed out)."""
        if port in self._pool:
            self._pool.release(port)


def parse_service_cidrs(value: str | Sequence[str]) -> tuple[IPRange, ...]:
    """One or two service CIDRs (``"10.96.0.0/16,fd00:10:96::/112"``), primary first.

    Two must be of different IP families, as for kube-apiserver's
    ``--service-cluster-ip-range``; raises ValueError otherwise.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    ranges = tuple(IPRange(item) for item in items if item.strip())
    if not 1 <= len(ranges) <= 2:
        raise ValueError(f"expected one or two service CIDRs, got {len(ranges)}")
    if len(ranges) == 2 and ranges[0].family == ranges[1].family:
        raise ValueError("two service CIDRs must be of different IP families (one IPv4, one IPv6)")
    return ranges


class Transaction:
    """The allocations of one write: undone by :meth:`rollback`, releases deferred.

    Values are taken at once (so a later allocation of the same write sees them) and
    given back on rollback; releases wait for :meth:`commit`, so a failed write keeps
    what the stored object holds.
    """

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self._releases: list[Callable[[], None]] = []

    def allocate_ip(
        self, ip_range: IPRange, address: str | None = None, *, reserved_ok: bool = False
    ) -> str:
        """:meth:`IPRange.allocate`, undone on rollback."""
        got = ip_range.allocate(address, reserved_ok=reserved_ok)
        self._undo.append(lambda: ip_range.release(got))
        return got

    def allocate_port(self, port_range: PortRange, port: int | None = None) -> int:
        """:meth:`PortRange.allocate`, undone on rollback."""
        got = port_range.allocate(port)
        self._undo.append(lambda: port_range.release(got))
        return got

    def release_ip(self, ip_range: IPRange, address: str) -> None:
        """Give ``address`` back on commit."""
        self._releases.append(lambda: ip_range.release(address))

    def release_port(self, port_range: PortRange, port: int) -> None:
        """Give ``port`` back on commit."""
        self._releases.append(lambda: port_range.release(port))

    def commit(self) -> None:
        """Keep the allocations and do the releases."""
        for release in self._releases:
            release()
        self._undo.clear()
        self._releases.clear()

    def rollback(self) -> None:
        """Give back what was allocated; forget the releases."""
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self._releases.clear()
