"""Prometheus configuration and alert rules, rendered by the real prometheus role.

The role runs through ansible-playbook against a throwaway inventory (two agent hosts and a
local monitoring host) with ``prometheus_service_manage: false``, so its templates, its
preflight asserts and its promtool ``validate:`` steps all run, but nothing is installed and
no service is touched. promtool then checks the result and runs the unit tests in
files/prometheus/tests/. promtool comes from Debian's ``prometheus`` package
(``apt-get install prometheus``); a missing promtool is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLES = REPO / "roles"
RULE_TESTS = sorted((REPO / "files" / "prometheus" / "tests").glob("*.yml"))
CONTRACT = REPO / "docs" / "worker-contract.md"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
RULES_NAME = "voice_fleet.rules.yml"

INVENTORY = {
    "all": {
        "children": {
            "agent_hosts": {
                "hosts": {
                    # explicit management addresses
                    "agent1": {
                        "ansible_host": "10.213.0.11",
                        "voice_worker_health_host": "10.213.0.11",
                        "voice_worker_health_port": 8081,
                        "node_exporter_web_listen_address": "10.213.0.11:9100",
                    },
                    # nothing set: both targets fall back to ansible_host and default ports
                    "agent2": {"ansible_host": "10.213.0.12"},
                    # wildcard binds on other ports, IPv6 ansible_host
                    "agent3": {
                        "ansible_host": "fd00:213::13",
                        "voice_worker_health_host": "0.0.0.0",
                        "voice_worker_health_port": 8091,
                        "node_exporter_web_listen_address": "0.0.0.0:9200",
                    },
                }
            },
            "monitoring_hosts": {
                "hosts": {
                    "mon1": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": sys.executable,
                    }
                }
            },
        }
    }
}

PLAYBOOK = [
    {
        "name": "Render the prometheus role's configuration",
        "hosts": "monitoring_hosts",
        "gather_facts": False,
        "roles": [{"role": "prometheus"}],
    }
]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package (apt-get install prometheus)"
        )
    return path


def run_role(workdir: Path, extra_vars: dict | None = None, inventory: dict | None = None):
    """Run the prometheus role into workdir/etc; return (CompletedProcess, config_dir)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "inventory.yml").write_text(yaml.safe_dump(inventory or INVENTORY))
    (workdir / "playbook.yml").write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
    config_dir = workdir / "etc"
    evars = {"prometheus_service_manage": False, "prometheus_config_dir": str(config_dir)}
    evars.update(extra_vars or {})
    (workdir / "vars.yml").write_text(yaml.safe_dump(evars))
    env = dict(os.environ)
    env.update(
        ANSIBLE_ROLES_PATH=str(ROLES),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        # promtool must be found by the role's validate: steps
        PATH=f"{Path(promtool()).parent}:{env.get('PATH', '')}",
    )
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "inventory.yml", "-e", "@vars.yml", "playbook.yml"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, config_dir


