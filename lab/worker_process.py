"""Runs the real worker (`python -m voice_worker start`) as a child process for integration tests,
with a NOTIFY_SOCKET listener standing in for systemd and an HTTP client for its endpoints."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .loopback import ROOT, TEST_SECRETS, free_port


@dataclass
class Notification:
    t: float  # time.monotonic() at receipt
    fields: dict[str, str]


class NotifyListener(asyncio.DatagramProtocol):
    """A unix datagram socket that records sd_notify messages, like systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[Notification] = []
        self._changed = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.path))
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append(Notification(time.monotonic(), fields))
        self._changed.set()
        self._changed = asyncio.Event()

    def with_field(self, name: str, value: str | None = None, after: float = 0.0):
        return [
            m
            for m in self.messages
            if m.t > after and name in m.fields and (value is None or m.fields[name] == value)
        ]

    async def wait_for(
        self, name: str, value: str | None = None, after: float = 0.0, timeout: float = 30.0
    ) -> Notification:
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                found = self.with_field(name, value, after)
                if found:
                    return found[0]
                await changed.wait()


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    notify: NotifyListener
    state_dir: Path
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.get(self.url(path)) as resp:
            body = await resp.text()
            if resp.content_type == "application/json":
                return resp.status, json.loads(body)
            return resp.status, body

    async def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample from /metrics, parsed with prometheus-client's own text parser."""
        from prometheus_client.parser import text_string_to_metric_families

        _, text = await self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and (labels or {}).items() <= sample.labels.items():
                    return sample.value
        return None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 60.0) -> int:
        return await asyncio.to_thread(self.proc.wait, timeout)

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"message": raw, "not_json": True})
        return lines

    def said(self, message: str, **fields: Any) -> list[dict[str, Any]]:
        """Its JSON log records with this message and these field values."""
        return [
            r
            for r in self.logs()
            if r.get("message") == message and all(r.get(k) == v for k, v in fields.items())
        ]

    async def wait_for_log(
        self,
        message: str,
        timeout: float = 30.0,  # noqa: ASYNC109 - the bounded wait is the point
        **fields: Any,
    ) -> dict[str, Any]:
        """The first JSON log record with this message and these field values, once written."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    found = self.said(message, **fields)
                    if found:
                        return found[0]
                    await asyncio.sleep(0.2)
        except TimeoutError:
            tail = "\n".join(json.dumps(r)[:300] for r in self.logs()[-15:])
            raise TimeoutError(
                f"the worker did not log {message!r} {fields} in {timeout}s; its log ends:\n{tail}"
            ) from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            # the whole group: the worker and its job processes
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.notify.close()


async def start_worker(
    tmp_path: Path,
    livekit_url: str,
    *,
    extra_env: dict[str, str] | None = None,
    argv: list[str] | None = None,
) -> WorkerProcess:
    notify = NotifyListener(tmp_path / "notify.sock")
    await notify.start()
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "LIVEKIT_URL": livekit_url,
        **TEST_SECRETS,
        "HEALTH_CHECK_PORT": str(port),
        "WORKER_STATE_DIR": str(tmp_path / "state"),
        "WORKER_METRICS_DIR": str(tmp_path / "metrics"),
        "WORKER_ENTRYPOINT": "voice_worker.synthetic:call",
        "WORKER_MAX_JOBS": "2",
        "WORKER_NUM_IDLE_PROCESSES": "1",
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "1000000",
        **(extra_env or {}),
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv or [sys.executable, "-m", "voice_worker", "start"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return WorkerProcess(proc, port, notify, tmp_path / "state", log_path, env)
