"""The static unit file: `systemd-analyze verify` clean and `security --offline` <= 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "files/systemd/livekit-voice-worker.service"
NAME = "livekit-voice-worker.service"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    etc = tmp_path / "etc/systemd/system"
    (etc / f"{NAME}.d").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    exe = tmp_path / "opt/livekit-voice-worker/current/bin/livekit-voice-worker"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    shutil.copy(UNIT, etc / NAME)
    # what roles/voice_worker/templates/10-host.conf.j2 renders for the defaults
    (etc / f"{NAME}.d/10-host.conf").write_text("[Service]\nTimeoutStopSec=630\nMemoryMax=1412M\n")
    return tmp_path


def test_unit_verifies_without_any_message(root: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", NAME],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


def test_unit_security_exposure_at_most_2(root: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", "--no-pager", NAME],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.0, proc.stdout


def test_unit_drains_and_keeps_secrets_out() -> None:
    text = UNIT.read_text()
    required = (
        "KillMode=mixed",
        "Type=notify",
        "NotifyAccess=main",
        "RestartPreventExitStatus=78",
        "OOMPolicy=continue",
        "User=livekit-worker",
    )
    for line in required:
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert not re.search(r"^Environment=.*(KEY|SECRET)", text, re.M)
    assert len(re.findall(r"^LoadCredential=", text, re.M)) == 5
