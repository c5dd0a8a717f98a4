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

import socket

from stockade_lab.netlab import EchoServer, in_netns

#: How long an exchange on an open flow waits for its echo.
FLOW_TIMEOUT = 2.0


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
