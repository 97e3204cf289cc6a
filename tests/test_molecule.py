"""The Molecule scenarios, each a full `molecule test` on nspawn hosts (needs root), one after the
other: every scenario's judge is real callers (speech in, speech recognized out) whose verdict
needs the machine's two cores, which two scenarios side by side would overload (measured with
the earlier synthetic calls, side by side was fine; with real calls a third of the audio calls
lost a turn once the lab ran short). The wall time of each is printed and counted in the suite's
time by part (tests/conftest.py).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time

import pytest

from tests.conftest import ROOT
from tests.test_lint import BIN

# trixie (default's checks on Debian 13) is left out: fleet2 of the fleet scenario runs Debian 13
# through every fleet operation, and the suite has no room for another 8 minutes.
SCENARIOS = ["default", "monitoring", "fleet"]


def molecule_test(scenario: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "molecule"), "test", "-s", scenario],
        cwd=ROOT,
        # no colour codes: the failure excerpt below is read in CI logs
        env={
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "PY_COLORS": "0",
            "ANSIBLE_NOCOLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=60 * 60,  # the longest, fleet, takes about 30 min
        check=False,
    )
    return proc, time.monotonic() - started


@pytest.mark.lab
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str) -> None:
    assert os.geteuid() == 0, "the Molecule scenarios need root (nspawn hosts): run as root"
    proc, seconds = molecule_test(scenario)
    print(f"molecule test -s {scenario}: {seconds:.0f} s")
    assert proc.returncode == 0, (
        f"molecule test -s {scenario}: rc {proc.returncode}\n"
        + failure_excerpt(proc.stdout)
        + "\n--- stderr (tail) ---\n"
        + proc.stderr[-1500:]
    )


ANSI = re.compile(r"\x1b\[[0-9;]*m")
FAILED = re.compile(r"^\W*(fatal: \[|failed: \[).*")


def failure_excerpt(stdout: str, before: int = 12, after: int = 24, width: int = 400) -> str:
    """Where the scenario failed, short enough that CI's excerpt of the run (which starts at the
    first failure) still reaches the next failed scenario: the last failed task that was not
    ignored (its header, `before` lines before the failure and `after` from it, each cut at
    `width` characters), then the recap that follows it. The destroy step after a failure fills
    the tail of the output, so the tail does not say what failed."""
    lines = [line[:width] for line in ANSI.sub("", stdout).splitlines()]
    failed = [
        i
        for i, line in enumerate(lines)
        if FAILED.match(line) and "...ignoring" not in " ".join(lines[i : i + 3])
    ]
    if not failed:
        return "\n".join(["no failed task found; the output's tail:", *lines[-40:]])
    at = failed[-1]
    task = next((j for j in range(at, -1, -1) if lines[j].startswith("TASK [")), at)
    recap = next((j for j in range(at, len(lines)) if lines[j].startswith("PLAY RECAP")), None)
    end = min(at + after, recap if recap is not None else len(lines))
    hosts = [] if recap is None else itertools.takewhile(bool, lines[recap : recap + 8])
    return "\n".join(
        [
            lines[task],
            *lines[max(task + 1, at - before) : end],
            "...",
            *hosts,
        ]
    )
