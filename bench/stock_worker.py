"""The stock livekit-agents worker the start benchmark compares ours with: the documented minimal
voice agent's server (Silero VAD loaded in prewarm, every other option at its default).

    python -m bench.stock_worker start      (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET)
"""

from livekit.agents import AgentServer, JobContext, JobProcess, cli
from livekit.plugins import silero

server = AgentServer()


def prewarm(proc: JobProcess) -> None:
    proc.userdata["vad"] = silero.VAD.load()


server.setup_fnc = prewarm


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()


if __name__ == "__main__":
    cli.run_app(server)
