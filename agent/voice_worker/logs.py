"""JSON logs on stdout (journald keeps them), with secret values redacted.

Job processes forward their records to the main process over livekit-agents' log queue, which
adds job_id/room; so one handler here formats the logs of the worker and of every job.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from pythonjsonlogger.json import JsonFormatter

REDACTED = "[REDACTED]"
# livekit-agents names the room "room"; operators search for room_name.
# process_id is the OS pid of the process that logged (a job process's own pid for job logs).
_RENAMES = {
    "asctime": "timestamp",
    "levelname": "level",
    "name": "logger",
    "process": "process_id",
    "room": "room_name",
}


class RedactingJsonFormatter(JsonFormatter):
    """JsonFormatter that replaces every known secret value in the finished line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{process}{message}",
            style="{",
            rename_fields=_RENAMES,
            timestamp=False,
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
        # longest first, so a secret that contains another is redacted whole
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line


def setup_logging(level: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(RedactingJsonFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # library warnings as JSON lines too, not bare stderr
    # third-party chatter at DEBUG would bury the worker's own lines
    for noisy in ("asyncio", "websockets", "aiohttp.access", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.INFO))
