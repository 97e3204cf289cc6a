"""The real worker process against the real livekit-server on loopback (lab/livekit_loopback.py),
with a stand-in notify socket for systemd.

Jobs run `voice_worker.synthetic:call` in real job processes, through the real lifecycle, metrics,
drain and exit paths. A room is created through the server's API with its agent dispatch; the
server assigns the job ("assigned job to worker" in its log) and the worker runs it. With
`"join": true` the call joins its room, and the server lists the agent among the room's
participants for as long as the call lasts. What is asserted is what an operator can see: the
worker's notify messages, its /, /ready and /metrics, its JSON logs and sessions.jsonl, and what
livekit-server says (its log, its room API).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import pytest
from livekit.protocol.models import ParticipantInfo

from lab.livekit_loopback import LiveKitServer
from lab.loopback import TEST_SECRETS
from lab.worker_process import WorkerProcess, start_worker

READY_TIMEOUT = 90  # a busy 2-core machine: 5-30 s from start to registered


@pytest.fixture
async def worker_factory(tmp_path: Path, lk: LiveKitServer):
    started: list[WorkerProcess] = []

    async def make(**extra_env: str) -> WorkerProcess:
        w = await start_worker(tmp_path, lk.url, extra_env=extra_env)
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


async def _ready(lk: LiveKitServer, w: WorkerProcess) -> str:
    """Wait for READY=1; returns the worker id livekit-server gave it. The id is the server's:
    READY's STATUS can only name it once the registration went through."""
    ready = await w.notify.wait_for("READY", "1", timeout=READY_TIMEOUT)
    named = re.search(r"Registered with LiveKit as (\S+);", ready.fields["STATUS"])
    assert named, ready.fields
    worker_id = named.group(1)
    await lk.wait_for_log("worker registered", workerID=worker_id, agentName="", timeout=10)
    return worker_id


async def _poll_until(w: WorkerProcess, path: str, ok, timeout: float = 60.0):  # noqa: ASYNC109
    """Ask an endpoint until `ok(code, body)`; the worker binds its port shortly after start."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                code, body = await w.get(path)
                if ok(code, body):
                    return code, body
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)


async def _agent_in_room(lk: LiveKitServer, room: str, job_id: str) -> ParticipantInfo:
    """Wait until the server lists the job's agent as an active participant of `room`."""
    async with asyncio.timeout(60):
        while True:
            for p in await lk.participants(room):
                if p.identity == f"agent-{job_id}" and p.state == ParticipantInfo.State.ACTIVE:
                    return p
            await asyncio.sleep(0.2)


async def _room_empty(lk: LiveKitServer, room: str) -> None:
    async with asyncio.timeout(10):
        while True:
            if not await lk.participants(room):
                return
            await asyncio.sleep(0.2)


async def test_ready_health_and_metrics_follow_registration_and_jobs(lk, worker_factory):
    await lk.stop(signal.SIGKILL)  # LiveKit not there yet: nothing answers on its port
    w = await worker_factory()

    # Up but not registered: alive (inside the reconnect grace), not ready, no READY=1.
    code, body = await _poll_until(w, "/", lambda c, _: c in (200, 503))
    assert (code, body["connected"]) == (200, False)
    code, body = await w.get("/ready")
    assert (code, body["status"]) == (503, "not_registered")
    assert not w.notify.with_field("READY")

    await lk.start()
    worker_id = await _ready(lk, w)
    ready = w.notify.with_field("READY", "1")[0]
    assert f"Registered with LiveKit as {worker_id}" in ready.fields["STATUS"]

    code, body = await w.get("/ready")
    assert (code, body["status"], body["worker_id"]) == (200, "ready", worker_id)
    assert await w.metric("voice_worker_connected") == 1
    assert await w.metric("voice_worker_max_jobs") == 2

    job_id = await lk.dispatch("room-a", {"hold_seconds": 4, "join": True})
    assert lk.said("assigned job to worker", jobID=job_id)[0]["workerID"] == worker_id
    agent = await _agent_in_room(lk, "room-a", job_id)  # the call is on: its agent is in the room
    assert agent.kind == ParticipantInfo.Kind.AGENT

    code, body = await w.get("/")
    assert (code, body["active_jobs"]) == (200, 1)
    assert await w.metric("voice_worker_active_jobs") == 1
    assert await w.metric("voice_worker_jobs_started_total") == 1
    assert await w.metric("lk_agents_active_job_count") == 1  # stock metric, from the job process

    ended = await w.wait_for_log("job ended", job_id=job_id, timeout=30)
    assert (ended["outcome"], ended["room_name"]) == ("success", "room-a")
    await _room_empty(lk, "room-a")  # the agent left its room when the call ended
    await _poll_until(w, "/", lambda c, b: b["active_jobs"] == 0)
    assert await w.metric("voice_worker_jobs_finished_total", {"outcome": "success"}) == 1
    assert await w.metric("voice_worker_job_duration_seconds_count") == 1
    # usage recorded inside the job process reached the worker's /metrics
    stt = await w.metric("voice_worker_stt_audio_seconds_total", {"provider": "synthetic"})
    assert stt == pytest.approx(4, abs=0.5)
    assert await w.metric("voice_worker_estimated_cost_usd_total", {"provider": "synthetic"}) > 0

    # the job ran in a real job process: its log lines carry another pid, a child of the worker
    job_logs = [r for r in w.logs() if r.get("job_id") == job_id]
    assert any(r["message"] == "job started" for r in job_logs)
    job_pids = {r["process_id"] for r in job_logs if r["message"] == "job started"}
    assert w.pid not in job_pids
    record = json.loads((w.state_dir / "sessions.jsonl").read_text().splitlines()[-1])
    assert (record["job_id"], record["room"], record["worker_id"]) == (job_id, "room-a", worker_id)
    assert record["usage"]["stt_audio_seconds"] == pytest.approx(4, abs=0.5)


