#!/usr/bin/env python3
"""Print one JSON line with the state of livekit-voice-worker on this host (read-only).

Used by playbooks/tasks/*.yml (drain, start, status): the unit as systemd sees it, the release
`current` points at, and the worker's own answers on `GET /` and `GET /ready`.
Usage: worker_probe.py HEALTH_HOST HEALTH_PORT
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

UNIT = "livekit-voice-worker.service"
CURRENT = "/opt/livekit-voice-worker/current"
PROPS = [
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "NRestarts",
    "MainPID",
    "ExecMainStatus",
    "ActiveEnterTimestampMonotonic",
    "TimeoutStopUSec",
    "StatusText",
]
SPAN = {"us": 1e-6, "ms": 1e-3, "s": 1, "min": 60, "h": 3600, "d": 86400}


def timespan(text):
    """systemd's '10min 30s' -> 630.0 (seconds)."""
    return sum(int(n) * SPAN[u] for n, u in re.findall(r"(\d+)(us|ms|min|s|h|d)\b", text))


def get(base, path):
    try:
        with urllib.request.urlopen(base + path, timeout=3) as r:  # noqa: S310 - fixed http URL
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except (OSError, ValueError):
        return 0, None


def main():
    host, port = sys.argv[1], sys.argv[2]
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    base = f"http://{host}:{port}"
    out = subprocess.run(
        ["systemctl", "show", UNIT] + [f"--property={p}" for p in PROPS],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    state = props.get("ActiveState", "")
    entered = int(props.get("ActiveEnterTimestampMonotonic") or 0)
    live_status, live = get(base, "/")
    ready_status, _ = get(base, "/ready")
    live = live if isinstance(live, dict) else {}
    print(
        json.dumps(
            {
                "load_state": props.get("LoadState", ""),
                "active_state": state,
                "sub_state": props.get("SubState", ""),
                "result": props.get("Result", ""),
                "restarts": int(props.get("NRestarts") or 0),
                "main_pid": int(props.get("MainPID") or 0),
                "exec_main_status": int(props.get("ExecMainStatus") or 0),
                "uptime_s": round(time.monotonic() - entered / 1e6)
                if state == "active" and entered
                else 0,
                "timeout_stop_s": timespan(props.get("TimeoutStopUSec", "")),
                "status_text": props.get("StatusText", ""),
                "release": os.path.basename(os.readlink(CURRENT))
                if os.path.islink(CURRENT)
                else "",
                "live_status": live_status,
                "ready_status": ready_status,
                "worker_id": live.get("worker_id") or "",
                "connected": bool(live.get("connected")),
                "draining": bool(live.get("draining")),
                "active_jobs": int(live.get("active_jobs") or 0),
                "version": live.get("version") or "",
                "ts": time.time(),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
