"""Scrape targets of blue/green hosts, rendered by the real prometheus role.

A host in ``voice_worker_deployment_mode: blue_green`` runs two worker instances
(``livekit-voice-worker@blue.service`` on ``voice_worker_health_port``,
``livekit-voice-worker@green.service`` on ``voice_worker_health_port_green``): the role must
give it two ``voice_worker`` targets labelled ``colour``, and leave single-mode hosts exactly as
they were (one target, no ``colour``). The role runs through ansible-playbook against a
throwaway inventory with ``prometheus_service_manage: false`` (tests/test_monitoring_rules.py's
``run_role``): its preflight, templates and promtool ``validate:`` steps run, nothing is
installed. The last test starts a real Prometheus (127.0.0.1 only) on the rendered
configuration. promtool and prometheus come from Debian's ``prometheus`` package; missing, that
is a failure, not a skip.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.prometheus_server import running_prometheus
from tests.test_monitoring_rules import run_role


def inventory(agents: dict[str, dict]) -> dict:
    return {
        "all": {
            "children": {
                "agent_hosts": {"hosts": agents},
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


AGENTS = {
    # single mode, explicitly: one target, no colour
    "single1": {
        "ansible_host": "10.213.0.11",
        "voice_worker_deployment_mode": "single",
        "voice_worker_health_host": "10.213.0.11",
        "voice_worker_health_port": 8081,
        # set but irrelevant in single mode: must not produce a second target
        "voice_worker_health_port_green": 8082,
    },
    # single mode by default (no voice_worker_deployment_mode at all)
    "single2": {"ansible_host": "10.213.0.12"},
    # blue_green with the green port left to the role default (prometheus_voice_worker_port_green)
    "bg1": {
        "ansible_host": "10.213.0.21",
        "voice_worker_deployment_mode": "blue_green",
        "voice_worker_health_host": "10.213.0.21",
        "voice_worker_health_port": 8081,
    },
    # blue_green with both ports set, wildcard bind (falls back to ansible_host, IPv6)
    "bg2": {
        "ansible_host": "fd00:213::22",
        "voice_worker_deployment_mode": "blue_green",
        "voice_worker_health_host": "0.0.0.0",
        "voice_worker_health_port": 9081,
        "voice_worker_health_port_green": 9082,
        "node_exporter_web_listen_address": "0.0.0.0:9100",
    },
}


def file_sd(config_dir: Path, job: str) -> list[dict]:
    """The target groups of a job's file_sd file, in (host, colour) order."""
    groups = yaml.safe_load((config_dir / "file_sd" / f"{job}.yml").read_text())
    return sorted(groups, key=lambda g: (g["labels"]["host"], g["labels"].get("colour", "")))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("prometheus-blue-green")
    proc, config_dir = run_role(workdir, inventory=inventory(AGENTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return config_dir


def test_blue_green_host_gets_a_target_per_colour(rendered):
    assert file_sd(rendered, "voice_worker") == [
        {"targets": ["10.213.0.21:8081"], "labels": {"host": "bg1", "colour": "blue"}},
        {"targets": ["10.213.0.21:8082"], "labels": {"host": "bg1", "colour": "green"}},
        {"targets": ["[fd00:213::22]:9081"], "labels": {"host": "bg2", "colour": "blue"}},
        {"targets": ["[fd00:213::22]:9082"], "labels": {"host": "bg2", "colour": "green"}},
        {"targets": ["10.213.0.11:8081"], "labels": {"host": "single1"}},
        {"targets": ["10.213.0.12:8081"], "labels": {"host": "single2"}},
    ]


def test_node_targets_stay_one_per_host(rendered):
    assert file_sd(rendered, "node") == [
        {"targets": ["10.213.0.21:9100"], "labels": {"host": "bg1"}},
        {"targets": ["[fd00:213::22]:9100"], "labels": {"host": "bg2"}},
        {"targets": ["10.213.0.11:9100"], "labels": {"host": "single1"}},
        {"targets": ["10.213.0.12:9100"], "labels": {"host": "single2"}},
    ]


def test_green_port_falls_back_to_the_role_variable(tmp_path):
    proc, config_dir = run_role(
        tmp_path,
        {"prometheus_voice_worker_port": 7081, "prometheus_voice_worker_port_green": 7082},
        inventory(
            {
                "bg1": {
                    "ansible_host": "10.213.0.21",
                    "voice_worker_deployment_mode": "blue_green",
                    "voice_worker_health_host": "10.213.0.21",
                },
                "single1": {"ansible_host": "10.213.0.11"},
            }
        ),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert file_sd(config_dir, "voice_worker") == [
        {"targets": ["10.213.0.21:7081"], "labels": {"host": "bg1", "colour": "blue"}},
        {"targets": ["10.213.0.21:7082"], "labels": {"host": "bg1", "colour": "green"}},
        {"targets": ["10.213.0.11:7081"], "labels": {"host": "single1"}},
    ]


@pytest.mark.parametrize(
    ("host_vars", "message"),
    [
        (
            {"voice_worker_deployment_mode": "blue_green", "voice_worker_health_port_green": 8081},
            "voice_worker_health_port_green",
        ),
        ({"voice_worker_deployment_mode": "bluegreen"}, "voice_worker_deployment_mode"),
        (
            {"voice_worker_deployment_mode": "blue_green", "voice_worker_health_host": "127.0.0.1"},
            "voice_worker_health_host",
        ),
    ],
    ids=["same-port-for-both-colours", "unknown-mode", "loopback"],
)
def test_preflight_rejects_bad_blue_green_settings(tmp_path, host_vars, message):
    agent = {"ansible_host": "10.213.0.21", "voice_worker_health_host": "10.213.0.21"}
    agent.update(host_vars)
    proc, config_dir = run_role(tmp_path, inventory=inventory({"bg1": agent}))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert message in out, out
    assert "bg1" in out, out
    assert not (config_dir / "file_sd" / "voice_worker.yml").exists()


# --- a real Prometheus with the rendered configuration -----------------------------------------
# The monitoring host is also a blue_green agent host here (the only host whose targets may be
# loopback addresses): blue is a stand-in worker on 127.0.0.1 serving /metrics, green a closed
# port (the stopped standby colour). Prometheus scrapes and evaluates every second with
# prometheus_alert_worker_down_for 0s: VoiceWorkerDown must stay silent while blue answers, and
# fire for the host (no colour, no instance) once blue stops as well.


class _Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"voice_worker_connected 1\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def api(base: str, path: str) -> dict:
    with urllib.request.urlopen(f"{base}{path}", timeout=5) as r:  # noqa: S310
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def wait_for(what: str, check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def alerts_named(base: str, name: str) -> list[dict]:
    return [a for a in api(base, "/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == name]


def rule_named(base: str, name: str) -> dict:
    return next(
        r for g in api(base, "/api/v1/rules")["groups"] for r in g["rules"] if r["name"] == name
    )


def test_live_prometheus_alerts_only_when_no_colour_is_up(tmp_path):
    blue = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=blue.serve_forever, daemon=True).start()
    green_port = free_port()  # nothing listens: the stopped colour
    web_port = free_port()
    mon = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "voice_worker_deployment_mode": "blue_green",
        "voice_worker_health_host": "127.0.0.1",
        "voice_worker_health_port": blue.server_address[1],
        "voice_worker_health_port_green": green_port,
        "node_exporter_web_listen_address": f"127.0.0.1:{free_port()}",
    }
    inv = inventory({})
    inv["all"]["children"]["agent_hosts"]["hosts"] = {"mon1": mon}
    inv["all"]["children"]["monitoring_hosts"]["hosts"] = {"mon1": mon}
    proc, config_dir = run_role(
        tmp_path / "role",
        {
            "prometheus_scrape_interval": "1s",
            "prometheus_scrape_timeout": "1s",
            "prometheus_evaluation_interval": "1s",
            "prometheus_alert_worker_down_for": "0s",
            "prometheus_web_listen_address": f"127.0.0.1:{web_port}",
        },
        inv,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def health() -> dict[str, str]:
        try:
            targets = api(base, "/api/v1/targets?state=active")["activeTargets"]
        except OSError:
            return {}
        return {
            t["labels"].get("colour", "-"): t["health"]
            for t in targets
            if t["labels"]["job"] == "voice_worker"
        }

    with running_prometheus(config_dir / "prometheus.yml", tmp_path, web_port) as base:
        # both colours discovered from file_sd, with their labels; blue up, green down
        wait_for("blue up and green down", lambda: health() == {"blue": "up", "green": "down"})
        targets = api(base, "/api/v1/targets?state=active")["activeTargets"]
        labels = sorted(
            (t["labels"]["host"], t["labels"]["colour"], t["labels"]["instance"])
            for t in targets
            if t["labels"]["job"] == "voice_worker"
        )
        assert labels == [
            ("mon1", "blue", f"127.0.0.1:{blue.server_address[1]}"),
            ("mon1", "green", f"127.0.0.1:{green_port}"),
        ]
        # several evaluations (every 1 s, for: 0s) with the standby colour down: no alert
        time.sleep(5)
        rule = rule_named(base, "VoiceWorkerDown")
        assert rule["health"] == "ok", rule
        assert rule["state"] == "inactive", rule
        assert alerts_named(base, "VoiceWorkerDown") == []
        # blue stops too: now no colour is up
        blue.shutdown()
        blue.server_close()
        alerts = wait_for(
            "VoiceWorkerDown firing",
            lambda: [a for a in alerts_named(base, "VoiceWorkerDown") if a["state"] == "firing"],
        )
        assert len(alerts) == 1, alerts
        assert alerts[0]["labels"] == {
            "alertname": "VoiceWorkerDown",
            "job": "voice_worker",
            "host": "mon1",
            "severity": "critical",
        }
        assert "Neither colour" in alerts[0]["annotations"]["description"]


# --- the LiveKit server's side: LiveKitServerDown on a real Prometheus ---------------------------
# The livekit job's target comes from the inventory's livekit_hosts (its metrics listen address);
# when that server stops answering, the alert fires naming the host and the address.


def test_live_prometheus_names_a_livekit_server_that_stops(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    web_port = free_port()
    inv = inventory({})
    # Prometheus reaches a loopback target only on its own host: the server runs on mon1 too
    inv["all"]["children"]["livekit_hosts"] = {
        "hosts": {
            "mon1": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "livekit_server_metrics_listen_address": address,
            }
        }
    }
    proc, config_dir = run_role(
        tmp_path / "role",
        {
            "prometheus_scrape_interval": "1s",
            "prometheus_scrape_timeout": "1s",
            "prometheus_evaluation_interval": "1s",
            "prometheus_alert_livekit_down_for": "0s",
            "prometheus_web_listen_address": f"127.0.0.1:{web_port}",
        },
        inv,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def livekit_target() -> dict | None:
        try:
            targets = api(base, "/api/v1/targets?state=active")["activeTargets"]
        except OSError:
            return None
        return next((t for t in targets if t["labels"]["job"] == "livekit"), None)

    with running_prometheus(config_dir / "prometheus.yml", tmp_path, web_port) as base:
        up = wait_for(
            "the LiveKit target up", lambda: (livekit_target() or {}).get("health") == "up"
        )
        assert up
        target = livekit_target()
        assert target["labels"]["host"] == "mon1"
        assert target["labels"]["instance"] == address
        # a new evaluation after the target was seen up (for: 0s): inactive, no alert
        seen = rule_named(base, "LiveKitServerDown")["lastEvaluation"]
        wait_for(
            "an evaluation after the scrape",
            lambda: rule_named(base, "LiveKitServerDown")["lastEvaluation"] != seen,
        )
        rule = rule_named(base, "LiveKitServerDown")
        assert rule["health"] == "ok", rule
        assert rule["state"] == "inactive", rule
        assert alerts_named(base, "LiveKitServerDown") == []
        # the server stops answering
        server.shutdown()
        server.server_close()
        firing = wait_for(
            "LiveKitServerDown firing",
            lambda: [a for a in alerts_named(base, "LiveKitServerDown") if a["state"] == "firing"],
        )
        assert len(firing) == 1, firing
        assert firing[0]["labels"] == {
            "alertname": "LiveKitServerDown",
            "job": "livekit",
            "host": "mon1",
            "instance": address,
            "severity": "critical",
        }
        assert address in firing[0]["annotations"]["description"]
