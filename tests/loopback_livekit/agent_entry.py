"""Job entrypoint for tests against the loopback server (imported inside job processes).

It never calls ``ctx.connect()`` (the loopback server has no ``/rtc``): it holds for
``hold_seconds`` from the job metadata (JSON, default 0.2) and then calls ``ctx.shutdown()``, so
the worker reports ``JS_SUCCESS``. It lives in its own module so that the forkserver job process
can import it by name without importing pytest's test module.
"""

from __future__ import annotations

import asyncio
import json

from livekit.agents import JobContext


def hold_seconds(metadata: str, default: float = 0.2) -> float:
    try:
        value = json.loads(metadata or "{}").get("hold_seconds", default)
    except (ValueError, AttributeError):
        return default
    return max(0.0, float(value))


async def hold_then_shutdown(ctx: JobContext) -> None:
    await asyncio.sleep(hold_seconds(ctx.job.metadata))  # stands in for a call's duration
    ctx.shutdown(reason="hold finished")
