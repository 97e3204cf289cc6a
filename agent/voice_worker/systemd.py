"""systemd notify protocol through sdnotify: READY, STATUS, WATCHDOG, STOPPING.

Harmless without NOTIFY_SOCKET (sdnotify then sends nothing). The watchdog pings come from a task
on the worker's event loop, so a blocked loop stops them; and they are sent only while the worker
is healthy (connected, or disconnected for less than the reconnect grace), so systemd restarts a
hung or cut-off worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import sdnotify

logger = logging.getLogger("voice_worker.systemd")


class Notifier:
    def __init__(self) -> None:
        self._n = sdnotify.SystemdNotifier()
        self._last_status: str | None = None

    def _send(self, msg: str) -> None:
        self._n.notify(msg)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")
        self._last_status = status

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._send(f"STATUS={status}")
            self._last_status = status

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self._send(f"STOPPING=1\nSTATUS={status}")
        self._last_status = status


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Half of WatchdogSec= when systemd asked this process for pings, else None."""
    env = dict(os.environ) if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 1e6 / 2, 0.05)
    except ValueError:
        return None


async def run_watchdog(notifier: Notifier, interval: float, healthy: Callable[[], bool]) -> None:
    """Ping every `interval` seconds while `healthy()`; runs until cancelled."""
    was_healthy = True
    while True:
        ok = healthy()
        if ok:
            notifier.watchdog()
        if ok != was_healthy:
            level = logging.INFO if ok else logging.ERROR
            logger.log(level, "watchdog pings %s", "resumed" if ok else "stopped: worker unhealthy")
            was_healthy = ok
        await asyncio.sleep(interval)
