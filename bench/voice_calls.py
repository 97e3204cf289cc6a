"""Benchmark (not a test): what real voice calls cost on one deployed lab host.

    scripts/lab up
    .venv/bin/python -m bench.voice_calls [--host agent1] [--levels 1,4,8] [--window 40]

For each level N, N callers (lab/caller.py: real audio both ways through the lab's LiveKit
server) hold conversations on one host, each speaking a line every few seconds; the other agent
hosts' workers are stopped meanwhile so that every call lands on that host, and started again at
the end. Over a steady window with all N calls live it prints:

- from the unit's cgroup (systemd's CPUUsageNSec where cgroup v2 has it, else the CPU times of
  every process in the cgroup, as on the lab's cgroup v1 hosts; PSS of every process in it):
  worker CPU in cores, per live call above idle, and PSS per extra live call;
- from the callers: voice-to-voice latency (end of the caller's speech leaving its microphone to
  the first agent audio arriving) p50 and p95;
- from the agent's own metrics (/metrics): the mean time spent in STT (end of speech to final
  transcript), end-of-turn detection (the rest of the end-of-utterance delay), LLM (time to first
  token) and TTS (time to first byte), and their share of the voice-to-voice latency; the rest is
  transport, jitter buffers and the worker's own overhead;

then the seed's planning figures beside the measured ones, and the capacity the role's plan
computes for this host beside what the measurement supports. Targets (issue "real voice calls"):
at most 0.08 cores and 40 MB PSS per live call; p95 at 8 calls no more than 30% above 1 call.
Run as root (lab-hosts). The callers run on this machine and share its cores with the lab.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = "livekit-voice-worker.service"
# The seed's planning figures (roles/voice_worker/defaults, profile `voice`) and the plan's knobs.
SEED_CORES, SEED_MB = 0.16, 50
# Read inside the host (python3 -c SAMPLE UNIT): the unit's CPU time and the PSS of every process
# in its cgroup.
SAMPLE = r"""
import json, os, subprocess, sys
out = subprocess.run(["systemctl", "show", "-p", "CPUUsageNSec", "-p", "ControlGroup", sys.argv[1]],
                     capture_output=True, text=True).stdout
props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
pids = set()
for hierarchy in ("unified", "systemd"):
    try:
        with open(f"/sys/fs/cgroup/{hierarchy}{props['ControlGroup']}/cgroup.procs") as f:
            pids |= set(f.read().split())
    except OSError:
        pass
pss, ticks = 0, {}
for pid in pids:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks[pid] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    except OSError:
        pass
usage = props.get("CPUUsageNSec", "")
print(json.dumps({"cpu_ns": int(usage) if usage.isdigit() else None, "pss_kb": pss,
                  "ticks": ticks, "clk_tck": os.sysconf("SC_CLK_TCK")}))
