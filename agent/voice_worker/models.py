"""Models every call needs, loaded once in the forkserver and shared by every job process.

runner.py lists this module in the AgentServer's preload_modules, so the forkserver imports it
before it forks the job processes: the Silero VAD weights and its ONNX session are then shared
copy-on-write instead of loaded (~30 MB PSS) in every call's process (bench/voice_calls.py). The
session runs single-threaded (the plugin sets one intra- and one inter-op thread), so forking it
is safe. A process started without the forkserver loads it on first import.
"""

from __future__ import annotations

from livekit.plugins import silero

VAD = silero.VAD.load()