async def test_a_full_worker_takes_the_next_call_as_soon_as_its_call_ended(lk, worker_factory):
    """Capacity 1. While its call runs, LiveKit knows the worker is full; the moment the call
    ended, LiveKit places the next one with it. livekit-agents alone says so on its next 2.5 s
    status tick, and LiveKit neither queues nor retries a dispatch: a call in that window got no
    agent."""
    w = await worker_factory(WORKER_MAX_JOBS="1")
    await _ready(lk, w)
    first = await lk.dispatch("room-a", {"hold_seconds": 5})
    # the worker's 2.5 s status tick has told LiveKit it is full by the time the call ends
    await w.wait_for_log("worker is at full capacity, marking as unavailable", timeout=10)
    await w.wait_for_log("job ended", job_id=first, timeout=30)
    await _poll_until(w, "/", lambda c, b: b["active_jobs"] == 0)

    mark = len(lk.logs())
    await lk.create_room("room-b", {"hold_seconds": 1})
    decisions = ("assigned job to worker", "failed to send job request")
    async with asyncio.timeout(30):
        while True:
            decided = [r for r in lk.logs()[mark:] if r.get("msg") in decisions]
            if decided:
                break
            await asyncio.sleep(0.1)
    assert (decided[0]["msg"], decided[0].get("room")) == ("assigned job to worker", "room-b")


async def test_sigterm_drains_the_running_call_then_exits_0(lk, worker_factory):
    w = await worker_factory()
    worker_id = await _ready(lk, w)
    job_id = await lk.dispatch("room-drain", {"hold_seconds": 6, "join": True})
    await _agent_in_room(lk, "room-drain", job_id)
    job_procs = [p for p in psutil.Process(w.pid).children(recursive=True)]
    assert job_procs, "job processes should exist"

    sent = time.time()
    w.signal(signal.SIGTERM)
    stopping = await w.notify.wait_for("STOPPING", "1", timeout=10)
    assert "Draining" in stopping.fields["STATUS"]
    full = await lk.wait_for_log("worker status changed", workerID=worker_id, status="WS_FULL")
    assert full["ts"] - sent < 1.0, "the server must see the worker go full at once"

    code, body = await w.get("/ready")
    assert (code, body["status"], body["draining"]) == (503, "draining", True)
    assert await w.metric("voice_worker_draining") == 1

    # A room created while the only worker drains gets no agent: the server finds no worker to
    # send the job to (were its offer to cross the worker's WS_FULL, the worker would refuse it
    # and the server would say the same), while the call in progress goes on in its room.
    seen = len(lk.logs())
    await lk.create_room("room-late", {"hold_seconds": 1, "join": True})
    unsent = await lk.wait_for_log("failed to send job request", after=seen, agentName="")
    # which of the two depends on when the WS_FULL reached the server's dispatcher
    why = ("no servers available", "no workers with sufficient capacity")
    assert unsent["error"].startswith(why), unsent
    assert not lk.said("assigned job to worker", room="room-late")
    assert not w.said("received job request", room_name="room-late")
    assert await lk.participants("room-late") == []
    assert [p.identity for p in await lk.participants("room-drain")] == [f"agent-{job_id}"]

    rc = await w.wait_exit(timeout=60)
    exited = time.time()
    assert rc == 0
    ended = w.said("job ended", job_id=job_id)
    assert [r["outcome"] for r in ended] == ["success"]
    record = json.loads((w.state_dir / "sessions.jsonl").read_text().splitlines()[-1])
    assert record["job_id"] == job_id and record["duration_s"] >= 6
    exit_after_job = exited - record["ended_at"]
    assert exit_after_job < 10, f"exited {exit_after_job:.1f}s after the last call ended"
    # the server saw the worker go away only after the call (its connection closed at exit)
    closed = await lk.wait_for_log("closing worker", workerID=worker_id, timeout=10)
    assert closed["ts"] >= record["ended_at"]
    # job processes and the forkserver follow the worker out (the forkserver on EOF of its pipe)
    _, left = psutil.wait_procs(job_procs, timeout=5)
    assert not left, [(p.pid, p.cmdline()[:3]) for p in left]


