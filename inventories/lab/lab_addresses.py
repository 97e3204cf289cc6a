#!/usr/bin/env python3
"""LAB ONLY: the actual addresses of the lab hosts, for Ansible (a `script` inventory source).

scripts/lab-hosts gives each host the lowest free index N when it is first created, and the
address 10.213.0.(10+N); hosts.yml lists the addresses of a fresh lab created in order
(agent1, agent2, mon1, lk1). When other lab hosts exist (a Molecule scenario, a smoke test), the
order and so the addresses differ: this script reads the index files of scripts/lab-hosts and
sets `ansible_host` of every host in hosts.yml that exists. Ansible reads the inventory sources
of this directory in alphabetical order, so these values win over hosts.yml's. Hosts that do not
exist keep hosts.yml's address.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

LAB_DIR = Path(os.environ.get("LAB_DIR", "/var/lib/lkvw-lab"))
NET_PREFIX = "10.213.0"
HOSTS = ("agent1", "agent2", "mon1", "lk1")  # the hosts of hosts.yml


def addresses() -> dict[str, dict[str, str]]:
    hostvars: dict[str, dict[str, str]] = {}
    for name in HOSTS:
        try:
            index = int((LAB_DIR / "hosts" / name / "index").read_text().strip())
        except (OSError, ValueError):
            continue
        hostvars[name] = {"ansible_host": f"{NET_PREFIX}.{10 + index}"}
    return hostvars


def main(argv: list[str]) -> int:
    hostvars = addresses()
    if len(argv) > 1 and argv[1] == "--host":
        print(json.dumps(hostvars.get(argv[2], {}) if len(argv) > 2 else {}))
        return 0
    # Group membership comes from hosts.yml; only the hosts' variables are set here.
    print(json.dumps({"_meta": {"hostvars": hostvars}, "ungrouped": {"hosts": sorted(hostvars)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
