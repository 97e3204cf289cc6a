#!/usr/bin/env python3
"""Print one JSON line with the state of the voice worker units on this host (read-only).

Used by the role's probe.yml, drain.yml and blue_green_switch.yml and by the fleet playbooks:
for each unit, systemd's view (state, result, restarts, uptime, TimeoutStopSec), the release its
link points at, and the worker's own answers on `GET /` and `GET /ready` (asked only while the unit
runs: in blue/green mode the single unit and the blue colour share a port). A running worker is
asked on the address its main process was started with (HEALTH_CHECK_HOST/PORT in its environment),
which differs from the configured one between a change of voice_worker_health_port and the restart.

Usage: worker_probe.py HEALTH_HOST UNIT:PORT:RELEASE_LINK [UNIT:PORT:RELEASE_LINK ...]
The top-level fields describe the *serving* unit: the first running one that answers /ready 200,
else the first running one, else the first listed; `units` holds every unit's state.
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

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
    "UnitFileState",
]
SPAN = {"us": 1e-6, "ms": 1e-3, "s": 1, "min": 60, "h": 3600, "d": 86400}
RUNNING = ("active", "activating", "deactivating", "reloading")


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


# Bind addresses that listen everywhere -> the loopback this host asks instead: the prometheus
# role's __prometheus_wildcards (roles/prometheus/vars/main.yml), held equal by a test
# (tests/test_worker_probe.py).
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}


def url_host(address):
    """A bind address as this host reaches it: a wildcard on loopback, IPv6 in brackets."""
    host = address.strip()
    if host in WILDCARDS:
        return WILDCARDS[host]
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def http_base(host, port):
    return f"http://{url_host(host)}:{port}"


def started_address(pid, host, port):
    """HEALTH_CHECK_HOST/PORT the process runs with (root reads any environ), else the given."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    except OSError:
        return host, port
    return (
        env.get(b"HEALTH_CHECK_HOST", host.encode()).decode(),
        env.get(b"HEALTH_CHECK_PORT", str(port).encode()).decode(),
    )


def probe(host, unit, port, link):
    out = subprocess.run(
        ["systemctl", "show", unit] + [f"--property={p}" for p in PROPS],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    state = props.get("ActiveState", "")
    entered = int(props.get("ActiveEnterTimestampMonotonic") or 0)
    live_status, live, ready_status = 0, None, 0
    pid = int(props.get("MainPID") or 0)
    if state in RUNNING and pid:
        host, port = started_address(pid, host, port)
    if state in RUNNING:
        base = http_base(host, port)
        live_status, live = get(base, "/")
        ready_status, _ = get(base, "/ready")
    live = live if isinstance(live, dict) else {}
    return {
        "unit": unit,
        "colour": unit.split("@", 1)[1].split(".", 1)[0] if "@" in unit else "",
        "host": host,
        "port": int(port),
        "load_state": props.get("LoadState", ""),
        "active_state": state,
        "sub_state": props.get("SubState", ""),
        "result": props.get("Result", ""),
        "enabled": props.get("UnitFileState", ""),
        "restarts": int(props.get("NRestarts") or 0),
        "main_pid": pid,
        "exec_main_status": int(props.get("ExecMainStatus") or 0),
        "uptime_s": round(time.monotonic() - entered / 1e6) if state == "active" and entered else 0,
        "timeout_stop_s": timespan(props.get("TimeoutStopUSec", "")),
        "status_text": props.get("StatusText", ""),
        "release": os.path.basename(os.readlink(link)) if os.path.islink(link) else "",
        "live_status": live_status,
        "ready_status": ready_status,
        "worker_id": live.get("worker_id") or "",
        "connected": bool(live.get("connected")),
        "draining": bool(live.get("draining")),
        "active_jobs": int(live.get("active_jobs") or 0),
        "version": live.get("version") or "",
    }


def serving(units):
    """The unit that serves: running (not stopping) and ready; of two ready colours (a switch that
    stopped half-way) the younger; else the first running one; else the first listed."""
    running = [u for u in units if u["active_state"] in ("active", "activating", "reloading")]
    ready = sorted((u for u in running if u["ready_status"] == 200), key=lambda u: u["uptime_s"])
    return ready[0] if ready else (running[0] if running else units[0])


def main():
    host = sys.argv[1]
    units = [probe(host, *spec.split(":", 2)) for spec in sys.argv[2:]]
    print(json.dumps({**serving(units), "units": units, "ts": time.time()}, sort_keys=True))


if __name__ == "__main__":
    main()
