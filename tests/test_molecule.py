"""The Molecule scenarios, each a full `molecule test` on nspawn hosts (needs root)."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from tests.conftest import ROOT
from tests.test_lint import BIN

SCENARIOS = ["default", "monitoring", "rolling", "bluegreen"]


@pytest.mark.lab
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str) -> None:
    assert os.geteuid() == 0, "the Molecule scenarios need root (nspawn hosts): run as root"
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
        timeout=50 * 60,  # default: 32 min alone on 2 cores (2026-12-02); a hang still ends
        check=False,
    )
    print(f"molecule test -s {scenario}: {time.monotonic() - started:.0f} s")
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
