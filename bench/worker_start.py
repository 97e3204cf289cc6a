"""Benchmark (not a test): seconds from process start until the worker is registered with LiveKit,
for the stock livekit-agents worker (bench/stock_worker.py) and ours side by side, against the same
real livekit-server (the one scripts/bootstrap built, on loopback).

    .venv/bin/python -m bench.worker_start [--runs 5]

Stock: until it logs "registered worker". Ours: until READY=1 (sent once registered, which is
what READY means) and, for the breakdown, the times of its own log lines. Runs alternate which
worker starts first; each worker runs alone. Target (issue 14): ours no later than stock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from lab.loopback import ROOT, TEST_SECRETS, free_port
from lab.worker_process import NotifyListener

SERVER = ROOT / ".cache/livekit-server/current/livekit-server"
# our log lines that mark the path to READY, in order (the breakdown)
MILESTONES = ("starting worker", "preloading plugins", "HTTP server listening", "registered worker")
KEY = {"stock": "registered worker", "ours": "READY=1"}


async def start_server(tmp: Path) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    config = {
        "port": port,
        "bind_addresses": ["127.0.0.1"],
        "rtc": {
            "tcp_port": free_port(),
            "udp_port": free_port(),
            "use_external_ip": False,
            "node_ip": "127.0.0.1",
        },
        "keys": {TEST_SECRETS["LIVEKIT_API_KEY"]: TEST_SECRETS["LIVEKIT_API_SECRET"]},
        "logging": {"level": "warn"},
    }
    (tmp / "livekit.yaml").write_text(json.dumps(config))  # JSON is YAML
    proc = await asyncio.create_subprocess_exec(
        str(SERVER),
        "--config",
        str(tmp / "livekit.yaml"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    async with asyncio.timeout(30), aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/") as r:
                    if r.status == 200:
                        return proc, f"ws://127.0.0.1:{port}"
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def spawn(
    argv: list[str],
    env: dict[str, str],
    until: asyncio.Future[float] | None = None,
) -> dict[str, float]:
    """Start a worker; return when each milestone line arrived on its output, seconds after the
    start, once it registered (and `until` resolved, for ours: READY=1)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    marks: dict[str, float] = {}
    try:
        async with asyncio.timeout(60):
            assert proc.stdout is not None
            async for line in proc.stdout:
                for m in MILESTONES:
                    if m.encode() in line and m not in marks:
                        marks[m] = time.monotonic() - started
                if "registered worker" in marks:
                    if until is not None:
                        marks["READY=1"] = await until - started
                    return marks
        raise RuntimeError(f"{argv} exited before registering")
    finally:
        os.killpg(proc.pid, 9)
        await proc.wait()


def _env(url: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "LIVEKIT_URL": url, **TEST_SECRETS}


async def stock(tmp: Path, url: str) -> dict[str, float]:
    argv = [sys.executable, "-m", "bench.stock_worker", "start", "--log-level", "INFO"]
    return await spawn(argv, _env(url))


async def ours(tmp: Path, url: str) -> dict[str, float]:
    notify = NotifyListener(tmp / "notify.sock")
    await notify.start()
    env = {
        **_env(url),
        "HEALTH_CHECK_PORT": str(free_port()),
        "WORKER_STATE_DIR": str(tmp / "state"),
        "WORKER_METRICS_DIR": str(tmp / "metrics"),
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "30000000",
    }

    async def ready_at() -> float:
        return (await notify.wait_for("READY", "1", timeout=60)).t

    ready = asyncio.ensure_future(ready_at())
    try:
        return await spawn([sys.executable, "-m", "voice_worker", "start"], env, ready)
    finally:
        ready.cancel()
        notify.close()


def _fmt(v: float | None) -> str:
    return "      -" if v is None else f"{v:7.2f}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not SERVER.exists():
        sys.exit(f"{SERVER} is missing: run scripts/bootstrap (it builds livekit-server)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server, url = await start_server(tmp)
        try:
            runs: dict[str, list[dict[str, float]]] = {"stock": [], "ours": []}
            for i in range(args.runs):
                order = ("stock", "ours") if i % 2 == 0 else ("ours", "stock")
                for which in order:
                    run_dir = tmp / f"run{i}-{which}"
                    run_dir.mkdir()
                    fn = stock if which == "stock" else ours
                    runs[which].append(await fn(run_dir, url))
                print(
                    f"run {i + 1}: stock {runs['stock'][-1][KEY['stock']]:.2f} s, "
                    f"ours {runs['ours'][-1][KEY['ours']]:.2f} s ({' then '.join(order)})",
                    flush=True,
                )
        finally:
            server.kill()
            await server.wait()

    def med(which: str, mark: str) -> float | None:
        vals = [r[mark] for r in runs[which] if mark in r]
        return statistics.median(vals) if vals else None

    s, o = med("stock", KEY["stock"]), med("ours", KEY["ours"])
    assert s is not None and o is not None
    print(f"\nmedian of {args.runs} runs, seconds from process start (real livekit-server):")
    print(f"  {'':24s} {'stock':>7s} {'ours':>7s}")
    for m in (*MILESTONES, "READY=1"):
        a, b = med("stock", m), med("ours", m)
        print(f"  {m:24s} {_fmt(a)} {_fmt(b)}")
    print(
        f"  registered: stock {s:.2f} s, ours READY {o:.2f} s, ours/stock {o / s:.2f}"
        " (target <= 1.00)"
    )


if __name__ == "__main__":
    asyncio.run(main())
