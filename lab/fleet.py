"""Callers as the judge of a fleet operation: keep calls going, sample capacity, report.

    python -m lab.fleet run --url wss://LK [--url wss://LK2] --dir DIR --calls 6 --audio 0.5 \\
        --health http://10.213.0.21:8081 --health ... --stop-file DIR/stop
    python -m lab.fleet report --dir DIR --windows DIR/windows.json [--server-log FILE ...] \\
        [--sessions HOST=FILE ...]

`run` keeps `--calls` calls going at once through the real LiveKit server until the stop file
exists: one caller line per call at once, each a process of its own (`slot`, placing calls one
after the other), each through the next `--url` in turn (the nodes of a cluster). A new call is an
audio call (`lab.caller`: espeak speech in, the agent's speech recognized out) whenever that keeps
the audio calls placed so far at `--audio` or more of all calls placed, else a text call
(`lab.chat`: the same conversation as chat through the room, far cheaper on a 2-core lab). Each
call lasts 20-60 s: it asks questions until its own random deadline, then says goodbye; once the
stop file exists calls in progress say goodbye after the turn in progress and no new one starts.
Every finished call is appended to DIR/calls.jsonl (a `CallRecord` plus its mode, slot and URL).
Every second it asks each worker endpoint (`--health`, the worker's health server) for /ready
and appends what every worker said to DIR/samples.jsonl: accepting (200), registered (connected
to LiveKit), draining, active jobs. The callers run at nice -10 (`lab.outside_the_lab`).

`report` reads those files and the windows (`{"baseline": [T0, T1], "windows": [[NAME, T0, T1,
REQUIRED], ...]}`, epoch seconds; REQUIRED, the workers that must accept throughout, is optional
and passed through) and prints one JSON object per operation window (calls in progress
during it, kept, cut, without an agent or waiting > 5 s for one, longest wait, minimum workers
accepting and registered, voice-to-voice p95 during it against the baseline window, text answer
p95) and a Markdown table of them. `--server-log` (a LiveKit server's whole
`journalctl -u livekit-server -o short-unix`; once per node of a cluster) adds the minimum number
of workers the servers had registered between them: each logs every registration and every
worker it closes. `--sessions HOST=FILE` (a worker host's sessions.jsonl) adds `through`: for
each URL, the calls placed and kept through it and which worker host served their rooms. Each
operation's `not_kept_story` tells every call not kept for a person: how it ended, each turn it
did not hear answered (said -> heard) and, from DIR/lab-providers.log when there, what the
stand-ins recognized and answered around that turn, and, from DIR/worker-*.log (the worker
hosts' journals) when there, what the call's job logged.

LIVEKIT_API_KEY and LIVEKIT_API_SECRET come from the environment, a private CA through
SSL_CERT_FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from . import outside_the_lab
from .caller import place_call
from .chat import place_text_call
from .script import script

MIN_CALL_S, MAX_CALL_S = 20.0, 60.0
LAST_TURN_S = 14.0  # the turn in progress at the deadline, then goodbye (audio: ~7 s each)
AGENT_WAIT_LIMIT_S = 5.0
QUESTIONS = 40  # more than any call reaches before its deadline
_WORKER_EVENT = re.compile(r"\s(worker registered|closing worker)\s")
_PROVIDER_LINE = re.compile(
    r"^(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3}) (?P<rest>.*)"
)
STAND_IN_LINE_CHARS = 160
# what a job logs that tells its call's story (its last JOB_STORY_LINES lines), besides warnings
# and errors; the last two only when the worker logs at debug
_JOB_STORY = (
    "job started",
    "ending session",
    "job ended",
    "received user transcript",
    "conversation_item_added",
)
_NOISE = "metrics_collected is deprecated"  # every job warns it (livekit-agents 1.8.9)
JOB_STORY_LINES = 20
# around a turn the caller did not hear answered: from just before the end of its speech to the
# stand-ins' final transcript (endpointing 0.8 s), the LLM's answer and the start of speech
STAND_IN_WINDOW_S = (0.5, 4.0)


def _append(path: Path, obj: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")


def _stopped(stop: Path) -> bool:
    return stop.exists()  # one stat per turn: not worth a thread


class _Mix:
    """Which kind the next call is: audio whenever that keeps audio at `share` or more of all
    calls placed so far (so the share holds at every moment, not only on average)."""

    def __init__(self, share: float) -> None:
        self.share, self.audio, self.placed = share, 0, 0

    def next_is_audio(self) -> bool:
        self.placed += 1
        audio = self.audio < self.share * self.placed
        self.audio += audio
        return audio


async def _slot(n: int, args: argparse.Namespace, stop: Path, mix: _Mix) -> None:
    """One caller line: a process of its own (`python -m lab.fleet slot`) that places call after
    call, audio or text as `mix` decides, each lasting 20-60 s. Its own process keeps its
    microphone and ear in real time however busy the other callers' recognizers are (in one
    process they share the GIL, and a late microphone frame garbles the caller's speech), and it
    imports the client once (a process per call started at the callers' priority starved the lab
    for a second each time)."""
    rng = random.Random()
    url = args.url[n % len(args.url)]
    calls = Path(args.dir) / "calls.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lab.fleet",
        "slot",
        "--url",
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        while not _stopped(stop):
            mode = "audio" if mix.next_is_audio() else "text"
            order = {"mode": mode, "seconds": rng.uniform(MIN_CALL_S, MAX_CALL_S - LAST_TURN_S)}
            proc.stdin.write((json.dumps({**order, "stop": str(stop)}) + "\n").encode())
            await proc.stdin.drain()
            record = await _record(proc.stdout)
            if record is None:
                raise RuntimeError(f"lab.fleet slot {n} exited {await proc.wait()}")
            _append(calls, {**record, "mode": mode, "slot": n, "url": url})
            if record["ended"] in ("no-agent", "error"):
                await asyncio.sleep(1.0)  # a fault is recorded, not hammered
    finally:
        proc.stdin.close()
        await proc.wait()


async def _record(out: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next call record a caller line printed (None when it ended); a line of anything else
    (a library writing to stdout) is skipped."""
    while line := await out.readline():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "ended" in record:
            return record
    return None


