"""roles/voice_worker/files/worker_config.py: the last working configuration, kept and put back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "roles/voice_worker/files/worker_config.py"


def run(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): ("-> " + str(p.readlink())) if p.is_symlink() else p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_a_failed_change_is_put_back_exactly(tmp_path: Path) -> None:
    etc, releases = tmp_path / "etc", tmp_path / "releases"
    (etc / "credentials").mkdir(parents=True)
    (releases / "0.2.6").mkdir(parents=True)
    (releases / "0.2.7").mkdir()
    (etc / "worker.env").write_text("LIVEKIT_URL=wss://lk.example\n")
    (etc / "credentials/LIVEKIT_API_SECRET").write_text("old-secret")
    current = tmp_path / "current"
    current.symlink_to(releases / "0.2.6")
    archive = tmp_path / "backups/last-good.tar"
    paths = [str(etc), str(current), str(tmp_path / "green")]  # green does not exist
    before = tree(tmp_path)

    assert run("save", str(archive), *paths)["saved"] == [str(etc), str(current)]
    assert oct(archive.stat().st_mode & 0o777) == "0o600"

    # the change that failed its proof: new settings, a new secret, a new file, the new release
    (etc / "worker.env").write_text("LIVEKIT_URL=wss://lk.example/livekit\n")
    (etc / "credentials/LIVEKIT_API_SECRET").write_text("new-secret")
    (etc / "instructions.txt").write_text("new")
    current.unlink()
    current.symlink_to(releases / "0.2.7")
    (tmp_path / "green").symlink_to(releases / "0.2.7")

    restored = run("restore", str(archive), *paths)["restored"]
    assert restored == sorted([str(etc), str(current)])
    tree_after = tree(tmp_path)
    tree_after.pop("backups/last-good.tar")
    before.pop("backups/last-good.tar", None)
    assert tree_after == before  # instructions.txt and the green link are gone again


def test_nothing_is_kept_when_no_worker_serves(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    archive = tmp_path / "last-good.tar"
    result = run(
        "save-if-serving", str(archive), "no-such-unit-7f3a.service", str(tmp_path / "etc")
    )
    assert result == {"changed": False, "saved": []}
    assert not archive.exists()
