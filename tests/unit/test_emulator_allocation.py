"""The emulator's cluster IP and node port allocators (pure bookkeeping)."""

from __future__ import annotations

import pytest

from stockade_lab.emulator.allocation import (
    AllocationError,
    IPRange,
    PortRange,
    RangeFullError,
    Transaction,
    ip_family,
    parse_service_cidrs,
)


def test_ipv4_range_hands_out_lowest_free_skipping_reserved() -> None:
    ips = IPRange("10.96.0.0/16")
    assert ips.family == "IPv4"
    assert ips.reserved == "10.96.0.1"
    assert [ips.allocate() for _ in range(3)] == ["10.96.0.2", "10.96.0.3", "10.96.0.4"]
    assert ips.used == 3
    ips.release("10.96.0.3")
    assert not ips.is_allocated("10.96.0.3")
    assert ips.allocate() == "10.96.0.3"  # a freed address is the next one handed out
    assert ips.allocate() == "10.96.0.5"


def test_reserved_address_only_on_request() -> None:
    ips = IPRange("10.96.0.0/16")
    with pytest.raises(AllocationError, match="reserved for the kubernetes service"):
        ips.allocate("10.96.0.1")
    assert ips.allocate("10.96.0.1", reserved_ok=True) == "10.96.0.1"
    with pytest.raises(AllocationError, match="already allocated"):
        ips.allocate("10.96.0.1", reserved_ok=True)


def test_requested_addresses() -> None:
    ips = IPRange("10.96.0.0/16")
    assert ips.allocate("10.96.3.4") == "10.96.3.4"
    with pytest.raises(AllocationError, match="provided IP is already allocated"):
        ips.allocate("10.96.3.4")
    with pytest.raises(AllocationError, match=r"not in the valid range.*10\.96\.0\.0/16"):
        ips.allocate("10.97.0.1")
    with pytest.raises(AllocationError, match="not in the valid range"):
        ips.allocate("10.96.0.0")  # the network address
    with pytest.raises(AllocationError, match="not in the valid range"):
        ips.allocate("10.96.255.255")  # IPv4 broadcast
    with pytest.raises(AllocationError, match="not in the valid range"):
        ips.allocate("fd00::5")
    with pytest.raises(AllocationError, match="not in the valid range"):
        ips.allocate("not-an-ip")
    ips.release("10.97.0.1")  # not ours: nothing happens
    ips.release("10.96.0.9")  # not handed out: nothing happens
    assert ips.used == 1


def test_ipv6_range_includes_its_last_address_and_fills_up() -> None:
    ips = IPRange("fd00:10:96::/126")  # ::0 network, ::1 reserved, ::2 and ::3 free
    assert ips.family == "IPv6"
    assert ips.allocate() == "fd00:10:96::2"
    assert ips.allocate() == "fd00:10:96::3"
    with pytest.raises(RangeFullError, match="range is full"):
        ips.allocate()
    ips.release("fd00:10:96:0::2")  # any spelling of the address
    assert ips.allocate() == "fd00:10:96::2"


def test_ipv4_small_range_full() -> None:
    ips = IPRange("192.168.0.0/29")  # .1 reserved, .2-.6 free, .7 broadcast
    assert [ips.allocate() for _ in range(5)][-1] == "192.168.0.6"
    with pytest.raises(RangeFullError):
        ips.allocate()


@pytest.mark.parametrize("cidr", ["10.96.0.1/16", "10.96.0.0/31", "fd00::/127", "banana"])
def test_bad_ranges(cidr: str) -> None:
    with pytest.raises(ValueError, match="service CIDR"):
        IPRange(cidr)


def test_parse_service_cidrs() -> None:
    ranges = parse_service_cidrs("10.96.0.0/16, fd00:10:96::/112")
    assert [(r.cidr, r.family) for r in ranges] == [
        ("10.96.0.0/16", "IPv4"),
        ("fd00:10:96::/112", "IPv6"),
    ]
    assert [r.family for r in parse_service_cidrs(["fd00::/112", "10.0.0.0/24"])] == [
        "IPv6",
        "IPv4",
    ]
    assert len(parse_service_cidrs("10.0.0.0/24")) == 1
    with pytest.raises(ValueError, match="different IP families"):
        parse_service_cidrs("10.0.0.0/24,10.1.0.0/24")
    with pytest.raises(ValueError, match="one or two"):
        parse_service_cidrs("10.0.0.0/24,fd00::/112,10.1.0.0/24")
    with pytest.raises(ValueError, match="one or two"):
        parse_service_cidrs("")


def test_port_range() -> None:
    ports = PortRange()
    assert (ports.low, ports.high) == (30000, 32767)
    assert ports.allocate() == 30000
    assert ports.allocate(30001) == 30001
    assert ports.allocate() == 30002
    with pytest.raises(AllocationError, match="provided port is already allocated"):
        ports.allocate(30001)
    with pytest.raises(AllocationError, match="The range of valid ports is 30000-32767"):
        ports.allocate(80)
    ports.release(30000)
    assert ports.allocate() == 30000
    small = PortRange.parse("31000-31001")
    assert [small.allocate(), small.allocate()] == [31000, 31001]
    with pytest.raises(RangeFullError):
        small.allocate()
    assert PortRange.parse("31000").high == 31000
    for bad in ("0-10", "20-10", "x-y", "1-70000"):
        with pytest.raises(ValueError, match="invalid node port range"):
            PortRange.parse(bad)


def test_transaction_rollback_and_deferred_release() -> None:
    ips = IPRange("10.96.0.0/24")
    ports = PortRange(30000, 30010)
    kept = ips.allocate()
    txn = Transaction()
    assert txn.allocate_ip(ips) == "10.96.0.3"
    assert txn.allocate_port(ports, 30005) == 30005
    txn.release_ip(ips, kept)
    assert ips.is_allocated(kept)  # releases wait for the commit
    txn.rollback()
    assert ips.is_allocated(kept)
    assert not ips.is_allocated("10.96.0.3")
    assert not ports.is_allocated(30005)

    txn = Transaction()
    got = txn.allocate_ip(ips)
    txn.release_ip(ips, kept)
    txn.release_port(ports, 30001)  # not handed out: nothing happens
    txn.commit()
    assert ips.is_allocated(got)
    assert not ips.is_allocated(kept)
    txn.rollback()  # after a commit there is nothing left to undo
    assert ips.is_allocated(got)


def test_ip_family() -> None:
    assert ip_family("10.0.0.1") == "IPv4"
    assert ip_family("fd00::1") == "IPv6"
    assert ip_family("None") is None
