"""files/systemd/livekit-server.service: `systemd-analyze verify` silent, `security --offline`
<= 2.5, and the API keys only ever arrive as a credential."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.systemd_analyze import exposure, scratch_root, verify

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "files/systemd/livekit-server.service"
NAME = "livekit-server.service"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    root = scratch_root(tmp_path, {NAME: UNIT}, ["/usr/local/bin/livekit-server"])
    dropin = root / f"etc/systemd/system/{NAME}.d"
    dropin.mkdir()
    # what roles/livekit_server/templates/10-host.conf.j2 renders for the defaults
    (dropin / "10-host.conf").write_text("[Service]\nTimeoutStopSec=615\n")
    return root


def test_unit_verifies_without_any_message(root: Path) -> None:
    assert verify(root, NAME) == ""


def test_unit_security_exposure_at_most_2_5(root: Path) -> None:
    score, report = exposure(root, NAME)
    assert score <= 2.5, report


def test_keys_and_config_arrive_only_as_credentials() -> None:
    # config.yaml holds Redis's password in a cluster: the server reads it from its credentials
    # directory (%d), like the keys, never from a file the service user can read on disk
    text = UNIT.read_text()
    assert re.findall(r"^LoadCredential=(.*)$", text, re.M) == [
        "config.yaml:/etc/livekit-server/config.yaml",
        "keys.yaml:/etc/livekit-server/keys.yaml",
    ]
    assert not re.search(r"^Environment", text, re.M)
    start = r"^ExecStart=/usr/local/bin/livekit-server --config %d/config.yaml$"
    assert re.search(start, text, re.M)
    # the role's config points at the credential and holds no keys of its own
    role_vars = yaml.safe_load((ROOT / "roles/livekit_server/vars/main.yml").read_text())
    assert (
        "'key_file': '${CREDENTIALS_DIRECTORY}/keys.yaml'" in role_vars["__livekit_server_config"]
    )
    assert "'keys'" not in role_vars["__livekit_server_config"]
