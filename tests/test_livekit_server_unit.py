"""files/systemd/livekit-server.service: `systemd-analyze verify` silent, `security --offline`
<= 2.5, and the API keys only ever arrive as a credential."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "files/systemd/livekit-server.service"
NAME = "livekit-server.service"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed (Debian: systemd)"
    etc = tmp_path / "etc/systemd/system"
    (etc / f"{NAME}.d").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    exe = tmp_path / "usr/local/bin/livekit-server"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    shutil.copy(UNIT, etc / NAME)
    # what roles/livekit_server/templates/10-host.conf.j2 renders for the defaults
    (etc / f"{NAME}.d/10-host.conf").write_text("[Service]\nTimeoutStopSec=615\n")
    return tmp_path


def test_unit_verifies_without_any_message(root: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", NAME],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


def test_unit_security_exposure_at_most_2_5(root: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", "--no-pager", NAME],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.5, proc.stdout


def test_keys_arrive_only_as_a_credential() -> None:
    text = UNIT.read_text()
    assert re.findall(r"^LoadCredential=(.*)$", text, re.M) == [
        "keys.yaml:/etc/livekit-server/keys.yaml"
    ]
    assert not re.search(r"^Environment", text, re.M)
    assert re.search(r"^ExecStart=/usr/local/bin/livekit-server --config \S+$", text, re.M)
    # the role's config points at the credential and holds no keys of its own
    role_vars = yaml.safe_load((ROOT / "roles/livekit_server/vars/main.yml").read_text())
    assert (
        "'key_file': '${CREDENTIALS_DIRECTORY}/keys.yaml'" in role_vars["__livekit_server_config"]
    )
    assert "'keys'" not in role_vars["__livekit_server_config"]