"""


def lab_hosts(*args: str, check: bool = True) -> str:
    out = subprocess.run(
        [f"{ROOT}/scripts/lab-hosts", *args], capture_output=True, text=True, check=False
    )
    if check and out.returncode != 0:
        sys.exit(f"bench: scripts/lab-hosts {' '.join(args[:3])}: {out.stderr.strip()}")
    return out.stdout


def on_host(host: str, *cmd: str) -> str:
    return lab_hosts("exec", host, "--", *cmd)


def sample(host: str) -> dict[str, float]:
    s = json.loads(on_host(host, "python3", "-c", SAMPLE, UNIT))
    s["t"] = time.monotonic()
    return s


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of this machine's CPUs: the lab hosts share its kernel, so this is
    everything: worker, LiveKit, stand-ins and callers."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def cores(a: dict, b: dict) -> float:
    """CPU of the unit between two samples, in cores: systemd's CPUUsageNSec where the cgroup
    provides it (cgroup v2), else its processes' CPU times (children they reaped included; a
    process that started in between counts in full)."""
    seconds = b["t"] - a["t"]
    if a["cpu_ns"] is not None and b["cpu_ns"] is not None:
        return (b["cpu_ns"] - a["cpu_ns"]) / 1e9 / seconds
    delta = sum(t - a["ticks"].get(pid, 0) for pid, t in b["ticks"].items())
    return delta / b["clk_tck"] / seconds


def address(host: str) -> str:
    return json.loads(lab_hosts("info", host))["address"]


def health_url(addr: str, path: str) -> str:
    from lab.__main__ import worker_ports  # after main() put the checkout on sys.path

    return f"http://{addr}:{worker_ports()[0]}{path}"


def worker_json(addr: str, path: str) -> dict:
    with urllib.request.urlopen(health_url(addr, path), timeout=5) as r:  # noqa: S310
        return json.load(r)


def histograms(addr: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of the worker's latency histograms, summed over labels."""
    with urllib.request.urlopen(health_url(addr, "/metrics"), timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    out: dict[str, tuple[float, float]] = {}
    for name in ("stt_delay", "eou_delay", "llm_ttft", "tts_ttfb"):
        s = c = 0.0
        for m in re.finditer(
            rf"^voice_worker_{name}_seconds_(sum|count)(?:{{[^}}]*}})? (\S+)$", text, re.M
        ):
            if m.group(1) == "sum":
                s += float(m.group(2))
            else:
                c += float(m.group(2))
        out[name] = (s, c)
    return out


def mean_delta(a: dict, b: dict, name: str) -> float | None:
    ds, dc = b[name][0] - a[name][0], b[name][1] - a[name][1]
    return ds / dc if dc > 0 else None


def pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


@dataclass
class Level:
    calls: int
    cores: float = 0.0
    pss_mb: float = 0.0
    latencies: list[float] = field(default_factory=list)
    unanswered: int = 0
    no_agent: int = 0
    machine_busy: float = 0.0
    agent_join: list[float] = field(default_factory=list)
    components: dict[str, float | None] = field(default_factory=dict)


def answered(progress_file: str) -> bool:
    """The caller has heard at least one answer (lab.caller --progress writes a line per turn)."""
    return os.path.exists(progress_file) and os.path.getsize(progress_file) > 0


async def run_level(
    n: int, host: str, addr: str, url: str, window: float, pause: float, ramp: float, workdir: str
) -> Level:
    """N callers, one process each (as N phones would be), arriving `ramp` s apart."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs, progress = [], []
    for i in range(n):
        path = os.path.join(workdir, f"level{n}-caller{i}.jsonl")
        progress.append(path)
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "lab.caller",
                "--url",
                url,
                "--questions",
                "400",
                "--pause",
                str(pause),
                "--progress",
                path,
                "--json",
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
        await asyncio.sleep(ramp)
    # the window starts once every caller still on the line has heard an answer
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # polling the callers' progress files
        if all(
            answered(f) or p.returncode is not None for f, p in zip(progress, procs, strict=True)
        ):
            break
        await asyncio.sleep(0.2)
    h0, s0, t0, m0 = histograms(addr), sample(host), time.time(), machine_busy()
    await asyncio.sleep(window)
    h1, s1, t1, m1 = histograms(addr), sample(host), time.time(), machine_busy()
    for p in procs:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
    records = [json.loads((await p.communicate())[0]) for p in procs]
    level = Level(n)
    level.machine_busy = (m1[0] - m0[0]) / (m1[1] - m0[1])
    level.no_agent = sum(1 for r in records if r["agent_join_s"] is None)
    level.agent_join = [r["agent_join_s"] for r in records if r["agent_join_s"] is not None]
    level.cores = cores(s0, s1)
    level.pss_mb = (s0["pss_kb"] + s1["pss_kb"]) / 2 / 1024
    for r in records:
        for turn in r["turns"]:
            if t0 <= turn["at"] <= t1:
                if turn["latency_s"] is None or not turn["answered"]:
                    level.unanswered += 1
                else:
                    level.latencies.append(turn["latency_s"])
    level.components = {k: mean_delta(h0, h1, k) for k in h0}
    # wait until the calls have ended on the worker before the next level
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # polling another host's endpoint
        if worker_json(addr, "/ready").get("active_jobs", 0) == 0:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)
    return level


async def idle(host: str, seconds: float) -> Level:
    s0 = sample(host)
    await asyncio.sleep(seconds)
    s1 = sample(host)
    level = Level(0)
    level.cores = cores(s0, s1)
    level.pss_mb = (s0["pss_kb"] + s1["pss_kb"]) / 2 / 1024
    return level


def host_plan(host: str) -> dict[str, float]:
    env = dict(
        line.split("=", 1)
        for line in on_host(host, "cat", "/etc/livekit-voice-worker/worker.env").splitlines()
        if "=" in line
    )
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", on_host(host, "cat", "/proc/meminfo")).group(1))
    return {
        "vcpus": int(on_host(host, "nproc").strip()),
        "mem_mb": mem_kb // 1024,
        "max_jobs": int(env["WORKER_MAX_JOBS"]),
    }


def report(
    levels: list[Level],
    plan: dict[str, float],
    base_mb_plan: float = 512,
    cpu_fraction: float = 0.75,
) -> None:
    idle_l = levels[0]
    print(
        f"\n{'calls':>5} {'cores':>6} {'cores/call':>10} {'PSS MB':>7} {'MB/extra call':>13} "
        f"{'v2v p50':>8} {'v2v p95':>8} {'turns':>5} {'missed':>6} {'agent join max':>14} "
        f"{'no agent':>8} {'machine busy':>12}  "
        f"{'STT':>12} {'end of turn':>12} {'LLM':>12} {'TTS':>12}"
    )
    per_call: dict[int, tuple[float, float]] = {}
    for lv in levels:
        if lv.calls == 0:
            print(f"{0:>5} {lv.cores:6.3f} {'':>10} {lv.pss_mb:7.1f}")
            continue
        cpc = (lv.cores - idle_l.cores) / lv.calls
        mpc = (lv.pss_mb - idle_l.pss_mb) / lv.calls
        per_call[lv.calls] = (cpc, mpc)
        p50 = statistics.median(lv.latencies) if lv.latencies else float("nan")
        p95 = pct(lv.latencies, 0.95) if lv.latencies else float("nan")
        c = lv.components
        stt = c.get("stt_delay")
        eot = (c["eou_delay"] - (stt or 0)) if c.get("eou_delay") is not None else None
        parts = {"stt": stt, "eot": eot, "llm": c.get("llm_ttft"), "tts": c.get("tts_ttfb")}

        def fmt(v: float | None, p50: float = p50) -> str:
            return f"{v:5.2f}s {v / p50:4.0%}" if v is not None and p50 == p50 else "-"

        print(
            f"{lv.calls:>5} {lv.cores:6.3f} {cpc:10.3f} {lv.pss_mb:7.1f} {mpc:13.1f} "
            f"{p50:7.2f}s {p95:7.2f}s {len(lv.latencies):>5} {lv.unanswered:>6} "
            f"{max(lv.agent_join, default=float('nan')):13.2f}s {lv.no_agent:>8} "
            f"{lv.machine_busy:12.0%}  "
            f"{fmt(parts['stt']):>12} {fmt(parts['eot']):>12} {fmt(parts['llm']):>12} "
            f"{fmt(parts['tts']):>12}"
        )
    lv1 = next((lv for lv in levels if lv.calls == 1), None)
    top = levels[-1]
    if lv1 and lv1.latencies and top.latencies and top is not lv1:
        ratio = pct(top.latencies, 0.95) / pct(lv1.latencies, 0.95)
        print(f"\np95 at {top.calls} calls / p95 at 1 call: {ratio:.2f} (target <= 1.30)")
    # the dearest level counts: a saturated machine starves the worker, so calls look cheaper
    cpc = max(c for c, _ in per_call.values())
    mpc = max(m for _, m in per_call.values())
    print(
        f"\nper live call (the dearest level): {cpc:.3f} cores (target <= 0.08, seed plan "
        f"{SEED_CORES}), {mpc:.1f} MB PSS (target <= 40, seed plan {SEED_MB})"
    )
    vcpus, mem = plan["vcpus"], plan["mem_mb"]
    seed_jobs = min(
        math.floor(vcpus * cpu_fraction / SEED_CORES + 1e-6),
        math.floor((mem - base_mb_plan) / SEED_MB),
    )
    by_cpu = math.floor(vcpus * cpu_fraction / cpc) if cpc > 0 else 0
    by_mem = math.floor((mem - idle_l.pss_mb) / mpc) if mpc > 0 else 0
    print(
        f"capacity of this host ({vcpus} vCPUs, {mem} MB): the role's plan (seed figures) "
        f"{seed_jobs} calls, worker.env WORKER_MAX_JOBS={plan['max_jobs']}; the measurement "
        f"supports {min(by_cpu, by_mem)} ({by_cpu} by CPU at {cpu_fraction:.0%} of the vCPUs, "
        f"{by_mem} by memory)"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.voice_calls")
    parser.add_argument("--host", default="agent1")
    parser.add_argument("--levels", default="1,4,8")
    parser.add_argument("--window", type=float, default=40.0, help="seconds measured per level")
    parser.add_argument("--pause", type=float, default=2.0, help="caller's pause between turns")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds between callers' arrivals")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from lab.__main__ import connect_settings, lab_dir

    os.environ["SSL_CERT_FILE"] = str(lab_dir() / "tls/ca.crt")
    url, key, secret = connect_settings()
    os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"] = key, secret
    addr = address(args.host)
    others = [
        h for h in ("agent1", "agent2") if h != args.host and lab_hosts("info", h, check=False)
    ]
    for h in others:
        on_host(h, "systemctl", "stop", UNIT)
    try:
        plan = host_plan(args.host)
        print(f"host {args.host} ({addr}): {plan}; other workers stopped: {others}")
        levels = [await idle(args.host, 10)]
        for n in (int(x) for x in args.levels.split(",")):
            with tempfile.TemporaryDirectory(prefix="bench-calls-") as workdir:
                levels.append(
                    await run_level(
                        n, args.host, addr, url, args.window, args.pause, args.ramp, workdir
                    )
                )
            print(f"level {n}: {len(levels[-1].latencies)} answered turns in the window")
        report(levels, plan)
    finally:
        for h in others:
            on_host(h, "systemctl", "start", UNIT)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
