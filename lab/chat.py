"""A caller who types: the same conversation as `lab.caller`, as chat through the room.

`place_text_call()` joins a fresh room (LiveKit dispatches an agent to it) without publishing
audio, waits until the agent has published its audio track (its session has started and takes
input), then sends each line of its script as a text stream on `lk.chat` (the
agent's text input, livekit-agents' RoomIO) and reads the agent's answer from its transcription
stream (`lk.transcription`, published as the agent speaks). The record is a `CallRecord`, judged
the same way: kept only if the agent joined, every answer was the rule's, and the call ended by
goodbye or by the caller hanging up. A turn's `latency_s` is from the line sent to the agent's
answer starting (for text, not voice-to-voice: reports keep the two apart).

It costs the machine far less than an audio call (no microphone, no speech recognition on
either side), so a load test can keep many of them going beside the audio calls. The agent still
speaks its answers (its TTS and audio track run as in any call). The caller does subscribe to the
agent's track, though nobody listens to it: measured on livekit-server 1.13.5, a participant
that subscribes to nothing never receives the agent's text streams.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from livekit import rtc

from .caller import CallRecord, Turn, token
from .script import GOODBYE, Rule
from .speech import normalise

CHAT_TOPIC = "lk.chat"
TRANSCRIPTION_TOPIC = "lk.transcription"


async def place_text_call(
    url: str,
    key: str,
    secret: str,
    lines: list[Rule],
    *,
    room_name: str | None = None,
    agent_timeout: float = 20.0,
    answer_timeout: float = 15.0,
    pause_s: float = 0.5,
    leave_timeout: float = 15.0,
    wrap_up: Callable[[], bool] | None = None,
) -> CallRecord:
    """One text call; the arguments mean what they mean for `lab.caller.place_call`."""
    room_name = room_name or f"lab-chat-{uuid.uuid4().hex[:8]}"
    record = CallRecord(room=room_name, placed_at=time.time())
    started = time.monotonic()
    room = rtc.Room()
    agent_ready = asyncio.Event()
    agent_left = asyncio.Event()
    room_closed = asyncio.Event()
    answers: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
    readers: set[asyncio.Task[None]] = set()

    def on_published(pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        agent = p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        if agent and pub.kind == rtc.TrackKind.KIND_AUDIO and not agent_ready.is_set():
            record.agent = p.identity
            record.agent_join_s = round(time.monotonic() - started, 3)
            agent_ready.set()

    def on_left(p: rtc.RemoteParticipant) -> None:
        if p.identity == record.agent:
            agent_left.set()

    def on_text(reader: rtc.TextStreamReader, identity: str) -> None:
        opened = time.monotonic()

        async def read() -> None:
            text = await reader.read_all()
            if identity == record.agent:
                await answers.put((opened, text))

        task = asyncio.create_task(read())
        readers.add(task)
        task.add_done_callback(readers.discard)

    room.on("track_published", on_published)
    room.on("participant_disconnected", on_left)
    room.on("disconnected", lambda *_: room_closed.set())
    room.register_text_stream_handler(TRANSCRIPTION_TOPIC, on_text)

    async def until(aw: asyncio.Future[object] | asyncio.Task[object], seconds: float) -> bool:
        cut = {asyncio.ensure_future(agent_left.wait()), asyncio.ensure_future(room_closed.wait())}
        done, pending = await asyncio.wait(
            {aw} | cut, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for f in pending - {aw}:
            f.cancel()
        if aw not in done:
            aw.cancel()
        return aw in done

    try:
        await room.connect(
            url,
            token(key, secret, room_name, f"chat-{room_name}"),
        )
        for p in room.remote_participants.values():
            for pub in p.track_publications.values():
                on_published(pub, p)
        if not await until(asyncio.ensure_future(agent_ready.wait()), agent_timeout):
            record.ended = "no-agent"
            return record
        for rule in lines:
            if wrap_up is not None and rule is not GOODBYE and lines[-1] is GOODBYE and wrap_up():
                rule = GOODBYE
            turn = Turn(said=rule.line, expected=rule.answer)
            record.turns.append(turn)
            await asyncio.sleep(pause_s)
            while not answers.empty():  # an answer that came after its turn gave up
                answers.get_nowait()
            sent = time.monotonic()
            await room.local_participant.send_text(rule.line, topic=CHAT_TOPIC)
            turn.at = round(time.time(), 3)
            got = asyncio.ensure_future(answers.get())
            if await until(got, answer_timeout):
                opened, text = got.result()
                turn.latency_s = round(max(opened - sent, 0.0), 3)
                turn.heard = normalise(text)
            elif agent_left.is_set() or room_closed.is_set():
                record.ended = "cut"
                return record
            if rule is not GOODBYE and (agent_left.is_set() or room_closed.is_set()):
                record.ended = "cut"
                return record
            if rule is GOODBYE:
                break
        if lines and lines[-1] is GOODBYE:
            left = await until(asyncio.ensure_future(agent_left.wait()), leave_timeout)
            record.ended = "agent-goodbye" if left else "caller-hangup"
        else:
            cut = agent_left.is_set() or room_closed.is_set()
            record.ended = "cut" if cut else "caller-hangup"
        return record
    except Exception as e:  # noqa: BLE001 (a call record says what went wrong)
        record.ended = "error"
        record.error = f"{type(e).__name__}: {e}"
        return record
    finally:
        record.duration_s = round(time.monotonic() - started, 3)
        for task in readers:
            task.cancel()
        await room.disconnect()
