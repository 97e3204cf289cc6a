"""The Molecule scenarios, each a full `molecule test` on nspawn hosts (needs root).

`default` and `trixie` (the same on Debian 13) run alone, one after the other: their judges are
real callers whose speech recognizer needs the machine's two cores (a turn not heard fails the
call). The fleet scenarios' calls are synthetic (no media) and
their time is mostly waiting (drains, holds, readiness), so they run side by side, two at a time,
once those have finished: each is still a whole `molecule test` with its own hosts, its own
LiveKit stand-in port and its own result. The wall time of each is printed and counted in the
suite's time by part (tests/conftest.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.conftest import ROOT
from tests.test_lint import BIN

# Longest first, so the two lanes come out even: bluegreen | rolling, then monitoring.
FLEET = ["bluegreen", "rolling", "monitoring"]
FLEET_SIDE_BY_SIDE = 2
ALONE = ["default", "trixie"]
SCENARIOS = [*ALONE, *FLEET]  # default and trixie first, each alone, then the fleet


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
        timeout=50 * 60,  # default 22 min alone, bluegreen 28 side by side (2026-12-02)
        check=False,
    )
    return proc, time.monotonic() - started


@pytest.fixture(scope="session")
def fleet_runs(request: pytest.FixtureRequest):
    """Starts every selected fleet scenario (two at a time) when the first of them is reached."""
    selected = {
        item.callspec.params["scenario"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_molecule_scenario"
    }
    pool = ThreadPoolExecutor(max_workers=FLEET_SIDE_BY_SIDE, thread_name_prefix="molecule")
    runs = {s: pool.submit(molecule_test, s) for s in FLEET if s in selected}
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.lab
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str, request: pytest.FixtureRequest) -> None:
    assert os.geteuid() == 0, "the Molecule scenarios need root (nspawn hosts): run as root"
    if scenario in FLEET:
        run: Future = request.getfixturevalue("fleet_runs")[scenario]
        proc, seconds = run.result()
        how = f"side by side with the other fleet scenarios, {FLEET_SIDE_BY_SIDE} at a time"
    else:
        proc, seconds = molecule_test(scenario)
        how = "alone"
    # the scenario's own wall time (the test's duration is only its wait for the result)
    request.node.user_properties.append(("scenario_seconds", seconds))
    print(f"molecule test -s {scenario}: {seconds:.0f} s ({how})")
    assert proc.returncode == 0, failure_excerpt(proc.stdout) + proc.stderr[-3000:]


ANSI = re.compile(r"\x1b\[[0-9;]*m")
FAILED = re.compile(r"^\W*(fatal: \[|failed: \[).*")


def failure_excerpt(stdout: str, before: int = 40, after: int = 60) -> str:
    """The lines around the last failed task that was not ignored, then the recap: the destroy
    step after a failure fills the tail of the output, so its tail does not say what failed."""
    lines = ANSI.sub("", stdout).splitlines()
    failed = [
        i
        for i, line in enumerate(lines)
        if FAILED.match(line) and "...ignoring" not in " ".join(lines[i : i + 3])
    ]
    head = lines[max(0, failed[-1] - before) : failed[-1] + after] if failed else []
    return "\n".join([*head, "...", *lines[-40:]])[-24000:]
