"""`check-config --connect`: prove a configuration against the real LiveKit before it serves.

The role runs it (as the service, through systemd-run) before it stops a serving worker for new
settings, credentials or a new release: a URL, key or secret LiveKit refuses, an address nothing
answers on, or a health address the worker could not bind fails here, while the old worker keeps
serving, instead of after the drain.

It does what livekit-agents' worker does to register (worker.py `_connection_task`: the same
/agent URL built from LIVEKIT_URL, the same `agent` grant, a RegisterWorkerRequest, and waits for
the RegisterWorkerResponse), under its own agent name: LiveKit dispatches jobs to such a worker only
on explicit request, so the short-lived registration never receives a call.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from urllib.parse import urljoin, urlparse

from .config import Settings

EX_UNAVAILABLE = 69
CHECK_AGENT_NAME = "livekit-voice-worker-config-check"
TIMEOUT_S = 10.0


class CheckFailed(Exception):
    """str() is one line for the operator, without secret values."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")


def agent_url(livekit_url: str) -> str:
    """LIVEKIT_URL -> the worker's /agent WebSocket URL, exactly as livekit-agents builds it."""
    parse = urlparse(livekit_url)
    scheme = parse.scheme.replace("http", "ws") if parse.scheme.startswith("http") else parse.scheme
    return urljoin(f"{scheme}://{parse.netloc}{parse.path}".rstrip("/") + "/", "agent")


def check_health_bind(settings: Settings) -> None:
    """The health server's address can be bound (not taken by another service, on this host)."""
    family = socket.AF_INET6 if ":" in settings.health_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # aiohttp's TCPSite binds with SO_REUSEADDR too: a port in TIME_WAIT is not a clash
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((settings.health_host, settings.health_port))
        except OSError as e:
            why = {
                errno.EADDRINUSE: "is in use by another process",
                errno.EADDRNOTAVAIL: "is not an address of this host",
                errno.EACCES: "may not be bound by this user",
            }.get(e.errno or 0, e.strerror)
            raise CheckFailed(
                "HEALTH_CHECK_HOST/HEALTH_CHECK_PORT",
                f"{settings.health_host}:{settings.health_port} {why}",
            ) from None


async def register_once(settings: Settings) -> str:
    """Register with LiveKit as livekit-agents does; returns the worker id LiveKit gave."""
    import aiohttp
    from livekit import api
    from livekit.agents import __version__
    from livekit.agents.utils import http_context
    from livekit.protocol import agent

    http_context._set_default_cert_env()  # the trust store the worker uses
    url = agent_url(settings.livekit_url)
    token = (
        api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_grants(api.VideoGrants(agent=True))
        .to_jwt()
    )
    req = agent.WorkerMessage()
    req.register.type = agent.JT_ROOM
    req.register.agent_name = CHECK_AGENT_NAME
    req.register.version = __version__
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session,
            session.ws_connect(url, headers={"Authorization": f"Bearer {token}"}) as ws,
        ):
            await ws.send_bytes(req.SerializeToString())
            msg = agent.ServerMessage()
            msg.ParseFromString(await ws.receive_bytes(timeout=TIMEOUT_S))
            if not msg.HasField("register"):
                raise CheckFailed("LIVEKIT_URL", f"{url} did not answer the registration")
            return msg.register.worker_id
    except aiohttp.WSServerHandshakeError as e:
        reason = {
            401: "refused the API key and secret (401)",
            403: "refused the API key and secret (403)",
            404: "has no agent endpoint there (404): check the URL's path",
        }.get(e.status, f"answered HTTP {e.status}")
        setting = "LIVEKIT_API_KEY/LIVEKIT_API_SECRET" if e.status in (401, 403) else "LIVEKIT_URL"
        raise CheckFailed(setting, f"{url} {reason}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise CheckFailed("LIVEKIT_URL", f"{url} is unreachable: {type(e).__name__}: {e}") from None


def connect(settings: Settings, bind_health: bool) -> dict[str, str]:
    """The --connect check; raises CheckFailed."""
    if bind_health:
        check_health_bind(settings)
    worker_id = asyncio.run(register_once(settings))
    return {"livekit": "registered", "check_worker_id": worker_id}
