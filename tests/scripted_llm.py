"""A scripted `llm.LLM` for offline conversation tests (livekit-agents ships no fake LLM).

Each call to `chat()` plays the next scripted reply: text, or a tool call. Every reply carries
token usage, so the session's `metrics_collected` events report LLM tokens like a real provider.
It records the chat context it was given, so tests can check what reached the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


Reply = str | ToolCall


class ScriptedLLM(llm.LLM):
    def __init__(self, replies: list[Reply], prompt_tokens: int = 50) -> None:
        super().__init__()
        self._replies = list(replies)
        self.prompt_tokens = prompt_tokens
        self.requests: list[llm.ChatContext] = []

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "scripted"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        **_: Any,
    ) -> llm.LLMStream:
        self.requests.append(chat_ctx.copy())
        if not self._replies:
            raise AssertionError("the conversation asked the LLM for more replies than scripted")
        reply = self._replies.pop(0)
        return _ScriptedStream(
            self, reply, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )


class _ScriptedStream(llm.LLMStream):
    def __init__(self, owner: ScriptedLLM, reply: Reply, **kwargs: Any) -> None:
        super().__init__(owner, **kwargs)
        self._reply = reply
        self._owner = owner

    async def _run(self) -> None:
        n = len(self._requests_seen())
        if isinstance(self._reply, ToolCall):
            delta = llm.ChoiceDelta(
                role="assistant",
                tool_calls=[
                    llm.FunctionToolCall(
                        name=self._reply.name,
                        arguments=json.dumps(self._reply.arguments),
                        call_id=f"call_{n}",
                    )
                ],
            )
            completion = 10
        else:
            delta = llm.ChoiceDelta(role="assistant", content=self._reply)
            completion = max(1, len(self._reply.split()))
        self._event_ch.send_nowait(llm.ChatChunk(id=f"chunk_{n}", delta=delta))
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=f"chunk_{n}",
                usage=llm.CompletionUsage(
                    completion_tokens=completion,
                    prompt_tokens=self._owner.prompt_tokens,
                    total_tokens=completion + self._owner.prompt_tokens,
                ),
            )
        )

    def _requests_seen(self) -> list[llm.ChatContext]:
        return self._owner.requests
