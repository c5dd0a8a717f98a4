"""A cluster's network built out of Linux network namespaces, for tests and the sandbox.

A :class:`Lab` makes, inside namespaces it names ``stk-<runid>-<role>``:

- a *fabric* namespace (``stk-<runid>-fab``) holding one bridge, the L2 segment that
  joins every node (``172.31.255.0/24`` and ``fd31::/64`` by default);
- one namespace per *node* (``stk-<runid>-n-<name>``) with IPv4 and IPv6 forwarding
  on, its own fabric address on ``eth0`` (a namespace that forwards needs an address
  of its own) and a route to every other node's pod CIDR via that node's fabric
  address;
- one namespace per *pod* (``stk-<runid>-p-<name>``) behind a veth into its node, set
  up the way a routed CNI (Calico, the ptp plugin) does it: a ``/32`` (and ``/128``)
  on ``eth0``, ``default via 169.254.1.1 dev eth0`` for IPv4 and ``default via
  fe80::1 dev eth0`` for IPv6; on the node side a host route per pod, the gateway
  addresses ``169.254.1.1/32`` and ``fe80::1`` on the veth, ``proxy_arp`` and
  ``neigh.<veth>.proxy_delay = 0``;
- *external* hosts (``stk-<runid>-x-<name>``) on the fabric with addresses outside
  every pod and node range (e.g. ``203.0.113.10``, ``2001:db8::10``), which the
  nodes route to on-link, so ipBlock rules can be tested against outside peers.
  Nothing is masqueraded: an external host sees pod addresses as they are.

Nothing is ever created or changed in the caller's own (host) network namespace:
every ``ip`` command names its namespace with ``ip -n``, sysctls are written by a
thread switched into the target namespace (checked to differ from the host's), and
no namespace has a route towards the host's network.

Links, addresses and routes are made by the ``ip`` command (``ip -n NS -batch -``,
a handful of processes per pod); sysctls and sockets are made in this process by
switching the calling thread into the namespace with ``setns(2)`` (see
:func:`in_netns`). No third-party library is needed.

Responders (:meth:`Lab.serve`) and probes (:meth:`Lab.probe`) are sockets of this
process created inside the namespaces; a socket stays in the namespace it was
created in after the thread switches back.

A run records its creator (pid and process start time) in
``/run/stockade-netlab/<runid>.json`` before it creates anything, so
:func:`cleanup_leftovers` can remove the namespaces of a run whose creator is gone
(a crashed or killed test run); every :class:`Lab` calls it when it starts.

Kernel facts this module relies on (found on a 6.18 kernel, see DESIGN.md):

- ``dummy`` links and SCTP sockets may be missing; the node address lives on the
  fabric veth, and SCTP support is probed (:attr:`Lab.has_sctp`);
- ``proxy_delay`` defaults to 80 jiffies: without setting it to 0 the first ARP
  replies for a pod's peers wait up to 0.8 s;
- IPv6 duplicate address detection would hold new addresses tentative for about a
  second; ``accept_dad`` is switched off in every namespace before its links are
  made, and static addresses are added ``nodad``;
- a namespace stays alive as long as a socket made in it is open: servers of a pod
  are closed before its namespace is deleted.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import ipaddress
import json
import os
import re
import secrets
import selectors
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from stockade_lab.processes import process_start

__all__ = [
    "NETNS_DIR",
    "PREFIX",
    "RECORD_DIR",
    "Host",
    "Lab",
    "MissingFeatureError",
    "NetlabError",
    "Node",
    "Place",
    "PodNet",
    "Server",
    "cleanup_leftovers",
    "in_netns",
]

PREFIX = "stk-"
"""Every namespace this module makes has a name starting with this prefix."""

NETNS_DIR = Path("/run/netns")
RECORD_DIR = Path("/run/stockade-netlab")

_CLONE_NEWNET = 0x40000000
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_RUN_ID_RE = re.compile(r"^[a-z0-9]{1,12}$")
_GATEWAY6 = "fe80::1"
# Pods route through a gateway address that every node-side veth carries, as Calico's
# pods do (169.254.1.1): a pod then needs one neighbour entry, not one per peer it
# talks to; with `default dev eth0` and proxy ARP, a 100-pod matrix overflowed the
# kernel's neighbour table.
_GATEWAY4 = "169.254.1.1"
_PROTOCOLS = ("TCP", "UDP", "SCTP")

_libc = ctypes.CDLL(None, use_errno=True)


class NetlabError(RuntimeError):
    """A namespace, link, address or route could not be made, or a lab was misused."""


class MissingFeatureError(NetlabError):
    """The kernel lacks a feature (``feature`` names it); tests skip on this."""

    def __init__(self, feature: str, message: str) -> None:
        self.feature = feature
        super().__init__(message)


# --------------------------------------------------------------------------- namespaces


_HOST_NETNS = os.stat("/proc/self/ns/net").st_ino
"""The namespace this process started in (read at import): the one never to touch."""


def _thread_netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def in_netns(ns: str) -> Iterator[None]:
    """Switch the calling thread into the named namespace for the ``with`` body.

    Sockets created inside belong to ``ns`` for their whole life. Only this thread
    moves; other threads (and child processes started by other threads) do not.
    The thread is switched back even when the body raises.
    """
    if "/" in ns or not ns:
        raise ValueError(f"not a namespace name: {ns!r}")
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NetlabError(f"no network namespace {ns!r}") from None
        try:
            _setns(target)
            if _thread_netns_inode() != os.fstat(target).st_ino:  # pragma: no cover
                _setns(home)
                raise NetlabError(f"setns into {ns!r} did not take effect")
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def _write_sysctls(ns: str, values: dict[str, str], *, optional: bool = False) -> None:
    """Write ``/proc/sys/net/...`` keys (dotted, without ``net.``) inside ``ns``.

    A missing key is an error unless ``optional`` (then it is skipped).
    """
    with in_netns(ns):
        if _thread_netns_inode() == _HOST_NETNS:
            raise NetlabError(f"refusing to write sysctls: {ns!r} is the host namespace")
        for key, value in values.items():
            path = Path("/proc/sys/net", *key.split("."))
            try:
                path.write_text(value)
            except FileNotFoundError:
                if not optional:
                    raise NetlabError(f"no sysctl net.{key} in {ns}") from None


def _ip(ns: str, commands: Sequence[str]) -> None:
    """Run ``ip`` commands in ``ns`` as one batch; fail with the commands and stderr."""
    if not commands:
        return
    text = "".join(line + "\n" for line in commands)
    proc = subprocess.run(
        ["ip", "-n", ns, "-batch", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise NetlabError(f"ip -n {ns} failed: {proc.stderr.strip()}\ncommands:\n{text}")


def _netns_add(ns: str) -> None:
    proc = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetlabError(f"ip netns add {ns} failed: {proc.stderr.strip()}")


def _netns_delete(names: Sequence[str]) -> list[str]:
    """Delete namespaces (one ``ip -batch``); return the names still present after."""
    if not names:
        return []
    text = "".join(f"netns del {name}\n" for name in names)
    subprocess.run(
        ["ip", "-force", "-batch", "-"], input=text, capture_output=True, text=True, check=False
    )
    return [name for name in names if (NETNS_DIR / name).exists()]


def _list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX))
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------- run records


def _pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _record_path(run_id: str) -> Path:
    return RECORD_DIR / f"{run_id}.json"


def _write_record(run_id: str) -> None:
    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    record = {"pid": pid, "start": process_start(pid), "pidns": _pid_namespace()}
    path = _record_path(run_id)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.rename(path)


def _run_is_dead(run_id: str) -> bool:
    """True when the run's record names a creator that is gone (in our pid namespace)."""
    try:
        record = json.loads(_record_path(run_id).read_text())
        pid, start, pidns = int(record["pid"]), record["start"], int(record["pidns"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return False
    if pidns != _pid_namespace():
        return False  # another pid namespace: we cannot judge its processes
    now = process_start(pid)
    return now is None or now != start


def _run_id_of(ns: str) -> str | None:
    parts = ns.split("-")
    return parts[1] if len(parts) >= 3 and parts[0] + "-" == PREFIX else None


def cleanup_leftovers(*, include_unowned: bool = False) -> list[str]:
    """Remove the ``stk-*`` namespaces of runs whose creator process is gone.

    A run's owner is read from its record in :data:`RECORD_DIR`. Namespaces with no
    record are left alone (something else made them) unless ``include_unowned``.
    Records of dead runs are removed too. Returns the namespaces deleted.
    """
    doomed: list[str] = []
    dead_runs: set[str] = set()
    for ns in _list_netns():
        run_id = _run_id_of(ns)
        if run_id is None:
            continue
        if _run_is_dead(run_id):
            dead_runs.add(run_id)
            doomed.append(ns)
        elif include_unowned and not _record_path(run_id).exists():
            doomed.append(ns)
    if RECORD_DIR.is_dir():
        for record in RECORD_DIR.glob("*.json"):
            if _run_is_dead(record.stem):
                dead_runs.add(record.stem)
    left = _netns_delete(doomed)
    if left:
        raise NetlabError(f"could not delete leftover namespaces: {', '.join(left)}")
    for run_id in dead_runs:
        with contextlib.suppress(FileNotFoundError):
            _record_path(run_id).unlink()
    return doomed


# --------------------------------------------------------------------------- the objects


@dataclass(eq=False)
class Node:
    """A node namespace: forwards between its pods and the fabric."""

    name: str
    ns: str
    index: int
    fabric_ip4: str
    fabric_ip6: str
    pod_cidr4: ipaddress.IPv4Network
    pod_cidr6: ipaddress.IPv6Network | None
    pods: dict[str, PodNet] = field(default_factory=dict)
    veth_counter: int = 0


@dataclass(eq=False)
class PodNet:
    """A pod namespace behind a veth (``veth`` on the node side, ``eth0`` inside)."""

    name: str
    ns: str
    node: Node
    veth: str
    ip4: str
    ip6: str | None


@dataclass(eq=False)
class Host:
    """An external host on the fabric, outside every pod and node range."""

    name: str
    ns: str
    index: int
    fabric_link: str
    ip4: str
    ip6: str | None


Place: TypeAlias = PodNet | Host | Node | str
"""Where to run, serve or probe from: a lab object or a namespace name."""


def _ns_of(place: Place) -> str:
    return place if isinstance(place, str) else place.ns


def _label_of(place: Place) -> str:
    return place if isinstance(place, str) else place.name


# --------------------------------------------------------------------------- servers


class Server:
    """TCP, UDP (and SCTP) responders in one namespace, served by one thread.

    Every TCP/SCTP connection is answered with ``reply`` and closed; every UDP
    datagram is answered with ``reply`` from the address it was sent to.
    """

    def __init__(self, ns: str, ports: Sequence[tuple[int, str]], reply: str, sctp: bool) -> None:
        self.ns = ns
        self.reply = reply.encode()
        self._listeners: list[socket.socket] = []
        self._stop_r, self._stop_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._conns: set[socket.socket] = set()
        try:
            with in_netns(ns):
                for port, name in ports:
                    proto = name.upper()
                    if proto not in _PROTOCOLS:
                        raise ValueError(f"unknown protocol {name!r}")
                    if proto == "SCTP" and not sctp:
                        continue
                    for family in (socket.AF_INET, socket.AF_INET6):
                        self._listeners.append(self._listen(family, port, proto))
        except BaseException:
            self._close_all()
            raise
        self._selector.register(self._stop_r, selectors.EVENT_READ, "stop")
        for sock in self._listeners:
            kind = "udp" if sock.type == socket.SOCK_DGRAM else "accept"
            self._selector.register(sock, selectors.EVENT_READ, kind)
        self._thread = threading.Thread(target=self._loop, name=f"netlab-serve-{ns}", daemon=True)
        self._thread.start()

    @staticmethod
    def _listen(family: socket.AddressFamily, port: int, proto: str) -> socket.socket:
        if proto == "UDP":
            sock = socket.socket(family, socket.SOCK_DGRAM)
        elif proto == "TCP":
            sock = socket.socket(family, socket.SOCK_STREAM)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM, _IPPROTO_SCTP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if proto == "UDP":
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
                sock.bind(("::", port))
            else:
                if proto == "UDP":
                    sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
                sock.bind(("0.0.0.0", port))
            if proto != "UDP":
                sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _loop(self) -> None:
        while True:
            for key, _ in self._selector.select(timeout=1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data == "stop":
                    return
                try:
                    if key.data == "accept":
                        self._accept(sock)
                    elif key.data == "udp":
                        self._answer_datagram(sock)
                    else:
                        self._drain(sock)
                except OSError:
                    if key.data == "conn":
                        self._drop(sock)

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        self._conns.add(conn)
        try:
            conn.send(self.reply)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        self._selector.register(conn, selectors.EVENT_READ, "conn")

    def _drain(self, conn: socket.socket) -> None:
        data = conn.recv(4096)
        if not data:
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        self._conns.discard(conn)
        conn.close()

    def _answer_datagram(self, sock: socket.socket) -> None:
        try:
            _data, ancdata, _flags, addr = sock.recvmsg(4096, 256)
        except (BlockingIOError, InterruptedError):
            return
        control: list[tuple[int, int, bytes]] = []
        for level, kind, payload in ancdata:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(payload) >= 12:
                _ifindex, _spec, dst = struct.unpack("=i4s4s", payload[:12])
                control.append((socket.IPPROTO_IP, _IP_PKTINFO, struct.pack("=i4s4s", 0, dst, dst)))
            elif level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(payload) >= 20:
                dst6, ifindex = struct.unpack("=16si", payload[:20])
                if not ipaddress.IPv6Address(dst6).is_link_local:
                    ifindex = 0
                control.append(
                    (socket.IPPROTO_IPV6, _IPV6_PKTINFO, struct.pack("=16si", dst6, ifindex))
                )
        with contextlib.suppress(OSError):
            sock.sendmsg([self.reply], control, 0, addr)

    def _close_all(self) -> None:
        for sock in [*self._listeners, *self._conns]:
            sock.close()
        self._listeners.clear()
        self._conns.clear()
        self._stop_r.close()
        self._stop_w.close()
        self._selector.close()

    def stop(self) -> None:
        """Stop the thread and close every socket (idempotent)."""
        if self._stop_w.fileno() < 0:
            return
        with contextlib.suppress(OSError):
            self._stop_w.send(b"x")
        self._thread.join(timeout=5.0)
        self._close_all()


# --------------------------------------------------------------------------- the lab


class EchoServer:
    """A TCP echo server on ``port`` in namespace ``ns`` that keeps connections open.

    The lab's :meth:`Lab.serve` servers answer and close; a flow that must outlive
    a policy change (the conntrack cut checks) needs one that stays. Served by a
    thread of this process; IPv4.
    """

    def __init__(self, ns: str, port: int) -> None:
        with in_netns(ns):
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("0.0.0.0", port))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._stop_r, self._stop_w = socket.socketpair()
        self._sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        self._sel.register(self.listener, selectors.EVENT_READ, "accept")
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"echo-{ns}")
        self._thread.start()

    def _loop(self) -> None:
        while True:
            for key, _ in self._sel.select(timeout=1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data == "stop":
                    return
                if key.data == "accept":
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = sock.accept()
                        conn.setblocking(False)
                        self._conns.append(conn)
                        self._sel.register(conn, selectors.EVENT_READ, "conn")
                    continue
                try:
                    data = sock.recv(4096)
                    if data:
                        sock.sendall(data)
                        continue
                except OSError:
                    pass
                self._sel.unregister(sock)
                sock.close()

    def close(self) -> None:
        """Stop the thread and close every socket."""
        with contextlib.suppress(OSError):
            self._stop_w.send(b"x")
        self._thread.join(timeout=5.0)
        for sock in [self.listener, *self._conns, self._stop_r, self._stop_w]:
            sock.close()
        self._sel.close()


class Lab:
    """A set of namespaces forming a small cluster network; remove it with :meth:`close`.

    Use as a context manager. Mutating methods are not safe to call from several
    threads at once; probes are.
    """

    def __init__(
        self,
        run_id: str | None = None,
        *,
        fabric4: str = "172.31.255.0/24",
        fabric6: str = "fd31::/64",
        clean_leftovers: bool = True,
    ) -> None:
        if os.geteuid() != 0:
            raise NetlabError("a Lab needs root (network namespaces)")
        if clean_leftovers:
            cleanup_leftovers()
        self.run_id = run_id or secrets.token_hex(3)
        if not _RUN_ID_RE.match(self.run_id):
            raise ValueError(f"run id must match {_RUN_ID_RE.pattern}: {self.run_id!r}")
        mine = [ns for ns in _list_netns() if _run_id_of(ns) == self.run_id]
        if mine or _record_path(self.run_id).exists():
            raise NetlabError(f"run id {self.run_id!r} is in use: {', '.join(mine)}")
        self.fabric4 = ipaddress.IPv4Network(fabric4)
        self.fabric6 = ipaddress.IPv6Network(fabric6)
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, PodNet] = {}
        self.externals: dict[str, Host] = {}
        self.has_sctp = False
        self._namespaces: list[str] = []
        self._servers: list[Server] = []
        self._closed = False
        self._next_index = 1
        self._next_external = 1
        _write_record(self.run_id)
        atexit.register(self.close)
        try:
            self.fabric = self._new_namespace("fab", forwarding=False)
            _ip(
                self.fabric,
                [
                    "link set lo up",
                    "link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0",
                    "link set br0 up",
                ],
            )
            _write_sysctls(
                self.fabric,
                {
                    "bridge.bridge-nf-call-iptables": "0",
                    "bridge.bridge-nf-call-ip6tables": "0",
                    "bridge.bridge-nf-call-arptables": "0",
                },
                optional=True,
            )
            self.has_sctp = _probe_sctp(self.fabric)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- context manager

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- building

    def _ns_name(self, role: str) -> str:
        return f"{PREFIX}{self.run_id}-{role}"

    def _new_namespace(self, role: str, *, forwarding: bool) -> str:
        ns = self._ns_name(role)
        if (NETNS_DIR / ns).exists():
            raise NetlabError(f"namespace {ns} exists already")
        _netns_add(ns)
        self._namespaces.append(ns)
        values = {
            "ipv6.conf.all.accept_dad": "0",
            "ipv6.conf.default.accept_dad": "0",
            "ipv6.conf.all.accept_ra": "0",
            "ipv6.conf.default.accept_ra": "0",
            "ipv4.conf.all.rp_filter": "0",
            "ipv4.conf.default.rp_filter": "0",
        }
        if forwarding:
            values["ipv4.ip_forward"] = "1"
            values["ipv6.conf.all.forwarding"] = "1"
            values["ipv6.conf.default.forwarding"] = "1"
        _write_sysctls(ns, values)
        return ns

    def _allocate_fabric(self) -> tuple[int, str, str]:
        index = self._next_index
        self._next_index += 1
        if index >= self.fabric4.num_addresses - 1:
            raise NetlabError("the fabric is full")
        return index, str(self.fabric4[index]), str(self.fabric6[index])

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"name must match {_NAME_RE.pattern}: {name!r}")

    def _check_free(self, ip: str) -> None:
        addr = ipaddress.ip_address(ip)
        if addr in self.fabric4 or addr in self.fabric6:
            raise ValueError(f"{ip} lies in the fabric")
        for pod in self.pods.values():
            if ip in (pod.ip4, pod.ip6):
                raise ValueError(f"{ip} is taken by pod {pod.name}")
        for host in self.externals.values():
            if ip in (host.ip4, host.ip6):
                raise ValueError(f"{ip} is taken by external host {host.name}")

    def _routes_to_node(
        self, node: Node, *, src4: str | None = None, src6: str | None = None, v6: bool = True
    ) -> list[str]:
        s4 = f" src {src4}" if src4 else ""
        s6 = f" src {src6}" if src6 else ""
        lines = [f"route replace {node.pod_cidr4} via {node.fabric_ip4} dev eth0{s4}"]
        # A host without IPv6 has no route to the fabric's IPv6 range to go via.
        if node.pod_cidr6 is not None and v6:
            lines.append(f"route replace {node.pod_cidr6} via {node.fabric_ip6} dev eth0{s6}")
        return lines

    @staticmethod
    def _routes_to_external(host: Host) -> list[str]:
        lines = [f"route replace {host.ip4}/32 dev eth0"]
        if host.ip6:
            lines.append(f"route replace {host.ip6}/128 dev eth0")
        return lines

    def add_node(self, name: str, *, pod_cidr4: str, pod_cidr6: str | None = None) -> Node:
        """Add a node namespace joined to the fabric, routing to every other node's pods."""
        self._check_name(name)
        if name in self.nodes:
            raise ValueError(f"node {name} exists")
        cidr4 = ipaddress.IPv4Network(pod_cidr4)
        cidr6 = ipaddress.IPv6Network(pod_cidr6) if pod_cidr6 else None
        for other in self.nodes.values():
            if cidr4.overlaps(other.pod_cidr4) or (
                cidr6 and other.pod_cidr6 and cidr6.overlaps(other.pod_cidr6)
            ):
                raise ValueError(f"pod CIDRs of {name} overlap those of {other.name}")
        index, fab4, fab6 = self._allocate_fabric()
        ns = self._new_namespace(f"n-{name}", forwarding=True)
        node = Node(name, ns, index, fab4, fab6, cidr4, cidr6)
        link = f"n{index}"
        _ip(
            self.fabric,
            [
                f"link add {link} type veth peer name eth0 netns {ns}",
                f"link set {link} master br0 up",
            ],
        )
        lines = [
            "link set lo up",
            f"addr add {fab4}/{self.fabric4.prefixlen} dev eth0",
            f"addr add {fab6}/{self.fabric6.prefixlen} dev eth0 nodad",
            "link set eth0 up",
        ]
        for other in self.nodes.values():
            lines += self._routes_to_node(other)
        for host in self.externals.values():
            lines += self._routes_to_external(host)
        _ip(ns, lines)
        for other in self.nodes.values():
            _ip(other.ns, self._routes_to_node(node))
        for host in self.externals.values():
            _ip(host.ns, self._routes_to_node(node, src4=host.ip4, src6=host.ip6))
        self.nodes[name] = node
        return node

    def add_pod(self, node: Node, name: str, ip4: str, ip6: str | None = None) -> PodNet:
        """Add a pod namespace behind a veth into ``node``, routed as a routed CNI does."""
        self._check_name(name)
        if name in self.pods:
            raise ValueError(f"pod {name} exists")
        if self.nodes.get(node.name) is not node:
            raise ValueError(f"node {node.name} is not of this lab")
        if ipaddress.IPv4Address(ip4) not in node.pod_cidr4:
            raise ValueError(f"{ip4} is outside {node.name}'s pod CIDR {node.pod_cidr4}")
        self._check_free(ip4)
        if ip6 is not None:
            if node.pod_cidr6 is None or ipaddress.IPv6Address(ip6) not in node.pod_cidr6:
                raise ValueError(f"{ip6} is outside {node.name}'s IPv6 pod CIDR {node.pod_cidr6}")
            self._check_free(ip6)
        node.veth_counter += 1
        veth = f"pv{node.veth_counter}"
        ns = self._new_namespace(f"p-{name}", forwarding=False)
        pod = PodNet(name, ns, node, veth, ip4, ip6)
        node_lines = [
            f"link add {veth} type veth peer name eth0 netns {ns}",
            f"addr add {_GATEWAY6}/64 dev {veth} nodad",
            f"addr add {_GATEWAY4}/32 dev {veth}",
            f"link set {veth} up",
            # The node's own traffic to the pod keeps the node's address as source.
            f"route replace {ip4}/32 dev {veth} src {node.fabric_ip4}",
        ]
        pod_lines = ["link set lo up", f"addr add {ip4}/32 dev eth0"]
        if ip6 is not None:
            node_lines.append(f"route replace {ip6}/128 dev {veth}")
            pod_lines.append(f"addr add {ip6}/128 dev eth0 nodad")
        pod_lines += [
            "link set eth0 up",
            f"route add {_GATEWAY4}/32 dev eth0 scope link",
            f"route add 0.0.0.0/0 via {_GATEWAY4} dev eth0",
        ]
        if ip6 is not None:
            pod_lines.append(f"route add ::/0 via {_GATEWAY6} dev eth0")
        _ip(node.ns, node_lines)
        _write_sysctls(
            node.ns,
            {f"ipv4.conf.{veth}.proxy_arp": "1", f"ipv4.neigh.{veth}.proxy_delay": "0"},
        )
        _ip(ns, pod_lines)
        node.pods[name] = pod
        self.pods[name] = pod
        return pod

    def remove_pod(self, pod: PodNet) -> None:
        """Remove a pod: its servers, its veth (and so its host routes), its namespace."""
        if self.pods.get(pod.name) is not pod:
            raise ValueError(f"pod {pod.name} is not of this lab")
        self._stop_servers(pod.ns)
        _ip(pod.node.ns, [f"link del {pod.veth}"])
        left = _netns_delete([pod.ns])
        if left:
            raise NetlabError(f"could not delete {pod.ns}")
        self._namespaces.remove(pod.ns)
        del pod.node.pods[pod.name]
        del self.pods[pod.name]

    def add_external(self, name: str, ip4: str, ip6: str | None = None) -> Host:
        """Add a host on the fabric with addresses outside the cluster; nodes route to it."""
        self._check_name(name)
        if name in self.externals:
            raise ValueError(f"external host {name} exists")
        self._check_free(ip4)
        ipaddress.IPv4Address(ip4)
        if ip6 is not None:
            ipaddress.IPv6Address(ip6)
            self._check_free(ip6)
        for node in self.nodes.values():
            for cidr in (node.pod_cidr4, node.pod_cidr6):
                for ip in (ip4, ip6):
                    if cidr is not None and ip is not None and ipaddress.ip_address(ip) in cidr:
                        raise ValueError(f"{ip} lies in {node.name}'s pod CIDR {cidr}")
        index = self._next_external
        self._next_external += 1
        ns = self._new_namespace(f"x-{name}", forwarding=False)
        link = f"x{index}"
        host = Host(name, ns, index, link, ip4, ip6)
        _ip(
            self.fabric,
            [
                f"link add {link} type veth peer name eth0 netns {ns}",
                f"link set {link} master br0 up",
            ],
        )
        lines = ["link set lo up", f"addr add {ip4}/32 dev eth0"]
        if ip6 is not None:
            lines.append(f"addr add {ip6}/128 dev eth0 nodad")
        lines += ["link set eth0 up", f"route add {self.fabric4} dev eth0 src {ip4}"]
        if ip6 is not None:
            lines.append(f"route add {self.fabric6} dev eth0 src {ip6}")
        for node in self.nodes.values():
            lines += self._routes_to_node(node, src4=ip4, src6=ip6, v6=ip6 is not None)
        _ip(ns, lines)
        for node in self.nodes.values():
            _ip(node.ns, self._routes_to_external(host))
        self.externals[name] = host
        return host

    # ----------------------------------------------------------------- running

    def run(
        self,
        ns: Place,
        argv: list[str],
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace (``ip netns exec``), capturing text output."""
        name = _ns_of(ns)
        if name not in self._namespaces:
            raise ValueError(f"{name} is not a namespace of this lab")
        proc = subprocess.run(
            ["ip", "netns", "exec", name, *argv],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NetlabError(
                f"in {name}: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def in_netns(self, ns: Place) -> contextlib.AbstractContextManager[None]:
        """Switch the calling thread into a lab namespace (see :func:`in_netns`)."""
        return in_netns(_ns_of(ns))

    # ----------------------------------------------------------------- serving and probing

    def echo_server(self, where: Place, port: int) -> EchoServer:
        """A TCP echo server in a lab namespace that keeps its connections open."""
        return EchoServer(_ns_of(where), port)

    def serve(
        self, where: Place, ports: Sequence[tuple[int, str]], reply: str | None = None
    ) -> Server:
        """Answer TCP/UDP (and SCTP where the kernel has it) on ``ports``, both families.

        SCTP ports are skipped silently when :attr:`has_sctp` is false, so callers may
        pass a pod's declared ports as they are. The reply defaults to the name.
        """
        ns = _ns_of(where)
        if ns not in self._namespaces:
            raise ValueError(f"{ns} is not a namespace of this lab")
        server = Server(ns, ports, reply if reply is not None else _label_of(where), self.has_sctp)
        self._servers.append(server)
        return server

    def unserve(self, server: Server) -> None:
        """Stop one server :meth:`serve` started (its sockets close; idempotent)."""
        server.stop()
        with contextlib.suppress(ValueError):
            self._servers.remove(server)

    def _stop_servers(self, ns: str) -> None:
        for server in [s for s in self._servers if s.ns == ns]:
            server.stop()
            self._servers.remove(server)

    def ask(
        self,
        src: Place,
        dst_ip: str,
        port: int,
        protocol: str = "TCP",
        timeout: float = 1.0,
    ) -> str | None:
        """Connect (TCP/SCTP) or send a datagram (UDP); return the reply, None if none.

        A refused connection, an ICMP error or a timeout gives None. When no socket
        can be opened at all (SCTP or IPv6 missing from the kernel), nothing was
        measured: :class:`MissingFeatureError` (or :class:`NetlabError`) is raised.
        """
        proto = protocol.upper()
        if proto not in _PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}")
        if proto == "SCTP" and not self.has_sctp:
            raise MissingFeatureError("sctp", "this kernel has no SCTP sockets")
        family = socket.AF_INET6 if ipaddress.ip_address(dst_ip).version == 6 else socket.AF_INET
        with in_netns(_ns_of(src)):
            try:
                if proto == "UDP":
                    sock = socket.socket(family, socket.SOCK_DGRAM)
                elif proto == "TCP":
                    sock = socket.socket(family, socket.SOCK_STREAM)
                else:
                    sock = socket.socket(family, socket.SOCK_STREAM, _IPPROTO_SCTP)
            except OSError as exc:
                # No socket, no probe: not a refusal, so not None (which means denied).
                what = f"no IPv{6 if family == socket.AF_INET6 else 4} {proto} socket"
                if exc.errno in (
                    errno.EPROTONOSUPPORT,
                    errno.ESOCKTNOSUPPORT,
                    errno.EAFNOSUPPORT,
                ):
                    raise MissingFeatureError(proto.lower(), f"this kernel has {what}") from exc
                raise NetlabError(f"{what} in {_ns_of(src)}: {exc.strerror or exc}") from exc
        deadline = time.monotonic() + timeout
        with sock:
            try:
                sock.settimeout(timeout)
                sock.connect((dst_ip, port))
                if proto == "UDP":
                    sock.send(b"probe\n")
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    return sock.recv(4096).decode(errors="replace")
                chunks: list[bytes] = []
                while True:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    data = sock.recv(4096)
                    if not data:
                        break
                    chunks.append(data)
            except OSError:
                return None
        return b"".join(chunks).decode(errors="replace") if chunks else None

    def probe(
        self,
        src: Place,
        dst_ip: str,
        port: int,
        protocol: str = "TCP",
        timeout: float = 1.0,
    ) -> bool:
        """True when ``dst_ip:port`` answers from ``src``; refused or timeout is False.

        Raises :class:`NetlabError` (:class:`MissingFeatureError` for a protocol the
        kernel lacks) when the probe cannot be made, rather than answer False.
        """
        return self.ask(src, dst_ip, port, protocol, timeout) is not None

    def probe_many(
        self,
        probes: Sequence[tuple[Place, str, int, str]],
        timeout: float = 1.0,
        workers: int = 32,
    ) -> list[bool]:
        """Run :meth:`probe` for each ``(src, dst_ip, port, protocol)`` in parallel."""
        if not probes:
            return []
        with ThreadPoolExecutor(max_workers=min(workers, len(probes))) as pool:
            futures = [
                pool.submit(self.probe, src, dst, port, proto, timeout)
                for src, dst, port, proto in probes
            ]
            return [f.result() for f in futures]

    # ----------------------------------------------------------------- teardown

    def close(self) -> None:
        """Stop every server and delete every namespace this lab made (idempotent)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for server in self._servers:
            server.stop()
        self._servers.clear()
        left = _netns_delete(list(reversed(self._namespaces)))
        self._namespaces.clear()
        if left:
            raise NetlabError(f"could not delete namespaces: {', '.join(left)}")
        with contextlib.suppress(FileNotFoundError):
            _record_path(self.run_id).unlink()

    @property
    def namespaces(self) -> list[str]:
        """The namespaces this lab has made and not yet removed."""
        return list(self._namespaces)


def _probe_sctp(ns: str) -> bool:
    """Whether the kernel gives SCTP sockets (probed inside ``ns``, not the host)."""
    with in_netns(ns):
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, _IPPROTO_SCTP)
        except OSError as exc:
            if exc.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EAFNOSUPPORT):
                return False
            raise
        sock.close()
        return True
