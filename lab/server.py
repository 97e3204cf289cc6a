"""What the lab's LiveKit server says about itself: rooms and participants from its API
(`livekit.api`, over the TLS front), and the agent workers registered with it from its own log
(the server has no API that lists workers; it logs each registration and each worker it closes).

    python -m lab.server --url wss://HOST --room NAME [--wait 10]

creates a room through the API and prints, as JSON, which agent joined it and after how long
(null: none within --wait s); LIVEKIT_API_KEY/SECRET from the environment, the CA through
SSL_CERT_FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass

from livekit import api


@dataclass
class Room:
    name: str
    participants: list[tuple[str, str]]  # (identity, kind)


def _api_url(url: str) -> str:
    """The server API's URL for a client URL (wss:// -> https://)."""
    return url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


async def rooms(url: str, key: str, secret: str) -> list[Room]:
    async with api.LiveKitAPI(_api_url(url), key, secret) as lk:
        listed = await lk.room.list_rooms(api.ListRoomsRequest())
        out = []
        for r in listed.rooms:
            parts = await lk.room.list_participants(api.ListParticipantsRequest(room=r.name))
            out.append(
                Room(
                    r.name,
                    [
                        (p.identity, api.ParticipantInfo.Kind.Name(p.kind).lower())
                        for p in parts.participants
                    ],
                )
            )
        return out


def registered_workers(journal: str) -> dict[str, dict[str, str]]:
    """Workers registered and not closed since the server last started, from its JSON-field log
    lines (`journalctl -u livekit-server -o cat`): {worker_id: {agent_name, since}}."""
    workers: dict[str, dict[str, str]] = {}
    for line in journal.splitlines():
        if "starting LiveKit server" in line:
            workers.clear()
        brace = line.find("{")
        if brace < 0:
            continue
        try:
            fields = json.loads(line[brace:])
        except ValueError:
            continue
        worker = fields.get("workerID")
        if not worker:
            continue
        if "\tworker registered\t" in line:
            workers[worker] = {
                "agent_name": fields.get("agentName", ""),
                "since": line.split("\t")[0],
            }
        elif "\tclosing worker\t" in line:
            workers.pop(worker, None)
    return workers


async def agent_joins(
    url: str, key: str, secret: str, room: str, wait_s: float
) -> dict[str, object]:
    """Create `room` through the API and watch its participants for up to `wait_s`: who joined as
    an agent and after how long (None: no agent). The room is deleted afterwards."""
    async with api.LiveKitAPI(_api_url(url), key, secret) as lk:
        created = await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=30))
        started = time.monotonic()
        agent = None
        try:
            while agent is None and time.monotonic() - started < wait_s:
                await asyncio.sleep(0.2)
                parts = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                agent = next(
                    (
                        p.identity
                        for p in parts.participants
                        if p.kind == api.ParticipantInfo.Kind.AGENT
                    ),
                    None,
                )
            waited = round(time.monotonic() - started, 2)
        finally:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        return {"room": room, "room_sid": created.sid, "agent": agent, "waited_s": waited}


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.server",
        description="Create a room through the LiveKit API and report whether an agent joins it.",
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to watch for an agent")
    args = parser.parse_args()
    key, secret = os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"]
    print(json.dumps(asyncio.run(agent_joins(args.url, key, secret, args.room, args.wait))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
