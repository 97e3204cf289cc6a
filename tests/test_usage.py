"""Session metrics become Prometheus counters, a cost estimate and the session's usage total."""

from __future__ import annotations

import time

import pytest
from livekit.agents.metrics import LLMMetrics, STTMetrics, TTSMetrics
from livekit.agents.metrics.base import Metadata
from prometheus_client import REGISTRY

from voice_worker.config import Prices
from voice_worker.usage import UsageMeter


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_usage_counters_and_cost_by_provider() -> None:
    prices = Prices(
        stt_usd_per_minute=0.006,
        llm_usd_per_1m_input_tokens=1.0,
        llm_usd_per_1m_output_tokens=4.0,
        tts_usd_per_1m_characters=50.0,
    )
    meter = UsageMeter(prices)
    before = {
        p: value("voice_worker_estimated_cost_usd_total", provider=p)
        for p in ("deepgram", "openai", "cartesia")
    }
    chars_before = value("voice_worker_tts_characters_total", provider="cartesia")
    now = time.time()
    meter.record(
        STTMetrics(
            label="stt",
            request_id="1",
            timestamp=now,
            duration=0.0,
            audio_duration=90.0,
            streamed=True,
            metadata=Metadata(model_provider="Deepgram"),
        )
    )
    meter.record(
        LLMMetrics(
            label="llm",
            request_id="2",
            timestamp=now,
            duration=1.0,
            ttft=0.4,
            cancelled=False,
            completion_tokens=500,
            prompt_tokens=2000,
            prompt_cached_tokens=0,
            total_tokens=2500,
            tokens_per_second=50.0,
        )
    )
    meter.record(
        TTSMetrics(
            label="tts",
            request_id="3",
            timestamp=now,
            ttfb=0.2,
            duration=1.0,
            audio_duration=3.0,
            cancelled=False,
            characters_count=1000,
            streamed=True,
        )
    )

    # 1.5 min x 0.006; 2000 x 1/1M + 500 x 4/1M; 1000 x 50/1M
    expected = {"deepgram": 0.009, "openai": 0.004, "cartesia": 0.05}
    for provider, usd in expected.items():
        got = value("voice_worker_estimated_cost_usd_total", provider=provider) - before[provider]
        assert got == pytest.approx(usd), provider
    assert value("voice_worker_tts_characters_total", provider="cartesia") - chars_before == 1000
    assert meter.total.stt_audio_seconds == 90.0
    assert (meter.total.llm_input_tokens, meter.total.llm_output_tokens) == (2000, 500)
    assert meter.total.estimated_cost_usd == pytest.approx(sum(expected.values()))
    assert value("voice_worker_llm_ttft_seconds_count", provider="openai") >= 1
