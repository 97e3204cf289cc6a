"""Stand-ins for the providers the lab cannot reach: Deepgram (STT), Cartesia (TTS), OpenAI (LLM).

Each speaks the real wire protocol as the livekit-agents 1.8.9 plugins use it, backed by real
local engines where they exist (lab/speech.py); each module's docstring says what it does not
cover. `python -m lab.providers` serves all three (see __main__.py).
"""
