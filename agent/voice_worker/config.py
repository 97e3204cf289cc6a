"""Worker settings from the environment, secrets from systemd credentials first.

Every setting is documented in docs/worker-contract.md. A bad or missing setting raises
ConfigError naming the setting (never its value when it is a secret); the CLI turns that into one
line on stderr and exit status 78 (EX_CONFIG), which the unit's RestartPreventExitStatus= honours.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

EX_CONFIG = 78

SECRET_NAMES = (
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "DEEPGRAM_API_KEY",
    "CARTESIA_API_KEY",
    "OPENAI_API_KEY",
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# How a session decides that the caller finished a turn (docs/worker-contract.md, capacity):
#   vad    silence after speech (Silero VAD) plus the endpointing delay: no model to load
#   stt    the STT provider's end of speech (Deepgram's endpointing)
#   model  LiveKit's end-of-turn model (livekit-agents' default): about 85-95 MB more memory per
#          call even when preloaded in the forkserver, more CPU, and waits up to 3 s when it
#          judges the caller not done
TURN_DETECTION_MODES = ("vad", "stt", "model")


class ConfigError(Exception):
    """A setting is missing or invalid; str() is safe to print (no secret values)."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"invalid configuration: {setting}: {problem}")
        self.setting = setting


@dataclass(frozen=True)
class Prices:
    stt_usd_per_minute: float = 0.0043
    llm_usd_per_1m_input_tokens: float = 0.15
    llm_usd_per_1m_output_tokens: float = 0.60
    tts_usd_per_1m_characters: float = 40.0


@dataclass(frozen=True)
class Settings:
    livekit_url: str
    livekit_api_key: str = field(repr=False)
    livekit_api_secret: str = field(repr=False)
    deepgram_api_key: str = field(repr=False)
    cartesia_api_key: str = field(repr=False)
    openai_api_key: str = field(repr=False)
    deepgram_base_url: str | None = None
    cartesia_base_url: str | None = None
    openai_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    stt_model: str = "nova-3"
    stt_language: str = "en"
    tts_model: str = "sonic-2"
    tts_voice: str | None = None
    instructions_file: Path | None = None
    agent_name: str = ""
    log_level: str = "INFO"
    health_host: str = "127.0.0.1"
    health_port: int = 8081
    max_jobs: int = 4
    idle_timeout: float = 300.0
    turn_detection: str = "vad"
    drain_timeout: int = 600
    reconnect_grace: float = 60.0
    max_retry: int | None = None  # None: reconnect to LiveKit for as long as it takes
    num_idle_processes: int = 1
    # livekit-agents' per-job memory check (PSS, every 5 s): above warn a warning, above limit the
    # job process is killed; 0 turns either off (livekit-agents' defaults: 1000 and 0)
    job_memory_warn_mb: int = 1000
    job_memory_limit_mb: int = 0
    state_dir: Path = Path("state")
    metrics_dir: Path = Path("metrics")
    entrypoint: str = "voice_worker.agent:entrypoint"
    input_max_chars: int = 2000
    input_rate_per_minute: int = 20
    prices: Prices = field(default_factory=Prices)

    def secret_values(self) -> list[str]:
        return [
            v
            for v in (
                self.livekit_api_key,
                self.livekit_api_secret,
                self.deepgram_api_key,
                self.cartesia_api_key,
                self.openai_api_key,
            )
            if v
        ]


