"""The provider stand-ins (lab/providers) against the real livekit-agents 1.8.9 plugins.

Each stand-in is served on 127.0.0.1 and driven by the plugin the worker uses, exactly as the
worker configures it (base URL, API key): Deepgram STT streams espeak-ng speech and must hear the
words; Cartesia TTS must return speech that the lab's recognizer hears as the text; the OpenAI LLM
must answer by the lab's rules and call `end_call` for goodbye. A wrong key is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import wave
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from livekit import rtc
from livekit.agents import APIConnectOptions, APIStatusError, llm, stt
from livekit.plugins import cartesia, deepgram, openai

from lab.providers.cartesia import CartesiaStandIn
from lab.providers.deepgram import DeepgramStandIn
from lab.providers.openai import OpenAIStandIn
from lab.script import AGENT_PHRASES, CALLER_PHRASES, GOODBYE, QUESTIONS
from lab.speech import Recognizer, normalise, rms, synthesize
from tests.conftest import free_port

KEY = "lab-test-key-1234"
NO_RETRY = APIConnectOptions(max_retry=0, timeout=10)


@contextlib.asynccontextmanager
async def serve(service: object) -> AsyncIterator[str]:
    app = web.Application()
    service.routes(app)  # type: ignore[attr-defined]
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def frames(pcm: bytes, rate: int, ms: int = 20) -> list[rtc.AudioFrame]:
    n = rate * ms // 1000
    samples = np.frombuffer(pcm, dtype=np.int16)
    out = []
    for i in range(0, len(samples), n):
        chunk = samples[i : i + n]
        if len(chunk) < n:
            chunk = np.pad(chunk, (0, n - len(chunk)))
        out.append(rtc.AudioFrame(chunk.tobytes(), rate, 1, n))
    return out


async def test_deepgram_stand_in_hears_the_caller(http: aiohttp.ClientSession) -> None:
    line = QUESTIONS[0].line
    silence = b"\0" * 16000 * 2  # 1 s
    pcm = silence + synthesize(line, 16000) + silence
    async with serve(DeepgramStandIn(KEY, Recognizer(CALLER_PHRASES))) as base:
        plugin = deepgram.STT(
            api_key=KEY, base_url=f"{base}/v1/listen", http_session=http, language="en-US"
        )
        stream = plugin.stream(conn_options=NO_RETRY)
        for frame in frames(pcm, 16000):
            stream.push_frame(frame)
        stream.end_input()
        events = []
        async with asyncio.timeout(20):
            async for ev in stream:
                events.append(ev)
    kinds = [ev.type for ev in events]
    finals = [
        ev.alternatives[0].text for ev in events if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    ]
    assert stt.SpeechEventType.START_OF_SPEECH in kinds, kinds
    assert stt.SpeechEventType.END_OF_SPEECH in kinds, kinds
    assert [normalise(t) for t in finals] == [normalise(line)], finals


async def test_deepgram_stand_in_keeps_speech_it_could_not_recognize(
    http: aiohttp.ClientSession, tmp_path
) -> None:
    """A word outside the lab's phrases: no transcript, and the speech saved to listen to."""
    silence = b"\0" * 16000 * 2
    spoken = synthesize("banana", 16000)
    async with serve(DeepgramStandIn(KEY, Recognizer(CALLER_PHRASES), tmp_path)) as base:
        plugin = deepgram.STT(
            api_key=KEY, base_url=f"{base}/v1/listen", http_session=http, language="en-US"
        )
        stream = plugin.stream(conn_options=NO_RETRY)
        for frame in frames(silence + synthesize(QUESTIONS[0].line, 16000) + silence, 16000):
            stream.push_frame(frame)
        for frame in frames(spoken + silence, 16000):
            stream.push_frame(frame)
        stream.end_input()
        async with asyncio.timeout(20):
            finals = [
                normalise(ev.alternatives[0].text)
                async for ev in stream
                if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT
            ]
    # the plugin passes no empty final on: the agent hears nothing of the word
    assert finals == [normalise(QUESTIONS[0].line)]
    (kept,) = tmp_path.glob("*.wav")  # the recognized phrase is not kept
    with wave.open(str(kept)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    # the word, from its first loud frame on (the stand-in starts an utterance there)
    word = np.frombuffer(spoken, dtype=np.int16)
    assert 0.5 * len(word) < len(samples) < len(word) + 16000
    assert rms(samples) > 400


async def test_deepgram_stand_in_refuses_a_wrong_key(http: aiohttp.ClientSession) -> None:
    async with serve(DeepgramStandIn(KEY, Recognizer(CALLER_PHRASES))) as base:
        plugin = deepgram.STT(
            api_key="wrong", base_url=f"{base}/v1/listen", http_session=http, language="en-US"
        )
        stream = plugin.stream(conn_options=NO_RETRY)
        stream.end_input()
        with pytest.raises(APIStatusError) as err:
            async for _ in stream:
                pass
    assert err.value.status_code == 401


async def test_cartesia_stand_in_speaks_what_it_is_given(http: aiohttp.ClientSession) -> None:
    text = GOODBYE.answer
    async with serve(CartesiaStandIn(KEY)) as base:
        plugin = cartesia.TTS(api_key=KEY, base_url=base, http_session=http)
        stream = plugin.stream(conn_options=NO_RETRY)
        stream.push_text(text)
        stream.end_input()
        audio = []
        async with asyncio.timeout(20):
            async for ev in stream:
                audio.append(ev.frame)
        await plugin.aclose()
    assert audio, "no audio"
    rate = audio[0].sample_rate
    pcm = b"".join(bytes(f.data) for f in audio)
    assert len(pcm) / 2 / rate > 0.5  # seconds of speech
    resampler = rtc.AudioResampler(rate, 16000, num_channels=1)
    pcm16 = b"".join(
        bytes(f.data)
        for f in resampler.push(rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2)) + resampler.flush()
    )
    # followed by half a second of silence, as a listener hears it
    heard = Recognizer(AGENT_PHRASES).decode(pcm16 + b"\0" * 16000)
    assert normalise(heard) == normalise(text)


