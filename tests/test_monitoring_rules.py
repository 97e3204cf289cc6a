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
            "livekit_hosts": {
                "hosts": {
                    # the role's nginx serves /metrics on the management address
                    "lk1": {
                        "ansible_host": "10.213.0.14",
                        "livekit_server_metrics_listen_address": "10.213.0.14:6789",
                    },
                    # nothing set: ansible_host and prometheus_livekit_port
                    "lk2": {"ansible_host": "10.213.0.15"},
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
        "file_sd/livekit.yml",
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


# --- blue_green hosts (voice_worker_deployment_mode: blue_green) ------------------------------
# Two targets per host, colour="blue" (:8081) and colour="green" (:8082); normally only one colour
# runs, so the other target is down by design. promtool tests of what that changes, run next to
# files/prometheus/tests/*.yml by unit_test() (and alone by the blue/green mutation tests below).
BLUE_GREEN_TESTS_NAME = "voice_fleet_blue_green_test.yml"


def series(metric: str, labels: dict[str, str], values: str) -> dict:
    """One promtool input series: metric{labels} with values."""
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def worker(host: str, port: int, colour: str | None = None) -> dict[str, str]:
    """Labels of a voice_worker target as the prometheus role's file_sd gives them."""
    address = {"agent1": "10.213.0.11"}.get(host, f"10.213.0.{20 + int(host[-1])}")
    labels = {"job": "voice_worker", "instance": f"{address}:{port}", "host": host}
    if colour:
        labels["colour"] = colour
    return labels


def node(host: str, unit: str) -> dict[str, str]:
    address = f"10.213.0.{20 + int(host[-1])}"
    return {"job": "node", "instance": f"{address}:9100", "host": host, "name": unit}


RUNBOOK = "docs/monitoring.md#"
AGENT1_DOWN = {
    "exp_labels": {"severity": "critical", **worker("agent1", 8081)},
    "exp_annotations": {
        "summary": "Voice worker on agent1 is not answering /metrics",
        "description": "Prometheus could not scrape 10.213.0.11:8081 for 2m: the worker is "
        "stopped, crashed, or its health port is unreachable.",
        "runbook_url": RUNBOOK + "voiceworkerdown",
    },
}
BG3_DOWN = {
    "exp_labels": {"severity": "critical", "job": "voice_worker", "host": "bg3"},
    "exp_annotations": {
        "summary": "Voice worker on bg3 is not answering /metrics",
        "description": "Neither colour of the blue/green worker on bg3 "
        "(livekit-voice-worker@blue.service, livekit-voice-worker@green.service) has answered "
        "/metrics for 2m: both are stopped, crashed, or their health ports are unreachable "
        "(one stopped colour is normal).",
        "runbook_url": RUNBOOK + "voiceworkerdown",
    },
}


def capacity_series(host: str, port: int, colour: str | None, active, slots, draining) -> list:
    labels = worker(host, port, colour)
    return [
        series("voice_worker_active_jobs", labels, f"{active}x10"),
        series("voice_worker_max_jobs", labels, f"{slots}x10"),
        series("voice_worker_connected", labels, "1x10"),
        series("voice_worker_draining", labels, f"{draining}x10"),
    ]


BLUE_GREEN_RULE_TESTS = {
    "rule_files": [RULES_NAME],
    "evaluation_interval": "1m",
    "tests": [
        # VoiceWorkerDown, for 2m: a blue_green host fires once (host label, no instance) only
        # when neither colour is up; the stopped standby colour, a switch with overlap and a
        # switch with a 1-minute gap (shorter than for:) stay silent; a single-mode host fires
        # as before.
        {
            "name": "VoiceWorkerDown on blue/green hosts",
            "interval": "1m",
            "input_series": [
                # single mode: down from 2m
                series("up", worker("agent1", 8081), "1 1 0x14"),
                # switch blue -> green with overlap (both up 3m..5m)
                series("up", worker("bg1", 8081, "blue"), "1x5 0x10"),
                series("up", worker("bg1", 8082, "green"), "0 0 0 1x13"),
                # blue runs, green is the stopped standby all along
                series("up", worker("bg2", 8081, "blue"), "1x16"),
                series("up", worker("bg2", 8082, "green"), "0x16"),
                series(
                    "up", {"job": "node", "instance": "10.213.0.22:9100", "host": "bg2"}, "0x16"
                ),
                # both colours down from 2m, green back at 10m
                series("up", worker("bg3", 8081, "blue"), "1 1 0x14"),
                series("up", worker("bg3", 8082, "green"), "0x9 1x6"),
                # switch with a gap: blue stops at 5m, green up at 6m (both down for 1m only)
                series("up", worker("bg4", 8081, "blue"), "1x4 0x11"),
                series("up", worker("bg4", 8082, "green"), "0x5 1x10"),
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "VoiceWorkerDown", "exp_alerts": []},
                {
                    "eval_time": "6m",
                    "alertname": "VoiceWorkerDown",
                    "exp_alerts": [AGENT1_DOWN, BG3_DOWN],
                },
                {"eval_time": "12m", "alertname": "VoiceWorkerDown", "exp_alerts": [AGENT1_DOWN]},
            ],
        },
        # VoiceWorkerNotRegistered stays per target: the running colour that is not registered
        # fires (with its colour); a stopped standby colour (up 0, no worker metrics) does not.
        {
            "name": "VoiceWorkerNotRegistered on blue/green hosts",
            "interval": "1m",
            "input_series": [
                series("up", worker("bg1", 8081, "blue"), "1x15"),
                series("voice_worker_connected", worker("bg1", 8081, "blue"), "1 1 0x13"),
                series("up", worker("bg1", 8082, "green"), "0x15"),
                series("up", worker("bg2", 8081, "blue"), "0x15"),
                series("up", worker("bg2", 8082, "green"), "1x15"),
                series("voice_worker_connected", worker("bg2", 8082, "green"), "1x15"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "8m",
                    "alertname": "VoiceWorkerNotRegistered",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "critical", **worker("bg1", 8081, "blue")},
                            "exp_annotations": {
                                "summary": "Voice worker on bg1 is running but not registered "
                                "with LiveKit",
                                "description": "10.213.0.21:8081 has reported "
                                "voice_worker_connected=0 for 5m: it takes no calls (LiveKit "
                                "URL, keys or network).",
                                "runbook_url": RUNBOOK + "voiceworkernotregistered",
                            },
                        }
                    ],
                },
            ],
        },
        # VoiceWorkerRestartingRepeatedly matches the template instances: 4 restarts of @green
        # fire (naming that unit); 1 restart of @blue and 10 of another unit with the same
        # prefix do not.
        {
            "name": "VoiceWorkerRestartingRepeatedly for livekit-voice-worker@green.service",
            "interval": "1m",
            "input_series": [
                series(
                    "node_systemd_service_restart_total",
                    node("bg1", "livekit-voice-worker@green.service"),
                    "0 0 1 2 3 4 4x30",
                ),
                series(
                    "node_systemd_service_restart_total",
                    node("bg1", "livekit-voice-worker@blue.service"),
                    "0 0 1 1x30",
                ),
                series(
                    "node_systemd_service_restart_total",
                    node("bg2", "livekit-voice-worker-canary.service"),
                    "0 0+2x5 10x30",
                ),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "2m",
                    "alertname": "VoiceWorkerRestartingRepeatedly",
                    "exp_alerts": [],
                },
                {
                    "eval_time": "10m",
                    "alertname": "VoiceWorkerRestartingRepeatedly",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                **node("bg1", "livekit-voice-worker@green.service"),
                            },
                            "exp_annotations": {
                                "summary": "livekit-voice-worker@green.service on bg1 keeps "
                                "restarting",
                                "description": "systemd restarted "
                                "livekit-voice-worker@green.service 4 times in 15m (threshold "
                                "3): see journalctl -u livekit-voice-worker@green.service.",
                                "runbook_url": RUNBOOK + "voiceworkerrestartingrepeatedly",
                            },
                        }
                    ],
                },
            ],
        },
        # Capacity during a switch: the old colour (draining) is left out, the new one counts:
        # the two colours of one host are told apart by instance. 1 (green) + 2 (agent1) active
        # of 4 + 4 slots.
        {
            "name": "Capacity during a blue/green switch",
            "interval": "1m",
            "input_series": [
                *capacity_series("bg1", 8081, "blue", active=2, slots=4, draining=1),
                *capacity_series("bg1", 8082, "green", active=1, slots=4, draining=0),
                *capacity_series("agent1", 8081, None, active=2, slots=4, draining=0),
            ],
            "promql_expr_test": [
                {
                    "expr": name,
                    "eval_time": "5m",
                    "exp_samples": [{"labels": name, "value": value}],
                }
                for name, value in (
                    ("voice_fleet:jobs_active:sum", 3),
                    ("voice_fleet:jobs_max:sum", 8),
                    ("voice_fleet:capacity_used:ratio", 0.375),
                )
            ],
        },
    ],
}


