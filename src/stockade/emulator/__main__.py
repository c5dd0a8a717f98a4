"""``python -m stockade.emulator --port N --kubeconfig PATH``: run the emulator standalone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from stockade.emulator.server import Emulator


async def _serve(args: argparse.Namespace) -> None:
    emulator = Emulator(
        log_limit=args.log_limit,
        bookmark_interval=args.bookmark_interval,
        request_log=args.request_log,
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


def main(argv: list[str] | None = None) -> int:
    """Parse the options and serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m stockade.emulator", description="an emulated Kubernetes API server"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the server here")
    parser.add_argument("--log-limit", type=int, default=10_000, help="events kept for watches")
    parser.add_argument("--bookmark-interval", type=float, default=5.0)
    parser.add_argument(
        "--request-log", type=int, default=2000, help="requests kept for /_emulator/requests"
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
