from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.loopback_livekit` importable as a package


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


@pytest.fixture
def worker_env(tmp_path: Path) -> dict[str, str]:
    """A complete, valid worker environment pointing at nothing in particular."""
    return {
        "LIVEKIT_URL": "ws://127.0.0.1:7880",
        **TEST_SECRETS,
        "WORKER_STATE_DIR": str(tmp_path / "state"),
        "WORKER_METRICS_DIR": str(tmp_path / "metrics"),
    }
