#!/usr/bin/env python3
"""Keep and restore the worker's last working configuration (root only; it holds the credentials).

    worker_config.py save ARCHIVE PATH...             archive PATHs (files, links, trees) that exist
    worker_config.py save-if-serving ARCHIVE UNITS PATH...
                                                      the same, only when one of the comma-separated
                                                      UNITS is active (a host that serves runs a
                                                      working configuration)
    worker_config.py restore ARCHIVE PATH...          remove PATHs, then put back what ARCHIVE holds

The role saves after a worker proved the files on disk (registered with LiveKit and ready) and
restores when new settings, credentials or a release failed to prove themselves, so that the files
match the worker that keeps serving and a later restart (a reboot) runs a working configuration.
Links are kept as links (`current` names the release). Prints one JSON line ("changed" for Ansible).
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile


def save(archive, paths):
    os.makedirs(os.path.dirname(archive), mode=0o700, exist_ok=True)
    tmp = archive + ".tmp"
    kept = [p for p in paths if os.path.lexists(p)]
    with tarfile.open(tmp, "w") as tar:
        for path in kept:
            tar.add(path, arcname=path.lstrip("/"))
    os.chmod(tmp, 0o600)
    os.replace(tmp, archive)
    return {"changed": True, "saved": kept}


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def restore(archive, paths):
    with tarfile.open(archive) as tar:
        members = [
            m
            for m in tar.getmembers()
            if any(("/" + m.name + "/").startswith(p.rstrip("/") + "/") for p in paths)
        ]
        for path in paths:
            remove(path)
        # written by save() as root; Python 3.11.2 (Debian 12) has no extraction filters yet
        trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
        tar.extractall("/", members=members, **trusted)  # noqa: S202 - our own archive, root only
    return {
        "changed": True,
        "restored": sorted({"/" + m.name for m in members if "/" + m.name in paths}),
    }


def main():
    command, archive, *rest = sys.argv[1:]
    if command == "save":
        result = save(archive, rest)
    elif command == "save-if-serving":
        units, paths = rest[0].split(","), rest[1:]
        active = (
            subprocess.run(["systemctl", "is-active", "--quiet", *units], check=False).returncode
            == 0
        )
        result = save(archive, paths) if active else {"changed": False, "saved": []}
    elif command == "restore":
        result = restore(archive, rest)
    else:
        sys.exit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
