"""``python -m stockade_lab.emulator --port N --kubeconfig PATH``: run the emulator standalone.

``--service-cidr 10.96.0.0/16[,fd00:10:96::/112]`` sets the Service range (one CIDR, or
two of different IP families for dual-stack, the first the primary), as kube-apiserver's
``--service-cluster-ip-range``; ``--service-node-port-range 30000-32767`` the node ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from stockade_lab.emulator.allocation import DEFAULT_SERVICE_CIDRS, PortRange, parse_service_cidrs
from stockade_lab.emulator.server import Emulator


async def _serve(args: argparse.Namespace) -> None:
    emulator = Emulator(
        log_limit=args.log_limit,
        bookmark_interval=args.bookmark_interval,
        request_log=args.request_log,
        service_cidrs=args.service_cidr,
        node_port_range=args.service_node_port_range,
        freeze_loaded=True,
    )
    url = await emulator.start(args.host, args.port)
    if args.kubeconfig:
        emulator.write_kubeconfig(args.kubeconfig)
    print(f"stockade emulator serving at {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await emulator.stop()


def _service_cidrs(text: str) -> list[str]:
    try:
        return [r.cidr for r in parse_service_cidrs(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _port_range(text: str) -> tuple[int, int]:
    try:
        ports = PortRange.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return ports.low, ports.high


def main(argv: list[str] | None = None) -> int:
    """Parse the options and serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m stockade_lab.emulator", description="an emulated Kubernetes API server"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the server here")
    parser.add_argument("--log-limit", type=int, default=10_000, help="events kept for watches")
    parser.add_argument("--bookmark-interval", type=float, default=5.0)
    parser.add_argument(
        "--request-log", type=int, default=2000, help="requests kept for /_emulator/requests"
    )
    parser.add_argument(
        "--service-cidr",
        "--service-cluster-ip-range",
        default=",".join(DEFAULT_SERVICE_CIDRS),
        type=_service_cidrs,
        help="one CIDR, or two (IPv4 and IPv6) comma-separated, the first the primary family "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--service-node-port-range",
        default="30000-32767",
        type=_port_range,
        help="the node ports handed out (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