async def slot(args: argparse.Namespace) -> int:
    """The caller line's process: one JSON order per stdin line ({"mode": "audio"|"text",
    "seconds": S, "stop": FILE}), one call each (goodbye after S seconds, or once FILE exists,
    after the turn in progress), its record as one JSON line on stdout."""
    key, secret = os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"]
    rng = random.Random()
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        order = json.loads(line)
        deadline = time.monotonic() + float(order["seconds"])
        stop = Path(order["stop"])

        def wrap_up(deadline: float = deadline, stop: Path = stop) -> bool:
            return time.monotonic() >= deadline or _stopped(stop)

        lines = script(QUESTIONS, rng)
        if order["mode"] == "audio":
            record = await place_call(args.url[0], key, secret, lines, pause_s=1.0, wrap_up=wrap_up)
        else:
            record = await place_text_call(
                args.url[0], key, secret, lines, pause_s=2.0, wrap_up=wrap_up
            )
        sys.stdout.write(json.dumps(record.as_dict()) + "\n")
        sys.stdout.flush()
    return 0


async def _sample(urls: list[str], out: Path, done: asyncio.Event) -> None:
    # a busy machine answers late: a worker that has not answered in 4 s counts as not accepting
    timeout = aiohttp.ClientTimeout(total=4.0)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def ask(url: str) -> dict[str, Any]:
            try:
                async with http.get(url.rstrip("/") + "/ready") as r:
                    body = await r.json(content_type=None)
                    return {
                        "status": r.status,
                        "worker_id": body.get("worker_id"),
                        "registered": bool(body.get("connected")),
                        "draining": bool(body.get("draining")),
                        "active_jobs": body.get("active_jobs"),
                    }
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                return {"status": None, "error": type(e).__name__}

        while not done.is_set():
            t = time.time()
            said = await asyncio.gather(*(ask(u) for u in urls))
            _append(out, {"t": round(t, 3), "workers": dict(zip(urls, said, strict=True))})
            await asyncio.sleep(max(0.0, 1.0 - (time.time() - t)))


