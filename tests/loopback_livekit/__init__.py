"""Loopback LiveKit server speaking the real agent-worker protocol (see ``server.py``).

In process::

    async with LoopbackLiveKit("devkey", "secret") as lk:   # lk.url == "ws://127.0.0.1:<port>"
        job = await lk.dispatch("room-1", metadata='{"hold_seconds": 1}')

Out of process: ``python -m tests.loopback_livekit --port 7880 --api-key K --api-secret S``.
"""

from .server import (
    AVAILABILITY_TIMEOUT_S,
    LoopbackLiveKit,
    apply_event,
    derive_views,
    min_available_workers,
    read_events_file,
)

__all__ = [
    "AVAILABILITY_TIMEOUT_S",
    "LoopbackLiveKit",
    "apply_event",
    "derive_views",
    "min_available_workers",
    "read_events_file",
]
