"""Offline conversation tests of the bundled agent with a scripted LLM (no network, no room)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.testing import fake_job_context
from livekit.agents.utils import wait_for_participant
from prometheus_client import REGISTRY

from tests.scripted_llm import ScriptedLLM, ToolCall
from voice_worker.agent import VoiceAssistant, build_session, load_instructions
from voice_worker.config import load_settings
from voice_worker.jobs import JobRuntime


@pytest.fixture
def settings(worker_env: dict[str, str], tmp_path: Path):
    instructions = tmp_path / "instructions.txt"
    instructions.write_text("You are the front desk of the Harbor Hotel. Be brief.\n")
    (tmp_path / "state").mkdir()
    return load_settings({**worker_env, "AGENT_INSTRUCTIONS_FILE": str(instructions)})


def _tokens(direction: str) -> float:
    value = REGISTRY.get_sample_value(
        "voice_worker_llm_tokens_total", {"provider": "scripted", "direction": direction}
    )
    return value or 0.0


async def test_assistant_answers_with_the_configured_instructions(settings) -> None:
    model = ScriptedLLM(["Welcome to the Harbor Hotel, how can I help?"])
    async with AgentSession(llm=model) as session:
        await session.start(VoiceAssistant(load_instructions(settings)))
        result = await session.run(user_input="Hi, is anyone there?")

        result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()

    messages = [i for i in model.requests[0].items if i.type == "message"]
    assert messages[0].role == "system"
    assert "Harbor Hotel" in (messages[0].text_content or "")
    assert any(m.role == "user" and "anyone there" in (m.text_content or "") for m in messages)


async def test_built_in_instructions_are_used_without_a_file(worker_env) -> None:
    text = load_instructions(load_settings(worker_env))
    assert "voice assistant" in text


async def test_goodbye_ends_the_call_and_records_the_session(settings) -> None:
    model = ScriptedLLM([ToolCall("end_call"), "Goodbye, and thanks for calling."])
    input_before = _tokens("input")
    with fake_job_context(job_id="job-goodbye") as ctx:
        shutdown_reasons: list[str] = []
        ctx._on_shutdown = shutdown_reasons.append
        runtime = JobRuntime(ctx, settings, vad=None)
        async with AgentSession(llm=model) as session:
            runtime.watch(session)
            await session.start(VoiceAssistant(load_instructions(settings), runtime))
            result = await session.run(user_input="That's all, bye!")

            result.expect.next_event().is_function_call(name="end_call")
            result.expect.next_event().is_function_call_output()
            result.expect.next_event().is_message(role="assistant")
            result.expect.no_more_events()

        assert runtime.end_reason == "caller ended the call"
        assert shutdown_reasons == ["caller ended the call"]
        await runtime.save_record("job shutdown")

    # two LLM requests of 50 prompt tokens each reached the metrics and the session total
    assert runtime.usage.total.llm_input_tokens == 100
    assert _tokens("input") - input_before == 100
    assert runtime.usage.total.estimated_cost_usd > 0

    lines = (settings.state_dir / "sessions.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["job_id"] == "job-goodbye"
    assert record["turns"] == 1
    assert record["reason"] == "caller ended the call"
    assert record["usage"]["llm_input_tokens"] == 100
    assert record["duration_s"] >= 0


async def test_silent_caller_ends_the_session_after_the_idle_timeout(worker_env) -> None:
    # the real pipeline (providers pointed at a closed loopback port; none is called here)
    env = {
        **worker_env,
        "WORKER_IDLE_TIMEOUT": "10",
        "DEEPGRAM_BASE_URL": "http://127.0.0.1:9/v1/listen",
        "CARTESIA_BASE_URL": "http://127.0.0.1:9",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }
    settings = load_settings(env)
    with fake_job_context(job_id="job-idle") as ctx:
        reasons: list[str] = []
        ended = asyncio.Event()
        ctx._on_shutdown = lambda r: (reasons.append(r), ended.set())
        runtime = JobRuntime(ctx, settings, vad=None)
        session = build_session(settings, vad=None, llm_model=ScriptedLLM([]))
        runtime.watch(session)
        started = time.monotonic()
        await session.start(VoiceAssistant(load_instructions(settings), runtime))
        await asyncio.wait_for(ended.wait(), timeout=30)
        waited = time.monotonic() - started
        await session.aclose()
    assert reasons == ["caller idle for 10s"]
    assert 9.5 <= waited < 20


class _Room(rtc.EventEmitter):
    """The part of rtc.Room that JobRuntime's caller watch and wait_for_participant use."""

    def __init__(self) -> None:
        super().__init__()
        self.remote_participants: dict[str, SimpleNamespace] = {}
        self.connected = True

    def isconnected(self) -> bool:
        return self.connected

    def join(self, identity: str) -> None:
        p = SimpleNamespace(
            identity=identity,
            kind=rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
            state=rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE,
        )
        self.remote_participants[identity] = p
        self.emit("participant_connected", p)
        self.emit("participant_active", p)

    def leave(self, identity: str) -> None:
        self.emit("participant_disconnected", self.remote_participants.pop(identity))


class _Ctx:
    def __init__(self) -> None:
        self.room = _Room()
        self.reasons: list[str] = []
        self.ended = asyncio.Event()

    async def wait_for_participant(self) -> SimpleNamespace:
        return await wait_for_participant(self.room)  # type: ignore[arg-type]

    def shutdown(self, reason: str) -> None:
        self.reasons.append(reason)
        self.ended.set()


async def test_a_job_whose_caller_is_lost_ends_after_the_idle_timeout(settings) -> None:
    # What a crashed LiveKit node leaves: the SDK drops the caller without a hang-up, and
    # livekit-agents' session would wait for them for ever.
    ctx = _Ctx()
    runtime = JobRuntime(ctx, dataclasses.replace(settings, idle_timeout=0.5), vad=None)
    ctx.room.join("caller")
    await runtime.wait_for_caller(ctx)
    ctx.room.leave("caller")
    await asyncio.wait_for(ctx.ended.wait(), timeout=5)
    assert ctx.reasons == ["the caller was gone and nobody joined within 0.5s"]


async def test_a_caller_who_comes_back_keeps_the_job(settings) -> None:
    ctx = _Ctx()
    runtime = JobRuntime(ctx, dataclasses.replace(settings, idle_timeout=1.0), vad=None)
    ctx.room.join("caller")
    await runtime.wait_for_caller(ctx)
    for _ in range(3):
        ctx.room.leave("caller")
        await asyncio.sleep(0.3)  # inside the idle timeout: the caller reconnects
        ctx.room.join("caller")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ctx.ended.wait(), timeout=1.5)
    assert ctx.reasons == []


async def test_the_watch_never_reconnects_a_room_that_is_gone(settings) -> None:
    # At the end of a call the agent leaves first: the caller watch must not wait (or rejoin).
    ctx = _Ctx()
    runtime = JobRuntime(ctx, dataclasses.replace(settings, idle_timeout=0.5), vad=None)
    ctx.room.join("caller")
    await runtime.wait_for_caller(ctx)
    ctx.room.connected = False
    ctx.room.leave("caller")
    await asyncio.wait_for(runtime._watcher, timeout=2)
    assert ctx.reasons == []