async def test_openai_stand_in_answers_by_the_rules_and_ends_the_call(
    http: aiohttp.ClientSession,
) -> None:
    @llm.function_tool
    async def end_call() -> str:
        """End the call."""
        return "ending"

    async with serve(OpenAIStandIn(KEY)) as base:
        plugin = openai.LLM(model="gpt-4o-mini", api_key=KEY, base_url=f"{base}/v1")

        async def ask(line: str) -> tuple[str, list[str]]:
            ctx = llm.ChatContext.empty()
            ctx.add_message(role="user", content=line)
            text, calls = "", []
            async with plugin.chat(chat_ctx=ctx, tools=[end_call], conn_options=NO_RETRY) as s:
                async for chunk in s:
                    if chunk.delta is not None:
                        text += chunk.delta.content or ""
                        calls += [c.name for c in chunk.delta.tool_calls or []]
            return text, calls

        answer, calls = await ask(QUESTIONS[1].line)
        goodbye_text, goodbye_calls = await ask(GOODBYE.line)
        await plugin.aclose()
    assert (normalise(answer), calls) == (normalise(QUESTIONS[1].answer), [])
    assert goodbye_calls == ["end_call"], (goodbye_text, goodbye_calls)


async def test_a_rotation_keeps_both_keys_live_and_no_other(http: aiohttp.ClientSession) -> None:
    # the stand-ins started with "KEY,NEXT": the workers move from one to the other (the
    # bluegreen scenario's rotation) while calls go on
    async with serve(OpenAIStandIn(f"{KEY},next-key")) as base:

        async def models(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            async with http.get(f"{base}/v1/models", headers=headers) as r:
                return r.status

        assert [await models(k) for k in (KEY, "next-key", "other-key")] == [200, 200, 401]
