"""Turns AgentSession `metrics_collected` events into Prometheus counters, cost and a session total.

Runs inside the job process; the counters reach /metrics through the multiprocess directory.
Cost is an estimate from the configured unit prices (PRICE_* settings), per provider.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from livekit.agents.metrics import EOUMetrics, LLMMetrics, STTMetrics, TTSMetrics

from . import metrics as m
from .config import Prices


@dataclass
class SessionUsage:
    stt_audio_seconds: float = 0.0
    llm_input_tokens: int = 0
    llm_output_tokens: int = 0
    tts_characters: int = 0
    estimated_cost_usd: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}


def _provider(metric: LLMMetrics | STTMetrics | TTSMetrics, fallback: str) -> str:
    meta = metric.metadata
    return (meta.model_provider if meta and meta.model_provider else fallback).lower()


class UsageMeter:
    def __init__(self, prices: Prices) -> None:
        self.prices = prices
        self.total = SessionUsage()

    def _cost(self, provider: str, usd: float) -> None:
        if usd > 0:
            m.COST.labels(provider=provider).inc(usd)
            self.total.estimated_cost_usd += usd

    def record(self, metric: object) -> None:
        if isinstance(metric, STTMetrics):
            provider = _provider(metric, "deepgram")
            seconds = max(metric.audio_duration, 0.0)
            m.STT_AUDIO.labels(provider=provider).inc(seconds)
            self.total.stt_audio_seconds += seconds
            self._cost(provider, seconds / 60 * self.prices.stt_usd_per_minute)
        elif isinstance(metric, LLMMetrics):
            provider = _provider(metric, "openai")
            m.LLM_TOKENS.labels(provider=provider, direction="input").inc(metric.prompt_tokens)
            m.LLM_TOKENS.labels(provider=provider, direction="output").inc(metric.completion_tokens)
            if metric.ttft >= 0:
                m.LLM_TTFT.labels(provider=provider).observe(metric.ttft)
            self.total.llm_input_tokens += metric.prompt_tokens
            self.total.llm_output_tokens += metric.completion_tokens
            self._cost(
                provider,
                metric.prompt_tokens / 1e6 * self.prices.llm_usd_per_1m_input_tokens
                + metric.completion_tokens / 1e6 * self.prices.llm_usd_per_1m_output_tokens,
            )
        elif isinstance(metric, TTSMetrics):
            provider = _provider(metric, "cartesia")
            m.TTS_CHARACTERS.labels(provider=provider).inc(metric.characters_count)
            if metric.ttfb >= 0:
                m.TTS_TTFB.labels(provider=provider).observe(metric.ttfb)
            self.total.tts_characters += metric.characters_count
            self._cost(
                provider, metric.characters_count / 1e6 * self.prices.tts_usd_per_1m_characters
            )
        elif isinstance(metric, EOUMetrics) and metric.end_of_utterance_delay > 0:
            m.EOU_DELAY.observe(metric.end_of_utterance_delay)
            if metric.transcription_delay > 0:
                m.STT_DELAY.observe(metric.transcription_delay)
