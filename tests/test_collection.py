"""The repository as an Ansible collection (galaxy.yml): one version with the worker, and a build
that ships the roles, the plays and the worker's sources but not the lab or the tests. Molecule's
monitoring scenario converges from the installed build (molecule/shared/collection-install.yml)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())


def test_the_collection_and_the_worker_share_one_version():
    worker = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert GALAXY["version"] == worker


def test_the_build_ships_roles_plays_and_worker_but_not_the_lab(tmp_path):
    galaxy = Path(sys.executable).with_name("ansible-galaxy")
    subprocess.run(
        [galaxy, "collection", "build", "--output-path", tmp_path, ROOT],
        check=True,
        capture_output=True,
    )
    (tarball,) = tmp_path.glob("*.tar.gz")
    assert tarball.name == f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    roles = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())
    for role in roles:
        assert f"roles/{role}/meta/argument_specs.yml" in names, role
    assert {"playbooks/site.yml", "meta/runtime.yml", "pyproject.toml", "CHANGELOG.md"} <= names
    assert "agent/voice_worker/config.py" in names
    top = {n.split("/", 1)[0] for n in names}
    assert not top & {"molecule", "tests", "lab", "scripts", "bench", ".venv", ".git", "site.yml"}
    assert "inventories/lab" not in names