async def test_second_sigterm_forces_exit_1(lk, worker_factory):
    w = await worker_factory()
    await _ready(lk, w)
    job_id = await lk.dispatch("room-force", {"hold_seconds": 60, "join": True})
    await _agent_in_room(lk, "room-force", job_id)
    w.signal(signal.SIGTERM)
    await w.notify.wait_for("STOPPING", "1", timeout=10)
    w.signal(signal.SIGTERM)
    assert await w.wait_exit(timeout=15) == 1


async def test_an_outage_heals_without_a_restart(lk, worker_factory):
    """Cut off from LiveKit past the grace: the worker stays up (watchdog pings go on, so systemd
    does not restart it into the outage and towards the start limit), says so on / , /ready and
    STATUS, keeps reconnecting, and registers again soon after LiveKit answers."""
    w = await worker_factory(WORKER_RECONNECT_GRACE="5")
    first_id = await _ready(lk, w)

    await lk.stop(signal.SIGKILL)  # livekit-server dies: its connections drop, nothing answers
    lost = time.monotonic()
    await _poll_until(w, "/", lambda c, _: c == 503, timeout=30)
    assert time.monotonic() - lost >= 2.5, "liveness must hold through the grace window"
    code, body = await w.get("/ready")
    assert (code, body["connected"]) == (503, False)
    status = await w.notify.wait_for("STATUS", after=lost + 3, timeout=10)
    assert status.fields["STATUS"].startswith("Disconnected from LiveKit for"), status.fields

    # 20 s of outage (five failed attempts): pings every interval (0.5 s) all along, no exit
    outage_end = lost + 20
    while time.monotonic() < outage_end:
        await w.notify.wait_for("WATCHDOG", "1", after=time.monotonic(), timeout=1.5)
    assert w.proc.poll() is None, "the worker must not exit while LiveKit is away"
    assert sum("failed to connect to livekit" in r["message"] for r in w.logs()) >= 3

    seen = len(lk.logs())
    await lk.start()  # the same port, keys and config
    back = time.monotonic()
    code, body = await _poll_until(w, "/ready", lambda c, _: c == 200, timeout=30)
    print(f"registered again {time.monotonic() - back:.1f} s after LiveKit answered")
    again = await lk.wait_for_log("worker registered", after=seen, agentName="", timeout=10)
    assert body["worker_id"] == again["workerID"] != first_id
    assert await w.metric("voice_worker_disconnects_total") == 1
    assert len(w.notify.with_field("READY", "1")) == 1, "the same process, not a restart"


async def test_watchdog_stops_while_the_event_loop_is_blocked(lk, tmp_path):
    argv = [sys.executable, "-m", "tests.blocking_worker"]
    w = await start_worker(tmp_path, lk.url, argv=argv)
    try:
        await _ready(lk, w)
        await w.notify.wait_for("WATCHDOG", "1", after=time.monotonic(), timeout=5)
        w.signal(signal.SIGUSR2)  # the harness blocks the worker's loop for 3 s
        blocked = await w.notify.wait_for("STATUS", "blocking event loop for 3s", timeout=5)
        resumed = await w.notify.wait_for("WATCHDOG", "1", after=blocked.t, timeout=10)
        assert resumed.t - blocked.t >= 2.9, "no watchdog ping may arrive while the loop blocks"
    finally:
        w.stop()


async def test_gives_up_reconnecting_with_a_nonzero_exit(lk, worker_factory):
    await lk.stop(signal.SIGKILL)  # and it stays stopped: nothing answers on LIVEKIT_URL
    w = await worker_factory(LIVEKIT_MAX_RETRY="2")
    assert await w.wait_exit(timeout=60) == 69
    assert not w.notify.with_field("READY")
    assert sum("failed to connect to livekit" in r["message"] for r in w.logs()) >= 2
    assert any("could not stay connected" in r["message"] for r in w.logs())


