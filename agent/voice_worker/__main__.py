"""`livekit-voice-worker start | check-config [--connect [--bind-health]]`.

Exit status: 0 after a clean drain, 78 (EX_CONFIG) on bad configuration, 69 (EX_UNAVAILABLE)
when LiveKit stays unreachable past LIVEKIT_MAX_RETRY attempts (set: by default it never gives up)
or, for `check-config --connect`, when LiveKit does not accept the registration or the health
address cannot be bound, 1 on a second stop signal, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from .config import EX_CONFIG, ConfigError, Settings, load_settings


def _fail_config(err: ConfigError) -> int:
    print(f"livekit-voice-worker: {err}", file=sys.stderr)
    return EX_CONFIG


def _prepare_dirs(settings: Settings) -> None:
    for setting, path in (
        ("WORKER_STATE_DIR", settings.state_dir),
        ("WORKER_METRICS_DIR", settings.metrics_dir),
    ):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(setting, f"cannot create {path}: {e.strerror}") from None
        if not os.access(path, os.W_OK):
            raise ConfigError(setting, f"{path} is not writable by this user")


def _summary(settings: Settings) -> dict[str, object]:
    return {
        "livekit_url": settings.livekit_url,
        "agent_name": settings.agent_name,
        "health": f"{settings.health_host}:{settings.health_port}",
        "max_jobs": settings.max_jobs,
        "drain_timeout": settings.drain_timeout,
        "idle_timeout": settings.idle_timeout,
        "turn_detection": settings.turn_detection,
        "reconnect_grace": settings.reconnect_grace,
        "llm": settings.llm_model,
        "entrypoint": settings.entrypoint,
        "secrets": "all present",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livekit-voice-worker")
    parser.add_argument("command", choices=["start", "check-config"])
    parser.add_argument(
        "--connect",
        action="store_true",
        help="check-config: also register with LiveKit once (livekit_check.py)",
    )
    parser.add_argument(
        "--bind-health",
        action="store_true",
        help="check-config --connect: also bind HEALTH_CHECK_HOST:HEALTH_CHECK_PORT once",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "check-config":
            summary = {"configuration": "ok", **_summary(settings)}
            if args.connect:
                from .livekit_check import EX_UNAVAILABLE, CheckFailed, connect

                try:
                    summary.update(connect(settings, args.bind_health))
                except CheckFailed as err:
                    print(f"livekit-voice-worker: check failed: {err}", file=sys.stderr)
                    return EX_UNAVAILABLE
            print(json.dumps(summary))
            return 0
        _prepare_dirs(settings)
    except ConfigError as err:
        return _fail_config(err)

    # Both must be set before livekit-agents (and so prometheus-client) is imported.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.metrics_dir)
    # The bundled end-of-turn model adds ~244 MB RSS to the forkserver when preloaded, and ~230 MB
    # PSS to every call that loads it itself (measured: bench/voice_calls.py). Only the "model"
    # turn detection uses it, and then preloading shares its weights (~85-95 MB PSS per call left).
    os.environ.setdefault(
        "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "1" if settings.turn_detection == "model" else "0"
    )

    # before livekit-agents is imported here: the forkserver's imports overlap with this process's
    from . import forkserver

    forkserver.start(settings)

    from .logs import setup_logging

    setup_logging(settings.log_level, settings.secret_values())

    from .runner import Worker

    return asyncio.run(Worker(settings).run())


if __name__ == "__main__":
    sys.exit(main())
