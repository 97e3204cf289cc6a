"""OpenAI-compatible chat-completions stand-in that answers by the lab's rules (lab/script.py).

Speaks the API as livekit-plugins-openai 1.8.9 (the `openai` SDK) uses it: `Authorization: Bearer
KEY`; `GET /v1/models` (the plugin's prewarm); `POST /v1/chat/completions` with `messages`,
`tools` and `stream`. Streaming answers are server-sent events of `chat.completion.chunk`
objects: the role, the answer word by word, `finish_reason: "stop"`, then (with
`stream_options.include_usage`) a usage chunk with `choices: []`, then `data: [DONE]`. When the
caller says goodbye and the request offers an `end_call` tool, the answer is a tool call
(`delta.tool_calls[{index, id, function{name, arguments}}]`, `finish_reason: "tool_calls"`);
after the tool's result the answer is the goodbye line. Non-streaming requests get one
`chat.completion` object.

Not covered: models (any name is accepted and echoed), sampling parameters, parallel or other
tool calls, structured output, images and audio in messages, the Responses and Realtime APIs,
rate limits. Token counts are words, not tokens.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from ..script import GOODBYE, answer_for, rule_for
from . import api_keys

logger = logging.getLogger("lab.openai")

MODELS = ("gpt-4o-mini", "gpt-4.1")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def reply(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant's next message: {"content": str} or {"tool_call": name}."""
    tool_names = {t.get("function", {}).get("name") for t in tools if isinstance(t, dict)}
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return {"content": GOODBYE.answer}
    said = next(
        (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    rule = rule_for(said)
    if rule is not None and rule.ends_call and "end_call" in tool_names:
        return {"tool_call": "end_call"}
    return {"content": answer_for(said)}


class OpenAIStandIn:
    def __init__(self, api_key: str) -> None:
        self.api_keys = api_keys(api_key)
        self.requests = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") in {f"Bearer {k}" for k in self.api_keys}

    @staticmethod
    def _error(status: int, message: str, code: str) -> web.Response:
        return web.json_response(
            {"error": {"message": message, "type": "invalid_request_error", "code": code}},
            status=status,
        )

    async def models(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(401, "Incorrect API key provided.", "invalid_api_key")
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "lab"} for m in MODELS
                ],
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._error(401, "Incorrect API key provided.", "invalid_api_key")
        try:
            body = await request.json()
            messages = list(body["messages"])
            model = str(body["model"])
        except (ValueError, KeyError, TypeError):
            return self._error(400, "model and messages are required", "invalid_request")
        self.requests += 1
        answer = reply(messages, list(body.get("tools") or []))
        last = messages[-1] if messages else {}
        logger.info(
            "from %s %s %r -> %r",
            request.remote,
            last.get("role"),
            _text(last.get("content"))[:80],
            answer,
        )
        prompt_tokens = sum(len(_text(m.get("content")).split()) for m in messages)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if "tool_call" in answer:
            call = {
                "index": 0,
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": answer["tool_call"], "arguments": "{}"},
            }
            words: list[str] = []
            finish = "tool_calls"
        else:
            call = None
            words = answer["content"].split()
            finish = "stop"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": max(len(words), 1),
            "total_tokens": prompt_tokens + max(len(words), 1),
        }

        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": " ".join(words) or None}
            if call is not None:
                message["tool_calls"] = [{k: v for k, v in call.items() if k != "index"}]
            return web.json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "usage": usage,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                }
            )

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def chunk(choices: list[dict[str, Any]], **extra: Any) -> None:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        await chunk(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )
        if call is not None:
            await chunk([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}])
        for i, word in enumerate(words):
            await chunk(
                [
                    {
                        "index": 0,
                        "delta": {"content": word if i == 0 else " " + word},
                        "finish_reason": None,
                    }
                ]
            )
        await chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await chunk([], usage=usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
