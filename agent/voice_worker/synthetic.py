"""A synthetic call: `WORKER_ENTRYPOINT=voice_worker.synthetic:call`.

For smoke, drain and rollout tests of a deployment without providers or media: the job does not
join the room; it "talks" for `hold_seconds` (from the job's JSON metadata, default 30, at most
3600), records usage under provider "synthetic" through the same metering as a real session
(one STT second per second held, a small LLM exchange per 5 s), then ends itself like a real
call does. Everything around it (job process, metrics, session record, drain) is the real worker.
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


def hold_seconds(metadata: str) -> float:
    try:
        value = float(json.loads(metadata or "{}").get("hold_seconds", 30))
    except (ValueError, TypeError, AttributeError):
        value = 30.0
    return min(max(value, 0.0), MAX_HOLD_S)


async def call(ctx: JobContext, job: JobRuntime) -> None:
    hold = hold_seconds(ctx.job.metadata)
    deadline = time.monotonic() + hold
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
    job.end(f"synthetic call of {hold:g}s finished")
