"""Table-driven proof that bad inventory values are refused before any host changes.

    python preflight_table.py --inventory INVENTORY --host HOST [--cases bad_values.yml]

Each case of bad_values.yml becomes its own inventory alias of HOST (same address and ssh
settings, the case's groups and variables as host vars), next to an agent and a monitoring alias
without a bad value.
All of them run playbooks/preflight.yml, the first play of site.yml, in one ansible-playbook run
(callback_plugins/host_results.py prints the results as JSON). A case passes when its alias
failed with a message that names the variable, in at most two lines and without the value when it
is a secret; the clean aliases must pass, and no task may report a change on any alias.
Prints one line per case; exits 1 if any case fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
CASES = Path(__file__).with_name("bad_values.yml")


def host_vars(inventory: str, host: str) -> dict:
    out = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-inventory")), "-i", inventory, "--host", host],
        capture_output=True,
        text=True,
        check=True,
    )
    return {k: v for k, v in json.loads(out.stdout).items() if k.startswith("ansible_")}


def run_preflight(inventory: str, table: Path, hosts: list[str]) -> dict | None:
    """playbooks/preflight.yml on these aliases; its JSON report (None: it did not run)."""
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            inventory,
            "-i",
            str(table),
            "--limit",
            ",".join(hosts),
            "--forks",
            "5",
            "-e",
            "preflight_stop_all=false",
            str(ROOT / "playbooks/preflight.yml"),
        ],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "ANSIBLE_CALLBACK_PLUGINS": str(Path(__file__).with_name("callback_plugins")),
            "ANSIBLE_STDOUT_CALLBACK": "host_results",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_SSH_RETRIES": "3",
        },
        cwd=ROOT,
        check=False,
    )
    try:
        return json.loads(run.stdout)
    except ValueError:
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        return None


def messages(results: list[dict]) -> list[str]:
    """The failure messages of one host's failed task (loop items included)."""
    found = []
    for r in results:
        for item in r.get("results", []) if isinstance(r.get("results"), list) else []:
            if item.get("failed") and item.get("msg"):
                found.append(str(item["msg"]))
        if r.get("failed") and r.get("msg") and not r.get("results"):
            found.append(str(r["msg"]))
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inventory", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--cases", default=str(CASES))
    args = ap.parse_args()

    cases = yaml.safe_load(Path(args.cases).read_text())
    connection = host_vars(args.inventory, args.host)
    aliases: dict[str, dict] = {}
    groups: dict[str, dict] = {}
    # A monitoring alias builds its scrape targets from the clean alias only, not from the bad ones.
    clean_only = {"prometheus_agent_group": "preflight_table_clean"}
    clean = [
        {
            "name": "clean",
            "expect": None,
            "vars": {},
            "groups": ["agent_hosts", "preflight_table_clean"],
        },
        {"name": "clean-mon", "expect": None, "vars": {}, "groups": ["monitoring_hosts"]},
    ]
    for i, case in enumerate([*clean, *cases]):
        name = case.get("name") or f"bad-{i - len(clean) + 1:02d}"
        aliases[name] = case
        for group in case.get("groups", ["agent_hosts"]):
            groups.setdefault(group, {"hosts": {}})["hosts"][name] = {
                **connection,
                **clean_only,
                **case["vars"],
            }

    per_host: dict[str, list[dict]] = {name: [] for name in aliases}
    stats: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "bad_values_inventory.yml"
        table.write_text(yaml.safe_dump({"all": {"children": groups}}))
        # All aliases reach the same sshd: few connections at a time (its MaxStartups drops new
        # ones beyond 10), and an alias that could not connect is tried again, not counted.
        todo = list(aliases)
        for _attempt in range(3):
            report = run_preflight(args.inventory, table, todo)
            if report is None:
                return 1
            for host, results in report["hosts"].items():
                if host in todo:
                    per_host[host].extend(results)
            stats.update({h: s for h, s in report["stats"].items() if h in todo})
            todo = [h for h in todo if stats.get(h, {}).get("unreachable")]
            for host in todo:
                per_host[host] = []
            if not todo:
                break
    unreachable = todo

    bad = 0
    changed = {
        h: s.get("changed", 0) for h, s in stats.items() if h in aliases and s.get("changed")
    }
    for name, case in aliases.items():
        failed = stats.get(name, {}).get("failures", 0) > 0
        msgs = messages(per_host[name])
        msg = msgs[0] if msgs else ""
        if name in unreachable:
            ok, why = False, "UNREACHABLE (the harness could not connect; nothing was judged)"
        elif case["expect"] is None:
            ok, why = not failed, "passes" if not failed else f"refused: {msg[:200]}"
        else:
            secret = case.get("secret") and any(str(v) in msg for v in case["vars"].values())
            ok = (
                failed
                and case["expect"] in msg
                and len(msg.strip().splitlines()) <= 2
                and len(msg) <= 600
                and not secret
                and name not in changed
            )
            why = msg.replace("\n", " ")[:160] if msg else f"NOT REFUSED ({stats.get(name)})"
            if secret:
                why = "PRINTS THE SECRET: " + why
        bad += not ok
        label = case["expect"] or "(no bad value)"
        print(f"{'ok ' if ok else 'BAD'} {name} {label:40} {why}")
    refused = sum(1 for n, c in aliases.items() if c["expect"] and stats.get(n, {}).get("failures"))
    print(
        f"{len(cases)} bad values: {refused} refused in preflight, {len(cases) - refused} not; "
        f"changed tasks on any alias: {sum(changed.values())}; cases failing the check: {bad}"
    )
    return 1 if bad or changed else 0


if __name__ == "__main__":
    sys.exit(main())
