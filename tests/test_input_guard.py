"""Participant text is validated and rate-limited before it reaches the LLM."""

from __future__ import annotations

from prometheus_client import REGISTRY

from voice_worker.input_guard import InputGuard


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("voice_worker_inputs_rejected_total", {"reason": reason}) or 0


def test_accepts_ordinary_text_and_normalizes_whitespace() -> None:
    guard = InputGuard(max_chars=100, rate_per_minute=10)
    assert guard.accept("alice", "  What time is check-out?\n") == "What time is check-out?"
    assert guard.accept("alice", "Zwei Zimmer, bitte.\nDanke") == "Zwei Zimmer, bitte.\nDanke"


def test_rejections_are_counted_by_reason() -> None:
    guard = InputGuard(max_chars=20, rate_per_minute=100)
    cases = {
        "too_long": "x" * 21,
        "encoding": b"\xff\xfe broken",
        "control_chars": "hi\x1b[2Jthere",
        "empty": "   ",
    }
    for reason, text in cases.items():
        before = _rejected(reason)
        assert guard.accept("bob", text) is None
        assert _rejected(reason) == before + 1, reason
    assert guard.accept("bob", "ok\u200b") is None  # zero-width (format) characters too


def test_rate_limit_per_participant_refills_over_time() -> None:
    clock = FakeClock()
    guard = InputGuard(max_chars=100, rate_per_minute=3, clock=clock)
    limited = "voice_worker_inputs_rate_limited_total"
    before = REGISTRY.get_sample_value(limited) or 0
    assert [guard.accept("carol", "hi") for _ in range(4)] == ["hi", "hi", "hi", None]
    assert REGISTRY.get_sample_value(limited) == before + 1
    assert guard.accept("dave", "hi") == "hi"  # another participant has their own bucket
    clock.now += 20  # 3 per minute: one message back after 20 s
    assert guard.accept("carol", "hi") == "hi"
    assert guard.accept("carol", "hi") is None
