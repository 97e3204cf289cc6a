"""Configuration: secrets from systemd credentials first, clear errors, exit status 78."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRETS
from voice_worker.config import EX_CONFIG, ConfigError, load_settings


def test_defaults(worker_env) -> None:
    s = load_settings(worker_env)
    assert (s.health_host, s.health_port) == ("127.0.0.1", 8081)
    assert (s.max_jobs, s.idle_timeout, s.drain_timeout) == (4, 300.0, 600)
    assert s.livekit_api_secret == TEST_SECRETS["LIVEKIT_API_SECRET"]
    assert s.max_retry is None, "by default the worker never gives up reconnecting to LiveKit"
    assert load_settings({**worker_env, "LIVEKIT_MAX_RETRY": "3"}).max_retry == 3


def test_credentials_directory_wins_over_environment(worker_env, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "LIVEKIT_API_SECRET").write_text("from-credential-file\n")
    s = load_settings({**worker_env, "CREDENTIALS_DIRECTORY": str(creds)})
    assert s.livekit_api_secret == "from-credential-file"
    # others still come from the environment
    assert s.deepgram_api_key == TEST_SECRETS["DEEPGRAM_API_KEY"]


def test_systemd_directories_are_the_defaults(worker_env) -> None:
    env = {k: v for k, v in worker_env.items() if not k.startswith("WORKER_")}
    env |= {"STATE_DIRECTORY": "/var/lib/x", "RUNTIME_DIRECTORY": "/run/x"}
    s = load_settings(env)
    assert str(s.state_dir) == "/var/lib/x"
    assert str(s.metrics_dir) == "/run/x/metrics"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LIVEKIT_URL", "ftp://example.invalid"),
        ("LIVEKIT_URL", "wss://user:pw@lk.example.invalid"),
        ("HEALTH_CHECK_PORT", "0"),
        ("HEALTH_CHECK_PORT", "http"),
        ("HEALTH_CHECK_HOST", "localhost"),
        ("WORKER_MAX_JOBS", "257"),
        ("WORKER_IDLE_TIMEOUT", "-1"),
        ("WORKER_DRAIN_TIMEOUT", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("WORKER_TURN_DETECTION", "magic"),
        ("AGENT_INSTRUCTIONS_FILE", "/nonexistent/instructions.txt"),
        ("WORKER_ENTRYPOINT", "no_colon_here"),
        ("PRICE_STT_USD_PER_MINUTE", "cheap"),
        ("LIVEKIT_MAX_RETRY", "forever"),
        ("WORKER_JOB_MEMORY_LIMIT_MB", "32"),
        ("WORKER_JOB_MEMORY_LIMIT_MB", "-1"),
    ],
)
def test_invalid_values_name_the_setting(worker_env, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({**worker_env, name: value})
    assert err.value.setting == name
    assert name in str(err.value)


def test_job_memory_warning_defaults_below_the_limit(worker_env) -> None:
    assert load_settings(worker_env).job_memory_warn_mb == 1000  # livekit-agents' default
    limited = load_settings({**worker_env, "WORKER_JOB_MEMORY_LIMIT_MB": "400"})
    assert (limited.job_memory_limit_mb, limited.job_memory_warn_mb) == (400, 300)
    with pytest.raises(ConfigError) as err:
        load_settings(
            {**worker_env, "WORKER_JOB_MEMORY_LIMIT_MB": "400", "WORKER_JOB_MEMORY_WARN_MB": "500"}
        )
    assert err.value.setting == "WORKER_JOB_MEMORY_WARN_MB"


@pytest.mark.parametrize("name", sorted(TEST_SECRETS))
def test_missing_secret_names_it(worker_env, name: str) -> None:
    env = {k: v for k, v in worker_env.items() if k != name}
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert err.value.setting == name


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voice_worker", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_config_exits_78_with_one_line_and_no_secret(worker_env) -> None:
    env = {**worker_env, "WORKER_MAX_JOBS": "lots"}
    proc = _run_cli(env, "start")
    assert proc.returncode == EX_CONFIG
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "WORKER_MAX_JOBS" in lines[0]
    for secret in TEST_SECRETS.values():
        assert secret not in proc.stderr + proc.stdout


def test_unreadable_state_dir_exits_78(worker_env, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = _run_cli({**worker_env, "WORKER_STATE_DIR": str(blocker / "state")}, "start")
    assert proc.returncode == EX_CONFIG
    assert "WORKER_STATE_DIR" in proc.stderr


def test_check_config_prints_no_secret(worker_env) -> None:
    proc = _run_cli(worker_env, "check-config")
    assert proc.returncode == 0, proc.stderr
    assert '"configuration": "ok"' in proc.stdout
    for secret in TEST_SECRETS.values():
        assert secret not in proc.stdout
