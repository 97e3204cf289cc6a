"""`scripts/lab status` and `scripts/lab call` on the lab's real LiveKit server.

    python -m lab status              the server's view: registered workers, rooms, participants
    python -m lab call [--questions N] [--json]   one call, printed for a person to read

The lab's LiveKit key pair comes from the lab inventory (inventories/lab/group_vars/all), the
server's address from scripts/lab-hosts, its certificate is checked against the lab CA
($LAB_DIR/tls/ca.crt, through SSL_CERT_FILE). Run as root (lab-hosts needs it).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LIVEKIT_HOST = "lk1"  # inventories/lab/hosts.yml, group livekit_hosts


def lab_dir() -> Path:
    return Path(os.environ.get("LAB_DIR") or "/var/lib/lkvw-lab")


def lab_vars() -> dict[str, object]:
    return yaml.safe_load((ROOT / "inventories/lab/group_vars/all/main.yml").read_text())


@functools.cache
def worker_ports() -> tuple[int, int]:
    """The lab workers' health ports (single/blue, green): the lab inventory's agent_hosts
    values, else the voice_worker role's defaults, where each is written once. Read once per
    process (the benchmark asks for them on every poll)."""
    names = ("voice_worker_health_port", "voice_worker_health_port_green")
    values = yaml.safe_load((ROOT / "roles/voice_worker/defaults/main.yml").read_text())
    values.update(
        yaml.safe_load((ROOT / "inventories/lab/group_vars/agent_hosts/main.yml").read_text())
    )
    return int(values[names[0]]), int(values[names[1]])


def host_address(name: str) -> str:
    out = subprocess.run(
        [str(ROOT / "scripts/lab-hosts"), "info", name], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.exit(f"lab: no lab host {name} (bring the lab up as root: scripts/lab up)")
    return json.loads(out.stdout)["address"]


def lab_exec(host: str, *argv: str) -> str:
    """A command's stdout on a lab host (`scripts/lab-hosts exec`)."""
    out = subprocess.run(
        [str(ROOT / "scripts/lab-hosts"), "exec", host, "--", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout


def connect_settings() -> tuple[str, str, str]:
    v = lab_vars()
    return (
        f"wss://{host_address(LIVEKIT_HOST)}",
        str(v["lab_livekit_api_key"]),
        str(v["lab_livekit_api_secret"]),
    )


def status() -> int:
    from .server import registered_workers, rooms

    url, key, secret = connect_settings()
    journal = lab_exec(
        LIVEKIT_HOST, "journalctl", "-u", "livekit-server", "-o", "cat", "--no-pager"
    )
    workers = registered_workers(journal)
    print(f"LiveKit server {url} (host {LIVEKIT_HOST}), from its log and its API:")
    print(f"  agent workers registered: {len(workers)}")
    for worker_id, w in sorted(workers.items()):
        name = w["agent_name"] or "(automatic dispatch)"
        print(f"    {worker_id}  agent_name={name}  since {w['since']}")
    try:
        listed = asyncio.run(rooms(url, key, secret))
    except Exception as e:  # noqa: BLE001 (status reports, it does not fail)
        print(f"  rooms: API not reachable ({type(e).__name__}: {e})")
        return 1
    print(f"  rooms: {len(listed)}")
    for room in listed:
        who = ", ".join(f"{identity} ({kind})" for identity, kind in room.participants) or "empty"
        print(f"    {room.name}: {who}")
    return 0


def call(questions: int, as_json: bool) -> int:
    from .caller import describe, place_call
    from .script import script

    url, key, secret = connect_settings()
    record = asyncio.run(place_call(url, key, secret, script(questions, random.Random())))
    print(json.dumps(record.as_dict()) if as_json else describe(record))
    return 0 if record.kept else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m lab")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status")
    c = sub.add_parser("call")
    c.add_argument("--questions", type=int, default=2)
    c.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # Only lab hosts are contacted: trust the lab CA (replacing whatever the machine sets), before
    # livekit is imported (aiohttp builds its default TLS context at import time).
    os.environ["SSL_CERT_FILE"] = str(lab_dir() / "tls/ca.crt")
    if args.command == "status":
        return status()
    return call(args.questions, args.json)


if __name__ == "__main__":
    sys.exit(main())
