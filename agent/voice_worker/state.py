"""What the worker knows about itself: registration, connection, drain and load. The health
server, the STATUS lines, the gauges and the watchdog all read this one object (runner.Worker
keeps it current)."""

from __future__ import annotations

import time

from livekit.agents import AgentServer
from livekit.agents import __version__ as sdk_version

from .config import Settings


def job_load(server: AgentServer, max_jobs: int) -> float:
    """The worker's load: its own running jobs against WORKER_MAX_JOBS."""
    return 0.0 if server._closed else len(server.active_jobs) / max_jobs


class WorkerState:
    """What the health endpoints, STATUS lines, gauges and the watchdog report."""

    def __init__(self, settings: Settings, server: AgentServer) -> None:
        self.settings = settings
        self.server = server
        self.sdk_version = sdk_version
        self.worker_id = ""
        self.registered_once = False
        self.connected = False
        self.draining = False
        self.disconnected_since = time.monotonic()

    def active_jobs(self) -> int:
        if self.server._closed:
            return 0
        return len(self.server.active_jobs)

    def load(self) -> float:
        return min(job_load(self.server, self.settings.max_jobs), 1.0)

    def healthy(self) -> bool:
        if self.connected:
            return True
        return time.monotonic() - self.disconnected_since < self.settings.reconnect_grace

    def registered(self, worker_id: str) -> None:
        # emitted from inside the register handling, before `_connecting` is cleared
        self.worker_id = worker_id
        self.registered_once = True
        self.connected = True

    def refresh_connection(self) -> bool | None:
        """Re-read the connection; returns the new value when it changed."""
        now = self.registered_once and not self.server._connecting and not self.server._closed
        if now == self.connected:
            return None
        self.connected = now
        if not now:
            self.disconnected_since = time.monotonic()
        return now

    def status_line(self) -> str:
        jobs_txt = f"{self.active_jobs()}/{self.settings.max_jobs} calls"
        if self.draining:
            return f"Draining: waiting for {self.active_jobs()} active call(s) to end"
        if self.connected:
            return f"Registered with LiveKit as {self.worker_id}; {jobs_txt}"
        if not self.registered_once:
            return "Connecting to LiveKit"
        gone = time.monotonic() - self.disconnected_since
        return f"Disconnected from LiveKit for {gone:.0f}s, reconnecting; {jobs_txt}"
