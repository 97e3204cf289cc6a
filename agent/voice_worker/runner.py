"""The worker process: AgentServer plus systemd, health, metrics, signals and exit codes.

Imported by __main__ only after PROMETHEUS_MULTIPROC_DIR is set (prometheus-client picks its
multiprocess mode at import time). Relies on internals of the pinned livekit-agents 1.8.9:
`AgentServer._connecting` (True while (re)connecting), `AgentServer._proc_pool` events, and
`_refresh_worker_load`/`_update_worker_status` (what its own 2.5 s status loop calls).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

from livekit.agents import AgentServer

from . import forkserver, jobs
from .config import Settings
from .health import HealthServer
from .state import WorkerState, job_load
from .systemd import Notifier, run_watchdog, watchdog_interval

logger = logging.getLogger("voice_worker")

EX_OK = 0
EX_UNAVAILABLE = 69  # gave up reconnecting to LiveKit
STATE_POLL_S = 0.5


class JobMetrics(logging.Filter):
    """Job starts, ends by outcome and durations, seen from the worker process.

    Also a filter on livekit-agents' logger: its memory monitor (supervised_proc.py in 1.8.9) says
    "job process exceeded memory limit, killing it" with the job id and room, and nothing else
    tells a memory kill from another failure."""

    MEMORY_LIMIT_MESSAGE = "process exceeded memory limit"

    def __init__(self) -> None:
        super().__init__()
        from . import metrics as m  # after the AgentServer wiped the metrics directory

        self.m = m
        self._launched: dict[str, float] = {}
        self._memory_limited: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = getattr(record, "job_id", None)
        if job_id and self.MEMORY_LIMIT_MESSAGE in record.getMessage():
            self._memory_limited[job_id] = float(getattr(record, "memory_usage_mb", 0) or 0)
        return True  # the record is logged as it is

    def launched(self, proc: Any) -> None:
        job = proc.running_job
        if job is None or job.job.id in self._launched:
            return
        self._launched[job.job.id] = time.monotonic()
        self.m.JOBS_STARTED.inc()

    def closed(self, proc: Any) -> None:
        job = proc.running_job
        if job is None or job.job.id not in self._launched:
            return
        started = self._launched.pop(job.job.id)
        memory_mb = self._memory_limited.pop(job.job.id, None)
        outcome = "success" if proc.status.value == "success" and memory_mb is None else "failed"
        self.m.JOBS_FINISHED.labels(outcome=outcome).inc()
        self.m.JOB_DURATION.observe(time.monotonic() - started)
        extra = {"job_id": job.job.id, "room_name": job.job.room.name, "outcome": outcome}
        if memory_mb is not None:
            self.m.JOBS_MEMORY_LIMITED.inc()
            extra |= {"reason": "memory_limit", "memory_usage_mb": memory_mb}
            logger.error("job ended: its process exceeded the job memory limit", extra=extra)
            return
        logger.info("job ended", extra=extra)


def build_server(settings: Settings) -> AgentServer:
    def load(_: AgentServer | None = None) -> float:
        return job_load(server, settings.max_jobs)

    server = AgentServer(
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret,
        host="127.0.0.1",
        port=0,  # the stock health server; ours (health.py) is the one operators use
        drain_timeout=settings.drain_timeout,
        # By default it never gives up: an exit would only restart it into the same outage, and
        # the unit's start limit would leave it failed after LiveKit came back (issue 12).
        max_retry=sys.maxsize if settings.max_retry is None else settings.max_retry,
        num_idle_processes=settings.num_idle_processes,
        job_memory_warn_mb=settings.job_memory_warn_mb,
        job_memory_limit_mb=settings.job_memory_limit_mb,
        load_fnc=load,
        load_threshold=1.0,  # full at WORKER_MAX_JOBS, never by whole-host CPU
        prometheus_multiproc_dir=str(settings.metrics_dir),
        setup_fnc=jobs.prewarm,
        # the same list forkserver.py started the forkserver with (the plugins, the VAD, the call)
        preload_modules=forkserver.preload_modules(settings),
        log_level=settings.log_level,
    )
    server.rtc_session(jobs.run_job, agent_name=settings.agent_name)
    return server


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server = build_server(settings)
        self.state = WorkerState(settings, self.server)
        self.notifier = Notifier()
        self.health = HealthServer(
            self.state, settings.health_host, settings.health_port, self._refresh
        )
        self._stop = asyncio.Event()
        self._signals = 0
        self._gauges: Any = None
        self._announcing: set[asyncio.Task[None]] = set()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning("second stop signal: exiting without waiting for calls")
            os._exit(1)
        logger.info("stop signal received", extra={"signal": signal.Signals(signum).name})
        self._stop.set()

    def _on_started(self) -> None:
        from . import metrics as m

        self._gauges = m
        m.set_identity(self.settings.agent_name, self.settings.max_jobs)
        job_metrics = JobMetrics()
        logging.getLogger("livekit.agents").addFilter(job_metrics)
        pool = self.server._proc_pool
        pool.on("process_job_launched", job_metrics.launched)
        pool.on("process_closed", job_metrics.closed)
        pool.on("process_closed", self._announce_load)

    def _announce_load(self, _proc: Any) -> None:
        # livekit-agents tells LiveKit its load only every 2.5 s (UPDATE_STATUS_INTERVAL). A full
        # worker whose call just ended stayed "full" that long, and LiveKit, which neither queues
        # nor retries a dispatch, gave a call arriving meanwhile no agent (CI, default scenario: a
        # redial 2.4 s after the call ended). Tell LiveKit at once. The pool emits this before it
        # drops the process; the task starts after that step, so it reads the load without it.
        task = asyncio.create_task(self._send_load(), name="announce_load")
        self._announcing.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._announcing.discard)

    async def _send_load(self) -> None:
        if self.server._closed:
            return
        await self.server._refresh_worker_load()
        await self.server._update_worker_status()

    def _on_registered(self, worker_id: str, _info: Any) -> None:
        first = not self.state.registered_once
        self.state.registered(worker_id)
        self._update_gauges()
        if first:
            self.notifier.ready(self.state.status_line())
            logger.info("worker ready", extra={"worker_id": worker_id})

    def _refresh(self) -> None:
        changed = self.state.refresh_connection()
        if changed is False:
            logger.warning("lost the connection to LiveKit")
            if self._gauges is not None:
                self._gauges.DISCONNECTS.inc()
        elif changed is True:
            logger.info("connection to LiveKit restored")
        self._update_gauges()

    def _update_gauges(self) -> None:
        if self._gauges is not None:
            g = self._gauges
            g.CONNECTED.set(1 if self.state.connected else 0)
            g.DRAINING.set(1 if self.state.draining else 0)
            g.ACTIVE_JOBS.set(self.state.active_jobs())
        if self.state.registered_once:
            self.notifier.status(self.state.status_line())

    async def _poll_state(self) -> None:
        while True:
            self._refresh()
            await asyncio.sleep(STATE_POLL_S)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.server.on("worker_started", self._on_started)
        self.server.on("worker_registered", self._on_registered)
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        await self.health.start()
        logger.info(
            "health endpoints listening",
            extra={"host": self.settings.health_host, "port": self.settings.health_port},
        )
        helpers = [asyncio.create_task(self._poll_state(), name="state")]
        interval = watchdog_interval()
        if interval is not None:
            helpers.append(
                asyncio.create_task(run_watchdog(self.notifier, interval), name="watchdog")
            )
        run_task = asyncio.create_task(self.server.run(), name="agent_server")
        stop_task = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if run_task.done():
                code = self._run_ended(run_task)
                # close the job processes and the forkserver too, or exiting can hang on them
                await self.server.aclose()
                return code
            return await self._drain_and_close()
        finally:
            for task in (*helpers, stop_task):
                task.cancel()
            await self.health.stop()

    def _run_ended(self, run_task: asyncio.Task[None]) -> int:
        exc = run_task.exception()
        logger.error(
            "worker stopped: could not stay connected to LiveKit",
            extra={"error": str(exc) if exc else "connection task ended"},
        )
        return EX_UNAVAILABLE

    async def _drain_and_close(self) -> int:
        self.state.draining = True
        self.notifier.stopping(self.state.status_line())
        self._refresh()
        started = time.monotonic()
        logger.info(
            "draining",
            extra={"active_jobs": self.state.active_jobs(), "timeout": self.settings.drain_timeout},
        )
        try:
            await self.server.drain()
            logger.info("drain complete", extra={"seconds": round(time.monotonic() - started, 1)})
        except TimeoutError:
            logger.warning("drain timed out; ending the remaining calls")
        await self.server.aclose()
        return EX_OK
