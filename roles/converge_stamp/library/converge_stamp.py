#!/usr/bin/python
"""Ansible module: the record of a role's last finished converge on a host, and whether the host
still matches it (one module call instead of one per managed file, package and service).

state=record (after a converge finished, handlers included) writes the role's fingerprint (a
digest of everything the role's result depends on, computed on the control node) and a snapshot
of what the role manages: for every path in `trees` each entry below it (type, mode, owner,
group, symlink target, sha256 of regular files); for every path in `entries` the entry alone
(a directory without what is in it, where runtime files may come and go). It is bookkeeping:
never "changed", and nothing is written in check mode.

What it does not see: files the role does not name (a release's virtualenv beyond its install
marker), optional packages, and runtime state beyond "active" (registration with LiveKit).

state=check is read-only: `matched` is true only when the recorded fingerprint equals the given
one, the snapshot taken now equals the recorded one, every unit in `services` is active and
enabled, at least one unit in `services_any` is active, every package in `packages` is installed
and every account in `users` / `groups` exists. `differs` says what did not match.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess

from ansible.module_utils.basic import AnsibleModule

STAMP_DIR = "/var/lib/ansible-converge-stamps"


def _entry(path: str) -> list:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ["absent"]
    kind = stat.S_IFMT(st.st_mode)
    row = [oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid]
    if stat.S_ISLNK(st.st_mode):
        return ["link", os.readlink(path)]
    if stat.S_ISDIR(st.st_mode):
        return ["dir", *row]
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return ["file", *row, digest.hexdigest()]
    return ["other", kind, *row]


def snapshot(trees: list[str], entries: list[str]) -> dict[str, list]:
    out: dict[str, list] = {}
    for top in trees:
        out[top] = _entry(top)
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(dirs + files):
                path = os.path.join(root, name)
                out[path] = _entry(path)
    for path in entries:
        out.setdefault(path, _entry(path))
    return out


def _systemctl(verb: str, unit: str) -> str:
    proc = subprocess.run(["systemctl", verb, unit], capture_output=True, text=True, check=False)
    return proc.stdout.strip()


def live_differences(params: dict) -> list[str]:
    differs = []
    for unit in params["services"]:
        if _systemctl("is-active", unit) != "active":
            differs.append(f"{unit} is not active")
        if _systemctl("is-enabled", unit) != "enabled":
            differs.append(f"{unit} is not enabled")
    if params["services_any"] and not any(
        _systemctl("is-active", unit) == "active" for unit in params["services_any"]
    ):
        differs.append(f"none of {', '.join(params['services_any'])} is active")
    if params["packages"]:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *params["packages"]],
            capture_output=True,
            text=True,
            check=False,
        )
        installed = {
            line.split()[0].split(":")[0]
            for line in proc.stdout.splitlines()
            if line.endswith(" installed")
        }
        differs += [
            f"package {p} is not installed" for p in params["packages"] if p not in installed
        ]
    for name, lookup in [
        *((u, pwd.getpwnam) for u in params["users"]),
        *((g, grp.getgrnam) for g in params["groups"]),
    ]:
        try:
            lookup(name)
        except KeyError:
            differs.append(f"account {name} is missing")
    return differs


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["check", "record"], "required": True},
            "fingerprint": {"type": "str", "required": True},
            "trees": {"type": "list", "elements": "str", "default": []},
            "entries": {"type": "list", "elements": "str", "default": []},
            "services": {"type": "list", "elements": "str", "default": []},
            "services_any": {"type": "list", "elements": "str", "default": []},
            "packages": {"type": "list", "elements": "str", "default": []},
            "users": {"type": "list", "elements": "str", "default": []},
            "groups": {"type": "list", "elements": "str", "default": []},
            # tests only (tests/test_converge_stamp.py); the roles keep the default
            "stamp_dir": {"type": "path", "default": STAMP_DIR},
        },
        supports_check_mode=True,
    )
    p = module.params
    path = os.path.join(p["stamp_dir"], f"{p['name']}.json")
    now = snapshot(p["trees"], p["entries"])
    if p["state"] == "record":
        if not module.check_mode:
            os.makedirs(p["stamp_dir"], mode=0o700, exist_ok=True)
            tmp = f"{path}.tmp"
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                json.dump({"fingerprint": p["fingerprint"], "snapshot": now}, f, sort_keys=True)
            os.replace(tmp, path)
        module.exit_json(changed=False, path=path, recorded=len(now))
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        module.exit_json(
            changed=False, matched=False, differs=[f"no record of a converge in {path}"]
        )
    differs = []
    if recorded.get("fingerprint") != p["fingerprint"]:
        differs.append("the role's inputs changed since the last converge")
    then = recorded.get("snapshot", {})
    differs += [
        f"{k} changed since the last converge"
        for k in sorted(set(now) | set(then))
        if now.get(k) != then.get(k)
    ]
    differs += live_differences(p)
    module.exit_json(changed=False, matched=not differs, differs=differs[:20])


if __name__ == "__main__":
    main()
