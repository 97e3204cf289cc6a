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
COLOUR_DROPIN = ROOT / "files/systemd/livekit-voice-worker@.service.d/30-colour.conf"


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
    # blue_green mode: the same file as the template, plus the colour drop-in
    template = "livekit-voice-worker@.service"
    (etc / f"{template}.d").mkdir()
    shutil.copy(UNIT, etc / template)
    shutil.copy(etc / f"{NAME}.d/10-host.conf", etc / f"{template}.d/10-host.conf")
    shutil.copy(COLOUR_DROPIN, etc / f"{template}.d/30-colour.conf")
    for colour in ("blue", "green"):
        exe = tmp_path / f"opt/livekit-voice-worker/{colour}/bin/livekit-voice-worker"
        exe.parent.mkdir(parents=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return tmp_path


UNITS = [NAME, "livekit-voice-worker@blue.service", "livekit-voice-worker@green.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_without_any_message(root: Path, unit: str) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", unit],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_unit_security_exposure_at_most_2(root: Path, unit: str) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", "--no-pager", unit],
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


def test_colour_dropin_separates_every_per_instance_path() -> None:
    """Two colours run side by side: nothing one of them writes, wipes or removes may be shared."""
    text = COLOUR_DROPIN.read_text()
    for key in ("StateDirectory", "RuntimeDirectory", "CacheDirectory", "ExecStart"):
        # reset first, then one value that contains the instance name
        values = re.findall(rf"^{key}=(.*)$", text, re.M)
        assert values[0] == "" and len(values) == 2 and "%i" in values[1], (key, values)
    for var in ("HOME", "XDG_CACHE_HOME"):
        assert re.search(rf"^Environment={var}=\S*%i", text, re.M), var
    assert re.search(r"^EnvironmentFile=\S*%i\.env$", text, re.M)
