"""The loopback test bed shared by the tests and the benchmarks: the checkout's root, a free port
on 127.0.0.1 and the throw-away secrets a worker and the real livekit-server on loopback
(lab/livekit_loopback.py) are started with."""

from __future__ import annotations

import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TEST_SECRETS = {
    "LIVEKIT_API_KEY": "lk-test-key-7f3a",
    "LIVEKIT_API_SECRET": "lk-test-secret-9c1e5d2b8a7f4e3c6b1a0d9e8f7a6b5c",
    "DEEPGRAM_API_KEY": "dg-test-key-51b2c3",
    "CARTESIA_API_KEY": "ca-test-key-84d1e2",
    "OPENAI_API_KEY": "oa-test-key-3e9f0a",
}
