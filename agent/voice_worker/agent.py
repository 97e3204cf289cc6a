"""The bundled voice conversation: Deepgram STT, an OpenAI-compatible LLM, Cartesia TTS, Silero VAD.

`entrypoint(ctx, job)` is the default WORKER_ENTRYPOINT. It runs inside a job process, under the
lifecycle in jobs.py (metrics, session record, idle timeout, shutdown).
"""

from __future__ import annotations

import logging
from importlib import resources

from livekit import rtc
from livekit.agents import (
    Agent,
    AgentSession,
    JobContext,
    JobProcess,
    RunContext,
    function_tool,
    llm,
)
from livekit.agents.voice.room_io import RoomOptions, TextInputOptions
from livekit.plugins import cartesia, deepgram, openai

from .config import Settings
from .jobs import JobRuntime

logger = logging.getLogger("voice_worker.agent")

CHAT_TOPIC = "lk.chat"


def load_instructions(settings: Settings) -> str:
    if settings.instructions_file is not None:
        return settings.instructions_file.read_text(encoding="utf-8").strip()
    return resources.files(__package__).joinpath("instructions.txt").read_text("utf-8").strip()


class VoiceAssistant(Agent):
    """The assistant's behaviour; its tools let a conversation end itself."""

    def __init__(self, instructions: str, runtime: JobRuntime | None = None) -> None:
        super().__init__(instructions=instructions)
        self._runtime = runtime

    @function_tool
    async def end_call(self, context: RunContext) -> str:
        """End the call when the caller says goodbye or asks to hang up."""
        logger.info("caller asked to end the call")
        if self._runtime is not None:
            self._runtime.end("caller ended the call", after=context.speech_handle)
        return "The call is ending; say a short goodbye."


def build_llm(settings: Settings) -> llm.LLM:
    return openai.LLM(
        model=settings.llm_model,
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url or "https://api.openai.com/v1",
    )


def prewarm(proc: JobProcess, settings: Settings) -> None:
    """Per job process, before its call (jobs.prewarm): the LLM client (its TLS context) and the
    parts of the OpenAI SDK it imports on first use."""
    import openai.lib.streaming.chat  # noqa: F401
    import openai.resources.models  # noqa: F401

    proc.userdata["llm"] = build_llm(settings)


def build_session(
    settings: Settings, vad: object, llm_model: llm.LLM | None = None
) -> AgentSession:
    stt_kwargs = {"base_url": settings.deepgram_base_url} if settings.deepgram_base_url else {}
    tts_kwargs: dict[str, object] = {}
    if settings.cartesia_base_url:
        tts_kwargs["base_url"] = settings.cartesia_base_url
    if settings.tts_voice:
        tts_kwargs["voice"] = settings.tts_voice
    return AgentSession(
        stt=deepgram.STT(
            model=settings.stt_model,
            language=settings.stt_language,
            api_key=settings.deepgram_api_key,
            **stt_kwargs,
        ),
        llm=llm_model or build_llm(settings),
        tts=cartesia.TTS(model=settings.tts_model, api_key=settings.cartesia_api_key, **tts_kwargs),
        vad=vad,
        user_away_timeout=settings.idle_timeout,
        # "model" leaves livekit-agents' default (its end-of-turn model) in place
        **(
            {"turn_handling": {"turn_detection": settings.turn_detection}}
            if settings.turn_detection != "model"
            else {}
        ),
    )


async def entrypoint(ctx: JobContext, job: JobRuntime) -> None:
    await ctx.connect()
    session = build_session(job.settings, job.vad, ctx.proc.userdata.get("llm"))
    job.watch(session)

    async def guarded_text_input(sess: AgentSession, ev: object) -> None:
        identity = getattr(getattr(ev, "participant", None), "identity", "unknown")
        text = job.guard.accept(identity, getattr(ev, "text", ""))
        if text is not None:
            sess.interrupt()
            sess.generate_reply(user_input=text)

    def on_data(packet: rtc.DataPacket) -> None:
        if packet.topic != CHAT_TOPIC:
            return
        identity = packet.participant.identity if packet.participant else "unknown"
        text = job.guard.accept(identity, packet.data)
        if text is not None:
            session.generate_reply(user_input=text)

    ctx.room.on("data_received", on_data)
    await session.start(
        agent=VoiceAssistant(load_instructions(job.settings), job),
        room=ctx.room,
        room_options=RoomOptions(text_input=TextInputOptions(text_input_cb=guarded_text_input)),
    )
    await job.wait_for_caller(ctx)