def recap_changed(output: str) -> int:
    m = re.search(r"mon1\s+:\s+ok=\d+\s+changed=(\d+)", output)
    assert m, output
    return int(m.group(1))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("prometheus-role")
    proc, config_dir = run_role(workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return workdir, config_dir, proc


def test_role_renders_and_is_idempotent(rendered):
    workdir, config_dir, first = rendered
    assert recap_changed(first.stdout) > 0
    for name in (
        "prometheus.yml",
        f"rules/{RULES_NAME}",
        "file_sd/node.yml",
        "file_sd/voice_worker.yml",
    ):
        assert (config_dir / name).is_file(), name
    again, _ = run_role(workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert recap_changed(again.stdout) == 0, again.stdout


def test_promtool_check_config(rendered):
    _, config_dir, _ = rendered
    proc = subprocess.run(
        [promtool(), "check", "config", str(config_dir / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the rule glob in prometheus.yml really found the rendered rules
    assert RULES_NAME in proc.stdout + proc.stderr


def test_promtool_check_rules(rendered):
    _, config_dir, _ = rendered
    proc = subprocess.run(
        [promtool(), "check", "rules", str(config_dir / "rules" / RULES_NAME)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def unit_test(rules_text: str, workdir: Path) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / RULES_NAME).write_text(rules_text)
    names = []
    for test in RULE_TESTS:
        shutil.copy(test, workdir / test.name)
        names.append(test.name)
    return subprocess.run(
        [promtool(), "test", "rules", *names], cwd=workdir, capture_output=True, text=True
    )


def test_rule_unit_tests_pass(rendered, tmp_path):
    _, config_dir, _ = rendered
    assert RULE_TESTS, "no promtool tests in files/prometheus/tests"
    proc = unit_test((config_dir / "rules" / RULES_NAME).read_text(), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def alerts(rules: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}


EXPECTED_ALERTS = {
    "VoiceWorkerDown",
    "VoiceWorkerNotRegistered",
    "VoiceWorkerRestartingRepeatedly",
    "VoiceWorkerDrainTooLong",
    "FleetCapacityHigh",
    "VoiceJobFailureRate",
    "HostMemoryPressure",
    "HostCPUPressure",
    "ProviderCostOverBudget",
}


def test_every_alert_has_annotations_and_a_unit_test(rendered):
    _, config_dir, _ = rendered
    rules = yaml.safe_load((config_dir / "rules" / RULES_NAME).read_text())
    found = alerts(rules)
    assert set(found) == EXPECTED_ALERTS
    tested = set()
    for test in RULE_TESTS:
        for case in yaml.safe_load(test.read_text())["tests"]:
            for art in case.get("alert_rule_test", []):
                tested.add(art["alertname"])
    assert tested == EXPECTED_ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name


@pytest.mark.parametrize(
    ("description", "old", "new"),
    [
        (
            "capacity threshold",
            "voice_fleet:capacity_used:ratio > 0.7",
            "voice_fleet:capacity_used:ratio > 0.8",
        ),
        ("worker-down job filter", 'up{job="voice_worker"} == 0', "up == 0"),
        (
            "draining workers counted as capacity",
            'voice_worker_draining{job="voice_worker"} == 1)\n',
            'voice_worker_draining{job="voice_worker"} == 2)\n',
        ),
        ("failure-rate minimum volume", ">= 5\n", ">= 0\n"),
        ("cost budget", "[1d])) > 50", "[1d])) > 60"),
        ("restart unit filter", 'name="livekit-voice-worker.service"}', 'name=~".+"}'),
    ],
)
def test_rule_unit_tests_catch_a_broken_rule(rendered, tmp_path, description, old, new):
    """The promtool tests are not vacuous: each of these edits makes them fail."""
    _, config_dir, _ = rendered
    text = (config_dir / "rules" / RULES_NAME).read_text()
    assert old in text, f"mutation anchor for {description} not found"
    proc = unit_test(text.replace(old, new), tmp_path)
    assert proc.returncode != 0, f"promtool tests still pass with a broken {description}"
    assert "FAILED" in proc.stdout + proc.stderr


def test_file_sd_targets_come_from_the_inventory(rendered):
    _, config_dir, _ = rendered

    def targets(job):
        data = yaml.safe_load((config_dir / "file_sd" / f"{job}.yml").read_text())
        return {g["labels"]["host"]: g["targets"] for g in data}

    assert targets("node") == {
        "agent1": ["10.213.0.11:9100"],
        "agent2": ["10.213.0.12:9100"],
        "agent3": ["[fd00:213::13]:9200"],
    }
    assert targets("voice_worker") == {
        "agent1": ["10.213.0.11:8081"],
        "agent2": ["10.213.0.12:8081"],
        "agent3": ["[fd00:213::13]:8091"],
    }
    config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"prometheus", "node", "voice_worker"}
    assert jobs["node"]["file_sd_configs"][0]["files"] == [str(config_dir / "file_sd" / "node.yml")]
    assert jobs["voice_worker"]["file_sd_configs"][0]["files"] == [
        str(config_dir / "file_sd" / "voice_worker.yml")
    ]
    assert config["rule_files"] == [str(config_dir / "rules" / "*.yml")]


def test_lab_overrides_reach_the_rules(tmp_path):
    proc, config_dir = run_role(
        tmp_path,
        {
            "prometheus_alert_worker_down_for": "20s",
            "prometheus_alert_daily_cost_budget_usd": 5,
            "prometheus_alertmanager_targets": ["127.0.0.1:9093"],
            "prometheus_external_labels": {"fleet": "lab"},
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = alerts(yaml.safe_load((config_dir / "rules" / RULES_NAME).read_text()))
    assert found["VoiceWorkerDown"]["for"] == "20s"
    assert found["ProviderCostOverBudget"]["expr"].rstrip().endswith("> 5")
    config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    assert config["global"]["external_labels"] == {"fleet": "lab"}
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:9093"
    ]


@pytest.mark.parametrize(
    ("extra_vars", "host_vars", "message"),
    [
        ({}, {"voice_worker_health_host": "127.0.0.1"}, "voice_worker_health_host"),
        (
            {"prometheus_alert_fleet_capacity_ratio": 70},
            {},
            "prometheus_alert_fleet_capacity_ratio",
        ),
        ({"prometheus_alert_worker_down_for": "2 minutes"}, {}, "prometheus_alert_worker_down_for"),
        ({"prometheus_agent_group": "no_such_group"}, {}, "prometheus_agent_group"),
    ],
)
def test_preflight_rejects_bad_settings(tmp_path, extra_vars, host_vars, message):
    inventory = yaml.safe_load(yaml.safe_dump(INVENTORY))
    inventory["all"]["children"]["agent_hosts"]["hosts"]["agent2"].update(host_vars)
    proc, config_dir = run_role(tmp_path, extra_vars, inventory)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (config_dir / "prometheus.yml").exists()


def contract_metrics() -> set[str]:
    names = set(re.findall(r"`(voice_worker_[a-z0-9_]+)`", CONTRACT.read_text()))
    assert "voice_worker_active_jobs" in names
    return names


def used_metrics(text: str) -> set[str]:
    used = set()
    for name in re.findall(r"\b(voice_worker_[a-z0-9_]+)", text):
        used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return used


def test_rules_use_only_contract_metrics(rendered):
    _, config_dir, _ = rendered
    text = (config_dir / "rules" / RULES_NAME).read_text()
    unknown = used_metrics(text) - contract_metrics()
    assert not unknown, f"metrics not in docs/worker-contract.md: {sorted(unknown)}"


# --- node_exporter: the role's own templates, scored by systemd-analyze ---------------------

NODE_EXPORTER_RENDER = [
    {
        "name": "Render the node_exporter role's templates",
        "hosts": "localhost",
        "gather_facts": False,
        "vars_files": [
            str(ROLES / "node_exporter" / "defaults" / "main.yml"),
            str(ROLES / "node_exporter" / "vars" / "main.yml"),
        ],
        "tasks": [
            {
                "name": "Render",
                "ansible.builtin.copy": {
                    "content": "{{ lookup('ansible.builtin.template', tpl ~ '/' ~ item.src) }}",
                    "dest": "{{ out }}/{{ item.dest }}",
                    "mode": "0644",
                },
                "loop": [
                    {"src": "hardening.conf.j2", "dest": "hardening.conf"},
                    {"src": "prometheus-node-exporter.default.j2", "dest": "default"},
                    {"src": "prometheus-node-exporter.service.j2", "dest": "unit.service"},
                ],
            }
        ],
    }
]
DEBIAN_UNIT = Path("/lib/systemd/system/prometheus-node-exporter.service")


def render_node_exporter(workdir: Path, extra_vars: dict | None = None) -> Path:
    out = workdir / "out"
    out.mkdir(parents=True)
    (workdir / "playbook.yml").write_text(yaml.safe_dump(NODE_EXPORTER_RENDER, sort_keys=False))
    evars = {
        "out": str(out),
        "tpl": str(ROLES / "node_exporter" / "templates"),
        "ansible_python_interpreter": sys.executable,
    }
    evars.update(extra_vars or {})
    (workdir / "vars.yml").write_text(yaml.safe_dump(evars))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0")
    proc = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            "@vars.yml",
            "playbook.yml",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def security_root(workdir: Path, unit: Path, dropin: Path | None) -> Path:
    root = workdir / "root"
    (root / "lib/systemd/system").mkdir(parents=True)
    shutil.copy(unit, root / "lib/systemd/system/prometheus-node-exporter.service")
    if dropin is not None:
        d = root / "etc/systemd/system/prometheus-node-exporter.service.d"
        d.mkdir(parents=True)
        shutil.copy(dropin, d / "hardening.conf")
    return root


def exposure(root: Path) -> float:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found (Debian's systemd package)"
    proc = subprocess.run(
        [
            analyze,
            "security",
            "--offline=yes",
            f"--root={root}",
            "prometheus-node-exporter.service",
        ],
        capture_output=True,
        text=True,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    return float(m.group(1))


@pytest.fixture(scope="module")
def node_exporter_rendered(tmp_path_factory):
    if not DEBIAN_UNIT.is_file():
        pytest.fail(
            f"{DEBIAN_UNIT} not found: install Debian's prometheus-node-exporter package "
            "(apt-get install prometheus-node-exporter)"
        )
    return render_node_exporter(tmp_path_factory.mktemp("node-exporter"))


def test_node_exporter_dropin_scores_at_most_2(node_exporter_rendered, tmp_path):
    stock = exposure(security_root(tmp_path / "stock", DEBIAN_UNIT, None))
    hardened = exposure(
        security_root(tmp_path / "hardened", DEBIAN_UNIT, node_exporter_rendered / "hardening.conf")
    )
    ours = exposure(
        security_root(
            tmp_path / "binary",
            node_exporter_rendered / "unit.service",
            node_exporter_rendered / "hardening.conf",
        )
    )
    assert stock > 9.0, stock  # the measurement sees the stock unit as it is
    assert hardened <= 2.0, hardened
    assert ours <= 2.0, ours


def test_node_exporter_dropin_keeps_the_collectors_working(node_exporter_rendered):
    text = (node_exporter_rendered / "hardening.conf").read_text()
    families = re.search(r"^RestrictAddressFamilies=(.*)$", text, re.M).group(1).split()
    # D-Bus for the systemd collector, rtnetlink for netdev (1.5.0), TCP for the listener
    assert {"AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"} <= set(families)
    for forbidden in (
        "ProtectProc=",
        "ProcSubset=",
        "ProtectClock=",
        "PrivateNetwork=yes",
        "IPAddressDeny=",
    ):
        assert not re.search(rf"^{forbidden}", text, re.M), forbidden
    assert re.search(r"^SystemCallFilter=adjtimex$", text, re.M)  # timex collector
    assert re.search(r"^SystemCallErrorNumber=EPERM$", text, re.M)


def test_node_exporter_args(node_exporter_rendered):
    text = (node_exporter_rendered / "default").read_text()
    m = re.search(r'^ARGS="([^"]*)"$', text, re.M)
    assert m, text
    args = m.group(1).split()
    assert "--web.listen-address=0.0.0.0:9100" in args
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in args
    assert "--collector.systemd" in args
    assert "--collector.systemd.enable-restarts-metrics" in args
    include = next(a for a in args if a.startswith("--collector.systemd.unit-include="))
    pattern = re.compile("^(?:" + include.split("=", 1)[1] + ")$")  # node_exporter anchors it
    assert pattern.match("livekit-voice-worker.service")
    assert pattern.match("prometheus-node-exporter.service")
    assert not pattern.match("livekit-voice-worker-service")
    assert not pattern.match("ssh.service")
    # the binary release's flags are the ones Debian's 1.5.0 knows
    help_text = subprocess.run(
        ["/usr/bin/prometheus-node-exporter", "--help"], capture_output=True, text=True
    )
    known = help_text.stdout + help_text.stderr
    for arg in args:
        assert arg.split("=", 1)[0] in known, arg


def test_node_exporter_ip_allow_list(tmp_path):
    out = render_node_exporter(
        tmp_path, {"node_exporter_ip_address_allow": ["10.213.0.13", "fd00::/64"]}
    )
    text = (out / "hardening.conf").read_text()
    assert "IPAddressDeny=any" in text
    assert re.findall(r"^IPAddressAllow=(.*)$", text, re.M) == [
        "localhost",
        "10.213.0.13",
        "fd00::/64",
    ]


@pytest.mark.parametrize("role", ["node_exporter", "prometheus", "metrics_firewall"])
def test_role_variables_are_documented(role):
    """defaults/main.yml, meta/argument_specs.yml and README.md agree on every variable."""
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    readme = (ROLES / role / "README.md").read_text()
    assert set(defaults) == set(options)
    for name, value in defaults.items():
        assert name.startswith(f"{role}_"), name
        assert options[name].get("default") == value, name
        assert options[name].get("description"), name
        assert f"`{name}`" in readme, name
