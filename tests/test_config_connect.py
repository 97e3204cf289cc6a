"""`check-config --connect`: the configuration proved against LiveKit before a serving worker is
stopped for it (the role's prove step). Against the real livekit-server on loopback
(lab/livekit_loopback.py): /agent answers 401 for a token it cannot verify, other paths 404, and
its log says which workers registered."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys

from tests.conftest import TEST_SECRETS, free_port

EX_UNAVAILABLE = 69


async def _check(env: dict[str, str], *flags: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voice_worker",
        "check-config",
        "--connect",
        *flags,
        env={"PATH": os.environ["PATH"], **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _assert_refused(rc: int, out: str, err: str, *words: str) -> None:
    assert rc == EX_UNAVAILABLE, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    for secret in TEST_SECRETS.values():
        assert secret not in out + err


async def test_a_working_configuration_registers_once_under_its_own_name(lk, worker_env) -> None:
    rc, out, err = await _check({**worker_env, "LIVEKIT_URL": lk.url}, "--bind-health")
    assert rc == 0, err
    result = json.loads(out)
    assert result["livekit"] == "registered"
    # it registered and left again: a registration that could receive calls must not linger
    await lk.wait_for_log("closing worker", workerID=result["check_worker_id"], timeout=10)
    registered = lk.said("worker registered")
    assert [r["workerID"] for r in registered] == [result["check_worker_id"]]
    assert registered[0]["agentName"] == "livekit-voice-worker-config-check"


async def test_a_wrong_url_path_is_refused(lk, worker_env) -> None:
    rc, out, err = await _check({**worker_env, "LIVEKIT_URL": lk.url + "/livekit"})
    _assert_refused(rc, out, err, "LIVEKIT_URL", "/livekit/agent", "404")
    assert not lk.said("worker registered")


async def test_a_wrong_secret_is_refused(lk, worker_env) -> None:
    env = {**worker_env, "LIVEKIT_URL": lk.url, "LIVEKIT_API_SECRET": "x" * 40}
    rc, out, err = await _check(env)
    _assert_refused(rc, out, err, "LIVEKIT_API_SECRET", "401")
    assert "x" * 40 not in out + err
    refused = await lk.wait_for_log("error handling request", path="/agent", timeout=10)
    assert refused["status"] == 401
    assert not lk.said("worker registered")


async def test_an_address_nothing_answers_on_is_refused(worker_env) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    rc, out, err = await _check({**worker_env, "LIVEKIT_URL": url})
    _assert_refused(rc, out, err, "LIVEKIT_URL", "unreachable")


async def test_a_health_port_taken_by_another_service_is_refused(lk, worker_env) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**worker_env, "LIVEKIT_URL": lk.url, "HEALTH_CHECK_PORT": str(port)}
        rc, out, err = await _check(env, "--bind-health")
    _assert_refused(rc, out, err, "HEALTH_CHECK_PORT", f"127.0.0.1:{port}", "in use")
    assert not lk.said("worker registered")


async def test_a_health_address_the_host_does_not_have_is_refused(lk, worker_env) -> None:
    env = {**worker_env, "LIVEKIT_URL": lk.url, "HEALTH_CHECK_HOST": "192.0.2.10"}
    rc, out, err = await _check(env, "--bind-health")
    _assert_refused(rc, out, err, "HEALTH_CHECK_HOST", "192.0.2.10", "not an address of this host")
    assert not lk.said("worker registered")
