"""Long-lived TCP flows between network namespaces, for the "established flows are
cut" checks of the scenarios (:class:`e2e.scenarios.OpenFlow`, ``CheckFlows``).

The model's servers (agnhost ``serve-hostname``, the sandbox's stand-ins) answer and
close; a flow that must outlive a policy change needs a server that keeps the
connection open. :class:`EchoServer` is one, in a named network namespace, served by
a thread of this process; :class:`TcpFlow` is a client connection opened from
another namespace that can exchange a line at any time. Only named namespaces
(``/run/netns``) are entered, never the host's.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

from stockade.netlab import in_netns

#: How long an exchange on an open flow waits for its echo.
FLOW_TIMEOUT = 2.0


class EchoServer:
    """A TCP echo server on ``port`` in namespace ``ns`` that keeps connections open."""

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


class TcpFlow:
    """A TCP connection from namespace ``src_ns`` to ``ip``:``port``, with its server.

    ``server`` is closed with the flow (one echo server per flow keeps flows
    independent). Raises :class:`OSError` when the connection cannot be opened.
    """

    def __init__(self, src_ns: str, ip: str, port: int, server: EchoServer | None) -> None:
        self.server = server
        with in_netns(src_ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(FLOW_TIMEOUT * 3)
        try:
            self.sock.connect((ip, port))
        except OSError:
            self.close()
            raise
        self._count = 0

    def exchange(self) -> bool:
        """Send a line on the open connection: whether its echo came back in time."""
        self._count += 1
        payload = f"line {self._count}\n".encode()
        self.sock.settimeout(FLOW_TIMEOUT)
        try:
            self.sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = self.sock.recv(4096)
                if not chunk:
                    return False
                got += chunk
        except OSError:
            return False
        return got == payload

    def close(self) -> None:
        """Close the connection and its server."""
        self.sock.close()
        if self.server is not None:
            self.server.close()
