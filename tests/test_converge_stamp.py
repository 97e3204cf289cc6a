"""roles/converge_stamp's module, run by Ansible on this machine: a record matches only while the
fingerprint, every managed file (content, mode, a new or missing one), the packages and the
accounts are as they were; check mode writes no record. (molecule/shared/converge-stamp.yml shows
the roles skipping and a hand edit put back on real hosts.)"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

ANSIBLE = ROOT / ".venv/bin/ansible"


def stamp(tmp_path: Path, state: str, *, check: bool = False, **args) -> dict:
    params = {
        "name": "demo",
        "state": state,
        "fingerprint": "f1",
        "trees": [str(tmp_path / "etc")],
        "entries": [str(tmp_path / "var")],
        "stamp_dir": str(tmp_path / "stamps"),
        **args,
    }
    proc = subprocess.run(
        [ANSIBLE, "localhost", "-m", "converge_stamp", "-a", json.dumps(params),
         "-M", str(ROOT / "roles/converge_stamp/library"), "-o", *(["--check"] if check else [])],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.split("=>", 1)[1])


@pytest.fixture
def managed(tmp_path: Path) -> Path:
    (tmp_path / "etc/sub").mkdir(parents=True)
    (tmp_path / "etc/app.conf").write_text("a=1\n")
    (tmp_path / "etc/sub/key").write_text("secret\n")
    (tmp_path / "var").mkdir()
    stamp(tmp_path, "record")
    return tmp_path


def test_without_a_record_nothing_matches(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = stamp(tmp_path, "check")
    assert result["matched"] is False
    assert "no record" in result["differs"][0]


def test_an_unchanged_host_matches_its_record(managed: Path) -> None:
    result = stamp(managed, "check")
    assert result == {**result, "matched": True, "differs": [], "changed": False}


def test_runtime_files_in_an_entry_do_not_count(managed: Path) -> None:
    (managed / "var/runtime.db").write_text("x")
    assert stamp(managed, "check")["matched"] is True


@pytest.mark.parametrize(
    "change, seen",
    [
        (lambda d: (d / "etc/app.conf").write_text("a=2\n"), "etc/app.conf"),
        (lambda d: (d / "etc/sub/key").chmod(0o600), "etc/sub/key"),
        (lambda d: (d / "etc/sub/new").write_text(""), "etc/sub/new"),
        (lambda d: (d / "etc/app.conf").unlink(), "etc/app.conf"),
        (lambda d: (d / "var").chmod(0o700), "var"),
    ],
    ids=["content", "mode", "new file", "missing file", "entry mode"],
)
def test_a_changed_managed_path_is_named(managed: Path, change, seen: str) -> None:
    change(managed)
    result = stamp(managed, "check")
    assert result["matched"] is False
    assert result["differs"] == [f"{managed / seen} changed since the last converge"]


def test_changed_inputs_missing_packages_and_accounts_do_not_match(managed: Path) -> None:
    result = stamp(
        managed,
        "check",
        fingerprint="f2",
        packages=["no-such-package-converge-stamp"],
        users=["no-such-user-cs"],
    )
    assert result["matched"] is False
    assert result["differs"] == [
        "the role's inputs changed since the last converge",
        "package no-such-package-converge-stamp is not installed",
        "account no-such-user-cs is missing",
    ]


def test_check_mode_records_nothing(managed: Path) -> None:
    (managed / "etc/app.conf").write_text("a=2\n")
    stamp(managed, "record", check=True)
    assert stamp(managed, "check")["matched"] is False
    stamp(managed, "record")
    assert stamp(managed, "check")["matched"] is True
