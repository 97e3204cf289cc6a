"""The worker's Prometheus metrics (names in docs/worker-contract.md).

prometheus-client runs in multiprocess mode: every process (the worker and each job process)
writes its values to files in PROMETHEUS_MULTIPROC_DIR and /metrics merges them, so usage counted
inside a job process reaches the worker's endpoint. livekit-agents wipes that directory when the
AgentServer starts, so the worker process imports this module only after that (see runner.py):
unlabelled metrics open their value file when they are created.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from . import __version__

INFO = Gauge(
    "voice_worker_info",
    "Worker build and identity",
    ["version", "agent_name"],
    multiprocess_mode="livemax",
)
CONNECTED = Gauge(
    "voice_worker_connected", "1 while registered with LiveKit", multiprocess_mode="livemax"
)
DRAINING = Gauge(
    "voice_worker_draining", "1 while draining before exit", multiprocess_mode="livemax"
)
ACTIVE_JOBS = Gauge("voice_worker_active_jobs", "Running jobs", multiprocess_mode="livemax")
MAX_JOBS = Gauge(
    "voice_worker_max_jobs", "Job capacity (WORKER_MAX_JOBS)", multiprocess_mode="livemax"
)
DISCONNECTS = Counter("voice_worker_disconnects", "Connections to LiveKit lost")
JOBS_STARTED = Counter("voice_worker_jobs_started", "Jobs launched in a job process")
JOBS_FINISHED = Counter("voice_worker_jobs_finished", "Jobs ended, by outcome", ["outcome"])
JOBS_MEMORY_LIMITED = Counter(
    "voice_worker_jobs_memory_limited",
    "Job processes killed for exceeding WORKER_JOB_MEMORY_LIMIT_MB (also counted as failed)",
)
JOB_DURATION = Histogram(
    "voice_worker_job_duration_seconds",
    "Wall time from job launch to job end",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)

STT_AUDIO = Counter("voice_worker_stt_audio_seconds", "Audio sent to STT", ["provider"])
LLM_TOKENS = Counter(
    "voice_worker_llm_tokens", "LLM tokens by direction", ["provider", "direction"]
)
TTS_CHARACTERS = Counter("voice_worker_tts_characters", "Characters synthesized", ["provider"])
COST = Counter(
    "voice_worker_estimated_cost_usd", "Estimated provider cost from unit prices", ["provider"]
)
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
LLM_TTFT = Histogram(
    "voice_worker_llm_ttft_seconds",
    "LLM time to first token",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
)
TTS_TTFB = Histogram(
    "voice_worker_tts_ttfb_seconds",
    "TTS time to first byte",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
)
EOU_DELAY = Histogram(
    "voice_worker_eou_delay_seconds",
    "End of user speech to end of turn decision",
    buckets=_LATENCY_BUCKETS,
)
STT_DELAY = Histogram(
    "voice_worker_stt_delay_seconds",
    "End of user speech to its final transcript (STT)",
    buckets=_LATENCY_BUCKETS,
)
INPUTS_REJECTED = Counter(
    "voice_worker_inputs_rejected", "Participant text inputs rejected", ["reason"]
)
INPUTS_RATE_LIMITED = Counter(
    "voice_worker_inputs_rate_limited", "Participant text inputs over the rate limit"
)


def set_identity(agent_name: str, max_jobs: int) -> None:
    INFO.labels(version=__version__, agent_name=agent_name).set(1)
    MAX_JOBS.set(max_jobs)
    # Both outcomes exist from the start, so rate() sees the first failure (alert rules).
    for outcome in ("success", "failed"):
        JOBS_FINISHED.labels(outcome=outcome)
