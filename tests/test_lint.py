"""Linters as tests, so one pytest run is the whole suite: ruff, yamllint, ansible-lint."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["yamllint", "--strict", "."],
        ["ansible-lint", "--offline", "--profile", "production"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_linter_passes(argv: list[str]) -> None:
    proc = run(str(BIN / argv[0]), *argv[1:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
