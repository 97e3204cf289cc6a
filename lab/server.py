"""What the lab's LiveKit server says about itself: rooms and participants from its API
(`livekit.api`, over the TLS front), and the agent workers registered with it from its own log
(the server has no API that lists workers; it logs each registration and each worker it closes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from livekit import api


@dataclass
class Room:
    name: str
    participants: list[tuple[str, str]]  # (identity, kind)


async def rooms(url: str, key: str, secret: str) -> list[Room]:
    https = url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
    async with api.LiveKitAPI(https, key, secret) as lk:
        listed = await lk.room.list_rooms(api.ListRoomsRequest())
        out = []
        for r in listed.rooms:
            parts = await lk.room.list_participants(api.ListParticipantsRequest(room=r.name))
            out.append(Room(r.name, [
                (p.identity, api.ParticipantInfo.Kind.Name(p.kind).lower())
                for p in parts.participants
            ]))
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
            workers[worker] = {"agent_name": fields.get("agentName", ""), "since": line.split("\t")[0]}
        elif "\tclosing worker\t" in line:
            workers.pop(worker, None)
    return workers
