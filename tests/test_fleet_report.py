"""The fleet report's account of a call that was not kept (lab/fleet.py report): what a person
reading a failed run sees, from the files a run leaves (calls.jsonl, windows.json, the
stand-ins' log and the worker hosts' journals)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f",{int(t % 1 * 1000):03d}"


def _clock(t: float) -> str:
    return _stamp(t)[11:].replace(",", ".")


def _turn(said: str, expected: str, heard: str, at: float) -> dict[str, object]:
    return {
        "said": said,
        "expected": expected,
        "at": at,
        "heard": heard,
        "latency_s": 0.8,
        "answer_s": 2.3,
        "answered": heard == expected.lower(),
    }


def test_a_call_not_kept_is_told_with_what_the_stand_ins_logged_around_its_turn(
    tmp_path: Path,
) -> None:
    t0 = 1_800_000_000.0
    wrong = {
        "room": "lab-call-wrong",
        "mode": "audio",
        "url": "wss://10.213.0.12",
        "placed_at": t0 + 10,
        "agent": "agent-A",
        "agent_join_s": 1.2,
        "turns": [
            _turn(
                "hello can you hear me", "yes I can hear you", "it is sunny and warm today", t0 + 14
            ),
            _turn("what time is it", "it is half past ten", "it is half past ten", t0 + 30),
        ],
        "ended": "agent-goodbye",
        "duration_s": 40.0,
        "error": "",
        "kept": False,
    }
    kept = wrong | {
        "room": "lab-call-kept",
        "turns": [_turn("how are you", "I am fine thank you", "i am fine thank you", t0 + 20)],
        "kept": True,
    }
    (tmp_path / "calls.jsonl").write_text("".join(json.dumps(c) + "\n" for c in (wrong, kept)))
    (tmp_path / "windows.json").write_text(
        json.dumps({"baseline": None, "windows": [["an operation", t0, t0 + 60, 1]]})
    )
    (tmp_path / "lab-providers.log").write_text(
        f"{_stamp(t0 + 5)} lab.openai user 'where are you' -> before the turn\n"
        f"{_stamp(t0 + 14.9)} lab.deepgram 3b0ada81 endpoint 1.31-3.31 s speech 1150 ms: "
        "'hello can you hear me'\n"
        f"{_stamp(t0 + 15.0)} lab.openai user 'hello can you hear me' -> yes\n"
        f"{_stamp(t0 + 21)} lab.openai user 'how are you' -> around a turn that was heard\n"
    )

    def journal(t: float, room: str, level: str, message: str, **extra: str) -> str:
        entry = {"level": level, "message": message, "room_name": room, **extra}
        return f"{t:.6f} fleet2 livekit-voice-worker[9077]: {json.dumps(entry)}\n"

    (tmp_path / "worker-fleet2.log").write_text(
        journal(t0 + 11, "lab-call-wrong", "INFO", "job started")
        + journal(t0 + 11.5, "lab-call-wrong", "WARNING", "metrics_collected is deprecated.")
        + journal(t0 + 12, "lab-call-kept", "INFO", "job started")
        + journal(t0 + 15.1, "lab-call-wrong", "DEBUG", "HTTP Request: POST")
        + journal(
            t0 + 15.2,
            "lab-call-wrong",
            "DEBUG",
            "received user transcript",
            **{"lk.pii.user_transcript": "what is the weather today"},
        )
        + journal(t0 + 16, "lab-call-wrong", "WARNING", "event loop blocked for 318ms")
        + "-- Boot 1 --\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "lab.fleet", "report", "--dir", str(tmp_path)]
        + ["--windows", str(tmp_path / "windows.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    (operation,) = json.loads(out.stdout)["operations"]
    assert (operation["placed"], operation["kept"]) == (2, 1)
    assert operation["not_kept_story"] == [
        "lab-call-wrong (audio, via wss://10.213.0.12): agent agent-A after 1.2 s, "
        "ended agent-goodbye",
        "  'hello can you hear me' -> heard 'it is sunny and warm today' "
        "(expected 'yes I can hear you', after 0.8 s, 2.3 s of speech)",
        f"    {_clock(t0 + 14.9)} lab.deepgram 3b0ada81 endpoint "
        "1.31-3.31 s speech 1150 ms: 'hello can you hear me'",
        f"    {_clock(t0 + 15.0)} lab.openai user 'hello can you hear me' -> yes",
        "  its job:",
        f"    {_clock(t0 + 11)} fleet2 INFO job started",
        f"    {_clock(t0 + 15.2)} fleet2 DEBUG received user transcript "
        "lk.pii.user_transcript='what is the weather today'",
        f"    {_clock(t0 + 16)} fleet2 WARNING event loop blocked for 318ms",
    ]
