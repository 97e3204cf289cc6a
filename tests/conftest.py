from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `lab`, `tests` importable

from lab.loopback import ROOT, TEST_SECRETS, free_port  # noqa: E402

__all__ = ["ROOT", "TEST_SECRETS", "free_port"]
_STARTED = time.monotonic()


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
    """The real livekit-server on loopback (lab/livekit_loopback.py), with the test key and
    secret, started; a test may stop and start it again on the same ports."""
    import signal

    from lab.livekit_loopback import LiveKitServer

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
    if module == "test_molecule.py" and nodeid.endswith("]"):  # a scenario, not a unit test
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
