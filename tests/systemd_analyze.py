"""`systemd-analyze` against a unit file in a scratch root (no running systemd needed): the unit
tests of files/systemd/ use these."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


def scratch_root(tmp_path: Path, units: dict[str, Path], executables: list[str]) -> Path:
    """A root with the machine's stock units, `units` ({name: file}) in /etc/systemd/system and
    an executable stub at each path of `executables` (ExecStart= must exist)."""
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed (Debian: systemd)"
    etc = tmp_path / "etc/systemd/system"
    etc.mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    for name, source in units.items():
        shutil.copy(source, etc / name)
    for path in executables:
        exe = tmp_path / path.lstrip("/")
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return tmp_path


def verify(root: Path, unit: str) -> str:
    """What `systemd-analyze verify` says about the unit: "" when it is clean (it exits 0 even
    on unknown keys and bad values, so any output is a finding)."""
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", unit],
        capture_output=True,
        text=True,
        check=False,
    )
    return (
        proc.stdout + proc.stderr
        if proc.returncode == 0
        else f"rc={proc.returncode}\n{proc.stderr}"
    )


def exposure(root: Path, unit: str) -> tuple[float, str]:
    """`systemd-analyze security --offline=yes`: the overall exposure and the whole report."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", "--no-pager", unit],
        capture_output=True,
        text=True,
        check=False,
    )
    out = proc.stdout + proc.stderr
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert m, out
    return float(m.group(1)), out