def rule_test_files() -> dict[str, str]:
    files = {test.name: test.read_text() for test in RULE_TESTS}
    files[BLUE_GREEN_TESTS_NAME] = yaml.safe_dump(BLUE_GREEN_RULE_TESTS, sort_keys=False)
    return files


def unit_test(
    rules_text: str, workdir: Path, only: list[str] | None = None
) -> subprocess.CompletedProcess:
    """promtool test rules with rules_text as the rules: every test file, or only these."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / RULES_NAME).write_text(rules_text)
    names = []
    for name, text in rule_test_files().items():
        if only is None or name in only:
            (workdir / name).write_text(text)
            names.append(name)
    assert names
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
    "LiveKitServerDown",
}


def test_every_alert_has_annotations_and_a_unit_test(rendered):
    _, config_dir, _ = rendered
    rules = yaml.safe_load((config_dir / "rules" / RULES_NAME).read_text())
    found = alerts(rules)
    assert set(found) == EXPECTED_ALERTS
    tested = set()
    for text in rule_test_files().values():
        for case in yaml.safe_load(text)["tests"]:
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
        ("worker-down job filter", 'up{job="voice_worker", colour=""} == 0', 'up{colour=""} == 0'),
        (
            "draining workers counted as capacity",
            'voice_worker_draining{job="voice_worker"} == 1)\n',
            'voice_worker_draining{job="voice_worker"} == 2)\n',
        ),
        ("failure-rate minimum volume", ">= 5\n", ">= 0\n"),
        ("LiveKit-down job filter", 'up{job="livekit"} == 0', "up == 0"),
        ("cost budget", "[1d])) > 50", "[1d])) > 60"),
        (
            "restart unit filter",
            'name=~"livekit-voice-worker(@.+)?[.]service"}',
            'name=~".+"}',
        ),
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


@pytest.mark.parametrize(
    ("description", "old", "new", "failing_case"),
    [
        (
            "worker-down alert per target (the standby colour fires)",
            'up{job="voice_worker", colour=""} == 0',
            'up{job="voice_worker"} == 0',
            "VoiceWorkerDown",
        ),
        (
            "worker-down alert when ANY colour is down",
            'max by (job, host) (up{job="voice_worker", colour!=""}) == 0',
            'min by (job, host) (up{job="voice_worker", colour!=""}) == 0',
            "VoiceWorkerDown",
        ),
        (
            "worker-down alert for blue/green hosts left out",
            "\n          or\n"
            '          max by (job, host) (up{job="voice_worker", colour!=""}) == 0',
            "",
            "VoiceWorkerDown",
        ),
        (
            "restart alert without the template instances",
            'name=~"livekit-voice-worker(@.+)?[.]service"}',
            'name=~"livekit-voice-worker[.]service"}',
            "VoiceWorkerRestartingRepeatedly",
        ),
        (
            "draining filter joined per host (the old colour takes the new one out)",
            "unless on (instance) (voice_worker_draining",
            "unless on (host) (voice_worker_draining",
            "voice_fleet:jobs_active:sum",
        ),
    ],
)
def test_blue_green_rule_tests_catch_a_broken_rule(
    rendered, tmp_path, description, old, new, failing_case
):
    """The blue/green promtool tests alone fail, at the expected rule, with each of these edits."""
    _, config_dir, _ = rendered
    text = (config_dir / "rules" / RULES_NAME).read_text()
    assert old in text, f"mutation anchor for {description} not found"
    unbroken = unit_test(text, tmp_path / "unbroken", only=[BLUE_GREEN_TESTS_NAME])
    assert unbroken.returncode == 0, unbroken.stdout + unbroken.stderr
    proc = unit_test(text.replace(old, new), tmp_path / "broken", only=[BLUE_GREEN_TESTS_NAME])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"blue/green promtool tests still pass with {description}"
    assert "FAILED" in out
    assert failing_case in out, out


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
    assert targets("livekit") == {
        "lk1": ["10.213.0.14:6789"],
        "lk2": ["10.213.0.15:6789"],
    }
    config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"prometheus", "node", "voice_worker", "livekit"}
    for job in ("node", "voice_worker", "livekit"):
        assert jobs[job]["file_sd_configs"][0]["files"] == [
            str(config_dir / "file_sd" / f"{job}.yml")
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
    # voice_worker_deployment_mode blue_green: the template instances
    assert pattern.match("livekit-voice-worker@blue.service")
    assert pattern.match("livekit-voice-worker@green.service")
    assert not pattern.match("livekit-voice-worker-service")
    assert not pattern.match("livekit-voice-worker-canary.service")
    assert not pattern.match("livekit-voice-worker@blue.socket")
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
