"""The real worker process against the loopback LiveKit server, with a stand-in notify socket.

Jobs run `voice_worker.synthetic:call` (the loopback server has no media/rtc), in real job
processes, through the real lifecycle, metrics, drain and exit paths.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import TEST_SECRETS
from tests.loopback_livekit.server import LoopbackLiveKit
from tests.worker_process import WorkerProcess, start_worker


@pytest.fixture
async def worker_factory(tmp_path: Path, lk: LoopbackLiveKit):
    started: list[WorkerProcess] = []

    async def make(**extra_env: str) -> WorkerProcess:
        w = await start_worker(tmp_path, lk.url, extra_env=extra_env)
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


async def _ready(lk: LoopbackLiveKit, w: WorkerProcess) -> str:
    """Wait for READY=1; returns the worker id LiveKit gave it."""
    await w.notify.wait_for("READY", "1", timeout=60)
    registered = lk.events_of("worker_registered")
    assert registered, "READY=1 arrived but the server never registered the worker"
    return registered[-1]["worker_id"]


async def test_ready_health_and_metrics_follow_registration_and_jobs(lk, worker_factory):
    lk.refuse_connections()
    w = await worker_factory()

    # Up but not registered: alive (inside the reconnect grace), not ready, no READY=1.
    code, body = await _poll_until(w, "/", lambda c, _: c in (200, 503))
    assert (code, body["connected"]) == (200, False)
    code, body = await w.get("/ready")
    assert (code, body["status"]) == (503, "not_registered")
    assert not w.notify.with_field("READY")

    lk.accept_connections()
    worker_id = await _ready(lk, w)
    ready = w.notify.with_field("READY", "1")[0]
    registered = lk.events_of("worker_registered")[-1]
    assert ready.t >= registered["t"], "READY=1 must come after registration"
    assert "Registered with LiveKit" in ready.fields["STATUS"]

    code, body = await w.get("/ready")
    assert (code, body["status"], body["worker_id"]) == (200, "ready", worker_id)
    assert await w.metric("voice_worker_connected") == 1
    assert await w.metric("voice_worker_max_jobs") == 2

    job = await lk.dispatch("room-a", metadata=json.dumps({"hold_seconds": 4}))
    assert job["status"] == "assigned" and job["worker_id"] == worker_id
    await lk.wait_for(lambda: lk.jobs[job["id"]]["status"] == "running", 30)

    code, body = await w.get("/")
    assert (code, body["active_jobs"]) == (200, 1)
    assert await w.metric("voice_worker_active_jobs") == 1
    assert await w.metric("voice_worker_jobs_started_total") == 1
    assert await w.metric("lk_agents_active_job_count") == 1  # stock metric, from the job process

    await lk.wait_for(lambda: lk.jobs[job["id"]]["status"] == "success", 30)
    await _poll_until(w, "/", lambda c, b: b["active_jobs"] == 0)
    assert await w.metric("voice_worker_jobs_finished_total", {"outcome": "success"}) == 1
    assert await w.metric("voice_worker_job_duration_seconds_count") == 1
    # usage recorded inside the job process reached the worker's /metrics
    stt = await w.metric("voice_worker_stt_audio_seconds_total", {"provider": "synthetic"})
    assert stt == pytest.approx(4, abs=0.5)
    assert await w.metric("voice_worker_estimated_cost_usd_total", {"provider": "synthetic"}) > 0

    # the job ran in a real job process: its log lines carry another pid, a child of the worker
    job_logs = [r for r in w.logs() if r.get("job_id") == job["id"]]
    assert any(r["message"] == "job started" for r in job_logs)
    job_pids = {r["process_id"] for r in job_logs if r["message"] == "job started"}
    assert w.pid not in job_pids
    record = json.loads((w.state_dir / "sessions.jsonl").read_text().splitlines()[-1])
    assert (record["job_id"], record["room"]) == (job["id"], "room-a")
    assert record["usage"]["stt_audio_seconds"] == pytest.approx(4, abs=0.5)


async def _poll_until(w: WorkerProcess, path: str, ok, timeout: float = 60.0):
    """Ask an endpoint until `ok(code, body)`; the worker binds its port shortly after start."""
    import asyncio

    import aiohttp

    async with asyncio.timeout(timeout):
        while True:
            try:
                code, body = await w.get(path)
                if ok(code, body):
                    return code, body
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)


async def test_sigterm_drains_the_running_call_then_exits_0(lk, worker_factory):
    w = await worker_factory()
    worker_id = await _ready(lk, w)
    job = await lk.dispatch("room-drain", metadata=json.dumps({"hold_seconds": 6}))
    await lk.wait_for(lambda: lk.jobs[job["id"]]["status"] == "running", 30)
    job_procs = [p for p in psutil.Process(w.pid).children(recursive=True)]
    assert job_procs, "job processes should exist"

    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    stopping = await w.notify.wait_for("STOPPING", "1", timeout=10)
    assert "Draining" in stopping.fields["STATUS"]
    full = await lk.wait_for_event("worker_status", worker_id=worker_id, status="WS_FULL")
    assert full["t"] - sent < 1.0, "the server must see the worker go full at once"

    code, body = await w.get("/ready")
    assert (code, body["status"], body["draining"]) == (503, "draining", True)
    assert await w.metric("voice_worker_draining") == 1

    # the server does not offer work to a full worker; offered anyway, the worker refuses it
    late = await lk.dispatch("room-late", metadata=json.dumps({"hold_seconds": 1}))
    assert (late["status"], late["unassigned_reason"]) == ("unassigned", "no_worker_available")
    offered = await lk.dispatch("room-late-2", json.dumps({"hold_seconds": 1}), offer_to_full=True)
    assert offered["status"] == "unassigned"
    assert offered["refused_by"] == [worker_id]

    rc = await w.wait_exit(timeout=60)
    ended = lk.jobs[job["id"]]
    assert ended["status"] == "success"
    assert rc == 0
    exit_after_job = time.monotonic() - ended_t(lk, job["id"])
    assert exit_after_job < 10, f"exited {exit_after_job:.1f}s after the last call ended"
    # job processes and the forkserver follow the worker out (the forkserver on EOF of its pipe)
    _, left = psutil.wait_procs(job_procs, timeout=5)
    assert not left, [(p.pid, p.cmdline()[:3]) for p in left]


def ended_t(lk: LoopbackLiveKit, job_id: str) -> float:
    ev = [e for e in lk.events_of("job_status") if e.get("job_id") == job_id]
    return ev[-1]["t"]


async def test_second_sigterm_forces_exit_1(lk, worker_factory):
    w = await worker_factory()
    await _ready(lk, w)
    job = await lk.dispatch("room-force", metadata=json.dumps({"hold_seconds": 60}))
    await lk.wait_for(lambda: lk.jobs[job["id"]]["status"] == "running", 30)
    w.signal(signal.SIGTERM)
    await w.notify.wait_for("STOPPING", "1", timeout=10)
    w.signal(signal.SIGTERM)
    assert await w.wait_exit(timeout=15) == 1


async def test_an_outage_heals_without_a_restart(lk, worker_factory):
    """Cut off from LiveKit past the grace: the worker stays up (watchdog pings go on, so systemd
    does not restart it into the outage and towards the start limit), says so on / , /ready and
    STATUS, keeps reconnecting, and registers again soon after LiveKit answers."""
    w = await worker_factory(WORKER_RECONNECT_GRACE="5")
    await _ready(lk, w)

    lk.refuse_connections()
    await lk.drop_connections()
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

    lk.accept_connections()
    back = time.monotonic()
    await _poll_until(w, "/ready", lambda c, _: c == 200, timeout=30)
    print(f"registered again {time.monotonic() - back:.1f} s after LiveKit answered")
    assert await w.metric("voice_worker_disconnects_total") == 1
    assert len(w.notify.with_field("READY", "1")) == 1, "the same process, not a restart"


async def test_watchdog_stops_while_the_event_loop_is_blocked(lk, tmp_path):
    from tests.worker_process import start_worker

    argv = [__import__("sys").executable, "-m", "tests.blocking_worker"]
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
    lk.refuse_connections()
    w = await worker_factory(LIVEKIT_MAX_RETRY="2")
    assert await w.wait_exit(timeout=60) == 69
    assert not w.notify.with_field("READY")
    assert any("could not stay connected" in r["message"] for r in w.logs())


async def test_no_process_holds_a_secret_in_its_environment(lk, worker_factory, tmp_path):
    """Secrets arrive as credentials (files), as under systemd: the worker, its forkserver, idle
    and running job processes never carry one in their environment (issue 12)."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name, value in TEST_SECRETS.items():
        (creds / name).write_text(value)
    w = await worker_factory(CREDENTIALS_DIRECTORY=str(creds), **dict.fromkeys(TEST_SECRETS, ""))
    await _ready(lk, w)
    job = await lk.dispatch("room-environ", metadata=json.dumps({"hold_seconds": 30}))
    await lk.wait_for(lambda: lk.jobs[job["id"]]["status"] == "running", 30)
    procs = [psutil.Process(w.pid), *psutil.Process(w.pid).children(recursive=True)]
    assert len(procs) >= 3, "the worker, its forkserver and a job process at least"
    for p in procs:
        environ = "\n".join(p.environ().values())  # /proc/PID/environ
        held = [name for name, value in TEST_SECRETS.items() if value in environ]
        assert not held, f"{p.pid} {' '.join(p.cmdline())[:80]} holds {held}"


