"""Tests of the loopback LiveKit server (tests/loopback_livekit) with a minimal protocol client,
its HTTP control API and CLI, and one real ``livekit.agents.AgentServer`` run against it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `tests` is a namespace package; make it importable by that name
    sys.path.insert(0, str(REPO))
loopback = importlib.import_module("tests.loopback_livekit")
LoopbackLiveKit = loopback.LoopbackLiveKit

API_KEY = "APIloopbacktest"
API_SECRET = "loopback-test-secret-0123456789abcdef0123"


def worker_jwt(
    key: str = API_KEY, secret: str = API_SECRET, identity: str = "", **grants: Any
) -> str:
    grants.setdefault("agent", True)
    token = api.AccessToken(key, secret).with_grants(api.VideoGrants(**grants))
    return (token.with_identity(identity) if identity else token).to_jwt()


ROOM_JOIN_ONLY = worker_jwt(identity="u", agent=None, room_join=True, room="r")


class ProtoWorker:
    """A minimal agent-worker client: aiohttp websocket + livekit.protocol.agent protobuf."""

    def __init__(
        self,
        lk: Any,
        session: aiohttp.ClientSession,
        *,
        agent_name: str = "",
        auto_accept: bool = False,
    ) -> None:
        self.lk = lk
        self.session = session
        self.agent_name = agent_name
        self.auto_accept = auto_accept
        self.worker_id = ""
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.inbox: asyncio.Queue[agent.ServerMessage | None] = asyncio.Queue()
        self.assignments: list[agent.JobAssignment] = []
        self.closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, token: str | None = None) -> agent.RegisterWorkerResponse:
        self.ws = await self.session.ws_connect(
            f"{self.lk.url}/agent", headers={"Authorization": f"Bearer {token or worker_jwt()}"}
        )
        reg = agent.RegisterWorkerRequest(
            type=agent.JobType.JT_ROOM, agent_name=self.agent_name, version="proto-test"
        )
        await self.send(agent.WorkerMessage(register=reg))
        async with asyncio.timeout(5):
            first = agent.ServerMessage.FromString(await self.ws.receive_bytes())
        assert first.WhichOneof("message") == "register"
        self.worker_id = first.register.worker_id
        self._reader = asyncio.create_task(self._read())
        return first.register

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                sm = agent.ServerMessage.FromString(msg.data)
                which = sm.WhichOneof("message")
                if which == "assignment":
                    self.assignments.append(sm.assignment)
                if self.auto_accept and which in ("availability", "assignment"):
                    if which == "availability":
                        await self.answer(sm.availability.job.id, True)
                    continue  # auto mode: only the other messages reach the inbox
                await self.inbox.put(sm)
        finally:
            self.closed.set()
            await self.inbox.put(None)

    async def send(self, msg: agent.WorkerMessage) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(msg.SerializeToString())

    async def recv(self, timeout: float = 5.0) -> agent.ServerMessage:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            msg = await self.inbox.get()
        assert msg is not None, "connection closed"
        return msg

    async def report(self, status: str = "WS_AVAILABLE", load: float = 0.0, jobs: int = 0) -> None:
        """Send UpdateWorkerStatus and wait until the server has recorded it."""
        seq = self.lk.last_seq
        upd = agent.UpdateWorkerStatus(
            status=agent.WorkerStatus.Value(status), load=load, job_count=jobs
        )
        await self.send(agent.WorkerMessage(update_worker=upd))
        await self.lk.wait_for_event("worker_status", after_seq=seq, worker_id=self.worker_id)

    async def answer(self, job_id: str, available: bool, identity: str = "") -> None:
        resp = agent.AvailabilityResponse(
            job_id=job_id, available=available, participant_identity=identity
        )
        await self.send(agent.WorkerMessage(availability=resp))

    async def job_status(self, job_id: str, status: str, error: str = "") -> None:
        upd = agent.UpdateJobStatus(
            job_id=job_id, status=agent.JobStatus.Value(status), error=error
        )
        await self.send(agent.WorkerMessage(update_job=upd))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@pytest.fixture
async def lk() -> AsyncIterator[Any]:
    server = LoopbackLiveKit(API_KEY, API_SECRET, availability_timeout_s=1.0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def connect(lk: Any, session: aiohttp.ClientSession) -> AsyncIterator[Any]:
    workers: list[ProtoWorker] = []

    async def _connect(agent_name: str = "", auto_accept: bool = False) -> ProtoWorker:
        w = ProtoWorker(lk, session, agent_name=agent_name, auto_accept=auto_accept)
        await w.connect()
        workers.append(w)
        return w

    yield _connect
    for w in workers:
        await w.close()


# ---- authentication and registration --------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": f"Bearer {worker_jwt(secret='not-the-secret-' * 3)}"}, "invalid token"),
        ({"Authorization": f"Bearer {worker_jwt(key='APIother')}"}, "invalid token"),
        (
            {"Authorization": f"Bearer {ROOM_JOIN_ONLY}"},
            "video.agent",
        ),
    ],
    ids=["no-header", "wrong-secret", "wrong-key", "no-agent-grant"],
)
async def test_agent_ws_rejects_bad_tokens_with_401(
    lk: Any, session: aiohttp.ClientSession, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await session.ws_connect(f"{lk.url}/agent", headers=headers)
    assert err.value.status == 401
    (ev,) = lk.events_of("auth_rejected")
    assert reason in ev["reason"]
    assert lk.workers == {}


async def test_register_reply_and_ping(lk: Any, connect: Any) -> None:
    w = await connect(agent_name="agent-a")
    assert w.worker_id.startswith("AW_")
    view = lk.workers[w.worker_id]
    assert view["agent_name"] == "agent-a"
    assert view["connected"] and view["status"] == "WS_AVAILABLE" and not view["draining"]
    assert view["version"] == "proto-test"

    await w.send(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1234)))
    pong = await w.recv()
    assert pong.WhichOneof("message") == "pong"
    assert pong.pong.last_timestamp == 1234

    await w.report("WS_FULL", load=0.9, jobs=3)
    view = lk.workers[w.worker_id]
    assert (view["status"], view["load"], view["job_count"], view["draining"]) == (
        "WS_FULL",
        0.9,
        3,
        True,
    )


async def test_register_must_come_first(lk: Any, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(
        f"{lk.url}/agent", headers={"Authorization": f"Bearer {worker_jwt()}"}
    )
    upd = agent.UpdateWorkerStatus(status=agent.WorkerStatus.WS_AVAILABLE)
    await ws.send_bytes(agent.WorkerMessage(update_worker=upd).SerializeToString())
    async with asyncio.timeout(5):
        msg = await ws.receive()
    assert msg.type == aiohttp.WSMsgType.CLOSE
    await ws.close()
    assert lk.events_of("protocol_error")
    assert lk.workers == {}


# ---- dispatch ---------------------------------------------------------------------------------


async def test_dispatch_offers_then_assigns_with_room_token(lk: Any, connect: Any) -> None:
    w = await connect(agent_name="agent-a")
    task = asyncio.create_task(
        lk.dispatch("room-1", metadata='{"hold_seconds": 1}', agent_name="agent-a")
    )
    offer = await w.recv()
    assert offer.WhichOneof("message") == "availability"
    job = offer.availability.job
    assert job.id.startswith("AJ_") and job.type == agent.JobType.JT_ROOM
    assert job.room.name == "room-1" and job.room.sid.startswith("RM_")
    assert job.metadata == '{"hold_seconds": 1}' and job.agent_name == "agent-a"
    assert lk.jobs[job.id]["status"] == "offered"

    await w.answer(job.id, True, identity="bot-1")
    assigned = await w.recv()
    assert assigned.WhichOneof("message") == "assignment"
    assert assigned.assignment.job.id == job.id
    claims = api.TokenVerifier(API_KEY, API_SECRET).verify(assigned.assignment.token)
    assert claims.identity == "bot-1" and claims.kind == "agent"
    assert claims.video.room == "room-1" and claims.video.room_join and claims.video.agent

    view = await task
    assert view["status"] == "assigned" and view["worker_id"] == w.worker_id
    assert view["participant_identity"] == "bot-1"
    assert view["refused_by"] == [] and not view["assigned_while_worker_full"]
    kinds = [e["kind"] for e in lk.events if e.get("job_id") == job.id]
    assert kinds == ["job_created", "availability_sent", "availability_answer", "assignment_sent"]


async def test_default_identity_and_no_worker(lk: Any, connect: Any) -> None:
    assert (await lk.dispatch("room-x", agent_name="nobody"))["unassigned_reason"] == (
        "no_worker_available"
    )
    w = await connect()
    task = asyncio.create_task(lk.dispatch("room-2"))
    await w.answer((await w.recv()).availability.job.id, True)  # no participant_identity
    token = (await w.recv()).assignment.token
    view = await task
    assert view["status"] == "assigned"
    claims = api.TokenVerifier(API_KEY, API_SECRET).verify(token)
    assert claims.identity == f"agent-{view['id']}"


async def test_refusal_moves_to_next_worker_lowest_load_first(lk: Any, connect: Any) -> None:
    busy = await connect(agent_name="a")
    idle = await connect(agent_name="a")
    other = await connect(agent_name="b")
    await busy.report(load=0.5)
    await idle.report(load=0.1)

    task = asyncio.create_task(lk.dispatch("room-r", agent_name="a"))
    first = await idle.recv()  # lowest load is asked first
    await idle.answer(first.availability.job.id, False)
    second = await busy.recv()
    assert second.availability.job.id == first.availability.job.id
    await busy.answer(second.availability.job.id, True)
    assert (await busy.recv()).WhichOneof("message") == "assignment"
    view = await task
    assert view["worker_id"] == busy.worker_id
    assert view["refused_by"] == [idle.worker_id]
    assert view["offered_to"] == [idle.worker_id, busy.worker_id]
    assert other.inbox.empty()  # another agent name is never asked

    task = asyncio.create_task(lk.dispatch("room-s", agent_name="a"))
    for w in (idle, busy):
        offer = await w.recv()
        await w.answer(offer.availability.job.id, False)
    view = await task
    assert view["status"] == "unassigned" and view["unassigned_reason"] == "no_worker_accepted"
    assert view["refused_by"] == [idle.worker_id, busy.worker_id]


async def test_unanswered_offer_moves_on_after_timeout(lk: Any, connect: Any) -> None:
    silent = await connect()
    polite = await connect(auto_accept=True)
    await polite.report(load=0.2)  # the silent one has lower load and is asked first
    view = await lk.dispatch("room-t")  # availability_timeout_s=1.0 in the fixture
    assert view["no_answer_from"] == [silent.worker_id]
    assert view["worker_id"] == polite.worker_id
    (ev,) = lk.events_of("availability_timeout")
    assert ev["reason"] == "no_answer"
    # a late answer is recorded but changes nothing
    await silent.answer(view["id"], True)
    late = await lk.wait_for_event("availability_answer", worker_id=silent.worker_id)
    assert late["late"] is True
    assert lk.jobs[view["id"]]["worker_id"] == polite.worker_id


async def test_full_workers_are_not_offered_jobs(lk: Any, connect: Any) -> None:
    full = await connect(auto_accept=True)
    free = await connect(auto_accept=True)
    await full.report("WS_FULL", load=0.0)
    await free.report("WS_AVAILABLE", load=0.6)
    view = await lk.dispatch("room-f")
    assert view["worker_id"] == free.worker_id and view["offered_to"] == [free.worker_id]

    await free.report("WS_FULL", load=0.9)
    view = await lk.dispatch("room-g")
    assert view["status"] == "unassigned" and view["offered_to"] == []
    assert not any(e["worker_id"] == full.worker_id for e in lk.events_of("availability_sent"))

    await full.report("WS_AVAILABLE", load=0.0)  # back from full: offered again
    assert (await lk.dispatch("room-h"))["worker_id"] == full.worker_id


async def test_assignment_while_worker_reports_full_is_flagged(lk: Any, connect: Any) -> None:
    w = await connect()
    task = asyncio.create_task(lk.dispatch("room-race"))
    offer = await w.recv()
    await w.report("WS_FULL")  # e.g. a drain started between the offer and the answer
    await w.answer(offer.availability.job.id, True)
    view = await task
    assert view["status"] == "assigned" and view["assigned_while_worker_full"] is True


async def test_terminate_with_refusal_ends_dispatch(lk: Any, connect: Any) -> None:
    a = await connect()
    b = await connect(auto_accept=True)
    await b.report(load=0.5)
    task = asyncio.create_task(lk.dispatch("room-term"))
    offer = await a.recv()
    resp = agent.AvailabilityResponse(
        job_id=offer.availability.job.id, available=False, terminate=True
    )
    await a.send(agent.WorkerMessage(availability=resp))
    view = await task
    assert view["status"] == "unassigned" and view["unassigned_reason"] == "terminated_by_worker"
    assert b.assignments == []


# ---- job status, termination, reconnects ------------------------------------------------------


async def test_job_status_and_termination_are_recorded(lk: Any, connect: Any) -> None:
    w = await connect(auto_accept=True)
    ok = await lk.dispatch("room-ok")
    bad = await lk.dispatch("room-bad")
    await w.job_status(ok["id"], "JS_RUNNING")
    await lk.wait_for(lambda: lk.jobs[ok["id"]]["status"] == "running")
    await w.job_status(ok["id"], "JS_SUCCESS")
    await w.job_status(bad["id"], "JS_FAILED", error="boom")
    await lk.wait_for(lambda: lk.jobs[bad["id"]]["status"] == "failed")
    jobs = lk.jobs
    assert jobs[ok["id"]]["status"] == "success" and jobs[ok["id"]]["ended_ts"] is not None
    assert jobs[bad["id"]]["error"] == "boom"
    statuses = [(e["job_id"], e["status"]) for e in lk.events_of("job_status")]
    assert statuses == [(ok["id"], "running"), (ok["id"], "success"), (bad["id"], "failed")]

    assert await lk.terminate(ok["id"]) is True
    msg = await w.recv()
    assert msg.WhichOneof("message") == "termination" and msg.termination.job_id == ok["id"]
    assert lk.jobs[ok["id"]]["termination_sent"]
    assert await lk.terminate("AJ_does_not_exist") is False


async def test_drop_refuse_reconnect_and_migrate(
    lk: Any, connect: Any, session: aiohttp.ClientSession
) -> None:
    old = await connect(auto_accept=True)
    job = await lk.dispatch("room-m")
    t0 = time.monotonic()  # the event clock `t`
    assert lk.min_available_workers(t0) == 1

    lk.refuse_connections()
    dropped = await lk.drop_connections()
    assert dropped == [old.worker_id]
    async with asyncio.timeout(5):
        await old.closed.wait()
    (ev,) = lk.events_of("worker_disconnected")
    assert ev["reason"] == "dropped_by_server"

    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await ProtoWorker(lk, session).connect()
    assert err.value.status == 503
    assert lk.events_of("connection_refused")

    lk.accept_connections()
    new = await connect()
    assert new.worker_id != old.worker_id  # a new registration gets a new worker id
    await new.send(agent.WorkerMessage(migrate_job=agent.MigrateJobRequest(job_ids=[job["id"]])))
    await lk.wait_for(lambda: lk.jobs[job["id"]]["worker_id"] == new.worker_id)
    assert lk.jobs[job["id"]]["migrated_from"] == [old.worker_id]
    (mig,) = lk.events_of("job_migrated")
    assert mig["from_worker_id"] == old.worker_id

    assert lk.min_available_workers(t0) == 0  # the window covers the outage
    assert lk.min_available_workers(time.monotonic()) == 1


async def test_refuse_for_a_duration_lifts_by_itself(lk: Any, connect: Any) -> None:
    lk.refuse_connections(0.2)
    assert lk.refusing
    await lk.wait_for_event("accepting_connections", timeout=5)
    assert (await connect()).worker_id


def test_min_available_workers_from_events() -> None:
    def ev(t: float, kind: str, wid: str, **kw: Any) -> dict[str, Any]:
        return {"t": t, "ts": 1000 + t, "kind": kind, "worker_id": wid, **kw}

    status = {"load": 0.0, "job_count": 0}
    events = [
        ev(1, "worker_registered", "AW_1", agent_name="x"),
        ev(2, "worker_registered", "AW_2", agent_name="x"),
        ev(3, "worker_registered", "AW_3", agent_name="y"),
        ev(10, "worker_status", "AW_1", status="WS_FULL", **status),  # drain starts
        ev(12, "worker_disconnected", "AW_1"),
        ev(13, "worker_registered", "AW_4", agent_name="x"),
        ev(20, "worker_status", "AW_2", status="WS_FULL", **status),
        ev(21, "worker_disconnected", "AW_2"),
        ev(30, "worker_registered", "AW_5", agent_name="x"),
    ]
    mwa = loopback.min_available_workers
    assert mwa(events, 0, 5, agent_name="x") == 0  # nothing registered when the window opened
    assert mwa(events, 5, 9, agent_name="x") == 2
    assert mwa(events, 5, 15, agent_name="x") == 1
    assert mwa(events, 5, 25, agent_name="x") == 1
    assert mwa(events, 5, 25) == 2  # every agent name
    assert mwa(events, 22, 29, agent_name="x") == 1
    assert mwa(events, 31, 40, agent_name="x") == 2
    assert mwa(events, 1005, 1015, agent_name="x", clock="ts") == 1
    workers, _ = loopback.derive_views(events)
    assert [w["id"] for w in workers.values() if w["connected"]] == ["AW_3", "AW_4", "AW_5"]


# ---- HTTP control API and CLI -----------------------------------------------------------------


async def test_http_control_api(lk: Any, connect: Any, session: aiohttp.ClientSession) -> None:
    w = await connect(agent_name="http", auto_accept=True)
    base = f"{lk.http_url}/_loopback"

    async with session.post(
        f"{base}/dispatch", json={"room": "r-http", "metadata": "m", "agent_name": "http"}
    ) as r:
        assert r.status == 200
        job = await r.json()
    assert job["status"] == "assigned" and job["worker_id"] == w.worker_id

    async with session.post(f"{base}/dispatch", json={"metadata": "no room"}) as r:
        assert r.status == 400

    async with session.get(f"{base}/workers", params={"connected": "1", "agent_name": "http"}) as r:
        assert [x["id"] for x in await r.json()] == [w.worker_id]
    async with session.get(f"{base}/workers", params={"connected": "0"}) as r:
        assert await r.json() == []
    async with session.get(f"{base}/jobs/{job['id']}") as r:
        assert (await r.json())["room"] == "r-http"

    async with session.post(f"{base}/terminate", json={"job_id": job["id"]}) as r:
        assert r.status == 200 and (await r.json())["sent"] is True
    assert (await w.recv()).termination.job_id == job["id"]
    async with session.post(f"{base}/terminate", json={"job_id": "AJ_nope"}) as r:
        assert r.status == 404

    spec = {
        "interval_s": 0.05,
        "min_duration_s": 1,
        "max_duration_s": 2,
        "count": 3,
        "agent_name": "http",
    }
    async with session.post(f"{base}/dispatcher", json=spec) as r:
        assert r.status == 200 and (await r.json())["count"] == 3
    await lk.wait_for_event("dispatcher_finished")
    ids = lk.dispatcher["job_ids"]
    await lk.wait_for(lambda: all(lk.jobs[i]["status"] == "assigned" for i in ids))
    for i in ids:
        hold = json.loads(lk.jobs[i]["metadata"])["hold_seconds"]
        assert 1 <= hold <= 2
    async with session.post(f"{base}/dispatcher", json={"interval_s": 0}) as r:
        assert r.status == 400

    spec.update(count=1000, interval_s=60)
    async with session.post(f"{base}/dispatcher", json=spec) as r:
        assert (await r.json())["running"] is True
    async with session.delete(f"{base}/dispatcher") as r:
        state = await r.json()
    assert state["running"] is False and state["dispatched"] == 1

    async with session.get(f"{base}/jobs") as r:
        assert len(await r.json()) == 5
    async with session.get(f"{base}/events", params={"since": 3, "kind": "assignment_sent"}) as r:
        events = await r.json()
    assert len(events) == 5 and all(e["seq"] > 3 for e in events)
    async with session.get(f"{base}/min_available", params={"start_ts": 0}) as r:
        assert (await r.json())["min_available"] == 0  # no worker when the server started

    async with session.post(f"{base}/refuse", json={"duration_s": None}) as r:
        assert (await r.json())["refusing"] is True
    async with session.post(f"{base}/drop") as r:
        assert (await r.json())["dropped"] == [w.worker_id]
    async with session.delete(f"{base}/refuse") as r:
        assert (await r.json())["refusing"] is False
    async with session.get(lk.http_url) as r:
        assert r.status == 200 and await r.text() == "OK"


async def test_cli_runs_logs_and_exits_cleanly_on_sigterm(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    events_file = tmp_path / "events.jsonl"
    env = {**os.environ, "LOOPBACK_API_KEY": API_KEY, "LOOPBACK_API_SECRET": API_SECRET}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.loopback_livekit",
        "--port",
        "0",
        "--events-file",
        str(events_file),
        cwd=REPO,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while b"listening on" not in (line := await proc.stderr.readline()):
                assert line, "CLI exited before listening"
        url = line.decode().rsplit("listening on ", 1)[1].strip()
        assert url.startswith("ws://127.0.0.1:")
        http = url.replace("ws://", "http://")
        async with session.get(f"{http}/_loopback/workers") as r:
            assert await r.json() == []
        token = worker_jwt()
        ws = await session.ws_connect(f"{url}/agent", headers={"Authorization": f"Bearer {token}"})
        reg = agent.RegisterWorkerRequest(type=agent.JobType.JT_ROOM)
        await ws.send_bytes(agent.WorkerMessage(register=reg).SerializeToString())
        assert agent.ServerMessage.FromString(await ws.receive_bytes()).register.worker_id
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
        await ws.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    kinds = [e["kind"] for e in loopback.read_events_file(events_file)]
    assert kinds[0] == "server_started" and kinds[-1] == "server_stopped"
    assert "worker_registered" in kinds and "worker_disconnected" in kinds

    # a restart on the same events file continues the numbering (jobs migrate by id)
    async with LoopbackLiveKit(API_KEY, API_SECRET, events_file=events_file) as lk2:
        w = ProtoWorker(lk2, session, auto_accept=True)
        await w.connect()
        assert w.worker_id == "AW_2"
        assert (await lk2.dispatch("after-restart"))["id"] == "AJ_1"  # no job before
        await w.close()


# ---- a real livekit-agents worker -----------------------------------------------------------


async def test_real_agent_server_runs_a_job_to_success(
    lk: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from livekit.agents import AgentServer

    agent_entry = importlib.import_module("tests.loopback_livekit.agent_entry")

    # AgentServer.run() writes LIVEKIT_* into os.environ: let monkeypatch restore them
    for name, value in {
        "LIVEKIT_URL": lk.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LIVEKIT_AGENT_NAME_OVERRIDE", raising=False)
    env_before = set(os.environ)  # run() may also add SSL_CERT_FILE: removed again below

    server = AgentServer(
        ws_url=lk.url,
        api_key=API_KEY,
        api_secret=API_SECRET,
        num_idle_processes=1,
        load_fnc=lambda *_: 0.0,
        host="127.0.0.1",
        port=0,
        drain_timeout=5,
        max_retry=2,
    )
    server.rtc_session(agent_entry.hold_then_shutdown, agent_name="loopback-real")
    run = asyncio.create_task(server.run())
    try:
        await lk.wait_for(lambda: lk.connected_workers("loopback-real") or run.done(), timeout=60)
        assert not run.done(), run.exception()
        (worker,) = lk.connected_workers("loopback-real")
        assert worker["version"]  # the SDK reports its version

        job = await lk.dispatch(
            "room-real", metadata=json.dumps({"hold_seconds": 0.3}), agent_name="loopback-real"
        )
        assert job["status"] == "assigned", job
        done = await lk.wait_for(
            lambda: lk.jobs[job["id"]]["status"] in ("success", "failed") and lk.jobs[job["id"]],
            timeout=60,
        )
        assert done["status"] == "success", done
        statuses = [e["status"] for e in lk.events_of("job_status") if e["job_id"] == job["id"]]
        assert statuses[0] == "running" and statuses[-1] == "success"
        assert lk.events_of("worker_status")  # the SDK reports its status periodically
    finally:
        await server.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run, 30)
        for name in set(os.environ) - env_before:
            del os.environ[name]
    await lk.wait_for(lambda: not lk.connected_workers(), timeout=10)
    (gone,) = lk.events_of("worker_disconnected")
    assert gone["reason"] == "closed_by_worker"
