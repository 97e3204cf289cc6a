from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_STARTED = time.monotonic()
sys.path.insert(0, str(ROOT))  # `tests.worker_process`, `tests.livekit_server`... importable


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


@pytest.fixture
async def lk(tmp_path: Path):
    """The real livekit-server on loopback (tests/livekit_server.py), with the test key and
    secret, started; a test may stop and start it again on the same ports."""
    import signal

    from tests.livekit_server import LiveKitServer

    workdir = tmp_path / "livekit"
    workdir.mkdir()
    server = LiveKitServer(workdir)
    await server.start()
    yield server
    await server.stop(signal.SIGKILL)  # a clean stop would wait for rooms to empty


# ---- Where the suite's time goes (printed at the end of every run, CI included) ---------------
_INTEGRATION = {
    "test_worker_integration.py",
    "test_config_connect.py",
    "test_lab_providers.py",
}
_MONITORING = {
    "test_monitoring_rules.py",
    "test_grafana_dashboard.py",
    "test_prometheus_targets.py",
}


def _suite_part(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    if module == "test_molecule.py":
        return "molecule " + nodeid.rsplit("[", 1)[-1].rstrip("]")
    if module == "test_lint.py":
        return "lint"
    if module in _INTEGRATION:
        return "integration"
    if module in _MONITORING:
        return "monitoring rules"
    return "unit"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    seconds: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                part = _suite_part(report.nodeid)
                seconds[part] = seconds.get(part, 0.0) + report.duration
    if seconds:
        parts = sorted(seconds.items(), key=lambda kv: (kv[0].startswith("molecule"), kv[0]))
        line = ", ".join(f"{name} {s:.0f} s" for name, s in parts)
        terminalreporter.write_line(f"suite time by part: {line}")
        terminalreporter.write_line(f"suite wall time: {time.monotonic() - _STARTED:.0f} s")
