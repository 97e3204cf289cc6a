"""Loopback LiveKit server: the agent-worker side of LiveKit, on 127.0.0.1, for tests and the lab.

What it covers
--------------
* ``GET /agent``: the WebSocket that ``livekit-agents`` workers connect to. The ``Authorization:
  Bearer <JWT>`` header is verified with ``livekit.api.TokenVerifier(api_key, api_secret)`` and the
  token must carry the ``video.agent`` grant; anything else gets HTTP 401 before the upgrade.
  Messages are binary protobuf: ``livekit.protocol.agent.WorkerMessage`` in, ``ServerMessage`` out.
  ``register`` (must come first; answered with ``RegisterWorkerResponse{worker_id="AW_<n>",
  server_info}``), ``availability`` answers, ``update_worker``, ``update_job``, ``migrate_job`` and
  ``ping`` (answered with ``pong``) are handled; ``simulate_job`` is ignored.
* Dispatch the way LiveKit does it: a job (``AJ_<n>``, ``JT_ROOM``) is offered with an
  ``AvailabilityRequest`` to a connected worker whose ``agent_name`` matches and whose last reported
  status is not ``WS_FULL``, lowest reported load first. A refusal, or no answer within
  ``availability_timeout_s`` (5 s), moves the offer to the next worker; a refusal with
  ``terminate=true`` ends the dispatch. On acceptance the worker gets a ``JobAssignment`` with a
  room-join JWT minted with the same key/secret. ``terminate()`` sends a ``JobTermination``.
* An append-only event log (also as JSON lines in ``events_file``) and views derived from it:
  workers, jobs, and :func:`min_available_workers` for rolling-update assertions. ``seq`` counts
  per server instance; restarted on the same ``events_file``, the server continues the worker,
  job and room numbering so ids stay unique across restarts (jobs migrate by id).
* Fault injection: :meth:`LoopbackLiveKit.drop_connections` (abort every worker's TCP connection)
  and :meth:`LoopbackLiveKit.refuse_connections` (answer ``/agent`` with HTTP 503 for a while).
* An HTTP control API under ``/_loopback/`` for out-of-process use (see :func:`_control_routes`).

What it does NOT cover
----------------------
* No ``/rtc`` signalling, no rooms or participants, no WebRTC/SFU media: a job entrypoint that
  calls ``ctx.connect()`` will fail to join. Test entrypoints must not connect.
* No room-service / agent-dispatch Twirp API (``/twirp/...``), no webhooks, no egress/ingress/SIP.
* No LiveKit Cloud features (hosted agents, worker tokens, regions, load-based routing between
  nodes), no job resumption (``AvailabilityRequest.resuming`` is never set), no ``go_away``.
* The control API has no authentication: bind it to loopback or a lab-only address.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiohttp import WSCloseCode, WSMsgType, web
from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol import agent, models

logger = logging.getLogger("loopback_livekit")

AVAILABILITY_TIMEOUT_S = 5.0
REGISTER_TIMEOUT_S = 10.0
SERVER_VERSION = "loopback-1"

WS_AVAILABLE = "WS_AVAILABLE"
WS_FULL = "WS_FULL"

#: ``UpdateJobStatus.status`` -> job view status
JOB_STATUS = {
    agent.JobStatus.JS_PENDING: "pending",
    agent.JobStatus.JS_RUNNING: "running",
    agent.JobStatus.JS_SUCCESS: "success",
    agent.JobStatus.JS_FAILED: "failed",
    agent.JobStatus.JS_CANCELLED: "cancelled",
}
#: job statuses after which the worker reports nothing more about a job
JOB_DONE = frozenset({"success", "failed", "cancelled", "unassigned"})


# --------------------------------------------------------------------------------------------
# Views derived from the event log (pure functions: usable on an events file as well)
# --------------------------------------------------------------------------------------------


def _new_worker_view(ev: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": ev["worker_id"],
        "agent_name": ev.get("agent_name", ""),
        "version": ev.get("version", ""),
        "connected": True,
        "status": WS_AVAILABLE,
        "load": 0.0,
        "job_count": 0,
        "draining": False,
        "registered_ts": ev["ts"],
        "disconnected_ts": None,
        "disconnect_reason": None,
        "last_status_ts": None,
    }


def _new_job_view(ev: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": ev["job_id"],
        "room": ev.get("room", ""),
        "room_sid": ev.get("room_sid", ""),
        "metadata": ev.get("metadata", ""),
        "agent_name": ev.get("agent_name", ""),
        "worker_id": None,
        "status": "pending",
        "offered_to": [],
        "refused_by": [],
        "no_answer_from": [],
        "participant_identity": None,
        "assigned_while_worker_full": False,
        "unassigned_reason": None,
        "error": "",
        "migrated_from": [],
        "termination_sent": False,
        "created_ts": ev["ts"],
        "assigned_ts": None,
        "ended_ts": None,
    }


def apply_event(
    ev: dict[str, Any], workers: dict[str, dict[str, Any]], jobs: dict[str, dict[str, Any]]
) -> None:
    """Fold one event into the ``workers`` and ``jobs`` views (mutates them)."""
    kind = ev["kind"]
    wid = ev.get("worker_id")
    jid = ev.get("job_id")
    if kind == "worker_registered":
        workers[wid] = _new_worker_view(ev)
        return
    w = workers.get(wid) if wid else None
    if kind == "worker_disconnected" and w is not None:
        w.update(connected=False, disconnected_ts=ev["ts"], disconnect_reason=ev.get("reason"))
    elif kind == "worker_status" and w is not None:
        w.update(
            status=ev["status"],
            load=ev["load"],
            job_count=ev["job_count"],
            draining=ev["status"] == WS_FULL or bool(ev.get("draining")),
            last_status_ts=ev["ts"],
        )
    if jid is None:
        return
    if kind == "job_created":
        jobs[jid] = _new_job_view(ev)
        return
    j = jobs.get(jid)
    if j is None:
        # a job this server never dispatched (e.g. migrated after a server restart)
        j = jobs[jid] = _new_job_view({"job_id": jid, "ts": ev["ts"]})
        j["status"] = "unknown"
    if kind == "availability_sent":
        j["status"] = "offered"
        j["offered_to"].append(wid)
    elif kind == "availability_answer" and not ev.get("late") and not ev["available"]:
        j["refused_by"].append(wid)
    elif kind == "availability_timeout":
        j["no_answer_from"].append(wid)
    elif kind == "assignment_sent":
        j.update(
            status="assigned",
            worker_id=wid,
            participant_identity=ev.get("participant_identity"),
            assigned_while_worker_full=ev.get("worker_status") == WS_FULL,
            assigned_ts=ev["ts"],
        )
    elif kind == "job_unassigned":
        j.update(status="unassigned", unassigned_reason=ev.get("reason"), ended_ts=ev["ts"])
    elif kind == "job_status":
        j["status"] = ev["status"]
        j["worker_id"] = wid
        if ev.get("error"):
            j["error"] = ev["error"]
        if ev["status"] in JOB_DONE:
            j["ended_ts"] = ev["ts"]
    elif kind == "job_migrated":
        j["migrated_from"].append(ev.get("from_worker_id"))
        j["worker_id"] = wid
    elif kind == "termination_sent":
        j["termination_sent"] = True


def derive_views(
    events: Iterable[dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Return ``(workers, jobs)`` views (dicts keyed by id) computed from an event list."""
    workers: dict[str, dict[str, Any]] = {}
    jobs: dict[str, dict[str, Any]] = {}
    for ev in events:
        apply_event(ev, workers, jobs)
    return workers, jobs


