"""A synthetic call: `WORKER_ENTRYPOINT=voice_worker.synthetic:call`.

For smoke, drain and rollout tests of a deployment without providers or media: the job "talks"
for `hold_seconds` (from the job's JSON metadata, default 30, at most 3600), records usage under
provider "synthetic" through the same metering as a real session (one STT second per second held,
a small LLM exchange per 5 s), then ends itself like a real call does. With `"join": true` in the
metadata it first joins its room as a participant (the agent is in the room for the whole call,
and leaves it at the end); without, it stays out of the room and livekit-server records the job's
end as the worker reports it (a call that leaves its room first is marked failed by the server
itself, "agent worker left the room"). With `"grow_mb_per_s": N` the job process also
allocates (and touches) N MB every second for as long as it holds: a call that eats memory, for
the per-job memory limit's tests. Everything around it (job process, metrics, session record,
drain) is the real worker.
"""

from __future__ import annotations

import asyncio
import json
import time

from livekit.agents import JobContext
from livekit.agents.metrics import LLMMetrics, STTMetrics
from livekit.agents.metrics.base import Metadata

from .jobs import JobRuntime

MAX_HOLD_S = 3600.0
TURN_S = 5.0
_META = Metadata(model_provider="synthetic", model_name="synthetic")


def _metadata(metadata: str) -> dict:
    try:
        value = json.loads(metadata or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def hold_seconds(metadata: str) -> float:
    try:
        value = float(_metadata(metadata).get("hold_seconds", 30))
    except (ValueError, TypeError):
        value = 30.0
    return min(max(value, 0.0), MAX_HOLD_S)


def joins_room(metadata: str) -> bool:
    return _metadata(metadata).get("join") is True


def grow_mb_per_s(metadata: str) -> int:
    value = _metadata(metadata).get("grow_mb_per_s", 0)
    return min(max(value, 0), 1024) if isinstance(value, int) else 0


async def call(ctx: JobContext, job: JobRuntime) -> None:
    hold = hold_seconds(ctx.job.metadata)
    if joins_room(ctx.job.metadata):
        await ctx.connect()
    deadline = time.monotonic() + hold
    grow = grow_mb_per_s(ctx.job.metadata)
    eater = asyncio.create_task(_eat(grow), name="synthetic-grow") if grow else None
    while (left := deadline - time.monotonic()) > 0:
        step = min(TURN_S, left)
        await asyncio.sleep(step)
        job.turns += 1
        job.usage.record(
            STTMetrics(
                label="synthetic",
                request_id=f"stt-{job.turns}",
                timestamp=time.time(),
                duration=0.0,
                audio_duration=step,
                streamed=True,
                metadata=_META,
            )
        )
        job.usage.record(
            LLMMetrics(
                label="synthetic",
                request_id=f"llm-{job.turns}",
                timestamp=time.time(),
                duration=0.2,
                ttft=0.1,
                cancelled=False,
                completion_tokens=20,
                prompt_tokens=200,
                prompt_cached_tokens=0,
                total_tokens=220,
                tokens_per_second=100.0,
                metadata=_META,
            )
        )
    if eater is not None:
        eater.cancel()
    job.end(f"synthetic call of {hold:g}s finished")


async def _eat(mb_per_s: int) -> None:
    eaten: list[bytearray] = []
    while True:
        eaten.append(bytearray(b"\x01" * (mb_per_s << 20)))  # written: resident, not just reserved
        await asyncio.sleep(1.0)
