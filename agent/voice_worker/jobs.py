"""What every job gets around its conversation: settings, VAD, usage metering, input guard,
idle handling, a clean end, and a session record written when the job shuts down.

The worker process registers `run_job` and `prewarm`; heavy imports stay inside them so the
worker process does not create metric values before livekit-agents wipes the metrics directory.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from livekit.agents import JobContext, JobProcess

from .config import Settings, load_settings

if TYPE_CHECKING:
    from livekit.agents import AgentSession

logger = logging.getLogger("voice_worker.job")

Conversation = Callable[[JobContext, "JobRuntime"], Awaitable[None]]

# Job processes are the kernel's first choice when the unit's cgroup (MemoryMax=) or the host runs
# out of memory: the largest job goes, the worker process and the forkserver (0, the unit's) stay,
# and the unit's OOMPolicy=continue keeps the other calls. Raising one's own score needs no
# privilege.
JOB_OOM_SCORE_ADJ = 1000


def raise_oom_score(path: str = "/proc/self/oom_score_adj") -> None:
    try:
        with open(path, "w") as f:
            f.write(str(JOB_OOM_SCORE_ADJ))
    except OSError as e:  # never worth failing a call over
        logger.warning("could not raise the job process's OOM score", extra={"error": str(e)})


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process before it takes a job: settings, the shared Silero VAD, and what
    a call's start would otherwise do on its event loop while the caller waits (measured under
    load: 0.2-0.8 s each for the TLS context and the LLM client, 0.2-0.4 s of imports)."""
    from livekit.agents.utils import http_context

    from . import input_guard, usage  # noqa: F401 (imported here, once, not in a call)
    from .models import VAD  # loaded in the forkserver already (runner.py's preload_modules)

    raise_oom_score()
    settings = load_settings()
    proc.userdata["settings"] = settings
    proc.userdata["vad"] = VAD
    http_context._create_ssl_context()  # cached per process: parses the host's trust store
    module = importlib.import_module(settings.entrypoint.partition(":")[0])
    warm = getattr(module, "prewarm", None)
    if callable(warm):
        warm(proc, settings)


def load_conversation(spec: str) -> Conversation:
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)


def _callers(ctx: JobContext) -> list[Any]:
    """The room's remote participants that `wait_for_participant` waits for (no agents)."""
    from livekit.agents.job import DEFAULT_PARTICIPANT_KINDS

    return [p for p in ctx.room.remote_participants.values() if p.kind in DEFAULT_PARTICIPANT_KINDS]


class JobRuntime:
    """Per-job state shared by the lifecycle and the conversation."""

    def __init__(self, ctx: JobContext, settings: Settings, vad: Any) -> None:
        from .input_guard import InputGuard
        from .usage import UsageMeter

        self.ctx = ctx
        self.settings = settings
        self.vad = vad
        self.usage = UsageMeter(settings.prices)
        self.guard = InputGuard(settings.input_max_chars, settings.input_rate_per_minute)
        self.session_id = uuid.uuid4().hex
        self.started_at = time.time()
        self.turns = 0
        self.end_reason: str | None = None
        self._watcher: asyncio.Task[None] | None = None

    def watch(self, session: AgentSession) -> None:
        """Meter a session's usage, count its turns and end the job when the session ends."""
        session.on("metrics_collected", lambda ev: self.usage.record(ev.metrics))

        def on_item(ev: Any) -> None:
            if getattr(ev.item, "role", None) == "user":
                self.turns += 1

        def on_user_state(ev: Any) -> None:
            if ev.new_state == "away":
                self.end(f"caller idle for {self.settings.idle_timeout:g}s")

        session.on("conversation_item_added", on_item)
        session.on("user_state_changed", on_user_state)
        session.on("close", lambda ev: self.end(f"session closed ({ev.reason})"))

    def end(self, reason: str, after: Any = None) -> None:
        """End the job (frees its slot and lets a drain finish). `after` is a speech handle
        to let finish first, such as a goodbye."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        logger.info("ending session", extra={"reason": reason})
        if after is None:
            self.ctx.shutdown(reason)
            return

        async def _after_speech() -> None:
            await after.wait_for_playout()
            self.ctx.shutdown(reason)

        asyncio.get_running_loop().create_task(_after_speech())

    async def wait_for_caller(self, ctx: JobContext) -> None:
        """End the job if nobody joins the room within the idle timeout; once a caller is in,
        watch for the room to lose every caller (`_watch_callers`)."""
        timeout = self.settings.idle_timeout
        try:
            await asyncio.wait_for(ctx.wait_for_participant(), timeout)
        except TimeoutError:
            self.end(f"no caller joined within {timeout:g}s")
            return
        gone = asyncio.Event()

        def on_left(_: Any) -> None:
            if self.end_reason is None and not _callers(ctx):
                gone.set()

        ctx.room.on("participant_disconnected", on_left)
        self._watcher = asyncio.get_running_loop().create_task(self._watch_callers(ctx, gone))

    async def _watch_callers(self, ctx: JobContext, gone: asyncio.Event) -> None:
        """End the job when the room has had no caller for the idle timeout.

        livekit-agents closes the session only when its caller hangs up (a client-initiated
        leave, the room deleted, a rejected call). A caller lost any other way stays "linked"
        and the session waits for them for ever, holding a slot: measured after a crash of a
        single LiveKit node, whose restart the SDK meets by removing every participant and
        rejoining the room alone (issue 12). The wait never reconnects a room that is gone (as
        `JobContext.wait_for_participant` would, at the end of every call)."""
        from livekit.agents.job import DEFAULT_PARTICIPANT_KINDS
        from livekit.agents.utils import wait_for_participant

        timeout = self.settings.idle_timeout
        while True:
            await gone.wait()
            gone.clear()
            if self.end_reason is not None or not ctx.room.isconnected():
                return
            logger.info("no caller left in the room", extra={"idle_timeout_s": timeout})
            try:
                await asyncio.wait_for(
                    wait_for_participant(ctx.room, kind=DEFAULT_PARTICIPANT_KINDS), timeout
                )
            except TimeoutError:
                self.end(f"the caller was gone and nobody joined within {timeout:g}s")
                return
            except RuntimeError:  # the room was disconnected: the job is ending anyway
                return

    def record(self, shutdown_reason: str) -> dict[str, Any]:
        ended = time.time()
        return {
            "job_id": self.ctx.job.id,
            "room": self.ctx.job.room.name,
            "session_id": self.session_id,
            "worker_id": self.ctx.worker_id,
            "started_at": round(self.started_at, 3),
            "ended_at": round(ended, 3),
            "duration_s": round(ended - self.started_at, 3),
            "turns": self.turns,
            "reason": self.end_reason or shutdown_reason,
            "usage": self.usage.total.as_dict(),
        }

    async def save_record(self, shutdown_reason: str) -> None:
        line = json.dumps(self.record(shutdown_reason), separators=(",", ":")) + "\n"
        path = self.settings.state_dir / "sessions.jsonl"
        # one O_APPEND write per record: lines from concurrent jobs never interleave
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        logger.info("session record saved", extra={"path": str(path)})


async def run_job(ctx: JobContext) -> None:
    settings: Settings = ctx.proc.userdata["settings"]
    runtime = JobRuntime(ctx, settings, ctx.proc.userdata.get("vad"))
    ctx.log_context_fields = {"session_id": runtime.session_id}
    ctx.add_shutdown_callback(runtime.save_record)
    logger.info("job started")
    conversation = load_conversation(settings.entrypoint)
    await conversation(ctx, runtime)