async def test_no_process_holds_a_secret_in_its_environment(lk, worker_factory, tmp_path):
    """Secrets arrive as credentials (files), as under systemd: the worker, its forkserver, idle
    and running job processes never carry one in their environment (issue 12)."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name, value in TEST_SECRETS.items():
        (creds / name).write_text(value)
    w = await worker_factory(CREDENTIALS_DIRECTORY=str(creds), **dict.fromkeys(TEST_SECRETS, ""))
    await _ready(lk, w)  # registered: the key and secret from the credentials worked
    job_id = await lk.dispatch("room-environ", {"hold_seconds": 30, "join": True})
    await _agent_in_room(lk, "room-environ", job_id)  # the job process joined with its token
    procs = [psutil.Process(w.pid), *psutil.Process(w.pid).children(recursive=True)]
    assert len(procs) >= 3, "the worker, its forkserver and a job process at least"
    for p in procs:
        environ = "\n".join(p.environ().values())  # /proc/PID/environ
        held = [name for name, value in TEST_SECRETS.items() if value in environ]
        assert not held, f"{p.pid} {' '.join(p.cmdline())[:80]} holds {held}"


async def test_logs_are_json_and_carry_no_secret(lk, worker_factory):
    w = await worker_factory(LOG_LEVEL="DEBUG")
    await _ready(lk, w)
    job_id = await lk.dispatch("room-logs", {"hold_seconds": 1, "join": True})
    await w.wait_for_log("job ended", job_id=job_id, outcome="success", timeout=60)
    w.signal(signal.SIGTERM)
    assert await w.wait_exit(timeout=60) == 0
    raw = w.log_path.read_text()
    for secret in TEST_SECRETS.values():
        assert secret not in raw
    records = w.logs()
    assert records and not [r for r in records if r.get("not_json")]
    job_lines = [r for r in records if r.get("job_id") == job_id]
    assert job_lines and all(r.get("room_name") == "room-logs" for r in job_lines)
    assert any(r.get("session_id") for r in job_lines)


def _oom_score_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


async def test_a_job_over_its_memory_limit_dies_alone(lk, worker_factory):
    """Issue 12: a call that eats memory is killed by livekit-agents' per-job limit (PSS); the
    worker, its forkserver and the other call go on; the kill is counted and logged with the room.
    Job processes carry the highest OOM score, the worker and the forkserver the inherited one.
    The calls stay out of their rooms: the server then records each job's end as the worker
    reports it (a call that leaves its room is ended by the server itself)."""
    w = await worker_factory(WORKER_JOB_MEMORY_LIMIT_MB="300")
    worker_id = await _ready(lk, w)
    calm = await lk.dispatch("room-calm", {"hold_seconds": 30})
    await w.wait_for_log("job started", job_id=calm, timeout=30)
    hog = await lk.dispatch("room-hog", {"hold_seconds": 120, "grow_mb_per_s": 40})
    await w.wait_for_log("job started", job_id=hog, timeout=30)
    assert {r["workerID"] for r in lk.said("assigned job to worker")} == {worker_id}
    worker = psutil.Process(w.pid)
    before = {p.pid: p for p in worker.children(recursive=True)}
    scores = {pid: _oom_score_adj(pid) for pid in before}
    jobs = {pid for pid, score in scores.items() if score == 1000}
    assert _oom_score_adj(w.pid) == 0
    assert len(jobs) >= 2 and len(scores) - len(jobs) >= 1, scores  # 2 jobs (+ idle), forkserver

    # 40 MB/s against 300 MB, sampled every 5 s: killed well before its 120 s
    hog_end = await lk.wait_for_log("job ended", jobID=hog, timeout=60)
    assert hog_end["status"] == "JS_FAILED"
    assert not lk.said("job ended", jobID=calm), "the other call goes on"
    calm_end = await lk.wait_for_log("job ended", jobID=calm, timeout=40)
    assert calm_end["status"] == "JS_SUCCESS"
    assert len(lk.said("assigned job to worker", room="room-hog")) == 1, "not dispatched again"
    assert w.proc.poll() is None and worker.is_running()
    survivors = {p.pid for p in worker.children(recursive=True)}
    assert set(before) - jobs <= survivors, "the forkserver survived"
    await _poll_until(w, "/", lambda c, b: b["active_jobs"] == 0)
    assert await w.metric("voice_worker_jobs_memory_limited_total") == 1
    assert await w.metric("voice_worker_jobs_finished_total", {"outcome": "failed"}) == 1
    assert await w.metric("voice_worker_jobs_finished_total", {"outcome": "success"}) == 1
    ended = [r for r in w.logs() if r.get("reason") == "memory_limit"]
    assert [(r["job_id"], r["room_name"]) for r in ended] == [(hog, "room-hog")]
    assert ended[0]["memory_usage_mb"] > 300
    code, body = await w.get("/ready")
    assert code == 200, body
