"""Benchmark (not a test): the worker's memory with 0, 1 and 4 running jobs (synthetic calls,
which load Silero VAD in prewarm like a real job), dispatched by the real livekit-server on
loopback (the one scripts/bootstrap built). Start to READY: bench/worker_start.py.

    .venv/bin/python -m bench.worker_memory [--runs 3] [--join]

`--join`: each call also joins its room (the job process then carries LiveKit's rtc client and
a media connection, as a real call does); without it the calls stay out of their rooms.

Prints RSS and PSS (MB) summed over the worker's process tree (worker, forkserver, idle and
job processes), and PSS per extra running job. Target (issue 2): each extra running job at most
40 MB PSS.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import tempfile
from pathlib import Path

import psutil

from lab.livekit_loopback import LiveKitServer
from lab.worker_process import start_worker

MB = 1024 * 1024


def tree_memory(pid: int) -> tuple[float, float, int]:
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    rss = pss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss += info.rss
        pss += info.pss
    return rss / MB, pss / MB, len(procs)


async def settle(pid: int, procs_expected: int) -> tuple[float, float, int]:
    """Memory once the tree has the expected process count and idle processes are initialized."""
    async with asyncio.timeout(60):
        while True:
            rss, pss, n = tree_memory(pid)
            if n >= procs_expected:
                await asyncio.sleep(2)  # let prewarm (VAD load) in new idle processes finish
                return tree_memory(pid)
            await asyncio.sleep(0.2)


async def one_run(tmp: Path, join: bool) -> dict[str, float]:
    (tmp / "livekit").mkdir()
    lk = LiveKitServer(tmp / "livekit")
    await lk.start()
    w = await start_worker(tmp, lk.url, extra_env={"WORKER_MAX_JOBS": "8"})
    try:
        await w.notify.wait_for("READY", "1", timeout=90)
        out: dict[str, float] = {}
        # worker + forkserver + 1 idle process (+ resource tracker)
        base_n = len([w.pid, *psutil.Process(w.pid).children(recursive=True)])
        out["rss_0"], out["pss_0"], _ = await settle(w.pid, base_n)
        running = 0
        for target in (1, 4):
            while running < target:
                # one at a time: with one idle process and no job running, livekit-agents 1.8.9
                # counts an accepted-but-not-started job as its whole load threshold and answers
                # a second offer in that moment "not available"
                job_id = await lk.dispatch(f"bench-{running}", {"hold_seconds": 120, "join": join})
                await w.wait_for_log("job started", job_id=job_id, timeout=60)
                running += 1
            out[f"rss_{target}"], out[f"pss_{target}"], _ = await settle(w.pid, base_n + running)
        return out
    finally:
        w.stop()
        await lk.stop(signal.SIGKILL)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--join", action="store_true", help="the calls join their rooms")
    args = parser.parse_args()
    results = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            results.append(await one_run(Path(d), args.join))
        print(f"run {i + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in results[-1].items()))

    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    calls = "joining their rooms" if args.join else "out of their rooms"
    print(f"\nmedian of {args.runs} runs, {psutil.cpu_count()} cpus, calls {calls}")
    for n in (0, 1, 4):
        rss, pss = med(f"rss_{n}"), med(f"pss_{n}")
        print(f"  {n} running job(s): RSS {rss:7.1f} MB   PSS {pss:7.1f} MB")
    per_job = (med("pss_4") - med("pss_0")) / 4
    print(f"  PSS per extra running job: {per_job:.1f} MB (target <= 40 MB)")


if __name__ == "__main__":
    asyncio.run(main())
