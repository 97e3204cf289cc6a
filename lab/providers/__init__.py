"""Stand-ins for the providers the lab cannot reach: Deepgram (STT), Cartesia (TTS), OpenAI (LLM).

Each speaks the real wire protocol as the livekit-agents 1.8.9 plugins use it, backed by real
local engines where they exist (lab/speech.py); each module's docstring says what it does not
cover. `python -m lab.providers` serves all three (see __main__.py).
"""


def api_keys(value: str) -> frozenset[str]:
    """The keys a stand-in accepts: `KEY` or `KEY,NEXT_KEY`. Two keys are live at once while a
    rotation moves the workers from one to the other, as a provider account keeps the old key
    working until it is revoked."""
    return frozenset(k for k in (p.strip() for p in value.split(",")) if k)
