"""A role variable is stated in meta/argument_specs.yml (type, default, choices, description): the
README table is generated from it (scripts/role-docs) and must be up to date; defaults/main.yml,
which Ansible reads, must hold the same variables in the same order with the same literal
defaults; and the ranges the preflight enforces, the argument spec states and the worker's own
config reader accepts agree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from voice_worker.config import ConfigError, load_settings

ROLES = Path(__file__).resolve().parents[1] / "roles"


def test_readme_tables_are_generated_from_the_argument_specs() -> None:
    check = subprocess.run(
        [sys.executable, str(ROLES.parent / "scripts/role-docs"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


# every role with a `main` argument spec (as scripts/role-docs finds them); converge_stamp, an
# internal role, has only entry points
SPECIFIED_ROLES = sorted(
    f.parents[1].name
    for f in ROLES.glob("*/meta/argument_specs.yml")
    if "main" in yaml.safe_load(f.read_text())["argument_specs"]
)


@pytest.mark.parametrize("role", SPECIFIED_ROLES)
def test_every_default_is_specified(role: str) -> None:
    defaults = yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())
    specs = yaml.safe_load((ROLES / role / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert list(defaults) == list(options)  # same variables, same order
    for name, value in defaults.items():
        assert name.startswith(f"{role}_"), name
        assert options[name].get("description"), name
        # templated defaults (computed on the control node) are described, not repeated
        if not (isinstance(value, str) and "{{" in value):
            assert options[name].get("default") == value, name
        if "choices" in options[name]:
            assert value in options[name]["choices"], name


def _defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())


@pytest.mark.parametrize(
    ("fallback", "role", "var"),
    [
        ("prometheus_voice_worker_port", "voice_worker", "voice_worker_health_port"),
        ("prometheus_voice_worker_port_green", "voice_worker", "voice_worker_health_port_green"),
        ("prometheus_node_exporter_port", "node_exporter", "node_exporter_web_listen_address"),
        ("prometheus_livekit_port", "livekit_server", "livekit_server_metrics_listen_address"),
    ],
)
def test_prometheus_fallback_ports_are_the_roles_defaults(fallback: str, role: str, var: str):
    """The prometheus role scrapes an agent or LiveKit host that does not set the variable on the
    port it falls back to: the port that host's role listens on by default."""
    port = str(_defaults(role)[var]).rsplit(":", 1)[-1]
    assert str(_defaults("prometheus")[fallback]) == port


def _preflight_ranges() -> dict[str, tuple[int, int]]:
    tasks = yaml.safe_load((ROLES / "voice_worker/tasks/preflight.yml").read_text())
    task = next(t for t in tasks if t.get("name") == "Preflight | Assert integer ranges")
    return {item["var"]: (item["min"], item["max"]) for item in task["loop"]}


def _worker_env_names() -> dict[str, str]:
    """Role variable -> the worker setting worker.env.j2 writes it to."""
    template = (ROLES / "voice_worker/templates/worker.env.j2").read_text()
    names = dict(
        (var, env)
        for env, var in re.findall(
            r"^([A-Z_]+)=\{\{ (voice_worker_[a-z_0-9]+) \}\}$", template, re.M
        )
    )
    names["voice_worker_max_jobs"] = "WORKER_MAX_JOBS"  # written through the capacity plan
    return names


# The role's own meaning of a value outside the worker's range: 0 jobs = computed from the host.
ROLE_ONLY = {"voice_worker_max_jobs": 0}


@pytest.mark.parametrize("var", sorted(_preflight_ranges()))
def test_ranges_agree_in_preflight_argument_spec_and_worker(var: str, worker_env) -> None:
    lo, hi = _preflight_ranges()[var]
    lo_worker = lo + 1 if ROLE_ONLY.get(var) == lo else lo
    specs = yaml.safe_load((ROLES / "voice_worker/meta/argument_specs.yml").read_text())
    assert (
        f"({lo_worker}-{hi})" in specs["argument_specs"]["main"]["options"][var]["description"]
    ), var
    env = _worker_env_names().get(var)
    if env is None:
        return  # a setting of the role only (waits, retries)
    for ok in (lo_worker, hi):
        load_settings({**worker_env, env: str(ok)})
    for bad in (lo_worker - 1, hi + 1):
        with pytest.raises(ConfigError) as err:
            load_settings({**worker_env, env: str(bad)})
        assert err.value.setting == env
