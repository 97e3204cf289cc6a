"""Benchmark (not a test): what a converge that changes nothing costs, against `ansible all -m ping`
on the same hosts, on a running lab (`scripts/lab up`).

    .venv/bin/python -m bench.noop_converge [--runs 3] [--profile]

Alternates ping and `ansible-playbook site.yml` runs, prints each run's seconds, the medians and
their ratio (target, issue 14: 10x or less). A site.yml run that changed something is reported
and not counted (it was not a no-op). --profile adds one more site.yml run with Ansible's own
log (log_path, every line time-stamped) and lists the tasks that took more than 0.3 s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from lab.loopback import ROOT

INVENTORY = "inventories/lab"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)", re.M)


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    took = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return took, proc.stdout


def changed(out: str) -> dict[str, int]:
    return {host: int(c) for host, _ok, c, *_ in RECAP.findall(out) if int(c) > 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    ping = [".venv/bin/ansible", "all", "-i", INVENTORY, "-m", "ansible.builtin.ping"]
    site = [".venv/bin/ansible-playbook", "site.yml", "-i", INVENTORY]
    listed = re.search(r"hosts \((\d+)\)", run([*ping[:4], "--list-hosts"])[1])
    hosts = int(listed.group(1)) if listed else None
    pings: list[float] = []
    sites: list[float] = []
    for i in range(args.runs):
        t_ping, _ = run(ping)
        t_site, out = run(site)
        pings.append(t_ping)
        diff = changed(out)
        if diff:
            print(
                f"run {i + 1}: ping {t_ping:.2f} s, site.yml {t_site:.1f} s CHANGED {diff}"
                " (not a no-op; not counted)"
            )
            continue
        sites.append(t_site)
        print(f"run {i + 1}: ping {t_ping:.2f} s, site.yml {t_site:.1f} s (changed=0)", flush=True)
    if not sites:
        sys.exit("no run of site.yml was a no-op")
    p, s = statistics.median(pings), statistics.median(sites)
    print(f"\nmedian over {args.runs} runs on the lab{f' ({hosts} hosts)' if hosts else ''}:")
    print(f"  ansible all -m ping     {p:6.2f} s")
    print(f"  no-op site.yml          {s:6.2f} s")
    print(f"  ratio                   {s / p:6.1f}x (target <= 10x)")
    if args.profile:
        # Ansible's own log (log_path) stamps every line: a task lasts until the next header.
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "ansible.log"
            run(site, {"ANSIBLE_LOG_PATH": str(log)})
            slow = [(t, name) for name, t in task_seconds(log.read_text()) if t > 0.3]
        print(f"\ntasks over 0.3 s in a no-op run ({len(slow)}):")
        for t, name in sorted(slow, reverse=True):
            print(f"  {t:6.2f} s  {name}")


LOG_LINE = re.compile(r"^(\S+ \S+),(\d{3}) p=\d+ u=\S+ n=ansible \S+\| (.*)$", re.M)
HEADER = ("TASK [", "RUNNING HANDLER [", "PLAY [", "PLAY RECAP")


def task_seconds(log: str) -> list[tuple[str, float]]:
    """(task, seconds) for each task header of an Ansible log, in order."""
    out: list[tuple[str, float]] = []
    current: tuple[str, float] | None = None
    for stamp, ms, text in LOG_LINE.findall(log):
        if not text.startswith(HEADER):
            continue
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(ms) / 1000
        if current and current[0].startswith(("TASK [", "RUNNING HANDLER [")):
            out.append((current[0], at - current[1]))
        current = (text.rstrip("* ").strip(), at)
    return out


if __name__ == "__main__":
    main()
