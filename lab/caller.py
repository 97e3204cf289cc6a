"""A caller who speaks and listens, through the real LiveKit client (`livekit.rtc`).

`place_call()` mints a token, joins a fresh room (LiveKit dispatches an agent to it), waits for
the agent to join and publish its audio, then speaks its script line by line (espeak-ng audio
published as a microphone track, in real time, over a quiet noise floor like a real microphone),
listens to the agent's track, and records for every turn what it said, what it heard (pocketsphinx
over the lab's answers) and the voice-to-voice latency: from the end of its own speech leaving
the microphone to the first agent audio arriving. The last line is goodbye; the call then ends
when the agent leaves ("agent-goodbye"), or the caller hangs up after waiting for that
("caller-hangup"). The agent leaving, or the room closing, before that is a cut call ("cut").

A call is *kept* (the judge of every scenario) only if the agent joined, answered every turn
with the answer the rules give for the line, and the call ended by goodbye or by the caller
hanging up.

    python -m lab.caller --url wss://10.213.0.14 --questions 2   (scripts/lab call)

SIGTERM makes it hang up after the turn in progress; it still prints the record. `--wrap-up-file`:
once that file exists, the caller says goodbye after the turn in progress (a test keeps a call
going until an operation has reached it, then lets it end in its own time).

LIVEKIT_API_KEY and LIVEKIT_API_SECRET come from the environment; a private CA is trusted
through SSL_CERT_FILE (livekit.rtc reads it, like OpenSSL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from livekit import api, rtc

from . import outside_the_lab
from .script import AGENT_PHRASES, GOODBYE, Rule, script
from .speech import Recognizer, normalise, rms, synthesize

MIC_RATE = 48000
LISTEN_RATE = 16000
FRAME_MS = 50  # both ways: each frame costs an FFI round trip; latencies are to +-50 ms
# How far the microphone's audio is queued ahead of the wire. A real client's capture runs on the
# audio device's own thread; this one runs on the caller's event loop, and when a busy lab stalls
# that loop longer than the queue, the track sends silence inside the caller's words. At 100 ms,
# fleet runs on a loaded 2-core machine had a 110-190 ms gap of near-digital silence inside about
# one phrase in 300, and the Deepgram stand-in's grammar read some of them as another phrase
# ("thank you goodbye" -> "what time") or as nothing. 400 ms rides out such a stall; each line
# then starts up to 0.4 s later (voice-to-voice is measured from the line's last sample leaving
# the queue, so it does not change).
MIC_QUEUE_MS = 400
NOISE_FLOOR = 30.0  # s16 RMS of the microphone's noise (about -60 dBFS)
AGENT_SPEECH_RMS = 300.0  # a 10 ms frame of the agent's audio above this is speech
# agent silence that ends its answer: longer than a pause between its words, also when a busy
# machine delays some of its audio (at 0.8 s, answers on the loaded 2-core lab were cut short)
ANSWER_GAP_S = 1.2


@dataclass
class Turn:
    said: str
    expected: str
    at: float = 0.0  # epoch seconds when the caller finished saying it
    heard: str = ""
    latency_s: float | None = None  # end of caller speech -> first agent audio
    answer_s: float = 0.0  # how long the agent spoke

    @property
    def answered(self) -> bool:
        return normalise(self.heard) == normalise(self.expected)


@dataclass
class CallRecord:
    room: str
    placed_at: float
    agent: str = ""
    agent_join_s: float | None = None  # connect -> agent's audio track subscribed
    turns: list[Turn] = field(default_factory=list)
    ended: str = ""  # agent-goodbye | caller-hangup | cut | no-agent | error
    duration_s: float = 0.0
    error: str = ""

    @property
    def kept(self) -> bool:
        return (
            self.agent_join_s is not None
            and bool(self.turns)
            and all(t.answered for t in self.turns)
            and self.ended in ("agent-goodbye", "caller-hangup")
        )

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["kept"] = self.kept
        for t, td in zip(self.turns, d["turns"], strict=True):
            td["answered"] = t.answered
        return d


_recognizer: Recognizer | None = None


def recognizer() -> Recognizer:
    global _recognizer
    if _recognizer is None:
        _recognizer = Recognizer(AGENT_PHRASES, LISTEN_RATE)
    return _recognizer


class _Microphone:
    """A published audio track fed 10 ms at a time: the noise floor, or queued speech."""

    def __init__(self) -> None:
        self.source = rtc.AudioSource(MIC_RATE, 1, queue_size_ms=MIC_QUEUE_MS)
        self._speech: list[np.ndarray] = []
        self._done: asyncio.Future[float] | None = None
        # one second of the noise floor, played in a loop (a fresh random frame each time costs
        # more than the rest of the microphone)
        self._noise = np.random.default_rng().normal(0, NOISE_FLOOR, MIC_RATE)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="microphone")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def say(self, text: str) -> float:
        """Speak `text`; returns the monotonic time its last sample left the microphone."""
        loop = asyncio.get_running_loop()
        pcm = await loop.run_in_executor(None, synthesize, text, MIC_RATE)
        samples = np.frombuffer(pcm, dtype=np.int16)
        n = MIC_RATE * FRAME_MS // 1000
        self._speech = [samples[i : i + n] for i in range(0, len(samples), n)]
        self._done = loop.create_future()
        return await self._done

    async def _pump(self) -> None:
        n = MIC_RATE * FRAME_MS // 1000
        offset = 0
        while True:
            noise = self._noise[offset : offset + n].copy()
            offset = (offset + n) % (len(self._noise) - n)
            if self._speech:
                chunk = self._speech.pop(0).astype(np.float64)
                noise[: len(chunk)] += chunk
            data = np.clip(noise, -32768, 32767).astype(np.int16)
            await self.source.capture_frame(rtc.AudioFrame(data.tobytes(), MIC_RATE, 1, n))
            if not self._speech and self._done is not None and not self._done.done():
                self._done.set_result(time.monotonic() + self.source.queued_duration)


class _Ear:
    """The agent's audio track: when speech starts and stops, and the speech itself."""

    def __init__(self) -> None:
        self.speaking = False
        self.onset = asyncio.Event()  # set at the first speech frame after arm()
        self.onset_at = 0.0
        self.last_speech_at = 0.0
        self._pcm: list[bytes] = []
        self._armed_at = float("inf")
        self._task: asyncio.Task[None] | None = None

    def listen(self, track: rtc.Track) -> None:
        self._task = asyncio.create_task(self._run(track), name="ear")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def arm(self, after: float) -> None:
        """Expect an answer: collect agent speech that starts after `after` (monotonic)."""
        self._armed_at = after
        self._pcm = []
        self.onset.clear()
        self.onset_at = 0.0

    def answer(self) -> bytes:
        return b"".join(self._pcm)

    async def _run(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(
            track, sample_rate=LISTEN_RATE, num_channels=1, frame_size_ms=FRAME_MS
        )
        try:
            async for event in stream:
                now = time.monotonic()
                data = bytes(event.frame.data)
                speech = rms(data) >= AGENT_SPEECH_RMS
                if speech:
                    self.last_speech_at = now
                    if now >= self._armed_at and not self.onset.is_set():
                        self.onset_at = now
                        self.onset.set()
                if self.onset.is_set():
                    self._pcm.append(data)
        finally:
            await stream.aclose()


def token(key: str, secret: str, room: str, identity: str) -> str:
    return (
        api.AccessToken(key, secret)
        .with_identity(identity)
        .with_name("lab caller")
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


async def place_call(
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
    hang_up: bool = False,
    progress: Callable[[Turn], None] | None = None,
    stop: asyncio.Event | None = None,
    wrap_up: Callable[[], bool] | None = None,
) -> CallRecord:
    """One call. `hang_up`: after the script (which then should not end with goodbye), hang up.
    `progress` is called with each turn once its answer was heard (or not). `stop`: when set, the
    caller hangs up after the turn in progress. `wrap_up`: when it returns true before a turn, the
    caller skips the rest of the script to its goodbye (when the script ends with one)."""
    room_name = room_name or f"lab-call-{uuid.uuid4().hex[:8]}"
    record = CallRecord(room=room_name, placed_at=time.time())
    started = time.monotonic()
    room = rtc.Room()
    mic = _Microphone()
    ear = _Ear()
    agent_ready = asyncio.Event()
    agent_left = asyncio.Event()
    room_closed = asyncio.Event()

    def on_track(track: rtc.Track, _: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        agent = p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        if agent and track.kind == rtc.TrackKind.KIND_AUDIO and not agent_ready.is_set():
            record.agent = p.identity
            record.agent_join_s = round(time.monotonic() - started, 3)
            ear.listen(track)
            agent_ready.set()

    def on_left(p: rtc.RemoteParticipant) -> None:
        if p.identity == record.agent:
            agent_left.set()

    room.on("track_subscribed", on_track)
    room.on("participant_disconnected", on_left)
    room.on("disconnected", lambda *_: room_closed.set())

    async def until(event: asyncio.Event, seconds: float) -> bool:
        """Wait for `event`; False after `seconds` or when the call is cut first."""
        waits = {asyncio.ensure_future(event.wait())}
        cut = {asyncio.ensure_future(agent_left.wait()), asyncio.ensure_future(room_closed.wait())}
        done, pending = await asyncio.wait(
            waits | cut, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for f in pending:
            f.cancel()
        return event.is_set()

    try:
        await room.connect(url, token(key, secret, room_name, f"caller-{room_name}"))
        track = rtc.LocalAudioTrack.create_audio_track("microphone", mic.source)
        await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        mic.start()
        if not await until(agent_ready, agent_timeout):
            record.ended = "no-agent"
            return record
        loop = asyncio.get_running_loop()
        for rule in lines:
            if stop is not None and stop.is_set():
                hang_up = True
                break
            if wrap_up is not None and rule is not GOODBYE and lines[-1] is GOODBYE and wrap_up():
                rule = GOODBYE
            turn = Turn(said=rule.line, expected=rule.answer)
            record.turns.append(turn)
            await asyncio.sleep(pause_s)
            spoken_at = await mic.say(rule.line)
            turn.at = round(time.time() - (time.monotonic() - spoken_at), 3)
            ear.arm(spoken_at)
            if not await until(ear.onset, answer_timeout):
                record.ended = "cut" if (agent_left.is_set() or room_closed.is_set()) else ""
                if record.ended:
                    return record
                continue  # no answer: the turn stays unanswered, the caller goes on
            turn.latency_s = round(max(ear.onset_at - spoken_at, 0.0), 3)
            while time.monotonic() - ear.last_speech_at < ANSWER_GAP_S:
                if agent_left.is_set() or room_closed.is_set():
                    break
                await asyncio.sleep(0.05)
            pcm = ear.answer()
            turn.answer_s = round(len(pcm) / 2 / LISTEN_RATE, 2)
            turn.heard = await loop.run_in_executor(None, recognizer().decode, pcm)
            if progress is not None:
                progress(turn)
            if rule is not GOODBYE and (agent_left.is_set() or room_closed.is_set()):
                record.ended = "cut"
                return record
            if rule is GOODBYE:
                break
        if lines and lines[-1] is GOODBYE and not hang_up:
            left = await until(agent_left, leave_timeout)
            record.ended = "agent-goodbye" if left else "caller-hangup"
        else:
            record.ended = (
                "cut" if (agent_left.is_set() or room_closed.is_set()) else "caller-hangup"
            )
        return record
    except Exception as e:  # noqa: BLE001 (a call record says what went wrong)
        record.ended = "error"
        record.error = f"{type(e).__name__}: {e}"
        return record
    finally:
        record.duration_s = round(time.monotonic() - started, 3)
        await mic.stop()
        await ear.stop()
        await room.disconnect()


def describe(record: CallRecord) -> str:
    """The conversation and its timings, for a person to read."""
    lines = [
        f"room {record.room}: agent {record.agent or '-'} joined after "
        f"{record.agent_join_s if record.agent_join_s is not None else '-'} s"
    ]
    for i, t in enumerate(record.turns, 1):
        mark = "ok" if t.answered else "WRONG"
        latency = f"{t.latency_s:.2f} s" if t.latency_s is not None else "no answer"
        lines.append(f"  {i}. caller: {t.said}")
        lines.append(f"     agent:  {t.heard or '(nothing recognized)'}   [{latency}, {mark}]")
    verdict = "kept" if record.kept else "NOT kept"
    lines.append(
        f"ended: {record.ended}{' (' + record.error + ')' if record.error else ''}; "
        f"{record.duration_s:.1f} s; {verdict}"
    )
    return "\n".join(lines)


def main() -> int:
    outside_the_lab()
    parser = argparse.ArgumentParser(
        prog="python -m lab.caller", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", required=True, help="wss:// URL of the LiveKit server")
    parser.add_argument("--questions", type=int, default=2, help="questions before goodbye")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between turns")
    parser.add_argument(
        "--agent-timeout", type=float, default=20.0, help="seconds to wait for an agent"
    )
    parser.add_argument("--room", help="room name (default: a fresh one)")
    parser.add_argument("--progress", help="append each finished turn to this file (JSON lines)")
    parser.add_argument(
        "--wrap-up-file", help="once this file exists, say goodbye after the turn in progress"
    )
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    args = parser.parse_args()
    key, secret = os.environ.get("LIVEKIT_API_KEY"), os.environ.get("LIVEKIT_API_SECRET")
    if not key or not secret:
        print("lab.caller: LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set", file=sys.stderr)
        return 2

    def progress(turn: Turn) -> None:
        if args.progress:
            with open(args.progress, "a", encoding="utf-8") as f:
                f.write(json.dumps({**asdict(turn), "answered": turn.answered}) + "\n")

    lines = script(args.questions, random.Random())

    async def call() -> CallRecord:
        # SIGTERM: hang up after the turn in progress and still print the record
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        return await place_call(
            args.url,
            key,
            secret,
            lines,
            room_name=args.room,
            pause_s=args.pause,
            agent_timeout=args.agent_timeout,
            progress=progress,
            stop=stop,
            wrap_up=(lambda: os.path.exists(args.wrap_up_file)) if args.wrap_up_file else None,
        )

    record = asyncio.run(call())
    print(json.dumps(record.as_dict()) if args.json else describe(record))
    return 0 if record.kept else 1


if __name__ == "__main__":
    sys.exit(main())
