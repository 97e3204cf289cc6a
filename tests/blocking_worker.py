"""The real worker, plus one test hook: SIGUSR2 blocks its event loop for 3 s.

Used to show that watchdog pings come from the event loop and stop while it is blocked.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from voice_worker import __main__ as cli

BLOCK_S = 3.0


def main() -> int:
    from voice_worker import runner

    original = runner.Worker.run

    async def run_with_hook(self: runner.Worker) -> int:
        def block() -> None:
            self.notifier.status(f"blocking event loop for {BLOCK_S:g}s")
            time.sleep(BLOCK_S)  # deliberately synchronous: the loop can do nothing else

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, block)
        return await original(self)

    runner.Worker.run = run_with_hook
    return cli.main(["start"])


if __name__ == "__main__":
    sys.exit(main())
