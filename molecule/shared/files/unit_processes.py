#!/usr/bin/env python3
"""Print one JSON line: a unit's MainPID, NRestarts and every process under its main process
(pid, parent, oom_score_adj, VmRSS in MB, command line), for the scenarios' memory checks.

Usage: unit_processes.py UNIT
"""

import json
import os
import subprocess
import sys


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def main():
    unit = sys.argv[1]
    out = subprocess.run(
        ["systemctl", "show", unit, "--property=MainPID", "--property=NRestarts"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    main_pid = int(props.get("MainPID") or 0)
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read(f"/proc/{name}/stat")
            if stat:
                parents[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, todo = [], [main_pid] if main_pid else []
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(p for p, parent in parents.items() if parent == pid)
    procs = []
    for pid in sorted(tree):
        status = dict(
            line.split(":", 1) for line in read(f"/proc/{pid}/status").splitlines() if ":" in line
        )
        procs.append(
            {
                "pid": pid,
                "ppid": parents.get(pid, 0),
                "oom_score_adj": int(read(f"/proc/{pid}/oom_score_adj").strip() or 0),
                "rss_mb": int(status.get("VmRSS", "0 kB").split()[0]) // 1024,
                "args": read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()[:120],
            }
        )
    print(
        json.dumps(
            {
                "main_pid": main_pid,
                "nrestarts": int(props.get("NRestarts") or 0),
                "processes": procs,
            }
        )
    )


if __name__ == "__main__":
    main()
