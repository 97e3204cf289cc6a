"""Validation and per-participant rate limiting of text that reaches the LLM.

Chat and data messages come from untrusted participants. A message is accepted only if it is
valid UTF-8 text of a bounded size without control characters, and its sender is within the
rate limit (a token bucket per participant identity). Rejections are logged and counted; nothing
here raises into the session.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from . import metrics as m

logger = logging.getLogger("voice_worker.input")

_ALLOWED_CONTROLS = {"\n", "\t"}


@dataclass
class _Bucket:
    tokens: float
    updated: float


class InputGuard:
    def __init__(
        self,
        max_chars: int,
        rate_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_chars = max_chars
        self.capacity = float(rate_per_minute)
        self.refill_per_second = rate_per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def check_text(self, text: str | bytes) -> tuple[str | None, str | None]:
        """Returns (clean_text, None) or (None, reason)."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                return None, "encoding"
        if "\ufffd" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            return None, "encoding"
        text = unicodedata.normalize("NFC", text).strip()
        if not text:
            return None, "empty"
        if len(text) > self.max_chars:
            return None, "too_long"
        for c in text:
            if c not in _ALLOWED_CONTROLS and unicodedata.category(c) in ("Cc", "Cf", "Cs"):
                return None, "control_chars"
        return text, None

    def allow(self, participant: str) -> bool:
        now = self.clock()
        bucket = self._buckets.get(participant)
        if bucket is None:
            bucket = self._buckets[participant] = _Bucket(self.capacity, now)
        bucket.tokens = min(
            self.capacity, bucket.tokens + (now - bucket.updated) * self.refill_per_second
        )
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def accept(self, participant: str, text: str | bytes) -> str | None:
        """The text to pass on, or None after logging and counting why it was dropped."""
        clean, reason = self.check_text(text)
        if reason is not None:
            m.INPUTS_REJECTED.labels(reason=reason).inc()
            logger.warning(
                "participant input rejected",
                extra={"participant": participant, "reason": reason, "length": len(text)},
            )
            return None
        if not self.allow(participant):
            m.INPUTS_RATE_LIMITED.inc()
            logger.warning("participant input rate limited", extra={"participant": participant})
            return None
        return clean
