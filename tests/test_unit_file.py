"""The static unit file: `systemd-analyze verify` clean and `security --offline` <= 2.0."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.systemd_analyze import exposure, scratch_root, verify

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "files/systemd/livekit-voice-worker.service"
NAME = "livekit-voice-worker.service"
COLOUR_DROPIN = ROOT / "files/systemd/livekit-voice-worker@.service.d/30-colour.conf"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    template = "livekit-voice-worker@.service"
    root = scratch_root(
        tmp_path,
        {NAME: UNIT, template: UNIT},  # blue_green mode: the same file as the template
        [
            f"/opt/livekit-voice-worker/{link}/bin/livekit-voice-worker"
            for link in ("current", "blue", "green")
        ],
    )
    etc = root / "etc/systemd/system"
    for unit in (NAME, template):
        (etc / f"{unit}.d").mkdir()
        # what roles/voice_worker/templates/10-host.conf.j2 renders for the defaults
        (etc / f"{unit}.d/10-host.conf").write_text(
            "[Service]\nTimeoutStopSec=630\nMemoryMax=1352M\n"
        )
    shutil.copy(COLOUR_DROPIN, etc / f"{template}.d/30-colour.conf")
    return root


UNITS = [NAME, "livekit-voice-worker@blue.service", "livekit-voice-worker@green.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_without_any_message(root: Path, unit: str) -> None:
    assert verify(root, unit) == ""


@pytest.mark.parametrize("unit", UNITS)
def test_unit_security_exposure_at_most_2(root: Path, unit: str) -> None:
    score, report = exposure(root, unit)
    assert score <= 2.0, report


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