async def run(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    stop = Path(args.stop_file)
    done = asyncio.Event()
    sampler = asyncio.create_task(_sample(args.health, d / "samples.jsonl", done))
    slots = []
    mix = _Mix(args.audio)
    for n in range(args.calls):
        slots.append(asyncio.create_task(_slot(n, args, stop, mix)))
        await asyncio.sleep(args.stagger)  # the calls start apart, as callers do
    await asyncio.gather(*slots)
    done.set()
    await sampler
    return 0


# -- report --------------------------------------------------------------------------------------


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def server_workers(lines: list[str]) -> list[tuple[float, int]]:
    """(time, workers registered) after each registration or close the LiveKit server logged
    (`journalctl -u livekit-server -o short-unix`); a server start empties the set."""
    workers: set[str] = set()
    out: list[tuple[float, int]] = []
    for line in lines:
        stamp, _, rest = line.partition(" ")
        try:
            t = float(stamp)
        except ValueError:
            continue
        if "starting LiveKit server" in rest:
            workers.clear()
            out.append((t, 0))
            continue
        brace = rest.find("{")
        try:
            worker = json.loads(rest[brace:]).get("workerID") if brace >= 0 else None
        except ValueError:
            worker = None
        if not worker:
            continue
        event = _WORKER_EVENT.search(rest)
        if event is None:
            continue
        if event.group(1) == "worker registered":
            workers.add(worker)
        else:
            workers.discard(worker)
        out.append((t, len(workers)))
    return out


def summed(series: list[list[tuple[float, int]]]) -> list[tuple[float, int]]:
    """Several servers' step series as one: after each change, the sum of every server's last
    value (a server that logged nothing yet counts 0)."""
    last = [0] * len(series)
    events = sorted((t, i, v) for i, s in enumerate(series) for t, v in s)
    out: list[tuple[float, int]] = []
    for t, i, v in events:
        last[i] = v
        out.append((t, sum(last)))
    return out


def _min_over(series: list[tuple[float, int]], start: float, end: float) -> int | None:
    """The least value a step series held during [start, end]."""
    before = [v for t, v in series if t <= start]
    inside = [v for t, v in series if start < t <= end]
    held = ([before[-1]] if before else []) + inside
    return min(held) if held else None


def _clock(t: float) -> str:
    """Epoch seconds as this machine's HH:MM:SS.mmm, how the story's lines are stamped."""
    ms = round(t * 1000)  # the log's milliseconds come back exactly (floats would cut one off)
    return f"{time.strftime('%H:%M:%S', time.localtime(ms // 1000))}.{ms % 1000:03d}"


def provider_lines(lines: list[str]) -> list[tuple[float, str]]:
    """(epoch, "HH:MM:SS.mmm name message") for each line of the stand-ins' log
    (lab/providers: `%(asctime)s %(name)s %(message)s`, local time, on this machine)."""
    out = []
    for line in lines:
        m = _PROVIDER_LINE.match(line)
        if m is None:
            continue
        t = time.mktime(time.strptime(m["stamp"], "%Y-%m-%d %H:%M:%S")) + int(m["ms"]) / 1000
        out.append((t, f"{_clock(t)} {m['rest'][:STAND_IN_LINE_CHARS]}"))
    return out


def job_lines(lines: list[str]) -> dict[str, list[str]]:
    """Per room, what its job logged that tells a call's story, from a worker host's journal
    (`journalctl -u 'livekit-voice-worker*' -o short-unix`, JSON lines): its start and end,
    warnings and errors, and, when the worker logs at debug, what it heard and said."""
    out: dict[str, list[str]] = {}
    for line in lines:
        stamp, _, rest = line.partition(" ")
        host, _, rest = rest.partition(" ")
        brace = rest.find("{")
        try:
            t, entry = float(stamp), json.loads(rest[brace:]) if brace >= 0 else {}
        except ValueError:
            continue
        room, message = entry.get("room_name"), str(entry.get("message", ""))
        alarm = entry.get("level") in ("WARNING", "ERROR", "CRITICAL")
        if not room or not (message in _JOB_STORY or (alarm and not message.startswith(_NOISE))):
            continue
        said = [f"{k}={v!r}" for k, v in entry.items() if k.startswith("lk.pii.") or k == "reason"]
        out.setdefault(room, []).append(
            f"{_clock(t)} {host} {entry.get('level', '-')} {message[:STAND_IN_LINE_CHARS]} "
            f"{' '.join(said)}".rstrip()
        )
    return out


def what_went_wrong(
    call: dict[str, Any],
    providers: list[tuple[float, str]],
    jobs: dict[str, list[str]] | None = None,
) -> list[str]:
    """A call that was not kept, for a person: how it ended, each turn the caller did not hear
    answered (said -> heard), what the stand-ins logged around that turn (every call's lines in
    that window: they name no room, only the worker host's address), and what the call's job
    logged, to tell the party that misheard."""
    out = [
        f"{call['room']} ({call['mode']}, via {call.get('url', '-')}): agent "
        f"{call['agent'] or '-'} after {call['agent_join_s']} s, ended {call['ended'] or '-'}"
        + (f", {call['error']}" if call.get("error") else "")
    ]
    for t in call["turns"]:
        if t["answered"]:
            continue
        out.append(
            f"  {t['said']!r} -> heard {t['heard'] or '-'!r} (expected {t['expected']!r}, "
            f"after {t['latency_s']} s, {t['answer_s']} s of speech)"
        )
        out += [
            f"    {line}"
            for at, line in providers
            if t["at"] - STAND_IN_WINDOW_S[0] <= at <= t["at"] + STAND_IN_WINDOW_S[1]
        ]
    story = (jobs or {}).get(call["room"], [])
    if story:
        out.append("  its job:")
        out += [f"    {line}" for line in story[-JOB_STORY_LINES:]]
    return out


def window_report(
    name: str,
    start: float,
    end: float,
    calls: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    baseline: tuple[float, float] | None,
    server: list[tuple[float, int]] | None,
    providers: list[tuple[float, str]] | None = None,
    jobs: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    during = [  # in progress at some moment of the window
        c for c in calls if c["placed_at"] <= end and c["placed_at"] + c["duration_s"] >= start
    ]
    waits = [c["agent_join_s"] for c in during if c["agent_join_s"] is not None]
    inside = [s for s in samples if start <= s["t"] <= end]

    def turns(mode: str, t0: float, t1: float) -> list[float]:
        return [
            t["latency_s"]
            for c in calls
            if c["mode"] == mode
            for t in c["turns"]
            if t["latency_s"] is not None and t0 <= t["at"] <= t1
        ]

    slow = [c for c in during if (c["agent_join_s"] or 0) > AGENT_WAIT_LIMIT_S]
    return {
        "operation": name,
        "duration_s": round(end - start, 1),
        "placed": len(during),
        "audio": sum(1 for c in during if c["mode"] == "audio"),
        "kept": sum(1 for c in during if c["kept"]),
        "cut": sum(1 for c in during if c["ended"] == "cut"),
        "no_agent": sum(1 for c in during if c["ended"] == "no-agent"),
        "slow_agent": len(slow),
        "not_kept_story": [
            line
            for c in during
            if not c["kept"]
            for line in what_went_wrong(c, providers or [], jobs)
        ],
        "longest_agent_wait_s": max(waits) if waits else None,
        "call_s": [
            min((c["duration_s"] for c in during), default=None),
            max((c["duration_s"] for c in during), default=None),
        ],
        "samples": len(inside),
        "min_accepting": min(
            (sum(1 for w in s["workers"].values() if w["status"] == 200) for s in inside),
            default=None,
        ),
        "min_registered": min(
            (sum(1 for w in s["workers"].values() if w.get("registered")) for s in inside),
            default=None,
        ),
        "min_server_registered": _min_over(server, start, end) if server is not None else None,
        "v2v_p95_s": percentile(turns("audio", start, end), 95),
        "v2v_p95_before_s": percentile(turns("audio", *baseline), 95) if baseline else None,
        "text_p95_s": percentile(turns("text", start, end), 95),
        "audio_turns": len(turns("audio", start, end)),
    }


def table(rows: list[dict[str, Any]]) -> str:
    def f(v: object) -> str:
        return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    head = (
        "| operation | duration s | placed (audio) | kept | cut | no agent / >5 s | "
        "min accepting (required) | min registered (server) | longest wait s | "
        "v2v p95 s (before) |"
    )
    out = [head, "|" + "---|" * 10]
    for r in rows:
        out.append(
            f"| {r['operation']} | {f(r['duration_s'])} | {r['placed']} ({r['audio']}) | "
            f"{r['kept']} | {r['cut']} | {r['no_agent']} / {r['slow_agent']} | "
            f"{f(r['min_accepting'])} ({f(r.get('required_accepting'))}) | "
            f"{f(r['min_registered'])} ({f(r['min_server_registered'])}) | "
            f"{f(r['longest_agent_wait_s'])} | {f(r['v2v_p95_s'])} ({f(r['v2v_p95_before_s'])}) |"
        )
    return "\n".join(out)


def through(calls: list[dict[str, Any]], sessions: dict[str, list[dict[str, Any]]]):
    """Per URL the calls were placed through: placed, kept, and which worker host served their
    rooms (from the hosts' session records, matched by room name)."""
    host_of = {s.get("room"): host for host, records in sessions.items() for s in records}
    out: dict[str, dict[str, Any]] = {}
    for c in calls:
        row = out.setdefault(c["url"], {"placed": 0, "kept": 0, "served_by": {}})
        row["placed"] += 1
        row["kept"] += bool(c["kept"])
        host = host_of.get(c["room"], "-")
        row["served_by"][host] = row["served_by"].get(host, 0) + 1
    return out


def report(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    calls, samples = _read(d / "calls.jsonl"), _read(d / "samples.jsonl")
    server = None
    if args.server_log:
        server = summed([server_workers(Path(f).read_text().splitlines()) for f in args.server_log])
    windows = json.loads(Path(args.windows).read_text())
    baseline = tuple(float(t) for t in windows["baseline"]) if windows.get("baseline") else None
    log = d / "lab-providers.log"
    providers = provider_lines(log.read_text().splitlines()) if log.exists() else []
    jobs: dict[str, list[str]] = {}
    for journal in sorted(d.glob("worker-*.log")):  # the fleet scenario keeps them here
        for room, lines in job_lines(journal.read_text().splitlines()).items():
            jobs.setdefault(room, []).extend(lines)
    rows = []
    for name, t0, t1, *required in windows["windows"]:
        row = window_report(
            name, float(t0), float(t1), calls, samples, baseline, server, providers, jobs
        )
        row["required_accepting"] = int(required[0]) if required else None
        rows.append(row)
    out = {
        "operations": rows,
        "table": table(rows),
        "calls": len(calls),
        "audio_calls": sum(1 for c in calls if c["mode"] == "audio"),
    }
    if args.sessions:
        sessions = {}
        for spec in args.sessions:
            host, _, path = spec.partition("=")
            sessions[host] = _read(Path(path))
        out["through"] = through(calls, sessions)
    print(json.dumps(out))
    return 0


def main() -> int:
    outside_the_lab()
    parser = argparse.ArgumentParser(prog="python -m lab.fleet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="keep calls going and sample the workers until the stop file")
    r.add_argument(
        "--url", action="append", required=True, help="wss:// URL of a LiveKit node (repeatable)"
    )
    r.add_argument("--dir", required=True, help="where calls.jsonl and samples.jsonl go")
    r.add_argument("--calls", type=int, default=6, help="calls at once")
    r.add_argument("--audio", type=float, default=0.5, help="least share of audio calls (0-1)")
    r.add_argument("--stagger", type=float, default=2.0, help="seconds between the slots' starts")
    r.add_argument("--health", action="append", default=[], help="a worker's health URL")
    r.add_argument("--stop-file", required=True)
    c = sub.add_parser("slot", help="(run's caller line) place the calls ordered on stdin")
    c.add_argument("--url", action="append", required=True, help="wss:// URL of the LiveKit node")
    p = sub.add_parser("report", help="one row per operation window")
    p.add_argument("--dir", required=True)
    p.add_argument(
        "--windows", required=True, help='{"baseline": [T0, T1], "windows": [[NAME, T0, T1]]}'
    )
    p.add_argument(
        "--server-log",
        action="append",
        default=[],
        help="a LiveKit server's journalctl -u livekit-server -o short-unix (once per node)",
    )
    p.add_argument(
        "--sessions", action="append", default=[], help="HOST=FILE: a worker host's sessions.jsonl"
    )
    args = parser.parse_args()
    if args.command == "report":
        return report(args)
    if not os.environ.get("LIVEKIT_API_KEY") or not os.environ.get("LIVEKIT_API_SECRET"):
        print("lab.fleet: LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set", file=sys.stderr)
        return 2
    if args.command == "slot":
        return asyncio.run(slot(args))
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
