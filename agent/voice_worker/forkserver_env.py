"""Imported in the forkserver (forkserver.py): the environment settings AgentServer.run() makes in
the worker process for its job processes, made where the job processes inherit them from."""

from livekit.agents.utils import http_context

# SSL_CERT_FILE -> certifi only where the host has no trust store (livekit-agents' own rule)
http_context._set_default_cert_env()
