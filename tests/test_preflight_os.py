"""Preflight accepts only the operating systems the scenarios converge (Debian 12, 13; the Redis
of a LiveKit cluster Debian 12); another one is refused with a message naming it, or converged
with a warning behind the role's explicit `*_allow_untested_os` switch. Runs each role's
tasks/preflight_os.yml with the host's facts given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROLES = Path(__file__).resolve().parents[1] / "roles"
# role -> the Debian major versions a scenario converges it on
TESTED = {"voice_worker": ["12", "13"], "livekit_server": ["12", "13"], "livekit_redis": ["12"]}
ROLE_NAMES = list(TESTED)


def preflight_os(tmp_path: Path, role: str, distribution: str, version: str, allow: bool):
    play = tmp_path / "play.yml"
    play.write_text(
        json.dumps(
            [
                {
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars_files": [str(ROLES / role / "vars/main.yml")],
                    "tasks": [
                        {
                            "ansible.builtin.import_tasks": str(
                                ROLES / role / "tasks/preflight_os.yml"
                            )
                        }
                    ],
                }
            ]
        )
    )
    facts = {
        "distribution": distribution,
        "distribution_version": version,
        "distribution_major_version": version.split(".")[0],
    }
    extra = {"ansible_facts": facts, f"{role}_allow_untested_os": allow}
    return subprocess.run(
        [
            Path(sys.executable).with_name("ansible-playbook"),
            "-i",
            "localhost,",
            play,
            "-e",
            json.dumps(extra),
        ],
        capture_output=True,
        text=True,
        check=False,
        # ansible.cfg's yaml result format folds long messages; json keeps each on one line.
        env={**os.environ, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"},
    )


@pytest.mark.parametrize(
    ("role", "version"), [(r, f"{major}.1") for r, majors in TESTED.items() for major in majors]
)
def test_the_tested_os_passes_without_a_warning(tmp_path, role, version):
    proc = preflight_os(tmp_path, role, "Debian", version, allow=False)
    assert proc.returncode == 0, proc.stdout
    assert f"is untested ({role}_allow_untested_os)" not in proc.stdout


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize(("distribution", "version"), [("Debian", "14.0"), ("Ubuntu", "24.04")])
def test_another_os_is_refused_naming_it_and_the_switch(tmp_path, role, distribution, version):
    proc = preflight_os(tmp_path, role, distribution, version, allow=False)
    assert proc.returncode != 0
    assert f"{distribution} {version} is not tested with the role {role}" in proc.stdout
    assert f"(tested: Debian {', '.join(TESTED[role])})" in proc.stdout
    assert f"{role}_allow_untested_os: true" in proc.stdout


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_the_switch_accepts_another_os_with_a_warning(tmp_path, role):
    proc = preflight_os(tmp_path, role, "Debian", "14.0", allow=True)
    assert proc.returncode == 0, proc.stdout
    tested = ", ".join(TESTED[role])
    warning = f"Debian 14.0 is untested ({role}_allow_untested_os); tested: Debian {tested}."
    assert warning in proc.stdout
