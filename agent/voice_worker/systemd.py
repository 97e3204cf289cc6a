"""systemd notify protocol through sdnotify: READY, STATUS, WATCHDOG, STOPPING.

Harmless without NOTIFY_SOCKET (sdnotify then sends nothing). The watchdog pings come from a task
on the worker's event loop, so a blocked loop stops them and systemd restarts a hung worker. They
do not depend on LiveKit: a worker cut off from LiveKit keeps reconnecting by itself (runner.py),
and restarting it would only count towards the unit's start limit and leave it failed after a
long outage (issue 12).
"""

from __future__ import annotations

import asyncio
import os

import sdnotify


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


async def run_watchdog(notifier: Notifier, interval: float) -> None:
    """Ping every `interval` seconds for as long as the event loop runs; runs until cancelled."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