class _Reader:
    def __init__(self, env: Mapping[str, str], credentials_dir: Path | None) -> None:
        self.env = env
        self.credentials_dir = credentials_dir

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def secret(self, name: str) -> str:
        if self.credentials_dir is not None:
            path = self.credentials_dir / name
            if path.is_file():
                try:
                    value = path.read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError) as e:
                    raise ConfigError(
                        name, f"credential file unreadable ({type(e).__name__})"
                    ) from None
                if not value:
                    raise ConfigError(name, "credential file is empty")
                return value
        value = self.raw(name)
        if value is None:
            where = "$CREDENTIALS_DIRECTORY or the environment"
            raise ConfigError(name, f"required secret is not set (looked in {where})")
        return value

    def text(self, name: str, default: str | None) -> str | None:
        value = self.raw(name)
        return default if value is None else value

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(name, f"must be an integer, got {value!r}") from None
        if not lo <= number <= hi:
            raise ConfigError(name, f"must be between {lo} and {hi}, got {number}")
        return number

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, f"must be a number, got {value!r}") from None
        if not lo <= number <= hi:
            raise ConfigError(name, f"must be between {lo} and {hi}, got {number}")
        return number

    def url(self, name: str, schemes: tuple[str, ...], required: bool) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise ConfigError(name, "required setting is not set")
            return None
        parsed = urlparse(value)
        if parsed.scheme not in schemes or not parsed.hostname:
            raise ConfigError(name, f"must be a {'/'.join(schemes)} URL with a host")
        if parsed.username or parsed.password:
            raise ConfigError(name, "must not carry credentials; use the *_API_KEY settings")
        return value


