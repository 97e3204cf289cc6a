"""The bundled LiveKit Agents voice worker for systemd hosts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("livekit-voice-worker")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
