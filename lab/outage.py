"""A LiveKit outage on the lab, and what the voice workers do about it (issue 12).

    python -m lab.outage [--seconds 660]

Stops livekit-server on lk1 for --seconds, samples every agent host each second meanwhile
(`/ready` from this machine; the unit's restarts, state, main pid and STATUS= from systemd every
5 s; the VoiceWorkerNotRegistered alert from Prometheus on mon1), starts the server again and
measures how long after it answers each worker is registered again (`/ready` 200). Prints one
line per host. The lab runs the production unit settings (WatchdogSec=30, StartLimitBurst=5 in
StartLimitIntervalSec=600), so an outage past 600 s is the one that used to leave units failed.
Run as root on a running lab (`scripts/lab up`).
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from .__main__ import host_address, lab_dir, lab_exec, worker_ports

AGENTS = ("agent1", "agent2")
LIVEKIT = "lk1"
MONITOR = "mon1"
# single mode: livekit-voice-worker.service on the health port; blue_green: the serving colour's
# instance (@blue on the health port, @green on the green one). Found per host before the outage.
_PORT, _GREEN = worker_ports()
UNITS = {
    _PORT: ("livekit-voice-worker.service", "livekit-voice-worker@blue.service"),
    _GREEN: ("livekit-voice-worker@green.service",),
}


def http_status(url: str, context: ssl.SSLContext | None = None) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as r:  # noqa: S310 (lab)
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def unit_state(host: str, unit: str) -> dict[str, str]:
    props = "NRestarts,ActiveState,SubState,MainPID,StatusText"
    out = lab_exec(host, "systemctl", "show", unit, "-p", props)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def alert_firing(mon: str) -> set[str]:
    url = f"http://{mon}:9090/api/v1/alerts"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (lab)
            alerts = json.load(r)["data"]["alerts"]
    except (OSError, ValueError, KeyError):
        return set()
    return {
        a["labels"].get("host", a["labels"].get("instance", "?"))
        for a in alerts
        if a["labels"].get("alertname") == "VoiceWorkerNotRegistered" and a["state"] == "firing"
    }


@dataclass
class Host:
    name: str
    address: str
    port: int = 0
    unit: str = ""
    before: dict[str, str] = field(default_factory=dict)
    not_ready_after: float | None = None
    states: set[str] = field(default_factory=set)
    restarts: int = 0
    status_text: str = ""
    alert: bool = False
    back_after: float | None = None

    def ready(self) -> int | None:
        return http_status(f"http://{self.address}:{self.port}/ready")

    def find_serving_unit(self) -> None:
        for port, units in UNITS.items():
            if http_status(f"http://{self.address}:{port}/ready") == 200:
                for unit in units:
                    if unit_state(self.name, unit).get("ActiveState") == "active":
                        self.port, self.unit = port, unit
                        return
        sys.exit(f"lab.outage: {self.name} is not ready before the outage")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.outage")
    parser.add_argument("--seconds", type=float, default=660)
    args = parser.parse_args()
    hosts = [Host(h, host_address(h)) for h in AGENTS]
    lk = host_address(LIVEKIT)
    mon = host_address(MONITOR)
    tls = ssl.create_default_context(cafile=str(lab_dir() / "tls/ca.crt"))
    for h in hosts:
        h.find_serving_unit()
        h.before = unit_state(h.name, h.unit)
        print(f"{h.name}: {h.unit} serves on port {h.port}")

    print(f"stopping livekit-server on {LIVEKIT} for {args.seconds:.0f} s", flush=True)
    lab_exec(LIVEKIT, "systemctl", "stop", "livekit-server")
    stopped = time.monotonic()
    next_unit = stopped
    while (now := time.monotonic()) - stopped < args.seconds:
        for h in hosts:
            if h.not_ready_after is None and h.ready() == 503:
                h.not_ready_after = now - stopped
        if now >= next_unit:
            next_unit = now + 5
            for h in hosts:
                s = unit_state(h.name, h.unit)
                h.states.add(f"{s.get('ActiveState')}/{s.get('SubState')}")
                h.restarts = int(s.get("NRestarts", 0)) - int(h.before.get("NRestarts", 0))
                h.status_text = s.get("StatusText", "")
            firing = alert_firing(mon)
            for h in hosts:
                h.alert = h.alert or h.name in firing
            elapsed = now - stopped
            print(
                f"  {elapsed:5.0f} s: "
                + "; ".join(
                    f"{h.name} {'/'.join(sorted(h.states))} restarts {h.restarts}"
                    f"{' alert' if h.alert else ''}: {h.status_text[:48]}"
                    for h in hosts
                ),
                flush=True,
            )
        time.sleep(1)

    lab_exec(LIVEKIT, "systemctl", "start", "livekit-server")
    while http_status(f"https://{lk}/", tls) != 200:
        time.sleep(0.2)
    answering = time.monotonic()
    outage = answering - stopped
    print(f"livekit-server answers again after an outage of {outage:.0f} s", flush=True)
    while any(h.back_after is None for h in hosts) and time.monotonic() - answering < 120:
        for h in hosts:
            if h.back_after is None and h.ready() == 200:
                h.back_after = time.monotonic() - answering
        time.sleep(0.2)

    print(f"\noutage {outage:.0f} s; per host:")
    ok = True
    for h in hosts:
        after = unit_state(h.name, h.unit)
        restarts = int(after.get("NRestarts", 0)) - int(h.before.get("NRestarts", 0))
        same_pid = after.get("MainPID") == h.before.get("MainPID")
        back = "never (120 s)" if h.back_after is None else f"{h.back_after:.1f} s"
        nr = "never" if h.not_ready_after is None else f"{h.not_ready_after:.1f} s"
        print(
            f"  {h.name} ({h.unit}): /ready 503 after {nr}; states {'/'.join(sorted(h.states))}; "
            f"restarts {restarts}; same process {same_pid}; VoiceWorkerNotRegistered "
            f"{'fired' if h.alert else 'did not fire'}; registered again {back} after LiveKit "
            f"answered; STATUS during: {h.status_text!r}"
        )
        ok = ok and h.back_after is not None and h.back_after <= 30 and restarts == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