def _defaults(cls: type) -> dict[str, Any]:
    """A settings class's field defaults: the one place each default is written."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    d = _defaults(Settings)
    price = _defaults(Prices)
    env = os.environ if env is None else env
    creds = env.get("CREDENTIALS_DIRECTORY")
    r = _Reader(env, Path(creds) if creds else None)

    livekit_url = r.url("LIVEKIT_URL", ("wss", "ws", "https", "http"), required=True)
    assert livekit_url is not None

    health_host = r.text("HEALTH_CHECK_HOST", d["health_host"]) or d["health_host"]
    try:
        ipaddress.ip_address(health_host)
    except ValueError:
        raise ConfigError(
            "HEALTH_CHECK_HOST", f"must be an IP address, got {health_host!r}"
        ) from None

    turn_detection = (
        r.text("WORKER_TURN_DETECTION", d["turn_detection"]) or d["turn_detection"]
    ).lower()
    if turn_detection not in TURN_DETECTION_MODES:
        raise ConfigError(
            "WORKER_TURN_DETECTION", f"must be one of {', '.join(TURN_DETECTION_MODES)}"
        )

    log_level = (r.text("LOG_LEVEL", d["log_level"]) or d["log_level"]).upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError("LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}")

    instructions = r.text("AGENT_INSTRUCTIONS_FILE", None)
    instructions_file = Path(instructions) if instructions else None
    if instructions_file is not None and not instructions_file.is_file():
        raise ConfigError("AGENT_INSTRUCTIONS_FILE", f"no such file: {instructions_file}")

    entrypoint = r.text("WORKER_ENTRYPOINT", d["entrypoint"]) or ""
    module, _, func = entrypoint.partition(":")
    if not module or not func:
        raise ConfigError("WORKER_ENTRYPOINT", "must look like 'package.module:function'")

    state_default = env.get("STATE_DIRECTORY", "").split(":")[0] or "state"
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    metrics_default = str(Path(runtime) / "metrics") if runtime else "metrics"

    job_memory_limit_mb = r.integer(
        "WORKER_JOB_MEMORY_LIMIT_MB", d["job_memory_limit_mb"], 0, 1_048_576
    )
    if 0 < job_memory_limit_mb < 64:
        raise ConfigError(
            "WORKER_JOB_MEMORY_LIMIT_MB", "must be 0 (off) or at least 64 (a job process's size)"
        )
    # unset: livekit-agents' 1000, or three quarters of the limit when that is lower
    warn = d["job_memory_warn_mb"]
    warn_default = min(warn, job_memory_limit_mb * 3 // 4) if job_memory_limit_mb else warn
    job_memory_warn_mb = r.integer("WORKER_JOB_MEMORY_WARN_MB", warn_default, 0, 1_048_576)
    if job_memory_limit_mb and job_memory_warn_mb > job_memory_limit_mb:
        raise ConfigError(
            "WORKER_JOB_MEMORY_WARN_MB",
            f"must not exceed WORKER_JOB_MEMORY_LIMIT_MB ({job_memory_limit_mb})",
        )

    prices = Prices(
        stt_usd_per_minute=r.number(
            "PRICE_STT_USD_PER_MINUTE", price["stt_usd_per_minute"], 0, 1000
        ),
        llm_usd_per_1m_input_tokens=r.number(
            "PRICE_LLM_USD_PER_1M_INPUT_TOKENS", price["llm_usd_per_1m_input_tokens"], 0, 1e6
        ),
        llm_usd_per_1m_output_tokens=r.number(
            "PRICE_LLM_USD_PER_1M_OUTPUT_TOKENS", price["llm_usd_per_1m_output_tokens"], 0, 1e6
        ),
        tts_usd_per_1m_characters=r.number(
            "PRICE_TTS_USD_PER_1M_CHARACTERS", price["tts_usd_per_1m_characters"], 0, 1e6
        ),
    )

    return Settings(
        livekit_url=livekit_url,
        livekit_api_key=r.secret("LIVEKIT_API_KEY"),
        livekit_api_secret=r.secret("LIVEKIT_API_SECRET"),
        deepgram_api_key=r.secret("DEEPGRAM_API_KEY"),
        cartesia_api_key=r.secret("CARTESIA_API_KEY"),
        openai_api_key=r.secret("OPENAI_API_KEY"),
        deepgram_base_url=r.url("DEEPGRAM_BASE_URL", ("wss", "ws", "https", "http"), False),
        cartesia_base_url=r.url("CARTESIA_BASE_URL", ("wss", "ws", "https", "http"), False),
        openai_base_url=r.url("OPENAI_BASE_URL", ("https", "http"), False),
        llm_model=r.text("LLM_MODEL", d["llm_model"]) or d["llm_model"],
        stt_model=r.text("STT_MODEL", d["stt_model"]) or d["stt_model"],
        stt_language=r.text("STT_LANGUAGE", d["stt_language"]) or d["stt_language"],
        tts_model=r.text("TTS_MODEL", d["tts_model"]) or d["tts_model"],
        tts_voice=r.text("TTS_VOICE", None),
        instructions_file=instructions_file,
        agent_name=r.text("AGENT_NAME", d["agent_name"]) or "",
        log_level=log_level,
        health_host=health_host,
        health_port=r.integer("HEALTH_CHECK_PORT", d["health_port"], 1024, 65535),
        max_jobs=r.integer("WORKER_MAX_JOBS", d["max_jobs"], 1, 256),
        idle_timeout=r.number("WORKER_IDLE_TIMEOUT", d["idle_timeout"], 10, 86400),
        turn_detection=turn_detection,
        drain_timeout=r.integer("WORKER_DRAIN_TIMEOUT", d["drain_timeout"], 30, 3600),
        reconnect_grace=r.number("WORKER_RECONNECT_GRACE", d["reconnect_grace"], 5, 3600),
        max_retry=(
            r.integer("LIVEKIT_MAX_RETRY", 0, 0, 1000) if r.raw("LIVEKIT_MAX_RETRY") else None
        ),
        num_idle_processes=r.integer("WORKER_NUM_IDLE_PROCESSES", d["num_idle_processes"], 0, 64),
        job_memory_warn_mb=job_memory_warn_mb,
        job_memory_limit_mb=job_memory_limit_mb,
        state_dir=Path(r.text("WORKER_STATE_DIR", state_default) or state_default),
        metrics_dir=Path(r.text("WORKER_METRICS_DIR", metrics_default) or metrics_default),
        entrypoint=entrypoint,
        input_max_chars=r.integer("INPUT_MAX_CHARS", d["input_max_chars"], 1, 100_000),
        input_rate_per_minute=r.integer(
            "INPUT_RATE_PER_MINUTE", d["input_rate_per_minute"], 1, 10_000
        ),
        prices=prices,
    )
