"""The real livekit-server (the binary scripts/bootstrap builds) on 127.0.0.1, for tests, benches.

    server = LiveKitServer(tmp_path)          # picks free ports, writes livekit.yaml
    await server.start()                      # returns once it answers GET / with 200
    server.url                                # ws://127.0.0.1:PORT, a worker's LIVEKIT_URL
    async with server.api() as lkapi: ...     # livekit.api.LiveKitAPI with the test key/secret
    await server.stop(signal.SIGKILL)         # an outage: every connection drops at once
    await server.start()                      # the same ports and config again

Offline by construction: the signalling/API port and TURN bind 127.0.0.1 (the two ICE ports listen
on every address, livekit-server has no setting for that, but it offers clients only 127.0.0.1
candidates); `rtc.node_ip` is set and `use_external_ip`
is off, so the server never asks a public STUN server for its own address; `rtc.stun_servers`
names its own TURN port on loopback, so it hands clients no public STUN list either (the "offline
trap" of docs field notes §4). Loopback ICE candidates are allowed, so a job that joins its room
(`"join": true` in a synthetic call's metadata) gets media transport on 127.0.0.1.

The server logs JSON lines to `log_path` (appended across restarts), at info level and its agent
service at debug (where it says "worker status changed"); `logs()`, `said()` and `wait_for_log()`
read them, so a test asserts what the server itself says: "worker registered", "assigned job to
worker", "no worker available to handle job", "job ended", "closing worker".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from .loopback import ROOT, TEST_SECRETS, free_port

BINARY = ROOT / ".cache/livekit-server/current/livekit-server"


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveKitServer:
    """One livekit-server process on loopback with a generated config (see the module doc)."""

    def __init__(
        self,
        workdir: Path,
        *,
        api_key: str = TEST_SECRETS["LIVEKIT_API_KEY"],
        api_secret: str = TEST_SECRETS["LIVEKIT_API_SECRET"],
        log_level: str = "info",
    ) -> None:
        if not BINARY.exists():
            raise FileNotFoundError(f"{BINARY} is missing: scripts/bootstrap builds livekit-server")
        self.workdir = workdir
        self.api_key = api_key
        self.api_secret = api_secret
        self.port = free_port()
        self.rtc_tcp_port = free_port()
        self.rtc_udp_port = free_udp_port()
        self.turn_udp_port = free_udp_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "livekit.yaml"
        self.log_path = workdir / "livekit-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._records: list[dict[str, Any]] = []
        self._log_offset = 0
        self.config_path.write_text(json.dumps(self.config(log_level), indent=2))  # JSON is YAML

    def config(self, log_level: str) -> dict[str, Any]:
        return {
            "port": self.port,
            "bind_addresses": ["127.0.0.1"],
            "keys": {self.api_key: self.api_secret},
            "logging": {"level": log_level, "json": True, "component_levels": {"agents": "debug"}},
            "rtc": {
                "tcp_port": self.rtc_tcp_port,
                "udp_port": self.rtc_udp_port,
                "use_external_ip": False,
                "node_ip": "127.0.0.1",
                "ips": {"includes": ["127.0.0.1/32"]},
                "enable_loopback_candidate": True,
                # its own TURN port (which answers STUN): never the built-in public list
                "stun_servers": [f"127.0.0.1:{self.turn_udp_port}"],
            },
            "turn": {"enabled": True, "udp_port": self.turn_udp_port},
        }

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - bounded wait
        """Start it (again, on the same ports) and return once GET / answers 200."""
        if self.running:
            raise RuntimeError("livekit-server is already running")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BINARY), "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            async with asyncio.timeout(timeout), aiohttp.ClientSession() as http:
                while True:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"livekit-server exited {self.proc.returncode}")
                    with contextlib.suppress(aiohttp.ClientConnectionError):
                        async with http.get(f"{self.http_url}/") as r:
                            if r.status == 200:
                                return
                    await asyncio.sleep(0.1)
        except (TimeoutError, RuntimeError):
            tail = self.log_path.read_text(errors="replace")[-3000:]
            await self.stop(signal.SIGKILL)
            raise RuntimeError(f"livekit-server did not come up; its log ends:\n{tail}") from None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:  # noqa: ASYNC109
        """Send `sig` and wait for the exit (SIGKILL after `timeout`); returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        return proc.returncode

    # ---- what it says -----------------------------------------------------------------------

    def logs(self) -> list[dict[str, Any]]:
        """Its log so far as parsed JSON lines (a line that is not JSON becomes {"msg": line})."""
        if self.log_path.exists():
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._log_offset += len(complete)
            for raw in complete.decode(errors="replace").splitlines():
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError:
                    rec = None
                self._records.append(rec if isinstance(rec, dict) else {"msg": raw})
        return list(self._records)

    def said(self, msg: str, *, after: int = 0, **fields: Any) -> list[dict[str, Any]]:
        """Its log records (from index `after` on) with this message and these field values."""
        return [
            r
            for r in self.logs()[after:]
            if r.get("msg") == msg and all(r.get(k) == v for k, v in fields.items())
        ]

    async def wait_for_log(
        self,
        msg: str,
        *,
        after: int = 0,
        timeout: float = 30.0,  # noqa: ASYNC109 - the bounded wait is the point
        **fields: Any,
    ) -> dict[str, Any]:
        """The first record from index `after` on with this message and these field values."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    found = self.said(msg, after=after, **fields)
                    if found:
                        return found[0]
                    await asyncio.sleep(0.1)
        except TimeoutError:
            tail = "\n".join(json.dumps(r)[:300] for r in self.logs()[-15:])
            raise TimeoutError(
                f"livekit-server did not log {msg!r} {fields} in {timeout}s; its log ends:\n{tail}"
            ) from None

    # ---- what a caller does -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def api(self) -> AsyncIterator[Any]:
        """livekit.api.LiveKitAPI against this server (room service, agent dispatch)."""
        from livekit import api

        lkapi = api.LiveKitAPI(self.http_url, self.api_key, self.api_secret)
        try:
            yield lkapi
        finally:
            await lkapi.aclose()

    async def create_room(self, room: str, metadata: dict[str, Any]) -> None:
        """Create `room` with its own agent dispatch: the unnamed agent (a worker registered with
        agent_name "", as this project's workers are by default), `metadata` as the job's JSON
        metadata, never restarted by the server (a call killed at its memory limit stays ended).

        Not `create_dispatch`: for the unnamed agent that creates the room, whose creation then
        dispatches the unnamed agent a second time, without metadata."""
        from livekit import api

        dispatch = api.RoomAgentDispatch(
            agent_name="",
            metadata=json.dumps(metadata),
            restart_policy=api.JobRestartPolicy.JRP_NEVER,
        )
        async with self.api() as lkapi:
            await lkapi.room.create_room(api.CreateRoomRequest(name=room, agents=[dispatch]))

    async def dispatch(self, room: str, metadata: dict[str, Any], timeout: float = 60.0) -> str:  # noqa: ASYNC109
        """create_room(), then the id of the job the server says it assigned to a worker."""
        await self.create_room(room, metadata)
        assigned = await self.wait_for_log("assigned job to worker", room=room, timeout=timeout)
        return assigned["jobID"]

    async def participants(self, room: str) -> list[Any]:
        """The room's participants as the server lists them (livekit.api ParticipantInfo)."""
        from livekit import api

        async with self.api() as lkapi:
            res = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
        return list(res.participants)
