"""roles/voice_worker/files/worker_probe.py: which unit serves, and systemd timespans."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

PATH = Path(__file__).resolve().parents[1] / "roles/voice_worker/files/worker_probe.py"
spec = importlib.util.spec_from_file_location("worker_probe", PATH)
assert spec and spec.loader
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def unit(name: str, state: str = "inactive", ready: int = 0, uptime: int = 0) -> dict:
    return {"unit": name, "active_state": state, "ready_status": ready, "uptime_s": uptime}


BLUE, GREEN, SINGLE = "w@blue.service", "w@green.service", "w.service"


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        # nothing runs: the first listed (this mode's first unit)
        ([unit(BLUE), unit(GREEN), unit(SINGLE)], BLUE),
        # after a switch: the old colour is stopping, the new one serves
        ([unit(BLUE, "deactivating", 503), unit(GREEN, "active", 200, 30), unit(SINGLE)], GREEN),
        # a new colour still starting does not replace the ready old one
        ([unit(BLUE, "active", 200, 900), unit(GREEN, "activating", 0), unit(SINGLE)], BLUE),
        # two ready colours (a switch that stopped half-way): the younger one
        ([unit(BLUE, "active", 200, 900), unit(GREEN, "active", 200, 12), unit(SINGLE)], GREEN),
        # a host moving from single to blue_green: the single unit serves until a colour is ready
        ([unit(BLUE), unit(GREEN), unit(SINGLE, "active", 200, 5000)], SINGLE),
        # running but not registered: still the unit the host runs
        ([unit(SINGLE, "activating", 503), unit(BLUE), unit(GREEN)], SINGLE),
    ],
)
def test_serving_unit(units: list[dict], expected: str) -> None:
    assert probe.serving(units)["unit"] == expected


@pytest.mark.parametrize(
    ("text", "seconds"), [("10min 30s", 630), ("2min 30s", 150), ("1h 1s", 3601), ("500ms", 0.5)]
)
def test_timespan(text: str, seconds: float) -> None:
    assert probe.timespan(text) == pytest.approx(seconds)


def test_a_running_worker_is_asked_on_the_address_it_was_started_with() -> None:
    # between a change of voice_worker_health_port and the restart, the unit runs on the old port
    import subprocess
    import sys

    env = {"HEALTH_CHECK_HOST": "127.0.0.2", "HEALTH_CHECK_PORT": "8081"}
    child = subprocess.Popen(
        [sys.executable, "-c", "print('up', flush=True); import sys; sys.stdin.read()"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    # Popen returns once execve has begun (vfork): the kernel publishes the new environment a moment
    # later, so wait until the child runs; a worker the probe asks has long been running.
    assert child.stdout and child.stdout.readline() == b"up\n"
    try:
        assert probe.started_address(child.pid, "127.0.0.1", "8083") == ("127.0.0.2", "8081")
    finally:
        child.communicate(b"")
    # a process without those settings (or gone): the configured address
    assert probe.started_address(child.pid, "127.0.0.1", "8083") == ("127.0.0.1", "8083")


def wildcards() -> dict:
    """The wildcard rule as the prometheus role states it (its vars/main.yml)."""
    path = Path(__file__).resolve().parents[1] / "roles/prometheus/vars/main.yml"
    return yaml.safe_load(path.read_text())["__prometheus_wildcards"]


def test_probe_asks_a_wildcard_on_the_loopback_the_role_names():
    """The probe (on the host, no Ansible) and the prometheus role state one rule twice: which bind
    addresses listen everywhere, and the loopback address a host asks itself on instead."""
    rule = wildcards()
    assert rule == probe.WILDCARDS
    for address, loopback in rule.items():
        assert probe.http_base(f" {address} ", 8081) == f"http://{loopback}:8081"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.213.0.11", "10.213.0.11"),
        ("fd00:213::22", "[fd00:213::22]"),
        ("[fd00:213::22]", "[fd00:213::22]"),
        ("worker1.example", "worker1.example"),
    ],
)
def test_probe_asks_any_other_address_as_given(address, expected):
    assert probe.url_host(address) == expected
