"""Start livekit-agents' forkserver first thing, so that it imports what every call needs while
the worker process imports livekit-agents: on a 2-core host the two imports (about 2 s and 3 s)
then overlap instead of running one after the other, and READY (registered with LiveKit) comes
no later than the stock worker's registration (bench/worker_start.py).

AgentServer.run() would start the same forkserver with the same preload list later; it finds this
one running and uses it (multiprocessing keeps one forkserver per process). Job processes are
forked from the forkserver, so they inherit its environment, not the worker's later one.
AgentServer.run() exports LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET for them; only the
URL is exported here: the forkserver and the calls never hold the API secret in their environment
(a call that needs the server API reads the credential, as the worker does: config.py).
Relies on the pinned livekit-agents 1.8.9 (its preload list ends with the two ipc modules below).
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing import forkserver

from .config import Settings

# The plugins a call uses (agent.py). The worker process itself never imports them.
PLUGINS = [f"livekit.plugins.{p}" for p in ("silero", "deepgram", "openai", "cartesia")]
# livekit-agents' own warm-up, last (it freezes what the modules before it imported)
_FRAMEWORK = ["livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze"]


def preload_modules(settings: Settings) -> list[str]:
    """Imported once in the forkserver and shared copy-on-write by every job process (models.py:
    the VAD); AgentServer's preload_modules."""
    return [
        *PLUGINS,
        "voice_worker.forkserver_env",
        "voice_worker.jobs",
        "voice_worker.models",
        settings.entrypoint.partition(":")[0],
    ]


def start(settings: Settings) -> None:
    os.environ["LIVEKIT_URL"] = settings.livekit_url
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        list(dict.fromkeys(preload_modules(settings))) + _FRAMEWORK
    )
    forkserver.ensure_running()
