"""CLI of the loopback LiveKit server.

    python -m tests.loopback_livekit --host 127.0.0.1 --port 7880 --api-key K --api-secret S

The key and secret may come from ``LOOPBACK_API_KEY`` / ``LOOPBACK_API_SECRET`` instead. Logs one
line ``listening on ws://HOST:PORT`` once the socket is bound; SIGTERM or SIGINT stop it cleanly
(exit 0). ``--events-file PATH`` appends every event as a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .server import AVAILABILITY_TIMEOUT_S, LoopbackLiveKit

logger = logging.getLogger("loopback_livekit")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.loopback_livekit",
        description="Loopback LiveKit server for the agent-worker protocol (tests and lab only).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7880, help="0 picks a free port")
    p.add_argument("--api-key", default=os.environ.get("LOOPBACK_API_KEY", ""))
    p.add_argument("--api-secret", default=os.environ.get("LOOPBACK_API_SECRET", ""))
    p.add_argument("--events-file", default=None, help="append events as JSON lines")
    p.add_argument(
        "--availability-timeout",
        type=float,
        default=AVAILABILITY_TIMEOUT_S,
        help="seconds a worker has to answer a job offer",
    )
    p.add_argument("--log-level", default="INFO")
    return p


async def _serve(args: argparse.Namespace) -> int:
    lk = LoopbackLiveKit(
        args.api_key,
        args.api_secret,
        args.host,
        args.port,
        availability_timeout_s=args.availability_timeout,
        events_file=args.events_file,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await lk.start()
    logger.info("listening on %s", lk.url)
    try:
        await stop.wait()
    finally:
        logger.info("stopping")
        await lk.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.api_key or not args.api_secret:
        _parser().error("--api-key/--api-secret (or LOOPBACK_API_KEY/LOOPBACK_API_SECRET) required")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
