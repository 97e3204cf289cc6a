"""The Molecule scenarios, each a full `molecule test` on nspawn hosts (needs root)."""

from __future__ import annotations

import os
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
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=40 * 60,
        check=False,
    )
    print(f"molecule test -s {scenario}: {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
