"""Cartesia text-to-speech stand-in (`/tts/websocket`) that speaks with espeak-ng.

Speaks the protocol as livekit-plugins-cartesia 1.8.9 uses it: `X-API-Key` header,
`?cartesia_version=`, one socket reused for many `context_id`s; each request JSON carries
`model_id`, `voice`, `output_format` (`raw`, `pcm_s16le`, a sample rate), `context_id`,
`transcript` and `continue`. Text of a context is spoken in order as it arrives, sentence by
sentence; the audio goes back as `{"type": "chunk", "data": base64 PCM}` messages of 100 ms, with
`{"type": "timestamps", "word_timestamps": {...}}` when `add_timestamps` is set, and
`{"type": "done", "done": true}` once a request with `continue: false` has been spoken.
`{"context_id": ..., "cancel": true}` drops a context. Errors come back as `type: "error"`.

Not covered: voices (accepted, ignored: always espeak-ng en-us), speed/emotion controls,
containers other than raw and encodings other than pcm_s16le (refused with an error message),
phoneme timestamps, the REST `/tts/bytes` endpoint, the 300 s socket limit, usage metadata.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from ..speech import SAMPLE_WIDTH, SpeechError, synthesize
from . import api_keys

logger = logging.getLogger("lab.cartesia")

CHUNK_S = 0.1


@dataclass
class _Context:
    context_id: str
    peer: str  # the worker host's address, in the log
    spoken: list[str] = field(default_factory=list)
    queue: asyncio.Queue[dict | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class CartesiaStandIn:
    def __init__(self, api_key: str) -> None:
        self.api_keys = api_keys(api_key)
        self.characters = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/tts/websocket", self.websocket)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-API-Key") not in self.api_keys:
            return web.json_response({"error": "Invalid API key"}, status=401)
        if not request.query.get("cartesia_version"):
            return web.json_response({"error": "cartesia_version is required"}, status=400)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        contexts: dict[str, _Context] = {}
        send_lock = asyncio.Lock()

        async def send(payload: dict[str, object]) -> None:
            async with send_lock:
                if not ws.closed:
                    await ws.send_str(json.dumps(payload))

        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    req = json.loads(msg.data)
                    context_id = str(req["context_id"])
                except (ValueError, KeyError, TypeError):
                    await send(
                        {
                            "type": "error",
                            "status_code": 400,
                            "done": True,
                            "error": "a JSON request with a context_id is required",
                        }
                    )
                    continue
                if req.get("cancel"):
                    ctx = contexts.pop(context_id, None)
                    if ctx is not None and ctx.task is not None:
                        ctx.task.cancel()
                    continue
                ctx = contexts.get(context_id)
                if ctx is None:
                    ctx = contexts[context_id] = _Context(context_id, request.remote or "-")
                    ctx.task = asyncio.create_task(self._speak(ctx, send, contexts))
                ctx.queue.put_nowait(req)
        finally:
            for ctx in contexts.values():
                if ctx.task is not None:
                    ctx.task.cancel()
        return ws

    async def _speak(self, ctx: _Context, send, contexts: dict[str, _Context]) -> None:  # noqa: ANN001
        loop = asyncio.get_running_loop()
        offset = 0.0  # seconds of audio sent in this context
        while True:
            req = await ctx.queue.get()
            fmt = req.get("output_format") or {}
            if fmt.get("container") != "raw" or fmt.get("encoding") != "pcm_s16le":
                await send(
                    {
                        "type": "error",
                        "context_id": ctx.context_id,
                        "status_code": 400,
                        "done": True,
                        "error": "only raw pcm_s16le output is supported",
                    }
                )
                contexts.pop(ctx.context_id, None)
                return
            rate = int(fmt.get("sample_rate", 24000))
            text = str(req.get("transcript", ""))
            if text.strip():
                self.characters += len(text)
                ctx.spoken.append(text.strip())
                try:
                    pcm = await loop.run_in_executor(None, synthesize, text.strip(), rate)
                except SpeechError as e:
                    await send(
                        {
                            "type": "error",
                            "context_id": ctx.context_id,
                            "status_code": 500,
                            "done": True,
                            "error": str(e),
                        }
                    )
                    contexts.pop(ctx.context_id, None)
                    return
                duration = len(pcm) / SAMPLE_WIDTH / rate
                if req.get("add_timestamps"):
                    words = text.split()
                    step = duration / len(words)
                    await send(
                        {
                            "type": "timestamps",
                            "context_id": ctx.context_id,
                            "status_code": 206,
                            "done": False,
                            "word_timestamps": {
                                "words": words,
                                "start": [round(offset + i * step, 3) for i in range(len(words))],
                                "end": [
                                    round(offset + (i + 1) * step, 3) for i in range(len(words))
                                ],
                            },
                        }
                    )
                chunk = int(rate * CHUNK_S) * SAMPLE_WIDTH
                for i in range(0, len(pcm), chunk):
                    await send(
                        {
                            "type": "chunk",
                            "context_id": ctx.context_id,
                            "status_code": 206,
                            "done": False,
                            "step_time": 1.0,
                            "data": base64.b64encode(pcm[i : i + chunk]).decode(),
                        }
                    )
                offset += duration
            if not req.get("continue", False):
                # what was spoken, for a report of a turn that went unanswered (lab-providers.log)
                logger.info("from %s %s: %r", ctx.peer, ctx.context_id[:8], " ".join(ctx.spoken))
                await send(
                    {"type": "done", "context_id": ctx.context_id, "status_code": 206, "done": True}
                )
                contexts.pop(ctx.context_id, None)
                return