def min_available_workers(
    events: Iterable[dict[str, Any]],
    start: float,
    end: float,
    *,
    agent_name: str | None = None,
    clock: str = "t",
) -> int:
    """Lowest number of workers that were connected and not ``WS_FULL`` during ``[start, end]``.

    ``clock`` is ``"t"`` (the server's monotonic clock, for in-process tests) or ``"ts"`` (wall
    clock, for events read from a file or ``GET /_loopback/events``). ``agent_name=None`` counts
    workers of every agent name.
    """
    workers: dict[str, dict[str, Any]] = {}

    def count() -> int:
        return sum(
            1
            for w in workers.values()
            if w["connected"]
            and w["status"] != WS_FULL
            and (agent_name is None or w["agent_name"] == agent_name)
        )

    lowest: int | None = None
    for ev in events:
        if ev[clock] > end:
            break
        if lowest is None and ev[clock] >= start:
            lowest = count()  # the state when the window opened
        if ev["kind"] in ("worker_registered", "worker_disconnected", "worker_status"):
            apply_event(ev, workers, {})
            if lowest is not None:
                lowest = min(lowest, count())
    return count() if lowest is None else lowest


def read_events_file(path: str | Path) -> list[dict[str, Any]]:
    """Read an ``--events-file`` (JSON lines) back into a list of events."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------------------------
# Live server
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Conn:
    worker_id: str
    agent_name: str
    order: int
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    status: str = WS_AVAILABLE
    load: float = 0.0
    job_count: int = 0
    close_reason: str | None = None
    pending: dict[str, asyncio.Future[agent.AvailabilityResponse | None]] = field(
        default_factory=dict
    )
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(eq=False)
class _Dispatcher:
    interval_s: float
    min_duration_s: float
    max_duration_s: float
    count: int
    agent_name: str
    room_prefix: str
    dispatched: int = 0
    job_ids: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "running": self.task is not None and not self.task.done(),
            "interval_s": self.interval_s,
            "min_duration_s": self.min_duration_s,
            "max_duration_s": self.max_duration_s,
            "count": self.count,
            "agent_name": self.agent_name,
            "dispatched": self.dispatched,
            "job_ids": list(self.job_ids),
        }


class LoopbackLiveKit:
    """In-process loopback LiveKit server (agent-worker protocol + control API).

    ``await start()`` binds ``host:port`` (``port=0`` picks a free port) and sets ``.port`` and
    ``.url`` (``ws://host:port``, what a worker's ``LIVEKIT_URL`` should be).
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        availability_timeout_s: float = AVAILABILITY_TIMEOUT_S,
        events_file: str | Path | None = None,
        assignment_url: str = "",
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret are required")
        self.api_key = api_key
        self.api_secret = api_secret
        self.host = host
        self.port = port
        self.url = ""
        self.http_url = ""
        self.availability_timeout_s = availability_timeout_s
        self.assignment_url = assignment_url
        self._events_path = Path(events_file) if events_file else None
        self._events_fh: TextIO | None = None
        self._verifier = api.TokenVerifier(api_key, api_secret)

        self._events: list[dict[str, Any]] = []
        self._workers: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Event()

        self._conns: dict[str, _Conn] = {}
        self._job_worker: dict[str, str] = {}
        self._room_sids: dict[str, str] = {}
        self._worker_ids = itertools.count(1)
        self._job_ids = itertools.count(1)
        self._room_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dispatcher: _Dispatcher | None = None
        self._refusing = False
        self._refuse_handle: asyncio.TimerHandle | None = None
        self._stopping = False
        self._runner: web.AppRunner | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("already started")
        self._open_events_file()
        app = web.Application()
        app.add_routes(
            [
                web.get("/", self._http_root),
                web.get("/agent", self._http_agent),
                *_control_routes(self),
            ]
        )
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        self.url = f"ws://{self.host}:{self.port}"
        self.http_url = f"http://{self.host}:{self.port}"
        self._record("server_started", url=self.url)

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._stopping = True
        await self.stop_dispatcher()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._conns.values()):
            conn.close_reason = "server_stopped"
            with contextlib.suppress(Exception):
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
        await self._runner.cleanup()
        self._runner = None
        if self._refuse_handle is not None:
            self._refuse_handle.cancel()
        self._record("server_stopped")
        if self._events_fh is not None:
            self._events_fh.close()
            self._events_fh = None

    async def __aenter__(self) -> LoopbackLiveKit:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- record --------------------------------------------------------------------------

    def _open_events_file(self) -> None:
        if self._events_path is None:
            return
        if self._events_path.exists():
            self._continue_ids(read_events_file(self._events_path))
        self._events_path.parent.mkdir(parents=True, exist_ok=True)
        self._events_fh = open(self._events_path, "a", encoding="utf-8")  # noqa: SIM115

    def _continue_ids(self, previous: list[dict[str, Any]]) -> None:
        """After a restart on the same events file, keep worker/job/room ids unique: a worker
        that reconnects migrates its jobs by id, and a new ``AJ_1`` must not collide with them."""

        def highest(prefix: str, *fields: str) -> int:
            n = 0
            for ev in previous:
                for f in fields:
                    value = ev.get(f)
                    if isinstance(value, str) and value.startswith(prefix):
                        with contextlib.suppress(ValueError):
                            n = max(n, int(value[len(prefix) :]))
            return n

        self._worker_ids = itertools.count(highest("AW_", "worker_id") + 1)
        self._job_ids = itertools.count(highest("AJ_", "job_id") + 1)
        self._room_ids = itertools.count(highest("RM_", "room_sid") + 1)

    def _record(self, kind: str, worker_id: str | None = None, **details: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "seq": len(self._events) + 1,
            "t": time.monotonic(),
            "ts": time.time(),
            "kind": kind,
            "worker_id": worker_id,
            **details,
        }
        self._events.append(ev)
        apply_event(ev, self._workers, self._jobs)
        if self._events_fh is not None:
            self._events_fh.write(json.dumps(ev, sort_keys=True) + "\n")
            self._events_fh.flush()
        logger.debug("event %s", ev)
        # wake every waiter, then arm a fresh event for the next change
        self._changed.set()
        self._changed = asyncio.Event()
        return ev

    @property
    def events(self) -> list[dict[str, Any]]:
        """A copy of the event log (each event: seq, t, ts, kind, worker_id, details...)."""
        return copy.deepcopy(self._events)

    @property
    def last_seq(self) -> int:
        """``seq`` of the newest event (0 before any): pass as ``after_seq`` to wait for news."""
        return len(self._events)

    @property
    def workers(self) -> dict[str, dict[str, Any]]:
        """Worker views keyed by worker id (every worker ever registered)."""
        return copy.deepcopy(self._workers)

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        """Job views keyed by job id."""
        return copy.deepcopy(self._jobs)

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(e) for e in self._events if e["kind"] == kind]

    def connected_workers(self, agent_name: str | None = None) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(w)
            for w in self._workers.values()
            if w["connected"] and (agent_name is None or w["agent_name"] == agent_name)
        ]

    def min_available_workers(
        self, start: float, end: float | None = None, *, agent_name: str | None = None
    ) -> int:
        """:func:`min_available_workers` over this log; times are ``time.monotonic()``."""
        end = time.monotonic() if end is None else end
        return min_available_workers(self._events, start, end, agent_name=agent_name, clock="t")

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 10.0,  # noqa: ASYNC109 - the bounded wait is the point
    ) -> Any:
        """Wait until ``predicate()`` is truthy, re-checking after every recorded event.

        Returns the truthy value; raises ``TimeoutError`` (with the last events) on timeout.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    result = predicate()
                    if result:
                        return result
                    await changed.wait()
        except TimeoutError:
            tail = "\n".join(json.dumps(e, sort_keys=True) for e in self._events[-15:])
            raise TimeoutError(
                f"condition not met within {timeout}s; last events:\n{tail}"
            ) from None

    async def wait_for_event(
        self,
        kind: str,
        timeout: float = 10.0,  # noqa: ASYNC109
        *,
        after_seq: int = 0,
        **match: Any,
    ) -> dict[str, Any]:
        """First event of ``kind`` with ``seq > after_seq`` whose fields equal ``match``."""

        def find() -> dict[str, Any] | None:
            for ev in self._events[after_seq:]:
                if ev["kind"] == kind and all(ev.get(k) == v for k, v in match.items()):
                    return copy.deepcopy(ev)
            return None

        return await self.wait_for(find, timeout)

    # ---- fault injection ---------------------------------------------------------------

    async def drop_connections(self, timeout: float = 5.0) -> list[str]:  # noqa: ASYNC109
        """Abort every worker's TCP connection (no close frame); returns the dropped worker ids.

        Waits until each dropped connection has been recorded as ``worker_disconnected``.
        """
        dropped = list(self._conns.values())
        for conn in dropped:
            conn.close_reason = "dropped_by_server"
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=WSCloseCode.SERVICE_RESTART)
        ids = [c.worker_id for c in dropped]
        self._record("connections_dropped", worker_ids=ids)
        await self.wait_for(lambda: not any(i in self._conns for i in ids), timeout)
        return ids

    def refuse_connections(self, duration_s: float | None = None) -> None:
        """Answer new ``/agent`` connections with HTTP 503 (for ``duration_s``, or until
        :meth:`accept_connections`). Existing connections are not touched."""
        if self._refuse_handle is not None:
            self._refuse_handle.cancel()
            self._refuse_handle = None
        self._refusing = True
        if duration_s is not None:
            loop = asyncio.get_running_loop()
            self._refuse_handle = loop.call_later(duration_s, self.accept_connections)
        self._record("refusing_connections", duration_s=duration_s)

    def accept_connections(self) -> None:
        if self._refuse_handle is not None:
            self._refuse_handle.cancel()
            self._refuse_handle = None
        if self._refusing:
            self._refusing = False
            self._record("accepting_connections")

    @property
    def refusing(self) -> bool:
        return self._refusing

    # ---- dispatch ------------------------------------------------------------------------

    async def dispatch(
        self,
        room: str,
        metadata: str = "",
        agent_name: str = "",
        *,
        room_metadata: str = "",
        offer_to_full: bool = False,
    ) -> dict[str, Any]:
        """Create a job for ``room`` and offer it until a worker accepts or none is left.

        ``offer_to_full`` also offers it to workers whose last status was ``WS_FULL``: the race
        a real server can lose when an offer crosses a worker's status update, used to show
        that a draining worker refuses the offer itself. Returns the job view once it is
        ``assigned`` or ``unassigned``.
        """
        job = self._create_job(room, metadata, agent_name, room_metadata)
        await self._place(job, offer_to_full=offer_to_full)
        return copy.deepcopy(self._jobs[job.id])

    def _create_job(
        self, room: str, metadata: str, agent_name: str, room_metadata: str = ""
    ) -> agent.Job:
        n = next(self._job_ids)
        if room not in self._room_sids:
            self._room_sids[room] = f"RM_{next(self._room_ids)}"
        job = agent.Job(
            id=f"AJ_{n}",
            dispatch_id=f"AD_{n}",
            type=agent.JobType.JT_ROOM,
            room=models.Room(
                sid=self._room_sids[room],
                name=room,
                metadata=room_metadata,
                creation_time=int(time.time()),
            ),
            metadata=metadata,
            agent_name=agent_name,
            state=agent.JobState(status=agent.JobStatus.JS_PENDING),
        )
        self._record(
            "job_created",
            job_id=job.id,
            room=room,
            room_sid=job.room.sid,
            metadata=metadata,
            agent_name=agent_name,
        )
        return job

    async def _place(self, job: agent.Job, *, offer_to_full: bool = False) -> None:
        tried: set[str] = set()
        while True:
            conn = self._pick_worker(job.agent_name, tried, offer_to_full=offer_to_full)
            if conn is None:
                reason = "no_worker_accepted" if tried else "no_worker_available"
                self._record("job_unassigned", job_id=job.id, reason=reason)
                return
            tried.add(conn.worker_id)
            answer = await self._offer(conn, job)
            if answer is None:
                continue
            if not answer.available:
                if answer.terminate:
                    self._record("job_unassigned", job_id=job.id, reason="terminated_by_worker")
                    return
                continue
            if await self._assign(conn, job, answer):
                return

    def _pick_worker(
        self, agent_name: str, tried: set[str], *, offer_to_full: bool = False
    ) -> _Conn | None:
        candidates = [
            c
            for c in self._conns.values()
            if c.agent_name == agent_name
            and (offer_to_full or c.status != WS_FULL)
            and c.worker_id not in tried
            and not c.ws.closed
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda c: (c.load, c.job_count, c.order))

    async def _send(self, conn: _Conn, msg: agent.ServerMessage) -> bool:
        try:
            async with conn.send_lock:
                await conn.ws.send_bytes(msg.SerializeToString())
            return True
        except (ConnectionError, RuntimeError) as e:
            logger.debug("send to %s failed: %s", conn.worker_id, e)
            return False

    async def _offer(self, conn: _Conn, job: agent.Job) -> agent.AvailabilityResponse | None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[agent.AvailabilityResponse | None] = loop.create_future()
        conn.pending[job.id] = fut
        msg = agent.ServerMessage(availability=agent.AvailabilityRequest(job=job))
        self._record("availability_sent", conn.worker_id, job_id=job.id, worker_status=conn.status)
        try:
            if not await self._send(conn, msg):
                self._record(
                    "availability_timeout", conn.worker_id, job_id=job.id, reason="send_failed"
                )
                return None
            try:
                answer = await asyncio.wait_for(fut, self.availability_timeout_s)
            except TimeoutError:
                self._record(
                    "availability_timeout",
                    conn.worker_id,
                    job_id=job.id,
                    reason="no_answer",
                    timeout_s=self.availability_timeout_s,
                )
                return None
            if answer is None:
                self._record(
                    "availability_timeout",
                    conn.worker_id,
                    job_id=job.id,
                    reason="worker_disconnected",
                )
            return answer
        finally:
            conn.pending.pop(job.id, None)

    async def _assign(
        self, conn: _Conn, job: agent.Job, answer: agent.AvailabilityResponse
    ) -> bool:
        identity = answer.participant_identity or f"agent-{job.id}"
        token = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=job.room.name, agent=True))
        )
        if answer.participant_name:
            token = token.with_name(answer.participant_name)
        if answer.participant_metadata:
            token = token.with_metadata(answer.participant_metadata)
        if answer.participant_attributes:
            token = token.with_attributes(dict(answer.participant_attributes))
        assigned = agent.Job()
        assigned.CopyFrom(job)
        assigned.state.CopyFrom(
            agent.JobState(
                status=agent.JobStatus.JS_PENDING,
                worker_id=conn.worker_id,
                participant_identity=identity,
                updated_at=int(time.time() * 1e9),
            )
        )
        assignment = agent.JobAssignment(job=assigned, token=token.to_jwt())
        if self.assignment_url:
            assignment.url = self.assignment_url
        msg = agent.ServerMessage(assignment=assignment)
        worker_status = conn.status  # the last status the worker reported, before we send
        if not await self._send(conn, msg):
            self._record(
                "availability_timeout", conn.worker_id, job_id=job.id, reason="send_failed"
            )
            return False
        self._job_worker[job.id] = conn.worker_id
        self._record(
            "assignment_sent",
            conn.worker_id,
            job_id=job.id,
            room=job.room.name,
            participant_identity=identity,
            worker_status=worker_status,
            worker_load=conn.load,
        )
        return True

    async def terminate(self, job_id: str) -> bool:
        """Send ``JobTermination`` to the worker running ``job_id``; False if it is gone."""
        wid = self._job_worker.get(job_id)
        conn = self._conns.get(wid) if wid else None
        if conn is None:
            return False
        ok = await self._send(
            conn, agent.ServerMessage(termination=agent.JobTermination(job_id=job_id))
        )
        if ok:
            self._record("termination_sent", conn.worker_id, job_id=job_id)
        return ok

    # ---- background dispatcher -----------------------------------------------------------

    async def start_dispatcher(
        self,
        *,
        interval_s: float,
        min_duration_s: float,
        max_duration_s: float,
        count: int,
        agent_name: str = "",
        room_prefix: str = "loopback-room",
    ) -> dict[str, Any]:
        """Dispatch ``count`` jobs, one every ``interval_s``, with metadata
        ``{"hold_seconds": d}``, d uniform in ``[min_duration_s, max_duration_s]``. Replaces a
        running dispatcher; stops by itself after ``count`` jobs."""
        if not 0.01 <= interval_s <= 3600:
            raise ValueError("interval_s must be within [0.01, 3600]")
        if not 0 <= min_duration_s <= max_duration_s <= 86400:
            raise ValueError("need 0 <= min_duration_s <= max_duration_s <= 86400")
        if not 1 <= count <= 10000:
            raise ValueError("count must be within [1, 10000]")
        await self.stop_dispatcher()
        d = _Dispatcher(
            interval_s=interval_s,
            min_duration_s=min_duration_s,
            max_duration_s=max_duration_s,
            count=count,
            agent_name=agent_name,
            room_prefix=room_prefix,
        )
        self._dispatcher = d
        d.task = asyncio.create_task(self._run_dispatcher(d), name="loopback-dispatcher")
        self._record(
            "dispatcher_started", **{k: v for k, v in d.as_dict().items() if k != "job_ids"}
        )
        return d.as_dict()

    async def _run_dispatcher(self, d: _Dispatcher) -> None:
        for i in range(d.count):
            hold = round(random.uniform(d.min_duration_s, d.max_duration_s), 3)
            room = f"{d.room_prefix}-{len(self._room_sids) + 1}"
            job = self._create_job(room, json.dumps({"hold_seconds": hold}), d.agent_name)
            d.dispatched += 1
            d.job_ids.append(job.id)
            task = asyncio.create_task(self._place(job), name=f"place-{job.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if i + 1 < d.count:
                await asyncio.sleep(d.interval_s)  # the dispatch rate, not a readiness wait
        self._record("dispatcher_finished", dispatched=d.dispatched)

    async def stop_dispatcher(self) -> dict[str, Any] | None:
        d = self._dispatcher
        if d is None:
            return None
        if d.task is not None and not d.task.done():
            d.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await d.task
            self._record("dispatcher_stopped", dispatched=d.dispatched)
        return d.as_dict()

    @property
    def dispatcher(self) -> dict[str, Any] | None:
        return self._dispatcher.as_dict() if self._dispatcher else None

    # ---- HTTP handlers -------------------------------------------------------------------

    async def _http_root(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    def _reject(self, request: web.Request, status: int, reason: str) -> web.Response:
        self._record(
            "auth_rejected" if status == 401 else "connection_refused",
            remote=request.remote,
            status=status,
            reason=reason,
        )
        return web.Response(status=status, text=reason)

    async def _http_agent(self, request: web.Request) -> web.StreamResponse:
        if self._stopping:
            return self._reject(request, 503, "server stopping")
        if self._refusing:
            return self._reject(request, 503, "refusing connections")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._reject(request, 401, "missing bearer token")
        try:
            claims = self._verifier.verify(token.strip())
        except Exception as e:  # any verification failure is a 401
            return self._reject(request, 401, f"invalid token: {type(e).__name__}: {e}")
        if claims.video is None or claims.video.agent is not True:
            return self._reject(request, 401, "token lacks the video.agent grant")

        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        transport = request.transport
        try:
            first = await ws.receive(timeout=REGISTER_TIMEOUT_S)
        except TimeoutError:
            self._record("protocol_error", remote=request.remote, reason="no register message")
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"register expected")
            return ws
        reg = self._parse(first)
        if reg is None or reg.WhichOneof("message") != "register":
            self._record(
                "protocol_error", remote=request.remote, reason="first message not register"
            )
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"register expected")
            return ws

        order = next(self._worker_ids)
        conn = _Conn(
            worker_id=f"AW_{order}",
            agent_name=reg.register.agent_name,
            order=order,
            ws=ws,
            transport=transport,
        )
        reply = agent.ServerMessage(
            register=agent.RegisterWorkerResponse(
                worker_id=conn.worker_id,
                server_info=models.ServerInfo(
                    edition=models.ServerInfo.Edition.Standard,
                    version=SERVER_VERSION,
                    protocol=16,
                    agent_protocol=1,
                    region="loopback",
                    node_id="ND_loopback",
                ),
            )
        )
        if not await self._send(conn, reply):
            return ws
        self._conns[conn.worker_id] = conn
        self._record(
            "worker_registered",
            conn.worker_id,
            agent_name=conn.agent_name,
            version=reg.register.version,
            type=agent.JobType.Name(reg.register.type),
            namespace=reg.register.namespace,
            deployment=reg.register.deployment,
            remote=request.remote,
        )
        reason = "connection_lost"
        try:
            while True:
                msg = await ws.receive()
                if msg.type == WSMsgType.BINARY:
                    wm = self._parse(msg)
                    if wm is None:
                        self._record("protocol_error", conn.worker_id, reason="undecodable message")
                        continue
                    await self._handle(conn, wm)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING):
                    reason = "closed_by_worker"
                    break
                elif msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                else:
                    self._record("protocol_error", conn.worker_id, reason=f"{msg.type.name} frame")
        finally:
            self._conns.pop(conn.worker_id, None)
            for fut in conn.pending.values():
                if not fut.done():
                    fut.set_result(None)
            self._record(
                "worker_disconnected",
                conn.worker_id,
                reason=conn.close_reason or reason,
                close_code=None if ws.close_code is None else int(ws.close_code),
            )
        return ws

    @staticmethod
    def _parse(msg: Any) -> agent.WorkerMessage | None:
        if msg.type != WSMsgType.BINARY:
            return None
        wm = agent.WorkerMessage()
        try:
            wm.ParseFromString(msg.data)
        except DecodeError:
            return None
        return wm

    async def _handle(self, conn: _Conn, wm: agent.WorkerMessage) -> None:
        which = wm.WhichOneof("message")
        wid = conn.worker_id
        if which == "availability":
            a = wm.availability
            fut = conn.pending.get(a.job_id)
            late = fut is None or fut.done()
            self._record(
                "availability_answer",
                wid,
                job_id=a.job_id,
                available=a.available,
                terminate=a.terminate,
                participant_identity=a.participant_identity,
                late=late,
            )
            if not late:
                fut.set_result(a)  # type: ignore[union-attr]
        elif which == "update_worker":
            u = wm.update_worker
            status = agent.WorkerStatus.Name(u.status) if u.HasField("status") else conn.status
            changed = status != conn.status
            conn.status, conn.load, conn.job_count = status, round(u.load, 6), u.job_count
            self._record(
                "worker_status",
                wid,
                status=status,
                load=conn.load,
                job_count=u.job_count,
                draining=u.draining,
                changed=changed,
            )
        elif which == "update_job":
            u = wm.update_job
            status = JOB_STATUS.get(u.status, agent.JobStatus.Name(u.status))
            self._job_worker[u.job_id] = wid
            self._record("job_status", wid, job_id=u.job_id, status=status, error=u.error)
        elif which == "migrate_job":
            ids = list(wm.migrate_job.job_ids) + [j.id for j in wm.migrate_job.jobs]
            for job_id in dict.fromkeys(ids):
                prev = self._job_worker.get(job_id)
                self._job_worker[job_id] = wid
                self._record("job_migrated", wid, job_id=job_id, from_worker_id=prev)
        elif which == "ping":
            pong = agent.WorkerPong(
                last_timestamp=wm.ping.timestamp, timestamp=int(time.time() * 1000)
            )
            await self._send(conn, agent.ServerMessage(pong=pong))
        elif which == "simulate_job":
            logger.debug("ignoring simulate_job from %s", wid)
        else:
            self._record("protocol_error", wid, reason=f"unexpected {which} message")


# --------------------------------------------------------------------------------------------
# HTTP control API
# --------------------------------------------------------------------------------------------


def _control_routes(lk: LoopbackLiveKit) -> list[web.RouteDef]:
    """``/_loopback/`` routes (JSON in, JSON out):

    * ``POST /_loopback/dispatch`` ``{room, metadata?, agent_name?, room_metadata?}`` -> job
      (after it is assigned or unassigned)
    * ``POST /_loopback/terminate`` ``{job_id}`` -> ``{job_id, sent}`` (409 if its worker is gone)
    * ``GET /_loopback/workers[?connected=1&agent_name=X]`` (every worker ever registered unless
      filtered) / ``GET /_loopback/jobs`` -> lists;
      ``GET /_loopback/jobs/{job_id}`` -> one job
    * ``GET /_loopback/events?since=SEQ&kind=KIND`` -> list of events with ``seq > SEQ``
    * ``GET /_loopback/min_available?start_ts=&end_ts=&agent_name=`` -> ``{min_available}``
    * ``POST /_loopback/dispatcher`` ``{interval_s, min_duration_s, max_duration_s, count,
      agent_name?}``; ``GET`` / ``DELETE /_loopback/dispatcher``
    * ``POST /_loopback/drop`` -> ``{dropped: [worker ids]}``
    * ``POST /_loopback/refuse`` ``{duration_s?}``; ``DELETE /_loopback/refuse`` accepts again
    """

    async def body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body must be JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return data

    def str_field(data: dict[str, Any], name: str, default: str | None = None) -> str:
        value = data.get(name, default)
        if not isinstance(value, str):
            raise web.HTTPBadRequest(text=f"{name} must be a string")
        return value

    async def dispatch(request: web.Request) -> web.Response:
        data = await body(request)
        room = str_field(data, "room", "")
        if not room:
            raise web.HTTPBadRequest(text="room is required")
        job = await lk.dispatch(
            room,
            str_field(data, "metadata", ""),
            str_field(data, "agent_name", ""),
            room_metadata=str_field(data, "room_metadata", ""),
        )
        return web.json_response(job)

    async def terminate(request: web.Request) -> web.Response:
        job_id = str_field(await body(request), "job_id", "")
        if job_id not in lk._jobs:
            raise web.HTTPNotFound(text=f"unknown job {job_id!r}")
        sent = await lk.terminate(job_id)
        return web.json_response({"job_id": job_id, "sent": sent}, status=200 if sent else 409)

    async def workers(request: web.Request) -> web.Response:
        connected = request.query.get("connected")
        agent_name = request.query.get("agent_name")
        out = [
            w
            for w in lk._workers.values()
            if (connected is None or w["connected"] == (connected.lower() in ("1", "true", "yes")))
            and (agent_name is None or w["agent_name"] == agent_name)
        ]
        return web.json_response(out)

    async def jobs(request: web.Request) -> web.Response:
        return web.json_response(list(lk._jobs.values()))

    async def job(request: web.Request) -> web.Response:
        j = lk._jobs.get(request.match_info["job_id"])
        if j is None:
            raise web.HTTPNotFound(text="unknown job")
        return web.json_response(j)

    async def events(request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="since must be an integer") from None
        kind = request.query.get("kind")
        out = [e for e in lk._events[max(since, 0) :] if kind is None or e["kind"] == kind]
        return web.json_response(out)

    async def min_available(request: web.Request) -> web.Response:
        try:
            start = float(request.query["start_ts"])
            end = float(request.query.get("end_ts", time.time()))
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text="start_ts (and optional end_ts) are required") from None
        agent_name = request.query.get("agent_name")
        n = min_available_workers(lk._events, start, end, agent_name=agent_name, clock="ts")
        return web.json_response({"min_available": n, "start_ts": start, "end_ts": end})

    async def dispatcher_start(request: web.Request) -> web.Response:
        data = await body(request)
        try:
            state = await lk.start_dispatcher(
                interval_s=float(data["interval_s"]),
                min_duration_s=float(data["min_duration_s"]),
                max_duration_s=float(data["max_duration_s"]),
                count=int(data["count"]),
                agent_name=str_field(data, "agent_name", ""),
                room_prefix=str_field(data, "room_prefix", "loopback-room"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise web.HTTPBadRequest(text=f"bad dispatcher request: {e}") from None
        return web.json_response(state)

    async def dispatcher_get(request: web.Request) -> web.Response:
        return web.json_response(lk.dispatcher)

    async def dispatcher_stop(request: web.Request) -> web.Response:
        return web.json_response(await lk.stop_dispatcher())

    async def drop(request: web.Request) -> web.Response:
        return web.json_response({"dropped": await lk.drop_connections()})

    async def refuse(request: web.Request) -> web.Response:
        duration = (await body(request)).get("duration_s")
        if duration is not None and not isinstance(duration, int | float):
            raise web.HTTPBadRequest(text="duration_s must be a number or null")
        lk.refuse_connections(None if duration is None else float(duration))
        return web.json_response({"refusing": True, "duration_s": duration})

    async def accept(request: web.Request) -> web.Response:
        lk.accept_connections()
        return web.json_response({"refusing": False})

    return [
        web.post("/_loopback/dispatch", dispatch),
        web.post("/_loopback/terminate", terminate),
        web.get("/_loopback/workers", workers),
        web.get("/_loopback/jobs", jobs),
        web.get("/_loopback/jobs/{job_id}", job),
        web.get("/_loopback/events", events),
        web.get("/_loopback/min_available", min_available),
        web.post("/_loopback/dispatcher", dispatcher_start),
        web.get("/_loopback/dispatcher", dispatcher_get),
        web.delete("/_loopback/dispatcher", dispatcher_stop),
        web.post("/_loopback/drop", drop),
        web.post("/_loopback/refuse", refuse),
        web.delete("/_loopback/refuse", accept),
    ]
