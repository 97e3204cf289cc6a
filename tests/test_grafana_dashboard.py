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
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus not found: install Debian's prometheus package (apt-get install prometheus)"
        )
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
    port = free_port()
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "prometheus did not become ready:\n" + (work / "prometheus.log").read_text()
                )
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


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
