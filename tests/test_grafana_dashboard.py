"""files/grafana/voice-fleet-dashboard.json: structure, and every PromQL expression parses.

Parsing is done by a real Prometheus (Debian's ``prometheus`` package, ``apt-get install
prometheus``) started on 127.0.0.1 with an empty configuration: its /api/v1/query answers
400 ``bad_data`` for an expression that does not parse. Grafana's variables are replaced by
concrete values first. A missing prometheus binary is a failure, not a skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.prometheus_server import running_prometheus

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "files" / "grafana" / "voice-fleet-dashboard.json"
CONTRACT = REPO / "docs" / "worker-contract.md"

# Grafana's built-in and dashboard variables, replaced by what Grafana would send.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "6h",
    "${host}": ".*",
    "$host": ".*",
}


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    exprs = []
    for p in panels(dashboard):
        for t in p.get("targets", []):
            exprs.append((f"{p['title']} [{t['refId']}]", t["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
            assert m, f"variable {var['name']}: unsupported query {q}"
            exprs.append((f"variable {var['name']}", m.group(1)))
    return exprs


def concrete(expr: str) -> str:
    for var, value in SUBSTITUTIONS.items():
        expr = expr.replace(var, value)
    leftover = re.findall(r"\$\{?\w+\}?", expr)
    assert not leftover, f"unknown Grafana variables {leftover} in {expr}"
    return expr


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
    with running_prometheus(work / "prometheus.yml", work) as base:
        yield base


def query(base: str, expr: str) -> tuple[int, dict]:
    data = urllib.parse.urlencode({"query": expr}).encode()
    req = urllib.request.Request(f"{base}/api/v1/query", data=data, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_a_broken_expression_is_rejected(prometheus):
    """The check below can fail: a malformed expression gets 400 bad_data."""
    status, body = query(
        prometheus, 'sum(rate(voice_worker_jobs_started_total{job="voice_worker"}[1m])'
    )
    assert status == 400
    assert body["errorType"] == "bad_data"
    status, body = query(
        prometheus,
        concrete('sum(rate(voice_worker_jobs_started_total{host=~"$host"}[$__rate_interval]))'),
    )
    assert status == 200, body


@pytest.mark.parametrize(
    ("where", "expr"), expressions(load()), ids=lambda v: v if len(v) < 60 else None
)
def test_expression_parses(prometheus, where, expr):
    status, body = query(prometheus, concrete(expr))
    assert status == 200 and body["status"] == "success", f"{where}: {expr}\n{body}"


def test_structure():
    d = load()
    assert d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(d):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]


def test_dashboard_covers_the_fleet():
    text = " ".join(e for _, e in expressions(load()))
    for needle in (
        "voice_worker_active_jobs",
        "voice_fleet:capacity_used:ratio",
        "voice_worker_jobs_finished_total",
        "voice_worker_llm_ttft_seconds_bucket",
        "voice_worker_tts_ttfb_seconds_bucket",
        "voice_worker_stt_audio_seconds_total",
        "voice_worker_llm_tokens_total",
        "voice_worker_tts_characters_total",
        "voice_worker_estimated_cost_usd_total",
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_systemd_service_restart_total",
    ):
        assert needle in text, needle


def test_dashboard_uses_only_contract_metrics():
    contract = set(re.findall(r"`(voice_worker_[a-z0-9_]+)`", CONTRACT.read_text()))
    used = {
        re.sub(r"_(bucket|sum|count)$", "", n)
        for n in re.findall(
            r"\b(voice_worker_[a-z0-9_]+)", " ".join(e for _, e in expressions(load()))
        )
    }
    assert used - contract == set()


# --- blue/green hosts: two voice_worker targets (colour blue/green), one normally down -------


def panel_expr(title: str) -> str:
    (p,) = [p for p in panels(load()) if p["title"] == title]
    return concrete(p["targets"][0]["expr"])


def test_blue_green_panels_count_hosts_and_template_units(tmp_path):
    """promtool evaluates the panels on a single-mode host (down) and two blue/green hosts.

    bg1 runs blue with green stopped (down by design, not a down host); bg2 has neither colour
    up. Restarts and unit state must include livekit-voice-worker@green.service.
    """
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's prometheus package")

    def up(host: str, port: int, colour: str | None, values: str) -> dict:
        colour_label = f', colour="{colour}"' if colour else ""
        return {
            "series": f'up{{job="voice_worker", instance="{host}:{port}", host="{host}"'
            f"{colour_label}}}",
            "values": values,
        }

    def unit(metric: str, host: str, name: str, values: str, state: str | None = None) -> dict:
        state_label = f', state="{state}"' if state else ""
        return {
            "series": f'{metric}{{job="node", instance="{host}:9100", host="{host}", '
            f'name="{name}"{state_label}}}',
            "values": values,
        }

    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    up("agent1", 8081, None, "0x70"),
                    up("bg1", 8081, "blue", "1x70"),
                    up("bg1", 8082, "green", "0x70"),
                    up("bg2", 8081, "blue", "0x70"),
                    up("bg2", 8082, "green", "0x70"),
                    unit(
                        "node_systemd_service_restart_total",
                        "bg1",
                        "livekit-voice-worker@green.service",
                        "0 0 1 2 3x70",
                    ),
                    unit(
                        "node_systemd_service_restart_total",
                        "bg1",
                        "livekit-voice-worker@blue.service",
                        "0x70",
                    ),
                    unit(
                        "node_systemd_service_restart_total",
                        "bg1",
                        "prometheus-node-exporter.service",
                        "0 5 10x70",
                    ),
                    unit(
                        "node_systemd_unit_state",
                        "bg1",
                        "livekit-voice-worker@blue.service",
                        "1x70",
                        "active",
                    ),
                    unit(
                        "node_systemd_unit_state",
                        "bg1",
                        "livekit-voice-worker@green.service",
                        "1x70",
                        "inactive",
                    ),
                ],
                "promql_expr_test": [
                    {
                        # agent1 and bg2; not bg1, whose standby green is down by design
                        "expr": panel_expr("Hosts with no worker up"),
                        "eval_time": "60m",
                        "exp_samples": [{"labels": "{}", "value": 2}],
                    },
                    {
                        # 3 restarts of @green within the hour, none of the exporter counted
                        "expr": f"round({panel_expr('Worker restarts by systemd (per hour)')})",
                        "eval_time": "60m",
                        "exp_samples": [{"labels": '{host="bg1"}', "value": 3}],
                    },
                    {
                        # one row per colour, each in its own state
                        "expr": panel_expr("Worker unit state"),
                        "eval_time": "60m",
                        "exp_samples": [
                            {
                                "labels": '{host="bg1", name="livekit-voice-worker@blue.service",'
                                ' state="active"}',
                                "value": 1,
                            },
                            {
                                "labels": '{host="bg1", name="livekit-voice-worker@green.service",'
                                ' state="inactive"}',
                                "value": 1,
                            },
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "panels_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run(
        [promtool, "test", "rules", "panels_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
