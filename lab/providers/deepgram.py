"""Deepgram streaming speech-to-text stand-in (`/v1/listen` websocket) with a real recognizer.

Speaks the protocol as livekit-plugins-deepgram 1.8.9 uses it: `Authorization: Token KEY`, query
`encoding=linear16&sample_rate=N&channels=1&interim_results=..&vad_events=..&endpointing=MS..`,
binary PCM frames in, `{"type": "KeepAlive"}`, `{"type": "Finalize"}` (finalise the utterance
now, `from_finalize: true`) and `{"type": "CloseStream"}` (finalise, send `Metadata`, close).
Out: `SpeechStarted` when speech begins (vad_events), interim `Results` (is_final false) while it
goes on (interim_results), a final `Results` with `speech_final: true` after `endpointing` ms of
silence, and `UtteranceEnd` when `utterance_end_ms` is set. Pings are answered (aiohttp).

Speech is found by energy (the lab's audio is synthetic: speech far above a quiet floor) and
recognized by pocketsphinx against the lab's caller phrases (lab/script.py, lab/speech.py).

Not covered: models and languages (accepted, ignored; always English), other encodings than
linear16 and more than one channel (refused with 400 like Deepgram), diarization, keyterms,
smart_format/punctuation (transcripts are lower-case words), words outside the lab's phrases, the
REST (pre-recorded) API, billing metadata. An `endpointing` below 800 ms is raised to 800 ms:
Deepgram finds words in a fragment ("goodbye" after a pause in "thank you goodbye"), the grammar of
this recognizer only whole phrases, so a fragment would come back empty and the agent would answer
the half it got. An energy detector also cuts at stop consonants and at audio the network lost
(measured: a 360 ms gap inside a phrase on a busy lab). 800 ms is above the agent's own VAD
silence (Silero, 550 ms), so the stand-in never cuts a phrase the agent still counts as one. The
agent (1.8.9, turn detection vad) sent no `Finalize` at its end of speech in a fleet run (every
utterance ended by this endpoint), so it waits for this final: +0.15 s voice-to-voice at the
median in the lab (0.70 -> 0.86 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSMsgType, web

from ..speech import Recognizer, Stream, rms
from . import api_keys

logger = logging.getLogger("lab.deepgram")

MIN_ENDPOINTING_MS = 800  # above the agent's VAD silence (550 ms); what it costs: the docstring
SPEECH_RMS = 400.0  # s16 RMS of a 10 ms frame above which it counts as speech
MIN_SPEECH_MS = 120  # shorter bursts are noise, not speech
INTERIM_EVERY_S = 0.5


@dataclass
class _Utterance:
    stream: Stream
    start_s: float  # audio time of its first sample
    speech_ms: float = 0.0
    last_speech_s: float = 0.0
    started_event_sent: bool = False
    last_interim: float = field(default_factory=time.monotonic)
    pcm: bytearray = field(default_factory=bytearray)  # kept only when it is not recognized


class DeepgramStandIn:
    def __init__(
        self, api_key: str, recognizer: Recognizer, keep_unheard: Path | None = None
    ) -> None:
        self.api_keys = api_keys(api_key)
        self.recognizer = recognizer
        self.keep_unheard = keep_unheard  # where an utterance it could not recognize is saved
        if keep_unheard is not None:  # there from the start: a reader finds it, maybe empty
            keep_unheard.mkdir(parents=True, exist_ok=True)
        self.sessions = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/listen", self.listen)

    async def listen(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") not in {f"Token {k}" for k in self.api_keys}:
            return web.json_response(
                {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}, status=401
            )
        q = request.query
        if q.get("encoding", "linear16") != "linear16" or q.get("channels", "1") != "1":
            return web.json_response(
                {"err_code": "Bad Request", "err_msg": "only linear16, 1 channel"}, status=400
            )
        try:
            rate = int(q.get("sample_rate", "16000"))
            endpointing = q.get("endpointing", "10")
            endpoint_ms = 0 if endpointing == "false" else max(int(endpointing), MIN_ENDPOINTING_MS)
            utterance_end_ms = int(q["utterance_end_ms"]) if "utterance_end_ms" in q else None
        except ValueError:
            return web.json_response({"err_code": "Bad Request"}, status=400)
        if rate != self.recognizer.sample_rate:
            return web.json_response(
                {
                    "err_code": "Bad Request",
                    "err_msg": f"sample_rate must be {self.recognizer.sample_rate}",
                },
                status=400,
            )
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        ws.headers["dg-request-id"] = request_id = str(uuid.uuid4())
        await ws.prepare(request)
        self.sessions += 1
        session = _Session(
            ws,
            self.recognizer,
            request_id,
            rate,
            peer=request.remote or "-",
            keep_unheard=self.keep_unheard,
            interim=q.get("interim_results") == "true",
            vad_events=q.get("vad_events") == "true",
            endpoint_ms=endpoint_ms or MIN_ENDPOINTING_MS,
            utterance_end_ms=utterance_end_ms,
        )
        try:
            await session.run()
        finally:
            self.sessions -= 1
        return ws


class _Session:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        recognizer: Recognizer,
        request_id: str,
        rate: int,
        *,
        peer: str,
        keep_unheard: Path | None,
        interim: bool,
        vad_events: bool,
        endpoint_ms: int,
        utterance_end_ms: int | None,
    ) -> None:
        self.ws = ws
        self.recognizer = recognizer
        self.request_id = request_id
        self.peer = peer  # the worker host's address, in the log
        self.keep_unheard = keep_unheard
        self.rate = rate
        self.interim = interim
        self.vad_events = vad_events
        self.endpoint_s = endpoint_ms / 1000
        self.utterance_end_s = utterance_end_ms / 1000 if utterance_end_ms else None
        self.audio_s = 0.0  # audio time received so far
        self.utt: _Utterance | None = None
        self.pending = bytearray()
        self.frame_bytes = rate // 100 * 2  # 10 ms
        self.last_word_end: float | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                self.pending += msg.data
                while len(self.pending) >= self.frame_bytes:
                    frame = bytes(self.pending[: self.frame_bytes])
                    del self.pending[: self.frame_bytes]
                    await self._frame(loop, frame)
            elif msg.type == WSMsgType.TEXT:
                kind = _message_type(msg.data)
                if kind == "Finalize":
                    await self._finalise(loop, from_finalize=True)
                elif kind == "CloseStream":
                    await self._finalise(loop, from_finalize=True)
                    await self._send(
                        {
                            "type": "Metadata",
                            "transaction_key": "deprecated",
                            "request_id": self.request_id,
                            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "duration": round(self.audio_s, 3),
                            "channels": 1,
                        }
                    )
                    await self.ws.close()
                    break
                # KeepAlive and anything else: nothing to do
            elif msg.type == WSMsgType.ERROR:
                break
        if self.utt is not None:
            self.utt.stream.end()
            self.utt = None

    async def _frame(self, loop: asyncio.AbstractEventLoop, frame: bytes) -> None:
        t = self.audio_s
        self.audio_s += len(frame) / 2 / self.rate
        speech = rms(frame) >= SPEECH_RMS
        utt = self.utt
        if utt is None:
            if not speech:
                if (
                    self.utterance_end_s is not None
                    and self.last_word_end is not None
                    and self.audio_s - self.last_word_end >= self.utterance_end_s
                ):
                    await self._send(
                        {
                            "type": "UtteranceEnd",
                            "channel": [0, 1],
                            "last_word_end": round(self.last_word_end, 3),
                        }
                    )
                    self.last_word_end = None
                return
            utt = self.utt = _Utterance(
                stream=await loop.run_in_executor(None, self.recognizer.stream), start_s=t
            )
        # inline: pocketsphinx takes ~0.2 ms per 10 ms frame; only building a decoder is slow
        utt.stream.feed(frame)
        if self.keep_unheard is not None:
            utt.pcm += frame
        if speech:
            utt.speech_ms += 10
            utt.last_speech_s = self.audio_s
            if not utt.started_event_sent and utt.speech_ms >= MIN_SPEECH_MS:
                utt.started_event_sent = True
                if self.vad_events:
                    await self._send(
                        {
                            "type": "SpeechStarted",
                            "channel": [0, 1],
                            "timestamp": round(utt.start_s, 3),
                        }
                    )
        elif self.audio_s - utt.last_speech_s >= self.endpoint_s:
            await self._finalise(loop, from_finalize=False)
            return
        if (
            self.interim
            and utt.started_event_sent
            and utt.stream.text
            and time.monotonic() - utt.last_interim >= INTERIM_EVERY_S
        ):
            utt.last_interim = time.monotonic()
            await self._send(self._results(utt, utt.stream.text, is_final=False))

    async def _finalise(self, loop: asyncio.AbstractEventLoop, *, from_finalize: bool) -> None:
        utt, self.utt = self.utt, None
        if utt is None:
            if from_finalize:  # Deepgram answers a Finalize with an (empty) final result
                await self._send(self._results(None, "", is_final=True, from_finalize=True))
            return
        text = utt.stream.end()
        kept = ""
        if not text and utt.speech_ms >= MIN_SPEECH_MS and self.keep_unheard is not None:
            kept = f" (kept: {self._keep(utt)})"
        # what was heard, for a report of a turn that went unanswered (lab-providers.log)
        logger.info(
            "%s from %s %s %.2f-%.2f s speech %d ms: %r%s",
            self.request_id[:8],
            self.peer,
            "finalize" if from_finalize else "endpoint",
            utt.start_s,
            self.audio_s,
            utt.speech_ms,
            text if utt.speech_ms >= MIN_SPEECH_MS else "(too short: dropped)",
            kept,
        )
        if utt.speech_ms < MIN_SPEECH_MS:
            return  # a click, not speech
        self.last_word_end = utt.last_speech_s
        await self._send(
            self._results(
                utt,
                text,
                is_final=True,
                speech_final=not from_finalize,
                from_finalize=from_finalize,
            )
        )

    def _keep(self, utt: _Utterance) -> str:
        """Save speech the recognizer made nothing of, as a WAV file, to listen to it later."""
        assert self.keep_unheard is not None
        path = self.keep_unheard / f"{self.request_id[:8]}-{utt.start_s:07.2f}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.rate)
            w.writeframes(bytes(utt.pcm))
        return path.name

    def _results(
        self,
        utt: _Utterance | None,
        text: str,
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> dict[str, object]:
        start = utt.start_s if utt else self.audio_s
        end = utt.last_speech_s if utt else self.audio_s
        words = text.split()
        step = (end - start) / len(words) if words else 0.0
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end - start, 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": text,
                        "confidence": 0.99 if text else 0.0,
                        "words": [
                            {
                                "word": w,
                                "start": round(start + i * step, 3),
                                "end": round(start + (i + 1) * step, 3),
                                "confidence": 0.99,
                                "punctuated_word": w,
                            }
                            for i, w in enumerate(words)
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": "lab-pocketsphinx"},
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
        }

    async def _send(self, payload: dict[str, object]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(payload))


def _message_type(data: str) -> str:
    try:
        return str(json.loads(data).get("type", ""))
    except (ValueError, AttributeError):
        return ""
