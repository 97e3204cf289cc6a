"""JSON log lines with the fields operators search for, and no secret values."""

from __future__ import annotations

import json
import logging

from voice_worker.logs import REDACTED, RedactingJsonFormatter


def _format(record_kwargs: dict, secrets: list[str], msg: str, *args: object) -> dict:
    record = logging.LogRecord("voice_worker.job", logging.INFO, __file__, 1, msg, args, None)
    for k, v in record_kwargs.items():
        setattr(record, k, v)
    return json.loads(RedactingJsonFormatter(secrets).format(record))


def test_fields_and_renames() -> None:
    line = _format({"room": "call-1", "job_id": "AJ_1", "session_id": "s1"}, [], "job started")
    assert line["level"] == "INFO"
    assert line["logger"] == "voice_worker.job"
    assert line["message"] == "job started"
    assert line["room_name"] == "call-1"
    assert (line["job_id"], line["session_id"]) == ("AJ_1", "s1")
    assert "timestamp" in line


def test_secret_values_are_redacted_everywhere_in_the_line() -> None:
    secret = "sk-live-abcdef123456"
    line = _format({"error": f"401 for key {secret}"}, [secret], "token %s rejected", secret)
    text = json.dumps(line)
    assert secret not in text
    assert line["message"] == f"token {REDACTED} rejected"
    assert line["error"] == f"401 for key {REDACTED}"
