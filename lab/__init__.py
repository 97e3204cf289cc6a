"""Lab infrastructure: provider stand-ins, the caller and the speech engines they share.

Runs on the control node, started by `scripts/lab` and the Molecule scenarios; never installed
on a host and never imported by the worker.
"""

from __future__ import annotations

import contextlib
import os

# nice(2) value of the callers and the providers' stand-ins (see outside_the_lab)
OUTSIDE_NICE = -10


def outside_the_lab() -> None:
    """The callers and the providers' stand-ins stand for phones and services with CPUs of
    their own; on the lab they share two cores with the hosts under test. Run them at a higher
    priority (nice -10, when this process may: root), so that the fleet, not its judge or the
    services it calls, is what runs short. Call it first in main(): threads started later
    inherit it."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, OUTSIDE_NICE)
