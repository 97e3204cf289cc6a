"""HTTP endpoints that tell the truth: `/` liveness, `/ready`, `/metrics`, `/worker`.

The stock livekit-agents `/` answers 200 while disconnected and while draining; these answer from
the worker's real state (state.WorkerState).
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from . import __version__

if TYPE_CHECKING:
    from .state import WorkerState


class _SettledFilesCollector(MultiProcessCollector):
    """MultiProcessCollector that skips value files a starting process has created but not
    yet sized: reading one raises struct.error and turned a scrape into a 500 (seen in tests).
    Such a file holds no values yet, so nothing is lost."""

    def collect(self):  # type: ignore[no-untyped-def]
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            try:
                if os.path.getsize(path) >= 8:
                    files.append(path)
            except OSError:  # removed by livekit-agents' cleanup meanwhile
                continue
        return self.merge(files, accumulate=True)


def _metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    _SettledFilesCollector(registry)
    return registry


class HealthServer:
    def __init__(
        self, state: WorkerState, host: str, port: int, on_scrape: Callable[[], None]
    ) -> None:
        self.state = state
        self._on_scrape = on_scrape
        self.host = host
        self.port = port
        self._registry = _metrics_registry()
        app = web.Application()
        app.add_routes(
            [
                web.get("/", self.live),
                web.get("/ready", self.ready),
                web.get("/metrics", self.metrics),
                web.get("/worker", self.worker),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)

    def _body(self, status: str) -> dict[str, object]:
        s = self.state
        return {
            "status": status,
            "timestamp": time.time(),
            "worker_id": s.worker_id,
            "active_jobs": s.active_jobs(),
            "connected": s.connected,
            "draining": s.draining,
            "version": __version__,
        }

    def _json(self, code: int, status: str) -> web.Response:
        return web.Response(
            status=code, text=json.dumps(self._body(status)), content_type="application/json"
        )

    async def live(self, _: web.Request) -> web.Response:
        if self.state.healthy():
            return self._json(200, "ok")
        return self._json(503, "disconnected")

    async def ready(self, _: web.Request) -> web.Response:
        if self.state.draining:
            return self._json(503, "draining")
        if not self.state.connected:
            return self._json(503, "not_registered")
        return self._json(200, "ready")

    async def metrics(self, _: web.Request) -> web.Response:
        self._on_scrape()  # gauges exact at scrape time, not as of the last poll
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def worker(self, _: web.Request) -> web.Response:
        s = self.state
        body = {
            "worker_id": s.worker_id,
            "agent_name": s.settings.agent_name,
            "active_jobs": s.active_jobs(),
            "max_jobs": s.settings.max_jobs,
            "worker_load": s.load(),
            "sdk_version": s.sdk_version,
            "version": __version__,
        }
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        await self._runner.cleanup()
