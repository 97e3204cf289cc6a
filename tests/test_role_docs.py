"""Roles whose variables are documented three ways: defaults/main.yml, meta/argument_specs.yml and
the README table agree (same variables, same order, same literal defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[1] / "roles"


@pytest.mark.parametrize("role", ["voice_worker", "livekit_server"])
def test_every_variable_is_specified_and_documented(role: str) -> None:
    defaults = yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())
    specs = yaml.safe_load((ROLES / role / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    readme = (ROLES / role / "README.md").read_text()
    assert list(defaults) == list(options)  # same variables, same order
    for name, value in defaults.items():
        assert name.startswith(f"{role}_"), name
        assert options[name].get("description"), name
        assert f"| `{name}` |" in readme, name
        # templated defaults (computed on the control node) are described, not repeated
        if not (isinstance(value, str) and "{{" in value):
            assert options[name].get("default") == value, name
        if "choices" in options[name]:
            assert value in options[name]["choices"], name