async def test_logs_are_json_and_carry_no_secret(lk, worker_factory):
    w = await worker_factory(LOG_LEVEL="DEBUG")
    await _ready(lk, w)
    job = await lk.dispatch("room-logs", metadata=json.dumps({"hold_seconds": 1}))
    await lk.wait_for(lambda: lk.jobs[job["id"]]["status"] == "success", 30)
    w.signal(signal.SIGTERM)
    assert await w.wait_exit(timeout=60) == 0
    raw = w.log_path.read_text()
    for secret in TEST_SECRETS.values():
        assert secret not in raw
    records = w.logs()
    assert records and not [r for r in records if r.get("not_json")]
    job_lines = [r for r in records if r.get("job_id") == job["id"]]
    assert job_lines and all(r.get("room_name") == "room-logs" for r in job_lines)
    assert any(r.get("session_id") for r in job_lines)


def _oom_score_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


async def test_a_job_over_its_memory_limit_dies_alone(lk, worker_factory):
    """Issue 12: a call that eats memory is killed by livekit-agents' per-job limit (PSS); the
    worker, its forkserver and the other call go on; the kill is counted and logged with the room.
    Job processes carry the highest OOM score, the worker and the forkserver the inherited one."""
    w = await worker_factory(WORKER_JOB_MEMORY_LIMIT_MB="300")
    worker_id = await _ready(lk, w)
    calm = await lk.dispatch("room-calm", metadata=json.dumps({"hold_seconds": 20}))
    hog = await lk.dispatch(
        "room-hog", metadata=json.dumps({"hold_seconds": 120, "grow_mb_per_s": 40})
    )
    assert {calm["worker_id"], hog["worker_id"]} == {worker_id}
    await lk.wait_for(lambda: lk.jobs[hog["id"]]["status"] == "running", 30)
    worker = psutil.Process(w.pid)
    before = {p.pid: p for p in worker.children(recursive=True)}
    scores = {pid: _oom_score_adj(pid) for pid in before}
    jobs = {pid for pid, score in scores.items() if score == 1000}
    assert _oom_score_adj(w.pid) == 0
    assert len(jobs) >= 2 and len(scores) - len(jobs) >= 1, scores  # 2 jobs (+ idle), forkserver

    # 40 MB/s against 300 MB, sampled every 5 s: killed well before its 120 s
    await lk.wait_for(lambda: lk.jobs[hog["id"]]["status"] not in ("assigned", "running"), 60)
    assert lk.jobs[hog["id"]]["status"] == "failed"
    assert lk.jobs[calm["id"]]["status"] == "running"
    await lk.wait_for(lambda: lk.jobs[calm["id"]]["status"] == "success", 40)
    assert w.proc.poll() is None and worker.is_running()
    survivors = {p.pid for p in worker.children(recursive=True)}
    assert set(before) - jobs <= survivors, "the forkserver survived"
    assert await w.metric("voice_worker_jobs_memory_limited_total") == 1
    assert await w.metric("voice_worker_jobs_finished_total", {"outcome": "failed"}) == 1
    assert await w.metric("voice_worker_jobs_finished_total", {"outcome": "success"}) == 1
    ended = [r for r in w.logs() if r.get("reason") == "memory_limit"]
    assert [(r["job_id"], r["room_name"]) for r in ended] == [(hog["id"], "room-hog")]
    assert ended[0]["memory_usage_mb"] > 300
    code, body = await w.get("/ready")
    assert code == 200, body
