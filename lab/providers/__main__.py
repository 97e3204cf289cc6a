"""Serve the three provider stand-ins, each on its own port of one address.

    python -m lab.providers --host 10.213.0.1 [--deepgram-port 8791] [--cartesia-port 8792]
        [--openai-port 8793] [--keep-unheard DIR]

API keys come from DEEPGRAM_API_KEY, CARTESIA_API_KEY and OPENAI_API_KEY (the worker's names;
`KEY,NEXT_KEY` accepts both, for a rotation); requests with another key get 401. The worker's
base URLs are then `http://HOST:8791/v1/listen`, `http://HOST:8792` and `http://HOST:8793/v1`.
`GET /_lab/status` on any port answers 200 with counters once all three listen (a readiness
check). `--keep-unheard DIR`: speech the Deepgram stand-in could not recognize is saved there as
WAV (the lab passes its state directory's `unheard`), to tell what the audio suffered. SIGTERM
stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from .. import outside_the_lab
from ..script import CALLER_PHRASES
from ..speech import Recognizer
from .cartesia import CartesiaStandIn
from .deepgram import DeepgramStandIn
from .openai import OpenAIStandIn

PORTS = {"deepgram": 8791, "cartesia": 8792, "openai": 8793}


def _key(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"lab.providers: {name} is not set")
    return value


async def serve(host: str, ports: dict[str, int], keep_unheard: Path | None = None) -> None:
    services = {
        "deepgram": DeepgramStandIn(
            _key("DEEPGRAM_API_KEY"), Recognizer(CALLER_PHRASES), keep_unheard
        ),
        "cartesia": CartesiaStandIn(_key("CARTESIA_API_KEY")),
        "openai": OpenAIStandIn(_key("OPENAI_API_KEY")),
    }

    async def status(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "deepgram": {"port": ports["deepgram"], "sessions": services["deepgram"].sessions},
                "cartesia": {
                    "port": ports["cartesia"],
                    "characters": services["cartesia"].characters,
                },
                "openai": {"port": ports["openai"], "requests": services["openai"].requests},
            }
        )

    runners = []
    for name, service in services.items():
        app = web.Application()
        service.routes(app)
        app.router.add_get("/_lab/status", status)
        # a stop closes open websockets after 1 s (aiohttp's default waits 60 s for them)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, ports[name]).start()
        runners.append(runner)
    logging.getLogger("lab.providers").info(
        "listening", extra={"host": host, **{f"{k}_port": v for k, v in ports.items()}}
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def main() -> None:
    outside_the_lab()
    parser = argparse.ArgumentParser(prog="python -m lab.providers")
    parser.add_argument("--host", required=True)
    for name, port in PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port)
    parser.add_argument(
        "--keep-unheard",
        type=Path,
        help="save speech the Deepgram stand-in could not recognize here (WAV), to listen to it",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ports = {name: getattr(args, f"{name}_port") for name in PORTS}
    asyncio.run(serve(args.host, ports, args.keep_unheard))


if __name__ == "__main__":
    main()
